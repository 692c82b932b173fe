"""Tidy trial frame → the report's tables, as numeric DataFrames (no formatting here).

Each builder returns :class:`Table` objects whose frames hold numbers; the
renderer turns one frame into Markdown, CSV and LaTeX so all three show the
same values.  Everything is vectorised: trials are scanned by a handful of
pandas ``groupby`` calls to per-cell moments (n, mean, m2), and every further
statistic is computed from those moments (see :mod:`analysis.stats`).  Only the
opt-in rank tests and bootstrap touch raw samples per group.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from analysis import client_share, intervals, offload, power, stats
from analysis.columns import (
    DURATIONS, HEADLINE, MATCH_KEYS, OPTIONAL, SENSITIVITY_KEYS, THROUGHPUT, TOKENS, TTFT, Metric,
)
from analysis.load import format_level
from sweep.contract import Status


@dataclass
class Options:
    """Analysis choices; defaults are what a reviewer expects without flags."""

    top: int = 5
    ddof: int = 1                                        # 0 with --population-sd
    test: Literal["welch", "mannwhitney"] = "welch"
    correction: Literal["holm", "bh"] = "holm"
    sensitivity_test: Literal["anova", "kruskal"] = "anova"
    bootstrap: bool = False
    bootstrap_method: Literal["bca", "percentile"] = "bca"
    resamples: int = 9999
    seed: int = 0
    alpha: float = 0.05
    confidence: float = 0.95
    search: bool = False                                 # --search (or an Optuna sweep): the search section


@dataclass
class Table:
    """One report table: a numeric frame plus how to print it.

    ``formats`` maps float columns to a format spec (``.2f``, ``.3g``); integer
    and text columns print as they are.  ``name`` is the file stem of the CSV/TeX.
    """

    name: str
    title: str
    frame: pd.DataFrame
    formats: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass
class Analysis:
    """All tables plus the intermediate numbers the figures and header need."""

    tables: list[Table]
    cells: pd.DataFrame                 # one row per cell_key: dataset, cell, identity/options
    cellstats: pd.DataFrame             # per cell_key: "<column>:<stat>" numbers
    notes: dict[str, str]               # section → sentence (e.g. why a table is absent)
    multi_dataset: bool
    options: Options
    concurrency: pd.DataFrame | None = None   # per multi-agent cell: speedup and tr114 means with CIs (figure)

    def get(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)


CI = "CI95"
STOP_REASON = "stop_reason"     # trials=auto: why the cell stopped (on its last row)


def _metrics(df: pd.DataFrame, candidates: tuple[Metric, ...]) -> list[Metric]:
    return [m for m in candidates if m.column in df.columns and df[m.column].notna().any()]


def _ci_label(opts: Options) -> str:
    return f"CI{round(opts.confidence * 100):d}"


def ci_methods(cs: pd.DataFrame, opts: Options) -> str:
    """The interval method of each headline metric present, as the table header states it."""
    present = [(m.column, m.label) for m in HEADLINE if f"{m.column}:mean" in cs]
    return intervals.methods_note(present, opts.bootstrap, opts.bootstrap_method, opts.resamples, opts.seed)


def _id_columns(cells: pd.DataFrame, index: pd.Index, multi: bool) -> pd.DataFrame:
    """The columns that name a cell in every per-cell table: [dataset,] cell [, its offload flag]."""
    cols = (["dataset"] if multi else []) + ["cell"] + (["offload"] if "offload" in cells.columns else [])
    return cells.loc[index, cols].reset_index(drop=True)


# ---------------------------------------------------------------- per-cell statistics


def _numeric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns
            if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]


def _positive_fallback(summ: pd.DataFrame, values: pd.Series, key: pd.Series, index: pd.Index,
                       opts: Options) -> pd.DataFrame:
    """Cells whose t-interval of a positive metric (a rate) crosses zero take the log-t interval instead.

    Why: tok/s is positive; a noisy cell at n=3 printed tok/s CI −0.18 … 4.11.
    The other cells keep Student t, and the table header says so (see
    :func:`analysis.intervals.methods_note`).
    """
    logmom = intervals.log_moments(values, key).reindex(index)
    raw = {k: v.dropna().to_numpy(float) for k, v in values.groupby(key)}
    fixed = intervals.apply_log_t(summ, logmom, raw, opts.confidence, opts.seed)
    crossing = (summ["ci_lo"] < 0).to_numpy()
    out = summ.copy()
    out.loc[crossing, ["ci_lo", "ci_hi"]] = fixed.loc[crossing, ["ci_lo", "ci_hi"]]
    return out


def cell_statistics(
    df: pd.DataFrame, cells: pd.DataFrame, opts: Options
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per-cell numbers for every metric: the one scan over trials the hot path makes.

    Returns a wide frame keyed by cell_key with "<column>:<stat>" columns, and
    the raw (n, mean, m2) moments per headline metric for later combination.
    """
    m = df.loc[df["measured"], _numeric_columns(df)]   # text columns are slow to copy (Arrow take) and unused here
    key = m["cell_key"]
    all_g = df.groupby("cell_key", sort=True)
    out = pd.DataFrame(index=cells.index)
    out["rows"] = all_g.size()
    out["n"] = key.value_counts().reindex(cells.index, fill_value=0)
    out["failed"] = all_g["is_failed"].sum().astype(int)
    out["warmups"] = all_g["is_warmup"].sum().astype(int)
    moments: dict[str, pd.DataFrame] = {}
    for metric in _metrics(df, HEADLINE):
        mom = stats.group_moments(m[metric.column], key).reindex(cells.index)
        mom["n"] = mom["n"].fillna(0)
        moments[metric.column] = mom
        summ = stats.moments_summary(mom, ddof=opts.ddof, confidence=opts.confidence)
        if intervals.method_for(metric.column) == "log-t" and not opts.bootstrap:
            logmom = intervals.log_moments(m[metric.column], key).reindex(cells.index)
            moments[f"{metric.column}:log"] = logmom
            raw = None
            if (logmom["nonpos"].fillna(0) > 0).any():
                raw = {k: v.dropna().to_numpy(float) for k, v in m[metric.column].groupby(key)}
            summ = intervals.apply_log_t(summ, logmom, raw, opts.confidence, opts.seed)
        elif not opts.bootstrap and (summ["ci_lo"] < 0).any():
            summ = _positive_fallback(summ, m[metric.column], key, cells.index, opts)
        for stat in ("n", "mean", "sd", "cv_pct", "ci_lo", "ci_hi", "var"):
            out[f"{metric.column}:{stat}"] = summ[stat]
    if TTFT in m.columns and m[TTFT].notna().any():
        q = m.groupby("cell_key", sort=True)[TTFT].quantile([0.5, 0.95]).unstack()
        out[f"{TTFT}:p50"] = q[0.5].reindex(cells.index)
        out[f"{TTFT}:p95"] = q[0.95].reindex(cells.index)
    extra = _metrics(df, DURATIONS + OPTIONAL)
    if extra:
        means = m.groupby("cell_key", sort=True)[[x.column for x in extra]].mean()
        for x in extra:
            out[f"{x.column}:mean"] = means[x.column].reindex(cells.index)
    if TOKENS in m.columns and m[TOKENS].notna().any():
        out[f"{TOKENS}:sum"] = m.groupby("cell_key", sort=True)[TOKENS].sum().reindex(cells.index)
    if opts.bootstrap:
        groups = m.groupby("cell_key", sort=True)
        for metric in _metrics(df, HEADLINE):
            lo, hi = {}, {}
            for k, vals in groups[metric.column]:
                lo[k], hi[k] = stats.bootstrap_mean_ci(
                    vals.to_numpy(), opts.bootstrap_method, opts.resamples, opts.seed, opts.confidence
                )
            out[f"{metric.column}:ci_lo"] = pd.Series(lo).reindex(cells.index)
            out[f"{metric.column}:ci_hi"] = pd.Series(hi).reindex(cells.index)
    return out, moments


