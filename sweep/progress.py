"""What a person watching a sweep sees: a live panel on a terminal, plain lines elsewhere.

Why three modes: an hours-long sweep on a terminal wants one steady panel (cells
done/total, the current cell's trials, the last trial's tok/s and TTFT,
failures so far, an ETA from the cell times measured so far); a log file or CI
wants the same one line per job the panel leaves behind (and every failed
attempt), not a screenful per cell; ``progress=false`` asks for one plain line
per trial that greps well.  The live panel spans every job of a multirun run in
this process (Hydra's basic launcher), so it is module state, stopped by the
end-of-sweep summary; Hydra's per-job launch lines are silenced unless every
trial is asked for: our job line says the same.

The sweeper tells how large the whole multirun is (:func:`announce`: environment
variables, so launcher processes see them too).  A multirun in rounds
(``order=random | interleaved``, :mod:`sweep.multirun.rounds`) runs one job per cell and
round, so there the panel counts a cell done only when its last round finished,
adds the trials done of the sweep's total, and takes its ETA from the time per
trial so far: a job's time is one round's, not a cell's.
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
TRIALS_ENV = "CHIMERA_SWEEP_TRIALS"    # set for a multirun in rounds only: "<trials>" or "<trials> at most"
_AT_MOST = " at most"
# The logger Hydra's basic launcher writes "#3 : overrides…" under, one line per job, silenced while the live
# panel shows the jobs.  Only a name (nothing is imported): Hydra names its loggers after its modules and offers
# no public handle for this one.
_HYDRA_JOB_LINES = "hydra._internal.core_plugins.basic_launcher"


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


def announce(cells: int, trials: int | None = None, at_most: bool = False) -> None:
    """The sweeper's word on the multirun: ``cells`` in it and, when it runs in rounds, the measured ``trials``
    it plans (``at_most``: trials=auto, cells may leave earlier)."""
    os.environ[PLAN_ENV] = str(cells)
    if trials is None:
        os.environ.pop(TRIALS_ENV, None)
    else:
        os.environ[TRIALS_ENV] = f"{trials}{_AT_MOST if at_most else ''}"


def _announced_trials() -> tuple[int | None, bool]:
    value = os.environ.get(TRIALS_ENV, "")
    number = value.removesuffix(_AT_MOST)
    return (int(number), value.endswith(_AT_MOST)) if number.isdigit() else (None, False)


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
    # a multirun in rounds (None otherwise): the sweep's measured trials, planned and done
    sweep_trials_total: int | None = None
    sweep_trials_at_most: bool = False
    sweep_trials_done: int = 0


class Progress:
    """One sweep's progress output (live or plain); the job calls the ``cell_*`` / ``trial`` hooks."""

    def __init__(self, console: Console, live: bool, per_trial: bool = True) -> None:
        self.console = console
        self.per_trial = per_trial and not live   # plain: a line per trial, else a line per job
        self.state = _State()
        planned = os.environ.get(PLAN_ENV, "")
        self.state.cells_total = int(planned) if planned.isdigit() else None
        self.state.sweep_trials_total, self.state.sweep_trials_at_most = _announced_trials()
        self._live: Live | None = None
        if live:
            self._live = Live(self._render(), console=console, refresh_per_second=4, transient=True,
                              redirect_stdout=True, redirect_stderr=False)
            self._live.start()
        if not self.per_trial:
            logging.getLogger(_HYDRA_JOB_LINES).setLevel(logging.WARNING)

    @property
    def live(self) -> bool:
        return self._live is not None

    # ------------------------------------------------------------------ hooks
    def cell_started(self, cell_id: str, file_name: str, trials_total: int) -> None:
        s = self.state
        s.cell, s.cell_started, s.trials_done, s.trials_total = cell_id, time.monotonic(), 0, trials_total
        if self.per_trial:
            self.console.print(f"[bold]cell[/] {cell_id}  → {file_name}")
        self._refresh()

    def trial(self, record: TrialRecord) -> None:
        s = self.state
        if record.status != Status.OK:
            s.failures += 1
        elif not record.warmup:
            s.trials_done += 1
            s.sweep_trials_done += 1
        s.last = trial_line(record).strip()
        if self.per_trial or (not self.live and record.status != Status.OK):   # a log shows every failure
            self.console.print(trial_line(record))
        self._refresh()

    def cell_done(self, ok: int, expected: int, failed: int, state: str, *, cells: int = 1, dropped: int = 0,
                  counted: str | None = None) -> None:
        """The job's cell(s) ran; ``cells`` of them are done (0: a multirun's round, more rounds to come).

        ``dropped``: planned trials they will not run (trials=auto stopped them early, or they were abandoned);
        ``counted``: what was measured, when "ok/expected trials ok" would misname it (a multi-agent cell's runs).
        """
        s = self.state
        s.cells_done += cells
        if s.sweep_trials_total is not None:
            s.sweep_trials_total = max(s.sweep_trials_done, s.sweep_trials_total - dropped)
        s.cell_seconds.append(time.monotonic() - s.cell_started)
        line = f"  {counted or f'{ok}/{expected} trials ok'}, {failed} failed attempts, {state}"
        if self.per_trial:
            self.console.print(line)
        elif cells:   # a round job with more rounds to come: the sweeper's line per round says enough
            self.console.print(f"[green]✓[/] {s.cell}: {line.strip()} ({s.cell_seconds[-1]:.1f} s)")
        self._refresh()

    # ------------------------------------------------------------------ live panel
    def eta_s(self) -> float | None:
        s = self.state
        if s.sweep_trials_total is not None:      # in rounds: the time per trial so far, warm-ups and jobs included
            if not s.sweep_trials_done:
                return None
            per_trial = (time.monotonic() - s.started) / s.sweep_trials_done
            return max(0, s.sweep_trials_total - s.sweep_trials_done) * per_trial
        if s.cells_total is None or not s.cell_seconds:
            return None
        mean = sum(s.cell_seconds) / len(s.cell_seconds)
        return max(0.0, (s.cells_total - s.cells_done) * mean - (time.monotonic() - s.cell_started))

    def _render(self) -> Group:
        s = self.state
        total = s.cells_total
        eta = self.eta_s()
        done, of = s.cells_done, total
        trials = up = ""
        if s.sweep_trials_total is not None:     # in rounds: the bar follows the trials, cells finish late
            up = "≤ " if s.sweep_trials_at_most and s.cells_done != total else ""   # until the last cell left
            trials = f"trials {s.sweep_trials_done}/{up}{s.sweep_trials_total}  "
            done, of = s.sweep_trials_done, s.sweep_trials_total
        head = Text.assemble(("sweep ", "bold"), f"cells {s.cells_done}/{total if total else '?'}  ", trials,
                             f"elapsed {_clock(time.monotonic() - s.started)}  ",
                             f"ETA {up}{_clock(eta)}" if eta is not None else "ETA –",
                             (f"  failures {s.failures}", "red" if s.failures else "dim"))
        filled = min(30, round(30 * done / of)) if of else 0
        bar = Text.assemble(("━" * filled, "green"), ("━" * (30 - filled), "grey37"),
                            f" {100 * done / of:.0f} %" if of else "")
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
    if _current is None or _current.live != live or _current.per_trial != (not enabled and not live):
        stop()
        _current = Progress(console, live, per_trial=not enabled)
    return _current


def quiet_launcher() -> None:
    """Silence Hydra's per-job launch lines before the first job (a line per job comes from us instead).

    Called at the start of a multirun whose ``progress`` is on; a Progress silences them too, but only
    once the first job has started, after the first batch's lines were printed.
    """
    logging.getLogger(_HYDRA_JOB_LINES).setLevel(logging.WARNING)


def say(line: str) -> None:
    """A line for the person watching: above the live panel when one shows (a plain print would tear it)."""
    if _current is not None and _current.live:
        _current.console.print(line, markup=False, highlight=False)
    else:
        print(line, file=sys.stderr, flush=True)


def stop() -> None:
    """End the live panel (before the summary prints, on errors, at exit)."""
    global _current
    if _current is not None:
        _current.stop()
        _current = None
