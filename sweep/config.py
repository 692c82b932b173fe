"""Structured configs: the one place where config keys, types and defaults live.

The dataclasses are registered in Hydra's ConfigStore as the schema behind the
YAML groups in ``conf/``, so a typo or a wrong type on the command line
(``chimera.num_ctx=abc``, ``order=randm``: every choice key is a StrEnum) fails in Hydra
before any request is sent.  Value checks that types cannot express (``trials=-1``) live in
:func:`sweep.plan.validate`.  :func:`typed` turns a composed config into a :class:`SweepConfig`
instance once per entry point; the code below takes typed (sub-)configs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import dataclass, field, make_dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from sweep.contract import OPTION_KEYS, OPTIONS_BY_NAME, SWEEPS_ROOT, newest_sweep

# ---------------------------------------------------------------- choice keys
# Each key with a fixed set of values is a StrEnum, so Hydra refuses a typo (``order=randm``) while
# composing, in one line naming the allowed values, before anything starts.  OmegaConf accepts an
# enum member by its *name*, so every name equals its value (lowercase): the YAML files, the command
# line and ``--cfg job`` read as before, and a member compares equal to its string.


class WorkloadKind(StrEnum):
    """``workload.kind``: what one trial of a cell is."""

    prompt = "prompt"               # one streamed call per prompt
    agent_report = "agent_report"   # one agent's workflow (analysis, then report) over ingested data
    multi_agent = "multi_agent"     # N agents' workflows, concurrent and isolated runs
    load = "load"                   # one load run (open or closed loop), or one knee search: a row per request


class State(StrEnum):
    """``state``: the model state a measured call meets."""

    warm = "warm"       # loaded: warm-ups first when the previous request loaded other options
    cold = "cold"       # unloaded before every measured call (keep_alive 0, checked with /api/ps)
    reload = "reload"   # as it comes: reloads flagged, not avoided


class Order(StrEnum):
    """``order``: the order a sweep visits its cells in."""

    blocked = "blocked"           # all trials of a cell, then the next
    interleaved = "interleaved"   # one trial of each cell per round, same order every round
    random = "random"             # one trial of each cell per round, permuted every round


BACKEND_CONF = Path(__file__).resolve().parent.parent / "conf" / "backend"

# ``backend.kind``: the names of the files in conf/backend/ (the choices of ``backend=``), one name list.
# Why the files and not the records of sweep/backends/kinds.py: this schema sits below the backends
# (they take its typed configs), so it cannot import them; kinds.py checks at import that every name
# here has its record and every record its file.  A new kind is its record plus its file, nothing else.
BackendName = StrEnum("BackendName", [(p.stem, p.stem) for p in sorted(BACKEND_CONF.glob("*.yaml"))],
                      module=__name__)
BackendName.__doc__ = "``backend.kind``: one per file in conf/backend/ (and record in sweep.backends.kinds)."


class Api(StrEnum):
    """``backend.api``: the stream format (sweep/backends/kinds.py FORMATS)."""

    ollama = "ollama"   # NDJSON /api/generate | /api/chat
    openai = "openai"   # SSE /chat/completions | /completions


class Endpoint(StrEnum):
    """``workload.endpoint``: which call of the API a prompt goes to."""

    generate = "generate"         # ollama: /api/generate
    chat = "chat"                 # ollama: /api/chat; openai: /chat/completions
    completions = "completions"   # openai: /completions


class Postprocess(StrEnum):
    """``agent.postprocess``: applied to each stage's output before the next stage uses it."""

    trim = "trim"
    none = "none"


class Workflow(StrEnum):
    """``agents.workflow``: what each of several agents runs."""

    report = "report"   # ingest → analysis → report
    prompt = "prompt"   # one prompt


