"""What a person watching a sweep sees: a live panel on a terminal, plain lines elsewhere.

Why two modes: an hours-long sweep on a terminal wants one steady panel (cells
done/total, the current cell's trials, the last trial's tok/s and TTFT,
failures so far, an ETA from the cell times measured so far); a log file, CI
or ``progress=false`` wants one plain line per trial that greps well.  The
live panel spans every job of a multirun run in this process (Hydra's basic
launcher), so it is module state, stopped by the end-of-sweep summary; Hydra's
per-job launch lines are silenced while it shows, so they do not scroll it away.

The sweeper tells how many cells the whole multirun has through
``CHIMERA_SWEEP_CELLS`` (an environment variable, so launcher processes see it too).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from sweep.contract import Status, TrialRecord

PLAN_ENV = "CHIMERA_SWEEP_CELLS"
_HYDRA_JOB_LINES = "hydra._internal.core_plugins.basic_launcher"   # logs "#3 : overrides…" per job


def trial_line(record: TrialRecord) -> str:
    """The plain line of one trial (also what the live panel shows of the last one)."""
    kind = "warm-up" if record.warmup else "trial"
    what, where = f"prompt {record.prompt_id}", ""
    if record.stage is not None:  # agent rows: which run, which step, which agent
        kind += f" {record.run_kind}" if record.run_kind else " workflow"
        what = record.stage + (f" agent {record.agent_id}" if record.agent_id is not None else "")
        where = f" {what}"
    if record.status != Status.OK:
        return f"    {kind} {record.trial}{where} attempt {record.attempt}: [red]{record.status}[/] {record.error}"
    tps = f"{record.throughput_tok_s:.1f} tok/s" if record.throughput_tok_s else "- tok/s"
    ttft = f"TTFT {record.ttft_ms:.0f} ms" if record.ttft_ms is not None else "TTFT -"
    return f"    {kind} {record.trial} {what}: {tps}, {ttft}, {record.eval_count} tokens"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class _State:
    cells_total: int | None = None
    cells_done: int = 0
    cell_seconds: list[float] = field(default_factory=list)
    cell: str = ""
    cell_started: float = 0.0
    trials_done: int = 0
    trials_total: int = 0
    last: str = "waiting for the first trial"
    failures: int = 0
    started: float = field(default_factory=time.monotonic)


class Progress:
    """One sweep's progress output (live or plain); the job calls the ``cell_*`` / ``trial`` hooks."""

    def __init__(self, console: Console, live: bool) -> None:
        self.console = console
        self.state = _State()
        planned = os.environ.get(PLAN_ENV, "")
        self.state.cells_total = int(planned) if planned.isdigit() else None
        self._live: Live | None = None
        if live:
            self._live = Live(self._render(), console=console, refresh_per_second=4, transient=True,
                              redirect_stdout=True, redirect_stderr=False)
            self._live.start()
            logging.getLogger(_HYDRA_JOB_LINES).setLevel(logging.WARNING)

    @property
    def live(self) -> bool:
        return self._live is not None

    # ------------------------------------------------------------------ hooks
    def cell_started(self, cell_id: str, file_name: str, trials_total: int) -> None:
        s = self.state
        s.cell, s.cell_started, s.trials_done, s.trials_total = cell_id, time.monotonic(), 0, trials_total
        if not self.live:
            self.console.print(f"[bold]cell[/] {cell_id}  → {file_name}")
        self._refresh()

    def trial(self, record: TrialRecord) -> None:
        s = self.state
        if record.status != Status.OK:
            s.failures += 1
        elif not record.warmup:
            s.trials_done += 1
        s.last = trial_line(record).strip()
        if not self.live:
            self.console.print(trial_line(record))
        self._refresh()

    def cell_done(self, ok: int, expected: int, failed: int, state: str) -> None:
        s = self.state
        s.cells_done += 1
        s.cell_seconds.append(time.monotonic() - s.cell_started)
        line = f"  {ok}/{expected} trials ok, {failed} failed attempts, {state}"
        if self.live:
            self.console.print(f"[green]✓[/] {s.cell}: {line.strip()} ({s.cell_seconds[-1]:.1f} s)")
        else:
            self.console.print(line)
        self._refresh()

    # ------------------------------------------------------------------ live panel
    def eta_s(self) -> float | None:
        s = self.state
        if s.cells_total is None or not s.cell_seconds:
            return None
        mean = sum(s.cell_seconds) / len(s.cell_seconds)
        return max(0.0, (s.cells_total - s.cells_done) * mean - (time.monotonic() - s.cell_started))

    def _render(self) -> Group:
        s = self.state
        total = s.cells_total
        eta = self.eta_s()
        head = Text.assemble(("sweep ", "bold"), f"cells {s.cells_done}/{total if total else '?'}  ",
                             f"elapsed {_clock(time.monotonic() - s.started)}  ",
                             f"ETA {_clock(eta)}" if eta is not None else "ETA –",
                             (f"  failures {s.failures}", "red" if s.failures else "dim"))
        filled = round(30 * s.cells_done / total) if total else 0
        bar = Text.assemble(("━" * filled, "green"), ("━" * (30 - filled), "grey37"),
                            f" {100 * s.cells_done / total:.0f} %" if total else "")
        cell = Text(f"cell {s.cell or '–'}: trial {s.trials_done}/{s.trials_total}", overflow="ellipsis",
                    no_wrap=True)
        last = Text.from_markup(f"last: {s.last}", overflow="ellipsis")
        last.no_wrap = True
        return Group(head, bar, cell, last)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


_current: Progress | None = None


def for_job(console: Console, enabled: bool) -> Progress:
    """The sweep's progress object: created by the first job, reused by the next jobs in this process."""
    global _current
    live = enabled and console.is_terminal and sys.stderr.isatty()
    if _current is None or _current.live != live:
        stop()
        _current = Progress(console, live)
    return _current


def stop() -> None:
    """End the live panel (before the summary prints, on errors, at exit)."""
    global _current
    if _current is not None:
        _current.stop()
        _current = None
