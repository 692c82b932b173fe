"""``workload=load``: a trial is one load run (or one knee search); a row per request.

Open loop: requests leave at scheduled times (constant or Poisson arrivals at ``load.rate``),
whatever is still in flight.  Closed loop: ``load.concurrency`` workers, each sending its next
request when its previous one ends.  Every request goes through the same streamed call as the
other workloads (:func:`sweep.runner.measure_call`), with its *scheduled* send time: TTFT and
e2e count from it and ``send_delay_ms`` says how late the send was, so a client or a server
that falls behind cannot hide the wait (no coordinated omission).

A run's rows are stored together after it (never while requests stream).  ``load.rates=sweep``
runs a knee search per trial (:class:`sweep.workloads.loadgen.Bisection`): each of its runs is
stored as it ends, the last one carries the capacity.  A run's timed-out or failed requests are
its measurement (they are not good); only a run none of whose requests succeeded (a server
down) fails the attempt and is retried.  Telemetry is not sampled per request of a load run
(hundreds of overlapping samplers would load the machine they measure).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from sweep import interrupts
from sweep.cells import Cell, LoadPlan, Trial, TrialSpec
from sweep.contract import Status, TrialRecord
from sweep.execute import CellRun, console_note
from sweep.runner import measure_call
from sweep.workloads.loadgen import (Bisection, LoadTrial, arrival_offsets_s,
                                     goodput_fraction, slo_met)
from sweep.workloads.trials import CellTrials

NS_PER_S = 1_000_000_000


@dataclass
class LoadWorkload(CellTrials):
    """A load cell as a :class:`~sweep.cells.Workload`; warm-ups are single calls of the first prompt."""

    run: CellRun | None = field(default=None, kw_only=True)

    @property
    def plan(self) -> LoadPlan:
        assert self.cell.load_plan is not None
        return self.cell.load_plan

    def failed(self, rows: Sequence[TrialRecord]) -> list[TrialRecord]:
        """A load run fails only when none of its requests succeeded; warm-ups as any call."""
        if any(r.warmup for r in rows) or not any(r.status == Status.OK for r in rows):
            return [r for r in rows if r.status != Status.OK]
        return []

    async def run_trial(self, trial: Trial, attempt: int) -> list[TrialRecord]:
        assert self.run is not None
        if isinstance(trial, TrialSpec):        # a warm-up: one call, as the prompt workload's
            return [await self.run.call(trial.prompt.text, self.run.base(trial), attempt)]
        assert isinstance(trial, LoadTrial)
        plan = self.plan
        if not plan.sweep:
            assert plan.level is not None
            return await self.level_run(trial.trial, None, plan.level, attempt)
        search = Bisection(plan.low, plan.high, plan.tolerance, integer=plan.closed)
        step = 0
        while (level := search.next_level()) is not None:
            rows = await self.level_run(trial.trial, step, level, attempt)
            if not any(r.status == Status.OK for r in rows):
                return rows                     # the server answered nothing: a failed attempt
            search.record(level, goodput_fraction([bool(r.slo_ok) for r in rows]) >= plan.slo_fraction)
            if search.next_level() is None:
                for row in rows:
                    row.load_capacity, row.load_knee = search.capacity, search.knee
                console_note(capacity_line(self.cell, trial.trial, search))
                return rows
            await self._keep(rows)
            step += 1
        raise AssertionError("a knee search ends with a run")   # next_level() is never None before the first

    async def _keep(self, rows: list[TrialRecord]) -> None:
        """A finished run of a knee search: stored now, with the hooks a trial's last rows get."""
        run = self.run
        assert run is not None
        if run.after_call:
            for row in rows:
                await run.after_call(row)
        run.keep(*rows)

    async def level_run(self, trial: int, step: int | None, level: float, attempt: int) -> list[TrialRecord]:
        """One run at ``level`` (a rate or a concurrency): every request's row, the SLO judged.

        ``step``: the run's place in a knee search; None for a fixed level.
        """
        run, plan = self.run, self.plan
        assert run is not None
        interrupts.check()
        base = dataclasses.replace(
            run.base(TrialSpec(trial, self.cell.prompts[0], False)), attempt=attempt,
            load_loop=plan.loop, load_arrivals=None if plan.closed else plan.arrivals,
            load_rate=None if plan.closed else level, load_concurrency=int(level) if plan.closed else None,
            load_run_id=uuid.uuid4().hex[:16], load_step=step, slo=plan.slo_text())
        presence_cm = run.running.cell(self.cell.cell_hash) if run.running else contextlib.nullcontext()
        rows: list[TrialRecord] = []        # the finished requests, as they finish
        with presence_cm as presence:
            start_ns = time.perf_counter_ns()
            try:
                if plan.closed:
                    await self._closed(base, int(level), start_ns, rows)
                else:
                    await self._open(base, level, trial, step, start_ns, rows)
            except (asyncio.CancelledError, KeyboardInterrupt):
                # Ctrl-C mid-run: the finished requests are stored (load_run_s null: an unfinished run, which
                # a resume runs again and goodput leaves out), the requests in flight are not measured
                self._judge(rows, None, presence)
                if rows:
                    run.keep(*sorted(rows, key=lambda r: r.load_offset_ms or 0.0))
                raise
            run_s = (time.perf_counter_ns() - start_ns) / NS_PER_S
        self._judge(rows, run_s, presence)
        return sorted(rows, key=lambda r: r.load_offset_ms or 0.0)

    def _judge(self, rows: list[TrialRecord], run_s: float | None, presence: Any) -> None:
        """The run's columns on each finished request: its span, the SLO verdict, the cells in flight meanwhile."""
        for row in rows:
            row.load_run_s = run_s
            row.slo_ok = slo_met(row, self.plan)
            if presence is not None:
                row.concurrent_cells = presence.peak

    async def _one(self, base: TrialRecord, k: int, start_ns: int, scheduled_ns: int,
                   rows: list[TrialRecord]) -> None:
        """Request ``k`` of the run (the prompts in turn), measured from its scheduled send time, into ``rows``."""
        run = self.run
        assert run is not None
        prompt = self.cell.prompts[k % len(self.cell.prompts)]
        record = dataclasses.replace(base, prompt_id=prompt.id, load_offset_ms=(scheduled_ns - start_ns) / 1e6)
        rows.append(await measure_call(run.target, self.cell, prompt.text, record, scheduled_ns=scheduled_ns))

    async def _open(self, base: TrialRecord, rate: float, trial: int, step: int | None, start_ns: int,
                    rows: list[TrialRecord]) -> None:
        """Arrivals at their scheduled times, whatever is in flight; the run ends when every request has."""
        plan = self.plan
        offsets = arrival_offsets_s(rate, plan.arrivals, (plan.seed, trial, step or 0), duration_s=plan.duration_s,
                                    requests=plan.requests)
        tasks: list[asyncio.Task[None]] = []
        try:
            for k, offset in enumerate(offsets):
                scheduled_ns = start_ns + int(offset * NS_PER_S)
                wait_s = (scheduled_ns - time.perf_counter_ns()) / NS_PER_S
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                tasks.append(asyncio.create_task(self._one(base, k, start_ns, scheduled_ns, rows)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:      # cancelled while sleeping to the next arrival: stop those in flight too
                task.cancel()

    async def _closed(self, base: TrialRecord, concurrency: int, start_ns: int, rows: list[TrialRecord]) -> None:
        """``concurrency`` workers, each sending its next request when its last one ends, until the run's end."""
        plan = self.plan
        stop_ns = start_ns + int(plan.duration_s * NS_PER_S) if plan.duration_s is not None else None
        numbers = itertools.count()

        async def worker() -> None:
            while True:
                now = time.perf_counter_ns()
                if stop_ns is not None and now >= stop_ns:
                    return
                k = next(numbers)
                if plan.requests is not None and k >= plan.requests:
                    return
                await self._one(base, k, start_ns, now, rows)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def capacity_line(cell: Cell, trial: int, search: Bisection) -> str:
    """The console's line for a finished knee search: its capacity, how it ended, the levels it ran."""
    unit = "in flight" if cell.load_plan is not None and cell.load_plan.closed else "req/s"
    found = f"{search.capacity:.4g} {unit}" if search.capacity is not None else "none"
    tried = " ".join(f"{level:.4g}{'✓' if ok else '✗'}" for level, ok in search.tried)
    return f"    knee search {trial}: capacity {found} ({search.knee}; runs {tried}) — {cell.cell_id}"


def load_workload(run: CellRun, trials: int | None) -> LoadWorkload:
    return LoadWorkload(run.cell, trials, run=run)
