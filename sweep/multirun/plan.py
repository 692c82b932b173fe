"""A multirun's plan: every job's cells, the refusals, the order (blocked or rounds) and the model loads.

Why one function: the reload-aware sweeper (before it launches anything) and the preflight
(for Hydra's own sweepers) ask the same questions of the same composed configs: does every job
plan (a bad value is one line, before any request), do parallel jobs share a server, does the
multirun cover its grid, does it run in rounds, and in what order do the jobs go.
:func:`plan_multirun` answers them once; the Hydra-facing code only composes the configs and
prints or runs what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from sweep.cells import Cell, ConfigError, load_key
from sweep.config import SweepConfig, typed
from sweep.multirun.launchers import shared_host_problem
from sweep.multirun.rounds import MultirunOrder, multirun_order
from sweep.plan import check_grid_coverage, count_loads, plan_cells, reload_order


@dataclass
class Job:
    """One job of the multirun: its overrides, its config (as composed, and typed) and its cells in reload order."""

    overrides: list[str]
    composed: DictConfig     # as Hydra composed it: what the launcher is handed, the base of its round jobs
    cfg: SweepConfig         # typed (sweep.config.typed, once): what the planning reads
    cells: list[Cell]

    @property
    def keys(self) -> list[tuple[Any, ...]]:
        return sorted(load_key(c) for c in self.cells)


@dataclass
class MultirunPlan:
    """The jobs in run order, the rounds' order (None: blocked), and the model loads as typed and as run."""

    jobs: list[Job]
    order: MultirunOrder | None
    typed_loads: int
    loads: int

    @property
    def cells(self) -> int:
        return sum(len(job.cells) for job in self.jobs)

    def blocked_line(self, order_name: str, slots: int) -> str:
        """The plan line of a multirun that runs each job once (blocked)."""
        at_once = f", {slots} at once" if slots > 1 else ""
        return (f"plan: {self.cells} cell(s) in {len(self.jobs)} job(s){at_once}, {self.loads} model load(s) "
                f"({order_name} order; as typed: {self.typed_loads})")


def plan_multirun(jobs: Sequence[tuple[Sequence[str], DictConfig]], command_line: Sequence[str], *,
                  slots: int = 1, reorder: bool = True, rounds: bool = True) -> MultirunPlan:
    """Plan every job (its overrides and composed config), in the order they will run.

    Raises :class:`ConfigError` on the first refusal: a job that does not plan, ``slots`` parallel
    jobs sharing a server, jobs over ``cell`` that miss cells of their grid, an order the multirun
    cannot run.  ``reorder``: group the jobs by load key (the reload-aware order), else keep them
    as typed; ``rounds``: decide whether the multirun runs in rounds (the reload-aware sweeper does).
    """
    planned = []
    for overrides, composed in jobs:
        cfg = typed(composed)
        cells = plan_cells(cfg)
        problem = None if cfg.allow_shared_host else shared_host_problem(cfg.backend, slots)
        if problem:
            raise ConfigError(problem)
        planned.append(Job(list(overrides), composed, cfg, reload_order(cells, load_key)))
    check_grid_coverage([job.cfg for job in planned], list(command_line))
    order = multirun_order([job.cfg for job in planned], [job.cells for job in planned]) if rounds else None
    typed_loads = count_loads([k for job in planned for k in job.keys])
    if reorder:
        planned = reload_order(planned, key=lambda job: job.keys[0])
    return MultirunPlan(planned, order, typed_loads, count_loads([k for job in planned for k in job.keys]))