class Scenario(StrEnum):
    """``scenario.name``: which options each agent sends."""

    baseline_vs_chimera = "baseline_vs_chimera"   # agent 0 the server's defaults, the others the preset's
    chimera_homo = "chimera_homo"                 # every agent the preset's
    chimera_hetero = "chimera_hetero"             # agents.options[i] on top of the preset's


class Arrivals(StrEnum):
    """``load.arrivals``: the gaps between an open loop's requests."""

    constant = "constant"   # 1/rate apart
    poisson = "poisson"     # exponential gaps, seeded by load.seed


class Loop(StrEnum):
    """``load.loop``: how ``workload=load`` offers its load."""

    open = "open"       # arrivals at load.rate, whatever is in flight
    closed = "closed"   # load.concurrency requests kept in flight


class Rates(StrEnum):
    """``load.rates``: a search over the level instead of one level."""

    sweep = "sweep"   # find the knee (the highest level meeting slo.fraction) by doubling, then bisection


class Stat(StrEnum):
    """``objective.stat``: the statistic of the metric a search optimises."""

    mean = "mean"
    median = "median"
    p95 = "p95"


@dataclass
class ModelConfig:
    """Which model the server should run."""

    name: str = MISSING  # the server's own name, e.g. gemma3:270m or gemma3:latest


def _chimera_fields() -> list[tuple[str, Any, Any]]:
    """``preset`` plus one optional field per sweep option, typed as :data:`sweep.contract.OPTIONS` says."""
    fields: list[tuple[str, Any, Any]] = [("preset", str, field(default="baseline"))]
    for key in OPTION_KEYS:
        fields.append((key, Optional[OPTIONS_BY_NAME[key].type], field(default=None)))
    return fields


ChimeraConfig = make_dataclass("ChimeraConfig", _chimera_fields())
ChimeraConfig.__module__ = __name__
ChimeraConfig.__doc__ = """Inference options sent in Ollama's ``options``; ``None`` means "not sent".

    One field per sweep option of the data contract (:mod:`sweep.contract`), with its type.
    ``preset`` is only a label stored with every trial (``baseline`` or ``chimera``),
    so the analysis can compare the two.
    """


@dataclass
class BackendConfig:
    """Where requests go, and how long we wait.

    ``embedded`` starts our own llama.cpp server on 127.0.0.1 for the sweep;
    ``ollama`` talks to ``base_url``.  Secrets never live here: ``api_key_env``
    and ``headers_env`` name environment variables that are read at run time.
    """

    kind: BackendName = BackendName.embedded
    api: Api = Api.ollama                    # stream format: ollama = NDJSON /api/generate|chat, openai = SSE
    base_url: Optional[str] = None
    model_dir: Optional[str] = None          # embedded: extra .gguf files to serve
    connect_timeout_s: float = 10.0
    stall_timeout_s: float = 120.0           # no chunk for this long → status `stall`
    request_timeout_s: float = 900.0         # whole request → status `timeout`
    retries: int = 2                         # extra attempts for transient failures
    retry_backoff_s: float = 1.0             # doubled after each retry
    max_consecutive_failures: int = 3        # then the cell is abandoned
    keep_alive: Optional[str] = None         # sent as keep_alive when set (e.g. "5m", "0")
    api_key_env: str = "OLLAMA_API_KEY"      # bearer token, if that variable is set
    headers_env: str = "CHIMERA_SWEEP_HEADERS"  # "Name: value; Other: value", if set
    hosts: List[str] = field(default_factory=list)  # several servers: agents assigned round-robin
    instances: int = 1                       # embedded: servers started, each on its own port
    parallel: Optional[int] = None           # server slots (load-time): embedded --parallel, llama-server -np; null: 1


ANALYSIS_PROMPT = (
    "You are a performance engineer. Below is a summary of LLM inference benchmark results.\n\n{summary}\n\n"
    "Analyse it: which configurations are fastest (throughput, time to first token), how large the "
    "differences are, and what looks unreliable or noisy. Be specific and use the numbers."
)
REPORT_PROMPT = (
    "Write a short technical report for engineers, with an executive summary, key findings and "
    "recommendations, based on this analysis of LLM inference benchmarks:\n\n{analysis}"
)


