"""chimera-sweep's sweep: run cells against an Ollama-compatible server and store one row per trial.

What a script may import from here (``__all__``); everything else in ``sweep.*`` is internal and
may change without notice:

* :func:`run` — run ``python -m sweep`` with Hydra overrides and get the sweep directory back;
* the data contract (:mod:`sweep.contract`): :class:`TrialRecord` and :data:`COLUMNS` /
  :data:`COLUMN_NAMES` / :data:`SCHEMA` (the columns of a trial row), :data:`OPTIONS` (what can be
  swept), :class:`Status` (what a trial can end as), :data:`SWEEPS_ROOT`;
* the one reader of a sweep directory: :func:`newest_sweep`, :func:`cell_paths`,
  :func:`read_cell`, :func:`read_tables`, :func:`trial_files`, :func:`read_whole`.

``import sweep`` stays cheap (no pyarrow, no Hydra): the names are imported on first use.
``tests/test_public_surface.py`` checks that every name resolves and runs a sweep → read →
analyse through these names only.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # what the lazy names are, for type checkers and editors
    from sweep.contract import (COLUMN_NAMES, COLUMNS, OPTIONS, SCHEMA, SWEEPS_ROOT, Status, TrialRecord,
                                cell_paths, newest_sweep, read_cell, read_tables, read_whole, trial_files)

__all__ = [
    "run",
    "TrialRecord", "COLUMNS", "COLUMN_NAMES", "SCHEMA", "OPTIONS", "Status", "SWEEPS_ROOT",
    "newest_sweep", "cell_paths", "read_cell", "read_tables", "trial_files", "read_whole",
]

_LAZY = {name: "sweep.contract" for name in __all__ if name != "run"}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562): the contract pulls in pyarrow (~0.3 s)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def run(*overrides: str, cwd: str | Path | None = None, timeout: float | None = None) -> Path:
    """Run ``python -m sweep *overrides`` in a child process; return the sweep directory it wrote.

    A child, not a call: Hydra owns the process (its argv, working directory, logging and Ctrl-C).
    The child names the directory it fixed (:class:`sweep.multirun.layout.SweepPlace`, before any
    trial) in a file this call reads, so the directory returned is the one the child wrote, relative
    paths taken from ``cwd``.  Raises :class:`subprocess.CalledProcessError` if the sweep fails (exit 2:
    configuration, 130: interrupted); its stderr went to ours.
    """
    import os
    import subprocess
    import sys
    import tempfile

    from sweep.multirun.layout import PLACE_FILE   # Hydra: only when a sweep is run

    base = Path.cwd() if cwd is None else Path(cwd)
    with tempfile.TemporaryDirectory(prefix="chimera-sweep-") as tmp:
        note = Path(tmp) / "sweep_dir"
        subprocess.run([sys.executable, "-m", "sweep", *overrides], cwd=base, check=True, timeout=timeout,
                       env={**os.environ, PLACE_FILE: str(note)})
        directory = Path(note.read_text(encoding="utf-8"))
    return directory if directory.is_absolute() else base / directory
