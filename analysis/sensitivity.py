"""Parameter sensitivity: marginal means per level of each swept parameter, its significance, and interactions.

Computed from per-cell moments (a parameter is constant within a cell), so the
cost does not grow with the number of trials; only the opt-in Kruskal–Wallis
test reads the raw trials.  Uses the chimera cells when the input has any (the
baseline is not part of the sweep grid), else all cells.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from analysis import intervals, power, stats
from analysis.base import Options, Table, ci_label, significance
from analysis.columns import HEADLINE, SENSITIVITY_KEYS, Metric
from analysis.load import format_level

# Per parameter and metric: the per-level summary (n, mean, CI) and the test's p.
_PerMetric = dict[Metric, tuple[pd.DataFrame, float]]


class _Levels(NamedTuple):
    """One parameter's level per cell: as printed, and as integer codes in order of first appearance.

    The pooling groups cells by the codes: the same groups in the same order as the
    printed labels (so the same sums), without pandas' string machinery, which
    cost more than the arithmetic on a thousand cells.
    """

    labels: pd.Series        # per cell (cell_key index): the level as the tables print it
    codes: np.ndarray        # per cell: the level's code
    names: np.ndarray        # code → printed level


def sensitivity(
    df: pd.DataFrame, an_cells: pd.DataFrame, moments: dict[str, pd.DataFrame], opts: Options
) -> tuple[list[Table], str]:
    """The levels, summary and interaction tables, or no table and the sentence the report prints instead."""
    cells, scope = _scope(an_cells)
    params = swept_parameters(cells)
    if not params:
        return [], f"No parameter varies among the {scope}: no sensitivity analysis."
    metrics = [m for m in HEADLINE if m.column in moments]
    raw = None
    if opts.sensitivity_test == "kruskal":
        raw = df.loc[df["measured"] & df["cell_key"].isin(cells.index), ["cell_key"] + [m.column for m in metrics]]
    cell_moments = {k: v.loc[cells.index] for k, v in moments.items()}
    levels = {p: _levels(cells[p], p) for p in params}
    level_rows: list[dict[str, Any]] = []
    summary_rows: list[dict[str, Any]] = []
    for p in params:
        per_metric = {metric: _by_level(metric, cell_moments, levels[p], raw, opts) for metric in metrics}
        order = _sort_levels(cells[p])
        level_rows += _level_rows(p, [format_level(p, v) for v in order], levels[p].labels, per_metric, opts)
        summary_rows.append(_summary_row(p, len(order), per_metric))
    tables = [_levels_table(level_rows, scope, metrics, opts), _summary_table(summary_rows, opts)]
    inter_rows = _interaction_rows(levels, metrics, cell_moments)
    if inter_rows:
        tables.append(_interactions_table(inter_rows, opts))
    return tables, ""


def swept_parameters(cells: pd.DataFrame) -> list[str]:
    """Parameters that take more than one value (null counts as 'default') among ``cells``."""
    return [k for k in SENSITIVITY_KEYS if k in cells.columns and cells[k].nunique(dropna=False) > 1]


def _scope(an_cells: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The chimera cells when there are any (and "chimera cells"), else every cell (and "all cells")."""
    if "preset" in an_cells.columns:
        chimera = an_cells["preset"].astype(str).str.lower() == "chimera"
        if chimera.any():
            return an_cells[chimera], "chimera cells"
    return an_cells, "all cells"


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


