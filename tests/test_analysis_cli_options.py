"""Every analysis option through the real CLI: ``python -m analysis … --test … --bootstrap …`` → CSVs → hand values.

Why beside the in-process checks of test_analysis_options.py: those call
:func:`analysis.tables.analyse` with an :class:`Options` built by the test, so a
command line that dropped a flag on the way (argparse → Options) still passed.
Here each option set is one run of the real CLI on a few trials, and the CSVs it
writes are read back and compared with values computed independently (scipy or
by hand), so a dropped or mis-wired option fails.

Data (one warm-up per cell excluded; labels as the report prints them):

- ``baseline``:            tok/s 5, 6, 7;    TTFT 100, 110, 120 ms
- ``chimera num_ctx=256``: tok/s 10, 11, 12; TTFT 50, 55, 60 ms
- ``chimera num_ctx=512``: tok/s 14, 15, 19; TTFT 40, 45, 105 ms

Exact two-sided Mann–Whitney p against the baseline: 2 / C(6, 3) = 0.1 where the
samples are fully separated (tok/s of both cells, TTFT of 256), 0.2 for TTFT of
512 (105 > 100: U = 8 of 9, one-sided 2/20).  Over those 4 comparisons
Benjamini–Hochberg gives 0.133, 0.133, 0.133, 0.2 (the 0.1s: 0.1 · 4/3), Holm
0.4 for all, and Welch's p would be far smaller (tok/s 256: t = 6.12, p = 0.0036).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import intervals
from tests.test_analysis_report import _analyse

CELLS = {  # label → (preset, num_ctx, tok/s, TTFT ms)
    "baseline": ("baseline", None, [5.0, 6.0, 7.0], [100.0, 110.0, 120.0]),
    "chimera num_ctx=256": ("chimera", 256, [10.0, 11.0, 12.0], [50.0, 55.0, 60.0]),
    "chimera num_ctx=512": ("chimera", 512, [14.0, 15.0, 19.0], [40.0, 45.0, 105.0]),
}
SPECIAL = {"m_1 5% R&D": [10.0, 12.0, 17.0], "m_2 10% A&B": [20.0, 21.0, 25.0]}   # no preset: labels kept as they are

RANK_FLAGS = ("--test", "mannwhitney", "--correction", "bh", "--sensitivity-test", "kruskal", "--top", "1",
              "--alpha", "0.2")
BCA_FLAGS = ("--bootstrap", "--resamples", "999", "--seed", "7")
PERCENTILE_FLAGS = ("--bootstrap", "--bootstrap-method", "percentile", "--resamples", "999", "--seed", "3")


def _grid_rows() -> list[dict]:
    rows = []
    for label, (preset, num_ctx, tps, ttft) in CELLS.items():
        cell_id = f"{preset} m" + (f" num_ctx={num_ctx}" if num_ctx else "")
        common = dict(sweep_id="S", cell_id=cell_id, preset=preset, model="m", backend="ollama", workload="report",
                      num_ctx=num_ctx, prompt_id="0", eval_count=100)
        rows.append(common | dict(trial=0, warmup=True, status="ok", throughput_tok_s=1.0, ttft_ms=5000.0))
        rows += [common | dict(trial=i, warmup=False, status="ok", throughput_tok_s=t, ttft_ms=f)
                 for i, (t, f) in enumerate(zip(tps, ttft))]
    return rows


def _special_rows() -> list[dict]:
    return [dict(cell_id=cell, model="m", trial=i, status="ok", throughput_tok_s=t, ttft_ms=50.0 + i)
            for cell, values in SPECIAL.items() for i, t in enumerate(values)]


def _report(tmp: Path, rows: list[dict], *flags: str) -> Path:
    """One CLI run: the rows as a CSV → the report directory."""
    tmp.mkdir(parents=True)
    data, out = tmp / "trials.csv", tmp / "report"
    pd.DataFrame(rows).to_csv(data, index=False)
    result = _analyse(data, *flags, "--no-figures", "--quiet", "--out", out, cwd=tmp)
    assert result.returncode == 0, result.stderr
    return out


def _csv(path: Path, key: str) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row[key]: row for row in csv.DictReader(handle)}


def _bvc(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (out / "baseline_vs_chimera.csv").open(newline="") as handle:
        return {(row["cell"], row["metric"]): row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def rank_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _report(tmp_path_factory.mktemp("cli") / "rank", _grid_rows(), *RANK_FLAGS)


@pytest.fixture(scope="module")
def bca_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _report(tmp_path_factory.mktemp("cli") / "bca", _grid_rows(), *BCA_FLAGS)


@pytest.fixture(scope="module")
def percentile_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _report(tmp_path_factory.mktemp("cli") / "percentile", _special_rows(), *PERCENTILE_FLAGS)


# ---------------------------------------------------------------- --test mannwhitney --correction bh --alpha 0.2


MWU_P = {("chimera num_ctx=256", "tok/s"): 0.1, ("chimera num_ctx=512", "tok/s"): 0.1,
         ("chimera num_ctx=256", "TTFT ms"): 0.1, ("chimera num_ctx=512", "TTFT ms"): 0.2}


def test_cli_mann_whitney_exact_p(rank_report: Path) -> None:
    rows = _bvc(rank_report)
    assert {key: row["p"] for key, row in rows.items()} == {key: f"{p:.3g}" for key, p in MWU_P.items()}
    for (cell, metric), p in MWU_P.items():                          # the hand values are scipy's too
        column = 2 if metric == "tok/s" else 3
        assert sps.mannwhitneyu(CELLS["baseline"][column], CELLS[cell][column]).pvalue == pytest.approx(p)


def test_cli_benjamini_hochberg_p_adj(rank_report: Path) -> None:
    """BH: 0.1 · 4/3 = 0.133 for the three 0.1s, 0.2 stays; Holm would give 0.4 for all, no correction 0.1/0.2."""
    rows = _bvc(rank_report)
    assert {key: row["p adj"] for key, row in rows.items()} == {
        key: ("0.2" if p == 0.2 else "0.133") for key, p in MWU_P.items()}
    assert sps.false_discovery_control(list(MWU_P.values()), method="bh") == pytest.approx([0.4 / 3] * 3 + [0.2])


def test_cli_alpha_decides_the_verdict(rank_report: Path) -> None:
    """α 0.2: p adj 0.133 is significant (at the default α 0.05 none would be).  TTFT of 512 (40, 45, 105 ms,
    CV 57 % at n 3) has no usable interval (log-t would span ×17), so its comparison is inconclusive."""
    verdicts = {key: row["verdict"] for key, row in _bvc(rank_report).items()}
    assert verdicts == {key: ("inconclusive" if p == 0.2 else "faster") for key, p in MWU_P.items()}
    cells = _csv(rank_report / "comprehensive.csv", "cell")
    assert cells["chimera num_ctx=512"]["TTFT ms CI95 note"] == "too variable for n = 3 (CV 57 %)"


def test_cli_kruskal_wallis_sensitivity(rank_report: Path) -> None:
    summary = _csv(rank_report / "sensitivity_summary.csv", "parameter")["num_ctx"]
    p_tps = sps.kruskal(CELLS["chimera num_ctx=256"][2], CELLS["chimera num_ctx=512"][2]).pvalue
    p_ttft = sps.kruskal(CELLS["chimera num_ctx=256"][3], CELLS["chimera num_ctx=512"][3]).pvalue
    assert float(summary["tok/s p"]) == pytest.approx(p_tps, rel=5e-3)        # .3g in the CSV
    assert float(summary["TTFT ms p"]) == pytest.approx(p_ttft, rel=5e-3)
    anova = sps.f_oneway(CELLS["chimera num_ctx=256"][2], CELLS["chimera num_ctx=512"][2]).pvalue
    assert float(summary["tok/s p"]) != pytest.approx(anova, rel=5e-3)      # the default test is not it
    adjusted = sps.false_discovery_control([p_tps, p_ttft], method="bh")
    assert (float(summary["tok/s p adj"]), float(summary["TTFT ms p adj"])) == pytest.approx(adjusted, rel=5e-3)
    assert summary["tok/s effect"] == ("significant" if adjusted[0] < 0.2 else "not significant")


def test_cli_top_keeps_one_cell_per_ranking(rank_report: Path) -> None:
    """--top 1: the fastest (512: 16 tok/s), the lowest TTFT (256: 55 ms), the lowest tok/s CV (256: 9.1 %)."""
    expected = {"rank_throughput": ("chimera num_ctx=512", "tok/s mean", "16.00"),
                "rank_ttft": ("chimera num_ctx=256", "TTFT ms mean", "55.0"),
                "rank_consistency": ("chimera num_ctx=256", "tok/s CV %", "9.09")}
    for name, (cell, column, value) in expected.items():
        rows = list(_csv(rank_report / f"{name}.csv", "rank").values())
        assert len(rows) == 1, name
        assert (rows[0]["cell"], rows[0][column]) == (cell, value), name


# ---------------------------------------------------------------- --bootstrap (BCa) --resamples --seed


def _scipy_diff_ci(base: list[float], chim: list[float], method: str, seed: int) -> tuple[float, float]:
    ci = sps.bootstrap((np.array(base), np.array(chim)),
                       lambda a, b, axis=-1: np.mean(b, axis=axis) - np.mean(a, axis=axis),
                       n_resamples=999, method=method, confidence_level=0.95,
                       rng=np.random.default_rng(seed), vectorized=True).confidence_interval
    return ci.low, ci.high


def _scipy_mean_ci(values: list[float], method: str, seed: int) -> tuple[float, float]:
    ci = sps.bootstrap((np.array(values),), np.mean, n_resamples=999, method=method, confidence_level=0.95,
                       rng=np.random.default_rng(seed), vectorized=True).confidence_interval
    return ci.low, ci.high


@pytest.mark.parametrize("cell", ["chimera num_ctx=256", "chimera num_ctx=512"])
@pytest.mark.parametrize(("metric", "column"), [("tok/s", 2), ("TTFT ms", 3)])
def test_cli_bootstrap_bca_difference_ci_equals_scipy(bca_report: Path, cell: str, metric: str, column: int) -> None:
    row = _bvc(bca_report)[(cell, metric)]
    lo, hi = _scipy_diff_ci(CELLS["baseline"][column], CELLS[cell][column], "BCa", seed=7)
    assert (row["Δ CI95 lo"], row["Δ CI95 hi"]) == (f"{lo:.2f}", f"{hi:.2f}")      # .2f in the CSV
    # Δ % keeps its one interval whatever --bootstrap says: the log ratio of the means (Welch df)
    b, c = np.array(CELLS["baseline"][column]), np.array(CELLS[cell][column])
    p_lo, p_hi = intervals.pct_interval(*(np.array([v]) for v in (3, b.mean(), b.var(ddof=1), 3, c.mean(), c.var(ddof=1))), 0.95)
    assert (row["Δ % CI95 lo"], row["Δ % CI95 hi"]) == (f"{p_lo[0]:.1f}", f"{p_hi[0]:.1f}")


def test_cli_bootstrap_bca_cell_ci_equals_scipy(bca_report: Path) -> None:
    rows = _csv(bca_report / "comprehensive.csv", "cell")
    for cell, (_, _, tps, _) in CELLS.items():
        lo, hi = _scipy_mean_ci(tps, "BCa", seed=7)
        assert (rows[cell]["tok/s CI95 lo"], rows[cell]["tok/s CI95 hi"]) == (f"{lo:.2f}", f"{hi:.2f}"), cell
    welch_lo = 6 - sps.t.ppf(0.975, 2) * 1 / np.sqrt(3)                  # baseline t-interval: 3.52
    assert rows["baseline"]["tok/s CI95 lo"] != f"{welch_lo:.2f}"


# ---------------------------------------------------------------- --bootstrap-method percentile, LaTeX escaping


def test_cli_bootstrap_percentile_cell_ci_equals_scipy(percentile_report: Path) -> None:
    rows = _csv(percentile_report / "comprehensive.csv", "cell")
    assert set(rows) == set(SPECIAL)
    for cell, values in SPECIAL.items():
        lo, hi = _scipy_mean_ci(values, "percentile", seed=3)
        assert (rows[cell]["tok/s CI95 lo"], rows[cell]["tok/s CI95 hi"]) == (f"{lo:.2f}", f"{hi:.2f}"), cell
        bca = _scipy_mean_ci(values, "BCa", seed=3)
        assert (f"{lo:.2f}", f"{hi:.2f}") != (f"{bca[0]:.2f}", f"{bca[1]:.2f}")   # the method changed the CI


def test_cli_latex_escapes_labels(percentile_report: Path) -> None:
    tex = (percentile_report / "report.tex").read_text()
    assert r"m\_1 5\% R\&D" in tex and r"m\_2 10\% A\&B" in tex
    assert "m_1" not in tex and "5% R&D" not in tex
