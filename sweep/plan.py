"""Config → cells: what to run, with a stable identity, checked before any request.

A *cell* is one point of the grid (model × options × workload on one backend).
Its hash covers everything that changes what is measured, so resuming a sweep
matches cells by content, never by directory name, and changing a parameter
makes a new cell.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from sweep.contract import OPTION_KEYS, OPTIONS_BY_NAME

if TYPE_CHECKING:
    from sweep.agents import AgentPlan


T = TypeVar("T")


class ConfigError(ValueError):
    """Bad configuration: reported as one line before any request is sent."""


# embedded/llama_server: started by the sweep on 127.0.0.1; ollama/openai: a server at backend.base_url
BACKEND_KINDS = ("embedded", "ollama", "openai", "llama_server")
OPENAI_KINDS = ("openai", "llama_server")  # the kinds that speak the OpenAI API (sweep/openai_sse.py)


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


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
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def cell_id(self) -> str:
        """A readable label: preset, model and the options that are set."""
        parts = [self.preset, self.model] + [f"{k}={v}" for k, v in self.options.items()]
        label = self.agent_plan.label() if self.agent_plan is not None else ""
        return " ".join(([label] if label else []) + parts)

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


# ---------------------------------------------------------------- validation

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


def validate(cfg: DictConfig) -> None:
    """Value checks the structured types cannot express; raises :class:`ConfigError`."""
    trials_count(cfg)
    validate_design(cfg)
    if cfg.warmup < 0:
        raise ConfigError(f"invalid warmup={cfg.warmup}: must be >= 0")
    b = cfg.backend
    if b.kind not in BACKEND_KINDS:
        raise ConfigError(f"invalid backend.kind '{b.kind}': use backend={', backend='.join(BACKEND_KINDS)}")
    _check_address_kind(b)
    if b.kind in ("ollama", "openai") and not b.hosts:
        if not b.base_url:
            example = "http://host:11434" if b.kind == "ollama" else "http://host:8000/v1"
            raise ConfigError(f"backend.base_url is empty: set backend.base_url={example}")
        normalize_base_url(b.base_url)
    if b.hosts and b.kind != "ollama":
        raise ConfigError("backend.hosts needs backend=ollama; to run several embedded servers use backend.instances=N")
    for host in b.hosts:
        normalize_base_url(str(host))
    if b.instances < 1 or (b.instances > 1 and b.kind != "embedded"):
        raise ConfigError(f"invalid backend.instances={b.instances}: >= 1, and more than 1 only with backend=embedded "
                          "(list running servers with backend.hosts=[URL,URL])")
    for key in ("connect_timeout_s", "stall_timeout_s", "request_timeout_s"):
        if b[key] <= 0:
            raise ConfigError(f"invalid backend.{key}={b[key]}: must be > 0")
    if b.retries < 0 or b.retry_backoff_s < 0:
        raise ConfigError("invalid backend.retries / backend.retry_backoff_s: must be >= 0")
    if b.max_consecutive_failures < 1:
        raise ConfigError("invalid backend.max_consecutive_failures: must be >= 1")
    if cfg.telemetry.interval_s <= 0:
        raise ConfigError(f"invalid telemetry.interval_s={cfg.telemetry.interval_s}: must be > 0")
    if cfg.workload.endpoint not in ("generate", "chat") and b.kind not in OPENAI_KINDS:
        raise ConfigError(f"invalid workload.endpoint '{cfg.workload.endpoint}': use generate or chat")
    from sweep.objective import Objective

    Objective.from_config(cfg.objective)
    if cfg.grid is not None:
        unknown = set(cfg.grid.axes) | set(cfg.grid.fixed)
        unknown -= set(OPTION_KEYS)
        if unknown:
            raise ConfigError(f"unknown grid option(s) {sorted(unknown)}: use {', '.join(OPTION_KEYS)}")
        n = grid_size(cfg)
        if cfg.cell is not None and not 0 <= cfg.cell < n:
            raise ConfigError(f"invalid cell={cfg.cell}: this grid has {n} cells (0..{n - 1})")


def _check_address_kind(b: DictConfig) -> None:
    """An address given to a backend that starts its own server is a mistake, not a detail to ignore.

    Why: ``backend.base_url=http://host:11434`` without ``backend=ollama`` used to measure the
    embedded engine and exit 0; whoever meant their own server never learnt it was not measured.
    """
    if b.kind in ("ollama", "openai"):
        return
    own = f"is ignored by backend={b.kind}, which starts its own server"
    if b.hosts:
        raise ConfigError(f"backend.hosts={list(map(str, b.hosts))} {own}: add backend=ollama to measure those "
                          "servers (several embedded servers: backend.instances=N)")
    if b.base_url:
        raise ConfigError(f"backend.base_url={b.base_url} {own}: add backend=ollama (an Ollama server) or "
                          "backend=openai (an OpenAI-compatible …/v1 server) to measure that address")


def trials_count(cfg: DictConfig) -> int | None:
    """``trials`` as a number of measured trials, or None for ``trials=auto``."""
    trials = cfg.trials
    if isinstance(trials, str) and trials.strip().lower() == "auto":
        return None
    if isinstance(trials, bool) or not isinstance(trials, int):
        try:
            trials = int(str(trials))
        except ValueError:
            raise ConfigError(f"invalid trials={cfg.trials!r}: use a whole number >= 1 or trials=auto") from None
    if trials < 1:
        raise ConfigError(f"invalid trials={trials}: must be >= 1")
    return trials


def warmups_per_visit(cfg: DictConfig) -> int:
    """Warm-ups a single-prompt cell's visit starts with (when it needs them): ``warmup``, none unless state=warm.

    Why none: ``cold`` measures the load on purpose and ``reload`` flags it; a warm-up would hide it.
    The job's design and the dry run's count both read it here.
    """
    return int(cfg.warmup) if cfg.state == "warm" else 0


STATES = ("warm", "cold", "reload")
ORDERS = ("blocked", "interleaved", "random")


def validate_design(cfg: DictConfig) -> None:
    """state, order and auto.* values (one line each, before any request)."""
    if cfg.state not in STATES:
        raise ConfigError(f"invalid state={cfg.state!r}: use {' | '.join(STATES)}")
    if cfg.order is not None and cfg.order not in ORDERS:
        raise ConfigError(f"invalid order={cfg.order!r}: use {' | '.join(ORDERS)}")
    if cfg.state == "cold" and cfg.backend.get("api", "ollama") != "ollama":
        raise ConfigError("state=cold unloads with keep_alive 0 and checks GET /api/ps: it needs backend.api=ollama")
    rnd = cfg.get("round")
    rounds = trials_count(cfg) or cfg.auto.max_trials
    if rnd is not None and not 0 <= rnd < rounds:
        raise ConfigError(f"invalid round={rnd}: this sweep has rounds 0..{rounds - 1} (the sweeper sets round=)")
    if rnd is not None and cfg.workload.get("kind", "prompt") != "prompt":
        raise ConfigError("round= is for single-prompt workloads: agent cells run blocked")
    if trials_count(cfg) is None and cfg.workload.get("kind", "prompt") != "prompt":
        raise ConfigError("trials=auto is for single-prompt workloads: give agent workloads a number of trials")
    a = cfg.auto
    if not 1 <= a.min_trials <= a.max_trials:
        raise ConfigError(f"invalid auto.min_trials={a.min_trials} / auto.max_trials={a.max_trials}: "
                          "need 1 <= min_trials <= max_trials")
    if not a.ci_pct > 0:
        raise ConfigError(f"invalid auto.ci_pct={a.ci_pct}: must be > 0 (percent of the mean)")
    if a.metric not in _NUMERIC_METRICS:
        raise ConfigError(f"invalid auto.metric={a.metric!r}: use one of {', '.join(_NUMERIC_METRICS)}")


_NUMERIC_METRICS = ("throughput_tok_s", "client_tok_s", "ttft_ms", "e2e_ms", "itl_ms_mean")


# ---------------------------------------------------------------- prompts

def load_prompts(workload: DictConfig) -> tuple[Prompt, ...]:
    """Inline prompts, or a prompt file (read as text, never executed)."""
    if workload.prompt_file:
        path = Path(workload.prompt_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"prompt file '{path}' not found: fix workload.prompt_file")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            prompts = []
            for i, line in enumerate(l for l in text.splitlines() if l.strip()):
                try:
                    obj = json.loads(line)
                    prompts.append(Prompt(str(obj.get("id", i)), str(obj["prompt"])))
                except (ValueError, KeyError, AttributeError):
                    raise ConfigError(f"{path}: line {i + 1} is not a JSON object with a 'prompt'") from None
        else:
            prompts = [Prompt(str(i), line) for i, line in enumerate(l.strip() for l in text.splitlines() if l.strip())]
    else:
        prompts = [Prompt(str(i), str(p)) for i, p in enumerate(workload.prompts)]
    if not prompts:
        raise ConfigError(f"workload '{workload.name}' has no prompts: set workload.prompts or workload.prompt_file")
    return tuple(prompts)


# ---------------------------------------------------------------- cells

def _set_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only set options, in the canonical order."""
    return {k: values[k] for k in OPTION_KEYS if values.get(k) is not None}


