"""Run one cell: pre-flight, warm-ups, trials, retries, abandonment, resume.

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
- ``await run.attempt(spec)`` — the single-prompt trial: call, keep, retry
  transient failures with backoff.

Several agents of one cell: ``dataclasses.replace(run, target=other_host_target,
cell=agent_cell)`` shares the store and the outcome.  Storing writes a file:
in concurrent runs, keep the rows after the concurrent group has finished, not
while other calls are still streaming.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.plan import Cell, TrialSpec, schedule
from sweep.contract import Status, TrialRecord
from sweep.contract import is_transient as _transient
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
    outcome: CellOutcome = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.outcome = CellOutcome(self.cell, self.store.path, records=self.store.records)

    def base(self, spec: TrialSpec) -> TrialRecord:
        """The identity columns of one trial of this cell."""
        return dataclasses.replace(base_record(self.cell, self.sweep_id, self.target.client.base_url),
                                   trial=spec.trial, warmup=spec.warmup, prompt_id=spec.prompt.id)

    async def call(self, prompt: str, record: TrialRecord, attempt: int = 1) -> TrialRecord:
        """One streamed call, with the machine sampled around it when telemetry is on (not stored)."""
        sampler = self.watch.telemetry.sampler().start() if self.watch else None
        at_start = self.running.count() if self.running else None
        try:
            measured = await measure_call(self.target, self.cell, prompt, record)
        finally:
            columns = sampler.stop() if sampler else {}
        if self.running:
            measured.concurrent_cells = max(at_start or 0, self.running.count())
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

    async def attempt(self, spec: TrialSpec) -> TrialRecord:
        """One single-prompt trial with bounded retries and exponential backoff for transient failures."""
        base = self.base(spec)
        for attempt in range(1, self.policy.retries + 2):
            record = await self.call(spec.prompt.text, base, attempt)
            self.keep(record)
            if record.status == Status.OK or not is_transient(record) or attempt > self.policy.retries:
                return record
            await asyncio.sleep(self.policy.retry_backoff_s * 2 ** (attempt - 1))
        return record


def is_transient(record: TrialRecord) -> bool:
    """Worth another attempt: the server or the network may recover (an HTTP error only for 5xx or 429)."""
    return _transient(record.status, record.http_status)


def already_measured(rows: list[dict[str, Any]], cell_hash: str) -> set[tuple[int, str]]:
    """(trial, prompt_id) of the measured trials that succeeded in earlier runs."""
    return {
        (r["trial"], r["prompt_id"]) for r in rows
        if r["cell_hash"] == cell_hash and r["status"] == Status.OK and not r["warmup"]
    }


def _todo(cell: Cell, trials: int, warmup: int, previous: list[dict[str, Any]]) -> list[TrialSpec]:
    """Missing measured trials, preceded by warm-ups (re-run, since the model is cold again).

    Warm-up indices continue after earlier runs' warm-ups, so no two rows share
    (warmup, trial, prompt_id) with status ok.
    """
    done = already_measured(previous, cell.cell_hash)
    specs = schedule(cell, trials, warmup)
    missing = [s for s in specs if not s.warmup and (s.trial, s.prompt.id) not in done]
    if not missing:
        return []
    offset = sum(1 for r in previous if r["warmup"] and r["cell_hash"] == cell.cell_hash)
    warmups = [TrialSpec(s.trial + offset, s.prompt, True) for s in specs if s.warmup]
    return warmups + missing


async def run_cell(run: CellRun, *, trials: int, warmup: int) -> CellOutcome:
    """Measure what is missing of the single-prompt cell and store every attempt."""
    previous = run.store.previous_rows()
    run.outcome.expected = trials * len(run.cell.prompts)
    run.outcome.measured_ok = len(already_measured(previous, run.cell.cell_hash))

    async def ok(spec: TrialSpec) -> bool:
        return (await run.attempt(spec)).status == Status.OK

    return await in_order(run, _todo(run.cell, trials, warmup, previous), ok)


async def in_order(run: CellRun, specs: Sequence[Any], attempt: Callable[[Any], Awaitable[bool]]) -> CellOutcome:
    """Run ``specs`` (trials, or agent runs: anything with ``warmup``) one after the other, counting the
    measured ones that succeed; ``max_consecutive_failures`` failures in a row abandon the cell."""
    outcome = run.outcome
    consecutive_failures = 0
    for spec in specs:
        if await attempt(spec):
            consecutive_failures = 0
            outcome.measured_ok += 0 if spec.warmup else 1
            continue
        consecutive_failures += 1
        if consecutive_failures >= run.policy.max_consecutive_failures:
            outcome.abandoned = True
            break
    return outcome