def _levels(values: pd.Series, parameter: str) -> _Levels:
    """Each cell's level of ``parameter`` (null → 'default'), each distinct value formatted once."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    text = np.array([format_level(parameter, v) for v in uniques], dtype=object)[codes]
    codes, names = pd.factorize(text)          # two values printed alike are one level
    return _Levels(pd.Series(text, index=values.index, dtype=object), codes, np.asarray(names, dtype=object))


def _pooled(moments: pd.DataFrame, levels: _Levels) -> pd.DataFrame:
    """Cell moments combined per level, indexed by the printed level."""
    comb = stats.combine_moments(moments.assign(level=levels.codes), "level")
    return comb.set_axis(pd.Index(levels.names[comb.index.to_numpy()], dtype=object, name="level"))


def _by_level(metric: Metric, moments: dict[str, pd.DataFrame], levels: _Levels,
              raw: pd.DataFrame | None, opts: Options) -> tuple[pd.DataFrame, float]:
    """One metric pooled per level (n, mean, CI from the combined cell moments) and the test's p."""
    cell_mom = moments[metric.column]
    comb = _pooled(cell_mom, levels)
    by_level = cell_mom.groupby(levels.codes, sort=False)
    extra = pd.DataFrame({"min": by_level["min"].min(), "max": by_level["max"].max()})
    if "reloads" in cell_mom:
        extra["reloads"] = by_level["reloads"].sum()
    extra = extra.set_axis(pd.Index(levels.names[extra.index.to_numpy()], dtype=object, name="level"))
    summ = intervals.from_moments(comb.join(extra), confidence=opts.confidence, ddof=opts.ddof)
    if raw is None:
        p = stats.anova_oneway(comb["n"], comb["mean"], comb["m2"])["p"]
    else:
        by_trial = raw["cell_key"].map(levels.labels)
        p = stats.kruskal_p([g.to_numpy() for _, g in raw[metric.column].groupby(by_trial)])
    return summ, p


def _level_rows(parameter: str, order: list[str], labels: pd.Series, per_metric: _PerMetric,
                opts: Options) -> list[dict[str, Any]]:
    """One row per level, in natural order: cells at that level and each metric's n, mean and CI."""
    ci = ci_label(opts)
    ncells = labels.value_counts()
    rows = []
    for label in order:
        row: dict[str, Any] = {"parameter": parameter, "level": label, "cells": int(ncells.get(label, 0))}
        for metric, (summ, _) in per_metric.items():
            s = summ.loc[label] if label in summ.index else None
            row[f"{metric.label} n"] = int(s["n"]) if s is not None else 0
            row[f"{metric.label} mean"] = s["mean"] if s is not None else np.nan
            row[f"{metric.label} {ci} lo"] = s["ci_lo"] if s is not None else np.nan
            row[f"{metric.label} {ci} hi"] = s["ci_hi"] if s is not None else np.nan
            row[intervals.note_column(metric.label, ci)] = s[intervals.NOTE] if s is not None else intervals.N_TOO_SMALL
        rows.append(row)
    return rows


def _summary_row(parameter: str, levels: int, per_metric: _PerMetric) -> dict[str, Any]:
    """Per metric: the best level, the spread of the level means (max Δ, max Δ %) and p."""
    row: dict[str, Any] = {"parameter": parameter, "levels": levels}
    for metric, (summ, test) in per_metric.items():
        means = summ["mean"].dropna()
        if len(means):
            hi_l, lo_l = means.idxmax(), means.idxmin()
            best = hi_l if metric.higher_is_better else lo_l
            delta = means.max() - means.min()
            pct = delta / abs(means.min()) * 100 if means.min() != 0 else np.nan
        else:
            best, delta, pct = "", np.nan, np.nan
        row[f"{metric.label} best level"] = best
        row[f"{metric.label} max Δ"] = delta
        row[f"{metric.label} max Δ %"] = pct
        row[f"{metric.label} p"] = test
        n, var = summ["n"].to_numpy(float), summ["var"].to_numpy(float)
        used = n > 0
        within = n[used].sum() - used.sum()
        row[f"_{metric.label} mse"] = np.nansum(var[used] * (n[used] - 1)) / within if within > 0 else np.nan
        row[f"_{metric.label} n"] = n[used]
        row[f"_{metric.label} ref"] = abs(means.min()) if len(means) else np.nan
    return row


