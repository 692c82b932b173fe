"""The analysis of a search (``hydra/sweeper=optuna``): best cell, optimisation history, parameter importance.

A search's cells are normal cells; what a grid report lacks is the order in
which the sampler visited them and which parameters mattered.  The visit order
is each cell's first stored trial (``started_at``), the objective is the
cell's mean of the metric over its measured trials (the job's default
objective, ``objective.*``), and importance is the share of the variance of
the cells' objective explained by each parameter's levels (η², with a
continuous parameter cut into quartiles): a model-free view that needs no
Optuna study on disk.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import intervals
from analysis.columns import SENSITIVITY_KEYS, THROUGHPUT
from analysis.load import RELOADED, as_bool, format_level
from analysis.base import CI, Options, Table

MAX_LEVELS = 6   # more distinct values than this: a continuous parameter, cut into quartiles


def _visits(df: pd.DataFrame, cells: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per cell in visit order: objective (NaN when the cell has no successful trial)."""
    first = df.groupby("cell_key")["started_at"].min()
    measured = df[df["measured"]]
    value = measured.groupby("cell_key")[metric].mean()
    out = cells.assign(first_trial=first, objective=value.reindex(cells.index))
    return out.sort_values("first_trial", kind="stable")


def history(visits: pd.DataFrame, metric: str) -> Table:
    best = visits["objective"].cummax()
    before = best.shift(1)
    improved = visits["objective"].notna() & (before.isna() | (visits["objective"] > before))
    frame = pd.DataFrame({
        "step": np.arange(1, len(visits) + 1),
        "cell": visits["cell"].to_numpy(),
        f"{metric} mean": visits["objective"].to_numpy(),
        "best so far": best.to_numpy(),
        "new best": improved.to_numpy(),
    })
    return Table("search_history", "Optimisation history (cells in the order the search visited them)", frame,
                 {f"{metric} mean": ".2f", "best so far": ".2f"},
                 note="A failed cell (no successful trial) shows an empty objective; the search scored it "
                      "objective.failed_value and went on.")


def best(df: pd.DataFrame, visits: pd.DataFrame, metric: str, opts: Options) -> Table | None:
    if visits["objective"].notna().sum() == 0:
        return None
    key = visits["objective"].idxmax()
    rows = df.loc[df["measured"] & (df["cell_key"] == key)]
    reloaded = as_bool(rows[RELOADED]).to_numpy() if RELOADED in rows.columns else None
    n, mean, lo, hi, note = intervals.sample_ci(rows[metric].to_numpy(float), reloaded=reloaded,
                                                confidence=opts.confidence)
    step = int(np.flatnonzero(visits.index == key)[0]) + 1
    frame = pd.DataFrame([{"cell": visits.at[key, "cell"], "found at step": step, "of steps": len(visits),
                           "n": n, f"{metric} mean": mean, CI: note or f"{lo:.2f} – {hi:.2f}"}])
    return Table("search_best", "Best cell", frame, {f"{metric} mean": ".2f"})


def _levels(values: pd.Series) -> pd.Series:
    """Levels for η²: the values themselves, or quartile bins for a continuous parameter."""
    if values.nunique(dropna=False) > MAX_LEVELS and pd.api.types.is_numeric_dtype(values):
        return pd.qcut(values, 4, duplicates="drop").astype(str)
    return values.map(lambda v: format_level(values.name, v))


def importance(visits: pd.DataFrame) -> Table | None:
    scored = visits[visits["objective"].notna()]
    params = [k for k in SENSITIVITY_KEYS if k in scored.columns and scored[k].nunique(dropna=False) > 1]
    if len(scored) < 3 or not params:
        return None
    y = scored["objective"].astype(float)
    total = float(((y - y.mean()) ** 2).sum())
    rows = []
    for p in params:
        levels = _levels(scored[p])
        means = y.groupby(levels).mean()
        between = float((y.groupby(levels).size() * (means - y.mean()) ** 2).sum())
        rows.append({"parameter": p, "levels": int(levels.nunique()),
                     "η² (share of variance)": between / total if total > 0 else np.nan,
                     "best level": str(means.idxmax()), "mean at best level": float(means.max())})
    frame = pd.DataFrame(rows).sort_values("η² (share of variance)", ascending=False, ignore_index=True)
    return Table("search_importance", "Parameter importance", frame,
                 {"η² (share of variance)": ".2f", "mean at best level": ".2f"},
                 note="η²: share of the variance of the cells' objective explained by the parameter's levels "
                      "(marginal, not adjusted for the other parameters; continuous values in quartiles).")


def search_tables(df: pd.DataFrame, cells: pd.DataFrame, opts: Options, metric: str = THROUGHPUT) -> list[Table]:
    """The search section's tables (best, history, importance), one dataset at a time is assumed."""
    if metric not in df.columns or "started_at" not in df.columns:
        return []
    visits = _visits(df, cells, metric)
    tables = [t for t in (best(df, visits, metric, opts), history(visits, metric), importance(visits)) if t]
    return tables
