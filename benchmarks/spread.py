"""How the benchmarks print a repeated figure: its mean ± standard deviation.

Why one module: the engine and pp/tg benchmarks print their rounds the same way; a NaN (a round
that measured nothing) is left out rather than turning the whole figure into NaN.
"""

from __future__ import annotations

import math
import statistics


def mean_sd(values: list[float], digits: int = 1) -> str:
    """``mean ± sd`` of the finite values, ``–`` when there are none (sd 0 for a single value)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def mean(values: list[float]) -> float:
    """The mean, NaN for no values (a ratio nobody measured stays visibly missing)."""
    return statistics.mean(values) if values else math.nan
