"""sweep/multirun/jobs.py states Hydra's basic grid and override_dirname on the public API: same answers as Hydra's.

The comparison imports Hydra's internal modules on purpose: they are what the public-API
versions replace, so a Hydra upgrade that changes either shows up here.
"""

from __future__ import annotations

import pytest
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from sweep.multirun.jobs import batches, grid_jobs, override_dirname

CASES = [
    ["a=1,2", "b=x,y,z"],
    ["chimera.num_ctx=256,512", "model=gemma3", "+extra=q", "~gone"],
    ["a=1,2", "a=3"],                              # a key given twice: the last wins
    ["a=choice(1,2)", "b=range(0,3)", "c='s p'"],
    [],
]


@pytest.mark.parametrize("strings", CASES)
def test_grid_jobs_are_hydras_basic_grid(strings: list[str]) -> None:
    parsed = OverridesParser.create().parse_overrides(strings)
    (hydra,) = BasicSweeper.split_arguments(parsed, None)
    assert grid_jobs(parsed) == [list(job) for job in hydra]


def test_an_interval_sweep_is_refused() -> None:
    with pytest.raises(HydraException, match="does not support sweep type"):
        grid_jobs(OverridesParser.create().parse_overrides(["a=interval(0,1)"]))


@pytest.mark.parametrize("strings", CASES)
@pytest.mark.parametrize("exclude", [[], ["a"], ["chimera.num_ctx", "model"]])
def test_override_dirname_is_hydras(strings: list[str], exclude: list[str]) -> None:
    parsed = OverridesParser.create().parse_overrides([s for s in strings if "," not in s])
    ours = override_dirname(parsed, kv_sep="=", item_sep=",", exclude_keys=exclude)
    assert ours == get_overrides_dirname(overrides=parsed, exclude_keys=exclude, item_sep=",", kv_sep="=")
    assert override_dirname(parsed, kv_sep=":", item_sep="__", exclude_keys=exclude) == get_overrides_dirname(
        overrides=parsed, exclude_keys=exclude, item_sep="__", kv_sep=":")


def test_batches_split_like_max_batch_size() -> None:
    jobs = [[str(i)] for i in range(5)]
    assert batches(jobs, None) == [jobs]
    assert batches(jobs, 2) == [jobs[:2], jobs[2:4], jobs[4:]]
    assert batches([], 3) == [[]]