@dataclass
class WorkloadConfig:
    """What is asked: a prompt list (inline or from a file) through one endpoint, or an agent workflow.

    ``kind``: ``prompt`` (the prompt list), ``agent_report`` (ingest ``data_dir`` →
    analysis call → report call) or ``multi_agent`` (``agents.count`` agents at once).
    """

    name: str = "report"
    prompts: List[str] = field(default_factory=lambda: ["Generate a technical report"])
    prompt_file: Optional[str] = None        # .txt: one prompt per line; .jsonl: {"id", "prompt"}
    system: Optional[str] = None
    endpoint: Endpoint = Endpoint.generate   # generate | chat (| completions: openai)
    kind: WorkloadKind = WorkloadKind.prompt
    data_dir: Optional[str] = None           # agent workflow: files to ingest (default: the bundled sample)
    analysis_prompt: str = ANALYSIS_PROMPT   # {summary} = what ingest found
    report_prompt: str = REPORT_PROMPT       # {analysis} = the analysis call's output, trimmed to num_ctx
    prompt_tokens: Optional[int] = None      # a prompt of exactly N tokens for the served model (sweep/workloads/lengths.py)
    max_tokens: Optional[int] = None         # tokens to generate: sent as num_predict (same fact as chimera.num_predict)
    ignore_eos: bool = False                 # keep generating past end-of-sequence where the backend can (max_tokens needed)
    raw: bool = False                        # endpoint=generate on the Ollama API: the text unchanged, no template
    prompt_seed: int = 0                     # seed of prompt_tokens' filler words (same seed, same text)


@dataclass
class AgentConfig:
    """How one agent behaves (the seed's custom agent): a system preamble and post-processing."""

    system: Optional[str] = None             # sent as the system prompt of every call
    postprocess: Postprocess = Postprocess.trim   # trim | none: applied to each stage's output before use


@dataclass
class AgentsConfig:
    """Several agents at once (``workload=multi_agent``)."""

    count: int = 2
    workflow: Workflow = Workflow.report     # report: ingest → analysis → report | prompt: one prompt
    isolated_runs: Optional[int] = None      # each agent's workflow alone, per agent (default: trials)
    options: List[Dict[str, Any]] = field(default_factory=list)  # chimera_hetero: per agent, on the preset


@dataclass
class ScenarioConfig:
    """Which options each agent sends: baseline_vs_chimera | chimera_homo | chimera_hetero."""

    name: Scenario = Scenario.chimera_homo


@dataclass
class GridConfig:
    """An explicit cell list for experiments that are not a plain cartesian product.

    Cells are: one ``baseline`` cell (every option unset but ``fixed``) if
    ``baseline`` is true, then the product of ``axes`` applied on top of the
    chimera preset.  A multirun over ``cell=range(0,N)`` runs one cell per job.
    """

    baseline: bool = True
    axes: Dict[str, List[Any]] = field(default_factory=dict)
    fixed: Dict[str, Any] = field(default_factory=dict)
    lengths: List[Dict[str, Any]] = field(default_factory=list)  # cells × these workload.prompt_tokens/max_tokens/ignore_eos


@dataclass
class TelemetryConfig:
    """Sampling of the machine during each trial (GPU via NVML when a driver exists, CPU/RSS always)."""

    enabled: bool = True
    interval_s: float = 0.1


@dataclass
class ObjectiveConfig:
    """What the job returns to a search sweeper (``hydra/sweeper=optuna``): one number per cell.

    ``stat`` of ``metric`` over the cell's successful measured trials; a cell whose
    p95 TTFT exceeds ``ttft_p95_max_ms`` (when set), or with no successful trial,
    scores ``failed_value`` (a bad value, so the search goes on).  Use a large
    ``failed_value`` when the sweeper minimises.
    """

    metric: str = "throughput_tok_s"
    stat: Stat = Stat.mean
    ttft_p95_max_ms: Optional[float] = None
    failed_value: float = 0.0


