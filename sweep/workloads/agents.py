"""Agent workloads as data: who the agents are, which server each talks to, and the order of runs.

Why plain values: a workload turns a cell into the steps of one trial, and the
measuring code (:mod:`sweep.workloads.workflow`) must not know which workload it serves.
Here live the pure parts (the cell's :class:`~sweep.cells.AgentPlan`, part of its identity
and hash, is in :mod:`sweep.cells`): the scenario's per-agent options, the round-robin host assignment,
the schedule of concurrent and isolated runs, and what a resumed sweep still
has to run.

Schedule: each multi-agent cell runs ``trials`` concurrent runs (all agents at
a barrier) and, per agent, ``agents.isolated_runs`` runs of its workflow alone,
because a speedup is only meaningful against the agents alone.  The two kinds
are interleaved, and their order alternates (concurrent first, then isolated
first; the isolated agents rotate), so slow drift (thermals, caches, a
neighbour's load) spreads over both kinds instead of biasing one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.contract import Status
from sweep.cells import MULTI_AGENT, AgentPlan, AgentSpec, ConfigError, validate_options
from sweep.config import Scenario, SweepConfig, Workflow

CONCURRENT, ISOLATED = "concurrent", "isolated"


def validate_agents(cfg: SweepConfig) -> None:
    """Value checks for the agent keys the types cannot express; raises :class:`ConfigError` before any request.

    ``workload.kind``, ``agent.postprocess``, ``agents.workflow`` and ``scenario`` are enums of the schema
    (:mod:`sweep.config`): Hydra refuses a value outside them while composing.
    """
    kind = cfg.workload.kind
    a = cfg.agents
    if a.count < 1:
        raise ConfigError(f"invalid agents.count={a.count}: must be >= 1")
    if a.isolated_runs is not None and a.isolated_runs < 0:
        raise ConfigError(f"invalid agents.isolated_runs={a.isolated_runs}: must be >= 0")
    if kind == MULTI_AGENT and cfg.scenario.name == Scenario.chimera_hetero and not a.options:
        raise ConfigError("scenario=chimera_hetero needs per-agent options: "
                          "agents.options='[{num_gpu: 60, num_ctx: 512}, {num_gpu: 80, num_ctx: 1024}]'")
    if kind == MULTI_AGENT and cfg.scenario.name != Scenario.chimera_hetero and a.options:
        raise ConfigError(f"agents.options is only used by scenario=chimera_hetero (this is {cfg.scenario.name}): "
                          "drop it or choose scenario=chimera_hetero")
    for i, opts in enumerate(a.options):
        if not isinstance(opts, Mapping):
            raise ConfigError(f"agents.options[{i}] must be a mapping like {{num_gpu: 60, num_ctx: 512}}")


def resolve_data_dir(data_dir: str | None) -> str:
    """The directory the workflow ingests, absolute; the bundled sample when unset; checked now."""
    from sweep.workloads.ingest import SAMPLE_DIR, data_files

    path = Path(data_dir).expanduser().resolve() if data_dir else SAMPLE_DIR
    data_files(path)  # a missing or empty directory is one line before any request
    return str(path)


def agent_options(scenario: Scenario, count: int, chimera: Mapping[str, Any], preset: str,
                  per_agent: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(preset, options) per agent for a scenario; ``chimera`` holds the preset's set options."""
    out = []
    for i in range(count):
        if scenario == Scenario.baseline_vs_chimera and i == 0:
            out.append(("baseline", {}))
        elif scenario == Scenario.chimera_hetero:
            out.append((preset, {**chimera, **per_agent[i % len(per_agent)]}))
        else:
            out.append((preset, dict(chimera)))
    return out


def plan_agents(cfg: SweepConfig, preset: str, options: Mapping[str, Any], option_keys: Sequence[str],
                hosts: int, data_dir: str) -> AgentPlan:
    """The cell's agents: options by scenario (on top of the cell's preset options), hosts round-robin."""
    kind = cfg.workload.kind
    count = cfg.agents.count if kind == MULTI_AGENT else 1
    scenario = cfg.scenario.name if kind == MULTI_AGENT else None
    per_agent = [dict(o) for o in cfg.agents.options]
    unknown = {k for o in per_agent for k in o} - set(option_keys)
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)} in agents.options: use {', '.join(option_keys)}")
    specs = []
    for i, (agent_preset, opts) in enumerate(agent_options(scenario or Scenario.chimera_homo, count, options, preset,
                                                           per_agent)):
        ordered = {k: opts[k] for k in option_keys if opts.get(k) is not None}
        validate_options(ordered)
        specs.append(AgentSpec(i, agent_preset, ordered, i % max(1, hosts)))
    workflow = cfg.agents.workflow if kind == MULTI_AGENT else Workflow.report
    w = cfg.workload
    hetero = scenario == Scenario.chimera_hetero
    keys = tuple(k for k in option_keys if any(k in o for o in per_agent)) if hetero else ()
    return AgentPlan(kind, workflow, scenario, tuple(specs), hosts, data_dir, w.analysis_prompt, w.report_prompt,
                     cfg.agent.system if cfg.agent.system is not None else w.system, cfg.agent.postprocess, keys)


