"""Baseline vs chimera: each chimera cell against the baseline cell of the same model/workload/backend.

Per pair and headline metric: Δ and its CI (Welch, or the bootstrap with
``--bootstrap``), p (Welch, or Mann–Whitney with ``--test mannwhitney``),
Hedges g, the minimum detectable effect, then Holm/BH over the whole table and
a verdict.  The Welch figures come from per-cell moments; only the opt-in rank
test and bootstrap read the raw trials of each pair.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import intervals, power, stats
from analysis.base import Options, Table, ci_label, id_columns
from analysis.cellstats import Measured
from analysis.columns import HEADLINE, MATCH_KEYS, Metric

_TAIL = ["p", "p adj", "hedges g", "verdict", "MDE", "MDE %"]


def baseline_vs_chimera(
    df: pd.DataFrame, an_cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options,
    measured: Measured | None = None,
) -> tuple[Table | None, str]:
    """Δ of each chimera cell against its baseline: Welch CI, p (Welch/MWU), Hedges g, Holm/BH, verdict.

    Returns the table, or None and the sentence the report prints instead.
    """
    missing = _missing_presets(an_cells)
    if missing:
        return None, missing
    pairs, unmatched = _match_baselines(an_cells, cs)
    note_unmatched = f" Chimera cells without a matching baseline: {', '.join(unmatched)}." if unmatched else ""
    if pairs.empty:
        return None, "No chimera cell has a baseline with the same model/workload/backend." + note_unmatched
    kc, kb = pairs["cell_key"].to_numpy(), pairs["cell_key_b"].to_numpy()
    raw = None
    if opts.test == "mannwhitney" or opts.bootstrap:
        raw = _RawGroups(measured or Measured(df))
    parts = [_metric_rows(metric, kb, kc, an_cells, cs, raw, multi, opts)
             for metric in HEADLINE if f"{metric.column}:mean" in cs]
    t = _with_verdicts(pd.concat(parts, ignore_index=True), opts)
    return Table("baseline_vs_chimera", "Baseline vs chimera", t, _formats(ci_label(opts)),
                 _note(len(t), opts) + note_unmatched), ""


def _missing_presets(an_cells: pd.DataFrame) -> str:
    """Why no comparison is possible (no preset column, no baseline or no chimera cell), or ""."""
    if "preset" not in an_cells.columns:
        return "No `preset` column: baseline vs chimera comparison not possible."
    presets = set(an_cells["preset"].dropna().astype(str).str.lower())
    if "baseline" not in presets:
        return "No baseline cells in the input (preset = 'baseline'): no comparison table."
    if "chimera" not in presets:
        return "No chimera cells in the input (preset = 'chimera'): no comparison table."
    return ""


def _match_baselines(cells: pd.DataFrame, cs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Pair each chimera cell with the baseline cell of the same model/workload/backend/url.

    Several candidates (e.g. two sweeps with a baseline each): prefer the same
    dataset, then the baseline with the most measured trials.
    """
    keys = [k for k in MATCH_KEYS if k in cells.columns]
    c = cells.assign(_n=cs["n"]).reset_index()
    for k in keys:
        c[k] = c[k].astype(object).where(c[k].notna(), "∅").astype(str)
    preset = c["preset"].astype(str).str.lower()
    chim = c[preset == "chimera"]
    base = c[preset == "baseline"]
    if keys:
        pairs = chim.merge(base, on=keys, suffixes=("", "_b"))
    else:
        pairs = chim.merge(base, how="cross", suffixes=("", "_b"))
    pairs["_same"] = pairs["dataset"] == pairs["dataset_b"]
    pairs = pairs.sort_values(["cell_key", "_same", "_n_b"], ascending=[True, False, False], kind="mergesort")
    pairs = pairs.drop_duplicates("cell_key")
    unmatched = sorted(set(chim["cell"]) - set(pairs["cell"]))
    return pairs[["cell_key", "cell_key_b"]], unmatched


class _RawGroups:
    """The measured trials' values of one metric for any cell: what the rank test and bootstrap read."""

    def __init__(self, measured: Measured) -> None:
        self._frame = measured.frame
        self._index = measured.by_seen.indices
        self._empty = np.array([], dtype=np.int64)

    def values(self, column: str, cell_key: object) -> np.ndarray:
        return self._frame[column].to_numpy(float)[self._index.get(cell_key, self._empty)]


