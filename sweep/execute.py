"""Run one cell: pre-flight, warm-ups, trials, retries, abandonment, resume.

Every attempt becomes a stored row (a retried failure is recorded, not hidden),
and the cell's file is saved after each one.  On resume, the measured trials
already on disk for this cell's hash are kept and only the missing ones run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.ollama import OllamaClient
from sweep.plan import Cell, TrialSpec, schedule
from sweep.contract import Status, TrialRecord, is_transient
from sweep.runner import measure_trial
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


def base_record(cell: Cell, sweep_id: str, base_url: str) -> TrialRecord:
    """The identity columns every trial of the cell shares."""
    return TrialRecord(
        sweep_id=sweep_id, cell_id=cell.cell_id, cell_hash=cell.cell_hash, preset=cell.preset,
        model=cell.model, backend=cell.backend, base_url=base_url, workload=cell.workload,
        **dict(cell.options),
    )


def _already_measured(rows: list[dict[str, Any]], cell_hash: str) -> set[tuple[int, str]]:
    return {
        (r["trial"], r["prompt_id"]) for r in rows
        if r["cell_hash"] == cell_hash and r["status"] == Status.OK and not r["warmup"]
    }


def _todo(cell: Cell, trials: int, warmup: int, previous: list[dict[str, Any]]) -> list[TrialSpec]:
    """Missing measured trials, preceded by warm-ups (re-run, since the model is cold again).

    Warm-up indices continue after earlier runs' warm-ups, so no two rows share
    (warmup, trial, prompt_id) with status ok.
    """
    done = _already_measured(previous, cell.cell_hash)
    specs = schedule(cell, trials, warmup)
    missing = [s for s in specs if not s.warmup and (s.trial, s.prompt.id) not in done]
    if not missing:
        return []
    offset = sum(1 for r in previous if r["warmup"] and r["cell_hash"] == cell.cell_hash)
    warmups = [TrialSpec(s.trial + offset, s.prompt, True) for s in specs if s.warmup]
    return warmups + missing


@dataclass
class Watch:
    """Telemetry for a cell: the job's sampler factory and where the cell's samples go."""

    telemetry: Telemetry
    traces: TraceStore


def run_cell(client: OllamaClient, cell: Cell, store: CellStore, *, sweep_id: str, trials: int,
             warmup: int, policy: Policy,
             on_record: Callable[[TrialRecord], None] | None = None,
             watch: Watch | None = None) -> CellOutcome:
    """Measure what is missing of ``cell`` and store every attempt."""
    previous = store.previous_rows()
    outcome = CellOutcome(cell, store.path, expected=trials * len(cell.prompts), records=store.records)
    outcome.measured_ok = len(_already_measured(previous, cell.cell_hash))
    base = base_record(cell, sweep_id, client.base_url)
    consecutive_failures = 0
    for spec in _todo(cell, trials, warmup, previous):
        record = _attempt(client, cell, spec, base, store, policy, outcome, on_record, watch)
        if record.status == Status.OK:
            consecutive_failures = 0
            outcome.measured_ok += 0 if spec.warmup else 1
            continue
        consecutive_failures += 1
        if consecutive_failures >= policy.max_consecutive_failures:
            outcome.abandoned = True
            break
    return outcome


def _attempt(client: OllamaClient, cell: Cell, spec: TrialSpec, base: TrialRecord, store: CellStore,
             policy: Policy, outcome: CellOutcome,
             on_record: Callable[[TrialRecord], None] | None, watch: Watch | None) -> TrialRecord:
    """One trial with bounded retries and exponential backoff for transient failures."""
    for attempt in range(1, policy.retries + 2):
        record = _measured(client, cell, spec, base, policy, watch, attempt)
        store.append(record)
        outcome.ran += 1
        if on_record:
            on_record(record)
        if record.status == Status.OK:
            return record
        outcome.failed_attempts += 1
        if not is_transient(record.status, record.http_status) or attempt > policy.retries:
            return record
        time.sleep(policy.retry_backoff_s * 2 ** (attempt - 1))
    return record


def _measured(client: OllamaClient, cell: Cell, spec: TrialSpec, base: TrialRecord, policy: Policy,
              watch: Watch | None, attempt: int) -> TrialRecord:
    """One request, with the machine sampled around it when telemetry is on."""
    sampler = watch.telemetry.sampler().start() if watch else None
    try:
        record = measure_trial(client, cell, spec, request_timeout_s=policy.request_timeout_s, base=base)
    finally:
        columns = sampler.stop() if sampler else {}
    record.attempt = attempt
    for name, value in columns.items():
        setattr(record, name, value)
    record.joules_per_token = joules_per_token(record.gpu_energy_j, record.eval_count)
    if watch and sampler:
        identity = {"cell_id": record.cell_id, "cell_hash": record.cell_hash, "trial": record.trial,
                    "warmup": record.warmup, "attempt": attempt, "started_at": record.started_at}
        watch.traces.extend(sample_rows(sampler.samples, identity))
    return record
