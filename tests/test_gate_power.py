"""Minimum detectable effect, the gate's sweep-wide test and verdicts, by hand — in-process and fast.

Each test below pins one formula or one rule a plausible slip would break (the
mutants of a mutation audit are named where a test is the one that kills them):

- the noncentrality of 80 % power is checked against a numerical integration of
  the noncentral t's definition (not scipy's nct, which the code uses);
- the gate's Δ % is (NEW − OLD) / OLD: NEW = 0.952 × OLD prints −4.8, not −5.0;
- only measured trials enter the moments (warm-ups and failures do not);
- TTFT regressions count, and each metric's better direction is respected;
- p adj is Holm over every test of the gate, and the verdict reads p adj;
- a uniform 2× slowdown over 5 cells of 3 trials fails the gate through the
  sweep-wide test although no single cell survives Holm;
- the comparison table's verdict reads p adj; its baseline comes from the same dataset;
- the interaction F of a 2×2 grid with means 10, 10, 10, 20 and within-cell
  variance 1 is 75 with df 1/8.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy import stats as sps

from analysis import brief, gate, power
from analysis.load import Loaded, combine, tidy
from analysis.tables import Options, analyse

# ---------------------------------------------------------------- power


def _power_by_integration(lam: float, df: float, alpha: float) -> float:
    """P(|Z + λ| / √(V/df) > c), V ~ χ²(df): the two-sided t-test's power from the definition."""
    c = sps.t.ppf(1 - alpha / 2, df)

    def f(u: float) -> float:                                   # u = √V ~ χ(df): a smooth density
        s = c * u / math.sqrt(df)
        return sps.chi.pdf(u, df) * (sps.norm.sf(s - lam) + sps.norm.cdf(-s - lam))

    lo, hi = sps.chi.ppf(1e-14, df), sps.chi.ppf(1 - 1e-14, df)
    return integrate.quad(f, lo, hi, limit=200, epsabs=1e-13)[0]


@pytest.mark.parametrize(("df", "alpha", "expected"), [
    (4, 0.05, 3.7611), (4, 0.025, 4.5840), (5.71005, 0.005, 5.5937), (1, 0.05, 16.3340), (1e6, 0.05, 2.8016),
    (2.78815, 0.05 / 12, 11.0283), (2.80416, 0.05 / 12, 10.9411),     # where scipy's nct.cdf(−c, df, λ) is NaN
])
def test_noncentrality_gives_80_percent_power(df: float, alpha: float, expected: float) -> None:
    """λ pinned to 4 decimals, and the power at λ integrated from the definition is 0.8."""
    lam = float(power.t_noncentrality(df, alpha)[0])
    assert lam == pytest.approx(expected, abs=1e-4)
    assert _power_by_integration(lam, df, alpha) == pytest.approx(0.8, abs=1e-6)


def test_large_df_limit_is_the_normal_formula() -> None:
    """df → ∞: λ = z(1 − α/2) + z(0.8) = 1.95996 + 0.84162."""
    assert power.t_noncentrality(1e7, 0.05)[0] == pytest.approx(1.959964 + 0.841621, abs=1e-4)


def test_mde_takes_welch_df_with_unequal_n_and_variances() -> None:
    """n 3, var 4 vs n 5, var 8.5: se² = 4/3 + 1.7 = 3.0333, df = 3.0333² / ((4/3)²/2 + 1.7²/4) = 5.71005."""
    se = math.sqrt(4 / 3 + 8.5 / 5)
    df = (4 / 3 + 1.7) ** 2 / ((4 / 3) ** 2 / 2 + 1.7**2 / 4)
    assert df == pytest.approx(5.71005, abs=1e-5)
    got = power.mde(3, 4.0, 5, 8.5, alpha=0.005)[0]
    assert got == pytest.approx(5.5937 * se, rel=1e-4)
    assert _power_by_integration(got / se, df, 0.005) == pytest.approx(0.8, abs=1e-6)
    assert np.isnan(power.mde(1, 4.0, 5, 8.5)[0]) and np.isnan(power.mde(3, 0.0, 3, 0.0)[0])


