"""Run order / cold start: each cell's first measured trial against the rest, to make a cold model load visible.

Trials are ordered by ``started_at`` when present, else by ``trial`` then file
order.  The CV without the first trial shows how much of a cell's spread is a
one-off cold start.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.typing import DataFrameGroupBy

from analysis import stats
from analysis.base import Options, Table, id_columns
from analysis.cellstats import Measured
from analysis.columns import THROUGHPUT, TTFT
from sweep.contract import Status


def run_order(df: pd.DataFrame, an_cells: pd.DataFrame, cs: pd.DataFrame, multi: bool, opts: Options,
              measured: Measured | None = None) -> Table | None:
    """First measured trial vs the rest, per cell (TTFT when measured, else throughput); None without trials."""
    metric = TTFT if f"{TTFT}:mean" in cs else THROUGHPUT
    lab = "TTFT ms" if metric == TTFT else "tok/s"
    m, by_cell = _rows(df, metric, measured)
    if m.empty:
        return None
    first_rows, order_by = _first_rows(m, by_cell)
    rest = _first_and_rest(m, by_cell, metric, first_rows, opts)
    index = rest.index
    t = id_columns(an_cells, index, multi)
    t["n"] = rest["n"].to_numpy(int)
    _add_warmups(t, df, metric, lab, index)
    t[f"first {lab}"] = rest["first"].to_numpy()
    t[f"rest {lab} mean"] = rest["rest_mean"].to_numpy()
    t["first / rest"] = (rest["first"] / rest["rest_mean"]).to_numpy()
    t["CV % all"] = cs.loc[index, f"{metric}:cv_pct"].to_numpy()
    t["CV % w/o first"] = stats.cv_pct(rest["rest_sd"].to_numpy(), rest["rest_mean"].to_numpy())
    t["first > max(rest)"] = np.where(rest["rn"].to_numpy() > 0,
                                      np.where(rest["first"].to_numpy() > rest["rest_max"].to_numpy(), "yes", "no"), "")
    d = 1 if metric == TTFT else 2
    fmt = {c: f".{d}f" for c in t.columns if lab in c}
    fmt.update({"first / rest": ".2f", "CV % all": ".2f", "CV % w/o first": ".2f"})
    return Table("run_order", f"Run order / cold start ({lab})", t, fmt,
                 f"First measured trial (by {order_by}) vs the rest of the cell. A first/rest ratio well above 1 "
                 "with a much lower CV without it is a cold start, not noise.")


def _rows(df: pd.DataFrame, metric: str, measured: Measured | None) -> tuple[pd.DataFrame, DataFrameGroupBy]:
    """The measured rows with a value of ``metric``, and their grouping by cell (the shared one when it fits)."""
    if measured is not None and metric in measured.frame.columns and measured.frame[metric].notna().all():
        return measured.frame, measured.by_cell
    m = df.loc[df["measured"] & df[metric].notna(),
               ["cell_key", metric] + [c for c in ("started_at", "trial") if c in df.columns]]
    return m, m.groupby("cell_key", sort=True)


def _first_rows(m: pd.DataFrame, by_cell: DataFrameGroupBy) -> tuple[pd.Index, str]:
    """The row label of each cell's first measured trial, and what "first" was ordered by.

    The earliest ``started_at`` (else the lowest ``trial``), ties to the row read first:
    what a stable sort by (cell, that column) puts first, without sorting a million rows.
    """
    for column in ("started_at", "trial"):
        if column in m.columns and m[column].notna().all():
            first = pd.Index(by_cell[column].idxmin().to_numpy())
            break
    else:
        first = m.index[~m["cell_key"].duplicated().to_numpy()]
    order_by = "started_at" if "started_at" in m.columns else ("trial" if "trial" in m.columns else "file order")
    return first, order_by


def _first_and_rest(m: pd.DataFrame, by_cell: DataFrameGroupBy, metric: str, first_rows: pd.Index,
                    opts: Options) -> pd.DataFrame:
    """Per cell: n, the first value, and mean, sd and max of the rest (from sums, without re-scanning)."""
    first = m.loc[first_rows].set_index("cell_key")[metric]
    g = by_cell[metric]
    n = g.count()
    s1 = g.sum()
    is_first = m.index.isin(first_rows)
    derived = pd.DataFrame({"sq": m[metric] ** 2, "rest": m[metric].where(~is_first)})
    by_derived = derived.groupby(m["cell_key"], sort=True)
    s2 = by_derived["sq"].sum()
    first = first.reindex(n.index)
    rn = n - 1
    rest_mean = (s1 - first) / rn.where(rn > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rest_m2 = (s2 - first**2) - rn * rest_mean**2
        rest_sd = np.sqrt(np.clip(rest_m2, 0, None) / (rn - opts.ddof).where(rn - opts.ddof > 0))
    rest_max = by_derived["rest"].max().reindex(n.index)
    return pd.DataFrame({"n": n, "first": first, "rn": rn, "rest_mean": rest_mean, "rest_sd": rest_sd,
                         "rest_max": rest_max})


def _add_warmups(t: pd.DataFrame, df: pd.DataFrame, metric: str, lab: str, index: pd.Index) -> None:
    """The warm-up count and mean per cell, when the sweep stored warm-ups (in place)."""
    wu = df.loc[df["is_warmup"] & (df["status"] == Status.OK) & df[metric].notna(), ["cell_key", metric]]
    if len(wu):
        wg = wu.groupby("cell_key")[metric]
        t["warm-ups"] = wg.count().reindex(index, fill_value=0).to_numpy(int)
        t[f"warm-up {lab} mean"] = wg.mean().reindex(index).to_numpy()
