"""Agent tables from columns alone: hand-computed speedup, efficiency, slowdown and TR114 figures.

Cell "homo" (2 agents, ingest → analysis → report; every call 50 tokens in 500 ms):

- isolated workflow walls: agent 0 = 1000, 1200 (mean 1100); agent 1 = 900, 1100 (mean 1000).
- concurrent run r1: wall 1400, agent walls 1300 / 1350; run r2: wall 1600, agent walls 1500 / 1580;
  run r3: agent 1's report timed out (excluded); one warm-up run (excluded).
- speedup r1 = 2100/1400 = 1.5, r2 = 2100/1600 = 1.3125 → mean 1.40625,
  CI95 = 1.40625 ± t(.975,1)·0.1325825/√2 = ± 12.7062·0.09375 = [0.215, 2.597].
- efficiency 75, 65.625 → mean 70.3125.
- slowdown = 1300/1100, 1350/1000, 1500/1100, 1580/1000 → mean 1.368864.
- aggregate tok/s = 200/1.4, 200/1.6 → 133.929; isolated tok/s = 100/1.0, 100/1.2, 100/0.9, 100/1.1 → 96.338.
- tr114 = 2650/1400 = 1.892857, 3080/1600 = 1.925 → mean 1.908929; efficiency 94.642857, 96.25 →
  mean 95.446429, sd 1.136422, no contention run.
- agent tok/s: agent 0 rows 40, 42 | 38, 40 → 40; agent 1 rows 30, 32 | 34, 36 → 33;
  throughput delta per run 31 − 41 = −10, 35 − 39 = −4 → −7, CI95 = −7 ± 12.7062·3 = [−45.12, 31.12].
- TTFT: agent 0 rows 100, 50 | 120, 60; agent 1 rows 140, 70 | 160, 80 → delta −30, −30 (CI [−30, −30]).

Cell "other harness" (no run_kind, no isolated runs, one call per workflow): run walls 1000;
agent walls (600, 700), (900, 950), (1000, 1000) → tr114 1.3, 1.85, 2.0 → mean 1.716667;
efficiency 65, 92.5, 100 → mean 85.833333, sd 18.427787, max 100, min 65, 1 contention run.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import load
from analysis.tables import analyse
from tests.sweep_cli import clean_env, run_module



def _homo_rows() -> list[dict]:
    rows: list[dict] = []

    def workflow(kind: str, run: str, agent: int, wf_wall: float, run_wall: float, tps: tuple[float, float],
                 ttft: tuple[float, float], trial: int, warmup: bool = False, fail_report: bool = False) -> None:
        for i, stage in enumerate(("analysis", "report")):
            failed = fail_report and stage == "report"
            rows.append(dict(
                sweep_id="S", cell_id="chimera m homo x2", preset="chimera", model="m", backend="ollama",
                workload="multi_agent", num_ctx=512, scenario="chimera_homo", agents=2, run_kind=kind, run_id=run,
                agent_id=agent, workflow_id=f"{run}-a{agent}", workflow_wall_ms=wf_wall, run_wall_ms=run_wall,
                ingest_ms=2.0, stage=stage, trial=trial, warmup=warmup, prompt_id=stage,
                status="timeout" if failed else "ok", throughput_tok_s=None if failed else tps[i],
                ttft_ms=None if failed else ttft[i], e2e_ms=None if failed else wf_wall / 2,
                eval_count=None if failed else 50, eval_duration_ms=None if failed else 500.0,
            ))

    workflow("concurrent", "w", 0, 900, 950, (10, 10), (900, 900), 0, warmup=True)
    workflow("concurrent", "w", 1, 950, 950, (10, 10), (900, 900), 0, warmup=True)
    for run, agent, wall in (("i0", 0, 1000), ("i1", 0, 1200), ("i2", 1, 900), ("i3", 1, 1100)):
        workflow("isolated", run, agent, wall, wall, (50, 50), (20, 20), int(run[1]) // 2)
    workflow("concurrent", "r1", 0, 1300, 1400, (40, 42), (100, 50), 0)
    workflow("concurrent", "r1", 1, 1350, 1400, (30, 32), (140, 70), 0)
    workflow("concurrent", "r2", 0, 1500, 1600, (38, 40), (120, 60), 1)
    workflow("concurrent", "r2", 1, 1580, 1600, (34, 36), (160, 80), 1)
    workflow("concurrent", "r3", 0, 1000, 2000, (40, 40), (50, 50), 2)
    workflow("concurrent", "r3", 1, 2000, 2000, (40, 40), (50, 50), 2, fail_report=True)
    return rows


def _harness_rows() -> list[dict]:
    """Another harness: its own column subset, no cell_id, no run_kind, no isolated runs."""
    rows = []
    for r, walls in enumerate(((600, 700), (900, 950), (1000, 1000))):
        for agent, wall in enumerate(walls):
            rows.append(dict(model="other", scenario="dual", agents=2, run_id=f"run{r}", agent_id=agent,
                             workflow_wall_ms=wall, run_wall_ms=1000, throughput_tok_s=50 + agent, ttft_ms=100,
                             status="ok", num_gpu=80 if agent else 60))
    return rows


def _write(tmp: Path, rows: list[dict], name: str) -> Path:
    path = tmp / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _concurrency(path: Path) -> pd.DataFrame:
    an = analyse(load([path]).frame)
    return an.get("concurrency").frame.set_index("cell")


EXPECTED_COLUMNS = [
    "cell", "agents", "runs", "speedup mean", "speedup CI95 lo", "speedup CI95 hi", "efficiency % mean",
    "efficiency % CI95 lo", "efficiency % CI95 hi", "slowdown mean", "aggregate tok/s mean", "isolated tok/s mean",
    "tr114 speedup mean", "tr114 efficiency % mean", "tr114 efficiency % sd", "tr114 efficiency % max",
    "tr114 efficiency % min", "tr114 contention runs",
]


def test_speedup_efficiency_slowdown_by_hand(tmp_path: Path) -> None:
    c = _concurrency(_write(tmp_path, _homo_rows(), "homo.csv")).iloc[0]
    assert c["agents"] == 2 and c["runs"] == 2
    assert c["speedup mean"] == pytest.approx(1.40625)
    # log-t over the 2 runs: Student t's half-width 1.191206 (t(.975, 1) · s/√2) on the log scale of the mean
    h = 1.191206 / 1.40625
    assert (c["speedup CI95 lo"], c["speedup CI95 hi"]) == pytest.approx((1.40625 * math.exp(-h), 1.40625 * math.exp(h)), abs=1e-5)
    assert c["efficiency % mean"] == pytest.approx(70.3125)
    assert c["slowdown mean"] == pytest.approx((1300 / 1100 + 1.35 + 1500 / 1100 + 1.58) / 4)
    assert c["aggregate tok/s mean"] == pytest.approx((200 / 1.4 + 200 / 1.6) / 2)
    assert c["isolated tok/s mean"] == pytest.approx((100 + 100 / 1.2 + 100 / 0.9 + 100 / 1.1) / 4)
    assert c["tr114 speedup mean"] == pytest.approx((2650 / 1400 + 3080 / 1600) / 2)
    assert c["tr114 efficiency % mean"] == pytest.approx(95.446429)
    assert c["tr114 efficiency % sd"] == pytest.approx(1.136422, abs=1e-6)
    assert (c["tr114 efficiency % max"], c["tr114 efficiency % min"]) == pytest.approx((96.25, 94.642857))
    assert c["tr114 contention runs"] == 0
    assert (c["agent 0 tok/s mean"], c["agent 1 tok/s mean"]) == pytest.approx((40, 33))
    assert (c["agent 0 TTFT ms mean"], c["agent 1 TTFT ms mean"]) == pytest.approx((82.5, 112.5))
    assert c["throughput delta mean"] == pytest.approx(-7)
    assert (c["throughput delta CI95 lo"], c["throughput delta CI95 hi"]) == pytest.approx((-45.1186, 31.1186), abs=1e-3)
    assert (c["TTFT delta ms mean"], c["TTFT delta ms CI95 lo"], c["TTFT delta ms CI95 hi"]) == pytest.approx((-30, -30, -30))


def test_other_harness_gets_tr114_figures_and_empty_isolated_columns(tmp_path: Path) -> None:
    c = _concurrency(_write(tmp_path, _harness_rows(), "harness.csv"))
    assert len(c) == 1, "per-agent num_gpu must not split a run into cells"
    row = c.iloc[0]
    assert row["runs"] == 3 and row["agents"] == 2
    assert pd.isna(row["speedup mean"]) and pd.isna(row["efficiency % mean"]) and pd.isna(row["slowdown mean"])
    assert row["tr114 speedup mean"] == pytest.approx((1.3 + 1.85 + 2.0) / 3)
    assert row["tr114 efficiency % mean"] == pytest.approx(85.833333)
    assert row["tr114 efficiency % sd"] == pytest.approx(18.427787, abs=1e-5)
    assert (row["tr114 efficiency % max"], row["tr114 efficiency % min"]) == pytest.approx((100, 65))
    assert row["tr114 contention runs"] == 1
    assert row["throughput delta mean"] == pytest.approx(1.0)


def test_stage_and_workflow_rows(tmp_path: Path) -> None:
    an = analyse(load([_write(tmp_path, _homo_rows(), "homo.csv")]).frame)
    st = an.get("agent_stages").frame.set_index(["run kind", "stage"])
    iso = st.loc[("isolated", "workflow total")]
    assert iso["n"] == 4 and iso["wall ms mean"] == pytest.approx(1050) and iso["tok/s mean"] == pytest.approx(100)
    assert iso["ingest ms mean"] == pytest.approx(2.0)
    conc = st.loc[("concurrent", "analysis")]
    assert conc["n"] == 6 and conc["tok/s mean"] == pytest.approx((40 + 30 + 38 + 34 + 40 + 40) / 6)
    assert st.loc[("concurrent", "report"), "n"] == 5
    total = st.loc[("concurrent", "workflow total")]
    assert total["n"] == 5, "the workflow with a failed report is not a workflow total"
    assert total["TTFT ms mean"] == pytest.approx((100 + 140 + 120 + 160 + 50) / 5)


def test_cli_writes_concurrency_csv_md_latex_and_figure(tmp_path: Path) -> None:
    rows = _homo_rows()
    path = _write(tmp_path, rows, "homo.csv")
    out = tmp_path / "report"
    result = run_module("analysis", str(path), "--out", str(out), cwd=tmp_path, timeout=120,
                        env=clean_env(tmp_path, MPLBACKEND="Agg"))
    assert result.returncode == 0, result.stderr
    with (out / "concurrency.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    header = list(table[0])
    assert header[:len(EXPECTED_COLUMNS)] == EXPECTED_COLUMNS
    assert {"agent 0 tok/s mean", "agent 1 TTFT ms mean", "throughput delta mean", "throughput delta CI95 lo",
            "TTFT delta ms mean", "TTFT delta ms CI95 hi"} <= set(header)
    assert table[0]["speedup mean"] == "1.406" and table[0]["efficiency % mean"] == "70.31"
    assert table[0]["tr114 speedup mean"] == "1.909" and table[0]["tr114 efficiency % sd"] == "1.14"
    md = (out / "report.md").read_text()
    assert re.search(r"^## \d+\. Concurrency$", md, re.M) and "| 1.406 |" in md and "1.406" in (out / "report.html").read_text()
    tex = (out / "report.tex").read_text()
    assert "1.406" in tex and "tr114 speedup mean" in tex
    scen = list(csv.DictReader((out / "concurrency_scenarios.csv").open()))
    assert scen[0]["scenario"] == "chimera_homo" and scen[0]["speedup mean of cells"] == "1.406"
    assert (out / "figures" / "concurrency_speedup.png").stat().st_size > 0
    assert (out / "agent_stages.csv").exists()


def test_parquet_and_csv_give_the_same_tables(tmp_path: Path) -> None:
    rows = _homo_rows()
    csv_path = _write(tmp_path, rows, "homo.csv")
    pq_path = tmp_path / "homo.parquet"
    pd.DataFrame(rows).to_parquet(pq_path)
    a, b = _concurrency(csv_path), _concurrency(pq_path)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_prompt_sweep_has_no_agent_sections(tmp_path: Path) -> None:
    rows = [dict(cell_id="c", model="m", throughput_tok_s=10.0 + i, ttft_ms=50.0, status="ok") for i in range(3)]
    an = analyse(load([_write(tmp_path, rows, "plain.csv")]).frame)
    assert an.get("concurrency") is None and an.get("agent_stages") is None and an.concurrency is None


def test_reload_rows_inside_a_run_keep_the_cell(tmp_path: Path) -> None:
    rows = _homo_rows()
    for r in rows:
        r["reloaded"] = r["agent_id"] == 1            # e.g. hetero options on one server: agent 1 reloads
    c = _concurrency(_write(tmp_path, rows, "reload.csv"))
    assert len(c) == 1 and c.iloc[0]["runs"] == 2 and c.iloc[0]["speedup mean"] == pytest.approx(1.40625)
