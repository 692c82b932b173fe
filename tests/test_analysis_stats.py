"""analysis.stats against hand-computed values and scipy on small known data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import stats

T_975_2 = 4.302652729911275  # t quantile, 2 df


def test_describe_hand_values():
    d = stats.describe([10, 12, 14])
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(12.0)
    assert d["sd"] == pytest.approx(2.0)
    assert d["cv_pct"] == pytest.approx(16.6667, abs=1e-4)
    half = T_975_2 * 2 / math.sqrt(3)
    assert half == pytest.approx(4.9683, abs=1e-4)
    assert d["ci_lo"] == pytest.approx(12 - half)
    assert d["ci_hi"] == pytest.approx(12 + half)


def test_describe_population_sd_keeps_sample_ci():
    d = stats.describe([10, 12, 14], ddof=0)
    assert d["sd"] == pytest.approx(math.sqrt(8 / 3))
    assert d["cv_pct"] == pytest.approx(math.sqrt(8 / 3) / 12 * 100)
    assert d["ci_hi"] == pytest.approx(12 + T_975_2 * 2 / math.sqrt(3))  # CI still uses the sample sd


def test_describe_degenerate():
    d = stats.describe([5.0])
    assert d["n"] == 1 and d["mean"] == 5.0
    assert math.isnan(d["sd"]) and math.isnan(d["ci_lo"])
    assert stats.describe([np.nan, 3.0, 5.0])["n"] == 2


def test_t_halfwidth_matches_scipy_interval():
    x = np.array([3.1, 4.7, 5.0, 2.2, 8.9, 4.4, 6.1])
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    half = stats.t_halfwidth(x.std(ddof=1), len(x))
    assert x.mean() - half == pytest.approx(lo)
    assert x.mean() + half == pytest.approx(hi)


def test_group_moments_and_combine_are_exact():
    rng = np.random.default_rng(3)
    values = pd.Series(rng.normal(50, 5, 60))
    cell = pd.Series(np.repeat(np.arange(6), 10))
    level = {0: "a", 1: "a", 2: "b", 3: "b", 4: "b", 5: "c"}
    mom = stats.group_moments(values, cell)
    mom["level"] = mom.index.map(level)
    comb = stats.combine_moments(mom, "level")
    direct = values.groupby(cell.map(level)).agg(["count", "mean", "var"])
    for lv in "abc":
        assert comb.loc[lv, "n"] == direct.loc[lv, "count"]
        assert comb.loc[lv, "mean"] == pytest.approx(direct.loc[lv, "mean"])
        assert comb.loc[lv, "m2"] / (comb.loc[lv, "n"] - 1) == pytest.approx(direct.loc[lv, "var"])


def test_moments_summary_matches_describe():
    mom = pd.DataFrame({"n": [3], "mean": [12.0], "m2": [8.0]})
    s = stats.moments_summary(mom).iloc[0]
    d = stats.describe([10, 12, 14])
    for k in ("mean", "sd", "cv_pct", "ci_lo", "ci_hi"):
        assert s[k] == pytest.approx(d[k])
    assert s["var"] == pytest.approx(4.0)


def test_welch_hand_values():
    """Unequal n and variances, so Student's pooled test gives other numbers (this test fails it).

    x = 10, 12, 14 (n 3, mean 12, s² 4); y = 20, 21, 22, 25, 27 (n 5, mean 23, s² 34/4 = 8.5).
    se² = 4/3 + 8.5/5 = 3.03333, se = 1.741647; t = 11 / se = 6.315862;
    df = 3.03333² / ((4/3)² / 2 + 1.7² / 4) = 9.201111 / 1.611389 = 5.710050.
    (Student: pooled s² = (2·4 + 4·8.5) / 6 = 7, se = √(7·(1/3 + 1/5)) = 1.932184, t = 5.6930, df 6.)
    t(.975, 5.71005) = 2.4773 (between the table's 2.5706 at df 5 and 2.4469 at df 6); p = 2·P(T > 6.3159) = 0.00089
    (Student's: 0.00127).
    """
    w = stats.welch(3, 12, 4, 5, 23, 8.5)
    se = math.sqrt(4 / 3 + 8.5 / 5)
    assert se == pytest.approx(1.741647, abs=1e-6)
    assert w["diff"][0] == 11
    assert w["df"][0] == pytest.approx(5.710050, abs=1e-6)
    assert w["t"][0] == pytest.approx(6.315862, abs=1e-6)
    t975 = sps.t.ppf(0.975, 5.710050)
    assert t975 == pytest.approx(2.4773, abs=1e-4)
    assert w["ci_lo"][0] == pytest.approx(11 - t975 * se, rel=1e-6)
    assert w["ci_hi"][0] == pytest.approx(11 + t975 * se, rel=1e-6)
    assert w["p"][0] == pytest.approx(2 * sps.t.sf(6.315862, 5.710050), rel=1e-5)
    assert w["p"][0] == pytest.approx(0.00089, abs=1e-5)
    student = sps.ttest_ind([20, 21, 22, 25, 27], [10, 12, 14], equal_var=True)
    assert student.statistic == pytest.approx(5.6930, abs=1e-4) and abs(w["t"][0] - student.statistic) > 0.5
    assert abs(w["p"][0] - student.pvalue) > 1e-4


def test_welch_matches_scipy():
    x = np.array([1.0, 2, 3, 4, 5])
    y = np.array([2.0, 4, 6, 9, 12, 15])
    w = stats.welch(len(x), x.mean(), x.var(ddof=1), len(y), y.mean(), y.var(ddof=1))
    r = sps.ttest_ind(y, x, equal_var=False)
    ci = r.confidence_interval()
    assert w["p"][0] == pytest.approx(r.pvalue)
    assert w["t"][0] == pytest.approx(r.statistic)
    assert w["ci_lo"][0] == pytest.approx(ci.low)
    assert w["ci_hi"][0] == pytest.approx(ci.high)


def test_welch_undefined_is_nan():
    w = stats.welch([1, 3], [5, 5], [np.nan, 0], [3, 3], [6, 5], [1, 0])
    assert np.isnan(w["p"]).all()  # n < 2, and zero variance in both samples


def test_hedges_g_hand_value():
    # pooled sd 2, d = 5; J = Γ(2) / (√2 Γ(1.5)) = 0.79788
    g = stats.hedges_g(3, 12, 4, 3, 22, 4)[0]
    assert g == pytest.approx(5 * 0.7978845608, rel=1e-9)
    # close to the common approximation J ≈ 1 − 3/(4·df − 1)
    assert g == pytest.approx(5 * (1 - 3 / (4 * 4 - 1)), rel=0.01)


def test_mann_whitney_matches_scipy():
    x, y = [1.1, 2.3, 2.9, 4.0, 5.2], [3.3, 4.8, 6.1, 7.7, 8.2, 9.9]
    assert stats.mann_whitney_p(x, y) == pytest.approx(sps.mannwhitneyu(x, y).pvalue)
    assert stats.mann_whitney_p([1, 1], [1, 1]) == 1.0
    assert math.isnan(stats.mann_whitney_p([], [1, 2]))


def test_holm_known_values():
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.adjust_pvalues(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_bh_known_values_and_scipy():
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.adjust_pvalues(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    rng = np.random.default_rng(1)
    q = rng.uniform(0, 0.2, 25)
    assert stats.adjust_pvalues(q, "bh") == pytest.approx(sps.false_discovery_control(q))


def test_adjust_ignores_nan_and_caps_at_one():
    out = stats.adjust_pvalues([0.5, np.nan, 0.6], "holm")
    assert np.isnan(out[1])
    assert out[0] == pytest.approx(1.0) and out[2] == pytest.approx(1.0)


def test_anova_from_moments_matches_f_oneway():
    groups = [np.array([4.0, 5, 6, 5]), np.array([7.0, 8, 9]), np.array([5.0, 6, 5, 7, 6])]
    n = [len(g) for g in groups]
    mean = [g.mean() for g in groups]
    m2 = [((g - g.mean()) ** 2).sum() for g in groups]
    r = stats.anova_oneway(n, mean, m2)
    ref = sps.f_oneway(*groups)
    assert r["F"] == pytest.approx(ref.statistic)
    assert r["p"] == pytest.approx(ref.pvalue)
    assert (r["df1"], r["df2"]) == (2, 9)


def test_kruskal_matches_scipy():
    groups = [[4.0, 5, 6, 5], [7.0, 8, 9], [5.0, 6, 5, 7, 6]]
    assert stats.kruskal_p(groups) == pytest.approx(sps.kruskal(*groups).pvalue)


def _moments_ab(y, a, b):
    f = pd.DataFrame({"y": y, "a": a, "b": b})
    g = f.groupby(["a", "b"])["y"]
    m = pd.DataFrame({"n": g.count(), "mean": g.mean(), "m2": g.var(ddof=1).fillna(0) * (g.count() - 1)})
    return m.reset_index()


def test_interaction_balanced_textbook_formula():
    # 2 × 3 design, 3 replicates: SS_AB = r Σ (ȳij − ȳi. − ȳ.j + ȳ..)²
    rng = np.random.default_rng(7)
    a = np.repeat([0, 1], 9)
    b = np.tile(np.repeat([0, 1, 2], 3), 2)
    y = 10 + 2 * a + b + 1.5 * (a * (b == 2)) + rng.normal(0, 1, 18)
    f = pd.DataFrame({"y": y, "a": a, "b": b})
    cm = f.groupby(["a", "b"])["y"].mean().unstack()
    ss_ab = 3 * ((cm - cm.mean(axis=1).to_numpy()[:, None] - cm.mean(axis=0).to_numpy()[None, :] + cm.to_numpy().mean()) ** 2).to_numpy().sum()
    sse = ((f["y"] - f.groupby(["a", "b"])["y"].transform("mean")) ** 2).sum()
    f_ref = (ss_ab / 2) / (sse / 12)
    m = _moments_ab(y, a, b)
    r = stats.anova_interaction(m["a"], m["b"], m["n"], m["mean"], m["m2"])
    assert (r["df1"], r["df2"]) == (2, 12)
    assert r["F"] == pytest.approx(f_ref)
    assert r["p"] == pytest.approx(sps.f.sf(f_ref, 2, 12))


def test_interaction_unbalanced_equals_raw_ols():
    rng = np.random.default_rng(11)
    a = rng.integers(0, 3, 80)
    b = rng.integers(0, 2, 80)
    y = 5 + a + 2 * b + 0.8 * a * b + rng.normal(0, 1, 80)

    def sse(x):
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        return ((y - x @ coef) ** 2).sum(), np.linalg.matrix_rank(x)

    da = np.eye(3)[a][:, 1:]
    db = np.eye(2)[b][:, 1:]
    add = np.column_stack([np.ones(80), da, db])
    full = np.eye(6)[a * 2 + b]
    sse_add, r_add = sse(add)
    sse_full, r_full = sse(full)
    f_ref = ((sse_add - sse_full) / (r_full - r_add)) / (sse_full / (80 - r_full))
    m = _moments_ab(y, a, b)
    r = stats.anova_interaction(m["a"], m["b"], m["n"], m["mean"], m["m2"])
    assert r["F"] == pytest.approx(f_ref)
    assert r["df1"] == r_full - r_add == 2


def test_interaction_confounded_is_not_testable():
    # b is a function of a: no interaction degrees of freedom.
    m = pd.DataFrame({"a": [0, 1, 2], "b": [0, 1, 1], "n": [5, 5, 5], "mean": [1.0, 2, 3], "m2": [1.0, 1, 1]})
    r = stats.anova_interaction(m["a"], m["b"], m["n"], m["mean"], m["m2"])
    assert math.isnan(r["p"])


def test_bootstrap_is_seeded_and_matches_scipy():
    x = np.array([12.0, 15.5, 11.2, 30.1, 13.3, 14.0, 12.8, 16.9])
    a = stats.bootstrap_mean_ci(x, "percentile", 2000, seed=5)
    b = stats.bootstrap_mean_ci(x, "percentile", 2000, seed=5)
    assert a == b
    ref = sps.bootstrap((x,), np.mean, n_resamples=2000, method="percentile",
                        rng=np.random.default_rng(5)).confidence_interval
    assert a == pytest.approx((ref.low, ref.high))
    lo, hi = stats.bootstrap_mean_ci(x, "bca", 2000, seed=5)
    assert lo < x.mean() < hi
    dlo, dhi = stats.bootstrap_diff_ci([10, 12, 14, 11], [20, 22, 24, 23], "percentile", 2000)
    assert 5 < dlo < 10.25 < dhi < 13
    assert all(math.isnan(v) for v in stats.bootstrap_mean_ci([3.0, 3.0, 3.0]))
