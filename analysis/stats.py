"""Every statistic the report uses, in one place, vectorised over groups.

Why one module: a reviewer (and the tests) can check each formula once against
scipy and hand-computed values, and every table uses the same code path.

Most functions take *sufficient statistics* (n, mean, sample variance) as numpy
arrays rather than raw samples.  That is what makes the report fast on a million
rows: pandas computes n/mean/var per group once, and everything else (t-CIs,
Welch, Hedges g, one-way and two-way ANOVA) is closed-form arithmetic over the
groups.  Rank tests (Mann–Whitney, Kruskal–Wallis) and the bootstrap need raw
samples and are opt-in.

Conventions: variances are *sample* variances (ddof=1) unless a ``ddof``
argument says otherwise; NaN propagates where a statistic is undefined (n < 2,
zero variance) instead of raising.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd
from pandas.api.typing import SeriesGroupBy
from scipy import special

from analysis import distributions

ArrayLike = np.ndarray | pd.Series | Sequence[float] | float


def _arr(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=float)


# ---------------------------------------------------------------- descriptive


def t_halfwidth(sd: ArrayLike, n: ArrayLike, confidence: float = 0.95) -> np.ndarray:
    """Half-width of the Student-t CI of a mean: t_{(1+c)/2, n-1} · sd / √n.

    Student t rather than the normal 1.96 because cells have few trials (3–30),
    where the normal interval is visibly too narrow.  ``sd`` must be the sample sd.
    """
    sd, n = _arr(sd), _arr(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(n >= 2, n - 1, np.nan)
        return distributions.t_ppf(0.5 + confidence / 2, df) * sd / np.sqrt(n)


def describe(values: ArrayLike, ddof: int = 1, confidence: float = 0.95) -> dict[str, float]:
    """n, mean, sd (with ``ddof``), CV % and the t-CI of one sample (NaNs dropped).

    The CI always uses the sample sd (ddof=1), whatever ``ddof`` the reported sd uses:
    a population sd is only offered to reproduce older reports' sd/CV columns.
    """
    x = _arr(values)
    x = x[~np.isnan(x)]
    n = x.size
    mean = float(x.mean()) if n else np.nan
    sd = float(x.std(ddof=ddof)) if n > ddof else np.nan
    sd_sample = float(x.std(ddof=1)) if n > 1 else np.nan
    half = float(t_halfwidth(sd_sample, n, confidence))
    return {
        "n": n,
        "mean": mean,
        "sd": sd,
        "cv_pct": cv_pct(sd, mean),
        "ci_lo": mean - half,
        "ci_hi": mean + half,
    }


def log_ratio_ci(nb: ArrayLike, mb: ArrayLike, vb: ArrayLike, nc: ArrayLike, mc: ArrayLike, vc: ArrayLike,
                 confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """CI of mean_c / mean_b for positive means: delta method on the log scale, Welch–Satterthwaite df.

    Var(log m̄) ≈ s² / (n · m̄²) per sample; the bounds are exp(log ratio ± t · se),
    so they are positive whatever the spread (the point of using it).
    """
    nb, mb, vb, nc, mc, vc = (_arr(x) for x in (nb, mb, vb, nc, mc, vc))
    a, b = vc / (nc * mc**2), vb / (nb * mb**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = (a + b) ** 2 / (a**2 / (nc - 1) + b**2 / (nb - 1))
    t = distributions.t_ppf((1 + confidence) / 2, df)
    centre, half = np.log(mc / mb), t * np.sqrt(a + b)
    return np.exp(centre - half), np.exp(centre + half)


def cv_pct(sd: ArrayLike, mean: ArrayLike) -> np.ndarray | float:
    """Coefficient of variation in percent, sd / |mean| · 100 (NaN for a zero mean)."""
    sd, mean = _arr(sd), _arr(mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(mean != 0, sd / np.abs(mean) * 100.0, np.nan)
    return float(out) if out.ndim == 0 else out


def group_moments(values: pd.Series, keys: pd.Series | list[pd.Series]) -> pd.DataFrame:
    """Per group: n (non-null count), mean and m2 (sum of squared deviations).

    m2 rather than the variance because moments of sub-groups combine exactly
    (:func:`combine_moments`), which lets sensitivity tables aggregate cells
    instead of re-scanning every trial.
    """
    return moments_of(values.groupby(keys, sort=False, dropna=False, observed=True))


def moments_of(grouped: SeriesGroupBy) -> pd.DataFrame:
    """(n, mean, m2) of an already grouped column: lets several columns share one grouping of the rows.

    Group it as :func:`group_moments` does (``sort=False``) to get the same numbers
    to the last bit: pandas sums a group with a different algorithm when the
    group codes happen to be in row order.
    """
    out = grouped.agg(["count", "mean", "var"])
    out.columns = ["n", "mean", "var"]
    out["m2"] = (out["var"].fillna(0.0) * (out["n"] - 1).clip(lower=0)).astype(float)
    return out[["n", "mean", "m2"]]


def combine_moments(moments: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """Merge per-unit (n, mean, m2) into per-``by`` (n, mean, m2) exactly.

    Uses the parallel-variance identity m2 = Σ m2_i + Σ n_i (mean_i − mean)².
    Units with n == 0 contribute nothing.
    """
    m = moments[moments["n"] > 0].copy()
    m["_s"] = m["n"] * m["mean"]
    g = m.groupby(by, sort=False, dropna=False, observed=True)
    n, s = g["n"].sum(), g["_s"].sum()
    group = g.ngroup().to_numpy()                  # each unit's group: the sums broadcast back (a transform)
    grand = s.to_numpy()[group] / n.to_numpy()[group]
    m["_between"] = m["n"] * (m["mean"] - grand) ** 2
    mean = s / n
    m2 = g["m2"].sum() + g["_between"].sum()
    return pd.DataFrame({"n": n, "mean": mean, "m2": m2})


def moments_summary(
    moments: pd.DataFrame, ddof: int = 1, confidence: float = 0.95
) -> pd.DataFrame:
    """(n, mean, m2) → n, mean, sd (``ddof``), CV %, t-CI lo/hi, sample variance."""
    n = moments["n"].to_numpy(float)
    mean = moments["mean"].to_numpy(float)
    m2 = moments["m2"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_s = np.where(n >= 2, m2 / (n - 1), np.nan)
        var_r = np.where(n > ddof, m2 / (n - ddof), np.nan)
    sd = np.sqrt(var_r)
    half = t_halfwidth(np.sqrt(var_s), n, confidence)
    return pd.DataFrame(
        {
            "n": n.astype(int),
            "mean": mean,
            "sd": sd,
            "cv_pct": cv_pct(sd, mean),
            "ci_lo": mean - half,
            "ci_hi": mean + half,
            "var": var_s,
        },
        index=moments.index,
    )


# ---------------------------------------------------------------- two samples


def welch(
    n1: ArrayLike, m1: ArrayLike, v1: ArrayLike,
    n2: ArrayLike, m2: ArrayLike, v2: ArrayLike,
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """Welch's unequal-variance t-test of mean2 − mean1, with the CI of that difference.

    Welch rather than Student's pooled test: a chimera configuration changes the
    spread as well as the mean (e.g. partial GPU offload is noisier), so equal
    variances cannot be assumed.  df by Welch–Satterthwaite.
    """
    n1, m1, v1, n2, m2, v2 = np.broadcast_arrays(*(np.atleast_1d(_arr(v)) for v in (n1, m1, v1, n2, m2, v2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = v1 / n1, v2 / n2
        se = np.sqrt(a + b)
        df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
        diff = m2 - m1
        t = diff / se
        p = 2 * distributions.t_sf(np.abs(t), df)
        half = distributions.t_ppf(0.5 + confidence / 2, df) * se
    bad = (n1 < 2) | (n2 < 2) | ~(se > 0)
    for arr in (df, t, p, half):
        arr[bad] = np.nan
    return {"diff": diff, "ci_lo": diff - half, "ci_hi": diff + half, "t": t, "df": df, "p": p}


def hedges_g(
    n1: ArrayLike, m1: ArrayLike, v1: ArrayLike,
    n2: ArrayLike, m2: ArrayLike, v2: ArrayLike,
) -> np.ndarray:
    """Hedges' g of mean2 − mean1: Cohen's d on the pooled sd times the exact bias correction.

    g rather than d because d overstates effects for the small n of a sweep cell;
    J = Γ(df/2) / (√(df/2) · Γ((df−1)/2)) with df = n1 + n2 − 2.
    """
    n1, m1, v1, n2, m2, v2 = np.broadcast_arrays(*(np.atleast_1d(_arr(v)) for v in (n1, m1, v1, n2, m2, v2)))
    df = n1 + n2 - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        sp = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / df)
        d = (m2 - m1) / sp
        j = np.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / np.sqrt(df / 2)
        g = d * j
    g[(n1 < 2) | (n2 < 2) | ~(sp > 0)] = np.nan
    return g


def mann_whitney_p(x: ArrayLike, y: ArrayLike) -> float:
    """Two-sided Mann–Whitney U p-value (scipy's exact/asymptotic choice); NaN if a sample is empty.

    Offered for skewed latencies (TTFT has a long right tail) where a t-test's
    normality assumption is doubtful.
    """
    x, y = _arr(x), _arr(y)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size == 0 or y.size == 0:
        return np.nan
    if np.ptp(np.concatenate([x, y])) == 0:
        return 1.0
    from scipy import stats as sps   # opt-in rank test: scipy.stats only when asked (analysis.distributions)

    return float(sps.mannwhitneyu(x, y, alternative="two-sided").pvalue)


# ---------------------------------------------------------------- multiplicity


def adjust_pvalues(p: ArrayLike, method: Literal["holm", "bh"] = "holm") -> np.ndarray:
    """Holm (family-wise error) or Benjamini–Hochberg (false discovery rate) adjusted p-values.

    Holm by default: it controls the chance of *any* false "faster" claim, is
    uniformly more powerful than Bonferroni and assumes nothing about dependence.
    BH is offered for large sweeps where FDR is the more useful guarantee.  NaN
    p-values are left NaN and do not count towards the family size.
    """
    p = _arr(p).copy()
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="mergesort")
    ranked = q[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method == "bh":
        adj = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}")
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


# ---------------------------------------------------------------- k groups


def anova_oneway(n: ArrayLike, mean: ArrayLike, m2: ArrayLike) -> dict[str, float]:
    """One-way ANOVA F-test from per-group (n, mean, m2); identical to scipy.stats.f_oneway.

    Used for "does this parameter change the metric at all?" across its levels.
    """
    n, mean, m2 = _arr(n), _arr(mean), _arr(m2)
    keep = n > 0
    n, mean, m2 = n[keep], mean[keep], m2[keep]
    k, total = n.size, n.sum()
    if k < 2 or total - k < 1:
        return {"F": np.nan, "df1": np.nan, "df2": np.nan, "p": np.nan}
    grand = (n * mean).sum() / total
    ssb = (n * (mean - grand) ** 2).sum()
    ssw = m2.sum()
    df1, df2 = k - 1, total - k
    if ssw <= 0:
        return {"F": np.nan, "df1": df1, "df2": df2, "p": np.nan}
    f = (ssb / df1) / (ssw / df2)
    return {"F": float(f), "df1": float(df1), "df2": float(df2), "p": float(distributions.f_sf(f, df1, df2))}


def kruskal_p(groups: Sequence[ArrayLike]) -> float:
    """Kruskal–Wallis H-test p-value over groups of raw samples (rank-based ANOVA)."""
    gs = [g[~np.isnan(g)] for g in (_arr(x) for x in groups)]
    gs = [g for g in gs if g.size]
    if len(gs) < 2:
        return np.nan
    if np.ptp(np.concatenate(gs)) == 0:
        return 1.0
    from scipy import stats as sps   # opt-in rank test: scipy.stats only when asked (analysis.distributions)

    return float(sps.kruskal(*gs).pvalue)


def anova_interaction(
    a: ArrayLike, b: ArrayLike, n: ArrayLike, mean: ArrayLike, m2: ArrayLike
) -> dict[str, float]:
    """F-test of the A×B interaction term of a two-way ANOVA, from per-(a, b) moments.

    Equivalent to comparing two OLS fits on the raw trials — the additive model
    y ~ A + B against the full model y ~ A × B — but computed on the (a, b)
    combinations: the full model's residual SS is the within-combination SS
    (Σ m2), and the additive model is a weighted least-squares fit of the
    combination means with weights n, whose residual SS adds to it.  This is
    Type-II/III-agnostic (it is the interaction's own extra SS given both main
    effects) and handles unbalanced and incomplete designs; df of the interaction
    is the rank difference of the two designs.  Returns NaN when the two
    parameters are confounded (no interaction df) or there is no replication.
    """
    a, b = np.asarray(a), np.asarray(b)
    n, mean, m2 = _arr(n), _arr(mean), _arr(m2)
    keep = n > 0
    a, b, n, mean, m2 = a[keep], b[keep], n[keep], mean[keep], m2[keep]
    nan = {"F": np.nan, "df1": np.nan, "df2": np.nan, "p": np.nan}
    if a.size == 0:
        return nan
    ca = pd.factorize(a)[0]
    cb = pd.factorize(b)[0]
    la, lb = ca.max() + 1, cb.max() + 1
    x = np.zeros((a.size, 1 + (la - 1) + (lb - 1)))
    x[:, 0] = 1.0
    for i in range(1, la):
        x[ca == i, i] = 1.0
    for j in range(1, lb):
        x[cb == j, la - 1 + j] = 1.0
    w = np.sqrt(n)
    coef, *_ = np.linalg.lstsq(x * w[:, None], mean * w, rcond=None)
    ss_lack = float((n * (mean - x @ coef) ** 2).sum())
    rank_add = np.linalg.matrix_rank(x)
    df1 = a.size - rank_add            # full model rank = number of non-empty combinations
    df2 = n.sum() - a.size
    sse = float(m2.sum())
    if df1 < 1 or df2 < 1 or sse <= 0:
        return {**nan, "df1": float(df1) if df1 >= 1 else np.nan}
    f = (ss_lack / df1) / (sse / df2)
    return {"F": f, "df1": float(df1), "df2": float(df2), "p": float(distributions.f_sf(f, df1, df2))}


# ---------------------------------------------------------------- bootstrap


def bootstrap_mean_ci(
    x: ArrayLike,
    method: Literal["bca", "percentile"] = "bca",
    resamples: int = 9999,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Bootstrap CI of the mean (scipy.stats.bootstrap), seeded so reports reproduce.

    For small or skewed samples where the t-interval's normality is doubtful.
    BCa corrects bias and skew; percentile is the simple fallback.  NaN when the
    sample has < 2 values or no spread (the interval is degenerate).
    """
    x = _arr(x)
    x = x[~np.isnan(x)]
    if x.size < 2 or np.ptp(x) == 0:
        return (np.nan, np.nan)
    from scipy import stats as sps   # opt-in bootstrap: scipy.stats only when asked (analysis.distributions)

    with np.errstate(all="ignore"):
        res = sps.bootstrap(
            (x,), np.mean, n_resamples=resamples, method=method, confidence_level=confidence,
            rng=np.random.default_rng(seed), vectorized=True, batch=min(resamples, 2000),
        )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def bootstrap_diff_ci(
    x: ArrayLike,
    y: ArrayLike,
    method: Literal["bca", "percentile"] = "bca",
    resamples: int = 9999,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Bootstrap CI of mean(y) − mean(x), resampling each sample independently."""
    x, y = _arr(x), _arr(y)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size < 2 or y.size < 2 or np.ptp(np.concatenate([x, y])) == 0:
        return (np.nan, np.nan)

    def stat(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(b, axis=axis) - np.mean(a, axis=axis)

    from scipy import stats as sps   # opt-in bootstrap: scipy.stats only when asked (analysis.distributions)

    with np.errstate(all="ignore"):
        res = sps.bootstrap(
            (x, y), stat, n_resamples=resamples, method=method, confidence_level=confidence,
            rng=np.random.default_rng(seed), vectorized=True, batch=min(resamples, 2000),
        )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))