# ---------------------------------------------------------------- 1. comprehensive


def comprehensive(an_cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options) -> Table:
    """One row per cell: n, mean/sd/CV/CI of throughput and TTFT, TTFT quantiles, durations, tokens, failures."""
    ci = _ci_label(opts)
    t = _id_columns(an_cells, cs.index, multi)
    fmt: dict[str, str] = {}
    t["n"] = cs["n"].to_numpy(int)
    sd_label = "sd" if opts.ddof == 1 else "sd(pop)"
    for metric in HEADLINE:
        c = metric.column
        if f"{c}:mean" not in cs:
            continue
        lab, d = metric.label, metric.decimals
        if (cs[f"{c}:n"] != cs["n"]).any():
            t[f"{lab} n"] = cs[f"{c}:n"].to_numpy(int)
        for stat, head in (("mean", "mean"), ("sd", sd_label), ("cv_pct", "CV %"), ("ci_lo", f"{ci} lo"), ("ci_hi", f"{ci} hi")):
            col = f"{lab} {head}"
            t[col] = cs[f"{c}:{stat}"].to_numpy()
            fmt[col] = ".2f" if stat == "cv_pct" else f".{d}f"
        if c == TTFT and f"{c}:p50" in cs:
            for stat in ("p50", "p95"):
                t[f"{lab} {stat}"] = cs[f"{c}:{stat}"].to_numpy()
                fmt[f"{lab} {stat}"] = f".{d}f"
    for metric in DURATIONS + OPTIONAL:
        if f"{metric.column}:mean" in cs:
            col = f"{metric.label} mean"
            t[col] = cs[f"{metric.column}:mean"].to_numpy()
            fmt[col] = f".{metric.decimals}f"
    if f"{TOKENS}:sum" in cs:
        t["tokens"] = cs[f"{TOKENS}:sum"].fillna(0).to_numpy().astype(np.int64)
    t["failed"] = cs["failed"].to_numpy(int)
    t["warm-ups"] = cs["warmups"].to_numpy(int)
    if STOP_REASON in an_cells.columns:
        t["stopped"] = an_cells.loc[cs.index, STOP_REASON].fillna("").to_numpy()
    ci_kind = ci_methods(cs, opts)
    note = (
        f"Statistics over measured trials (status ok, not warm-up); n = measured trials. "
        f"{ci}: {ci_kind}. sd: {'sample (ddof=1)' if opts.ddof == 1 else 'population (ddof=0)'}. "
        f"tokens = Σ eval_count; durations are the server's means; failed/warm-ups are excluded rows."
    )
    return Table("comprehensive", "Comprehensive results (one row per cell)", t, fmt, note)


