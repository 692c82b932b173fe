"""Every analysis option changes the numbers it should, on data whose answers are known.

In-process and fast (no report files, no figures): the report-level tests in
test_analysis_report.py check the rendering; these check that ``--test``,
``--correction``, ``--bootstrap``, ``--sensitivity-test`` and ``--top`` are not
silently ignored (a copy of the tables that ignored them used to pass).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis.load import combine, tidy
from analysis.render import tex_escape, to_latex
from analysis.tables import Options, Table, analyse
from tests.test_analysis_report import _rows


def _frame(rows: list[dict]) -> pd.DataFrame:
    df, _ = combine([tidy(pd.DataFrame(rows), "S")])
    return df


def _bvc(opts: Options) -> pd.DataFrame:
    table = analyse(_frame(_rows()), opts).get("baseline_vs_chimera")
    assert table is not None
    return table.frame.set_index("metric")


def test_mann_whitney_on_fully_separated_3_vs_3_is_exactly_0_1() -> None:
    """Two-sided exact U test: 2 of the C(6,3) = 20 arrangements are as extreme."""
    frame = _bvc(Options(test="mannwhitney"))
    assert frame.loc["tok/s", "p"] == pytest.approx(0.1, abs=1e-12)
    assert frame.loc["TTFT ms", "p"] == pytest.approx(0.1, abs=1e-12)
    welch = _bvc(Options(test="welch"))
    assert welch.loc["tok/s", "p"] == pytest.approx(0.0036, abs=5e-5)     # the default is not the U test


@pytest.mark.parametrize(("correction", "adjusted"), [("holm", 0.2), ("bh", 0.1)])
def test_p_adj_follows_the_correction(correction: str, adjusted: float) -> None:
    """Both p = 0.1 over 2 comparisons: Holm → 0.2, 0.2; Benjamini–Hochberg → 0.1, 0.1."""
    frame = _bvc(Options(test="mannwhitney", correction=correction))
    assert frame["p adj"].tolist() == pytest.approx([adjusted, adjusted])


# Skewed 8-vs-8 samples: unlike 3 evenly spaced values a side (whose bootstrap quantiles are the same few
# resample means whatever the draw), here the method, the resamples and the seed each move the interval.
SKEWED_BASE = [10.0, 11.0, 12.0, 13.0, 15.0, 18.0, 25.0, 40.0]
SKEWED_CHIM = [20.0, 21.0, 23.0, 24.0, 26.0, 30.0, 38.0, 60.0]
BOOTSTRAP_CASES = [("bca", 999, 7), ("percentile", 999, 7), ("bca", 2000, 7), ("bca", 999, 8)]


def _skewed_bvc(opts: Options) -> pd.Series:
    rows = []
    for preset, values in (("baseline", SKEWED_BASE), ("chimera", SKEWED_CHIM)):
        for trial, tps in enumerate(values):
            rows.append(dict(sweep_id="S", cell_id=f"{preset} m", preset=preset, model="m", backend="ollama",
                             workload="report", prompt_id="0", trial=trial, warmup=False, status="ok",
                             ttft_ms=50.0 + trial, throughput_tok_s=tps, eval_count=100))
    table = analyse(_frame(rows), opts).get("baseline_vs_chimera")
    assert table is not None
    return table.frame.set_index("metric").loc["tok/s"]


@pytest.mark.parametrize(("method", "resamples", "seed"), BOOTSTRAP_CASES)
def test_bootstrap_ci_equals_scipy_with_the_same_method_resamples_and_seed(method: str, resamples: int,
                                                                            seed: int) -> None:
    row = _skewed_bvc(Options(bootstrap=True, bootstrap_method=method, resamples=resamples, seed=seed))
    expected = sps.bootstrap((np.array(SKEWED_BASE), np.array(SKEWED_CHIM)),
                             lambda a, b, axis=-1: np.mean(b, axis=axis) - np.mean(a, axis=axis),
                             n_resamples=resamples, method=method, confidence_level=0.95,
                             rng=np.random.default_rng(seed), vectorized=True).confidence_interval
    assert (row["Δ CI95 lo"], row["Δ CI95 hi"]) == pytest.approx((expected.low, expected.high), rel=1e-12)


def test_each_bootstrap_option_changes_the_interval() -> None:
    """The four cases differ pairwise at the printed precision (.2f), and none is Welch's interval."""
    printed = {}
    for method, resamples, seed in BOOTSTRAP_CASES:
        row = _skewed_bvc(Options(bootstrap=True, bootstrap_method=method, resamples=resamples, seed=seed))
        printed[(method, resamples, seed)] = tuple(f"{row[c]:.2f}" for c in ("Δ CI95 lo", "Δ CI95 hi"))
    assert len(set(printed.values())) == len(BOOTSTRAP_CASES), printed
    welch = _skewed_bvc(Options())
    assert tuple(f"{welch[c]:.2f}" for c in ("Δ CI95 lo", "Δ CI95 hi")) not in printed.values()


def _two_levels() -> pd.DataFrame:
    rows = []
    for num_ctx, values in ((256, [10.0, 11.0, 12.0]), (512, [14.0, 15.0, 19.0])):
        for trial, tps in enumerate(values):
            rows.append(dict(sweep_id="S", cell_id=f"chimera m num_ctx={num_ctx}", preset="chimera", model="m",
                             backend="ollama", workload="report", num_ctx=num_ctx, prompt_id="0", trial=trial,
                             warmup=False, status="ok", ttft_ms=50.0 + trial, throughput_tok_s=tps, eval_count=100))
    return _frame(rows)


def test_kruskal_wallis_sensitivity_p() -> None:
    analysis = analyse(_two_levels(), Options(sensitivity_test="kruskal"))
    summary = analysis.get("sensitivity_summary").frame.set_index("parameter")
    expected = sps.kruskal([10.0, 11.0, 12.0], [14.0, 15.0, 19.0]).pvalue
    assert summary.loc["num_ctx", "tok/s p"] == pytest.approx(expected, rel=1e-12)
    anova = analyse(_two_levels(), Options()).get("sensitivity_summary").frame.set_index("parameter")
    assert anova.loc["num_ctx", "tok/s p"] == pytest.approx(sps.f_oneway([10, 11, 12], [14, 15, 19]).pvalue)


def test_rankings_respect_top_and_order() -> None:
    analysis = analyse(_two_levels(), Options(top=1))
    ranked = [t for t in analysis.tables if t.name.startswith("rank_")]
    assert ranked and all(len(t.frame) == 1 for t in ranked)
    fastest = next(t for t in ranked if "tok/s mean" in t.frame.columns and "CV" not in " ".join(t.frame.columns))
    assert fastest.frame["tok/s mean"].iloc[0] == pytest.approx(16.0)
    assert len(next(t for t in analyse(_two_levels(), Options(top=5)).tables if t.name == fastest.name).frame) == 2


def test_latex_escapes_underscore_percent_and_ampersand() -> None:
    assert tex_escape("a_b 5% R&D") == r"a\_b 5\% R\&D"
    table = Table("t", "cells_with 100% & more", pd.DataFrame({"cell": ["x_y & 5%"], "v": [1.5]}), {"v": ".1f"})
    latex = to_latex(table)
    assert r"x\_y \& 5\%" in latex and r"cells\_with 100\% \& more" in latex
    assert "x_y" not in latex
