"""Cell, Prompt, TrialSpec, ConfigError and the option checks: the values every layer passes around.

Why a leaf: the planner makes cells, the store files them, the backends send them and the
workloads run them.  When these types lived in the planner, each of those imported the planner
and the planner imported a workload and a wire format back (a circle of seven modules).  Here
they import nothing of ours but :mod:`sweep.contract`, so every arrow points down to them.

A *cell* is one point of the grid (model × options × workload on one backend).  Its hash covers
everything that changes what is measured, so resuming a sweep matches cells by content, never by
directory name, and changing a parameter makes a new cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

from sweep.config import Arrivals, Loop, Postprocess, Scenario, Workflow, WorkloadKind
from sweep.contract import OPTION_KEYS, OPTIONS_BY_NAME, TrialRecord

MULTI_AGENT = WorkloadKind.multi_agent
FILLER_PROMPT_ID = "filler"   # the prompt of a workload.prompt_tokens cell (its text is built at run time)
ANALYSIS_STAGE, REPORT_STAGE, PROMPT_STAGE = "analysis", "report", "prompt"


class ConfigError(ValueError):
    """Bad configuration: reported as one line before any request is sent."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


@dataclass(frozen=True)
class Lengths:
    """Lengths under control (``workload.prompt_tokens`` / ``max_tokens`` / ``ignore_eos``).

    ``max_tokens`` itself is the cell's ``num_predict`` option (one fact); ``body`` and ``options``
    are what this backend kind needs on the wire to honour the rest (an ``ignore_eos`` body field or
    Ollama option, ``cache_prompt: false``, ``raw``), decided by the planner from the kind.
    """

    prompt_tokens: int | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    raw: bool = False
    seed: int = 0
    body: Mapping[str, Any] = field(default_factory=dict)      # extra top-level request fields
    options: Mapping[str, Any] = field(default_factory=dict)   # extra Ollama options

    def identity(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "max_tokens": self.max_tokens, "ignore_eos": self.ignore_eos,
                "raw": self.raw, "seed": self.seed}

    def label(self) -> str:
        """What the cell id adds: ``prompt_tokens=512``, ``ignore_eos`` (max_tokens shows as num_predict)."""
        parts = [f"prompt_tokens={self.prompt_tokens}"] if self.prompt_tokens is not None else []
        return " ".join(parts + (["ignore_eos"] if self.ignore_eos else []))


@dataclass(frozen=True)
class Cell:
    """One grid point.  ``options`` holds only the options that are set."""

    preset: str
    model: str
    backend: str
    base_url: str | None  # None for the embedded backend: its port is chosen at start
    options: Mapping[str, Any]
    workload: str
    prompts: tuple[Prompt, ...]
    system: str | None
    endpoint: str
    keep_alive: str | None
    agent_plan: AgentPlan | None = None  # agent workloads: agents, scenario, hosts, workflow texts
    load_plan: LoadPlan | None = None    # workload=load: the load offered, its length, the SLO, the knee search
    parallel: int | None = None  # backend.parallel: the server's slots (load-time: a change restarts the server)
    lengths: Lengths | None = None       # workload.prompt_tokens / max_tokens / ignore_eos, when any is set

    @property
    def cell_hash(self) -> str:
        """16 hex chars of sha256 over the cell's resolved content (not its name)."""
        identity = {
            "preset": self.preset, "model": self.model, "backend": self.backend,
            "base_url": self.base_url, "options": dict(self.options), "workload": self.workload,
            "prompts": [[p.id, p.text] for p in self.prompts], "system": self.system,
            "endpoint": self.endpoint, "keep_alive": self.keep_alive,
        }
        if self.agent_plan is not None:  # only then: prompt cells keep the hashes older sweeps stored
            identity["agent_plan"] = self.agent_plan.identity()
        if self.load_plan is not None:
            identity["load_plan"] = dataclasses.asdict(self.load_plan)
        if self.parallel is not None:    # likewise: cells without backend.parallel keep their hashes
            identity["parallel"] = self.parallel
        if self.lengths is not None:     # likewise; the filler text is built from the server's tokenizer at run
            identity["lengths"] = self.lengths.identity()   # time, so N and the seed identify it, not the text
            if self.lengths.prompt_tokens is not None:
                identity["prompts"] = []
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def cell_id(self) -> str:
        """A readable label: preset, model and the options that are set."""
        parts = [self.preset, self.model] + [f"{k}={v}" for k, v in self.options.items()]
        if self.parallel is not None:
            parts.append(f"parallel={self.parallel}")
        label = self.agent_plan.label() if self.agent_plan is not None else ""
        if self.load_plan is not None:
            label = self.load_plan.label()
        lengths = self.lengths.label() if self.lengths is not None else ""
        return " ".join(([label] if label else []) + parts + ([lengths] if lengths else []))

    @property
    def file_stem(self) -> str:
        """A file name that cannot escape the sweep directory, unique by hash."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.cell_id.replace(" ", "-")).strip("._-")
        return f"{safe[:96]}-{self.cell_hash}"


@dataclass(frozen=True)
class TrialSpec:
    """One request of a cell's schedule."""

    trial: int
    prompt: Prompt
    warmup: bool

    def key(self) -> tuple[int, str]:
        """What identifies the trial across resumed sweeps."""
        return (self.trial, self.prompt.id)


