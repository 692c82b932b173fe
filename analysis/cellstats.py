"""Per-cell identity and statistics: the one scan over trials that every per-cell table reads.

Trials are reduced to per-cell moments (n, mean, m2) by a handful of pandas
``groupby`` calls; every further statistic is computed from those moments (see
:mod:`analysis.stats`), so later tables cost nothing per trial.  Only the
opt-in bootstrap touches raw samples per cell.
"""

from __future__ import annotations

import pandas as pd

from analysis import client_share, intervals, offload, stats
from analysis.base import STOP_REASON, Options, present_metrics
from analysis.columns import DURATIONS, HEADLINE, OPTIONAL, SENSITIVITY_KEYS, TOKENS, TTFT, Metric

_SUMMARY_STATS = ("n", "mean", "sd", "cv_pct", "ci_lo", "ci_hi", "var")
# Measured columns read beside the metrics: run order (trial, started_at) and the client-side share.
_ALSO_READ = ("trial", "started_at", client_share.CLIENT_E2E, client_share.CLIENT_TTFT)


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


class Measured:
    """The measured trials (status ok, not warm-up), cut once to the columns the tables read, grouped by cell once.

    Why: each table used to copy the million measured rows again (text columns
    included, an Arrow take) and group them again (a hash of every cell key per
    ``groupby``).  Here the copy holds only numeric columns the tables read, plus
    ``<column>:log`` / ``<column>:nonpos`` of each log-t metric, and the two
    groupings are built once and shared: ``by_cell`` (``sort=True``, cell order)
    and ``by_seen`` (``sort=False``: what :func:`analysis.stats.group_moments`
    uses, so the moments keep their numbers to the last bit).
    """

    def __init__(self, df: pd.DataFrame) -> None:
        wanted = [m.column for m in HEADLINE + DURATIONS + OPTIONAL] + [TOKENS, *_ALSO_READ]
        frame = df.loc[df["measured"], ["cell_key"] + [c for c in dict.fromkeys(wanted) if c in df.columns]]
        for metric in HEADLINE:
            if metric.column in frame.columns and intervals.method_for(metric.column) == "log-t":
                frame[f"{metric.column}:log"] = intervals.log_values(frame[metric.column])
                frame[f"{metric.column}:nonpos"] = frame[metric.column] <= 0
        self.frame = frame
        self.by_cell = frame.groupby("cell_key", sort=True)
        self.by_seen = frame.groupby("cell_key", sort=False, dropna=False, observed=True)

    def moments(self, column: str) -> pd.DataFrame:
        """Per cell (first-seen order) (n, mean, m2) of ``column``: :func:`analysis.stats.group_moments`."""
        return stats.moments_of(self.by_seen[column])

    def log_moments(self, column: str) -> pd.DataFrame:
        """Per cell (n, mean, m2, nonpos) of log(``column``): :func:`analysis.intervals.log_moments`."""
        if f"{column}:log" not in self.frame.columns:
            return intervals.log_moments(self.frame[column], self.frame["cell_key"])
        return intervals.moments_of_logs(self.by_seen[f"{column}:log"], self.by_seen[f"{column}:nonpos"])