# ---------------------------------------------------------------- 2. rankings


def rankings(an_cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options) -> list[Table]:
    """Top-k cells by throughput (high), TTFT (low) and consistency (low throughput CV)."""
    out = []
    ci = _ci_label(opts)
    specs = []
    if f"{THROUGHPUT}:mean" in cs:
        specs.append(("rank_throughput", "Top cells by throughput (higher is better)", THROUGHPUT, "mean", False, "tok/s", 2))
    if f"{TTFT}:mean" in cs:
        specs.append(("rank_ttft", "Top cells by TTFT (lower is better)", TTFT, "mean", True, "TTFT ms", 1))
    cv_metric = THROUGHPUT if f"{THROUGHPUT}:cv_pct" in cs else TTFT
    if f"{cv_metric}:cv_pct" in cs:
        lab = "tok/s" if cv_metric == THROUGHPUT else "TTFT ms"
        specs.append(("rank_consistency", f"Most consistent cells (lowest {lab} CV, n ≥ 2)", cv_metric, "cv_pct", True, lab, 2))
    for name, title, col, stat, ascending, lab, d in specs:
        s = cs[f"{col}:{stat}"].dropna()
        top = s.sort_values(ascending=ascending, kind="mergesort").head(opts.top).index
        t = pd.DataFrame({"rank": np.arange(1, len(top) + 1)})
        t = pd.concat([t, _id_columns(an_cells, top, multi)], axis=1)
        t["n"] = cs.loc[top, f"{col}:n"].to_numpy(int)
        fmt = {}
        if stat == "cv_pct":
            t[f"{lab} CV %"] = cs.loc[top, f"{col}:cv_pct"].to_numpy()
            fmt[f"{lab} CV %"] = ".2f"
        t[f"{lab} mean"] = cs.loc[top, f"{col}:mean"].to_numpy()
        t[f"{lab} {ci} lo"] = cs.loc[top, f"{col}:ci_lo"].to_numpy()
        t[f"{lab} {ci} hi"] = cs.loc[top, f"{col}:ci_hi"].to_numpy()
        for c in (f"{lab} mean", f"{lab} {ci} lo", f"{lab} {ci} hi"):
            fmt[c] = f".{d}f"
        note = f"{ci}: " + intervals.methods_note([(col, lab)], opts.bootstrap, opts.bootstrap_method,
                                                  opts.resamples, opts.seed) + "."
        out.append(Table(name, title, t, fmt, note))
    return out


# ---------------------------------------------------------------- 3. baseline vs chimera


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


