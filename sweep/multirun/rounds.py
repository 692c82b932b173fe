"""A multirun's order: ``order=random | interleaved`` as rounds of Hydra jobs, one job per cell and round.

Why: a multirun runs one cell per Hydra job, and the sweeper used to launch
each job once, for all its trials: blocked, whatever ``order`` said — and the
demo compares a baseline with chimera cells exactly that way.  Here the
sweeper runs the trials in *rounds*: round ``r`` is one batch of jobs, one per
job (cell) still running, in the round's order (:func:`sweep.order.round_order`:
a permutation drawn from ``order_seed`` and ``r``, or the reload-aware order
every round for ``interleaved``), each job given ``order=``, ``order_seed=``
and ``round=r`` and measuring that round only (one trial per prompt, after an
untimed warm-up when its server last loaded other options: :mod:`sweep.execute`).
Any launcher gets the same batches.  ``blocked`` keeps one job per cell.

Between rounds the sweeper reads what the jobs stored (the contract's reader), so:

* under ``resume=true`` a round already stored is not launched again;
* under ``trials=auto`` a cell whose mean is precise enough gets no more rounds
  (:func:`sweep.adaptive.stop_reason`, as a job in one process decides it), up to ``auto.max_trials``;
* a cell abandoned in this run (``backend.max_consecutive_failures`` failures in a row) gets no more rounds.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweep.adaptive import Auto, stop_reason
from sweep.contract import Status, cell_path, cell_rows, utc_now
from sweep.backends.hosts import alternate, most_used
from sweep.backends.kinds import kind_of
from sweep.order import resolve, round_order
from sweep.backends.model_state import needs_warmup
from sweep.cells import Cell, ConfigError, load_key
from sweep.config import Order, SweepConfig
from sweep.plan import count_loads, trials_count, warmups_per_visit
from sweep.workloads.trials import round_trials, rows_per_trial, stored_keys

ROUND_KEYS = ("order", "order_seed", "round")   # what the sweeper adds to each job's overrides
_COLUMNS = ["cell_hash", "trial", "prompt_id", "warmup", "status", "started_at", "e2e_ms", "base_url",
            "workflow_id", "run_id", "run_kind", "agent_id", "agents"]   # the last ones: agent runs (workloads.trials)


@dataclass(frozen=True)
class MultirunOrder:
    """The order a multirun runs in, with its seed (``drawn``: not given, drawn by the sweeper)."""

    order: Order
    seed: int
    drawn: bool

    def describe(self) -> str:
        if self.order != Order.random:
            return f"order={self.order}"
        return f"order=random (order_seed={self.seed}{', drawn' if self.drawn else ''})"


def multirun_order(configs: Sequence[SweepConfig], cells: Sequence[Sequence[Cell]]) -> MultirunOrder | None:
    """The multirun's order when it runs in rounds, else None (blocked: one job per cell, as before).

    ``order`` unset: random when the sweep's cells include a baseline and a chimera preset
    (:func:`sweep.order.resolve`, over every job's cells); agent cells as well as prompt cells.
    """
    orders = {cfg.order for cfg in configs}
    seeds = {cfg.order_seed for cfg in configs}
    if len(orders) > 1 or len(seeds) > 1:
        raise ConfigError("order and order_seed take one value for the whole multirun (the order is the sweep's): "
                          "run one sweep per order")
    (given,), (seed,) = orders, seeds
    if len(configs) < 2:
        return None          # one job: it orders its own cells
    order, drawn_seed = resolve(given, [c.preset for job in cells for c in job], seed)
    if order == Order.blocked:
        return None
    return MultirunOrder(order, drawn_seed, drawn=seed is None)


def round_overrides(overrides: Sequence[str], order: MultirunOrder, rnd: int) -> list[str]:
    """A job's overrides for round ``rnd``: its own, with the sweep's order, seed and the round."""
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in ROUND_KEYS]
    return [*kept, f"order={order.order}", f"order_seed={order.seed}", f"round={rnd}"]


@dataclass
class RoundJob:
    """One job of the multirun (usually one cell), as the sweeper composed it."""

    overrides: list[str]
    cfg: SweepConfig
    cells: list[Cell]
    composed: DictConfig | None = None   # as Hydra composed it: the sweeper composes its round jobs from it

    @property
    def rounds(self) -> int:
        """Rounds the job can take part in: its trials, or ``auto.max_trials``."""
        return trials_count(self.cfg) or int(self.cfg.auto.max_trials)


@dataclass
class Rounds:
    """The round-by-round schedule of a multirun, decided from what is stored before each round."""

    jobs: list[RoundJob]
    order: MultirunOrder
    sweep_dir: Path
    resume: bool = False
    next: int = 0
    started_at: dt.datetime = field(default_factory=utc_now)
    started: float = field(default_factory=time.perf_counter)

    @property
    def total(self) -> int:
        return max(job.rounds for job in self.jobs)

    @property
    def adaptive(self) -> bool:
        """Some job runs ``trials=auto``: its cells may leave the rounds early (totals are upper bounds)."""
        return any(trials_count(job.cfg) is None for job in self.jobs)

    def next_round(self) -> tuple[int, list[RoundJob]] | None:
        """The next round with something to measure, and its jobs in the round's order; None when done."""
        while self.next < self.total:
            rnd = self.next
            self.next += 1
            rows = self._rows()
            active = [i for i, job in enumerate(self.jobs) if not self._stopped(job, rows, rnd)]
            if not active:
                return None
            todo = [i for i in round_order(active, self.order.order, self.order.seed, rnd)
                    if not self.resume or self._missing(self.jobs[i], rows, rnd)]
            if todo:
                return rnd, alternate([self.jobs[i] for i in todo], lambda job: self._home(job, rows))
        return None

    # ------------------------------------------------------------------ what is stored
    def _rows(self) -> dict[str, list[dict[str, Any]]]:
        """Each cell's stored rows (by hash), oldest first."""
        out: dict[str, list[dict[str, Any]]] = {}
        for job in self.jobs:
            columns = list(dict.fromkeys([*_COLUMNS, job.cfg.auto.metric]))
            for cell in job.cells:
                out[cell.cell_hash] = cell_rows(cell_path(self.sweep_dir, cell.file_stem), cell.cell_hash, columns)
        return out

    def _stopped(self, job: RoundJob, rows: dict[str, list[dict[str, Any]]], rnd: int) -> bool:
        """No cell of the job needs round ``rnd``: past its trials, precise enough (auto), or abandoned."""
        if rnd >= job.rounds:
            return True
        return all(self._cell_stopped(job, cell, rows.get(cell.cell_hash, []), rnd) for cell in job.cells)

    def _cell_stopped(self, job: RoundJob, cell: Cell, rows: list[dict[str, Any]], rnd: int) -> bool:
        cfg = job.cfg
        if trials_count(cfg) is None and rnd > 0:
            a = cfg.auto
            measured = [r[a.metric] for r in rows
                        if r["status"] == Status.OK and not r["warmup"] and r[a.metric] is not None]
            if stop_reason(Auto(a.metric, float(a.ci_pct), int(a.min_trials), int(a.max_trials)), rnd, measured):
                return True
        this_run = [r for r in rows if r["started_at"] is not None and r["started_at"] >= self.started_at]
        failures = 0
        for r in reversed(this_run):      # failures in a row at the end of this run: the job abandoned the cell
            if r["status"] == Status.OK:
                break
            failures += 1
        return failures >= int(cfg.backend.max_consecutive_failures)

    @staticmethod
    def _home(job: RoundJob, rows: dict[str, list[dict[str, Any]]]) -> str | None:
        """The server the job's cells are measured on (:func:`sweep.backends.hosts.stored_host`, from the rows read here).

        None where an address names no lasting server (an embedded engine's port is new in every process).
        """
        if not kind_of(job.cfg.backend).stable_address:
            return None
        return most_used(r["base_url"] for cell in job.cells for r in rows.get(cell.cell_hash, []))

    @classmethod
    def _missing(cls, job: RoundJob, rows: dict[str, list[dict[str, Any]]], rnd: int) -> bool:
        """Some cell of the job lacks a successful measured trial of round ``rnd`` for some prompt."""
        return cls._missing_trials(job, rows, rnd) > 0

    @staticmethod
    def _missing_trials(job: RoundJob, rows: dict[str, list[dict[str, Any]]], rnd: int) -> int:
        """Measured rows of round ``rnd`` the job's cells lack: a prompt's call, or each call of an agent run,
        of the trials not stored ok (the progress counts rows)."""
        missing = 0
        isolated = job.cfg.agents.isolated_runs
        for cell in job.cells:
            done = stored_keys(cell, rows.get(cell.cell_hash, []))
            missing += sum(rows_per_trial(cell, t) for t in round_trials(cell, rnd, trials_count(job.cfg), isolated)
                           if t.key() not in done)
        return missing

    # ------------------------------------------------------------------ plan and cost
    def preview(self) -> list[list[int]]:
        """Every round's jobs (indexes) as a fixed-trials run would visit them, stored rounds left out on resume.

        trials=auto: up to ``auto.max_trials`` rounds; cells may leave earlier.
        """
        rows = self._rows() if self.resume else {}
        plan = []
        for rnd in range(self.total):
            active = [i for i, job in enumerate(self.jobs) if rnd < job.rounds]
            plan.append([i for i in round_order(active, self.order.order, self.order.seed, rnd)
                         if not self.resume or self._missing(self.jobs[i], rows, rnd)])
        return plan

    def trials(self, plan: Sequence[Sequence[int]]) -> int:
        """Measured trials the rounds in ``plan`` run (trials=auto: at most; a cell may leave earlier)."""
        rows = self._rows() if self.resume else {}
        return sum(self._missing_trials(self.jobs[i], rows, rnd) for rnd, jobs in enumerate(plan) for i in jobs)

    def loads(self, plan: Sequence[Sequence[int]]) -> int:
        """Model loads the rounds imply (one server; per-server counting as :func:`sweep.plan.count_loads`)."""
        return count_loads([load_key(c) for rnd in plan for i in rnd for c in self.jobs[i].cells])

    def warmups(self, plan: Sequence[Sequence[int]], one_process: bool) -> dict[str, int]:
        """Warm-up requests per cell (by hash) the rounds in ``plan`` will run.

        ``one_process`` (the basic launcher): the jobs run one after another in
        this process, so a visit warms up exactly when
        :func:`sweep.backends.model_state.needs_warmup` says, replayed here over the
        visits in order (one server, as :meth:`loads` counts).  Otherwise a job
        may run in a fresh process that knows nothing of the server (a
        launcher's worker): every visit may warm up, so this is the upper
        bound, one visit's warm-ups per visit.
        """
        out = {c.cell_hash: 0 for job in self.jobs for c in job.cells}
        last: dict[Any, tuple[Any, ...]] = {}     # per server: the load key of its last request
        visited: set[str] = set()
        for rnd in plan:
            for i in rnd:
                job = self.jobs[i]
                for cell in job.cells:
                    key = load_key(cell)
                    if not one_process or needs_warmup(cell.cell_hash in visited, last.get(key[0]), key):
                        out[cell.cell_hash] += warmups_per_visit(job.cfg)
                    visited.add(cell.cell_hash)
                    last[key[0]] = key
        return out

    def cost_line(self) -> str | None:
        """After the last round: the warm-ups beyond each cell's first in this run, and their share of the time.

        Read from the stored rows of this run: the time is the warm-ups' own e2e; the
        whole is the wall time of the rounds (job start-up included).
        """
        wall = time.perf_counter() - self.started
        extra, extra_ms = 0, 0.0
        rows = self._rows()
        for job in self.jobs:
            for cell in job.cells:
                warm = sorted((r for r in rows.get(cell.cell_hash, []) if r["warmup"] and r["started_at"] is not None
                               and r["started_at"] >= self.started_at), key=lambda r: r["started_at"])
                trials: dict[Any, float] = {}   # a warm-up trial: one row, or an agent run's rows
                for i, r in enumerate(warm):
                    unit = r["run_id"] or r["workflow_id"] or i
                    trials[unit] = trials.get(unit, 0.0) + (r["e2e_ms"] or 0.0)
                for ms in list(trials.values())[int(job.cfg.warmup):]:   # the first visit's, a blocked run has too
                    extra += 1
                    extra_ms += ms
        if not extra:
            return None
        return (f"{self.order.order} order: {extra} extra warm-up(s) after reloads between cells, "
                f"{extra_ms / 1e3:.1f} s of warm-up requests = {extra_ms / 1e3 / wall:.0%} of {wall:.1f} s "
                "running the rounds")
