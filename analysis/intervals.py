"""The interval of a mean: one function per statistic, and every table, summary and figure prints its result.

Why a module of its own: the same cell used to show two intervals (the terminal
summary's Student t, the report's log-normal one), intervals that did not
contain the mean printed beside them, and bounds below zero for quantities that
cannot be negative.  Here each interval is computed by one function, from the
group's moments, so a cell's interval is the same number wherever it appears.

Methods (:func:`mean_ci`):

``log-t`` (every positive quantity: latencies, durations, wall times, tok/s, speedups)
    the delta-method interval of the sample mean on the log scale,
    ``mean · exp(± t_{n−1} · s / (mean · √n))``.  It is centred on the sample
    mean (log of the mean ± t · its standard error, Var log m̄ ≈ s² / (n m̄²)), so
    it always contains the mean printed beside it; it is positive whatever the
    spread and wider on the slow side, as latencies are skewed.  For a
    well-behaved cell it is Student's t to first order: its width is
    sinh(h)/h times t's, h = t · CV / √n (1.01 × at n = 3 and CV 10 %).  It is the
    same scale as the Δ % intervals of the comparisons (log of a ratio of means).
``t``
    Student t on the raw values (mean ± t·s/√n): for quantities of either sign,
    such as the paired difference of two agents.
``bootstrap-bca`` / ``bootstrap-percentile``
    scipy's bootstrap of the mean (``--bootstrap``); bounds lie inside the data's range.

Where the data cannot support an interval, no bounds are printed but the reason
in words (:data:`NOTE`): fewer than two values (``n too small``), values that
span an order of magnitude because some trials reloaded the model (the
``reloaded`` column: ``2 of 6 trials reloaded the model``), or an interval that
would itself span more than an order of magnitude (``too variable for n = 3
(CV 80 %)``, or the reloads again when there were any).
Since hi/lo ≤ 10 means h ≤ ln(10)/2, every printed positive interval is at most
sinh(1.151)/1.151 = 1.24 × the width of Student's t on the same values.  A
comparison involving such a cell is ``inconclusive`` (:func:`usable`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from analysis import distributions, stats

Method = Literal["t", "log-t", "bootstrap-bca", "bootstrap-percentile"]

#: An interval (or a cell's values) spanning more than this ratio (hi / lo) is not printed: words instead.
MAX_RATIO = 10.0
NOTE = "ci_note"          # the column of a summary frame holding the words ("" = the bounds are printed)
N_TOO_SMALL = "n too small"

NAMES: dict[str, str] = {
    "t": "Student t",
    "log-t": "t on the log scale of the mean (mean · exp(± t·s/(mean·√n)), always inside (0, ∞))",
    "bootstrap-bca": "bootstrap BCa",
    "bootstrap-percentile": "bootstrap percentile",
}


def method_for(column: str, bootstrap: bool = False, bootstrap_method: str = "bca", positive: bool = True) -> Method:
    """The one rule: ``--bootstrap`` → the bootstrap; else log-t for a positive quantity, t for a signed one."""
    if bootstrap:
        return "bootstrap-percentile" if bootstrap_method == "percentile" else "bootstrap-bca"
    return "log-t" if positive else "t"


def describe_method(method: str, resamples: int | None = None, seed: int | None = None) -> str:
    """The method's name as a table header states it."""
    name = NAMES[method]
    if method.startswith("bootstrap") and resamples is not None:
        name += f" ({resamples} resamples, seed {seed})"
    return name


