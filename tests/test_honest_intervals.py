"""Honest intervals, minimum detectable effect, client-side share and the offload flag, by hand.

Hand values:

- log-t (modified Cox) on 100, 200, 400 ms: logs have mean ln 200 and s² = (ln 2)², so the interval is
  exp(ln 200 + s²/2 ± t(.975, 2)·√(s²/3 + s⁴/4)) = 34.1 … 1895 ms.
- MDE of the report fixture's throughput (baseline 10/12/14, chimera 20/22/24 tok/s): se = √(4/3 + 4/3) =
  1.633, Welch df = 4, two comparisons (tok/s, TTFT) so α / 2 = 0.025: the noncentrality with 80 % power of a
  two-sided t-test at df 4 and α 0.025 is λ = 4.584 (checked by integrating the noncentral t's definition in
  test_gate_power.py), MDE = λ·se = 7.49 tok/s = 62.4 % of 12.
- Client share: e2e 600 ms, server total 500 ms → client 100 ms = 16.7 %; TTFT 100 ms with load 10 +
  prompt eval 60 → client 30 ms = 30 %.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import intervals, offload, power, stats
from tests.test_analysis_report import _csv, _rows

ROOT = Path(__file__).resolve().parent.parent


def _analyse(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "analysis", *map(str, args), "--no-figures"], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_method_is_chosen_per_metric_in_one_place() -> None:
    assert intervals.method_for("ttft_ms") == "log-t"
    assert intervals.method_for("itl_ms_p99") == "log-t"
    assert intervals.method_for("load_duration_ms") == "log-t"
    assert intervals.method_for("throughput_tok_s") == "t"
    assert intervals.method_for("ttft_ms", bootstrap=True) == "bootstrap-bca"
    assert intervals.method_for("throughput_tok_s", True, "percentile") == "bootstrap-percentile"


def test_log_t_interval_by_hand() -> None:
    s2 = math.log(2) ** 2
    t = 4.302652729911275                       # t(.975, 2)
    half = t * math.sqrt(s2 / 3 + s2**2 / 4)
    lo, hi = intervals.mean_interval(np.array([100.0, 200.0, 400.0]), "log-t")
    assert lo == pytest.approx(math.exp(math.log(200) + s2 / 2 - half))
    assert hi == pytest.approx(math.exp(math.log(200) + s2 / 2 + half))
    assert (round(lo, 1), round(hi)) == (34.1, 1895)


def test_log_t_covers_a_log_normal_mean_where_t_does_not() -> None:
    """Coverage on skewed data (σ = 1 on the log scale, n = 5): t falls well short of 95 %, log-t does not."""
    rng = np.random.default_rng(7)
    true = 100 * math.exp(0.5)
    hits = {"t": 0, "log-t": 0}
    for _ in range(1500):
        x = 100 * np.exp(rng.normal(0, 1.0, 5))
        for m in hits:
            lo, hi = intervals.mean_interval(x, m)
            hits[m] += lo <= true <= hi
    assert hits["t"] / 1500 < 0.88
    assert 0.92 < hits["log-t"] / 1500 < 0.98


def _tr111_like(path: Path) -> Path:
    """Heavy-tailed TTFT like TR111_v2: each cell's first call carries a ~4.8 s reload, the rest ~100-300 ms."""
    rng = np.random.default_rng(111)
    rows = []
    for preset, gpus in (("baseline", [None]), ("chimera", [60, 80, 120])):
        for num_gpu in gpus:
            for num_ctx in ([None] if preset == "baseline" else [256, 512, 1024]):
                for trial in range(5):
                    ttft = 4800.0 + rng.normal(0, 200) if trial == 0 else float(rng.lognormal(math.log(150), 0.5))
                    rows.append(dict(
                        sweep_id="TR111", preset=preset, model="gemma3:latest", backend="ollama",
                        workload="report", num_gpu=num_gpu, num_ctx=num_ctx, trial=trial, status="ok",
                        ttft_ms=ttft, throughput_tok_s=float(rng.normal(100, 3)), eval_count=100,
                        cell_id=f"{preset} num_gpu={num_gpu} num_ctx={num_ctx}",
                    ))
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_no_printed_latency_interval_is_negative_on_heavy_tailed_data(tmp_path: Path) -> None:
    data = pd.read_csv(_tr111_like(tmp_path / "tr111.csv"))
    # The old Student-t interval does go negative on this fixture (so this test can fail).
    t_lows = [stats.describe(g["ttft_ms"].to_numpy())["ci_lo"] for _, g in data.groupby("cell_id")]
    assert min(t_lows) < 0
    result = _analyse(tmp_path / "tr111.csv", "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    checked = 0
    for name in ("comprehensive", "rank_ttft", "sensitivity_levels"):
        for row in _csv(tmp_path / "out" / f"{name}.csv"):
            for col, value in row.items():
                if col.startswith("TTFT") and "CI95" in col and value:
                    assert float(value) > 0, (name, row["cell"] if "cell" in row else row, col, value)
                    checked += 1
    assert checked >= 2 * 10 + 2 * 5
    assert "TTFT ms t on the log scale" in (tmp_path / "out" / "report.md").read_text()
    # Every mean lies inside its own interval.
    for row in _csv(tmp_path / "out" / "comprehensive.csv"):
        assert float(row["TTFT ms CI95 lo"]) < float(row["TTFT ms mean"]) < float(row["TTFT ms CI95 hi"])


@pytest.mark.slow
def test_a_throughput_interval_that_would_cross_zero_takes_the_log_scale(tmp_path: Path) -> None:
    """tok/s 2, 3, 12: Student t gives a negative lower bound; the printed one is log-t (positive)."""
    noisy = [2.0, 3.0, 12.0]
    t_lo = stats.describe(np.array(noisy))["ci_lo"]
    assert t_lo < 0                                         # so this test can fail
    rows = [r for r in _rows() if r["preset"] == "baseline"]
    for r, tps in zip(rows, noisy):
        r["throughput_tok_s"] = tps
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    assert _analyse(tmp_path / "t.csv", "--out", tmp_path / "out", cwd=tmp_path).returncode == 0
    (row,) = _csv(tmp_path / "out" / "comprehensive.csv")
    lo, hi = intervals.mean_interval(np.array(noisy), "log-t")
    assert float(row["tok/s CI95 lo"]) == pytest.approx(lo, rel=1e-2) and lo > 0
    assert float(row["tok/s CI95 hi"]) == pytest.approx(hi, rel=1e-2)
    assert "t on the log scale for a cell whose t-interval would cross 0" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_minimum_detectable_effect_by_hand_and_in_the_table(tmp_path: Path) -> None:
    se = math.sqrt(4 / 3 + 4 / 3)
    assert power.mde(3, 4.0, 3, 4.0, alpha=0.025)[0] == pytest.approx(4.583956 * se, rel=1e-6)
    pd.DataFrame(_rows()).to_csv(tmp_path / "t.csv", index=False)
    assert _analyse(tmp_path / "t.csv", "--out", tmp_path / "out", cwd=tmp_path).returncode == 0
    tps = {r["metric"]: r for r in _csv(tmp_path / "out" / "baseline_vs_chimera.csv")}["tok/s"]
    assert (tps["MDE"], tps["MDE %"]) == ("7.49", "62.4")


def test_power_at_the_minimum_detectable_effect_is_about_80_percent() -> None:
    """Simulate Welch tests at a true difference of one MDE: about 80 % of them reject at α = 0.05."""
    rng = np.random.default_rng(3)
    n, sd = 20, 1.0
    effect = float(power.mde(n, sd**2, n, sd**2)[0])
    sims = 2000
    a = rng.normal(0, sd, (sims, n))
    b = rng.normal(effect, sd, (sims, n))
    p = stats.welch(n, a.mean(1), a.var(1, ddof=1), n, b.mean(1), b.var(1, ddof=1))["p"]
    assert 0.76 < (p < 0.05).mean() < 0.84


def test_client_side_share_per_cell(tmp_path: Path) -> None:
    rows = []
    for trial in range(3):
        rows.append(dict(sweep_id="S", cell_id="chimera m", preset="chimera", model="m", trial=trial, status="ok",
                         throughput_tok_s=50.0 + trial, ttft_ms=100.0, e2e_ms=600.0, total_duration_ms=500.0,
                         load_duration_ms=10.0, prompt_eval_duration_ms=60.0, eval_count=10))
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    assert _analyse(tmp_path / "t.csv", "--out", tmp_path / "out", cwd=tmp_path).returncode == 0
    (row,) = _csv(tmp_path / "out" / "client_side.csv")
    assert (row["client e2e ms mean"], row["client e2e %"]) == ("100.00", "16.7")
    assert (row["client TTFT ms mean"], row["client TTFT %"]) == ("30.00", "30.0")
    assert "9. Client-side share" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("num_gpu, num_ctx, frac, ctx, layers, flag", [
    (80, 512, 0.0, 512, np.nan, "CPU only: num_gpu=80 but 0 % in VRAM"),
    (80, 512, 1.0, 512, np.nan, "ok"),
    (10, 512, 0.1, 512, 26, "partial offload: 10% in VRAM, num_gpu=10 asks ≈37%"),
    (10, 512, 0.35, 512, 26, "ok"),
    (0, 512, 0.5, 512, np.nan, "50% in VRAM although num_gpu=0"),
    (np.nan, 512, 0.0, 2048, np.nan, "context_length 2048 ≠ num_ctx 512"),
    (np.nan, np.nan, 0.0, 32768, np.nan, "ok"),
])
def test_offload_flag(num_gpu: float, num_ctx: float, frac: float, ctx: float, layers: float, flag: str) -> None:
    assert offload.flag_one(num_gpu, num_ctx, 1e9, frac, ctx, layers) == flag


def test_offload_flag_sits_next_to_the_cell_in_every_table(tmp_path: Path) -> None:
    rows = _rows()
    for r in rows:
        r.update(size=300e6, size_vram=0.0, context_length=512 if r["preset"] == "chimera" else 4096,
                 num_gpu=80 if r["preset"] == "chimera" else None)
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    assert _analyse(tmp_path / "t.csv", "--out", tmp_path / "out", cwd=tmp_path).returncode == 0
    for name in ("comprehensive", "rank_throughput", "rank_ttft", "baseline_vs_chimera", "run_order"):
        table = _csv(tmp_path / "out" / f"{name}.csv")
        cols = list(table[0])
        assert cols[cols.index("cell") + 1] == "offload", name
        flags = {r["cell"]: r["offload"] for r in table}
        assert flags.get("chimera", "CPU only: num_gpu=80 but 0 % in VRAM").startswith("CPU only"), name
        assert flags.get("baseline", "ok") == "ok", name


def test_a_relative_change_interval_never_reaches_minus_100_pct() -> None:
    """Noisy baseline (10, 30, 50) vs chimera (2, 3, 4) tok/s: Δ CI / baseline mean would print about −255 %.

    Both means are positive, so chimera / baseline > 0: the Δ % CI is the delta-method interval of the
    log ratio of means (hand-computed here), and the Δ CI in units keeps Welch.
    """
    from analysis.load import combine, tidy
    from analysis.tables import Options, analyse
    from tests.test_analysis_report import _rows

    rows = _rows()
    tps = {("baseline", 0): 10.0, ("baseline", 1): 30.0, ("baseline", 2): 50.0,
           ("chimera", 0): 2.0, ("chimera", 1): 3.0, ("chimera", 2): 4.0}
    for row in rows:
        if not row["warmup"] and row["status"] == "ok":
            row["throughput_tok_s"] = tps[(row["preset"], row["trial"])]
    df, _ = combine([tidy(pd.DataFrame(rows), "S")])
    table = analyse(df, Options()).get("baseline_vs_chimera")
    assert table is not None
    row = table.frame.set_index("metric").loc["tok/s"]
    a, b = 1.0 / (3 * 3.0**2), 400.0 / (3 * 30.0**2)              # Var(log mean) of chimera, baseline
    dof = (a + b) ** 2 / (a**2 / 2 + b**2 / 2)
    half = scipy_stats.t.ppf(0.975, dof) * np.sqrt(a + b)
    expected = ((np.exp(np.log(0.1) - half) - 1) * 100, (np.exp(np.log(0.1) + half) - 1) * 100)
    assert (row["Δ % CI95 lo"], row["Δ % CI95 hi"]) == pytest.approx(expected, rel=1e-9)
    assert -100 < row["Δ % CI95 lo"] < row["Δ %"] == pytest.approx(-90.0)
    assert row["Δ CI95 lo"] < -30                                   # the Δ in units: Welch, unchanged
    assert "log ratio of means" in table.note
