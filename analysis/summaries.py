"""The descriptive tables: every cell's statistics, the spread of cell means, and the client-side share.

Each builder reads the per-cell statistics of :mod:`analysis.cellstats` (or,
for the client-side share, :mod:`analysis.client_share`) and only arranges and
labels them; no test or comparison happens here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import client_share, intervals, stats
from analysis.base import STOP_REASON, Options, Table, ci_label, ci_methods, id_columns
from analysis.columns import DURATIONS, HEADLINE, OPTIONAL, TOKENS, TTFT


def comprehensive(an_cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options) -> Table:
    """One row per cell: n, mean/sd/CV/CI of throughput and TTFT, TTFT quantiles, durations, tokens, failures."""
    ci = ci_label(opts)
    t = id_columns(an_cells, cs.index, multi)
    fmt: dict[str, str] = {}
    t["n"] = cs["n"].to_numpy(int)
    _add_headline_columns(t, fmt, cs, opts)
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
    note = (
        f"Statistics over measured trials (status ok, not warm-up); n = measured trials. "
        f"{ci}: {ci_methods(cs, opts)}. sd: {'sample (ddof=1)' if opts.ddof == 1 else 'population (ddof=0)'}. "
        f"tokens = Σ eval_count; durations are the server's means; failed/warm-ups are excluded rows."
    )
    return Table("comprehensive", "Comprehensive results (one row per cell)", t, fmt, note)


def _add_headline_columns(t: pd.DataFrame, fmt: dict[str, str], cs: pd.DataFrame, opts: Options) -> None:
    """Per headline metric: [its own n,] mean, sd, CV %, CI lo/hi [, TTFT p50/p95/p99] (in place)."""
    ci = ci_label(opts)
    sd_label = "sd" if opts.ddof == 1 else "sd(pop)"
    heads = (("mean", "mean"), ("sd", sd_label), ("cv_pct", "CV %"), ("ci_lo", f"{ci} lo"), ("ci_hi", f"{ci} hi"))
    for metric in HEADLINE:
        c = metric.column
        if f"{c}:mean" not in cs:
            continue
        lab, d = metric.label, metric.decimals
        if (cs[f"{c}:n"] != cs["n"]).any():
            t[f"{lab} n"] = cs[f"{c}:n"].to_numpy(int)
        for stat, head in heads:
            col = f"{lab} {head}"
            t[col] = cs[f"{c}:{stat}"].to_numpy()
            fmt[col] = ".2f" if stat == "cv_pct" else f".{d}f"
        add_note_column(t, cs, c, lab, ci)
        if c == TTFT and f"{c}:p50" in cs:
            for stat in ("p50", "p95", "p99"):
                t[f"{lab} {stat}"] = cs[f"{c}:{stat}"].to_numpy()
                fmt[f"{lab} {stat}"] = f".{d}f"


def add_note_column(t: pd.DataFrame, cs: pd.DataFrame, column: str, label: str, ci: str,
                    index: pd.Index | None = None) -> None:
    """``<label> <ci> note`` beside the bounds when a cell of ``index`` has words instead of bounds (in place)."""
    notes = cs[f"{column}:{intervals.NOTE}"]
    notes = notes if index is None else notes.loc[index]
    if (notes != "").any():
        t[intervals.note_column(label, ci)] = notes.to_numpy()


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


def client_side(an_cells: pd.DataFrame, df: pd.DataFrame, multi: bool) -> Table | None:
    """Per cell: how much of e2e and TTFT is our client's and the network's (see :mod:`analysis.client_share`)."""
    per = client_share.per_cell(df, an_cells.index)
    if per is None:
        return None
    t = pd.concat([id_columns(an_cells, an_cells.index, multi), per.reset_index(drop=True)], axis=1)
    fmt = {c: (".1f" if c.endswith("%") else ".2f") for c in per.columns if not c.endswith(" n")}
    return Table("client_side", "Client-side share of the latencies", t, fmt, client_share.NOTE)