def baseline_vs_chimera(
    df: pd.DataFrame, an_cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options
) -> tuple[Table | None, str]:
    """Δ of each chimera cell against its baseline: Welch CI, p (Welch/MWU), Hedges g, Holm/BH, verdict."""
    if "preset" not in an_cells.columns:
        return None, "No `preset` column: baseline vs chimera comparison not possible."
    presets = set(an_cells["preset"].dropna().astype(str).str.lower())
    if "baseline" not in presets:
        return None, "No baseline cells in the input (preset = 'baseline'): no comparison table."
    if "chimera" not in presets:
        return None, "No chimera cells in the input (preset = 'chimera'): no comparison table."
    pairs, unmatched = _match_baselines(an_cells, cs)
    note_unmatched = f" Chimera cells without a matching baseline: {', '.join(unmatched)}." if unmatched else ""
    if pairs.empty:
        return None, "No chimera cell has a baseline with the same model/workload/backend." + note_unmatched
    ci = _ci_label(opts)
    kc, kb = pairs["cell_key"].to_numpy(), pairs["cell_key_b"].to_numpy()
    groups = None
    if opts.test == "mannwhitney" or opts.bootstrap:
        m = df.loc[df["measured"], _numeric_columns(df)]
        groups = m.groupby("cell_key", sort=False)
    parts = []
    for metric in HEADLINE:
        c = metric.column
        if f"{c}:mean" not in cs:
            continue
        g = lambda k, stat: cs.loc[k, f"{c}:{stat}"].to_numpy(float)  # noqa: E731
        nb, mb, vb = g(kb, "n"), g(kb, "mean"), g(kb, "var")
        nc, mc, vc = g(kc, "n"), g(kc, "mean"), g(kc, "var")
        w = stats.welch(nb, mb, vb, nc, mc, vc, opts.confidence)
        lo, hi, p = w["ci_lo"].copy(), w["ci_hi"].copy(), w["p"].copy()
        if groups is not None:
            idx = groups.indices
            vals = df.loc[df["measured"], c].to_numpy(float)
            empty = np.array([], dtype=np.int64)
            for i, (a, b) in enumerate(zip(kb, kc)):
                xb, xc = vals[idx.get(a, empty)], vals[idx.get(b, empty)]
                if opts.test == "mannwhitney":
                    p[i] = stats.mann_whitney_p(xb, xc)
                if opts.bootstrap:
                    lo[i], hi[i] = stats.bootstrap_diff_ci(
                        xb, xc, opts.bootstrap_method, opts.resamples, opts.seed, opts.confidence
                    )
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = w["diff"] / mb * 100
            pct_lo, pct_hi = lo / np.abs(mb) * 100, hi / np.abs(mb) * 100
        t = _id_columns(an_cells, kc, multi)
        t["baseline"] = an_cells.loc[kb, "cell"].to_numpy()
        t["metric"] = metric.label
        t["n base"], t["n chimera"] = nb.astype(int), nc.astype(int)
        t["mean base"], t["mean chimera"] = mb, mc
        t["Δ"], t[f"Δ {ci} lo"], t[f"Δ {ci} hi"] = w["diff"], lo, hi
        t["Δ %"], t[f"Δ % {ci} lo"], t[f"Δ % {ci} hi"] = pct, pct_lo, pct_hi
        t["p"] = p
        t["hedges g"] = stats.hedges_g(nb, mb, vb, nc, mc, vc)
        t["_better_if_positive"] = metric.higher_is_better
        t["MDE"] = power.mde(nb, vb, nc, vc, alpha=opts.alpha)
        with np.errstate(invalid="ignore", divide="ignore"):
            t["MDE %"] = t["MDE"] / np.abs(mb) * 100
        parts.append((t, metric.decimals))
    t = pd.concat([p for p, _ in parts], ignore_index=True)
    t["p adj"] = stats.adjust_pvalues(t["p"].to_numpy(float), opts.correction)
    sig = t["p adj"] < opts.alpha
    up = t["Δ"] > 0
    faster = np.where(t["_better_if_positive"], up, ~up)
    t["verdict"] = np.where(
        t["p adj"].isna(), "insufficient data",
        np.where(sig, np.where(faster, "faster", "slower"), "no significant difference"),
    )
    t = t.drop(columns="_better_if_positive")
    tail = ["p", "p adj", "hedges g", "verdict", "MDE", "MDE %"]
    t = t[[c for c in t.columns if c not in tail] + tail]
    fmt = {c: ".2f" for c in ("mean base", "mean chimera", "Δ", f"Δ {ci} lo", f"Δ {ci} hi")}
    fmt.update({c: ".1f" for c in ("Δ %", f"Δ % {ci} lo", f"Δ % {ci} hi")})
    fmt.update({"p": ".3g", "p adj": ".3g", "hedges g": ".2f", "MDE": ".2f", "MDE %": ".1f"})
    test = "Welch t-test" if opts.test == "welch" else "Mann–Whitney U (two-sided)"
    corr = "Holm" if opts.correction == "holm" else "Benjamini–Hochberg"
    ci_kind = f"bootstrap {opts.bootstrap_method}" if opts.bootstrap else "Welch"
    note = (
        f"Δ = chimera − baseline (units of the metric); Δ % relative to the baseline mean "
        f"(its CI = the Δ CI / baseline mean, baseline mean treated as fixed). {ci}: {ci_kind}. "
        f"p: {test}; p adj: {corr} over all {len(t)} comparisons in this table; "
        f"verdict at α = {opts.alpha} on p adj (for TTFT, lower is faster). "
        f"Hedges g: chimera − baseline in pooled-sd units (bias-corrected). {power.note(opts.alpha)}" + note_unmatched
    )
    return Table("baseline_vs_chimera", "Baseline vs chimera", t, fmt, note), ""


