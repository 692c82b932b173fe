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
job measuring that round only (:mod:`sweep.rounds`).  ``blocked`` keeps one job
per cell in the reload-aware order.
"""


import copy
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

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
        self._rounds: Any = None            # sweep.rounds.Rounds when the multirun runs in rounds
        self._pending: List[List[List[str]]] = []
        self._composed: Dict[Any, Any] = {}  # configs handed to the launcher by overrides

    # BasicSweeper.sweep() calls self.split_arguments(...): as an instance method it sees the config.
    def split_arguments(self, overrides: List[Override],  # type: ignore[override]
                        max_batch_size: Optional[int]) -> List[List[List[str]]]:
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        jobs = self._ordered(jobs)
        if self._rounds is not None:
            return []                       # batches come round by round: is_done / get_job_batch
        size = max_batch_size or len(jobs)
        return [jobs[i:i + size] for i in range(0, len(jobs), size)] or [[]]

    def is_done(self) -> bool:
        if self._rounds is None:
            return super().is_done()
        if not self._pending:
            self._pending = self._next_round()
        return not self._pending

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        if self._rounds is None:
            return super().get_job_batch()
        return self._pending.pop(0)

    def _next_round(self) -> List[List[List[str]]]:
        """The next round's batches (after the previous round ran: what it stored decides), [] when done."""
        from sweep import progress
        from sweep.plan import trials_count
        from sweep.rounds import round_overrides

        rounds = self._rounds
        found = rounds.next_round()
        if found is None:
            line = rounds.cost_line()
            if line:
                progress.say(line)
            return []
        rnd, jobs = found
        auto = any(trials_count(job.cfg) is None for job in rounds.jobs)   # cells may leave earlier
        progress.say(f"round {rnd + 1} of {'≤ ' if auto else ''}{rounds.total}: {len(jobs)} cell(s)")
        batch = []
        for job in jobs:
            overrides = round_overrides(job.overrides, rounds.order, rnd)
            self._composed[tuple(overrides)] = _with_overrides(job.cfg, overrides, self.hydra_context)
            batch.append(overrides)
        size = self.max_batch_size or len(batch)
        return [batch[i:i + size] for i in range(0, len(batch), size)]

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Already done: :meth:`_ordered` composed every job."""

    def _ordered(self, jobs: List[List[str]]) -> List[List[str]]:
        from sweep.launchers import in_process, parallel_slots, shared_host_problem
        from sweep.plan import (ConfigError, check_grid_coverage, count_loads, load_key, plan_cells, reload_order,
                                trials_count)

        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        slots = parallel_slots(self.config.hydra.launcher, len(jobs))
        keyed: List[Any] = []
        cells_of: Dict[Any, Any] = {}
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
            cells_of[tuple(overrides)] = reload_order(cells, load_key)
        try:
            check_grid_coverage([cfg for _, _, cfg in keyed], list(self.config.hydra.overrides.task))
            from sweep.rounds import multirun_order

            order = multirun_order([cfg for _, _, cfg in keyed], list(cells_of.values()))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        typed_loads = count_loads([k for _, keys, _ in keyed for k in keys])
        if self.order == "reload_aware":
            keyed = reload_order(keyed, key=lambda job: job[1][0])
        loads = count_loads([k for _, keys, _ in keyed for k in keys])
        n_cells = sum(len(keys) for _, keys, _ in keyed)
        at_once = f", {slots} at once" if slots > 1 else ""
        from sweep import progress

        progress.announce(n_cells)                 # the live progress panel's "cells done / total"
        rounds_plan: Optional[List[List[int]]] = None
        if order is None:
            print(f"plan: {n_cells} cell(s) in {len(keyed)} job(s){at_once}, {loads} model load(s) "
                  f"({self.order} order; as typed: {typed_loads})", file=sys.stderr, flush=True)
        else:
            from sweep import layout
            from sweep.rounds import RoundJob, Rounds

            first = keyed[0][2]
            self._rounds = Rounds([RoundJob(list(o), cfg, cells_of[tuple(o)]) for o, _, cfg in keyed], order,
                                  layout.sweep_dir(first.hydra), resume=bool(first.resume))
            rounds_plan = self._rounds.preview()
            auto = "up to " if any(trials_count(job.cfg) is None for job in self._rounds.jobs) else ""
            visits = sum(len(r) for r in rounds_plan)
            stored = len(keyed) * self._rounds.total - visits if first.resume else 0
            left = f" left ({stored} stored)" if stored else ""
            how = "cells permuted every round" if order.order == "random" else "cells alternate, same order every round"
            print(f"plan: {n_cells} cell(s) in {len(keyed)} job(s) × {auto}{self._rounds.total} round(s) = "
                  f"{auto}{visits} job(s){left}{at_once}, {order.describe()}: {how}; "
                  f"{auto}{self._rounds.loads(rounds_plan)} model load(s) (blocked: {loads})",
                  file=sys.stderr, flush=True)
            visited = {i for rnd in rounds_plan for i in rnd}     # the cells this run measures, and their trials
            progress.announce(sum(len(self._rounds.jobs[i].cells) for i in visited),
                              self._rounds.trials(rounds_plan), at_most=bool(auto))
        if self.config.get("dry_run"):
            from sweep.preflight import dry_run

            # prints the plan and exits: no job runs
            dry_run([cfg for _, _, cfg in keyed], rounds=self._rounds, rounds_plan=rounds_plan,
                    one_process=in_process(self.config.hydra.launcher))
        self._composed.update({tuple(overrides): cfg for overrides, _, cfg in keyed})
        _hand_over(loader, self._composed)
        return [overrides for overrides, _, _ in keyed]


def _with_overrides(cfg: DictConfig, overrides: List[str], hydra_context: Any) -> DictConfig:
    """``cfg`` as Hydra would compose it with ``overrides`` (the job's own plus ``order``/``order_seed``/``round``).

    Why not compose again: a round job differs from its composed job in those
    three plain values only, and composing is most of a job's own overhead.
    """
    new = copy.deepcopy(cfg)
    OmegaConf.copy_cache(from_config=cfg, to_config=new)
    from sweep.rounds import ROUND_KEYS

    with open_dict(new):
        for item in overrides[-len(ROUND_KEYS):]:
            key, value = item.split("=", 1)
            new[key] = value if key == "order" else int(value)
        new.hydra.overrides.task = list(overrides)
        parsed = OverridesParser.create(config_loader=hydra_context.config_loader).parse_overrides(list(overrides))
        from hydra._internal.config_loader_impl import get_overrides_dirname

        dirname = new.hydra.job.config.override_dirname
        new.hydra.job.override_dirname = get_overrides_dirname(
            overrides=parsed, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
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