def grid_size(cfg: DictConfig) -> int:
    n = 1
    for levels in cfg.grid.axes.values():
        n *= len(levels)
    return n + (1 if cfg.grid.baseline else 0)


def check_grid_coverage(configs: Sequence[DictConfig], command_line: Sequence[str]) -> None:
    """The jobs of a multirun over ``cell`` must run every cell of their grid.

    An experiment's ``cell: range(0,N)`` is kept equal to the grid's size by hand;
    a shorter range used to drop cells silently.  A job without ``cell`` runs the
    whole grid; ``cell=`` typed on the command line (re-running chosen cells) is
    taken as meant.  Raises :class:`ConfigError` naming the right number.
    """
    if any(arg.lstrip("+").startswith("cell=") for arg in command_line):
        return
    grids: dict[str, tuple[int, set[int]]] = {}
    for cfg in configs:
        if cfg.get("grid") is None:
            continue
        key = json.dumps(OmegaConf.to_container(cfg.grid, resolve=True), sort_keys=True, default=str)
        size, seen = grids.setdefault(key, (grid_size(cfg), set()))
        seen.update(range(size) if cfg.cell is None else [int(cfg.cell)])
    for size, seen in grids.values():
        if not set(range(size)) <= seen:
            raise ConfigError(f"this grid has {size} cells (baseline + the product of its axes) but the jobs run "
                              f"{len(seen & set(range(size)))}: use cell=range(0,{size}) "
                              f"(hydra.sweeper.params in the experiment file)")