@dataclass
class AutoConfig:
    """``trials=auto``: measure until the 95 % CI half-width of ``metric`` is below ``ci_pct`` % of its mean."""

    metric: str = "throughput_tok_s"
    ci_pct: float = 2.0
    min_trials: int = 3
    max_trials: int = 30


@dataclass
class LoadConfig:
    """``workload=load``: the load a run offers (open loop at ``rate``, or closed loop at ``concurrency``) and for how long.

    ``rates=sweep`` finds the knee instead: from ``low`` the level doubles until the SLO fails (at most
    ``high``), then bisects the bracket until it is narrower than ``tolerance`` × its low end.
    """

    rate: Optional[float] = None             # open loop: requests per second (arrivals, whatever is in flight)
    arrivals: Arrivals = Arrivals.constant   # constant | poisson (exponential gaps, seeded by load.seed)
    concurrency: Optional[int] = None        # closed loop: requests kept in flight
    duration_s: Optional[float] = None       # a run's length: arrivals within it (10 s when requests is unset too)
    requests: Optional[int] = None           # or a run of this many requests
    rates: Optional[Rates] = None            # sweep: find the knee (highest level meeting slo.fraction) by bisection
    loop: Optional[Loop] = None              # open | closed; null: closed when load.concurrency is set
    low: Optional[float] = None              # sweep: first level (default 0.5 req/s open, 1 closed)
    high: Optional[float] = None             # sweep: the doubling stops here (default 64)
    tolerance: float = 0.05                  # sweep: stop when (failing − passing) ≤ tolerance × passing
    seed: int = 0                            # poisson arrivals (with the trial and step: each run its own draw)


@dataclass
class SloConfig:
    """The service-level objective of ``workload=load``: a request is good when it meets every limit set."""

    ttft_ms: Optional[float] = None          # time to first token, from the scheduled send time
    itl_ms: Optional[float] = None           # the request's mean inter-token latency (itl_ms_mean)
    e2e_ms: Optional[float] = None           # scheduled send → last chunk
    fraction: float = 0.9                    # load.rates=sweep: a level passes when this share of requests is good


@dataclass
class SweepConfig:
    """The root config of one job (= one cell, or one grid cell when ``grid`` is set)."""

    model: ModelConfig = MISSING
    chimera: ChimeraConfig = MISSING
    backend: BackendConfig = MISSING
    workload: WorkloadConfig = MISSING
    trials: Any = 3                          # measured trials per cell, or "auto" (see auto.*)
    warmup: int = 1
    resume: bool = False
    sweep_id: str = "${chimera.sweep_id:${output_root},${resume},${chimera.given_dir:}}"   # see new_sweep_id
    output_root: str = SWEEPS_ROOT
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    grid: Optional[GridConfig] = None
    cell: Optional[int] = None
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    dry_run: bool = False                    # print the plan (cells, resume state, reloads, duration); send nothing
    progress: bool = True                    # a live panel on a terminal, else a line per job; false: a line per trial
    # a parallel launcher may run two cells against one server at once (their numbers contaminate each other)
    allow_shared_host: bool = False
    auto: AutoConfig = field(default_factory=AutoConfig)
    state: State = State.warm                # warm | cold (unload before every trial) | reload (flag reloads)
    order: Optional[Order] = None            # blocked | interleaved | random; null: random when baseline+chimera
    order_seed: Optional[int] = None         # random order's seed; null: drawn and recorded in _run.json
    # set by the sweeper in a multirun under order=random|interleaved: this job measures round N of its cells only
    round: Optional[int] = None
    load: LoadConfig = field(default_factory=LoadConfig)    # workload=load: rate/concurrency, duration, knee search
    slo: SloConfig = field(default_factory=SloConfig)       # workload=load: what a good request is (goodput)


