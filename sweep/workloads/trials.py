"""What a round of a cell holds, for every workload: its trials, their keys, what is stored of them.

Why one module: the job's design (:mod:`sweep.execute`, through each workload's
:class:`~sweep.cells.Workload`), the multirun's rounds and its dry run
(:mod:`sweep.multirun`) must agree on what round ``r`` of a cell is and whether it is stored;
a single-prompt cell's round is one trial per prompt, an agent cell's its runs numbered ``r``
(:func:`sweep.workloads.agents.round_runs`).  Pure: no request is sent here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sweep.cells import Cell, Trial, TrialSpec
from sweep.contract import TrialRecord
from sweep.execute import already_measured, not_ok
from sweep.workloads.agents import completed_runs, round_runs, warmup_run
from sweep.workloads.loadgen import expected_requests, load_trials, stored_load_keys


def round_trials(cell: Cell, rnd: int, trials: int | None, isolated_runs: int | None) -> list[Trial]:
    """The measured trials of round ``rnd`` (``trials`` None: trials=auto)."""
    if cell.load_plan is not None:
        return load_trials(rnd)
    if cell.agent_plan is None:
        return [TrialSpec(rnd, p, False) for p in cell.prompts]
    return list(round_runs(cell.agent_plan, rnd, trials, isolated_runs))


def warmup_trial(cell: Cell, n: int) -> Trial:
    """The ``n``-th warm-up: the first prompt, or a whole run of the agents."""
    if cell.agent_plan is None:
        return TrialSpec(n, cell.prompts[0], True)
    return warmup_run(cell.agent_plan, n)


def rows_per_trial(cell: Cell, trial: Trial) -> int:
    """One row per call: one for a prompt, each agent's stages for a run, a request of a load run (an estimate
    for a knee search: its first run's)."""
    if cell.load_plan is not None and not getattr(trial, "warmup", False):
        return expected_requests(cell.load_plan)
    plan = cell.agent_plan
    if plan is None:
        return 1
    return len(getattr(trial, "agents")) * len(plan.stages)


def stored_keys(cell: Cell, rows: Sequence[Mapping[str, Any]]) -> set[Hashable]:
    """Keys of the cell's measured trials stored complete and ok (the trials a resume keeps)."""
    if cell.load_plan is not None:
        return stored_load_keys(cell, rows)
    plan = cell.agent_plan
    if plan is None:
        return set(already_measured(list(rows), cell.cell_hash))
    return set(completed_runs(rows, cell.cell_hash, len(plan.stages)))


def stored_warmups(cell: Cell, rows: Sequence[Mapping[str, Any]]) -> int:
    """Warm-up trials stored for the cell (a warm-up run counts once, whatever its rows)."""
    mine = [r for r in rows if r.get("warmup") and r.get("cell_hash") == cell.cell_hash]
    if cell.agent_plan is None:
        return len(mine)
    return len({r.get("run_id") or r.get("workflow_id") for r in mine})


@dataclass
class CellTrials:
    """The pure half of every :class:`~sweep.cells.Workload`: a cell's rounds and what is stored of them."""

    cell: Cell
    trials: int | None                 # None: trials=auto
    isolated_runs: int | None = None   # multi_agent: each agent's isolated runs (None: as many as trials)

    def round_trials(self, rnd: int) -> list[Trial]:
        return round_trials(self.cell, rnd, self.trials, self.isolated_runs)

    def warmup_trial(self, n: int) -> Trial:
        return warmup_trial(self.cell, n)

    def rows_per_trial(self, trial: Trial) -> int:
        return rows_per_trial(self.cell, trial)

    def stored(self, rows: Sequence[Mapping[str, Any]]) -> tuple[set[Hashable], int]:
        return stored_keys(self.cell, rows), stored_warmups(self.cell, rows)

    def failed(self, rows: Sequence[TrialRecord]) -> list[TrialRecord]:
        return not_ok(rows)