# ---------------------------------------------------------------- 4. sensitivity


def _sort_levels(values: pd.Series) -> list:
    """Levels in natural order: nulls ('default') first, then numeric or text order."""
    uniq = pd.unique(values)
    nulls = [v for v in uniq if pd.isna(v)]
    rest = [v for v in uniq if not pd.isna(v)]
    try:
        rest = sorted(rest, key=float)
    except (TypeError, ValueError):
        rest = sorted(rest, key=str)
    return nulls[:1] + rest


def swept_parameters(cells: pd.DataFrame) -> list[str]:
    """Parameters that take more than one value (null counts as 'default') among ``cells``."""
    return [k for k in SENSITIVITY_KEYS if k in cells.columns and cells[k].nunique(dropna=False) > 1]


def sensitivity(
    df: pd.DataFrame, an_cells: pd.DataFrame, moments: dict[str, pd.DataFrame], opts: Options
) -> tuple[list[Table], str]:
    """Marginal means per level of each swept parameter, its significance, and pairwise interactions.

    Computed from per-cell moments (a parameter is constant within a cell), so
    the cost does not grow with the number of trials.  Uses chimera cells when
    the input has any (the baseline is not part of the sweep grid), else all.
    """
    cells = an_cells
    scope = "all cells"
    if "preset" in cells.columns and (cells["preset"].astype(str).str.lower() == "chimera").any():
        cells = cells[cells["preset"].astype(str).str.lower() == "chimera"]
        scope = "chimera cells"
    params = swept_parameters(cells)
    if not params:
        return [], f"No parameter varies among the {scope}: no sensitivity analysis."
    ci = _ci_label(opts)
    metrics = [m for m in HEADLINE if m.column in moments]
    raw = None
    if opts.sensitivity_test == "kruskal":
        raw = df.loc[df["measured"] & df["cell_key"].isin(cells.index), ["cell_key"] + [m.column for m in metrics]]
    level_rows, summary_rows, inter_rows = [], [], []
    for p in params:
        lev = cells[p]
        order = _sort_levels(lev)
        per_metric = {}
        for metric in metrics:
            mom = moments[metric.column].loc[cells.index].assign(level=lev.astype(object).where(lev.notna(), None))
            mom["level"] = mom["level"].map(lambda v: format_level(p, v))
            comb = stats.combine_moments(mom, "level")
            summ = stats.moments_summary(comb, ddof=opts.ddof, confidence=opts.confidence)
            logmom = moments.get(f"{metric.column}:log")
            if logmom is not None:
                lm = logmom.loc[cells.index].assign(level=mom["level"])
                comb_log = stats.combine_moments(lm, "level")
                comb_log["nonpos"] = lm.groupby("level", sort=False)["nonpos"].sum()
                summ = intervals.apply_log_t(summ, comb_log, None, opts.confidence, opts.seed)
            if opts.sensitivity_test == "anova":
                test = stats.anova_oneway(comb["n"], comb["mean"], comb["m2"])["p"]
            else:
                lvl_of_cell = lev.map(lambda v: format_level(p, v))
                labs = raw["cell_key"].map(lvl_of_cell)
                test = stats.kruskal_p([g.to_numpy() for _, g in raw[metric.column].groupby(labs)])
            per_metric[metric] = (summ, test)
        ncells = lev.map(lambda v: format_level(p, v)).value_counts()
        for v in order:
            label = format_level(p, v)
            row = {"parameter": p, "level": label, "cells": int(ncells.get(label, 0))}
            for metric, (summ, _) in per_metric.items():
                s = summ.loc[label] if label in summ.index else None
                row[f"{metric.label} n"] = int(s["n"]) if s is not None else 0
                row[f"{metric.label} mean"] = s["mean"] if s is not None else np.nan
                row[f"{metric.label} {ci} lo"] = s["ci_lo"] if s is not None else np.nan
                row[f"{metric.label} {ci} hi"] = s["ci_hi"] if s is not None else np.nan
            level_rows.append(row)
        srow = {"parameter": p, "levels": len(order)}
        for metric, (summ, test) in per_metric.items():
            means = summ["mean"].dropna()
            if len(means):
                hi_l, lo_l = means.idxmax(), means.idxmin()
                best = hi_l if metric.higher_is_better else lo_l
                delta = means.max() - means.min()
                pct = delta / abs(means.min()) * 100 if means.min() != 0 else np.nan
            else:
                best, delta, pct = "", np.nan, np.nan
            srow[f"{metric.label} best level"] = best
            srow[f"{metric.label} max Δ"] = delta
            srow[f"{metric.label} max Δ %"] = pct
            srow[f"{metric.label} p"] = test
        summary_rows.append(srow)
    for a, b in itertools.combinations(params, 2):
        la = cells[a].map(lambda v: format_level(a, v))
        lb = cells[b].map(lambda v: format_level(b, v))
        for metric in metrics:
            mom = moments[metric.column].loc[cells.index].assign(a=la, b=lb)
            comb = stats.combine_moments(mom, ["a", "b"]).reset_index()
            r = stats.anova_interaction(comb["a"], comb["b"], comb["n"], comb["mean"], comb["m2"])
            inter_rows.append({
                "parameter A": a, "parameter B": b, "metric": metric.label,
                "combinations": int((comb["n"] > 0).sum()), "F": r["F"],
                "df1": r["df1"], "df2": r["df2"], "p": r["p"],
            })
    tables = []
    lv = pd.DataFrame(level_rows)
    fmt = {c: (".2f" if c.startswith("tok/s") else ".1f") for c in lv.columns if " mean" in c or ci in c}
    tables.append(Table(
        "sensitivity_levels", "Parameter sensitivity: marginal means per level", lv, fmt,
        f"Over the measured trials of the {scope}, pooled across the other parameters (marginal means); "
        f"n = trials, cells = cells at that level; {ci}: "
        f"{intervals.methods_note([(m.column, m.label) for m in metrics])}.",
    ))
    sm = pd.DataFrame(summary_rows)
    pcols = [c for c in sm.columns if c.endswith(" p")]
    flat = stats.adjust_pvalues(sm[pcols].to_numpy(float).ravel(), opts.correction).reshape(len(sm), len(pcols))
    for j, c in enumerate(pcols):
        lab = c[:-2]
        sm.insert(sm.columns.get_loc(c) + 1, f"{lab} p adj", flat[:, j])
        sm.insert(sm.columns.get_loc(c) + 2, f"{lab} effect", np.where(
            np.isnan(flat[:, j]), "not testable", np.where(flat[:, j] < opts.alpha, "significant", "not significant")))
    fmt = {}
    for c in sm.columns:
        if c.endswith(" p") or c.endswith(" p adj"):
            fmt[c] = ".3g"
        elif "Δ" in c:
            fmt[c] = ".1f" if ("%" in c or c.startswith("TTFT")) else ".2f"
    test = "one-way ANOVA" if opts.sensitivity_test == "anova" else "Kruskal–Wallis"
    corr = "Holm" if opts.correction == "holm" else "Benjamini–Hochberg"
    tables.append(Table(
        "sensitivity_summary", "Parameter sensitivity: effect of each parameter", sm, fmt,
        f"max Δ = highest − lowest level mean (max Δ % relative to the lowest). p: {test} over trials "
        f"grouped by level; p adj: {corr} over all parameters × metrics; α = {opts.alpha}.",
    ))
    if inter_rows:
        it = pd.DataFrame(inter_rows)
        it["p adj"] = stats.adjust_pvalues(it["p"].to_numpy(float), opts.correction)
        it["interaction"] = np.where(
            it["p adj"].isna(), "not testable",
            np.where(it["p adj"] < opts.alpha, "significant", "not significant"),
        )
        tables.append(Table(
            "sensitivity_interactions", "Parameter sensitivity: two-way interactions", it,
            {"F": ".3g", "df1": ".0f", "df2": ".0f", "p": ".3g", "p adj": ".3g"},
            "F-test of the A×B term of a two-way ANOVA (additive vs full OLS model, fitted on the "
            f"A×B combination moments); p adj: {corr} over all pairs × metrics. 'not testable': the two "
            "parameters are confounded (no interaction degrees of freedom) or there is no replication.",
        ))
    return tables, ""