def new_sweep_id(output_root: str, resume: bool, given_dir: str) -> str:
    """``sweep_id`` when the config leaves it open: the name of the directory the sweep writes to.

    ``given_dir``: the name of a directory given directly (``hydra.sweep.dir=X``), which names
    the sweep, so a resume of X labels its rows with the same id; else, with ``resume=true``, the
    newest sweep under ``output_root``; else a new timestamp (``-2``, ``-3``, … when taken).

    Why a cached resolver (``chimera.sweep_id``): every job of a multirun, in whatever process a
    launcher runs it (joblib, Ray), must agree on one directory.  Hydra composes each job from the
    multirun's first config and copies that config's resolver cache into it (as it does for
    ``${now:}``), so the value decided once in the main process, when
    :class:`sweep.multirun.layout.SweepPlace` resolves the directory before any job is composed,
    is the one every job reads.
    """
    if given_dir:
        return given_dir
    root = Path(output_root)
    previous = newest_sweep(root) if resume else None
    if previous is not None:
        return previous.name
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    sweep_id, n = stamp, 2
    while (root / sweep_id).exists():
        sweep_id, n = f"{stamp}-{n}", n + 1
    return sweep_id


def given_dir(_root_: DictConfig) -> str:
    """The name of the sweep directory when it was given directly (its path does not name ``sweep_id``), else ``""``.

    ``hydra.sweep.dir`` for a multirun, ``hydra.run.dir`` for a single run; ``""`` too for a config
    composed without its ``hydra`` node.  Not cached (OmegaConf caches no resolver that reads the
    root); :func:`new_sweep_id`'s answer is.
    """
    hydra = _root_.get("hydra") if isinstance(_root_, DictConfig) else None
    if hydra is None:
        return ""
    mode = hydra.get("mode")
    node = "sweep" if getattr(mode, "name", str(mode)).endswith("MULTIRUN") else "run"
    raw = OmegaConf.to_container(hydra[node], resolve=False).get("dir")
    if raw is None or "sweep_id" in str(raw):
        return ""
    return Path(str(hydra[node].dir)).name


@functools.cache
def register() -> None:
    """Put the schemas where the YAML files in ``conf/`` find them; register the ``sweep_id`` resolvers.

    Once per process (cached): every entry and every in-process composition calls it, and storing the six
    structured schemas again costs ~50 ms each time for nothing.
    """
    OmegaConf.register_new_resolver("chimera.sweep_id", new_sweep_id, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("chimera.given_dir", given_dir, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="sweep_schema", node=SweepConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="chimera", name="chimera_schema", node=ChimeraConfig)
    cs.store(group="backend", name="backend_schema", node=BackendConfig)
    cs.store(group="workload", name="workload_schema", node=WorkloadConfig)
    cs.store(group="scenario", name="scenario_schema", node=ScenarioConfig)


def typed(cfg: DictConfig) -> SweepConfig:
    """The composed config as a :class:`SweepConfig` instance, interpolations resolved (``OmegaConf.to_object``).

    Why once, at each entry (the job, the multirun's planning): below it, functions take the typed
    sub-config they need (:class:`BackendConfig`, :class:`WorkloadConfig`, …) and choice keys are
    enum members, so no code compares a ``.get("kind", "prompt")`` with a string literal.
    Field by field (each node's ``to_object``), so a config that still holds Hydra's own node
    (a callback's, the sweeper's) converts as a job's does: that node is not part of the schema,
    and ``sweep_id`` resolves against it (:func:`given_dir`); no copy of it is made.
    """
    values = {}
    for f in dataclasses.fields(SweepConfig):
        node = cfg[f.name]
        values[f.name] = OmegaConf.to_object(node) if isinstance(node, (DictConfig, ListConfig)) else node
    return SweepConfig(**values)
