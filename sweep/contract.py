"""The data contract between the sweep, the embedded server and the analysis: written once, here.

Everything that two sides of the project must agree on lives in this module:

* **columns** of a trial row (:class:`TrialRecord`): name, Arrow type, unit, meaning, and how the
  report shows it (label, decimals, which direction is better, which table group);
* **options** an Ollama-compatible server understands (:data:`OPTIONS`): type, allowed range,
  and whether a change reloads the model (load-time) or applies per request;
* **statuses** a trial can carry (:class:`Status`), and which of them may recover on a retry;
* **file layout** of a sweep directory (``_run.json``, ``_telemetry/``, the provenance key, the
  default ``outputs/sweeps`` root, a cell as a directory of append-only parts), and the **one
  reader** of it (:func:`read_whole`, :func:`trial_files`, :func:`read_cell`, :func:`newest_sweep`)
  that the sweep and the analysis both use.

It imports only the standard library and pyarrow, so the analysis and the server can import it
without pulling in Hydra, httpx or the engine.  ``tests/test_contract.py`` fails if any of these
facts is written down again elsewhere.

How to add a column
    Add one line at the END of :class:`TrialRecord` (``name: type | None = col(unit, meaning)``,
    plus ``label=/decimals=/better=/show=`` if the report should tabulate it), then regenerate the
    column reference (``python scripts/columns_page.py`` writes docs/columns.md).
    The writer, the loader, the docs check and the report pick it up from here.  Never rename or
    reorder existing columns: older sweeps and users' scripts rely on them.

How to add an option to sweep over
    Add its column (as above) and its :class:`Option` line to :data:`OPTIONS`; an option is a
    sweep option (a grid axis, a ``chimera.*`` key, a column) exactly when a column has its name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# ---------------------------------------------------------------- statuses


class Status(enum.StrEnum):
    """What happened to a trial.  The values are stored as text in ``status``: never change them."""

    OK = "ok"
    CONNECT_ERROR = "connect_error"    # server unreachable / connection refused or reset before a response
    HTTP_ERROR = "http_error"          # HTTP 4xx/5xx before streaming (code in `http_status`, body in `error`)
    SERVER_ERROR = "server_error"      # an {"error": ...} line inside a 200 stream
    PROTOCOL_ERROR = "protocol_error"  # malformed / truncated NDJSON, stream ended without done: true
    STALL = "stall"                    # no chunk for backend.stall_timeout_s
    TIMEOUT = "timeout"                # the whole request exceeded backend.request_timeout_s
    SKIPPED = "skipped"                # not run: the cell was abandoned after repeated failures


#: Failure kinds worth another attempt: the server or the network may recover.
TRANSIENT_STATUSES: frozenset[Status] = frozenset(
    {Status.CONNECT_ERROR, Status.PROTOCOL_ERROR, Status.STALL, Status.TIMEOUT, Status.SERVER_ERROR}
)


def is_transient(status: str | None, http_status: int | None) -> bool:
    """May a retry succeed?  HTTP errors only when the code says so (5xx, 429 Too Many Requests)."""
    if status in TRANSIENT_STATUSES:
        return True
    return status == Status.HTTP_ERROR and http_status is not None and (http_status >= 500 or http_status == 429)


# ---------------------------------------------------------------- columns

HIGHER = "higher"
LOWER = "lower"
# Report groups (``show=``): the comprehensive table's server timings, and per-cell extras.
DURATION = "duration"
EXTRA = "extra"


def col(unit: str, doc: str, *, label: str = "", decimals: int | None = None, better: str | None = None,
        show: str | None = None) -> typing.Any:
    """A column: a dataclass field with its unit, meaning and report display, defaulting to null."""
    meta = {"unit": unit, "doc": doc, "label": label, "decimals": decimals, "better": better, "show": show}
    return field(default=None, metadata=meta)


@dataclass
class TrialRecord:
    """One measured (or failed) request.  ``None`` means "not set" / "not measured", never 0.

    The field order is the Parquet column order: new columns go at the end.
    """

    # --- identity of the sweep, the cell and the trial
    sweep_id: str | None = col("", "sweep this trial belongs to (one multirun)")
    cell_id: str | None = col("", "readable cell label: preset, model and the set options")
    cell_hash: str | None = col("", "sha256 (16 hex) of the cell's full resolved config; resume matches on it")
    preset: str | None = col("", "chimera preset label: `baseline` or `chimera`")
    model: str | None = col("", "model name as the server knows it (e.g. gemma3:270m)")
    backend: str | None = col("", "`embedded`, `ollama`, `openai` or `llama_server` (the `backend=` group)")
    base_url: str | None = col("", "server address the trial was sent to")
    # --- the options sent (null = not sent, the server's default applied)
    num_gpu: int | None = col("layers", "layers offloaded to the GPU")
    num_ctx: int | None = col("tokens", "context length")
    temperature: float | None = col("", "sampling temperature")
    top_p: float | None = col("", "nucleus sampling threshold")
    top_k: int | None = col("", "top-k sampling")
    repeat_penalty: float | None = col("", "repetition penalty")
    seed: int | None = col("", "sampling seed")
    workload: str | None = col("", "workload name")
    prompt_id: str | None = col("", "prompt within the workload (index or name)")
    trial: int | None = col("", "trial index within the cell and prompt (warm-ups count from 0 too)")
    warmup: bool | None = col("", "true for warm-up trials (excluded from statistics by default)")
    status: str | None = col("", "`ok` or the failure kind: " + ", ".join(s.value for s in list(Status)[1:]))
    error: str | None = col("", "error text when status is not ok")
    started_at: dt.datetime | None = col("UTC", "wall-clock time the request was sent (a label, not a latency)")
    # --- client-side timings (monotonic clock, stamped at byte arrival)
    ttft_ms: float | None = col("ms", "request sent → first chunk with non-empty text",
                                label="TTFT ms", decimals=1, better=LOWER)
    itl_ms_mean: float | None = col("ms", "mean gap between consecutive content chunks")
    itl_ms_p50: float | None = col("ms", "median gap between consecutive content chunks")
    itl_ms_p99: float | None = col("ms", "99th percentile gap between consecutive content chunks")
    e2e_ms: float | None = col("ms", "request sent → final chunk received",
                               label="e2e ms", decimals=1, better=LOWER, show=EXTRA)
    throughput_tok_s: float | None = col("tok/s", "server's eval_count / eval_duration",
                                         label="tok/s", decimals=2, better=HIGHER)
    client_tok_s: float | None = col("tok/s", "content chunks after the first / (last − first arrival)",
                                     label="client tok/s", decimals=2, better=HIGHER, show=EXTRA)
    # --- the server's own timings from the final chunk
    load_duration_ms: float | None = col("ms", "model load time (≈0 when already loaded)",
                                         label="load ms", decimals=1, better=LOWER, show=DURATION)
    prompt_eval_duration_ms: float | None = col("ms", "prompt processing time",
                                                label="prompt eval ms", decimals=1, better=LOWER, show=DURATION)
    eval_duration_ms: float | None = col("ms", "token generation time",
                                         label="eval ms", decimals=1, better=LOWER, show=DURATION)
    total_duration_ms: float | None = col("ms", "whole request on the server")
    prompt_eval_count: int | None = col("tokens", "prompt tokens evaluated")
    eval_count: int | None = col("tokens", "tokens generated")
    done_reason: str | None = col("", "`stop`, `length`, … as the server reports it")
    response: str | None = col("", "generated text")
    # --- further options and bookkeeping
    num_predict: int | None = col("tokens", "max tokens to generate")
    num_thread: int | None = col("threads", "CPU threads for generation (0: the runtime decides)")
    num_batch: int | None = col("tokens", "prompt batch size")
    attempt: int | None = col("", "1 + retries used for this trial")
    content_chunks: int | None = col("", "chunks with non-empty text received")
    # --- telemetry during the trial (null when not measured; GPU columns need an NVIDIA driver)
    gpu_name: str | None = col("", "GPU model(s) on the server machine, ' + '-joined when several")
    gpu_count: int | None = col("", "GPUs sampled")
    gpu_util_pct_mean: float | None = col("%", "mean GPU utilisation (mean over GPUs)",
                                          label="GPU util %", decimals=1, better=LOWER, show=EXTRA)
    gpu_util_pct_max: float | None = col("%", "highest GPU utilisation sample (any GPU)")
    gpu_mem_used_mb_max: float | None = col("MiB", "peak GPU memory used (sum over GPUs; MiB as nvidia-smi shows it)",
                                            label="GPU mem MB max", decimals=0, better=LOWER, show=EXTRA)
    gpu_power_w_mean: float | None = col("W", "mean board power (sum over GPUs)",
                                         label="GPU W", decimals=1, better=LOWER, show=EXTRA)
    gpu_energy_j: float | None = col("J", "energy over the trial (energy counter, else ∫ power dt; sum over GPUs)",
                                     label="GPU J", decimals=1, better=LOWER, show=EXTRA)
    gpu_temp_c_max: float | None = col("°C", "hottest GPU temperature sample",
                                       label="GPU °C max", decimals=1, better=LOWER, show=EXTRA)
    gpu_sm_clock_mhz_mean: float | None = col("MHz", "mean SM clock (mean over GPUs)")
    joules_per_token: float | None = col("J/token", "gpu_energy_j / eval_count",
                                         label="J/tok", decimals=4, better=LOWER, show=EXTRA)
    cpu_pct_system: float | None = col("%", "mean whole-machine CPU utilisation (100 = all cores busy)",
                                       label="machine CPU %", decimals=1, better=LOWER, show=EXTRA)
    cpu_pct_process: float | None = col("%", "mean CPU of the server process (100 = one core busy)",
                                        label="server CPU %", decimals=1, better=LOWER, show=EXTRA)
    server_rss_mb_max: float | None = col("MiB", "peak resident memory of the server process (embedded engine, "
                                          "or a local ollama)", label="server RSS MB max", decimals=0,
                                          better=LOWER, show=EXTRA)
    telemetry_samples: int | None = col("", "samples taken during the trial")
    concurrent_cells: int | None = col("cells", "the most cells of this sweep with a call in flight on this machine at "
                                       "one moment while this trial's call ran (its own included: 1 = alone)")
    # --- agent workloads (null for single-prompt trials): one row per LLM call of a workflow
    stage: str | None = col("", "agent workflow step of this call: `analysis`, `report` (or `prompt`)")
    workflow_id: str | None = col("", "one workflow execution (ingest → calls); shared by its calls' rows")
    workflow_wall_ms: float | None = col("ms", "the whole workflow: ingest + calls + processing")
    ingest_ms: float | None = col("ms", "reading and summarising workload.data_dir in this workflow")
    run_id: str | None = col("", "one run of a multi-agent cell (concurrent: all agents; isolated: one)")
    agent_id: int | None = col("", "agent within the run, 0 … agents − 1")
    agents: int | None = col("", "agents in the cell (agents.count)")
    scenario: str | None = col("", "multi-agent scenario: baseline_vs_chimera, chimera_homo, chimera_hetero")
    run_wall_ms: float | None = col("ms", "barrier release → last agent done (isolated: that agent's run)")
    run_kind: str | None = col("", "`concurrent` (all agents at once) or `isolated` (one agent alone)")
    http_status: int | None = col("", "HTTP status code of the response (null when none arrived); "
                                  "retries of `http_error` read it")
    # --- model state, order and offload (issue 16): see sweep/backends/model_state.py, sweep/order.py, sweep/adaptive.py
    state: str | None = col("", "model state the trial was measured in: `warm`, `cold` (unloaded before the trial) "
                                "or `reload` (state=reload)")
    reloaded: bool | None = col("", "the request loaded the model: a load-time option or the model changed since the "
                                    "previous request, or load_duration ≥ 100 ms")
    round: int | None = col("", "round of the job's order (order=random/interleaved visit every cell once per round)")
    size: int | None = col("bytes", "model size in memory, from GET /api/ps after the cell's first call of the visit")
    size_vram: int | None = col("bytes", "part of `size` in GPU memory (/api/ps)")
    vram_fraction: float | None = col("", "size_vram / size: share of the model the server put on the GPU")
    context_length: int | None = col("tokens", "context length the server loaded (/api/ps); compare with num_ctx")
    model_layers: int | None = col("layers", "the model's block count (/api/show model_info); num_gpu asks for "
                                             "layers of it")
    stop_reason: str | None = col("", "trials=auto: why the cell stopped (`ci: …`, `max_trials: …`), on its last "
                                      "row; `abandoned`")
    # --- the client-side share of the trial (issue 16): what our client, the HTTP stack and the network add
    client_overhead_ms: float | None = col("ms", "e2e_ms − total_duration_ms: the trial's time outside the server "
                                                 "(our client, HTTP, network); null without the server's timings")
    client_ttft_overhead_ms: float | None = col("ms", "ttft_ms − (load_duration_ms + prompt_eval_duration_ms): the "
                                                      "same for TTFT (also holds the first token's eval step); null "
                                                      "without the server's timings")
    # --- results imported from the original harnesses (issue 28): see analysis/importers/
    source: str | None = col("", "where an imported row came from: `<harness>:<file>` (rust-single, rust-multi, "
                                 "python-multi); null for rows a sweep measured")
    aggregated_calls: int | None = col("", "LLM calls this row aggregates (the Python harness kept per-agent totals "
                                           "only: its n counts runs, not calls); null = one call")
    # --- background load (issue 26): what else ran on the measuring machine, see sweep/background.py
    background_cpu_pct: float | None = col("%", "CPU time other processes on the machine used while the call ran "
                                                "(/proc/stat minus our own process tree and the server we "
                                                "measure), 100 = one core busy; null where unknown (not Linux)",
                                           label="background CPU %", decimals=1, better=LOWER, show=EXTRA)
    loadavg_1m: float | None = col("", "the machine's 1-minute load average when the call started")
    # --- load generation (issue 29): workload=load, one row per request of a load run, see sweep/workloads/load.py
    load_loop: str | None = col("", "`open` (arrivals at a fixed rate, whatever is in flight) or `closed` (a fixed "
                                    "number of requests in flight)")
    load_arrivals: str | None = col("", "open loop: `constant` or `poisson` (seeded) inter-arrival times")
    load_rate: float | None = col("req/s", "open loop: the arrival rate this run offered")
    load_concurrency: int | None = col("requests", "closed loop: requests kept in flight in this run")
    load_run_id: str | None = col("", "one load run (a rate or concurrency held for load.duration_s or "
                                      "load.requests); shared by its requests' rows")
    load_step: int | None = col("", "load.rates=sweep: the run's place in its knee search (0, 1, …); null for a "
                                    "fixed rate or concurrency")
    load_offset_ms: float | None = col("ms", "scheduled send time of the request, from the run's start")
    send_delay_ms: float | None = col("ms", "actual send − scheduled send time; in load rows ttft_ms and e2e_ms "
                                            "count from the scheduled time, so they include it (no coordinated "
                                            "omission)")
    load_run_s: float | None = col("s", "the run's span: its start → its last response (goodput's denominator); "
                                        "null for the finished requests of a run Ctrl-C interrupted")
    slo_ok: bool | None = col("", "the request succeeded and met every SLO set (ttft_ms, itl_ms_mean, e2e_ms "
                                  "against slo.ttft_ms, slo.itl_ms, slo.e2e_ms)")
    slo: str | None = col("", "the SLO the run was judged by, e.g. `ttft_ms<=500 fraction>=0.9`")
    load_capacity: float | None = col("req/s or requests", "load.rates=sweep, on the last run of a bisection: the "
                                                           "highest rate (or concurrency) whose goodput fraction "
                                                           "met slo.fraction; null when none did")
    load_knee: str | None = col("", "load.rates=sweep, on the last run of a bisection: `bracketed` (between a "
                                    "passing and a failing level), `below_low` (load.low failed) or `at_high` "
                                    "(load.high passed: a lower bound)")
    # --- server parallelism (issue 29): backend.parallel, see sweep/backends/processes.py
    server_parallel: int | None = col("requests", "requests the server generates at once (its slots): backend.parallel "
                                                  "for a server the sweep starts (embedded, llama_server; 1 when "
                                                  "unset), a local Ollama's OLLAMA_NUM_PARALLEL; null where unknown")
    # --- lengths under control (issue 29): see sweep/workloads/lengths.py
    prompt_tokens: int | None = col("tokens", "workload.prompt_tokens: the prompt tokens asked for (the server's "
                                              "own count of what it evaluated is `prompt_eval_count`); null when "
                                              "the prompt was given as text")
    short_output: bool | None = col("", "workload.max_tokens set and the server generated fewer tokens "
                                        "(eval_count < num_predict): an end-of-sequence or stop the backend could "
                                        "not switch off; null when max_tokens was not set")
    # --- report (issue 29): prompt-processing speed, see prompt_tokens_per_s() below
    prompt_tokens_per_s: float | None = col("tok/s", "server's prompt_eval_count / prompt_eval_duration (prompt "
                                                     "processing speed, llama-bench's pp); null when either is "
                                                     "missing or 0. A cached prompt prefix is not evaluated again, "
                                                     "so a cache hit reports few tokens and a misleading speed",
                                            label="prompt tok/s", decimals=1, better=HIGHER, show=EXTRA)


#: A cell whose measured trials ran beside more than this much CPU of other processes (mean
#: ``background_cpu_pct``, % of one core) is flagged in the summary and the report: its timings may be
#: the machine's load, not its settings.
BACKGROUND_CPU_FLAG_PCT = 20.0
#: Two compared cells (baseline and chimera, or one cell in two datasets) whose mean ``background_cpu_pct``
#: differ by more than this (% of one core) are flagged, naming both: their difference may be the load's.
BACKGROUND_CPU_GAP_PCT = 10.0


_ARROW_TYPES: dict[str, pa.DataType] = {
    "str | None": pa.string(),
    "int | None": pa.int64(),
    "float | None": pa.float64(),
    "bool | None": pa.bool_(),
    "dt.datetime | None": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class Column:
    """A column's declaration: what the writer, docs/columns.md, the loader and the report need."""

    name: str
    type: pa.DataType
    unit: str
    doc: str
    label: str = ""                 # report header (includes the unit); empty: not tabulated by name
    decimals: int | None = None     # digits the report prints
    better: str | None = None       # HIGHER or LOWER: the direction of an improvement
    show: str | None = None         # DURATION or EXTRA: the report group that tabulates it per cell

    @property
    def numeric(self) -> bool:
        return pa.types.is_integer(self.type) or pa.types.is_floating(self.type)


