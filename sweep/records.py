"""The trial record: the one place where Parquet column names, types and units live.

Everything downstream (the Parquet writer, the README's column table, the
analysis loader) reads :data:`COLUMNS` / :data:`SCHEMA` from here, so a column is
declared exactly once.  Names are a public contract: scripts and the analysis
rely on them, so rename nothing; add new columns at the end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from dataclasses import dataclass, field

import pyarrow as pa

# Status values a trial can carry.  ``ok`` is success; everything else names the failure kind.
STATUS_OK = "ok"
STATUS_KINDS = (
    "ok",
    "connect_error",   # server unreachable / connection refused or reset before a response
    "http_error",      # HTTP 4xx/5xx before streaming (Ollama's {"error": ...} body in `error`)
    "server_error",    # an {"error": ...} line inside a 200 stream
    "protocol_error",  # malformed / truncated NDJSON, stream ended without done: true
    "stall",           # no chunk for backend.stall_timeout_s
    "timeout",         # the whole request exceeded backend.request_timeout_s
    "skipped",         # not run: the cell was abandoned after repeated failures
)


def _col(unit: str, doc: str) -> typing.Any:
    """A dataclass field with a unit and a meaning, defaulting to null."""
    return field(default=None, metadata={"unit": unit, "doc": doc})


@dataclass
class TrialRecord:
    """One measured (or failed) request.  ``None`` means "not set" / "not measured", never 0."""

    # --- identity of the sweep, the cell and the trial
    sweep_id: str | None = _col("", "sweep this trial belongs to (one multirun)")
    cell_id: str | None = _col("", "readable cell label: preset, model and the set options")
    cell_hash: str | None = _col("", "sha256 (16 hex) of the cell's full resolved config; resume matches on it")
    preset: str | None = _col("", "chimera preset label: `baseline` or `chimera`")
    model: str | None = _col("", "model name as the server knows it (e.g. gemma3:270m)")
    backend: str | None = _col("", "`embedded` or `ollama`")
    base_url: str | None = _col("", "server address the trial was sent to")
    # --- the options sent (null = not sent, the server's default applied)
    num_gpu: int | None = _col("layers", "layers offloaded to the GPU")
    num_ctx: int | None = _col("tokens", "context length")
    temperature: float | None = _col("", "sampling temperature")
    top_p: float | None = _col("", "nucleus sampling threshold")
    top_k: int | None = _col("", "top-k sampling")
    repeat_penalty: float | None = _col("", "repetition penalty")
    seed: int | None = _col("", "sampling seed")
    workload: str | None = _col("", "workload name")
    prompt_id: str | None = _col("", "prompt within the workload (index or name)")
    trial: int | None = _col("", "trial index within the cell and prompt (warm-ups count from 0 too)")
    warmup: bool | None = _col("", "true for warm-up trials (excluded from statistics by default)")
    status: str | None = _col("", "`ok` or the failure kind: " + ", ".join(STATUS_KINDS[1:]))
    error: str | None = _col("", "error text when status is not ok")
    started_at: dt.datetime | None = _col("UTC", "wall-clock time the request was sent (a label, not a latency)")
    # --- client-side timings (monotonic clock, stamped at byte arrival)
    ttft_ms: float | None = _col("ms", "request sent → first chunk with non-empty text")
    itl_ms_mean: float | None = _col("ms", "mean gap between consecutive content chunks")
    itl_ms_p50: float | None = _col("ms", "median gap between consecutive content chunks")
    itl_ms_p99: float | None = _col("ms", "99th percentile gap between consecutive content chunks")
    e2e_ms: float | None = _col("ms", "request sent → final chunk received")
    throughput_tok_s: float | None = _col("tok/s", "server's eval_count / eval_duration")
    client_tok_s: float | None = _col("tok/s", "content chunks after the first / (last − first arrival)")
    # --- the server's own timings from the final chunk
    load_duration_ms: float | None = _col("ms", "model load time (≈0 when already loaded)")
    prompt_eval_duration_ms: float | None = _col("ms", "prompt processing time")
    eval_duration_ms: float | None = _col("ms", "token generation time")
    total_duration_ms: float | None = _col("ms", "whole request on the server")
    prompt_eval_count: int | None = _col("tokens", "prompt tokens evaluated")
    eval_count: int | None = _col("tokens", "tokens generated")
    done_reason: str | None = _col("", "`stop`, `length`, … as the server reports it")
    response: str | None = _col("", "generated text")
    # --- further options and bookkeeping
    num_predict: int | None = _col("tokens", "max tokens to generate")
    num_thread: int | None = _col("threads", "CPU threads for generation")
    num_batch: int | None = _col("tokens", "prompt batch size")
    attempt: int | None = _col("", "1 + retries used for this trial")
    content_chunks: int | None = _col("", "chunks with non-empty text received")
    # --- telemetry during the trial (null when not measured; GPU columns need an NVIDIA driver)
    gpu_name: str | None = _col("", "GPU model(s) on the server machine, ' + '-joined when several")
    gpu_count: int | None = _col("", "GPUs sampled")
    gpu_util_pct_mean: float | None = _col("%", "mean GPU utilisation (mean over GPUs)")
    gpu_util_pct_max: float | None = _col("%", "highest GPU utilisation sample (any GPU)")
    gpu_mem_used_mb_max: float | None = _col("MiB", "peak GPU memory used (sum over GPUs; MiB as nvidia-smi shows it)")
    gpu_power_w_mean: float | None = _col("W", "mean board power (sum over GPUs)")
    gpu_energy_j: float | None = _col("J", "energy over the trial (energy counter, else ∫ power dt; sum over GPUs)")
    gpu_temp_c_max: float | None = _col("°C", "hottest GPU temperature sample")
    gpu_sm_clock_mhz_mean: float | None = _col("MHz", "mean SM clock (mean over GPUs)")
    joules_per_token: float | None = _col("J/token", "gpu_energy_j / eval_count")
    cpu_pct_system: float | None = _col("%", "mean whole-machine CPU utilisation (100 = all cores busy)")
    cpu_pct_process: float | None = _col("%", "mean CPU of the server process (100 = one core busy)")
    server_rss_mb_max: float | None = _col("MiB", "peak resident memory of the server process (embedded engine, or a local ollama)")
    telemetry_samples: int | None = _col("", "samples taken during the trial")
    concurrent_cells: int | None = _col("cells", "cells of this sweep measured on this machine while this trial ran "
                                                  "(its own included: 1 = alone; the larger of the counts at its "
                                                  "start and end)")
    # --- agent workloads (null for single-prompt trials): one row per LLM call of a workflow
    stage: str | None = _col("", "agent workflow step of this call: `analysis`, `report` (or `prompt`)")
    workflow_id: str | None = _col("", "one workflow execution (ingest → calls); shared by its calls' rows")
    workflow_wall_ms: float | None = _col("ms", "the whole workflow: ingest + calls + processing")
    ingest_ms: float | None = _col("ms", "reading and summarising workload.data_dir in this workflow")
    run_id: str | None = _col("", "one run of a multi-agent cell (concurrent: all agents; isolated: one)")
    agent_id: int | None = _col("", "agent within the run, 0 … agents − 1")
    agents: int | None = _col("", "agents in the cell (agents.count)")
    scenario: str | None = _col("", "multi-agent scenario: baseline_vs_chimera, chimera_homo, chimera_hetero")
    run_wall_ms: float | None = _col("ms", "barrier release → last agent done (isolated: that agent's run)")
    run_kind: str | None = _col("", "`concurrent` (all agents at once) or `isolated` (one agent alone)")


_ARROW_TYPES: dict[str, pa.DataType] = {
    "str | None": pa.string(),
    "int | None": pa.int64(),
    "float | None": pa.float64(),
    "bool | None": pa.bool_(),
    "dt.datetime | None": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class Column:
    """A column's declaration: what the README table and the loader need."""

    name: str
    type: pa.DataType
    unit: str
    doc: str