# ---------------------------------------------------------------- 5. population


def population(an_cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options) -> Table:
    """Spread of the cell means: how much the configuration matters overall."""
    rows = []
    groups = [("all", cs.index)] if not multi else [
        (ds, idx) for ds, idx in an_cells.groupby("dataset", sort=True).groups.items()
    ]
    metrics = [m for m in HEADLINE + DURATIONS + OPTIONAL if f"{m.column}:mean" in cs]
    for ds, idx in groups:
        for metric in metrics:
            x = cs.loc[idx, f"{metric.column}:mean"].dropna()
            d = stats.describe(x.to_numpy(), ddof=opts.ddof)
            row = {"dataset": ds} if multi else {}
            row.update({
                "metric": metric.label, "cells": d["n"], "mean": d["mean"],
                "median": float(x.median()) if len(x) else np.nan, "sd": d["sd"],
                "min": float(x.min()) if len(x) else np.nan, "max": float(x.max()) if len(x) else np.nan,
            })
            row["range"] = row["max"] - row["min"]
            row["CV %"] = d["cv_pct"]
            rows.append(row)
    t = pd.DataFrame(rows)
    fmt = {c: ".2f" for c in ("mean", "median", "sd", "min", "max", "range", "CV %")}
    return Table("population", "Population summary of cell means", t, fmt,
                 "Statistics of the per-cell means (one value per cell with ≥ 1 measured trial).")


