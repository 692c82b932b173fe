"""The analysis's column vocabulary: which trial columns are metrics, options or identity.

The data contract lives in :mod:`sweep.records`; this module mirrors the few
names the analysis needs as plain constants, so the analysis can read data from
older harnesses (and run) without importing the sweep package.  A test checks
that these names stay a subset of ``sweep.records.COLUMN_NAMES`` so they cannot
silently drift.
"""

from __future__ import annotations

from dataclasses import dataclass

# Options a cell may set (mirror of sweep.records.OPTION_KEYS, same order).
OPTION_KEYS: tuple[str, ...] = (
    "num_gpu", "num_ctx", "num_thread", "num_batch", "temperature", "top_p", "top_k",
    "repeat_penalty", "seed", "num_predict",
)
# Options that are integers in the schema (levels print as ``99``, not ``99.0``).
INT_OPTIONS: frozenset[str] = frozenset(
    {"num_gpu", "num_ctx", "num_thread", "num_batch", "top_k", "seed", "num_predict"}
)
# Identity columns that are not options but can be swept or must match for a comparison.
IDENTITY_KEYS: tuple[str, ...] = ("preset", "model", "workload", "backend", "base_url")
# Hardware label: rows on different GPUs are never pooled into one dataset.
GPU_NAME = "gpu_name"
# Parameters considered for the sensitivity analysis (when they vary among chimera cells).
SENSITIVITY_KEYS: tuple[str, ...] = OPTION_KEYS + ("model", "workload", "backend")
# A baseline cell must match a chimera cell on these (those present in the data).
MATCH_KEYS: tuple[str, ...] = ("model", "workload", "backend", "base_url", "row_state")

# Agent workloads: workflow / concurrent-run structure (see analysis.agents).
STAGE, WORKFLOW_ID, WORKFLOW_WALL, INGEST = "stage", "workflow_id", "workflow_wall_ms", "ingest_ms"
RUN_ID, AGENT_ID, AGENTS, SCENARIO, RUN_WALL, RUN_KIND = (
    "run_id", "agent_id", "agents", "scenario", "run_wall_ms", "run_kind")
AGENT_COLUMNS: tuple[str, ...] = (STAGE, WORKFLOW_ID, WORKFLOW_WALL, INGEST, RUN_ID, AGENT_ID, AGENTS, SCENARIO,
                                  RUN_WALL, RUN_KIND)

THROUGHPUT = "throughput_tok_s"
TTFT = "ttft_ms"


@dataclass(frozen=True)
class Metric:
    """A numeric trial column as the tables show it."""

    column: str
    label: str          # short header prefix, includes the unit
    higher_is_better: bool
    decimals: int = 2


# The two headline metrics: every statistic is computed for those present.
HEADLINE: tuple[Metric, ...] = (
    Metric(THROUGHPUT, "tok/s", True, 2),
    Metric(TTFT, "TTFT ms", False, 1),
)
# Server timings averaged per cell in the comprehensive table.
DURATIONS: tuple[Metric, ...] = (
    Metric("load_duration_ms", "load ms", False, 1),
    Metric("prompt_eval_duration_ms", "prompt eval ms", False, 1),
    Metric("eval_duration_ms", "eval ms", False, 1),
)
# Optional columns (telemetry, client-side extras): tabulated as per-cell means when present.
OPTIONAL: tuple[Metric, ...] = (
    Metric("e2e_ms", "e2e ms", False, 1),
    Metric("client_tok_s", "client tok/s", True, 2),
    Metric("gpu_util_pct_mean", "GPU util %", False, 1),
    Metric("gpu_mem_used_mb_max", "GPU mem MB max", False, 0),
    Metric("gpu_power_w_mean", "GPU W", False, 1),
    Metric("gpu_energy_j", "GPU J", False, 1),
    Metric("gpu_temp_c_max", "GPU °C max", False, 1),
    Metric("joules_per_token", "J/tok", False, 4),
    Metric("cpu_pct_process", "server CPU %", False, 1),
    Metric("cpu_pct_system", "machine CPU %", False, 1),
    Metric("server_rss_mb_max", "server RSS MB max", False, 0),
    Metric("server_rss_mb", "server RSS MB", False, 0),   # name used by early telemetry drafts
)
TOKENS = "eval_count"

# Every numeric column the loader coerces to float.
NUMERIC_COLUMNS: tuple[str, ...] = tuple(
    m.column for m in HEADLINE + DURATIONS + OPTIONAL
) + (TOKENS, "prompt_eval_count", "trial", WORKFLOW_WALL, INGEST, AGENTS, RUN_WALL) + OPTION_KEYS