class Trial(Protocol):
    """One trial of a workload: a prompt's call (:class:`TrialSpec`) or an agent run (``RunSpec``)."""

    trial: int        # its round: trial ``r`` of every cell runs in round ``r``
    warmup: bool

    def key(self) -> Hashable: ...


class Workload(Protocol):
    """What a cell measures, one trial at a time: the one interface :func:`sweep.execute.run_cells` drives.

    Why a protocol here, in the leaf: the design (order, rounds, ``trials=auto``, resume, retries)
    is written once, in :mod:`sweep.execute`, which may not import the workloads above it; each
    workload (:mod:`sweep.workloads`) says what a round of its cell holds and runs one trial.
    A trial of a single-prompt cell is one call per prompt; of ``agent_report`` one workflow
    (analysis, then report); of ``multi_agent`` one run (all agents concurrent, or one isolated).
    """

    cell: Cell

    def round_trials(self, rnd: int) -> list[Trial]:
        """The measured trials of round ``rnd``, in the order they run."""
        ...

    def warmup_trial(self, n: int) -> Trial:
        """The ``n``-th warm-up trial of the cell (numbered on across visits and resumed runs)."""
        ...

    def rows_per_trial(self, trial: Trial) -> int:
        """Rows a complete attempt of ``trial`` stores (its calls)."""
        ...

    def stored(self, rows: Sequence[Mapping[str, Any]]) -> tuple[set[Hashable], int]:
        """Keys of the measured trials stored complete and ok, and the number of warm-up trials stored."""
        ...

    async def run_trial(self, trial: Trial, attempt: int) -> list[TrialRecord]:
        """One attempt of ``trial``: its rows, not yet stored (every call's, failures included)."""
        ...

    def failed(self, rows: Sequence[TrialRecord]) -> list[TrialRecord]:
        """The rows that make this attempt a failure, worth a retry when transient (usually: every row not ok).

        Why a workload's call: a load run's timed-out requests under overload are its measurement, not a
        failed attempt; only a run none of whose requests succeeded (a server down) is retried.
        """
        ...


def normalize_base_url(url: str) -> str:
    """Accept OLLAMA_HOST's forms (``host:port``) but only http(s) schemes."""
    if "://" not in url:
        url = "http://" + url
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"invalid backend.base_url '{url}': use http://host:port or https://host:port")
    return url.rstrip("/")


def validate_options(options: Mapping[str, Any]) -> None:
    """Types and ranges of set options (grid values arrive untyped from YAML), per :data:`sweep.contract.OPTIONS`."""
    for name, value in options.items():
        option = OPTIONS_BY_NAME[name]
        numeric = (int, float) if option.type is float else (int,)
        if isinstance(value, bool) or not isinstance(value, numeric):
            kind = "a number" if option.type is float else "an integer"
            raise ConfigError(f"invalid option {name}={value!r}: must be {kind}")
        problem = option.range_error(value)
        if problem:
            raise ConfigError(f"invalid option {name}={value}: {problem}")


# Options the engine applies when it loads the model: changing one (or the model) forces a reload.
LOAD_TIME_OPTIONS: tuple[str, ...] = tuple(k for k in OPTION_KEYS if OPTIONS_BY_NAME[k].load_time)


def load_key(cell: Cell) -> tuple[Any, ...]:
    """What a server must (re)load for this cell: which server, its slots, which model, which load-time options.

    Unset options sort first (``(0,)``), so a baseline cell on server defaults
    leads its model's group, and mixed None/int values still compare.  The slots
    (``backend.parallel``) come before the model: a change restarts the whole
    server, so the cells of one slot count run together, whatever their model.
    """
    server = cell.base_url or cell.backend
    slots = (0,) if cell.parallel is None else (1, cell.parallel)
    return (server, slots, cell.model) + tuple(
        (0,) if cell.options.get(k) is None else (1, cell.options[k]) for k in LOAD_TIME_OPTIONS)


