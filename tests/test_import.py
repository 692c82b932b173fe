"""Old harness results through the real CLI: ``python -m analysis OLD_FOLDER`` (issue 28).

Fixtures are written from the formats' description (analysis/importers/generate.py, plus
hand-written files with round numbers where a figure is checked by hand); every report
is made by ``python -m analysis`` in a subprocess, as a user runs it.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import importers
from analysis.importers import generate
from tests.sweep_cli import run_module

IMPORT_DIR, TRIALS_FILE, short_float = importers.IMPORT_DIR, importers.TRIALS_FILE, importers.short_float

REPO = Path(__file__).resolve().parent.parent


def analyse(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_module("analysis", *map(str, args), "--no-figures", timeout=180)


def table(out: Path, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader((out / f"{name}.csv").open()))


def rows_of(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / IMPORT_DIR / TRIALS_FILE)


def metrics(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------- the f32 clean-up


def test_f32_floats_become_the_decimal_that_was_typed() -> None:
    assert short_float(0.6000000238418579) == 0.6
    assert short_float(0.800000011920929) == 0.8
    assert short_float(1.100000023841858) == 1.1
    assert short_float(0.6) == 0.6            # a float64 that is no f32: left alone
    assert short_float(1.0) == 1.0


def test_f32_clean_up_on_generated_values() -> None:
    """Any f32: the result is the shortest %g decimal that is the same f32 (found here by trying 1, 2, … digits)."""
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.uniform(0, 2, 3000), rng.integers(0, 2000, 500) / 1000.0,
                             rng.uniform(1, 4096, 500)]).astype(np.float32)
    for v in values:
        shortest = next(float(f"{float(v):.{d}g}") for d in range(1, 10) if np.float32(f"{float(v):.{d}g}") == v)
        assert short_float(float(v)) == shortest


def test_numbers_as_the_harnesses_wrote_them() -> None:
    from analysis.importers.common import Problem, number

    assert number({"t": "12.5"}, "t", "f") == 12.5 and number({"t": "12.5s"}, "t", "f") == 12.5
    assert number({"p95": float("nan")}, "p95", "f", required=False) is None
    for bad, says in (({"t": True}, "not a number"), ({"t": float("nan")}, "not finite"), ({}, "missing field `x.t`")):
        with pytest.raises(Problem, match=says):
            number(bad, "t", "f", "x")


# ---------------------------------------------------------------- Rust single agent


def test_rust_single_agent_one_row_per_call_and_its_tables(tmp_path) -> None:
    old = tmp_path / "old"
    files = [generate.rust_single(old / "gpu60_ctx256_temp0p6", runs=3, seed=1),
             generate.rust_single(old / "gpu80_ctx512_temp0p8", runs=2, seed=2,
                                  configuration={"num_gpu": 80, "num_ctx": 512, "temperature": 0.800000011920929})]
    out = tmp_path / "report"
    result = analyse(old, "--out", out)
    assert result.returncode == 0, result.stderr
    df = rows_of(old)
    assert len(df) == (3 + 2) * 2 * 2                     # runs × agents × calls (analysis, report)
    assert df["source"].str.startswith("rust-single:gpu").all()
    assert set(df["stage"]) == {"analysis", "report"}
    chim = df[df["cell_id"] == "gpu60_ctx256_temp0p6 chimera"]
    assert chim["temperature"].eq(0.6).all() and chim["num_gpu"].eq(60).all() and chim["preset"].eq("chimera").all()
    base = df[df["cell_id"] == "gpu60_ctx256_temp0p6 baseline"]
    assert base["preset"].eq("baseline").all() and base[["num_gpu", "num_ctx", "temperature"]].isna().all().all()
    assert df[df["cell_id"].str.startswith("gpu80") & df["preset"].eq("chimera")]["temperature"].eq(0.8).all()
    # per-cell means, by hand from the file: tok/s = tokens ÷ eval seconds, TTFT the client's
    calls = metrics(files[0])["chimera"]["llm_calls"]
    want_tps = np.mean([c["metrics"]["tokens_generated"] / (c["metrics"]["eval_duration_ms"] / 1000) for c in calls])
    want_ttft = np.mean([c["metrics"]["ttft_ms"] for c in calls])
    comp = {r["cell"]: r for r in table(out, "comprehensive")}
    (label,) = [c for c in comp if "gpu60" in c and "chimera" in c]
    assert int(comp[label]["n"]) == 6
    assert float(comp[label]["tok/s mean"]) == pytest.approx(want_tps, abs=0.006)
    assert float(comp[label]["TTFT ms mean"]) == pytest.approx(want_ttft, abs=0.06)
    stages = [r for r in table(out, "agent_stages") if r["cell"] == label]
    assert [r["stage"] for r in stages] == ["analysis", "report", "workflow total"]
    assert [int(r["n"]) for r in stages] == [3, 3, 3]
    analysis_calls = [c for c in calls if c["stage"] == "analysis"]
    assert float(stages[0]["TTFT ms mean"]) == pytest.approx(np.mean([c["metrics"]["ttft_ms"] for c in analysis_calls]),
                                                             abs=0.06)
    md = (out / "report.md").read_text()
    assert re.search(r"^## \d+\. Imported results$", md, re.M) and "rust-single" in md
    assert not (out / "concurrency.csv").exists()          # single agents: no concurrency table


# ---------------------------------------------------------------- Rust multi-agent


def test_rust_multi_agent_concurrency_with_tr114_figures_and_no_isolated_runs(tmp_path) -> None:
    old = tmp_path / "multi"
    test_dir = generate.rust_multi(old, scenario="chimera-homo", runs=3, seed=3)
    out = tmp_path / "report"
    result = analyse(old, "--out", out)
    assert result.returncode == 0, result.stderr
    df = rows_of(old)
    assert len(df) == 3 * 2 * 2                            # runs × agents × calls
    assert df["run_kind"].eq("concurrent").all() and df["scenario"].eq("chimera_homo").all()
    assert all(sorted(ids) == [0, 1] for ids in df.groupby("run_id")["agent_id"].unique())
    assert df["temperature"].eq(0.6).all() and df["num_gpu"].eq(80).all()
    runs = [metrics(test_dir / f"run_{k}" / "metrics.json") for k in (1, 2, 3)]
    # TR114: Σ execution_time_s ÷ concurrent_wall_time_s, per run, then the mean; efficiency = that ÷ 2 × 100
    tr114 = [(r["collector"]["execution_time_s"] + r["insight"]["execution_time_s"]) / r["summary"]["concurrent_wall_time_s"]
             for r in runs]
    (row,) = table(out, "concurrency")
    assert row["agents"] == "2" and row["runs"] == "3"
    assert float(row["tr114 speedup mean"]) == pytest.approx(np.mean(tr114), abs=0.0006)
    assert float(row["tr114 efficiency % mean"]) == pytest.approx(np.mean(tr114) / 2 * 100, abs=0.006)
    assert row["speedup mean"] == "" and row["efficiency % mean"] == ""    # no isolated runs
    md = (out / "report.md").read_text()
    assert "Isolated runs: not available" in md
    stages = {r["stage"]: r for r in table(out, "agent_stages")}
    assert set(stages) == {"analysis", "report", "workflow total"}
    assert int(stages["workflow total"]["n"]) == 6           # agent-workflows
    walls = [r[a]["execution_time_s"] * 1000 for r in runs for a in ("collector", "insight")]
    assert float(stages["workflow total"]["wall ms mean"]) == pytest.approx(np.mean(walls), abs=0.06)


def _hand_run(run_dir: Path, speedup: float = 1.6) -> None:
    """A run with round numbers: collector 3 s, insight 5 s, wall 5 s → speedup 1.6, efficiency 80 %."""
    def agent(name: str, exec_s: float, tps: float, ttft: float) -> dict:
        m = {"throughput_tokens_per_sec": tps, "ttft_ms": ttft, "prompt_eval_duration_ms": 10.0,
             "eval_duration_ms": 1000.0, "load_duration_ms": 0.0, "tokens_generated": int(tps),
             "total_duration_ms": 1500.0}
        calls = [{"stage": "analysis", "prompt": "", "response": "", "metrics": m},
                 {"stage": "report", "prompt": "", "response": "", "metrics": m}]
        return {"config": {"id": name, "label": name, "model": "gemma3:latest", "base_url": "http://h:11434",
                           "options": {"num_gpu": 80}, "prompt": ""},
                "execution_time_s": exec_s,
                "result": {"llm_calls": calls, "individual_runs": [], "configuration": {"num_gpu": 80},
                           "aggregate_metrics": {"average_tokens_per_second": tps, "average_ttft_ms": ttft}}}
    summary = {"concurrency_speedup": speedup, "concurrent_wall_time_s": 5.0, "sequential_estimated_s": 8.0,
               "efficiency_percent": 80.0, "throughput_delta": 20.0, "ttft_delta_ms": 100.0,
               "resource_contention_detected": False, "collector_throughput": 100.0, "insight_throughput": 120.0,
               "collector_ttft_ms": 300.0, "insight_ttft_ms": 200.0}
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({
        "run_number": 1, "scenario": "chimera_homo", "collector": agent("collector", 3.0, 100.0, 300.0),
        "insight": agent("insight", 5.0, 120.0, 200.0), "summary": summary}))


def test_differences_from_the_original_summaries_by_hand(tmp_path) -> None:
    old = tmp_path / "multi"
    _hand_run(old / "chimera-homo" / "test001" / "run_1", speedup=1.9)     # the original says 1.9; (3 + 5) / 5 = 1.6
    (old / "chimera-homo" / "test001" / "summary.json").write_text(json.dumps({
        "scenario": "chimera_homo", "runs": [], "agent_a": {}, "agent_b": {},
        "aggregate": {"average_concurrency_speedup": 1.9, "average_efficiency": 80.0,
                      "average_throughput_delta": 20.0, "average_ttft_delta_ms": 100.0}}))
    out = tmp_path / "report"
    result = analyse(old, "--out", out)
    assert result.returncode == 0, result.stderr
    diffs = {(r["file"], r["figure"]): r for r in table(out, "import_differences")}
    assert set(diffs) == {("chimera-homo/test001/run_1/metrics.json", "summary.concurrency_speedup"),
                          ("chimera-homo/test001/summary.json", "aggregate.average_concurrency_speedup")}
    for r in diffs.values():
        assert float(r["original value"]) == 1.9 and float(r["recomputed value"]) == 1.6
    (row,) = table(out, "concurrency")
    assert float(row["tr114 speedup mean"]) == 1.6 and float(row["tr114 efficiency % mean"]) == 80.0
    assert float(row["throughput delta mean"]) == 20.0 and float(row["TTFT delta ms mean"]) == 100.0


def test_generated_tampered_figures_are_listed(tmp_path) -> None:
    old = tmp_path / "old"
    f = generate.rust_single(old / "gpu60", seed=4, tamper=True)
    test_dir = generate.python_multi(old / "py", seed=5, tamper=True)
    out = tmp_path / "report"
    result = analyse(old, "--out", out)
    assert result.returncode == 0, result.stderr
    diffs = {r["figure"]: r for r in table(out, "import_differences")}
    assert set(diffs) == {"chimera.aggregate_metrics.average_tokens_per_second", "summary.concurrency_speedup"}
    assert "imported old: 12 rust-single, 6 python-multi rows from 4 run files" in result.stdout
    assert "2 original figure(s) disagree" in result.stdout
    calls = metrics(f)["chimera"]["llm_calls"]
    raw = np.mean([c["metrics"]["tokens_generated"] / (c["metrics"]["eval_duration_ms"] / 1000) for c in calls])
    assert float(diffs["chimera.aggregate_metrics.average_tokens_per_second"]["recomputed value"]) == \
        pytest.approx(raw, rel=1e-5)
    run1 = metrics(test_dir / "run_1" / "metrics.json")
    seq = float(run1["collector_execution_time"]) + float(run1["insight_execution_time"])
    assert float(diffs["summary.concurrency_speedup"]["original value"]) == 2.5
    assert float(diffs["summary.concurrency_speedup"]["recomputed value"]) == \
        pytest.approx(seq / run1["summary"]["concurrent_wall_time"], rel=1e-5)


# ---------------------------------------------------------------- Python multi-agent


def test_python_multi_agent_rows_are_runs_and_tables_say_so(tmp_path) -> None:
    old = tmp_path / "py"
    test_dir = generate.python_multi(old, runs=3, requests=4, seed=6)
    out = tmp_path / "report"
    result = analyse(old, "--out", out)
    assert result.returncode == 0, result.stderr
    df = rows_of(old)
    assert len(df) == 3 * 2                                 # runs × agents
    assert df["aggregated_calls"].eq(4).all() and df["stage"].isna().all()
    runs = [metrics(test_dir / f"run_{k}" / "metrics.json") for k in (1, 2, 3)]
    tps = [r[a]["aggregate_metrics"]["average_tokens_per_second"] for r in runs for a in ("collector", "insight")]
    (comp,) = table(out, "comprehensive")
    assert int(comp["n"]) == 6 and float(comp["tok/s mean"]) == pytest.approx(np.mean(tps), abs=0.006)
    md = (out / "report.md").read_text()
    assert "their n counts runs, not calls" in md
    section = md.split("### Comprehensive", 1)[1].split("CSV:", 1)[0]
    assert "n counts runs, not calls" in section              # said where the n is
    (row,) = table(out, "concurrency")
    tr114 = [(float(r["collector_execution_time"]) + float(r["insight_execution_time"]))
             / r["summary"]["concurrent_wall_time"] for r in runs]
    assert float(row["tr114 speedup mean"]) == pytest.approx(np.mean(tr114), abs=0.0006)
    assert row["speedup mean"] == "" and "Isolated runs: not available" in md
    sources = table(out, "import_sources")
    assert [(r["harness"], r["rows"], r["calls"]) for r in sources] == [("python-multi", "6", "24")]


# ---------------------------------------------------------------- bad input, keeping the conversion


def test_bad_files_are_one_line_each_and_the_rest_is_imported(tmp_path) -> None:
    old = tmp_path / "old"
    generate.rust_single(old / "good", seed=7)
    bad = generate.rust_single(old / "truncated", seed=8)
    bad.write_text(bad.read_text()[:500])
    gone = generate.rust_single(old / "missing", seed=9)
    data = metrics(gone)
    del data["chimera"]["llm_calls"][1]["metrics"]["ttft_ms"]
    gone.write_text(json.dumps(data))
    (old / "other").mkdir()
    (old / "other" / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
    out = tmp_path / "report"
    result = analyse(old, "--out", out)
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 3 and "3 skipped" in result.stdout
    assert any("truncated/data/metrics.json" in ln and "not valid JSON" in ln for ln in lines)
    assert any("missing/data/metrics.json" in ln and "`chimera.llm_calls[1].metrics.ttft_ms`" in ln for ln in lines)
    assert any("other/metrics.json" in ln and "missing field" in ln for ln in lines)
    assert set(rows_of(old)["source"].str.split("/").str[0]) == {"rust-single:good"}


def test_a_folder_of_something_else_is_one_line_and_exit_2(tmp_path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    result = analyse(tmp_path / "notes")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "metrics.json" in result.stderr
    (tmp_path / "json" / "x").mkdir(parents=True)
    (tmp_path / "json" / "x" / "metrics.json").write_text("[1, 2]")
    result = analyse(tmp_path / "json")
    assert result.returncode == 2 and "x/metrics.json" in result.stderr and "nothing imported" in result.stderr


def test_the_conversion_is_kept_and_redone_when_a_file_changes(tmp_path) -> None:
    old = tmp_path / "old"
    generate.rust_single(old / "a", runs=1, seed=10)
    assert analyse(old, "--out", tmp_path / "r1").returncode == 0
    kept = old / IMPORT_DIR / TRIALS_FILE
    first = kept.stat().st_mtime_ns
    assert analyse(old, "--out", tmp_path / "r2").returncode == 0
    assert kept.stat().st_mtime_ns == first                  # unchanged files: the kept rows are read
    generate.rust_single(old / "b", runs=1, seed=11)
    assert analyse(old, "--out", tmp_path / "r3").returncode == 0
    assert len(rows_of(old)) == 2 * 2 * 2                    # a new run dir: converted again
    elsewhere = tmp_path / "kept"
    assert analyse(old, "--import-to", elsewhere, "--out", tmp_path / "r4").returncode == 0
    assert (elsewhere / "old" / TRIALS_FILE).is_file()


def test_the_import_benchmark_runs_at_tiny_size(tmp_path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks", "import", "--tiny", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["import_rows"] == 5 * 2 * 5 * 2          # folders × agents × runs × calls
    assert figures["import_5_runs_s"] > 0 and figures["import_reuse_s"] > 0


# ---------------------------------------------------------------- old and new side by side


@pytest.mark.slow
def test_old_results_beside_our_multi_agent_sweep_and_against_it(tmp_path) -> None:
    """Our multi-agent sweep (on a paced stand-in server) and an imported folder: one report, and the gate."""
    from sweep.contract import OPTION_KEYS
    from sweep.testing.standin import Script, StandIn
    from tests.sweep_cli import only_sweep, run_sweep

    with StandIn() as host:
        host.default = Script(tokens=["tok"] * 12, first_token_delay_s=0.05, token_interval_s=0.01)
        result = run_sweep("workload=multi_agent", "backend=ollama", f"backend.hosts=[{host.base_url}]",
                           "model=gemma3", "agents.count=2", "trials=3", "telemetry.enabled=false",
                           f"output_root={tmp_path / 'sweeps'}")
    assert result.returncode == 0, result.stderr
    sweep = only_sweep(tmp_path / "sweeps")
    ours = pd.read_parquet(sweep)
    first = ours.iloc[0]
    opts = {k: first[k].item() if hasattr(first[k], "item") else first[k] for k in OPTION_KEYS if pd.notna(first[k])}
    old = tmp_path / "old_results"
    generate.rust_multi(old, scenario="chimera-homo", runs=3, options_a=opts, options_b=opts, model=first["model"],
                        seed=12)

    out = tmp_path / "both"
    both = analyse(old, sweep, "--out", out)
    assert both.returncode == 0, both.stderr
    conc = {r["dataset"]: r for r in table(out, "concurrency")}
    assert set(conc) == {"old_results", sweep.name}
    assert conc["old_results"]["speedup mean"] == ""                     # no isolated runs in the old harness
    assert float(conc[sweep.name]["speedup mean"]) > 0                    # ours ran them
    assert float(conc["old_results"]["tr114 speedup mean"]) > 1 and float(conc[sweep.name]["tr114 speedup mean"]) > 0
    md = (out / "report.md").read_text()
    assert "Isolated runs: not available" in md and re.search(r"^## \d+\. Imported results$", md, re.M)
    stages = {(r["dataset"], r["stage"]) for r in table(out, "agent_stages")}
    assert {("old_results", "analysis"), (sweep.name, "analysis")} <= stages

    for new, against in ((old, sweep), (sweep, old)):
        gate = analyse(new, "--against", against)
        assert gate.returncode == 0, gate.stderr
        assert "TTFT ms" in gate.stdout and "tok/s" in gate.stdout and "not paired" not in gate.stderr
        assert "significant regression" in gate.stderr