def test_power_at_the_mde_is_80_percent_at_n_3_where_the_shortcut_is_not() -> None:
    """n = 3 per side at α = 0.005 (a family of 10): Student's test at the MDE rejects 80 % of the time.

    The shortcut (t(1 − α/2) + t(0.8))·se reaches only about 73 %: this test fails the shortcut.
    """
    rng = np.random.default_rng(3)
    n, alpha, sims = 3, 0.005, 20000
    exact = float(power.mde(n, 1.0, n, 1.0, alpha)[0])
    shortcut = (sps.t.ppf(1 - alpha / 2, 4) + sps.t.ppf(0.8, 4)) * math.sqrt(2 / n)
    a = rng.normal(0, 1, (sims, n))
    noise = rng.normal(0, 1, (sims, n))
    rate = {name: (sps.ttest_ind(noise + eff, a, axis=1).pvalue < alpha).mean()
            for name, eff in (("exact", exact), ("shortcut", shortcut))}
    assert 0.785 < rate["exact"] < 0.815
    assert rate["shortcut"] < 0.76


def test_anova_mde_two_levels_is_the_pooled_t_mde_and_three_levels_have_80_percent_power() -> None:
    assert power.f_noncentrality(1, 10, 0.0125) == pytest.approx(power.t_noncentrality(10, 0.0125)[0] ** 2, rel=1e-6)
    assert power.mde_anova([6, 6], 15.8, 0.0125) == pytest.approx(
        power.t_noncentrality(10, 0.0125)[0] * math.sqrt(15.8 * 2 / 6), rel=1e-6)
    # Three levels of 5 trials, σ = 1, means −D/2, 0, +D/2 (the hardest layout of a range D): 80 % power.
    d = power.mde_anova([5, 5, 5], 1.0, 0.05)
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (8000, 3, 5)) + np.array([-d / 2, 0, d / 2])[None, :, None]
    p = sps.f_oneway(x[:, 0], x[:, 1], x[:, 2], axis=1).pvalue
    assert 0.775 < (p < 0.05).mean() < 0.825
    assert math.isnan(power.mde_anova([5], 1.0)) and math.isnan(power.mde_anova([5, 5], 0.0))


def test_family_alpha_counts_testable_p_values() -> None:
    assert power.family_alpha(0.05, np.array([0.1, np.nan, 0.2, 0.3])) == pytest.approx(0.05 / 3)
    assert power.family_alpha(0.05, np.array([np.nan])) == 0.05


# ---------------------------------------------------------------- the gate


def _loaded(label: str, cells: dict[int, tuple[list[float], list[float]]], extra: list[dict] | None = None) -> Loaded:
    """One sweep: per num_ctx, the measured tok/s and TTFT of its trials (labels differ between NEW and OLD)."""
    rows = []
    for num_ctx, (tps, ttft) in cells.items():
        for trial, (t, f) in enumerate(zip(tps, ttft)):
            rows.append(dict(sweep_id=label, cell_id=f"{label} ctx{num_ctx}", preset="chimera", model="m",
                             backend="embedded", workload="report", num_ctx=num_ctx, trial=trial, warmup=False,
                             status="ok", throughput_tok_s=t, ttft_ms=f, eval_count=64))
    df, fixed = combine([tidy(pd.DataFrame(rows + (extra or [])), label)])
    return Loaded(df, [], {}, fixed)


def _rows(result: gate.GateResult) -> dict[tuple[int | str, str], pd.Series]:
    """(num_ctx or 'sweep-wide', metric) → row."""
    out = {}
    for _, r in result.table.iterrows():
        key = "sweep-wide" if r["test"] == gate.SWEEP_WIDE else int(r["cell"].split("num_ctx=")[1])
        out[(key, r["metric"])] = r
    return out