def _declare(cls: type) -> tuple[Column, ...]:
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    return tuple(
        Column(f.name, _ARROW_TYPES[str(hints[f.name])], f.metadata["unit"], f.metadata["doc"])
        for f in dataclasses.fields(cls)
    )


COLUMNS: tuple[Column, ...] = _declare(TrialRecord)
SCHEMA: pa.Schema = pa.schema([pa.field(c.name, c.type) for c in COLUMNS])
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)

# The options a cell may set; each is also a column.  The order is the order in cell ids.
OPTION_KEYS: tuple[str, ...] = (
    "num_gpu", "num_ctx", "num_thread", "num_batch", "temperature", "top_p", "top_k",
    "repeat_penalty", "seed", "num_predict",
)


def to_table(records: typing.Iterable[TrialRecord], extra: typing.Sequence[Column] = ()) -> pa.Table:
    """Records → an Arrow table with exactly :data:`SCHEMA` (plus ``extra`` columns)."""
    rows = [dataclasses.asdict(r) for r in records]
    schema = pa.schema(list(SCHEMA) + [pa.field(c.name, c.type) for c in extra])
    return pa.Table.from_pylist(rows, schema=schema)


def markdown_table() -> str:
    """The README's column reference, generated so it cannot drift from the schema."""
    lines = ["| column | type | unit | meaning |", "|---|---|---|---|"]
    for c in COLUMNS:
        lines.append(f"| `{c.name}` | {c.type} | {c.unit} | {c.doc} |")
    return "\n".join(lines)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
