"""Run a job's cells: warm-ups, trials, retries, abandonment, resume — in the job's order and model state.

Every attempt becomes a stored row (a retried failure is recorded, not hidden),
and the cell's rows are flushed to its store after each one.  On resume, the
measured trials already on disk for this cell's hash are kept and only the
missing ones run.

:class:`CellRun` carries what a cell run needs (the call target, the cell, its
store, the retry policy, telemetry, the progress callback and the running
outcome), so a workload is written against one object:

- ``await run.call(prompt, record, attempt)`` — one measured streamed call with
  telemetry sampled around it; not stored (use it for each LLM call of a
  workflow, several at once with ``asyncio.gather``);
- ``run.keep(*records)`` — store rows (one flush: one part on disk), count them, report them;
- ``await run.attempt(workload, trial)`` — one trial of any :class:`~sweep.cells.Workload`
  (a prompt's call, an agent workflow, a multi-agent run): its rows kept, transient failures
  retried with backoff (:func:`with_retries`).

:func:`run_cells` is the design every workload runs under: order, rounds, ``trials=auto``, resume.

Several agents of one cell: ``dataclasses.replace(run, target=other_host_target,
cell=agent_cell)`` shares the store and the outcome.  Storing writes a file:
in concurrent runs, keep the rows after the concurrent group has finished, not
while other calls are still streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep import interrupts
from sweep.adaptive import STOP_ABANDONED, STOP_TRIALS, Auto, stop_reason
from sweep.background import Probe
from sweep.contract import Status, TrialRecord
from sweep.contract import is_transient as _transient
from sweep.backends import cpu_only
from sweep.backends.model_state import ServerState, needs_warmup, offload, server_state, unload, was_reloaded
from sweep.order import round_order
from sweep.cells import Cell, Trial, TrialSpec, Workload, load_key
from sweep.config import Order, State
from sweep.runner import Target, measure_call
from sweep.running import Running
from sweep.store import CellStore, TraceStore
from sweep.telemetry import Telemetry, joules_per_token, sample_rows


@dataclass(frozen=True)
class Policy:
    """How hard to try (from ``backend.*``)."""

    request_timeout_s: float = 900.0
    retries: int = 2
    retry_backoff_s: float = 1.0
    max_consecutive_failures: int = 3


@dataclass
class CellOutcome:
    """What happened to a cell, for the progress line and the end-of-sweep summary."""

    cell: Cell
    path: Path
    measured_ok: int = 0       # measured trials that succeeded (this run + earlier runs)
    expected: int = 0          # measured trials the cell should have
    failed_attempts: int = 0   # failed attempts this run (each is a stored row)
    ran: int = 0               # requests sent this run
    abandoned: bool = False
    records: list[TrialRecord] | None = None
    # a multirun's round job (``round=``): the sweeper gives the cell another round; the later rounds'
    # trials it will not get (trials=auto stopped it, or it was abandoned)
    more_rounds: bool = False
    skipped: int = 0

    @property
    def complete(self) -> bool:
        return self.measured_ok >= self.expected


@dataclass
class Watch:
    """Telemetry for a cell: the job's sampler factory and where the cell's samples go."""

    telemetry: Telemetry
    traces: TraceStore


def base_record(cell: Cell, sweep_id: str, base_url: str) -> TrialRecord:
    """The identity columns every trial of the cell shares."""
    return TrialRecord(
        sweep_id=sweep_id, cell_id=cell.cell_id, cell_hash=cell.cell_hash, preset=cell.preset,
        model=cell.model, backend=cell.backend, base_url=base_url, workload=cell.workload,
        prompt_tokens=cell.lengths.prompt_tokens if cell.lengths is not None else None,
        **dict(cell.options),
    )


@dataclass
class CellRun:
    """One cell's run: everything a workload needs to measure, retry and store its calls."""

    target: Target
    cell: Cell
    store: CellStore
    policy: Policy
    sweep_id: str
    watch: Watch | None = None
    on_record: Callable[[TrialRecord], None] | None = None
    running: Running | None = None      # the sweep's running-cells registry: fills concurrent_cells
    # other processes' CPU during each call and the load average at its start (background_cpu_pct, loadavg_1m)
    background: Probe | None = dataclasses.field(default_factory=Probe)
    # Set by the job's design (order/state, :func:`run_cells`): columns every row gets, a step before each
    # attempt (an unload for state=cold) and one after each call, before the row is stored (reload flag, /api/ps).
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    before_call: Callable[[], Awaitable[None]] | None = None
    after_call: Callable[[TrialRecord], Awaitable[None]] | None = None
    after_trial: Callable[[list[TrialRecord]], None] | None = None   # a trial's rows, before they are stored
    outcome: CellOutcome = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.outcome = CellOutcome(self.cell, self.store.path, records=self.store.records)

    def base(self, spec: TrialSpec) -> TrialRecord:
        """The identity columns of one trial of this cell."""
        return dataclasses.replace(base_record(self.cell, self.sweep_id, self.target.client.base_url),
                                   trial=spec.trial, warmup=spec.warmup, prompt_id=spec.prompt.id, **self.extra)

    async def call(self, prompt: str, record: TrialRecord, attempt: int = 1) -> TrialRecord:
        """One streamed call, with the machine sampled around it when telemetry is on and the background load
        (other processes' CPU, the load average) read at its start and end; not stored."""
        interrupts.check()   # a Ctrl-C whose cancellation a library absorbed still stops here
        sampler = self.watch.telemetry.sampler().start() if self.watch else None
        load = self.background.start() if self.background else None
        # registered as running for exactly this call: its row counts every cell with a call in flight meanwhile
        with self.running.cell(self.cell.cell_hash) if self.running else contextlib.nullcontext() as presence:
            try:
                measured = await measure_call(self.target, self.cell, prompt, record)
            finally:
                columns = sampler.stop() if sampler else {}
                if load is not None and self.background is not None:
                    columns.update(self.background.columns(load))
        if presence is not None:
            measured.concurrent_cells = presence.peak
        measured.attempt = attempt
        for name, value in columns.items():
            setattr(measured, name, value)
        measured.joules_per_token = joules_per_token(measured.gpu_energy_j, measured.eval_count)
        if self.watch and sampler:
            identity = {"cell_id": measured.cell_id, "cell_hash": measured.cell_hash, "trial": measured.trial,
                        "warmup": measured.warmup, "attempt": attempt, "started_at": measured.started_at}
            self.watch.traces.extend(sample_rows(sampler.samples, identity))
        return measured

    def keep(self, *records: TrialRecord) -> None:
        """Store rows (flushed to disk now, several rows as one part), count them, and report them."""
        self.store.extend(records)
        for record in records:
            self.outcome.ran += 1
            if record.status != Status.OK:
                self.outcome.failed_attempts += 1
            if self.on_record:
                self.on_record(record)

    async def attempt(self, workload: Workload, trial: Trial) -> tuple[bool, list[TrialRecord]]:
        """One trial of any workload with bounded retries and exponential backoff for transient failures.

        Every attempt's rows are stored (one part: a run's rows after the run); (succeeded, the last rows).
        """
        async def once(attempt: int) -> list[TrialRecord]:
            if self.before_call:
                await self.before_call()
            rows = await workload.run_trial(trial, attempt)
            if self.after_call:
                for row in rows:
                    await self.after_call(row)
            if self.after_trial:
                self.after_trial(rows)
            self.keep(*rows)
            return rows

        return await with_retries(self.policy, once, workload.failed)