def _declare(cls: type) -> tuple[Column, ...]:
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    return tuple(
        Column(f.name, _ARROW_TYPES[str(hints[f.name])], **f.metadata)
        for f in dataclasses.fields(cls)
    )


COLUMNS: tuple[Column, ...] = _declare(TrialRecord)
COLUMNS_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
SCHEMA: pa.Schema = pa.schema([pa.field(c.name, c.type) for c in COLUMNS])
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)


def to_table(records: Iterable[TrialRecord], extra: Sequence[Column] = ()) -> pa.Table:
    """Records → an Arrow table with exactly :data:`SCHEMA` (plus ``extra`` columns)."""
    rows = [dataclasses.asdict(r) for r in records]
    schema = pa.schema(list(SCHEMA) + [pa.field(c.name, c.type) for c in extra])
    return pa.Table.from_pylist(rows, schema=schema)


def conform(table: pa.Table, schema: pa.Schema = SCHEMA) -> pa.Table:
    """An older file's rows in today's schema: columns added since then are null.

    A file already in the schema comes back as it is, and only columns of another type are
    cast: casting all ~100 columns of every part took ~7 ms a part, most of reading a cell.
    """
    if table.schema.equals(schema):
        return table.replace_schema_metadata(schema.metadata)   # the file's own key-value metadata stays with the file
    present = set(table.column_names)
    columns = []
    for f in schema:
        column = table.column(f.name) if f.name in present else pa.nulls(table.num_rows, f.type)
        columns.append(column if column.type == f.type else column.cast(f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def markdown_table() -> str:
    """The column reference of docs/columns.md, generated so it cannot drift from the schema."""
    lines = ["| column | type | unit | meaning |", "|---|---|---|---|"]
    for c in COLUMNS:
        lines.append(f"| `{c.name}` | {c.type} | {c.unit} | {c.doc} |")
    return "\n".join(lines)


def utc_now() -> dt.datetime:
    """``started_at`` is wall-clock UTC."""
    return dt.datetime.now(dt.timezone.utc)


def client_overhead_ms(e2e_ms: typing.Any, total_duration_ms: typing.Any) -> typing.Any:
    """The ``client_overhead_ms`` column from its inputs: e2e − the server's total_duration.

    One formula for the sweep (floats; None when an input is) and for the analysis
    (pandas Series of older sweeps that did not store the column).
    """
    return None if e2e_ms is None or total_duration_ms is None else e2e_ms - total_duration_ms


def client_ttft_overhead_ms(ttft_ms: typing.Any, load_duration_ms: typing.Any,
                            prompt_eval_duration_ms: typing.Any) -> typing.Any:
    """The ``client_ttft_overhead_ms`` column from its inputs: TTFT − (load + prompt eval); see above."""
    if ttft_ms is None or load_duration_ms is None or prompt_eval_duration_ms is None:
        return None
    return ttft_ms - (load_duration_ms + prompt_eval_duration_ms)


def short_output(eval_count: typing.Any, num_predict: typing.Any) -> bool | None:
    """The ``short_output`` column: fewer tokens generated than asked; None when either is unknown."""
    if eval_count is None or num_predict is None or num_predict <= 0:
        return None
    return bool(eval_count < num_predict)


def prompt_tokens_per_s(prompt_eval_count: typing.Any, prompt_eval_duration_ms: typing.Any) -> typing.Any:
    """The ``prompt_tokens_per_s`` column from its inputs: prompt_eval_count / prompt_eval_duration (in s).

    Null (None for floats, NaN in a pandas Series) when either input is missing or not positive: an
    OpenAI-compatible server reports no prompt timings, and a zero duration is not a speed.
    """
    if hasattr(prompt_eval_count, "where"):      # pandas Series (the analysis, older sweeps without the column)
        count, ms = prompt_eval_count.astype(float), prompt_eval_duration_ms.astype(float)
        return (count / (ms / 1000.0)).where((count > 0) & (ms > 0))
    if prompt_eval_count is None or prompt_eval_duration_ms is None:
        return None
    if prompt_eval_count <= 0 or prompt_eval_duration_ms <= 0:
        return None
    return prompt_eval_count / (prompt_eval_duration_ms / 1000.0)


def tpot_ms(e2e_ms: typing.Any, ttft_ms: typing.Any, eval_count: typing.Any) -> typing.Any:
    """Time per output token after the first, per trial: (e2e − TTFT) / (eval_count − 1), in ms.

    The definition vLLM bench and GuideLLM use, on our client's clock and the server's token count:
    the decode time the client waited, spread over the tokens after the first.  Unlike the ITL
    columns (gaps between *chunks* as they arrived) it counts tokens, so a chunk carrying several
    tokens, or a final chunk without text, does not change it.  Null (NaN in a Series) when an input
    is missing, fewer than 2 tokens were generated, or e2e < TTFT.  Not stored: the analysis derives
    it from these three columns, so every sweep, old or new, has it.
    """
    if hasattr(e2e_ms, "where"):
        e2e, ttft, n = e2e_ms.astype(float), ttft_ms.astype(float), eval_count.astype(float)
        return ((e2e - ttft) / (n - 1)).where((n >= 2) & (e2e >= ttft))
    if e2e_ms is None or ttft_ms is None or eval_count is None or eval_count < 2 or e2e_ms < ttft_ms:
        return None
    return (e2e_ms - ttft_ms) / (eval_count - 1)


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """An Ollama request option: its type, its allowed range, and when it takes effect.

    ``load_time`` options are fixed when the engine loads a model (a change reloads it);
    the others apply per request.  ``lo``/``hi`` are inclusive; ``None`` is unbounded.
    """

    name: str
    type: type                      # int, float, bool or tuple (a list of strings)
    lo: float | None = None
    hi: float | None = None
    load_time: bool = False

    def range_error(self, value: float) -> str | None:
        """``"must be >= 1"`` when ``value`` is out of range, else None (callers add the context)."""
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            return f"must be >= {self.lo:g}" if self.hi is None else f"must be between {self.lo:g} and {self.hi:g}"
        return None

    @property
    def is_column(self) -> bool:
        """A sweep option: a grid axis, a ``chimera.*`` key and a trial column."""
        return self.name in COLUMNS_BY_NAME


# The first ten are the sweep's options, in the order cell ids name them (cell ids and file names of
# existing sweeps depend on this order: append, never reorder).  num_thread=0 means "let the runtime
# decide" to Ollama and to our server; the sweep accepts it as a level of its own (stored as 0, distinct
# from null = not sent), because that is what a user who writes it wants to measure.
OPTIONS: tuple[Option, ...] = (
    Option("num_gpu", int, -1, None, load_time=True),
    Option("num_ctx", int, 1, None, load_time=True),
    Option("num_thread", int, 0, 1024, load_time=True),
    Option("num_batch", int, 1, 1 << 16, load_time=True),
    Option("temperature", float, 0.0),
    Option("top_p", float, 0.0, 1.0),
    Option("top_k", int, 0),
    Option("repeat_penalty", float, 0.0),
    Option("seed", int),
    Option("num_predict", int, -2),
    # understood by the embedded server, not swept (no column)
    Option("use_mmap", bool, load_time=True),
    Option("min_p", float, 0.0, 1.0),
    Option("typical_p", float, 0.0, 1.0),
    Option("repeat_last_n", int, -1),
    Option("presence_penalty", float),
    Option("frequency_penalty", float),
    Option("mirostat", int, 0, 2),
    Option("mirostat_tau", float, 0.0),
    Option("mirostat_eta", float, 0.0),
    Option("stop", tuple),
    Option("ignore_eos", bool),     # keep generating past end-of-sequence (workload.ignore_eos on the embedded engine)
)
OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
#: The options a cell may set; each is also a column.  The order is the order in cell ids.
OPTION_KEYS: tuple[str, ...] = tuple(o.name for o in OPTIONS if o.is_column)
#: Sweep options whose values are integers (levels print as ``99``, not ``99.0``).
INT_OPTIONS: frozenset[str] = frozenset(o.name for o in OPTIONS if o.is_column and o.type is int)

# ---------------------------------------------------------------- file layout and the one reader

SWEEPS_ROOT = "outputs/sweeps"          # default output_root: <root>/<sweep_id>/ is one sweep
RUN_FILE = "_run.json"                  # the sweep's provenance and each cell's resolved config
RUN_LOCK = "_run.lock"                  # serialises jobs of a parallel launcher writing RUN_FILE
TRACES_DIR = "_telemetry"               # per-sample telemetry, <sweep>/_telemetry/<cell>.parquet
HYDRA_DIR = "_hydra"                    # Hydra's own files (config, logs) inside the sweep directory
CORRUPT_DIR = "_corrupt"                # unreadable trial parts a resume moved aside (same relative paths)
PROVENANCE_KEY = b"chimera.provenance"  # Parquet key-value metadata of every cell file
# Anything under a name starting with these is not trial data, so read_parquet(<sweep dir>) reads trials only.
PRIVATE_PREFIXES = ("_", ".")


def read_whole(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file (``columns``: those of them the file has) through one open handle.

    Why one handle: reading by path opens the file more than once (footer, then pages); a
    writer's atomic rename in between hands the reader two versions, and it
    fails with "page was smaller than expected".  One handle pins one inode.  It is
    Arrow's own file, not Python's ``open``: Arrow's reader threads calling back
    into a Python file aborted the interpreter at exit in about 1 run in 5.

    Why ``columns``: a file has ~100 columns and a reader that needs three reads them
    ~3× faster; a file written before a column existed simply lacks it (:func:`conform`
    adds it as nulls).
    """
    with pa.OSFile(str(path), "rb") as handle:
        if columns is None:
            return pq.read_table(handle)
        file = pq.ParquetFile(handle)
        present = set(file.schema_arrow.names)
        return file.read(columns=[c for c in columns if c in present])


# A cell is <sweep>/<cell>.parquet/, a directory of parts part-<first>-<last>.parquet covering flushes
# first..last of that cell (sweep/store.py writes them).  A merged part covers the parts it replaced; until
# those are deleted, the reader skips them.  A cell written before parts is one <cell>.parquet file.
PART_PREFIX = "part-"
_PART = re.compile(r"^part-(\d{8})-(\d{8})\.parquet$")


def part_name(first: int, last: int) -> str:
    """The file name of a part covering flushes ``first``..``last`` (inclusive) of its cell."""
    return f"{PART_PREFIX}{first:08d}-{last:08d}.parquet"


def part_range(name: str) -> tuple[int, int] | None:
    """``(first, last)`` of a part's file name; None for any other file."""
    match = _PART.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _uncovered(paths: Sequence[Path]) -> list[Path]:
    """Drop the parts that a larger part in the same directory covers (a merge caught halfway)."""
    ranges: dict[Path, list[tuple[int, int]]] = {}
    for p in paths:
        r = part_range(p.name)
        if r:
            ranges.setdefault(p.parent, []).append(r)

    def covered(p: Path) -> bool:
        r = part_range(p.name)
        return r is not None and any(a <= r[0] and r[1] <= b and (a, b) != r for a, b in ranges[p.parent])

    return [p for p in paths if not covered(p)]


def trial_files(directory: Path) -> list[Path]:
    """The trial Parquet files under ``directory``: parts and one-file cells, oldest part first.

    Skips anything under a ``_`` or ``.`` name, and parts that a merged part covers, so a
    listing taken at any moment of a sweep holds every stored row exactly once.
    """
    out = []
    for p in sorted(directory.rglob("*.parquet")):
        if p.is_file() and not any(part.startswith(PRIVATE_PREFIXES) for part in p.relative_to(directory).parts):
            out.append(p)
    return _uncovered(out)


def read_tables(directory: Path, columns: list[str] | None = None) -> list[tuple[Path, pa.Table]]:
    """Every trial file under ``directory``, read through :func:`read_whole`, as of one listing.

    A merge may delete a part between the listing and its reading; the merged part then
    holds those rows, so the directory is listed again (a few times at most).  An empty
    file is a part that a power cut caught before its fsync (``sweep/syncs.py``): no rows.
    Any other file that cannot be read raises :class:`OSError` naming it.
    """
    for attempt in range(4):
        tables = []
        for f in trial_files(directory):
            try:
                if f.stat().st_size == 0:
                    continue
                tables.append((f, read_whole(f, columns)))
            except FileNotFoundError:
                if attempt < 3:
                    break
                raise
            except (OSError, pa.ArrowException) as exc:
                raise OSError(f"cannot read {f}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        else:
            return tables
    return []   # unreachable: the last attempt returns or raises


def cell_paths(sweep_dir: Path) -> list[Path]:
    """The cells of a sweep: ``<cell>.parquet`` directories of parts (or one-file cells from before parts)."""
    return sorted(p for p in sweep_dir.glob("*.parquet") if not p.name.startswith(PRIVATE_PREFIXES))


def cell_path(directory: Path, stem: str) -> Path:
    """Where the cell ``stem`` (``Cell.file_stem``) lives under a sweep directory (or its ``_telemetry/``)."""
    return directory / f"{stem}.parquet"


def cell_rows(path: Path, cell_hash: str, columns: list[str] | None = None) -> list[dict[str, typing.Any]]:
    """The stored rows of one cell (by hash; ``columns`` only, when given) as dicts, oldest first; [] before any."""
    if not path.exists():
        return []
    table = read_cell(path, columns=list(dict.fromkeys([*columns, "cell_hash"])) if columns else None)
    hashes = table.column("cell_hash").to_pylist()
    rows = (table.select(columns) if columns else table).to_pylist()
    return [row for row, h in zip(rows, hashes) if h == cell_hash]


def read_cell(path: Path, schema: pa.Schema = SCHEMA, columns: list[str] | None = None) -> pa.Table:
    """All rows of one cell (a directory of parts, or a one-file cell) in ``schema``, oldest first.

    ``columns``: only those of ``schema`` (far faster than all of them when a caller needs a few).
    """
    if columns is not None:
        schema = pa.schema([schema.field(name) for name in columns])
    if path.is_file():
        return conform(read_whole(path, columns), schema)
    tables = [conform(t, schema) for _, t in read_tables(path, columns)] if path.is_dir() else []
    return pa.concat_tables(tables) if tables else schema.empty_table()


def trace_files(sweep_dir: Path) -> list[Path]:
    """The telemetry sample files of a sweep (``_telemetry/<cell>.parquet/`` parts, or older one-file cells)."""
    directory = sweep_dir / TRACES_DIR
    return trial_files(directory) if directory.is_dir() else []


def sweep_dirs(root: Path) -> list[Path]:
    """The sweep directories under ``root``, most recently modified first."""
    if not root.is_dir():
        return []
    sweeps = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(PRIVATE_PREFIXES)]
    return sorted(sweeps, key=lambda p: p.stat().st_mtime, reverse=True)


def newest_sweep(root: Path) -> Path | None:
    """The most recently modified sweep directory under ``root`` that holds trials (None if there is none).

    Why "holds trials": a run stopped before its first trial (a bad address, Ctrl-C) may leave a
    directory of Hydra's files only; "the newest sweep" of ``python -m analysis`` or ``resume=true``
    is the newest one with something to read.
    """
    return next((p for p in sweep_dirs(root) if trial_files(p)), None)
