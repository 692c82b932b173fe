"""The analysis's column vocabulary: which trial columns it tabulates, and how.

Names, labels, decimals and the better direction come from the data contract
(:mod:`sweep.contract`, which imports only pyarrow); this module only chooses
which of them the report uses where.  A column the contract marks ``show=EXTRA``
appears in the comprehensive table without any change here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.contract import COLUMNS, COLUMNS_BY_NAME, DURATION, EXTRA, HIGHER, INT_OPTIONS, OPTION_KEYS

__all__ = ["OPTION_KEYS", "INT_OPTIONS", "GPU_NAME", "BASE_URL", "SENSITIVITY_KEYS", "MATCH_KEYS", "THROUGHPUT",
           "TTFT", "TOKENS", "Metric", "HEADLINE", "DURATIONS", "OPTIONAL", "NUMERIC_COLUMNS"]

def _column(name: str) -> str:
    """A column's name, as the contract declares it: a column renamed or dropped there fails here, at import."""
    return COLUMNS_BY_NAME[name].name


# Hardware label: rows on different GPUs are never pooled into one dataset.
GPU_NAME = _column("gpu_name")
# The server a row was measured on: a cell whose rows name several is flagged (analysis.flags).
BASE_URL = _column("base_url")
# Parameters considered for the sensitivity analysis (when they vary among chimera cells).
SENSITIVITY_KEYS: tuple[str, ...] = OPTION_KEYS + ("model", "workload", "backend")
# A baseline cell must match a chimera cell on these (those present in the data).
MATCH_KEYS: tuple[str, ...] = ("model", "workload", "backend", "base_url", "row_state")

# Agent workloads: workflow / concurrent-run structure (see analysis.agents); short names for the code.
STAGE, WORKFLOW_ID, WORKFLOW_WALL, INGEST = map(_column, ("stage", "workflow_id", "workflow_wall_ms", "ingest_ms"))
RUN_ID, AGENT_ID, AGENTS, SCENARIO, RUN_WALL, RUN_KIND = map(
    _column, ("run_id", "agent_id", "agents", "scenario", "run_wall_ms", "run_kind"))

THROUGHPUT = _column("throughput_tok_s")
TTFT = _column("ttft_ms")
TOKENS = _column("eval_count")


@dataclass(frozen=True)
class Metric:
    """A numeric trial column as the tables show it."""

    column: str
    label: str          # short header prefix, includes the unit
    higher_is_better: bool
    decimals: int = 2

    @classmethod
    def of(cls, name: str) -> Metric:
        c = COLUMNS_BY_NAME[name]
        return cls(c.name, c.label, c.better == HIGHER, c.decimals if c.decimals is not None else 2)


# The two headline metrics: every statistic is computed for those present.
HEADLINE: tuple[Metric, ...] = (Metric.of(THROUGHPUT), Metric.of(TTFT))
# Server timings averaged per cell in the comprehensive table.
DURATIONS: tuple[Metric, ...] = tuple(Metric.of(c.name) for c in COLUMNS if c.show == DURATION)
# Optional columns (telemetry, client-side extras): tabulated as per-cell means when present.
# `server_rss_mb` is the name early telemetry drafts wrote; their files still load.
OPTIONAL: tuple[Metric, ...] = tuple(Metric.of(c.name) for c in COLUMNS if c.show == EXTRA) + (
    Metric("server_rss_mb", "server RSS MB", False, 0),
)

# Every numeric column the loader coerces to float.
NUMERIC_COLUMNS: tuple[str, ...] = tuple(
    m.column for m in HEADLINE + DURATIONS + OPTIONAL
) + (TOKENS, "prompt_eval_count", "trial", WORKFLOW_WALL, INGEST, AGENTS, RUN_WALL) + OPTION_KEYS
