"""The rankings: the top ``--top`` cells by throughput (high), TTFT (low) and consistency (low CV)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from analysis import intervals
from analysis.base import Options, Table, ci_label, id_columns
from analysis.columns import THROUGHPUT, TTFT
from analysis.summaries import add_note_column


class _Ranking(NamedTuple):
    name: str
    title: str
    column: str          # the metric's trial column
    stat: str            # the per-cell statistic ranked on ("mean" or "cv_pct")
    ascending: bool      # True: lower is better
    label: str
    decimals: int


def rankings(an_cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options) -> list[Table]:
    """Top-k cells by throughput (high), TTFT (low) and consistency (low throughput CV)."""
    return [_ranking(spec, an_cells, cs, multi, opts) for spec in _specs(cs)]


def _specs(cs: pd.DataFrame) -> list[_Ranking]:
    """The rankings the per-cell statistics allow (a metric absent from the data has none)."""
    specs = []
    if f"{THROUGHPUT}:mean" in cs:
        specs.append(_Ranking("rank_throughput", "Top cells by throughput (higher is better)", THROUGHPUT, "mean",
                              False, "tok/s", 2))
    if f"{TTFT}:mean" in cs:
        specs.append(_Ranking("rank_ttft", "Top cells by TTFT (lower is better)", TTFT, "mean", True, "TTFT ms", 1))
    cv_metric = THROUGHPUT if f"{THROUGHPUT}:cv_pct" in cs else TTFT
    if f"{cv_metric}:cv_pct" in cs:
        lab = "tok/s" if cv_metric == THROUGHPUT else "TTFT ms"
        specs.append(_Ranking("rank_consistency", f"Most consistent cells (lowest {lab} CV, n ≥ 2)", cv_metric,
                              "cv_pct", True, lab, 2))
    return specs


def _ranking(spec: _Ranking, an_cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options) -> Table:
    ci = ci_label(opts)
    col, lab = spec.column, spec.label
    s = cs[f"{col}:{spec.stat}"].dropna()
    top = s.sort_values(ascending=spec.ascending, kind="mergesort").head(opts.top).index
    t = pd.DataFrame({"rank": np.arange(1, len(top) + 1)})
    t = pd.concat([t, id_columns(an_cells, top, multi)], axis=1)
    t["n"] = cs.loc[top, f"{col}:n"].to_numpy(int)
    fmt = {}
    if spec.stat == "cv_pct":
        t[f"{lab} CV %"] = cs.loc[top, f"{col}:cv_pct"].to_numpy()
        fmt[f"{lab} CV %"] = ".2f"
    t[f"{lab} mean"] = cs.loc[top, f"{col}:mean"].to_numpy()
    t[f"{lab} {ci} lo"] = cs.loc[top, f"{col}:ci_lo"].to_numpy()
    t[f"{lab} {ci} hi"] = cs.loc[top, f"{col}:ci_hi"].to_numpy()
    for c in (f"{lab} mean", f"{lab} {ci} lo", f"{lab} {ci} hi"):
        fmt[c] = f".{spec.decimals}f"
    add_note_column(t, cs, col, lab, ci, top)
    note = f"{ci}: " + intervals.methods_note([(col, lab)], opts.bootstrap, opts.bootstrap_method,
                                              opts.resamples, opts.seed) + "."
    return Table(spec.name, spec.title, t, fmt, note)
