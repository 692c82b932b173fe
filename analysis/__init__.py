"""chimera-sweep's analysis: trial rows → statistics, tables, figures and a report.

What a script may import from here (``__all__``); the modules behind it are internal:

* :func:`main` — ``python -m analysis`` as a call: ``main(["outputs/sweeps/<id>", "--no-figures"])``
  returns the exit code (0, 1 for a failed ``--gate``, 2 for bad input, 3 for an inconclusive ``--gate``);
* :func:`load_trials` — sweep directories, Parquet or CSV files → :class:`Loaded` (the tidy frame,
  its sources and telemetry); bad input raises :class:`InputError` with a one-line message.  (It is
  ``analysis.load.load``; a public name never equals a submodule's, which would shadow it.)
* :func:`build` — analyse a :class:`Loaded` with :class:`Options` (test, correction, bootstrap, …)
  and write report.html/.md/.tex and the CSV tables; returns a :class:`Report`.

The columns of the rows are the sweep's contract (``sweep.COLUMNS``).  ``import analysis`` stays
cheap (no pandas, scipy or matplotlib): the names are imported on first use.
``tests/test_public_surface.py`` checks that every name resolves and uses them end to end.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # what the lazy names are, for type checkers and editors
    from analysis.__main__ import main
    from analysis.load import InputError, Loaded
    from analysis.load import load as load_trials
    from analysis.report import Report, build
    from analysis.tables import Options

_LAZY = {
    "main": "analysis.__main__",
    "load_trials": "analysis.load:load", "Loaded": "analysis.load", "InputError": "analysis.load",
    "build": "analysis.report", "Report": "analysis.report",
    "Options": "analysis.tables",
}

__all__ = ["main", "load_trials", "Loaded", "InputError", "build", "Report", "Options"]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562): the analysis pulls in pandas and scipy (~1–2 s)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    module, _, attr = module.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
