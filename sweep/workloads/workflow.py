"""Run agent cells on the async core: one agent's workflow, N agents at a barrier; a run is a trial.

Why here and not in the core: the core (:mod:`sweep.runner`, :mod:`sweep.execute`)
measures one streamed call; a workflow only glues calls together (ingest →
analysis → report) and stamps the workflow and run clocks around them, so the
measuring code does not know which workload it serves.

Clocks (``perf_counter_ns``):

- ``workflow_wall_ms``: the agent leaves the barrier → its last call has been
  post-processed; includes ingest (``ingest_ms``), the calls and the text work.
- ``run_wall_ms``: barrier release → the last agent's workflow done.

Ingest reads files, so it runs in a worker thread: the event loop keeps
stamping the other agents' token arrivals meanwhile.  Rows are stored after
the run, never while streams are open.  A failing agent only makes rows with
its status (its later stages ``skipped``); the other agents' measurement goes
on, and the run counts as incomplete, so resume runs it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sweep.cells import ANALYSIS_STAGE, MULTI_AGENT, PROMPT_STAGE, REPORT_STAGE, AgentPlan, AgentSpec
from sweep.workloads.agents import RunSpec
from sweep.execute import CellRun, base_record
from sweep.workloads.ingest import ingest
from sweep.workloads.trials import CellTrials
from sweep.cells import Trial
from sweep.workloads.prompts import ANALYSIS, SUMMARY, fill, postprocess, prompt_budget_chars
from sweep.config import Workflow
from sweep.contract import OPTION_KEYS, Status, TrialRecord
from sweep.runner import Target

NS_PER_MS = 1_000_000
SKIPPED = Status.SKIPPED


@dataclass
class Agent:
    """One agent of a cell: its spec and the CellRun that sends its calls (its host, its options)."""

    spec: AgentSpec
    run: CellRun


def agents_for(main: CellRun, targets: Sequence[Target]) -> list[Agent]:
    """A CellRun per agent: the agent's host as target and its options/system in the request cell.

    They share everything else of the cell's run (store, policy, telemetry,
    progress), so every row lands in the cell's file; only the request differs.
    """
    plan = main.cell.agent_plan
    assert plan is not None
    agents = []
    for spec in plan.agents:
        request_cell = dataclasses.replace(main.cell, options=dict(spec.options), preset=spec.preset,
                                           system=plan.system)
        run = dataclasses.replace(main, target=targets[spec.host % len(targets)], cell=request_cell)
        agents.append(Agent(spec, run))
    return agents


def _base(main: CellRun, agent: Agent, spec: RunSpec) -> TrialRecord:
    """The identity columns of one agent's rows in one run: the cell's, with the agent's host and options."""
    plan = main.cell.agent_plan
    record = dataclasses.replace(
        base_record(main.cell, main.sweep_id, agent.run.target.client.base_url),
        preset=agent.spec.preset, trial=spec.trial, warmup=spec.warmup,
        **{k: agent.spec.options.get(k) for k in OPTION_KEYS}, **main.extra,
    )
    if plan is not None and plan.kind == MULTI_AGENT:
        record = dataclasses.replace(record, run_kind=spec.kind, agent_id=agent.spec.agent_id,
                                     agents=len(plan.agents), scenario=plan.scenario)
    return record


async def _call(agent: Agent, prompt: str, record: TrialRecord, stage: str, attempt: int) -> TrialRecord:
    return await agent.run.call(prompt, dataclasses.replace(record, stage=stage, prompt_id=stage), attempt)


def _skipped(record: TrialRecord, stage: str, attempt: int, why: str) -> TrialRecord:
    return dataclasses.replace(record, stage=stage, prompt_id=stage, status=SKIPPED, attempt=attempt,
                               error=f"not run: {why}")


async def run_workflow(agent: Agent, plan: AgentPlan, base: TrialRecord, attempt: int,
                       start: asyncio.Event) -> tuple[list[TrialRecord], int]:
    """One agent's workflow after the barrier; returns its rows and the ``perf_counter_ns`` it ended."""
    await start.wait()
    began = time.perf_counter_ns()
    workflow_id = uuid.uuid4().hex[:16]
    budget = prompt_budget_chars(agent.spec.options.get("num_ctx"), agent.spec.options.get("num_predict"))
    rows: list[TrialRecord] = []
    ingest_ms = None
    if plan.workflow == Workflow.prompt:
        rows.append(await _call(agent, agent.run.cell.prompts[0].text, base, PROMPT_STAGE, attempt))
    else:
        t0 = time.perf_counter_ns()
        summary = await asyncio.to_thread(ingest, Path(plan.data_dir), budget)
        ingest_ms = (time.perf_counter_ns() - t0) / NS_PER_MS
        analysis = await _call(agent, fill(plan.analysis_prompt, SUMMARY, summary.text, budget), base,
                               ANALYSIS_STAGE, attempt)
        rows.append(analysis)
        if analysis.status == Status.OK:
            findings = postprocess(analysis.response or "", plan.postprocess)
            report = await _call(agent, fill(plan.report_prompt, ANALYSIS, findings, budget), base, REPORT_STAGE,
                                 attempt)
            report.response = postprocess(report.response or "", plan.postprocess)
            rows.append(report)
        else:
            rows.append(_skipped(base, REPORT_STAGE, attempt, f"the analysis call failed ({analysis.status})"))
    ended = time.perf_counter_ns()
    for row in rows:
        row.workflow_id, row.workflow_wall_ms, row.ingest_ms = workflow_id, (ended - began) / NS_PER_MS, ingest_ms
    return rows, ended


async def run_once(main: CellRun, agents: Sequence[Agent], spec: RunSpec, attempt: int) -> list[TrialRecord]:
    """One run: the run's agents wait at a barrier, start together, and each runs its workflow."""
    plan = main.cell.agent_plan
    assert plan is not None
    start = asyncio.Event()
    members = [agents[i] for i in spec.agents]
    tasks = [asyncio.create_task(run_workflow(a, plan, _base(main, a, spec), attempt, start)) for a in members]
    await asyncio.sleep(0)  # every agent reaches the barrier before it opens
    released = time.perf_counter_ns()
    start.set()
    results = await asyncio.gather(*tasks)
    rows = [row for agent_rows, _ in results for row in agent_rows]
    if spec.kind is not None:
        run_id = uuid.uuid4().hex[:16]
        run_wall_ms = (max(ended for _, ended in results) - released) / NS_PER_MS
        for row in rows:
            row.run_id, row.run_wall_ms = run_id, run_wall_ms
    return rows


@dataclass
class AgentWorkload(CellTrials):
    """An agent cell as a :class:`~sweep.cells.Workload`: a trial is one run (a workflow of every agent
    of the run, at a barrier), its rows stored after the run, never while agents stream."""

    agents: list[Agent] = field(default_factory=list, kw_only=True)
    run: CellRun | None = field(default=None, kw_only=True)

    async def run_trial(self, trial: Trial, attempt: int) -> list[TrialRecord]:
        assert isinstance(trial, RunSpec) and self.run is not None
        return await run_once(self.run, self.agents, trial, attempt)


def agent_workload(main: CellRun, targets: Sequence[Target], trials: int | None,
                   isolated_runs: int | None) -> AgentWorkload:
    """The cell's workload: its agents over every server (round-robin), their rows in the cell's store."""
    return AgentWorkload(main.cell, trials, isolated_runs, agents=agents_for(main, targets), run=main)
