"""Per-cell identity and statistics: the one scan over trials that every per-cell table reads.

Trials are reduced to per-cell moments (n, mean, m2) by a handful of pandas
``groupby`` calls; every further statistic is computed from those moments (see
:mod:`analysis.stats`), so later tables cost nothing per trial.  Only the
opt-in bootstrap touches raw samples per cell.
"""

from __future__ import annotations

import pandas as pd

from analysis import client_share, flags, intervals, latency, stats
from analysis.base import STOP_REASON, Options, present_metrics
from analysis.columns import DURATIONS, HEADLINE, OPTIONAL, SENSITIVITY_KEYS, TOKENS, TTFT, Metric
from analysis.load import RELOADED, as_bool

_SUMMARY_STATS = ("n", "mean", "sd", "cv_pct", "ci_lo", "ci_hi", "var", intervals.NOTE)
# Measured columns read beside the metrics: run order (trial, started_at) and the client-side share.
_ALSO_READ = ("trial", "started_at", client_share.CLIENT_E2E, client_share.CLIENT_TTFT, latency.E2E) + tuple(
    m.column for m in latency.TIMING)   # and the token timings (ITL, TPOT, prompt tok/s: analysis.latency)


def cell_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_key with its identity and option columns (first row of the cell)."""
    cols = ["cell_key", "dataset", "cell"] + [
        c for c in ("preset", "model", "workload", "backend", "base_url", "server_parallel") + tuple(
            k for k in SENSITIVITY_KEYS if k not in ("model", "workload", "backend")
        ) if c in df.columns
    ]
    cells = df.loc[~df["cell_key"].duplicated(), cols].set_index("cell_key").sort_index()
    offload = flags.flags(df, cells.index)
    if offload is not None:
        cells["offload"] = offload
    if STOP_REASON in df.columns and df[STOP_REASON].notna().any():
        last = df.loc[df[STOP_REASON].notna()].groupby("cell_key", sort=True)[STOP_REASON].last()
        cells[STOP_REASON] = last.reindex(cells.index)
    return cells


class Measured:
    """The measured trials (status ok, not warm-up), cut once to the columns the tables read, grouped by cell once.

    Why: each table used to copy the million measured rows again (text columns
    included, an Arrow take) and group them again (a hash of every cell key per
    ``groupby``).  Here the copy holds only numeric columns the tables read (and
    ``reloaded``, as booleans, when the input has it), and the two groupings are
    built once and shared: ``by_cell`` (``sort=True``, cell order) and ``by_seen``
    (``sort=False``: what :func:`analysis.stats.group_moments` uses, so the
    moments keep their numbers to the last bit).
    """

    def __init__(self, df: pd.DataFrame) -> None:
        wanted = [m.column for m in HEADLINE + DURATIONS + OPTIONAL] + [TOKENS, *_ALSO_READ]
        frame = df.loc[df["measured"], ["cell_key"] + [c for c in dict.fromkeys(wanted) if c in df.columns]]
        if RELOADED in df.columns:
            frame[RELOADED] = as_bool(df.loc[df["measured"], RELOADED])
        self.frame = frame
        self.by_cell = frame.groupby("cell_key", sort=True)
        self.by_seen = frame.groupby("cell_key", sort=False, dropna=False, observed=True)

    def moments(self, column: str) -> pd.DataFrame:
        """Per cell (first-seen order) (n, mean, m2) of ``column``: :func:`analysis.stats.group_moments`."""
        return stats.moments_of(self.by_seen[column])

    def extremes(self, column: str) -> pd.DataFrame:
        """Per cell: min, max of ``column`` and ``reloads`` (its trials that reloaded the model, when known)."""
        g = self.by_seen[column]
        out = pd.DataFrame({"min": g.min(), "max": g.max()})
        if RELOADED in self.frame.columns:
            flagged = self.frame[RELOADED] & self.frame[column].notna()
            out["reloads"] = flagged.groupby(self.frame["cell_key"], sort=False).sum()
        return out


def cell_statistics(
    df: pd.DataFrame, cells: pd.DataFrame, opts: Options, measured: Measured | None = None
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per-cell numbers for every metric: the one scan over trials the hot path makes.

    Returns a wide frame keyed by cell_key with "<column>:<stat>" columns, and
    the raw (n, mean, m2, min, max[, reloads]) per headline metric for later
    combination (sensitivity pools them per level).
    """
    measured = measured or Measured(df)
    out = _row_counts(df, measured, cells.index)
    moments: dict[str, pd.DataFrame] = {}
    for metric in present_metrics(df, HEADLINE):
        summ = _headline_summary(measured, metric, cells.index, opts, moments)
        for stat in _SUMMARY_STATS:
            out[f"{metric.column}:{stat}"] = summ[stat]
    for metric in present_metrics(df, latency.SUMMARISED):   # same interval, same path; not pooled by sensitivity
        summ = _headline_summary(measured, metric, cells.index, opts, {})
        for stat in _SUMMARY_STATS:
            out[f"{metric.column}:{stat}"] = summ[stat]
    _add_descriptive(out, measured, df)
    return out, moments


