"""Agent workloads before any request: config checks, per-agent options, hosts, run order, prompts, ingest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig

from sweep.workloads.agents import CONCURRENT, ISOLATED, completed_runs, runs_todo, schedule_runs
from sweep.workloads.ingest import SAMPLE_DIR, ingest
from sweep.cells import ConfigError
from sweep.config import typed
from sweep.plan import plan_cells
from sweep.workloads.prompts import fill, prompt_budget_chars
from tests.sweep_cli import run_sweep

Compose = Callable[..., DictConfig]
OLLAMA = ("backend=ollama", "backend.base_url=http://127.0.0.1:9", "model=gemma3")


def _plan(compose_cfg: Compose, *overrides: str):
    (cell,) = plan_cells(typed(compose_cfg(*OLLAMA, "workload=multi_agent", *overrides)))
    return cell, cell.agent_plan


def test_scenarios_give_each_agent_its_options(compose_cfg: Compose) -> None:
    _, homo = _plan(compose_cfg, "agents.count=3")
    assert len({tuple(a.options.items()) for a in homo.agents}) == 1 and homo.agents[0].options["num_ctx"] == 512
    _, bvc = _plan(compose_cfg, "scenario=baseline_vs_chimera")
    assert bvc.agents[0].options == {} and bvc.agents[0].preset == "baseline" and bvc.agents[1].preset == "chimera"
    cell, het = _plan(compose_cfg, "scenario=chimera_hetero", "agents.count=3",
                      "agents.options=[{num_gpu: 60, num_ctx: 512}, {num_gpu: 80, num_ctx: 1024}]")
    assert [(a.options["num_gpu"], a.options["num_ctx"]) for a in het.agents] == [(60, 512), (80, 1024), (60, 512)]
    assert het.agents[0].options["temperature"] == 0.8          # on top of the chimera preset
    assert cell.cell_id.startswith("chimera_hetero agents=3 per-agent num_gpu=60/80/60 num_ctx=512/1024/512 chimera")


def test_hosts_round_robin_and_identity(compose_cfg: Compose) -> None:
    cell, plan = _plan(compose_cfg, "agents.count=4", "backend.hosts=[http://a:1,b:2]")
    assert [a.host for a in plan.agents] == [0, 1, 0, 1] and plan.hosts == 2
    assert cell.base_url == "http://a:1 http://b:2"
    other, _ = _plan(compose_cfg, "agents.count=2", "backend.hosts=[http://a:1,b:2]")
    assert other.cell_hash != cell.cell_hash
    (prompt_cell,) = plan_cells(typed(compose_cfg(*OLLAMA)))
    assert prompt_cell.agent_plan is None and "agent_plan" not in prompt_cell.cell_id


@pytest.mark.parametrize("overrides, message", [
    (("agents.count=0",), "invalid agents.count=0"),
    (("scenario=chimera_hetero", "agents.options=[]"), "scenario=chimera_hetero needs per-agent options"),
    (("agents.options=[{num_gpu: 1}]",), "agents.options is only used by scenario=chimera_hetero"),
    (("scenario=chimera_hetero", "agents.options=[{num_gpux: 1}]"), "unknown option(s) ['num_gpux'] in agents.options"),
    (("scenario=chimera_hetero", "agents.options=[{num_ctx: -5}]"), "invalid option num_ctx=-5"),
    (("workload.data_dir=/nonexistent/bench",), "workload.data_dir '/nonexistent/bench' is not a directory"),
    (("backend.instances=2",), "invalid backend.instances=2"),
])
def test_bad_agent_config_is_one_line(compose_cfg: Compose, overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        plan_cells(typed(compose_cfg(*OLLAMA, "workload=multi_agent", *overrides)))
    assert message in str(info.value)


def test_bad_agent_config_exits_2_before_any_request(tmp_path: Path) -> None:
    result = run_sweep(*OLLAMA, "workload=multi_agent", "scenario=chimera_hetero", "agents.options=[]",
                       f"output_root={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: scenario=chimera_hetero needs per-agent options" in result.stderr


def test_run_order_interleaves_kinds_and_rotates_agents(compose_cfg: Compose) -> None:
    _, plan = _plan(compose_cfg, "agents.count=2")
    runs = schedule_runs(plan, trials=3, warmup=1, isolated_runs=None)
    shown = [("W" if r.warmup else "") + ("C" if r.kind == CONCURRENT else f"I{r.agents[0]}") + str(r.trial) for r in runs]
    assert shown == ["WC0", "C0", "I00", "I10", "I11", "I01", "C1", "C2", "I02", "I12"]
    assert sum(r.kind == ISOLATED for r in schedule_runs(plan, 3, 0, 1)) == 2


def test_resume_counts_only_complete_runs(compose_cfg: Compose) -> None:
    cell, plan = _plan(compose_cfg, "agents.count=2", "agents.workflow=prompt")
    h = cell.cell_hash

    def row(run: str, kind: str, trial: int, agent: int, status: str = "ok", warmup: bool = False) -> dict:
        return dict(cell_hash=h, run_id=run, workflow_id=f"{run}{agent}", run_kind=kind, trial=trial, agent_id=agent,
                    agents=2, status=status, warmup=warmup)

    rows = [row("w", CONCURRENT, 0, 0, warmup=True), row("w", CONCURRENT, 0, 1, warmup=True),
            row("c0", CONCURRENT, 0, 0), row("c0", CONCURRENT, 0, 1),
            row("c1", CONCURRENT, 1, 0), row("c1", CONCURRENT, 1, 1, status="timeout"),
            row("i0", ISOLATED, 0, 0)]
    assert completed_runs(rows, h, 1) == {(CONCURRENT, 0, None), (ISOLATED, 0, (0,))}
    todo = runs_todo(plan, 2, 1, 1, rows, h)
    assert [(r.kind, r.trial, r.agents, r.warmup) for r in todo] == [
        (CONCURRENT, 1, (0, 1), True), (ISOLATED, 0, (1,), False), (CONCURRENT, 1, (0, 1), False)]


def test_prompt_fits_the_context_and_keeps_the_instructions() -> None:
    budget = prompt_budget_chars(512, 64)
    assert budget == (512 - 64) * 3
    text = fill("Analyse:\n{summary}\nBe brief.", "{summary}", "x" * 5000, budget)
    assert len(text) <= budget and text.startswith("Analyse:\n") and text.endswith("…\nBe brief.")
    assert fill("A {analysis}", "{analysis}", "short", budget) == "A short"
    assert prompt_budget_chars(None, None) == (2048 - 512) * 3


def test_ingest_reads_csv_json_markdown_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("model,tok_s\nx,10\ny,30\n")
    (tmp_path / "b.json").write_text(json.dumps({"runs": [{"ttft_ms": 100}, {"ttft_ms": 300}]}))
    (tmp_path / "notes.md").write_text("# TR111\nChimera beats baseline.\n")
    pd.DataFrame({"throughput_tok_s": [1.0, 3.0]}).to_parquet(tmp_path / "c.parquet")
    (tmp_path / "_hydra").mkdir()
    (tmp_path / "_hydra" / "skip.csv").write_text("secret,1\n")
    s = ingest(tmp_path, 10_000)
    assert s.files == 4 and s.rows == 6
    assert "tok_s: mean 20" in s.text and "x: tok_s 10" in s.text and "ttft_ms: mean 200" in s.text
    assert "TR111" in s.text and "throughput_tok_s: mean 2" in s.text and "secret" not in s.text
    assert len(ingest(tmp_path, 100).text) == 100


def test_bundled_sample_is_real_sweep_output() -> None:
    s = ingest(SAMPLE_DIR, 100_000)
    assert s.files >= 4 and "gemma3:270m" in s.text and "throughput_tok_s" in s.text