def is_transient(record: TrialRecord) -> bool:
    """Worth another attempt: the server or the network may recover (an HTTP error only for 5xx or 429)."""
    return _transient(record.status, record.http_status)


def not_ok(rows: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The rows that failed: what makes an attempt of most workloads a failure."""
    return [r for r in rows if r.status != Status.OK]


async def with_retries(policy: Policy, once: Callable[[int], Awaitable[list[TrialRecord]]],
                       failures: Callable[[Sequence[TrialRecord]], list[TrialRecord]] = not_ok,
                       ) -> tuple[bool, list[TrialRecord]]:
    """Run ``once(attempt)`` (it stores its rows) until they all succeed; (succeeded, the last attempt's rows).

    The one retry rule of every workload: another attempt, after an exponential backoff, only while
    the retries last and every failed row (``skipped`` rows aside: they never ran) may recover.
    """
    for attempt in range(1, policy.retries + 2):
        rows = await once(attempt)
        failed = failures(rows)
        if not failed:
            return True, rows
        if not all(is_transient(r) for r in failed if r.status != Status.SKIPPED) or attempt > policy.retries:
            return False, rows
        await asyncio.sleep(policy.retry_backoff_s * 2 ** (attempt - 1))
    return False, rows


def measured_ok(rows: list[dict[str, Any]], cell_hash: str) -> list[dict[str, Any]]:
    """The rows of ``cell_hash`` that a resume keeps: measured trials (not warm-ups) that succeeded.

    The one statement of that rule: the run, the dry run's count (:mod:`sweep.multirun.preflight`) and the
    adaptive design's earlier values all read it here.
    """
    return [r for r in rows if r["cell_hash"] == cell_hash and r["status"] == Status.OK and not r["warmup"]]


def already_measured(rows: list[dict[str, Any]], cell_hash: str) -> set[tuple[int, str]]:
    """(trial, prompt_id) of the measured trials that succeeded in earlier runs."""
    return {(r["trial"], r["prompt_id"]) for r in measured_ok(rows, cell_hash)}


# ---------------------------------------------------------------- several cells: order, state, trials=auto


@dataclass(frozen=True)
class Design:
    """How a job's cells are run (``order``, ``state``, ``trials``/``auto``, ``warmup``); see :mod:`sweep.order`."""

    order: Order = Order.blocked
    seed: int = 0
    state: State = State.warm
    trials: int | None = 3              # None: trials=auto
    auto: Auto = Auto()
    warmup: int = 1
    only_round: int | None = None       # a multirun's job of one round (``round=``): that round only

    @property
    def rounds(self) -> list[int]:
        """The rounds this job runs: all of them, or the one the sweeper gave it."""
        if self.only_round is not None:
            return [self.only_round]
        return list(range(self.trials if self.trials is not None else self.auto.max_trials))


@dataclass
class _Cursor:
    """One cell's progress through the rounds."""

    run: CellRun
    workload: Workload
    done: set[Hashable]
    next_warmup: int
    values: list[float]
    visited: bool = False
    failures_in_a_row: int = 0
    snapshot: dict[str, Any] = dataclasses.field(default_factory=dict)
    need_snapshot: bool = True
    rounds: int = 0
    stopped: str | None = None
    last_of_round: bool = False


@dataclass
class DesignCost:
    """What the order cost: warm-ups beyond each cell's first (reloads between arms), and their wall time."""

    extra_warmups: int = 0
    extra_warmup_s: float = 0.0
    measuring_s: float = 0.0


async def run_cells(runs: Sequence[tuple[CellRun, Workload]], design: Design,
                    cost: DesignCost | None = None) -> list[CellOutcome]:
    """Measure every cell's missing trials in rounds, in the design's order, and store every attempt.

    The one path of every workload (:class:`~sweep.cells.Workload`): a round holds each cell's
    trials of that number (a call per prompt, an agent workflow, a multi-agent run).

    ``blocked`` runs all rounds of a cell before the next cell (today's order);
    ``interleaved`` / ``random`` visit each running cell once per round.  A visit
    starts with the warm-ups when the cell is new (in this process), or (state=warm)
    when the previous request on its server, in this job or an earlier job of the
    process, loaded other load-time options.  ``trials=auto`` drops a cell from
    the rounds once :func:`sweep.adaptive.stop_reason` says so.  A multirun's round
    job (``design.only_round``) runs just that round, after the rounds before it.
    """
    cost = cost or DesignCost()
    server = server_state(runs[0][0].target.client.base_url) if runs else ServerState()
    cursors = [_cursor(run, workload, design, server) for run, workload in runs]
    rounds = design.rounds
    if design.only_round and design.trials is None:     # trials=auto: cells already precise enough stay stopped
        for cur in cursors:
            _check_stop(cur, design.only_round, design)
    started = time.perf_counter()
    if design.order == Order.blocked:
        for cur in cursors:
            for r in rounds:
                if cur.stopped:
                    break
                await _visit(cur, r, design, server, cost)
                _check_stop(cur, r + 1, design)
    else:
        for r in rounds:
            active = [c for c in cursors if not c.stopped]
            if not active:
                break
            for cur in round_order(active, design.order, design.seed, r):
                await _visit(cur, r, design, server, cost)
            for cur in active:
                _check_stop(cur, r + 1, design)
    cost.measuring_s += time.perf_counter() - started
    if design.only_round is not None:
        for cur in cursors:
            _after_round(cur, design.only_round, design)
    return [c.run.outcome for c in cursors]


def _after_round(cur: _Cursor, rnd: int, design: Design) -> None:
    """What a round job tells of its cell: more rounds to come, or done and which later trials it skips.

    Later rounds are the sweeper's (:mod:`sweep.multirun.rounds`), which decides from the same facts: a stopped
    cell (its trials reached, trials=auto precise enough, abandoned) gets none, a resume skips stored ones.
    """
    last = design.trials if design.trials is not None else design.auto.max_trials
    later = [t for r in range(rnd + 1, last) for t in cur.workload.round_trials(r) if t.key() not in cur.done]
    outcome = cur.run.outcome
    outcome.more_rounds = bool(later) and cur.stopped is None
    outcome.skipped = len(later) if cur.stopped is not None else 0


def _cursor(run: CellRun, workload: Workload, design: Design, server: ServerState) -> _Cursor:
    previous = run.store.previous_rows()
    cell = run.cell
    done, warm = workload.stored(previous)
    outcome = run.outcome
    outcome.expected = sum(len(workload.round_trials(r)) for r in range(design.trials or design.auto.min_trials))
    outcome.measured_ok = len(done)
    metric = design.auto.metric
    values = [r.get(metric) for r in measured_ok(previous, cell.cell_hash)]
    return _Cursor(run, workload, done, warm, [v for v in values if v is not None],
                   visited=cell.cell_hash in server.warmed)


async def _visit(cur: _Cursor, rnd: int, design: Design, server: ServerState, cost: DesignCost) -> None:
    """[warm-ups,] then one trial per prompt not yet measured in this round (each call registers as running)."""
    run, cell, workload = cur.run, cur.run.cell, cur.workload
    specs = [t for t in workload.round_trials(rnd) if t.key() not in cur.done]
    if not specs or cur.stopped:
        return
    key = load_key(cell)
    cur.rounds = rnd
    cur.need_snapshot = True
    run.extra = {**run.extra, "state": design.state, "round": rnd, **cur.snapshot}
    _install_hooks(cur, design, server, key)
    if design.state == State.warm and design.warmup and needs_warmup(cur.visited, server.last_key, key):
        extra = cur.visited
        t0 = time.perf_counter()
        for _ in range(design.warmup):
            spec = workload.warmup_trial(cur.next_warmup)
            cur.next_warmup += 1
            if not await _attempt(cur, spec, design):
                return
        if extra:
            cost.extra_warmups += design.warmup
            cost.extra_warmup_s += time.perf_counter() - t0
    cur.visited = True
    server.warmed.add(cell.cell_hash)
    for i, spec in enumerate(specs):
        cur.last_of_round = i == len(specs) - 1
        if not await _attempt(cur, spec, design):
            return


async def _attempt(cur: _Cursor, spec: Trial, design: Design) -> bool:
    """One trial (with its retries) of the cell; False once the cell is abandoned."""
    run = cur.run
    ok, rows = await run.attempt(cur.workload, spec)
    if ok:
        cur.failures_in_a_row = 0
        if not spec.warmup:
            run.outcome.measured_ok += 1
            cur.done.add(spec.key())
            cur.values += _values(rows, design)
        return True
    cur.failures_in_a_row += 1
    if cur.failures_in_a_row >= run.policy.max_consecutive_failures:
        run.outcome.abandoned = True
        _stop(cur, STOP_ABANDONED)
        return False
    return True


def _install_hooks(cur: _Cursor, design: Design, server: ServerState, key: tuple[Any, ...]) -> None:
    """The cell's before/after steps for this visit: unload (cold), reload flag and /api/ps snapshot."""
    run = cur.run
    client, model = run.target.client, run.cell.model

    async def before() -> None:
        if design.state == State.cold:
            if not await unload(client, model):
                console_note(f"    could not confirm that {model} was unloaded (GET /api/ps still lists it)")
            server.last_key = None

    async def after(record: TrialRecord) -> None:
        record.reloaded = design.state == State.cold or was_reloaded(server.last_key, key, record.load_duration_ms)
        server.last_key = key
        if record.status == Status.OK and (cur.need_snapshot or design.state == State.cold):
            cur.snapshot = await offload(client, model)
            cur.need_snapshot = False
            cpu_only.say_once(cpu_only.measured_note(run.cell, cur.snapshot), console_note)
            run.extra.update(cur.snapshot)
        for name, value in cur.snapshot.items():
            setattr(record, name, value)

    def after_trial(rows: list[TrialRecord]) -> None:
        """trials=auto: the reason goes on the row that ends the cell (the last of its round, with a value)."""
        values = _values(rows, design)
        last = [r for r in rows if not r.warmup and r.status == Status.OK
                and getattr(r, design.auto.metric, None) is not None]
        if design.trials is None and cur.last_of_round and last:
            last[-1].stop_reason = stop_reason(design.auto, cur.rounds + 1, [*cur.values, *values])

    run.before_call = before if design.state == State.cold else None
    run.after_call = after
    run.after_trial = after_trial


def _values(rows: Sequence[TrialRecord], design: Design) -> list[float]:
    """The successful measured rows' values of ``auto.metric`` (what trials=auto decides on)."""
    values = [getattr(r, design.auto.metric, None) for r in rows if not r.warmup and r.status == Status.OK]
    return [v for v in values if v is not None]


def _check_stop(cur: _Cursor, rounds: int, design: Design) -> None:
    cur.rounds = rounds
    if cur.stopped:
        return
    if design.trials is None:
        reason = stop_reason(design.auto, rounds, cur.values)
        if reason:
            _stop(cur, reason)
    elif rounds >= design.trials:
        cur.stopped = STOP_TRIALS


def _stop(cur: _Cursor, reason: str) -> None:
    """Mark the cell stopped (trials=auto wrote the reason on its last row before storing it)."""
    cur.stopped = reason


def console_note(line: str) -> None:
    """A line for the user on stderr (the job's console is Hydra-side; this module stays plain)."""
    print(line, file=sys.stderr)
