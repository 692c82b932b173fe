"""``hydra/sweeper=reload_aware`` (the default): Hydra's basic grid, run in an order that spares model loads.

Hydra's basic sweeper runs the product of the overrides in the order they were
typed, so ``chimera.num_ctx=256,512 model=a,b`` reloads the model for every
cell.  This sweeper composes each job's config (Hydra's basic sweeper composes
them all anyway, to check them), asks :mod:`sweep.plan` for the cells and
their load keys, runs the jobs grouped by server, model and load-time options,
and prints how many model loads the plan needs.  ``hydra.sweeper.order=typed``
keeps the typed order.  Bad values fail here, as one line, before any job runs.

Under the sweep's ``order=random | interleaved`` (random by default when the
cells include a baseline and a chimera preset) the jobs run in rounds instead:
each round one batch, a job per cell still running, in the round's order, each
job measuring that round only (:mod:`sweep.multirun.rounds`).  ``blocked`` keeps one job
per cell in the reload-aware order.
"""


import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from sweep.multirun.jobs import batches, grid_jobs, override_dirname

ORDERS = ("reload_aware", "typed")


@dataclass
class ReloadAwareSweeperConf:
    _target_: str = "hydra_plugins.chimera_sweep.reload_aware_sweeper.ReloadAwareSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    order: str = "reload_aware"   # or "typed": Hydra's own order


ConfigStore.instance().store(group="hydra/sweeper", name="reload_aware", node=ReloadAwareSweeperConf,
                             provider="chimera-sweep")