def _holm(p: list[float]) -> list[float]:
    """Holm by hand: sort, multiply the i-th smallest by (m − i), running maximum, cap at 1."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p) - rank) * p[i])
        out[i] = min(running, 1.0)
    return out


OLD = {256: ([48.0, 50.0, 52.0], [39.0, 40.0, 41.0]), 512: ([38.0, 40.0, 42.0], [49.0, 50.0, 51.0])}


def test_delta_pct_is_relative_to_old() -> None:
    """NEW = 0.952 × OLD everywhere: Δ % = −4.8 in every row (dividing by NEW's mean would give −5.04)."""
    new = {k: ([0.952 * v for v in tps], [0.952 * v for v in ttft]) for k, (tps, ttft) in OLD.items()}
    result = gate.compare(_loaded("NEW", new), _loaded("OLD", OLD))
    rows = _rows(result)
    assert len(rows) == 6
    for r in rows.values():
        assert r["Δ %"] == pytest.approx(-4.8, abs=1e-9)
        if r["test"] == "cell":
            assert r["Δ % CI95 lo"] < -4.8 < r["Δ % CI95 hi"]
    # Every ratio is exactly 0.952: no spread across pairs, so the sweep-wide t-test is undefined.
    assert rows[("sweep-wide", "tok/s")]["verdict"] == "insufficient data"
    assert rows[("sweep-wide", "tok/s")]["mean old"] == pytest.approx(math.sqrt(50 * 40))


def test_only_measured_trials_enter_the_moments() -> None:
    """A warm-up (tok/s 1, TTFT 5000) and a failed trial in OLD's cell change nothing."""
    extra = [dict(sweep_id="OLD", cell_id="OLD ctx256", preset="chimera", model="m", backend="embedded",
                  workload="report", num_ctx=256, trial=t, warmup=w, status=s, throughput_tok_s=1.0, ttft_ms=5000.0,
                  eval_count=64) for t, w, s in ((9, True, "ok"), (10, False, "timeout"))]
    result = gate.compare(_loaded("NEW", OLD), _loaded("OLD", OLD, extra))
    r = _rows(result)[(256, "tok/s")]
    assert (r["n old"], r["mean old"], r["mean new"], r["Δ %"]) == (3, 50.0, 50.0, 0.0)
    assert _rows(result)[(256, "TTFT ms")]["mean old"] == 40.0


def test_direction_per_metric_and_ttft_regressions() -> None:
    """Five cells, variance 1 per cell; ±20 % changes in tok/s and TTFT, two of them worse.

    tok/s +20 % and TTFT −20 % are improvements; tok/s −20 % and TTFT +20 % are regressions.
    Welch per cell: tok/s Δ ±10 → t = 10 / √(2/3) = 12.25; TTFT Δ ±8 → t = 9.80, df 4; p ≤ 0.0007, and
    Holm over the 12 tests keeps them below 0.05.
    """
    old = {k: ([49.0, 50.0, 51.0], [39.0, 40.0, 41.0]) for k in (1, 2, 3, 4, 5)}
    new = dict(old)
    new[1] = ([49.0, 50.0, 51.0], [47.0, 48.0, 49.0])          # TTFT +20 %: worse
    new[2] = ([59.0, 60.0, 61.0], [39.0, 40.0, 41.0])          # tok/s +20 %: better
    new[3] = ([39.0, 40.0, 41.0], [39.0, 40.0, 41.0])          # tok/s −20 %: worse
    new[4] = ([49.0, 50.0, 51.0], [31.0, 32.0, 33.0])          # TTFT −20 %: better
    result = gate.compare(_loaded("NEW", new), _loaded("OLD", old))
    rows = _rows(result)
    expected = {(1, "TTFT ms"): ("REGRESSION", 20.0), (2, "tok/s"): ("better", 20.0),
                (3, "tok/s"): ("REGRESSION", -20.0), (4, "TTFT ms"): ("better", -20.0)}
    for key, (verdict, pct) in expected.items():
        assert (rows[key]["verdict"], round(rows[key]["Δ %"], 9)) == (verdict, pct), key
    assert sps.ttest_ind([47, 48, 49], [39, 40, 41], equal_var=False).pvalue * 12 < 0.05
    assert result.regressions == 2 and result.exit_code == gate.REGRESSION
    # Past the minimum only: the same data with --min-delta-pct 25 passes ("slower, below the minimum").
    relaxed = gate.compare(_loaded("NEW", new), _loaded("OLD", old), min_delta_pct=25)
    assert relaxed.regressions == 0 and _rows(relaxed)[(1, "TTFT ms")]["verdict"] == "slower, below the minimum"


# NEW 2× slower everywhere, 5 cells × 3 trials, noisy (tok/s 40/50/60 → about 20/25/30).
FACTORS = (0.48, 0.50, 0.52, 0.49, 0.51)
SLOW_OLD = {k: ([40.0, 50.0, 60.0], [30.0, 40.0, 50.0]) for k in (1, 2, 3, 4, 5)}
SLOW_NEW = {k: ([v * f for v in (40.0, 52.0, 58.0)], [v / f for v in (32.0, 40.0, 46.0)])
            for k, f in zip(SLOW_OLD, FACTORS)}


def test_a_uniform_2x_slowdown_fails_through_the_sweep_wide_test() -> None:
    """No cell survives Holm over 12 tests (raw p 0.01–0.05), the geometric mean over the 5 pairs does.

    Expected values come from scipy's own tests on the raw trials: Welch per cell, a one-sample t-test of
    the 5 log ratios of the cell means; Holm by hand over the 12 p-values.
    """
    result = gate.compare(_loaded("NEW", SLOW_NEW), _loaded("OLD", SLOW_OLD))
    rows = _rows(result)
    keys, p = [], []
    for label, col in (("tok/s", 0), ("TTFT ms", 1)):
        ratios = []
        for k in SLOW_OLD:
            o, n = np.array(SLOW_OLD[k][col]), np.array(SLOW_NEW[k][col])
            keys.append((k, label))
            p.append(sps.ttest_ind(n, o, equal_var=False).pvalue)
            ratios.append(math.log(n.mean() / o.mean()))
        keys.append(("sweep-wide", label))
        one = sps.ttest_1samp(ratios, 0.0)
        p.append(one.pvalue)
        ci = one.confidence_interval()
        wide = rows[("sweep-wide", label)]
        assert wide["Δ %"] == pytest.approx(math.expm1(np.mean(ratios)) * 100, rel=1e-12)
        assert (wide["Δ % CI95 lo"], wide["Δ % CI95 hi"]) == pytest.approx(
            (math.expm1(ci.low) * 100, math.expm1(ci.high) * 100), rel=1e-9)
    for key, raw, adj in zip(keys, p, _holm(p)):
        assert (rows[key]["p"], rows[key]["p adj"]) == pytest.approx((raw, adj), rel=1e-9), key
    cells = [rows[k] for k in keys if k[0] != "sweep-wide"]
    assert all(r["p"] < 0.05 <= r["p adj"] for r in cells)                    # significant raw, not after Holm
    assert all(r["verdict"] == "no significant change" for r in cells)
    assert all(r["MDE %"] > 40 for r in cells)                                  # a cell could not see −50 %
    assert rows[("sweep-wide", "tok/s")]["verdict"] == rows[("sweep-wide", "TTFT ms")]["verdict"] == "REGRESSION"
    assert -52 < rows[("sweep-wide", "tok/s")]["Δ %"] < -49
    assert result.exit_code == gate.REGRESSION and result.regressions == 2


def _quiet(seed: int) -> dict[int, tuple[list[float], list[float]]]:
    rng = np.random.default_rng(seed)
    return {k: (list(50 * rng.lognormal(0, 0.02, 3)), list(40 * rng.lognormal(0, 0.02, 3))) for k in (1, 2, 3, 4, 5)}


def test_inconclusive_when_no_test_could_detect_the_minimum() -> None:
    """Same server twice, 2 % noise, n = 3: a 1 % change is below every MDE (exit 3); 8 % is not (exit 0).

    By hand, at α / 12 (12 tests): the sweep-wide MDE from the 5 log ratios (se of their mean, λ at df 4,
    MDE % = exp(λ·se) − 1), each cell's Welch MDE from its two sample variances (% of OLD's mean); a metric
    is covered by its keenest test, and the message names the metric whose keenest test is the bluntest.
    """
    new, old = _quiet(2), _quiet(1)
    result = gate.compare(_loaded("NEW", new), _loaded("OLD", old), min_delta_pct=1)
    assert result.regressions == 0 and result.exit_code == gate.INCONCLUSIVE
    rows = _rows(result)
    level = 0.05 / 12
    best = {}
    for label, col in (("tok/s", 0), ("TTFT ms", 1)):
        r = [math.log(np.mean(new[k][col]) / np.mean(old[k][col])) for k in range(1, 6)]
        se = np.std(r, ddof=1) / math.sqrt(5)
        wide = math.expm1(power.t_noncentrality(4, level)[0] * se) * 100
        assert rows[("sweep-wide", label)]["MDE %"] == pytest.approx(wide, rel=1e-9)
        cells = []
        for k in range(1, 6):
            o, n = np.array(old[k][col]), np.array(new[k][col])
            cells.append(power.mde(3, o.var(ddof=1), 3, n.var(ddof=1), level)[0] / o.mean() * 100)
            assert rows[(k, label)]["MDE %"] == pytest.approx(cells[-1], rel=1e-9)
        best[label] = min([wide, *cells])
    worst = max(best, key=best.get)
    assert result.inconclusive == (f"inconclusive: could not detect a 1 % change at this n (MDE {best[worst]:.1f} %, "
                                   f"{worst}) — run more trials or raise --min-delta-pct")
    assert result.verdict(1) == result.inconclusive
    assert max(best.values()) < 8
    passed = gate.compare(_loaded("NEW", new), _loaded("OLD", old), min_delta_pct=8)
    assert passed.exit_code == gate.PASS
    assert passed.verdict(8) == (f"0 significant regression(s) ≥ 8 % (MDE tok/s {best['tok/s']:.1f} %, "
                                 f"TTFT ms {best['TTFT ms']:.1f} %)")
    # No size asked (0 %): nothing to be blind to.
    assert gate.compare(_loaded("NEW", new), _loaded("OLD", old), min_delta_pct=0).exit_code == gate.PASS


def test_gate_delta_pct_interval_stays_above_minus_100() -> None:
    """OLD 10/30/50 vs NEW 2/3/4 tok/s: Δ −90 %; the Δ CI / OLD mean would reach −255 %, the log ratio does not."""
    old = {1: ([10.0, 30.0, 50.0], [40.0, 41.0, 42.0]), 2: OLD[256]}
    new = {1: ([2.0, 3.0, 4.0], [40.0, 41.0, 42.0]), 2: OLD[256]}
    r = _rows(gate.compare(_loaded("NEW", new), _loaded("OLD", old)))[(1, "tok/s")]
    a, b = 1.0 / (3 * 3.0**2), 400.0 / (3 * 30.0**2)                 # Var(log mean) of NEW, OLD
    dof = (a + b) ** 2 / (a**2 / 2 + b**2 / 2)
    half = sps.t.ppf(0.975, dof) * math.sqrt(a + b)
    assert (r["Δ % CI95 lo"], r["Δ % CI95 hi"]) == pytest.approx(
        (math.expm1(math.log(0.1) - half) * 100, math.expm1(math.log(0.1) + half) * 100), rel=1e-9)
    assert r["Δ %"] == pytest.approx(-90.0)
    assert -100 < r["Δ % CI95 lo"] < r["Δ %"] < r["Δ % CI95 hi"]


# ---------------------------------------------------------------- baseline vs chimera


def _bvc_rows(dataset: str, base: tuple[list[float], list[float]], chim: tuple[list[float], list[float]]) -> list[dict]:
    rows = []
    for preset, (tps, ttft) in (("baseline", base), ("chimera", chim)):
        for trial, (t, f) in enumerate(zip(tps, ttft)):
            rows.append(dict(sweep_id=dataset, cell_id=f"{preset} m" + (" num_ctx=512" if preset == "chimera" else ""),
                             preset=preset, model="m", backend="ollama", workload="report",
                             num_ctx=512 if preset == "chimera" else None, trial=trial, warmup=False, status="ok",
                             throughput_tok_s=t, ttft_ms=f, eval_count=100))
    return rows


def test_comparison_verdict_reads_p_adj_and_states_the_mde() -> None:
    """Baseline 10/12/14 vs chimera 15/17/19 tok/s, TTFT 50/52/54 vs 45/47/49 ms.

    Each: Δ ±5, se = √(4/3 + 4/3) = 1.633, t = 3.062, df 4 → p = 0.0376 (< 0.05); Holm over 2 → 0.0752:
    no significant difference.  MDE at α/2 = 0.025, df 4: λ = 4.5840 → 7.486 tok/s = 62.4 % of 12 and
    7.486 ms = 14.4 % of 52.
    """
    rows = _bvc_rows("S", ([10.0, 12.0, 14.0], [50.0, 52.0, 54.0]), ([15.0, 17.0, 19.0], [45.0, 47.0, 49.0]))
    df, _ = combine([tidy(pd.DataFrame(rows), "S")])
    table = analyse(df, Options()).get("baseline_vs_chimera")
    assert table is not None
    f = table.frame.set_index("metric")
    p = 2 * sps.t.sf(5 / math.sqrt(8 / 3), 4)
    assert p == pytest.approx(0.0376, abs=1e-4)
    for metric, ref in (("tok/s", 12.0), ("TTFT ms", 52.0)):
        assert (f.loc[metric, "p"], f.loc[metric, "p adj"]) == pytest.approx((p, 2 * p), rel=1e-9)
        assert f.loc[metric, "verdict"] == "no significant difference"
        assert f.loc[metric, "MDE"] == pytest.approx(4.5840 * math.sqrt(8 / 3), abs=2e-4)
        assert f.loc[metric, "MDE %"] == pytest.approx(4.5840 * math.sqrt(8 / 3) / ref * 100, abs=2e-3)
    assert "α / 2 = 0.025" in table.note
    # The terminal summary says it too, next to the verdict.
    lines = brief.summary_lines(Loaded(df, [], {}), analyse(df, Options()))
    assert any(line.endswith("p adj 0.0752  no significant difference (MDE 62.4 %)") for line in lines), lines


def test_baseline_comes_from_the_same_dataset() -> None:
    """Two datasets, each with its baseline; B's has more trials. A's chimera is compared with A's baseline.

    A: baseline 10/12/14, chimera 20/22/24 → Δ +10 tok/s; B: baseline 30…34 (5 trials), chimera 40/41/42 → Δ +9.
    Against B's baseline, A's chimera would show Δ −10.
    """
    a = _bvc_rows("A", ([10.0, 12.0, 14.0], [50.0, 52.0, 54.0]), ([20.0, 22.0, 24.0], [45.0, 47.0, 49.0]))
    b = _bvc_rows("B", ([30.0, 31.0, 32.0, 33.0, 34.0], [60.0] * 5), ([40.0, 41.0, 42.0], [61.0, 62.0, 63.0]))
    df, _ = combine([tidy(pd.DataFrame(a), "A"), tidy(pd.DataFrame(b), "B")])
    table = analyse(df, Options()).get("baseline_vs_chimera")
    assert table is not None
    f = table.frame[table.frame["metric"] == "tok/s"].set_index("dataset")
    assert (f.loc["A", "Δ"], f.loc["A", "mean base"], f.loc["A", "n base"]) == (10.0, 12.0, 3)
    assert (f.loc["B", "Δ"], f.loc["B", "mean base"], f.loc["B", "n base"]) == (9.0, 32.0, 5)


# ---------------------------------------------------------------- sensitivity


def _grid() -> pd.DataFrame:
    """2×2 num_ctx × num_thread, tok/s means 10, 10, 10, 20, each cell mean ± 1 (variance 1), TTFT 50 ± 1."""
    rows = []
    for (ctx, threads), mean in {(512, 1): 10, (512, 2): 10, (2048, 1): 10, (2048, 2): 20}.items():
        for trial, d in enumerate((-1.0, 0.0, 1.0)):
            rows.append(dict(sweep_id="S", cell_id=f"chimera ctx{ctx} t{threads}", preset="chimera", model="m",
                             backend="ollama", workload="report", num_ctx=ctx, num_thread=threads, trial=trial,
                             warmup=False, status="ok", throughput_tok_s=mean + d, ttft_ms=50.0 + d, eval_count=10))
    df, _ = combine([tidy(pd.DataFrame(rows), "S")])
    return df


def test_interaction_f_of_a_2x2_grid_by_hand() -> None:
    """Contrast 20 − 10 − 10 + 10 = 10; SS(A×B) = n·10²/4 = 75 (n = 3), df 1; MSE = 1 on 12 − 4 = 8 df: F = 75."""
    analysis = analyse(_grid(), Options())
    inter = analysis.get("sensitivity_interactions")
    assert inter is not None
    row = inter.frame.set_index("metric").loc["tok/s"]
    assert (row["parameter A"], row["parameter B"]) == ("num_ctx", "num_thread")
    assert (row["F"], row["df1"], row["df2"]) == pytest.approx((75.0, 1.0, 8.0), rel=1e-12)
    assert row["p"] == pytest.approx(sps.f.sf(75, 1, 8), rel=1e-9)
    assert row["combinations"] == 4 and row["interaction"] == "significant"


def test_sensitivity_mde_by_hand() -> None:
    """num_ctx levels (pooled over num_thread): 512 → 9,10,11,9,10,11 (var 0.8); 2048 → 9,10,11,19,20,21 (var 30.8).

    MSE = (5·0.8 + 5·30.8) / 10 = 15.8; 4 testable p (2 parameters × 2 metrics): α/4 = 0.0125; two levels of 6,
    so the ANOVA's MDE is the pooled t-test's: λ(df 10, α 0.0125) · √(15.8 · (1/6 + 1/6)); % of the lower mean 10.
    The max Δ (5) is below it: 'not significant' with an MDE of 9.1 tok/s.
    """
    summary = analyse(_grid(), Options()).get("sensitivity_summary")
    assert summary is not None
    row = summary.frame.set_index("parameter").loc["num_ctx"]
    expected = power.t_noncentrality(10, 0.0125)[0] * math.sqrt(15.8 * 2 / 6)
    assert row["tok/s MDE"] == pytest.approx(expected, rel=1e-6)
    assert row["tok/s MDE %"] == pytest.approx(expected / 10 * 100, rel=1e-6)
    assert round(row["tok/s MDE"], 1) == 9.1
    assert (row["tok/s max Δ"], row["tok/s effect"]) == (5.0, "not significant")
    assert "MDE" in summary.note and "α / 4" in summary.note


def test_large_mde_in_units_raises_no_warning() -> None:
    """TTFT 1–9 s in a cell: its MDE is thousands of ms; only the sweep-wide rows take exp (no overflow warning)."""
    old = {1: ([48.0, 50.0, 52.0], [1000.0, 5000.0, 9000.0]), 2: OLD[256]}
    new = {1: ([48.0, 50.0, 52.0], [2000.0, 6000.0, 12000.0]), 2: OLD[512]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = _rows(gate.compare(_loaded("NEW", new), _loaded("OLD", old)))
    assert r[(1, "TTFT ms")]["MDE"] > 709 and np.isfinite(r[(1, "TTFT ms")]["MDE %"])