def _metric_rows(metric: Metric, kb: np.ndarray, kc: np.ndarray, an_cells: pd.DataFrame, cs: pd.DataFrame,
                 raw: _RawGroups | None, multi: bool, opts: Options) -> pd.DataFrame:
    """One row per (baseline, chimera) pair for one metric, before the multiple-comparison correction."""
    ci = ci_label(opts)
    c = metric.column
    nb, mb, vb = (cs.loc[kb, f"{c}:{s}"].to_numpy(float) for s in ("n", "mean", "var"))
    nc, mc, vc = (cs.loc[kc, f"{c}:{s}"].to_numpy(float) for s in ("n", "mean", "var"))
    w = stats.welch(nb, mb, vb, nc, mc, vc, opts.confidence)
    lo, hi, p = w["ci_lo"].copy(), w["ci_hi"].copy(), w["p"].copy()
    if raw is not None:
        _raw_overrides(c, kb, kc, raw, opts, lo, hi, p)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = w["diff"] / mb * 100
    pct_lo, pct_hi = intervals.pct_interval(nb, mb, vb, nc, mc, vc, opts.confidence)
    t = id_columns(an_cells, kc, multi)
    t["baseline"] = an_cells.loc[kb, "cell"].to_numpy()
    t["metric"] = metric.label
    t["n base"], t["n chimera"] = nb.astype(int), nc.astype(int)
    t["mean base"], t["mean chimera"] = mb, mc
    t["Δ"], t[f"Δ {ci} lo"], t[f"Δ {ci} hi"] = w["diff"], lo, hi
    t["Δ %"], t[f"Δ % {ci} lo"], t[f"Δ % {ci} hi"] = pct, pct_lo, pct_hi
    t["p"] = p
    t["hedges g"] = stats.hedges_g(nb, mb, vb, nc, mc, vc)
    t["_better_if_positive"] = metric.higher_is_better
    note = f"{c}:{intervals.NOTE}"           # words instead of an interval in either cell: inconclusive
    t["_usable"] = (cs.loc[kb, note].to_numpy() == "") & (cs.loc[kc, note].to_numpy() == "")
    t["_se"] = np.sqrt(vb / nb + vc / nc)
    t["_df"] = w["df"]
    return t


def _raw_overrides(column: str, kb: np.ndarray, kc: np.ndarray, raw: _RawGroups, opts: Options,
                   lo: np.ndarray, hi: np.ndarray, p: np.ndarray) -> None:
    """``--test mannwhitney``: p from the U test; ``--bootstrap``: the Δ CI from the bootstrap (in place)."""
    for i, (a, b) in enumerate(zip(kb, kc)):
        xb, xc = raw.values(column, a), raw.values(column, b)
        if opts.test == "mannwhitney":
            p[i] = stats.mann_whitney_p(xb, xc)
        if opts.bootstrap:
            lo[i], hi[i] = stats.bootstrap_diff_ci(
                xb, xc, opts.bootstrap_method, opts.resamples, opts.seed, opts.confidence
            )


def _with_verdicts(t: pd.DataFrame, opts: Options) -> pd.DataFrame:
    """p adj (Holm/BH over every row) and the verdict, with the test columns moved to the end."""
    t["p adj"] = stats.adjust_pvalues(t["p"].to_numpy(float), opts.correction)
    t["MDE"] = power.mde_t(t.pop("_se").to_numpy(float), t.pop("_df").to_numpy(float),
                           power.family_alpha(opts.alpha, t["p"].to_numpy(float)))
    with np.errstate(invalid="ignore", divide="ignore"):
        t["MDE %"] = t["MDE"] / np.abs(t["mean base"].to_numpy(float)) * 100
    sig = t["p adj"] < opts.alpha
    up = t["Δ"] > 0
    faster = np.where(t["_better_if_positive"], up, ~up)
    t["verdict"] = np.where(
        t["p adj"].isna(), "insufficient data",
        np.where(sig, np.where(faster, "faster", "slower"), "no significant difference"),
    )
    t["verdict"] = t["verdict"].where(t["_usable"], "inconclusive")   # a cell without a usable interval
    t = t.drop(columns=["_better_if_positive", "_usable"])
    return t[[c for c in t.columns if c not in _TAIL] + _TAIL]


def _formats(ci: str) -> dict[str, str]:
    fmt = {c: ".2f" for c in ("mean base", "mean chimera", "Δ", f"Δ {ci} lo", f"Δ {ci} hi")}
    fmt.update({c: ".1f" for c in ("Δ %", f"Δ % {ci} lo", f"Δ % {ci} hi")})
    fmt.update({"p": ".3g", "p adj": ".3g", "hedges g": ".2f", "MDE": ".2f", "MDE %": ".1f"})
    return fmt


def _note(comparisons: int, opts: Options) -> str:
    ci = ci_label(opts)
    test = "Welch t-test" if opts.test == "welch" else "Mann–Whitney U (two-sided)"
    corr = "Holm" if opts.correction == "holm" else "Benjamini–Hochberg"
    ci_kind = f"bootstrap {opts.bootstrap_method}" if opts.bootstrap else "Welch"
    return (
        f"Δ = chimera − baseline (units of the metric); Δ % relative to the baseline mean "
        f"(its CI: the delta-method CI of the log ratio of means, Welch df, so never below −100 %). "
        f"Δ {ci}: {ci_kind}. p: {test}; p adj: {corr} over all {comparisons} testable comparisons in this table; "
        f"verdict at α = {opts.alpha} on p adj (for TTFT, lower is faster); inconclusive where a cell has "
        f"no usable interval (comprehensive table, note column). "
        f"Hedges g: chimera − baseline in pooled-sd units (bias-corrected). {power.note(opts.alpha, comparisons)} "
        f"(MDE of the Welch test, also under --test mannwhitney or --bootstrap.)"
    )