def _interaction_rows(levels: dict[str, _Levels], metrics: list[Metric],
                      moments: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """Per pair of parameters and metric: the F-test of the A×B term from the combination moments."""
    rows = []
    for a, b in itertools.combinations(levels, 2):
        for metric in metrics:
            mom = moments[metric.column].assign(a=levels[a].codes, b=levels[b].codes)
            comb = stats.combine_moments(mom, ["a", "b"]).reset_index()
            r = stats.anova_interaction(comb["a"], comb["b"], comb["n"], comb["mean"], comb["m2"])
            rows.append({
                "parameter A": a, "parameter B": b, "metric": metric.label,
                "combinations": int((comb["n"] > 0).sum()), "F": r["F"],
                "df1": r["df1"], "df2": r["df2"], "p": r["p"],
            })
    return rows


def _correction_name(opts: Options) -> str:
    return "Holm" if opts.correction == "holm" else "Benjamini–Hochberg"


def _levels_table(rows: list[dict[str, Any]], scope: str, metrics: list[Metric], opts: Options) -> Table:
    ci = ci_label(opts)
    lv = pd.DataFrame(rows)
    for metric in metrics:
        note = intervals.note_column(metric.label, ci)
        if note in lv and not (lv[note] != "").any():
            lv = lv.drop(columns=note)
    fmt = {c: (".2f" if c.startswith("tok/s") else ".1f") for c in lv.columns
           if (" mean" in c or ci in c) and not c.endswith(" note")}
    return Table(
        "sensitivity_levels", "Parameter sensitivity: marginal means per level", lv, fmt,
        f"Over the measured trials of the {scope}, pooled across the other parameters (marginal means); "
        f"n = trials, cells = cells at that level; {ci}: "
        f"{intervals.methods_note([(m.column, m.label) for m in metrics])}.",
    )


def _summary_table(rows: list[dict[str, Any]], opts: Options) -> Table:
    """The summary rows with p adj (over every parameter × metric) and the effect beside each p."""
    sm = pd.DataFrame(rows)
    pcols = [c for c in sm.columns if c.endswith(" p")]
    raw_p = sm[pcols].to_numpy(float).ravel()
    flat = stats.adjust_pvalues(raw_p, opts.correction).reshape(len(sm), len(pcols))
    level = power.family_alpha(opts.alpha, raw_p)
    for j, c in enumerate(pcols):
        lab = c[:-2]
        sm.insert(sm.columns.get_loc(c) + 1, f"{lab} p adj", flat[:, j])
        sm.insert(sm.columns.get_loc(c) + 2, f"{lab} effect", significance(flat[:, j], opts.alpha))
        mde = np.array([power.mde_anova(n, mse, level) if not np.isnan(p) else np.nan
                        for n, mse, p in zip(sm.pop(f"_{lab} n"), sm.pop(f"_{lab} mse"), sm[c])])
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = mde / sm.pop(f"_{lab} ref").to_numpy(float) * 100
        sm.insert(sm.columns.get_loc(c) + 3, f"{lab} MDE", mde)
        sm.insert(sm.columns.get_loc(c) + 4, f"{lab} MDE %", pct)
    fmt = {}
    for c in sm.columns:
        if c.endswith(" p") or c.endswith(" p adj"):
            fmt[c] = ".3g"
        elif "Δ" in c or "MDE" in c:
            fmt[c] = ".1f" if ("%" in c or c.startswith("TTFT")) else ".2f"
    test = "one-way ANOVA" if opts.sensitivity_test == "anova" else "Kruskal–Wallis"
    return Table(
        "sensitivity_summary", "Parameter sensitivity: effect of each parameter", sm, fmt,
        f"max Δ = highest − lowest level mean (max Δ % relative to the lowest). p: {test} over trials "
        f"grouped by level; p adj: {_correction_name(opts)} over all parameters × metrics; α = {opts.alpha}. "
        f"MDE: the smallest max Δ the one-way ANOVA detects with 80 % power (noncentral F) when the two "
        f"least-replicated levels differ and the rest sit between, at α / {_tests(raw_p)} (the level one effect "
        f"must reach after the correction); MDE % relative to the lowest level mean. 'not significant' means no "
        f"max Δ larger than the MDE could have been seen.",
    )


def _tests(p: np.ndarray) -> int:
    return max(int(np.count_nonzero(~np.isnan(p))), 1)


def _interactions_table(rows: list[dict[str, Any]], opts: Options) -> Table:
    it = pd.DataFrame(rows)
    it["p adj"] = stats.adjust_pvalues(it["p"].to_numpy(float), opts.correction)
    it["interaction"] = significance(it["p adj"], opts.alpha)
    return Table(
        "sensitivity_interactions", "Parameter sensitivity: two-way interactions", it,
        {"F": ".3g", "df1": ".0f", "df2": ".0f", "p": ".3g", "p adj": ".3g"},
        "F-test of the A×B term of a two-way ANOVA (additive vs full OLS model, fitted on the "
        f"A×B combination moments); p adj: {_correction_name(opts)} over all pairs × metrics. 'not testable': the "
        "two parameters are confounded (no interaction degrees of freedom) or there is no replication.",
    )
