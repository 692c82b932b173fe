"""``hydra/sweeper=reload_aware`` (the default): Hydra's basic grid, run in an order that spares model loads.

Hydra's basic sweeper runs the product of the overrides in the order they were
typed, so ``chimera.num_ctx=256,512 model=a,b`` reloads the model for every
cell.  This sweeper composes each job's config (Hydra's basic sweeper composes
them all anyway, to check them), asks :mod:`sweep.plan` for the cells and
their load keys, runs the jobs grouped by server, model and load-time options,
and prints how many model loads the plan needs.  ``hydra.sweeper.order=typed``
keeps the typed order.  Bad values fail here, as one line, before any job runs.
"""


import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict

ORDERS = ("reload_aware", "typed")


@dataclass
class ReloadAwareSweeperConf:
    _target_: str = "hydra_plugins.chimera_sweep.reload_aware_sweeper.ReloadAwareSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    order: str = "reload_aware"   # or "typed": Hydra's own order


ConfigStore.instance().store(group="hydra/sweeper", name="reload_aware", node=ReloadAwareSweeperConf,
                             provider="chimera-sweep")


class ReloadAwareSweeper(BasicSweeper):
    """Hydra's basic sweeper with the job list reordered by :func:`sweep.plan.reload_order`."""

    def __init__(self, max_batch_size: Optional[int], params: Optional[Dict[str, str]] = None,
                 order: str = "reload_aware") -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        if order not in ORDERS:
            raise HydraException(f"invalid hydra.sweeper.order={order}: use {' or '.join(ORDERS)}")
        self.order = order

    # BasicSweeper.sweep() calls self.split_arguments(...): as an instance method it sees the config.
    def split_arguments(self, overrides: List[Override],  # type: ignore[override]
                        max_batch_size: Optional[int]) -> List[List[List[str]]]:
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        jobs = self._ordered(jobs)
        size = max_batch_size or len(jobs)
        return [jobs[i:i + size] for i in range(0, len(jobs), size)] or [[]]

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Already done: :meth:`_ordered` composed every job."""

    def _ordered(self, jobs: List[List[str]]) -> List[List[str]]:
        from sweep.launchers import parallel_slots, shared_host_problem
        from sweep.plan import ConfigError, check_grid_coverage, count_loads, load_key, plan_cells, reload_order

        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        slots = parallel_slots(self.config.hydra.launcher, len(jobs))
        keyed: List[Any] = []
        own_subdir = any(o.startswith("hydra.output_subdir=") for o in self.config.hydra.overrides.hydra)
        for overrides in jobs:
            cfg = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            try:
                cells = plan_cells(cfg)
                problem = None if cfg.allow_shared_host else shared_host_problem(cfg.backend, slots)
                if problem:
                    raise ConfigError(problem)
            except ConfigError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
            if not own_subdir:
                _without_job_files(cfg)
            keyed.append((overrides, sorted(load_key(c) for c in cells), cfg))
        try:
            check_grid_coverage([cfg for _, _, cfg in keyed], list(self.config.hydra.overrides.task))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        typed_loads = count_loads([k for _, keys, _ in keyed for k in keys])
        if self.order == "reload_aware":
            keyed = reload_order(keyed, key=lambda job: job[1][0])
        loads = count_loads([k for _, keys, _ in keyed for k in keys])
        n_cells = sum(len(keys) for _, keys, _ in keyed)
        at_once = f", {slots} at once" if slots > 1 else ""
        print(f"plan: {n_cells} cell(s) in {len(keyed)} job(s){at_once}, {loads} model load(s) "
              f"({self.order} order; as typed: {typed_loads})", file=sys.stderr, flush=True)
        from sweep.progress import PLAN_ENV

        os.environ[PLAN_ENV] = str(n_cells)        # the live progress panel's "cells done / total"
        if self.config.get("dry_run"):
            from sweep.preflight import dry_run

            dry_run([cfg for _, _, cfg in keyed])     # prints the plan and exits: no job runs
        _hand_over(loader, {tuple(overrides): cfg for overrides, _, cfg in keyed})
        return [overrides for overrides, _, _ in keyed]


def _without_job_files(cfg: Any) -> None:
    """A job of this multirun saves no Hydra files of its own (``hydra.output_subdir=null`` for it).

    Hydra writes config.yaml, hydra.yaml and overrides.yaml for every job: ~8 ms
    of CPU per cell, most of what Hydra itself adds to a cell.  Each cell's
    resolved config and overrides are in its provenance (``_run.json``, the Parquet
    metadata) and the sweep's in ``_hydra/multirun.yaml``; a single run keeps its
    files, and ``hydra.output_subdir=…`` on the command line keeps them for every
    job.  The job's log file (opened only if something logs) moves up into the
    job's own directory, ``_hydra/<job>/``, which Hydra still makes.
    """
    with open_dict(cfg):
        cfg.hydra.output_subdir = None
        if OmegaConf.select(cfg, "hydra.job_logging.handlers.file") is not None:
            cfg.hydra.job_logging.handlers.file.filename = "${hydra.runtime.output_dir}/${hydra.job.name}.log"


def _hand_over(loader: Any, composed: Dict[Any, Any]) -> None:
    """Let the launcher take each job's config as composed here instead of composing it a second time.

    Composing a job is most of a cell's own overhead against a fast server
    (Hydra + OmegaConf: ~50 ms quiet, far more on a loaded machine); every
    config is handed out once, anything else falls through to Hydra.
    """
    original = loader.load_sweep_config

    def load_sweep_config(master_config: Any, sweep_overrides: List[str]) -> Any:
        cfg = composed.pop(tuple(sweep_overrides), None)
        return cfg if cfg is not None else original(master_config, sweep_overrides)

    loader.load_sweep_config = load_sweep_config
