"""Agent workloads take the measurement design of prompts: random order in rounds, trials=auto, resume.

``python -m sweep -m workload=agent_report|multi_agent chimera=baseline,optimized order=random trials=auto``
against the stand-in: the sweeper runs one job per cell and round (a trial of ``agent_report`` is one
workflow, of ``multi_agent`` one run, concurrent or isolated), a cell leaves the rounds once its mean is
precise enough, and a multirun stopped with Ctrl-C resumes to exactly the runs it lacked.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from sweep.cells import AgentPlan, AgentSpec
from sweep.testing.standin import Script, StandIn
from sweep.workloads.agents import CONCURRENT, ISOLATED, round_runs, schedule_runs
from tests.sweep_cli import interrupt_sweep, only_sweep, run_sweep, trials_of

STEADY = dict(tokens=["a", "b", "c"], first_token_delay_s=0.002, token_interval_s=0.001, eval_duration=400_000_000)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path.parent / f"{tmp_path.name}-bench"     # outside tmp_path: the sweeps' output root
    d.mkdir()
    pd.DataFrame({"config": ["gpu60", "gpu80"], "tokens_per_s": [41.5, 57.25]}).to_csv(d / "tr_results.csv", index=False)
    return d


def _args(standin: StandIn, data_dir: Path, root: Path, *extra: str) -> list[str]:
    return ["-m", "chimera=baseline,optimized", "order=random", "order_seed=3", "trials=auto", "backend=ollama",
            f"backend.base_url={standin.base_url}", "model=gemma3", f"workload.data_dir={data_dir}",
            "telemetry.enabled=false", "progress=false", "backend.retry_backoff_s=0", f"output_root={root}", *extra]


def _measured(root: Path) -> pd.DataFrame:
    df = trials_of(root).sort_values("started_at").reset_index(drop=True)
    return df[~df["warmup"] & (df["status"] == "ok")]


def _rounds_in_order(df: pd.DataFrame) -> None:
    """Every row of round r was stored before any row of round r + 1: the cells take turns, round by round."""
    rounds = sorted(df["round"].unique())
    assert len(rounds) >= 2
    for r, after in zip(rounds, rounds[1:]):
        assert df.loc[df["round"] == r, "started_at"].max() < df.loc[df["round"] == after, "started_at"].min(), r


def test_agent_report_runs_in_random_rounds_and_stops_each_cell_when_precise(
        standin: StandIn, data_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(5)

    def script(body: dict) -> Script:   # the baseline (no num_ctx) is noisy, the chimera cell steady
        noisy = (body.get("options") or {}).get("num_ctx") is None
        return Script(**{**STEADY, "eval_duration": int(rng.uniform(0.5, 1.5) * 4e8) if noisy else 400_000_000})

    standin.script_for = script
    result = run_sweep(*_args(standin, data_dir, tmp_path, "workload=agent_report", "auto.min_trials=3",
                              "auto.max_trials=5"))
    assert result.returncode == 0, result.stderr
    assert "× up to 5 round(s)" in result.stderr and "order=random (order_seed=3)" in result.stderr
    df = trials_of(tmp_path).sort_values("started_at").reset_index(drop=True)
    _rounds_in_order(df)
    measured = _measured(tmp_path)
    assert (measured["round"] == measured["trial"]).all()                     # trial r is measured in round r
    workflows = measured.groupby("preset")["workflow_id"].nunique().to_dict()
    assert workflows == {"baseline": 5, "chimera": 3}                          # the steady cell left after 3 rounds
    assert set(measured.groupby("workflow_id")["stage"].apply(lambda s: tuple(sorted(s)))) == {("analysis", "report")}
    last = measured.groupby("preset").tail(1).set_index("preset")["stop_reason"]
    assert last["chimera"] == "ci: ±0.00 % ≤ 2 % after 3" and last["baseline"].startswith("max_trials: 5")
    configs = json.loads((only_sweep(tmp_path) / "_run.json").read_text())["cells"].values()
    assert {(c["config"]["order"], c["config"]["order_seed"]) for c in configs} == {("random", 3)}


def _parts(root: Path) -> int:
    return len(list(root.rglob("part-*.parquet")))


def test_multi_agent_runs_in_rounds_stops_and_resumes_after_ctrl_c_without_doubling(
        standin: StandIn, data_dir: Path, tmp_path: Path) -> None:
    standin.default = Script(**{**STEADY, "tokens": ["a"] * 8, "token_interval_s": 0.01})   # ~0.1 s a call
    args = _args(standin, data_dir, tmp_path, "workload=multi_agent", "agents.count=2", "auto.min_trials=3",
                 "auto.max_trials=6", "sweep_id=ma")
    returncode, err = interrupt_sweep(*args, until=lambda: _parts(tmp_path) >= 5,   # round 0 of the first cell
                                      what="5 parts stored")                           # stored, more under way
    assert returncode != 0, err[-2000:]
    stopped = _measured(tmp_path)
    assert 0 < len(stopped) < 2 * 3 * 4 * 2, err[-2000:]          # some runs stored, not all

    result = run_sweep(*args, "resume=true")
    assert result.returncode == 0, result.stderr
    assert "3/3 concurrent runs + 6/6 isolated runs (3 per agent) ok" in result.stderr
    df = trials_of(tmp_path).sort_values("started_at").reset_index(drop=True)
    measured = _measured(tmp_path)
    # every cell: 3 rounds (steady: precise after auto.min_trials) of 1 concurrent run of both agents and one
    # isolated run per agent, two stages each; a run is stored once, the runs measured before Ctrl-C kept
    key = ["preset", "run_kind", "trial", "agent_id", "stage"]
    assert not measured.duplicated(key).any()
    counts = measured.groupby(["preset", "run_kind"]).size().to_dict()
    assert counts == {(p, k): 3 * 2 * 2 for p in ("baseline", "chimera") for k in (CONCURRENT, ISOLATED)}, counts
    assert (measured["round"] == measured["trial"]).all()
    assert set(stopped["started_at"]) <= set(measured["started_at"])
    assert measured.groupby("preset").tail(1)["stop_reason"].eq("ci: ±0.00 % ≤ 2 % after 3").all()
    _rounds_in_order(df[df["started_at"] > stopped["started_at"].max()])   # the resumed rounds, in turn too


def _plan(kind: str, agents: int) -> AgentPlan:
    specs = tuple(AgentSpec(i, "chimera", {}, 0) for i in range(agents))
    return AgentPlan(kind, "report", "chimera_homo", specs, 1, "", "", "", None, "none")


def test_a_round_of_an_agent_cell_is_its_runs_of_that_number() -> None:
    plan = _plan("multi_agent", 2)
    fixed = [s for t in range(3) for s in round_runs(plan, t, 3, None)]
    assert fixed == [s for s in schedule_runs(plan, 3, 0, None)]
    assert [(s.kind, s.trial, s.agents) for s in round_runs(plan, 1, None, None)] == [
        (ISOLATED, 1, (1,)), (ISOLATED, 1, (0,)), (CONCURRENT, 1, (0, 1))]     # trials=auto: open-ended rounds
    assert [s.kind for s in round_runs(plan, 4, None, 0)] == [CONCURRENT]
    last = round_runs(plan, 1, 2, 4)            # the last round takes the isolated runs beyond the trials
    assert sorted({s.trial for s in last if s.kind == ISOLATED}) == [1, 2, 3]
    assert [(s.kind, s.trial) for s in round_runs(_plan("agent_report", 1), 2, None, None)] == [(None, 2)]


def test_dry_run_of_multi_agent_rounds_counts_the_requests_the_run_sends(
        standin: StandIn, data_dir: Path, tmp_path: Path) -> None:
    """Hand count, order_seed=3: round 0 visits chimera then baseline, round 1 baseline then chimera, so three
    visits warm up (baseline's second follows itself); 2 cells × 2 rounds × (1 concurrent run of 2 agents + 2
    isolated runs) × 2 stages = 32 measured calls, and 3 warm-up runs × 2 agents × 2 stages = 12."""
    standin.default = Script(**STEADY)
    args = [a for a in _args(standin, data_dir, tmp_path, "workload=multi_agent", "agents.count=2")
            if a != "trials=auto"] + ["trials=2"]
    dry = run_sweep(*args, "dry_run=true")
    assert dry.returncode == 0, dry.stderr
    assert "  round 0: 1 0\n  round 1: 0 1\n" in dry.stdout
    assert "44 requests (32 measured trials + 12 warm-ups)" in dry.stdout and standin.hits == []
    result = run_sweep(*args)
    assert result.returncode == 0, result.stderr
    assert len(standin.requests) == 44
    df = trials_of(tmp_path)
    assert df["warmup"].sum() == 12 and (~df["warmup"]).sum() == 32