# ---------------------------------------------------------------- 6. run order


def run_order(df: pd.DataFrame, an_cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options) -> Table | None:
    """First measured trial vs the rest, per cell: makes a cold model load visible.

    Trials are ordered by ``started_at`` when present, else by ``trial`` then
    file order.  The CV without the first trial shows how much of a cell's
    spread is a one-off cold start.
    """
    metric = TTFT if f"{TTFT}:mean" in cs else THROUGHPUT
    lab = "TTFT ms" if metric == TTFT else "tok/s"
    m = df.loc[df["measured"] & df[metric].notna(), ["cell_key", metric] + [c for c in ("started_at", "trial") if c in df.columns]]
    if m.empty:
        return None
    if "started_at" in m.columns and m["started_at"].notna().all():
        order = m.sort_values(["cell_key", "started_at"], kind="mergesort")
    elif "trial" in m.columns and m["trial"].notna().all():
        order = m.sort_values(["cell_key", "trial"], kind="mergesort")
    else:
        order = m.sort_values(["cell_key"], kind="mergesort")
    first = order.drop_duplicates("cell_key").set_index("cell_key")[metric]
    g = m.groupby("cell_key", sort=True)[metric]
    n = g.count()
    s1 = g.sum()
    s2 = (m[metric] ** 2).groupby(m["cell_key"], sort=True).sum()
    first = first.reindex(n.index)
    rn = n - 1
    rest_mean = (s1 - first) / rn.where(rn > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rest_m2 = (s2 - first**2) - rn * rest_mean**2
        rest_sd = np.sqrt(np.clip(rest_m2, 0, None) / (rn - opts.ddof).where(rn - opts.ddof > 0))
    rest_max = m.assign(_f=m.index.isin(order.drop_duplicates("cell_key").index)).loc[lambda x: ~x["_f"]].groupby("cell_key")[metric].max().reindex(n.index)
    t = _id_columns(an_cells, n.index, multi)
    t["n"] = n.to_numpy(int)
    wu = df.loc[df["is_warmup"] & (df["status"] == Status.OK) & df[metric].notna(), ["cell_key", metric]]
    if len(wu):
        wg = wu.groupby("cell_key")[metric]
        t["warm-ups"] = wg.count().reindex(n.index, fill_value=0).to_numpy(int)
        t[f"warm-up {lab} mean"] = wg.mean().reindex(n.index).to_numpy()
    t[f"first {lab}"] = first.to_numpy()
    t[f"rest {lab} mean"] = rest_mean.to_numpy()
    t["first / rest"] = (first / rest_mean).to_numpy()
    t["CV % all"] = cs.loc[n.index, f"{metric}:cv_pct"].to_numpy()
    t["CV % w/o first"] = stats.cv_pct(rest_sd.to_numpy(), rest_mean.to_numpy())
    t["first > max(rest)"] = np.where(rn.to_numpy() > 0, np.where(first.to_numpy() > rest_max.to_numpy(), "yes", "no"), "")
    d = 1 if metric == TTFT else 2
    fmt = {c: f".{d}f" for c in t.columns if lab in c}
    fmt.update({"first / rest": ".2f", "CV % all": ".2f", "CV % w/o first": ".2f"})
    order_by = "started_at" if "started_at" in m.columns else ("trial" if "trial" in m.columns else "file order")
    return Table("run_order", f"Run order / cold start ({lab})", t, fmt,
                 f"First measured trial (by {order_by}) vs the rest of the cell. A first/rest ratio well above 1 "
                 "with a much lower CV without it is a cold start, not noise.")


# ---------------------------------------------------------------- 8. client-side share


def client_side(an_cells: pd.DataFrame, df: pd.DataFrame, multi: bool) -> Table | None:
    """Per cell: how much of e2e and TTFT is our client's and the network's (see :mod:`analysis.client_share`)."""
    per = client_share.per_cell(df, an_cells.index)
    if per is None:
        return None
    t = pd.concat([_id_columns(an_cells, an_cells.index, multi), per.reset_index(drop=True)], axis=1)
    fmt = {c: (".1f" if c.endswith("%") else ".2f") for c in per.columns if not c.endswith(" n")}
    return Table("client_side", "Client-side share of the latencies", t, fmt, client_share.NOTE)


# ---------------------------------------------------------------- all


def cell_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_key with its identity and option columns (first row of the cell)."""
    cols = ["cell_key", "dataset", "cell"] + [
        c for c in ("preset", "model", "workload", "backend", "base_url") + tuple(
            k for k in SENSITIVITY_KEYS if k not in ("model", "workload", "backend")
        ) if c in df.columns
    ]
    cells = df.loc[~df["cell_key"].duplicated(), cols].set_index("cell_key").sort_index()
    flags = offload.flags(df, cells.index)
    if flags is not None:
        cells["offload"] = flags
    if STOP_REASON in df.columns and df[STOP_REASON].notna().any():
        last = df.loc[df[STOP_REASON].notna()].groupby("cell_key", sort=True)[STOP_REASON].last()
        cells[STOP_REASON] = last.reindex(cells.index)
    return cells


def analyse(df: pd.DataFrame, opts: Options | None = None) -> Analysis:
    """Tidy frame → every table (no I/O, no formatting)."""
    opts = opts or Options()
    cells = cell_frame(df)
    multi = cells["dataset"].nunique() > 1
    cs, moments = cell_statistics(df, cells, opts)
    notes: dict[str, str] = {}
    tables = [comprehensive(cells, cs, multi, opts)]
    tables += rankings(cells, cs, multi, opts)
    bvc, note = baseline_vs_chimera(df, cells, cs, multi, opts)
    if bvc is not None:
        tables.append(bvc)
    else:
        notes["baseline_vs_chimera"] = note
    sens, note = sensitivity(df, cells, moments, opts)
    tables += sens
    if note:
        notes["sensitivity"] = note
    tables.append(population(cells, cs, multi, opts))
    ro = run_order(df, cells, cs, multi, opts)
    if ro is not None:
        tables.append(ro)
    cst = client_side(cells, df, multi)
    if cst is not None:
        tables.append(cst)
    if opts.search:
        from analysis.search import search_tables

        tables += search_tables(df, cells, opts)
    from analysis.agents import analyse_agents  # imports this module's Table/Options

    agent_tables, concurrency_figure = analyse_agents(df, cells, multi, opts)
    tables += agent_tables
    return Analysis(tables, cells, cs, notes, multi, opts, concurrency_figure)
