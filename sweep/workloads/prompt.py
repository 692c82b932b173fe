"""The single-prompt workload: a trial is one streamed call of one prompt.

Why a module of its own: the design (:mod:`sweep.execute`) drives every workload through
:class:`~sweep.cells.Workload`; this one only sends the prompt and returns its row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sweep.cells import Trial, TrialSpec
from sweep.contract import TrialRecord
from sweep.execute import CellRun
from sweep.workloads.trials import CellTrials


@dataclass
class PromptWorkload(CellTrials):
    """One cell's prompts, sent by ``run`` (its target, telemetry, the design's columns)."""

    run: CellRun | None = field(default=None, kw_only=True)

    async def run_trial(self, trial: Trial, attempt: int) -> list[TrialRecord]:
        assert isinstance(trial, TrialSpec) and self.run is not None
        return [await self.run.call(trial.prompt.text, self.run.base(trial), attempt)]


def prompt_workload(run: CellRun, trials: int | None) -> PromptWorkload:
    return PromptWorkload(run.cell, trials, run=run)
