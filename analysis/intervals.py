"""Which confidence interval each metric gets, decided here and nowhere else.

Why a module of its own: a latency (TTFT, inter-token gap, e2e, load time) is
strictly positive and right-skewed — one model reload in a cell of fast calls
makes the Student-t interval of the mean run below zero (the TR111 report
printed a TTFT CI of −542 … 3199 ms).  Throughput is a rate of a long
generation, close to symmetric, where the t-interval fits.  Every table that
prints an interval asks :func:`method_for` which one to use and
:func:`describe_method` how to name it in its header.

Methods:

``t``
    Student t on the raw values (mean ± t·s/√n).  Throughput is positive too:
    a cell whose t-interval would reach below zero (a very noisy cell at small
    n) takes the ``log-t`` interval instead, so no printed bound of a positive
    metric is negative.
``log-t``
    t-interval on the log scale for the *arithmetic mean* of a log-normal
    variable (the modified Cox method, Olsson 2005, J. Stat. Educ. 13(1)):
    exp(ȳ + s²/2 ± t_{n−1}·√(s²/n + s⁴/(2(n−1)))), where ȳ and s² are the mean
    and sample variance of log(x).  Always positive, wide on the slow side,
    closed-form from per-cell log moments (so it stays vectorised on a million
    rows).  A cell with a value ≤ 0 cannot be logged: it falls back to the
    percentile bootstrap, whose bounds lie inside the observed range.
``bootstrap-bca`` / ``bootstrap-percentile``
    scipy's bootstrap of the mean (``--bootstrap``); bounds lie inside the
    range of the data, so never negative for positive data.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pandas.api.typing import SeriesGroupBy
from scipy import stats as sps

from analysis import stats

Method = Literal["t", "log-t", "bootstrap-bca", "bootstrap-percentile"]

NAMES: dict[str, str] = {
    "t": "Student t (t on the log scale for a cell whose t-interval would cross 0)",
    "log-t": "t on the log scale (Cox, log-normal mean)",
    "bootstrap-bca": "bootstrap BCa",
    "bootstrap-percentile": "bootstrap percentile",
}


def is_positive_skewed(column: str) -> bool:
    """Latencies and durations: every column measured in milliseconds."""
    return column.endswith("_ms") or "_ms_" in column


def method_for(column: str, bootstrap: bool = False, bootstrap_method: str = "bca") -> Method:
    """The one rule: ``--bootstrap`` → bootstrap for every metric; else log-t for latencies, t for rates."""
    if bootstrap:
        return "bootstrap-percentile" if bootstrap_method == "percentile" else "bootstrap-bca"
    return "log-t" if is_positive_skewed(column) else "t"


def describe_method(method: str, resamples: int | None = None, seed: int | None = None) -> str:
    """The method's name as a table header states it."""
    name = NAMES[method]
    if method.startswith("bootstrap") and resamples is not None:
        name += f" ({resamples} resamples, seed {seed})"
    return name


def log_moments(values: pd.Series, keys: pd.Series | list[pd.Series]) -> pd.DataFrame:
    """Per group (n, mean, m2) of log(values) plus ``nonpos``: how many values were ≤ 0 (not logged)."""
    def grouped(column: pd.Series) -> SeriesGroupBy:
        return column.groupby(keys, sort=False, dropna=False, observed=True)

    return moments_of_logs(grouped(log_values(values)), grouped(values <= 0))


def log_values(values: pd.Series) -> pd.Series:
    """log(values) where a value is > 0, else NaN (those are counted apart, as ``nonpos``)."""
    x = values.to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.Series(np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan), index=values.index)


def moments_of_logs(logged: SeriesGroupBy, nonpos: SeriesGroupBy) -> pd.DataFrame:
    """:func:`log_moments` from already grouped :func:`log_values` and ``values <= 0`` (one shared grouping)."""
    mom = stats.moments_of(logged)
    mom["nonpos"] = nonpos.sum()
    return mom


def cox_interval(
    n: np.ndarray, log_mean: np.ndarray, log_m2: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Modified Cox interval of a log-normal mean from log moments (vectorised); NaN for n < 2."""
    n, ybar, m2 = (np.asarray(a, dtype=float) for a in (n, log_mean, log_m2))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        s2 = np.where(n >= 2, m2 / (n - 1), np.nan)
        t = sps.t.ppf(0.5 + confidence / 2, np.where(n >= 2, n - 1, np.nan))
        centre = ybar + s2 / 2
        half = t * np.sqrt(s2 / n + s2**2 / (2 * (n - 1)))
        return np.exp(centre - half), np.exp(centre + half)


def mean_interval(
    x: np.ndarray, method: Method, confidence: float = 0.95, resamples: int = 9999, seed: int = 0
) -> tuple[float, float]:
    """One sample's interval of the mean by ``method`` (the per-sample path: tests, the gate, fallbacks)."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if method == "t":
        d = stats.describe(x, confidence=confidence)
        return d["ci_lo"], d["ci_hi"]
    if method == "log-t" and (x > 0).all():
        if x.size < 2:
            return (np.nan, np.nan)
        lx = np.log(x)
        lo, hi = cox_interval(np.array([x.size]), np.array([lx.mean()]),
                              np.array([((lx - lx.mean()) ** 2).sum()]), confidence)
        return float(lo[0]), float(hi[0])
    kind = "bca" if method == "bootstrap-bca" else "percentile"
    return stats.bootstrap_mean_ci(x, kind, resamples, seed, confidence)


def apply_log_t(
    summary: pd.DataFrame, logmom: pd.DataFrame, raw: dict[object, np.ndarray] | None = None,
    confidence: float = 0.95, seed: int = 0,
) -> pd.DataFrame:
    """Replace ``ci_lo``/``ci_hi`` of a moments summary by the log-t interval (same index).

    Groups holding a value ≤ 0 take the percentile bootstrap over their raw
    values (``raw``: group → values); without them their interval is NaN,
    never a negative bound.
    """
    out = summary.copy()
    lm = logmom.reindex(out.index)
    lo, hi = cox_interval(lm["n"].fillna(0).to_numpy(), lm["mean"].to_numpy(), lm["m2"].to_numpy(), confidence)
    bad = lm["nonpos"].fillna(0).to_numpy() > 0
    lo[bad], hi[bad] = np.nan, np.nan
    for i in np.flatnonzero(bad):
        key = out.index[i]
        if raw is not None and key in raw:
            lo[i], hi[i] = stats.bootstrap_mean_ci(raw[key], "percentile", 1999, seed, confidence)
    out["ci_lo"], out["ci_hi"] = lo, hi
    return out


def methods_note(metrics: list[tuple[str, str]], bootstrap: bool = False, bootstrap_method: str = "bca",
                 resamples: int | None = None, seed: int | None = None) -> str:
    """``tok/s Student t; TTFT ms t on the log scale (…)`` for (column, label) pairs: a table header's CI line."""
    parts = []
    for column, label in metrics:
        m = method_for(column, bootstrap, bootstrap_method)
        parts.append(f"{label} {describe_method(m, resamples, seed)}")
    return "; ".join(parts)