def _option_sets(cfg: DictConfig) -> list[tuple[str, dict[str, Any]]]:
    """(preset, options) per cell: from the grid if there is one, else the chimera config."""
    chimera = OmegaConf.to_container(cfg.chimera, resolve=True)
    preset = chimera.pop("preset")
    if cfg.grid is None:
        return [(preset, _set_options(chimera))]
    fixed = OmegaConf.to_container(cfg.grid.fixed, resolve=True)
    sets: list[tuple[str, dict[str, Any]]] = []
    if cfg.grid.baseline:
        sets.append(("baseline", _set_options(fixed)))
    axes = OmegaConf.to_container(cfg.grid.axes, resolve=True)
    for combo in itertools.product(*axes.values()):
        values = {**chimera, **dict(zip(axes, combo)), **fixed}
        sets.append((preset, _set_options(values)))
    return sets


def plan_cells(cfg: DictConfig) -> list[Cell]:
    """The cells this job runs: one, or every grid cell when no ``cell`` index is given."""
    from sweep import agents  # agents imports this module's checks

    validate(cfg)
    agents.validate_agents(cfg)
    prompts = load_prompts(cfg.workload)
    hosts = host_urls(cfg.backend)
    base_url = " ".join(hosts) if cfg.backend.kind in ("ollama", "openai") else None
    data_dir = agents.resolve_data_dir(cfg.workload.data_dir) if cfg.workload.kind != agents.PROMPT_KIND else ""
    option_sets = _option_sets(cfg)
    if cfg.grid is not None and cfg.cell is not None:
        option_sets = [option_sets[cfg.cell]]
    cells = []
    for preset, options in option_sets:
        validate_options(options)
        if cfg.backend.kind in OPENAI_KINDS:
            from sweep.openai_sse import check_cell  # the format module knows what the API can carry

            check_cell(cfg.backend.kind, options, system=cfg.workload.system, endpoint=cfg.workload.endpoint,
                       keep_alive=cfg.backend.keep_alive)
        plan = None
        if cfg.workload.kind != agents.PROMPT_KIND:
            servers = len(hosts) if hosts else cfg.backend.instances
            plan = agents.plan_agents(cfg, preset, options, OPTION_KEYS, servers, data_dir)
        cells.append(Cell(
            preset=preset, model=cfg.model.name, backend=cfg.backend.kind, base_url=base_url,
            options=options, workload=cfg.workload.name, prompts=prompts,
            system=cfg.workload.system, endpoint=cfg.workload.endpoint,
            keep_alive=cfg.backend.keep_alive, agent_plan=plan,
        ))
    return cells