def mean_ci(
    n: np.ndarray, mean: np.ndarray, var: np.ndarray, *, positive: bool = True, confidence: float = 0.95,
    vmin: np.ndarray | None = None, vmax: np.ndarray | None = None, reloads: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, note) of the mean of each group from its n, mean, sample variance (vectorised).

    ``vmin``/``vmax`` (each group's smallest and largest value) and ``reloads``
    (how many of its trials reloaded the model) let a positive quantity whose
    values span an order of magnitude say so instead of printing bounds.  Where
    ``note`` is non-empty, ``lo`` and ``hi`` are NaN.
    """
    n, mean, var = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (n, mean, var))
    shape = np.broadcast_shapes(n.shape, mean.shape, var.shape)
    n, mean, var = (np.broadcast_to(a, shape) for a in (n, mean, var))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        t = distributions.t_ppf(0.5 + confidence / 2, np.where(n >= 2, n - 1, np.nan))
        se = np.sqrt(np.clip(var, 0, None) / n)
        if positive:
            h = t * se / mean
            lo, hi = mean * np.exp(-h), mean * np.exp(h)
        else:
            lo, hi = mean - t * se, mean + t * se
    note = np.full(shape, "", dtype=object)
    small = ~(n >= 2) | np.isnan(mean)
    note[small] = N_TOO_SMALL
    if positive:
        _positive_notes(note, n, mean, var, lo, hi, vmin, vmax, reloads)
    lo, hi = np.where(note == "", lo, np.nan), np.where(note == "", hi, np.nan)
    return lo, hi, note


def _positive_notes(note: np.ndarray, n: np.ndarray, mean: np.ndarray, var: np.ndarray, lo: np.ndarray,
                    hi: np.ndarray, vmin: np.ndarray | None, vmax: np.ndarray | None,
                    reloads: np.ndarray | None) -> None:
    """The words for a positive quantity whose data (with reloads) or interval spans an order of magnitude (in place).

    Values spanning ×10 are not by themselves a reason: a skewed latency can, and
    its interval is then narrow enough at larger n; reloaded trials mixed into a
    cell of warm ones are (two populations, one mean of neither).
    """
    free = note == ""
    with np.errstate(invalid="ignore", divide="ignore"):
        nonpos = free & ~(mean > 0)
        for i in np.flatnonzero(nonpos):
            note[i] = "mean ≤ 0: no interval of a positive quantity"
        free &= ~nonpos
        k = np.zeros(n.shape) if reloads is None else np.nan_to_num(np.broadcast_to(np.asarray(reloads, float), n.shape))
        if vmin is not None and vmax is not None:
            lo_v = np.broadcast_to(np.asarray(vmin, float), n.shape)
            hi_v = np.broadcast_to(np.asarray(vmax, float), n.shape)
            span = free & ((lo_v <= 0) | (hi_v >= MAX_RATIO * lo_v)) & (hi_v > lo_v) & (k > 0)
        else:
            span = np.zeros(n.shape, dtype=bool)
        wide = free & ~span & (hi > MAX_RATIO * lo)
        for i in np.flatnonzero((span | wide) & (k > 0)):
            note[i] = f"{int(k[i])} of {int(n[i])} trials reloaded the model"
        cv = np.sqrt(np.clip(var, 0, None)) / mean * 100
        for i in np.flatnonzero(wide & ~(k > 0)):
            note[i] = f"too variable for n = {int(n[i])} (CV {cv[i]:.0f} %)"


def summary(
    values: pd.Series, keys: pd.Series | list[pd.Series], *, positive: bool = True,
    reloaded: pd.Series | None = None, confidence: float = 0.95, ddof: int = 1,
) -> pd.DataFrame:
    """Per group of ``values``: n, mean, sd, CV %, ci_lo, ci_hi, var and ``ci_note`` (the one grouped path)."""
    mom = stats.group_moments(values, keys)
    grouped = values.groupby(keys, sort=False, dropna=False, observed=True)
    extra = pd.DataFrame({"min": grouped.min(), "max": grouped.max()})
    if reloaded is not None:
        extra["reloads"] = (reloaded.astype(bool) & values.notna()).groupby(keys, sort=False, dropna=False,
                                                                           observed=True).sum()
    return from_moments(mom.join(extra), positive=positive, confidence=confidence, ddof=ddof)


def from_moments(mom: pd.DataFrame, *, positive: bool = True, confidence: float = 0.95,
                 ddof: int = 1) -> pd.DataFrame:
    """(n, mean, m2 [, min, max, reloads]) per group → the summary of :func:`summary` (same index)."""
    out = stats.moments_summary(mom[["n", "mean", "m2"]].fillna({"n": 0}), ddof=ddof, confidence=confidence)
    lo, hi, note = mean_ci(out["n"].to_numpy(float), out["mean"].to_numpy(float), out["var"].to_numpy(float),
                           positive=positive, confidence=confidence,
                           vmin=mom["min"].to_numpy(float) if "min" in mom else None,
                           vmax=mom["max"].to_numpy(float) if "max" in mom else None,
                           reloads=mom["reloads"].to_numpy(float) if "reloads" in mom else None)
    out["ci_lo"], out["ci_hi"], out[NOTE] = lo, hi, note
    return out


def sample_ci(values: np.ndarray, *, positive: bool = True, reloaded: np.ndarray | None = None,
              confidence: float = 0.95) -> tuple[int, float, float, float, str]:
    """(n, mean, lo, hi, note) of one sample: :func:`mean_ci` on its moments (the per-sample path)."""
    x = np.asarray(values, dtype=float)
    keep = ~np.isnan(x)
    x = x[keep]
    n = x.size
    mean = float(x.mean()) if n else np.nan
    var = float(x.var(ddof=1)) if n > 1 else np.nan
    k = None if reloaded is None else float(np.asarray(reloaded, dtype=bool)[keep].sum())
    lo, hi, note = mean_ci(np.array([n]), np.array([mean]), np.array([var]), positive=positive,
                           confidence=confidence, vmin=np.array([x.min() if n else np.nan]),
                           vmax=np.array([x.max() if n else np.nan]), reloads=None if k is None else np.array([k]))
    return n, mean, float(lo[0]), float(hi[0]), str(note[0])


def mean_interval(
    x: np.ndarray, method: Method, confidence: float = 0.95, resamples: int = 9999, seed: int = 0
) -> tuple[float, float]:
    """One sample's interval of the mean by ``method``, bounds only (NaN where :func:`mean_ci` gives words)."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if method in ("t", "log-t"):
        _, _, lo, hi, _ = sample_ci(x, positive=method == "log-t", confidence=confidence)
        return lo, hi
    kind = "bca" if method == "bootstrap-bca" else "percentile"
    return stats.bootstrap_mean_ci(x, kind, resamples, seed, confidence)


def bootstrap_bounds(summ: pd.DataFrame, samples: dict[object, np.ndarray], method: str, resamples: int,
                     seed: int, confidence: float) -> pd.DataFrame:
    """``--bootstrap``: replace the bounds of each group that has them by the bootstrap's (same index).

    A group whose data cannot support an interval keeps its words; a bootstrap
    interval that misses the mean printed beside it (BCa on two or three
    values can) is replaced by words too, never printed.
    """
    out = summ.copy()
    for key in out.index[out[NOTE] == ""]:
        x = samples.get(key, np.array([]))
        lo, hi = stats.bootstrap_mean_ci(x, method, resamples, seed, confidence)
        mean = out.at[key, "mean"]
        if not (lo <= mean <= hi):
            out.at[key, NOTE] = "bootstrap interval misses the mean" if lo == lo else "no spread to resample"
            lo = hi = np.nan
        out.at[key, "ci_lo"], out.at[key, "ci_hi"] = lo, hi
    return out


def pct_interval(nb: np.ndarray, mb: np.ndarray, vb: np.ndarray, nc: np.ndarray, mc: np.ndarray, vc: np.ndarray,
                 confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The Δ % interval of chimera against baseline: the ratio of means on the log scale (delta method, Welch df).

    Why the log scale for every row: with both means positive, chimera / baseline
    > 0, so Δ % > −100 % for certain; "Δ CI / baseline mean" ignores the
    baseline's own uncertainty and printed −150 % on a noisy n=3 demo cell.  The
    interval is centred on log(mean chimera / mean baseline), so it always holds
    the Δ % printed beside it.  NaN where a mean is not positive or a side has
    fewer than two values.
    """
    ok = (mb > 0) & (mc > 0) & (nb >= 2) & (nc >= 2)
    lo, hi = np.full(len(mb), np.nan), np.full(len(mb), np.nan)
    if ok.any():
        rlo, rhi = stats.log_ratio_ci(nb[ok], mb[ok], vb[ok], nc[ok], mc[ok], vc[ok], confidence)
        lo[ok], hi[ok] = (rlo - 1) * 100, (rhi - 1) * 100
    return lo, hi


def usable(summ: pd.DataFrame) -> np.ndarray:
    """True where a group's interval is printed: what a comparison needs to reach a verdict."""
    return (summ[NOTE] == "").to_numpy() if NOTE in summ else np.ones(len(summ), dtype=bool)


def methods_note(metrics: list[tuple[str, str]], bootstrap: bool = False, bootstrap_method: str = "bca",
                 resamples: int | None = None, seed: int | None = None) -> str:
    """``tok/s …; TTFT ms …`` for (column, label) pairs: a table header's CI line, and when bounds are words."""
    methods = {label: describe_method(method_for(column, bootstrap, bootstrap_method), resamples, seed)
               for column, label in metrics}
    if len(set(methods.values())) == 1:
        text = next(iter(methods.values()))
    else:
        text = "; ".join(f"{label} {m}" for label, m in methods.items())
    return (text + f"; no bounds where the data cannot support them (fewer than 2 values, reloaded trials among "
            f"values spanning ×{MAX_RATIO:g}, or an interval spanning more than ×{MAX_RATIO:g}): the note column says why")


def note_column(label: str, ci: str) -> str:
    """The column beside a metric's bounds that holds the words (``TTFT ms CI95 note``)."""
    return f"{label} {ci} note"
