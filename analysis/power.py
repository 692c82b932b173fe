"""Minimum detectable effect: how large a difference a test could have seen at all.

Why: with 3 trials per cell "no significant difference" says little unless the
reader also learns that only differences above, say, 40 % could have been
detected.  The MDE turns the verdict into "no difference larger than X %".

Exact power, not the textbook shortcut: a two-sided t-test with ``df`` degrees
of freedom and standard error ``se`` rejects a true difference δ with
probability

    P(T′ > c) + P(T′ < −c),   T′ ~ noncentral t(df, λ = δ / se),   c = t_{1−α/2, df}

and the MDE is the δ where that probability equals the power asked for (80 %).
The shortcut (t_{1−α/2} + t_{power}) · se is slightly optimistic at the small
df of a sweep cell (3.72 · se instead of 3.76 · se at df 4), and very much so at
the α of a corrected family.  For Welch's test df is Welch–Satterthwaite's,
treated as known (the usual approximation, e.g. in G*Power).  For a one-way
ANOVA the same is done with the noncentral F (:func:`mde_anova`).

α is the level a lone effect must reach *after* the multiple-comparison
correction: Holm (and Benjamini–Hochberg) reject the smallest of m p-values
only below α / m, so a table of m comparisons states its MDE at α / m.  That is
what makes "the gate could not have seen a 2× slowdown at n = 3" visible.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from analysis import distributions

ALPHA = 0.05
POWER = 0.8
_STEPS = 80           # bisection steps: the bracket shrinks by 2⁻⁸⁰, far below any printed digit


def _bisect(power_at: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray, power: float) -> np.ndarray:
    """The λ in [lo, hi] where the increasing ``power_at(λ)`` reaches ``power`` (vectorised bisection)."""
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        below = power_at(mid) < power
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def t_noncentrality(df: np.ndarray, alpha: float | np.ndarray = ALPHA, power: float = POWER) -> np.ndarray:
    """Noncentrality λ at which a two-sided t-test with ``df`` rejects with probability ``power``.

    NaN where df is not positive.  The bracket's top, c · √(χ²_{0.999, df} / df) + 10,
    is past the answer: there Z + λ exceeds c · √(χ²/df) with probability > 0.8.
    """
    df, alpha = np.broadcast_arrays(np.atleast_1d(np.asarray(df, dtype=float)),
                                    np.atleast_1d(np.asarray(alpha, dtype=float)))
    ok = (df > 0) & (alpha > 0) & (alpha < 1)
    out = np.full(df.shape, np.nan)
    if not ok.any():
        return out
    d, a = df[ok], alpha[ok]
    c = distributions.t_ppf(1 - a / 2, d)

    def power_at(lam: np.ndarray) -> np.ndarray:
        # The lower tail P(T′ < −c; λ) as P(T′ > c; −λ): scipy's nct.cdf(−c, df, λ) is NaN for large λ.
        return distributions.nct_sf(c, d, lam) + np.nan_to_num(distributions.nct_sf(c, d, -lam))

    hi = c * np.sqrt(distributions.chi2_ppf(0.999, d) / d) + 10
    out[ok] = _bisect(power_at, np.zeros_like(c), hi, power)
    return out


def mde_t(se: np.ndarray, df: np.ndarray, alpha: float | np.ndarray = ALPHA, power: float = POWER) -> np.ndarray:
    """MDE of any two-sided t-test from its standard error and df: λ · se (NaN where se ≤ 0 or df ≤ 0)."""
    se = np.atleast_1d(np.asarray(se, dtype=float))
    out = t_noncentrality(df, alpha, power) * se
    out = np.array(np.broadcast_to(out, np.broadcast_shapes(out.shape, se.shape)), dtype=float)
    out[~(np.broadcast_to(se, out.shape) > 0)] = np.nan
    return out


def mde(
    n1: np.ndarray, v1: np.ndarray, n2: np.ndarray, v2: np.ndarray,
    alpha: float | np.ndarray = ALPHA, power: float = POWER,
) -> np.ndarray:
    """Smallest |mean₂ − mean₁| Welch's test detects with ``power`` at two-sided ``alpha`` (metric units).

    NaN when a sample has fewer than two values or there is no spread at all.
    """
    n1, v1, n2, v2 = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, dtype=float)) for a in (n1, v1, n2, v2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = v1 / n1, v2 / n2
        se = np.sqrt(a + b)
        df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
    df = np.where((n1 >= 2) & (n2 >= 2) & (se > 0), df, np.nan)
    return mde_t(se, df, alpha, power)


def f_noncentrality(df1: float, df2: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Noncentrality λ at which an F-test with (df1, df2) rejects with probability ``power`` (NaN if undefined)."""
    if not (df1 >= 1 and df2 >= 1 and 0 < alpha < 1):
        return float("nan")
    crit = distributions.f_ppf(1 - alpha, df1, df2)
    hi = np.array([10.0])
    while distributions.ncf_sf(crit, df1, df2, hi[0]) < power:       # doubles a few times at most (λ grows with crit)
        hi *= 2
    return float(_bisect(lambda lam: distributions.ncf_sf(crit, df1, df2, lam), np.zeros(1), hi, power)[0])


def mde_anova(n: np.ndarray, mse: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest max − min of the level means a one-way ANOVA detects with ``power`` (metric units).

    The hardest configuration with a given range D puts two levels at the ends
    and every other level at the grand mean; its noncentrality is
    λ = D² · nₐn_b / ((nₐ + n_b) σ²), smallest for the two levels with the
    fewest trials, so D = σ · √(λ · (1/nₐ + 1/n_b)) with σ² the ANOVA's mean
    square within.  With two levels this is the pooled two-sample t-test's MDE.
    """
    n = np.sort(np.asarray(n, dtype=float)[np.asarray(n, dtype=float) > 0])
    if n.size < 2 or not mse > 0:
        return float("nan")
    lam = f_noncentrality(n.size - 1, n.sum() - n.size, alpha, power)
    return float(np.sqrt(mse * lam * (1 / n[0] + 1 / n[1])))


def family_alpha(alpha: float, p: np.ndarray) -> float:
    """α / m: the level the smallest of the m testable p-values must reach under Holm or BH (α when m ≤ 1)."""
    m = int(np.count_nonzero(~np.isnan(np.asarray(p, dtype=float))))
    return alpha / max(m, 1)


def note(alpha: float = ALPHA, comparisons: int = 1, power: float = POWER) -> str:
    """The sentence a table with an MDE column carries."""
    level = f"α / {comparisons} = {alpha / comparisons:.2g}, the level one effect must reach after the correction" \
        if comparisons > 1 else f"α = {alpha:g}"
    return (f"MDE: the smallest |Δ| this comparison could detect with {power:.0%} power (two-sided, noncentral t, "
            f"{level}); MDE % relative to the reference mean. 'No significant difference' means no difference "
            f"larger than the MDE could have been seen.")