def host_urls(backend: DictConfig) -> list[str]:
    """The configured servers of a remote backend: ``backend.hosts``, else ``backend.base_url`` (none if started here)."""
    if backend.kind not in ("ollama", "openai"):
        return []
    return [normalize_base_url(str(h)) for h in backend.hosts] or [normalize_base_url(backend.base_url)]


# ---------------------------------------------------------------- order

# Options the engine applies when it loads the model: changing one (or the model) forces a reload.
LOAD_TIME_OPTIONS: tuple[str, ...] = tuple(k for k in OPTION_KEYS if OPTIONS_BY_NAME[k].load_time)


def load_key(cell: Cell) -> tuple[Any, ...]:
    """What a server must (re)load for this cell: which server, which model, which load-time options.

    Unset options sort first (``(0,)``), so a baseline cell on server defaults
    leads its model's group, and mixed None/int values still compare.
    """
    server = cell.base_url or cell.backend
    return (server, cell.model) + tuple(
        (0,) if cell.options.get(k) is None else (1, cell.options[k]) for k in LOAD_TIME_OPTIONS)


def count_loads(keys: Sequence[tuple[Any, ...]]) -> int:
    """Model loads a run in this order needs: the first cell on each server, then every change of key.

    Counted per server (``key[0]``): cells on different servers never evict each other's model.
    """
    last: dict[Any, tuple[Any, ...]] = {}
    loads = 0
    for key in keys:
        if last.get(key[0]) != key:
            loads += 1
            last[key[0]] = key
    return loads


def reload_order(items: Sequence[T], key: Callable[[T], tuple[Any, ...]]) -> list[T]:
    """``items`` grouped by load key (stable: the typed order survives inside a group).

    Sorting rather than first-appearance grouping makes the plan the same
    whatever order the axes were typed in; the number of loads is minimal
    either way (one per distinct key and server).
    """
    return sorted(items, key=key)


def schedule(cell: Cell, trials: int, warmup: int) -> list[TrialSpec]:
    """Warm-ups first (on the first prompt), then trials interleaving the prompts.

    Interleaving (trial-major) spreads slow drift (thermals, caches) over all
    prompts instead of loading it onto the last one.
    """
    specs = [TrialSpec(i, cell.prompts[0], True) for i in range(warmup)]
    for t in range(trials):
        specs.extend(TrialSpec(t, p, False) for p in cell.prompts)
    return specs
