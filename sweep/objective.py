"""The number a search optimises: one value per cell, computed from the cell's stored trials.

A Hydra sweeper such as Optuna only sees what the job returns.  Computing it
from the Parquet rows (not from in-memory state) makes a resumed or revisited
cell report what is on disk, and lets the end-of-sweep summary and the
analysis rank cells by the same rule.  A cell that failed, or that breaks the
TTFT ceiling, gets ``failed_value``: a bad score keeps the search going where
an exception would abort it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from sweep.cells import ConfigError
from sweep.config import ObjectiveConfig, Stat
from sweep.contract import COLUMNS, Status

@dataclass(frozen=True)
class Objective:
    """``objective.*`` of the job config."""

    metric: str = "throughput_tok_s"
    stat: Stat = Stat.mean
    ttft_p95_max_ms: float | None = None
    failed_value: float = 0.0

    @classmethod
    def from_config(cls, cfg: ObjectiveConfig) -> Objective:
        """From ``objective.*``; a metric that is not a numeric column is a :class:`ConfigError`
        (``stat`` is an enum of the schema: Hydra refuses another value while composing)."""
        numeric = [c.name for c in COLUMNS if c.numeric]
        if cfg.metric not in numeric:
            raise ConfigError(f"invalid objective.metric={cfg.metric}: use a numeric column, "
                              "e.g. throughput_tok_s, ttft_ms, e2e_ms")
        return cls(metric=cfg.metric, stat=Stat(cfg.stat), ttft_p95_max_ms=cfg.ttft_p95_max_ms,
                   failed_value=cfg.failed_value)

    def describe(self) -> str:
        ceiling = f", p95 TTFT ≤ {self.ttft_p95_max_ms:g} ms" if self.ttft_p95_max_ms is not None else ""
        return f"{self.stat} {self.metric}{ceiling}"


@dataclass(frozen=True)
class Score:
    """A cell's objective value and the CI of its metric's mean (for the printed best setting)."""

    value: float
    n: int
    mean: float
    ci_lo: float
    ci_hi: float
    why_failed: str | None = None


def _stat(values: np.ndarray, stat: Stat) -> float:
    if stat == Stat.mean:
        return float(values.mean())
    if stat == Stat.median:
        return float(np.median(values))
    return float(np.percentile(values, 95))


def score(rows: Sequence[Mapping[str, Any]], objective: Objective) -> Score:
    """The objective of one cell from its trial rows (warm-ups and failed attempts ignored)."""
    measured = [r for r in rows if not r["warmup"] and r["status"] == Status.OK]
    values = np.array([r[objective.metric] for r in measured if r.get(objective.metric) is not None], dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Score(objective.failed_value, 0, math.nan, math.nan, math.nan, "no successful trial")
    from analysis.stats import describe  # scipy: imported only when a cell is scored

    d = describe(values)
    value = _stat(values, objective.stat)
    why = None
    if objective.ttft_p95_max_ms is not None:
        ttft = np.array([r["ttft_ms"] for r in measured if r.get("ttft_ms") is not None], dtype=float)
        p95 = float(np.percentile(ttft, 95)) if ttft.size else math.inf
        if p95 > objective.ttft_p95_max_ms:
            value, why = objective.failed_value, f"p95 TTFT {p95:.0f} ms > {objective.ttft_p95_max_ms:g} ms"
    return Score(value, int(d["n"]), d["mean"], d["ci_lo"], d["ci_hi"], why)
