"""Which sweepers the preflight leaves alone: the ones whose class says it plans every job (PLANS_EVERY_JOB)."""

from __future__ import annotations

from omegaconf import OmegaConf

from sweep.multirun.preflight import sweeper_plans_every_job


def _config(target: str | None) -> object:
    return OmegaConf.create({"hydra": {"sweeper": {"_target_": target} if target else {}}})


class _Says:
    PLANS_EVERY_JOB = True


class _Inherits(_Says):
    pass


class _Truthy:
    PLANS_EVERY_JOB = "yes"   # only True itself is the promise


def test_the_reload_aware_sweeper_plans_every_job_itself() -> None:
    assert sweeper_plans_every_job(_config("hydra_plugins.chimera_sweep.reload_aware_sweeper.ReloadAwareSweeper"))


def test_other_sweepers_are_checked_by_the_preflight() -> None:
    assert not sweeper_plans_every_job(_config("hydra._internal.core_plugins.basic_sweeper.BasicSweeper"))
    assert not sweeper_plans_every_job(_config(f"{__name__}._Truthy"))
    assert not sweeper_plans_every_job(_config("no.such.Sweeper"))      # Hydra reports that one itself
    assert not sweeper_plans_every_job(_config(None))


def test_the_promise_goes_by_the_class_not_its_name() -> None:
    assert sweeper_plans_every_job(_config(f"{__name__}._Says"))
    assert sweeper_plans_every_job(_config(f"{__name__}._Inherits"))