def cell_statistics(
    df: pd.DataFrame, cells: pd.DataFrame, opts: Options, measured: Measured | None = None
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per-cell numbers for every metric: the one scan over trials the hot path makes.

    Returns a wide frame keyed by cell_key with "<column>:<stat>" columns, and
    the raw (n, mean, m2) moments per headline metric (and ``"<column>:log"``,
    the log moments of a log-t metric) for later combination.
    """
    measured = measured or Measured(df)
    out = _row_counts(df, measured, cells.index)
    moments: dict[str, pd.DataFrame] = {}
    for metric in present_metrics(df, HEADLINE):
        summ = _headline_summary(measured, metric, cells.index, opts, moments)
        for stat in _SUMMARY_STATS:
            out[f"{metric.column}:{stat}"] = summ[stat]
    _add_descriptive(out, measured, df)
    if opts.bootstrap:
        _add_bootstrap_cis(out, measured, df, opts)
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
    """n/mean/sd/CV/CI/var of one headline metric per cell; stores its moments in ``moments``.

    The interval is the metric's own (:func:`analysis.intervals.method_for`):
    log-t for a latency, Student t for a rate unless that crosses zero.  With
    ``--bootstrap`` the bounds are replaced later by :func:`_add_bootstrap_cis`.
    """
    mom = measured.moments(metric.column).reindex(index)
    mom["n"] = mom["n"].fillna(0)
    moments[metric.column] = mom
    summ = stats.moments_summary(mom, ddof=opts.ddof, confidence=opts.confidence)
    if opts.bootstrap:
        return summ
    values, key = measured.frame[metric.column], measured.frame["cell_key"]
    if intervals.method_for(metric.column) == "log-t":
        logmom = measured.log_moments(metric.column).reindex(index)
        moments[f"{metric.column}:log"] = logmom
        raw = _raw_by_cell(values, key) if (logmom["nonpos"].fillna(0) > 0).any() else None
        return intervals.apply_log_t(summ, logmom, raw, opts.confidence, opts.seed)
    if (summ["ci_lo"] < 0).any():
        return _positive_fallback(summ, values, key, index, opts)
    return summ


def _raw_by_cell(values: pd.Series, key: pd.Series) -> dict[object, object]:
    """cell_key → that cell's non-null values (the per-sample fallbacks need them)."""
    return {k: v.dropna().to_numpy(float) for k, v in values.groupby(key)}


def _positive_fallback(summ: pd.DataFrame, values: pd.Series, key: pd.Series, index: pd.Index,
                       opts: Options) -> pd.DataFrame:
    """Cells whose t-interval of a positive metric (a rate) crosses zero take the log-t interval instead.

    Why: tok/s is positive; a noisy cell at n=3 printed tok/s CI −0.18 … 4.11.
    The other cells keep Student t, and the table header says so (see
    :func:`analysis.intervals.methods_note`).
    """
    logmom = intervals.log_moments(values, key).reindex(index)
    fixed = intervals.apply_log_t(summ, logmom, _raw_by_cell(values, key), opts.confidence, opts.seed)
    crossing = (summ["ci_lo"] < 0).to_numpy()
    out = summ.copy()
    out.loc[crossing, ["ci_lo", "ci_hi"]] = fixed.loc[crossing, ["ci_lo", "ci_hi"]]
    return out


def _add_descriptive(out: pd.DataFrame, measured: Measured, df: pd.DataFrame) -> None:
    """TTFT p50/p95, the means of the server durations and optional columns, Σ tokens (in place)."""
    index, m, by_cell = out.index, measured.frame, measured.by_cell
    if TTFT in m.columns and m[TTFT].notna().any():
        q = by_cell[TTFT].quantile([0.5, 0.95]).unstack()
        out[f"{TTFT}:p50"] = q[0.5].reindex(index)
        out[f"{TTFT}:p95"] = q[0.95].reindex(index)
    extra = present_metrics(df, DURATIONS + OPTIONAL)
    if extra:
        means = by_cell[[x.column for x in extra]].mean()
        for x in extra:
            out[f"{x.column}:mean"] = means[x.column].reindex(index)
    if TOKENS in m.columns and m[TOKENS].notna().any():
        out[f"{TOKENS}:sum"] = by_cell[TOKENS].sum().reindex(index)


def _add_bootstrap_cis(out: pd.DataFrame, measured: Measured, df: pd.DataFrame, opts: Options) -> None:
    """``--bootstrap``: every headline metric's CI bounds by scipy's bootstrap of each cell's mean (in place)."""
    for metric in present_metrics(df, HEADLINE):
        lo, hi = {}, {}
        for k, vals in measured.by_cell[metric.column]:
            lo[k], hi[k] = stats.bootstrap_mean_ci(
                vals.to_numpy(), opts.bootstrap_method, opts.resamples, opts.seed, opts.confidence
            )
        out[f"{metric.column}:ci_lo"] = pd.Series(lo).reindex(out.index)
        out[f"{metric.column}:ci_hi"] = pd.Series(hi).reindex(out.index)