class ReloadAwareSweeper(Sweeper):
    """Hydra's basic grid (:func:`sweep.multirun.jobs.grid_jobs`), its jobs reordered by :func:`sweep.plan.reload_order`.

    A :class:`~hydra.plugins.sweeper.Sweeper` of its own on Hydra's public plugin API: it saves
    ``multirun.yaml`` and launches its batches as Hydra's basic sweeper does.
    """

    # It plans every job itself (plan_multirun in _ordered, then preflight.dry_run): the preflight
    # callback reads this and leaves the multirun to it (sweep.multirun.preflight's docstring).
    PLANS_EVERY_JOB = True

    def __init__(self, max_batch_size: Optional[int], params: Optional[Dict[str, str]] = None,
                 order: str = "reload_aware") -> None:
        super().__init__()
        if order not in ORDERS:
            raise HydraException(f"invalid hydra.sweeper.order={order}: use {' or '.join(ORDERS)}")
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.order = order
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Optional[Launcher] = None
        self._rounds: Any = None            # sweep.multirun.rounds.Rounds when the multirun runs in rounds
        self._pending: List[List[List[str]]] = []
        self._composed: Dict[Any, Any] = {}  # configs handed to the launcher by overrides

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        # The launcher composes each job through this loader: it hands out the configs composed here.
        handing = HydraContext(config_loader=HandingLoader(hydra_context.config_loader, self._composed),
                               callbacks=hydra_context.callbacks)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=handing, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        strings = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(strings)
        jobs = self._ordered(grid_jobs(parsed))
        # batches come round by round when the multirun runs in rounds (see _next_round)
        self._pending = [] if self._rounds is not None else batches(jobs, self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: List[Sequence[JobReturn]] = []
        index = 0
        while not self._done():
            batch = self._pending.pop(0)
            results = self.launcher.launch(batch, initial_job_idx=index)
            for result in results:
                _ = result.return_value     # raises the job's own exception, as Hydra's basic sweeper does
            index += len(batch)
            returns.append(results)
        return returns

    def _done(self) -> bool:
        if self._rounds is not None and not self._pending:
            self._pending = self._next_round()
        return not self._pending

    def _next_round(self) -> List[List[List[str]]]:
        """The next round's batches (after the previous round ran: what it stored decides), [] when done."""
        from sweep import progress
        from sweep.multirun.rounds import round_overrides

        rounds = self._rounds
        found = rounds.next_round()
        if found is None:
            line = rounds.cost_line()
            if line:
                progress.say(line)
            return []
        rnd, jobs = found
        auto = rounds.adaptive   # cells may leave earlier
        progress.say(f"round {rnd + 1} of {'≤ ' if auto else ''}{rounds.total}: {len(jobs)} cell(s)")
        batch = []
        for job in jobs:
            overrides = round_overrides(job.overrides, rounds.order, rnd)
            self._composed[tuple(overrides)] = _with_overrides(job.composed, overrides, self.hydra_context)
            batch.append(overrides)
        size = self.max_batch_size or len(batch)
        return [batch[i:i + size] for i in range(0, len(batch), size)]

    def _ordered(self, jobs: List[List[str]]) -> List[List[str]]:
        """Compose every job, plan the multirun (:func:`sweep.multirun.plan.plan_multirun`), print it, set up rounds."""
        from sweep import progress
        from sweep.cells import ConfigError
        from sweep.config import Order
        from sweep.multirun import layout
        from sweep.multirun.launchers import in_process, parallel_slots
        from sweep.multirun.plan import plan_multirun
        from sweep.multirun.rounds import RoundJob, Rounds

        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        slots = parallel_slots(self.config.hydra.launcher, len(jobs))
        own_subdir = any(o.startswith("hydra.output_subdir=") for o in self.config.hydra.overrides.hydra)
        composed = []
        for overrides in jobs:
            cfg = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            if not own_subdir:
                _without_job_files(cfg)
            composed.append((overrides, cfg))
        try:
            plan = plan_multirun(composed, list(self.config.hydra.overrides.task), slots=slots,
                                 reorder=self.order == "reload_aware")
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        progress.announce(plan.cells)                 # the live progress panel's "cells done / total"
        rounds_plan: Optional[List[List[int]]] = None
        if plan.order is None:
            print(plan.blocked_line(self.order, slots), file=sys.stderr, flush=True)
        else:
            order, first = plan.order, plan.jobs[0].cfg
            self._rounds = Rounds([RoundJob(job.overrides, job.cfg, job.cells, job.composed) for job in plan.jobs],
                                  order, layout.sweep_dir(plan.jobs[0].composed.hydra), resume=first.resume)
            rounds_plan = self._rounds.preview()
            auto = "up to " if self._rounds.adaptive else ""
            visits = sum(len(r) for r in rounds_plan)
            stored = len(plan.jobs) * self._rounds.total - visits if first.resume else 0
            left = f" left ({stored} stored)" if stored else ""
            at_once = f", {slots} at once" if slots > 1 else ""
            how = ("cells permuted every round" if order.order == Order.random
                   else "cells alternate, same order every round")
            print(f"plan: {plan.cells} cell(s) in {len(plan.jobs)} job(s) × {auto}{self._rounds.total} round(s) = "
                  f"{auto}{visits} job(s){left}{at_once}, {order.describe()}: {how}; "
                  f"{auto}{self._rounds.loads(rounds_plan)} model load(s) (blocked: {plan.loads})",
                  file=sys.stderr, flush=True)
            visited = {i for rnd in rounds_plan for i in rnd}     # the cells this run measures, and their trials
            progress.announce(sum(len(self._rounds.jobs[i].cells) for i in visited),
                              self._rounds.trials(rounds_plan), at_most=bool(auto))
        if plan.jobs[0].cfg.dry_run:
            from sweep.multirun.preflight import dry_run

            # prints the plan and exits: no job runs
            dry_run([job.cfg for job in plan.jobs], layout.sweep_dir(plan.jobs[0].composed.hydra), rounds=self._rounds,
                    rounds_plan=rounds_plan, one_process=in_process(self.config.hydra.launcher))
        self._composed.update({tuple(job.overrides): job.composed for job in plan.jobs})
        return [job.overrides for job in plan.jobs]


def _with_overrides(cfg: DictConfig, overrides: List[str], hydra_context: Any) -> DictConfig:
    """``cfg`` as Hydra would compose it with ``overrides`` (the job's own plus ``order``/``order_seed``/``round``).

    Why not compose again: a round job differs from its composed job in those
    three plain values only, and composing is most of a job's own overhead.
    """
    new = copy.deepcopy(cfg)
    OmegaConf.copy_cache(from_config=cfg, to_config=new)
    from sweep.multirun.rounds import ROUND_KEYS

    with open_dict(new):
        for item in overrides[-len(ROUND_KEYS):]:
            key, value = item.split("=", 1)
            new[key] = value if key == "order" else int(value)
        new.hydra.overrides.task = list(overrides)
        parsed = OverridesParser.create(config_loader=hydra_context.config_loader).parse_overrides(list(overrides))
        dirname = new.hydra.job.config.override_dirname
        new.hydra.job.override_dirname = override_dirname(
            parsed, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=list(dirname.exclude_keys))
    return new


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


class HandingLoader:
    """The launcher's config loader: each job's config as composed by the sweeper, not composed a second time.

    Composing a job is most of a cell's own overhead against a fast server
    (Hydra + OmegaConf: ~50 ms quiet, far more on a loaded machine); every
    config is handed out once, anything else goes to Hydra's loader.  A wrapper
    passed to the launcher through Hydra's public :class:`~hydra.types.HydraContext`,
    so Hydra's own loader is left as it is.
    """

    def __init__(self, loader: Any, composed: Dict[Any, Any]) -> None:
        self.loader = loader
        self.composed = composed

    def load_sweep_config(self, master_config: Any, sweep_overrides: List[str]) -> Any:
        cfg = self.composed.pop(tuple(sweep_overrides), None)
        return cfg if cfg is not None else self.loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("loader", "composed"):   # pickling (joblib) and unset fields
            raise AttributeError(name)
        return getattr(self.loader, name)
