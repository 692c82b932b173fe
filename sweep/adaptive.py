"""``trials=auto``: keep measuring a cell until its mean is known well enough, and say why it stopped.

Why: three trials are too few on a noisy machine and wasteful on a steady one.
After every round the cell's successful measured values of ``auto.metric`` give a
95 % Student-t interval of the mean; the cell stops once its half-width is below
``auto.ci_pct`` % of the mean (not before ``auto.min_trials`` rounds), or at
``auto.max_trials`` rounds.  The reason is stored on the cell's last row
(``stop_reason``) and shown by the report.

The rule uses the t half-width for every metric: it is a stopping rule, not the
reported interval (the report picks the interval per metric in
``analysis/intervals.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

STOP_TRIALS = "trials"          # the fixed number of trials ran
STOP_ABANDONED = "abandoned"    # too many failures in a row


@dataclass(frozen=True)
class Auto:
    """``auto.*`` of the config."""

    metric: str = "throughput_tok_s"
    ci_pct: float = 2.0
    min_trials: int = 3
    max_trials: int = 30


def half_width_pct(values: Sequence[float], confidence: float = 0.95) -> float:
    """95 % t half-width of the mean, in % of the mean (inf with < 2 values or a zero mean)."""
    # the analysis's own description of a sample (NaNs dropped, sample sd, t interval), so the stopping rule and the
    # report's interval agree; imported here, as sweep.objective imports analysis.stats: only a process that scores
    # or stops cells pays for pandas and scipy
    from analysis.stats import describe

    d = describe([math.nan if v is None else v for v in values], confidence=confidence)
    if d["n"] < 2 or d["mean"] == 0:
        return math.inf
    return (d["ci_hi"] - d["mean"]) / abs(d["mean"]) * 100


def stop_reason(auto: Auto, rounds: int, values: Sequence[float]) -> str | None:
    """Why to stop after ``rounds`` rounds with these values, or None to go on."""
    if rounds < auto.min_trials:
        return None
    hw = half_width_pct(values)
    if hw <= auto.ci_pct:
        return f"ci: ±{hw:.2f} % ≤ {auto.ci_pct:g} % after {rounds}"
    if rounds >= auto.max_trials:
        return f"max_trials: {rounds} (±{hw:.2f} %)"
    return None