def schedule(cell: Cell, trials: int, warmup: int) -> list[TrialSpec]:
    """Warm-ups first (on the first prompt), then trials interleaving the prompts.

    Interleaving (trial-major) spreads slow drift (thermals, caches) over all
    prompts instead of loading it onto the last one.
    """
    specs = [TrialSpec(i, cell.prompts[0], True) for i in range(warmup)]
    for t in range(trials):
        specs.extend(TrialSpec(t, p, False) for p in cell.prompts)
    return specs


@dataclass(frozen=True)
class AgentSpec:
    """One agent: what it sends and where (``host`` indexes the job's server list)."""

    agent_id: int
    preset: str
    options: Mapping[str, Any]
    host: int


@dataclass(frozen=True)
class AgentPlan:
    """What an agent cell runs; every field changes what is measured, so all are in the cell hash."""

    kind: WorkloadKind             # agent_report | multi_agent
    workflow: Workflow             # report | prompt
    scenario: Scenario | None
    agents: tuple[AgentSpec, ...]
    hosts: int                     # servers the agents are spread over
    data_dir: str
    analysis_prompt: str
    report_prompt: str
    system: str | None
    postprocess: Postprocess
    per_agent_keys: tuple[str, ...] = ()   # options set per agent (chimera_hetero), for the label

    @property
    def stages(self) -> tuple[str, ...]:
        return (ANALYSIS_STAGE, REPORT_STAGE) if self.workflow == Workflow.report else (PROMPT_STAGE,)

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "workflow": self.workflow, "scenario": self.scenario, "hosts": self.hosts,
            "agents": [[a.agent_id, a.preset, dict(a.options), a.host] for a in self.agents],
            "data_dir": self.data_dir, "analysis_prompt": self.analysis_prompt,
            "report_prompt": self.report_prompt, "system": self.system, "postprocess": self.postprocess,
        }

    def label(self) -> str:
        """What the cell id adds: scenario, agent count, and per-agent options when they differ."""
        if self.kind != MULTI_AGENT:
            return ""
        parts = [str(self.scenario), f"agents={len(self.agents)}"]
        if self.per_agent_keys:  # e.g. "per-agent num_gpu=60/80 num_ctx=512/1024" (agent 0 / agent 1)
            parts.append("per-agent " + " ".join(
                f"{k}=" + "/".join(str(a.options.get(k, "-")) for a in self.agents) for k in self.per_agent_keys))
        return " ".join(parts)


@dataclass(frozen=True)
class LoadPlan:
    """What a ``workload=load`` cell offers; every field changes what is measured, so all are in the cell hash.

    ``level`` is a rate (req/s, open loop) or a concurrency (closed loop).  ``sweep``: a trial is a knee
    search from ``low`` (doubling, at most ``high``, then bisection to ``tolerance``); else a trial is one run
    at ``level``.  A run lasts ``duration_s`` (open loop: arrivals in it) or ``requests`` requests.
    """

    loop: Loop                     # open | closed
    arrivals: Arrivals             # constant | poisson (open loop)
    level: float | None            # the fixed rate or concurrency (None when sweep)
    duration_s: float | None
    requests: int | None
    sweep: bool
    low: float
    high: float
    tolerance: float
    seed: int
    slo_ttft_ms: float | None
    slo_itl_ms: float | None
    slo_e2e_ms: float | None
    slo_fraction: float

    @property
    def closed(self) -> bool:
        return self.loop == Loop.closed

    def slo_text(self) -> str:
        """The SLO as stored in the ``slo`` column: ``ttft_ms<=500 fraction>=0.9``."""
        limits = [f"{k}<={v:g}" for k, v in (("ttft_ms", self.slo_ttft_ms), ("itl_ms", self.slo_itl_ms),
                                              ("e2e_ms", self.slo_e2e_ms)) if v is not None]
        return " ".join(limits + [f"fraction>={self.slo_fraction:g}"]) if limits else "none"

    def label(self) -> str:
        """What the cell id adds: the loop and its level (or the knee search), and the SLO."""
        length = f"{self.requests} requests" if self.requests is not None else f"{self.duration_s:g} s"
        if self.sweep:
            what = f"knee {self.loop}-loop {self.low:g}..{self.high:g}"
        elif self.closed:
            what = f"closed-loop concurrency={self.level:g}"
        else:
            what = f"open-loop rate={self.level:g}/s {self.arrivals}"
        return f"load {what} {length} slo {self.slo_text()}"
