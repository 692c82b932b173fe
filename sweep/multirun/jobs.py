"""A multirun's jobs from its overrides, on Hydra's public override API (none of Hydra's internal modules).

Why our own: the grid Hydra's basic sweeper launches (the product of the sweep overrides, later
keys varying fastest) and the ``override_dirname`` it gives each job are needed by our sweeper
and by the preflight, but Hydra 1.3 exposes them only from its internal basic-sweeper and
config-loader modules.  Both are a few lines over the public
:class:`hydra.core.override_parser.types.Override`, so they are stated here once;
``tests/test_multirun_jobs.py`` checks them against Hydra's own.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hydra.core.override_parser.types import Override
from hydra.errors import HydraException


def grid_jobs(overrides: Sequence[Override]) -> list[list[str]]:
    """Each job's override strings: the product of the overrides' values, in Hydra's basic-sweeper order.

    A key given twice keeps its last value (its first position), as Hydra does; a range or interval
    sweep (which only Optuna-style sweepers can sample) is refused.
    """
    choices: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            kind = override.value_type.name if override.value_type is not None else "this"
            raise HydraException(f"the reload-aware sweeper does not support sweep type : {kind} ({key})")
    return [list(job) for job in itertools.product(*choices.values())]


def batches(jobs: list[list[str]], size: int | None) -> list[list[list[str]]]:
    """``jobs`` in launches of ``size`` (all at once when None); one empty launch when there are none."""
    step = size or len(jobs) or 1
    return [jobs[i:i + step] for i in range(0, len(jobs), step)] or [[]]


def override_dirname(overrides: Sequence[Override], *, kv_sep: str, item_sep: str,
                     exclude_keys: Sequence[str]) -> str:
    """``hydra.job.override_dirname`` for these overrides: sorted, excluded keys left out, ``=`` as ``kv_sep``."""
    lines = sorted(o.input_line for o in overrides
                   if o.key_or_group not in exclude_keys and o.input_line is not None)
    return item_sep.join(lines).replace("=", kv_sep)