# ---------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunSpec:
    """One run of an agent cell: all agents at a barrier, or one agent alone (or a plain workflow trial)."""

    kind: str | None               # concurrent | isolated | None (agent_report: no run columns)
    trial: int
    agents: tuple[int, ...]
    warmup: bool

    def key(self) -> tuple[Any, ...]:
        """What identifies the run across resumed sweeps."""
        return (self.kind, self.trial, self.agents if self.kind == ISOLATED else None)


def schedule_runs(plan: AgentPlan, trials: int, warmup: int, isolated_runs: int | None) -> list[RunSpec]:
    """Warm-ups first (a whole concurrent run each), then concurrent and isolated runs interleaved."""
    specs = [warmup_run(plan, i) for i in range(warmup)]
    for t in range(trials):
        specs += round_runs(plan, t, trials, isolated_runs)
    return specs


def warmup_run(plan: AgentPlan, n: int) -> RunSpec:
    """The ``n``-th warm-up: a whole run of every agent (concurrent for multi_agent), not measured."""
    everyone = tuple(a.agent_id for a in plan.agents)
    return RunSpec(CONCURRENT if plan.kind == MULTI_AGENT else None, n, everyone, True)


def round_runs(plan: AgentPlan, rnd: int, trials: int | None, isolated_runs: int | None) -> list[RunSpec]:
    """The measured runs of round ``rnd``: the concurrent run and each agent's isolated run numbered ``rnd``.

    Their order alternates by round (concurrent first, then isolated first; the isolated agents
    rotate).  ``trials`` None (trials=auto) leaves the number of rounds open; with a fixed number,
    the last round also takes the isolated runs beyond it (``agents.isolated_runs`` > trials).
    """
    everyone = tuple(a.agent_id for a in plan.agents)
    if plan.kind != MULTI_AGENT:
        return [RunSpec(None, rnd, everyone, False)]
    n = len(everyone)
    last = trials if trials is not None else rnd + 1
    iso = last if isolated_runs is None else isolated_runs
    numbers = range(rnd, max(last, iso)) if trials is not None and rnd == trials - 1 else [rnd]
    specs: list[RunSpec] = []
    for t in numbers:
        conc = [RunSpec(CONCURRENT, t, everyone, False)] if t < last else []
        alone = [RunSpec(ISOLATED, t, (everyone[(i + t) % n],), False) for i in range(n)] if t < iso else []
        specs += conc + alone if t % 2 == 0 else alone + conc
    return specs


def expected_rows(plan: AgentPlan, trials: int, isolated_runs: int | None) -> int:
    """Measured rows (calls) a complete agent cell holds, for progress: each run's agents × stages."""
    calls = sum(len(s.agents) for s in schedule_runs(plan, trials, 0, isolated_runs))
    return calls * len(plan.stages)


def completed_runs(rows: Sequence[Mapping[str, Any]], cell_hash: str, stages: int) -> set[tuple[Any, ...]]:
    """Keys of the measured runs stored earlier whose every agent finished every stage with status ok."""
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("cell_hash") == cell_hash and not r.get("warmup") and r.get("workflow_id"):
            by_run.setdefault(r.get("run_id") or r["workflow_id"], []).append(r)
    done = set()
    for run_rows in by_run.values():
        first = run_rows[0]
        agents = tuple(sorted({r.get("agent_id") or 0 for r in run_rows}))
        kind = first.get("run_kind")
        expected = 1 if kind in (ISOLATED, None) else (first.get("agents") or 1)
        if (len(agents) == expected and len(run_rows) == expected * stages
                and all(r.get("status") == Status.OK for r in run_rows)):
            done.add((kind, first.get("trial"), agents if kind == ISOLATED else None))
    return done


def runs_ok_text(rows: Sequence[Mapping[str, Any]], cell_hash: str, stages: int, trials: int,
                 isolated_runs: int | None) -> str:
    """'3/3 concurrent runs + 6/6 isolated runs (3 per agent) ok': a multi-agent cell's complete runs by kind.

    Why: one count of both kinds read as trials ("6/6 trials ok" for ``trials=2`` and two agents).
    The expected numbers follow :func:`schedule_runs`; rows of runs outside it (an earlier, longer
    sweep) are not counted.
    """
    agents = max((r.get("agents") or 0 for r in rows), default=0) or 1
    per_agent = trials if isolated_runs is None else isolated_runs
    done = completed_runs(rows, cell_hash, stages)
    concurrent = sum(1 for kind, trial, _ in done if kind == CONCURRENT and trial < trials)
    isolated = sum(1 for kind, trial, _ in done if kind == ISOLATED and trial < per_agent)
    return (f"{concurrent}/{trials} concurrent runs + {isolated}/{agents * per_agent} isolated runs "
            f"({per_agent} per agent) ok")


def runs_todo(plan: AgentPlan, trials: int, warmup: int, isolated_runs: int | None,
              previous: Sequence[Mapping[str, Any]], cell_hash: str) -> list[RunSpec]:
    """Missing measured runs, preceded by the warm-ups (re-run: the servers are cold again)."""
    done = completed_runs(previous, cell_hash, len(plan.stages))
    specs = schedule_runs(plan, trials, warmup, isolated_runs)
    missing = [s for s in specs if not s.warmup and s.key() not in done]
    if not missing:
        return []
    offset = len({r.get("run_id") or r.get("workflow_id") for r in previous
                  if r.get("warmup") and r.get("cell_hash") == cell_hash})
    warmups = [RunSpec(s.kind, s.trial + offset, s.agents, True) for s in specs if s.warmup]
    return warmups + missing