def _row_counts(df: pd.DataFrame, measured: Measured, index: pd.Index) -> pd.DataFrame:
    """rows (all), n (measured), failed and warm-up rows per cell."""
    all_g = df.groupby("cell_key", sort=True)
    out = pd.DataFrame(index=index)
    out["rows"] = all_g.size()
    out["n"] = measured.by_cell.size().reindex(index, fill_value=0)
    out["failed"] = all_g["is_failed"].sum().astype(int)
    out["warmups"] = all_g["is_warmup"].sum().astype(int)
    return out


def _headline_summary(measured: Measured, metric: Metric, index: pd.Index, opts: Options,
                      moments: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """n/mean/sd/CV/CI/var/note of one headline metric per cell; stores its moments in ``moments``.

    The interval is :func:`analysis.intervals.from_moments` (log-t: every headline
    metric is positive); with ``--bootstrap`` the bounds of the cells that have
    bounds are the bootstrap's.
    """
    mom = measured.moments(metric.column).join(measured.extremes(metric.column)).reindex(index)
    mom["n"] = mom["n"].fillna(0)
    moments[metric.column] = mom
    summ = intervals.from_moments(mom, confidence=opts.confidence, ddof=opts.ddof)
    if opts.bootstrap:
        raw = {k: v.dropna().to_numpy(float) for k, v in measured.by_cell[metric.column]}
        summ = intervals.bootstrap_bounds(summ, raw, opts.bootstrap_method, opts.resamples, opts.seed,
                                          opts.confidence)
    return summ


def quantiles(by_cell: pd.core.groupby.DataFrameGroupBy, column: str, percents: tuple[int, ...],
              index: pd.Index) -> dict[str, pd.Series]:
    """``{"<column>:p<q>": per-cell percentile}`` over each cell's trials (linear interpolation; NaN-free values)."""
    q = by_cell[column].quantile([p / 100 for p in percents]).unstack()
    return {f"{column}:p{p}": q[p / 100].reindex(index) for p in percents}


def _add_descriptive(out: pd.DataFrame, measured: Measured, df: pd.DataFrame) -> None:
    """TTFT and e2e p50/p95/p99, the means of the server durations and optional columns, Σ tokens (in place)."""
    index, m, by_cell = out.index, measured.frame, measured.by_cell
    for column in latency.PERCENTILE_COLUMNS:
        if column in m.columns and m[column].notna().any():
            for name, values in quantiles(by_cell, column, latency.PERCENTILES, index).items():
                out[name] = values
    extra = present_metrics(df, DURATIONS + OPTIONAL)
    if extra:
        means = by_cell[[x.column for x in extra]].mean()
        for x in extra:
            out[f"{x.column}:mean"] = means[x.column].reindex(index)
    if TOKENS in m.columns and m[TOKENS].notna().any():
        out[f"{TOKENS}:sum"] = by_cell[TOKENS].sum().reindex(index)
