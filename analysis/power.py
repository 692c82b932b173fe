"""Minimum detectable effect: how large a difference a comparison could have seen at all.

Why: with 3 trials per cell "no significant difference" says little unless the
reader also learns that only differences above, say, 12 % could have been
detected.  The MDE turns the verdict into "no difference larger than X %".

Formula (two-sided Welch test, normal-approximation power with t quantiles):

    MDE = (t_{1−α/2, df} + t_{power, df}) · √(s₁²/n₁ + s₂²/n₂)

with df by Welch–Satterthwaite.  This is the textbook closed form (e.g.
Bloom 1995, "Minimum detectable effects"); it is exact in the limit of many
trials and slightly optimistic for very small n, which the note under the table
says.  It is per comparison (α not divided by the number of comparisons), as a
reader compares it with the Δ of that row.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
POWER = 0.8


def mde(
    n1: np.ndarray, v1: np.ndarray, n2: np.ndarray, v2: np.ndarray,
    alpha: float = ALPHA, power: float = POWER,
) -> np.ndarray:
    """Smallest |mean₂ − mean₁| detectable with ``power`` at two-sided ``alpha`` (units of the metric).

    NaN when a sample has fewer than two values or there is no spread at all.
    """
    n1, v1, n2, v2 = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, dtype=float)) for a in (n1, v1, n2, v2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = v1 / n1, v2 / n2
        se = np.sqrt(a + b)
        df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
        out = (sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se
    out = np.array(out, dtype=float)
    out[(n1 < 2) | (n2 < 2) | ~(se > 0)] = np.nan
    return out


def note(alpha: float = ALPHA, power: float = POWER) -> str:
    """The sentence a table with an MDE column carries."""
    return (f"MDE: the smallest |Δ| this comparison could detect (two-sided Welch, α = {alpha:g} per comparison, "
            f"power {power:g}; MDE % relative to the baseline mean): a 'no significant difference' means "
            f"no difference larger than the MDE could have been seen.")
