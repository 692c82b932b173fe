"""Config → cells: what to run, checked before any request (the cell itself is :mod:`sweep.cells`).

A *cell* is one point of the grid (model × options × workload on one backend).
This module reads the job's config into cells (grid, presets, prompts, agent plans)
and holds the order rules over their load keys (:func:`count_loads`, :func:`reload_order`).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf

from sweep.backends.hosts import host_urls
from sweep.backends.kinds import KINDS, BackendKind, Start, kind_of
from sweep.cells import Cell, ConfigError, Order, Prompt, State, WorkloadKind, normalize_base_url, validate_options
from sweep.contract import OPTION_KEYS
from sweep.objective import Objective
from sweep.workloads import agents
from sweep.workloads.loadgen import load_plan


T = TypeVar("T")


# ---------------------------------------------------------------- validation

def validate(cfg: DictConfig) -> None:
    """Value checks the structured types cannot express; raises :class:`ConfigError`."""
    trials_count(cfg)
    validate_design(cfg)
    if cfg.warmup < 0:
        raise ConfigError(f"invalid warmup={cfg.warmup}: must be >= 0")
    b = cfg.backend
    kind = kind_of(b)
    _check_address_kind(b, kind)
    if kind.remote and not b.hosts:
        if not b.base_url:
            raise ConfigError(f"backend.base_url is empty: set backend.base_url={kind.example_url}")
        normalize_base_url(b.base_url)
    if kind.start is Start.LLAMA_SERVER:   # before any job starts: the binary is built by its own step (make tools)
        from sweep.backends.llama_tools import missing_hint, tool_path

        if tool_path("llama-server") is None:
            raise ConfigError(missing_hint("llama-server"))
    if b.hosts and not kind.several_hosts:
        raise ConfigError(f"backend.hosts needs backend={_kinds_with('several_hosts')}; to run several embedded "
                          "servers use backend.instances=N")
    for host in b.hosts:
        normalize_base_url(str(host))
    kind.check_parallel(b.get("parallel"))
    if b.instances < 1 or (b.instances > 1 and not kind.several_instances):
        raise ConfigError(f"invalid backend.instances={b.instances}: >= 1, and more than 1 only with "
                          f"backend={_kinds_with('several_instances')} (list running servers with backend.hosts=[URL,URL])")
    for key in ("connect_timeout_s", "stall_timeout_s", "request_timeout_s"):
        if b[key] <= 0:
            raise ConfigError(f"invalid backend.{key}={b[key]}: must be > 0")
    if b.retries < 0 or b.retry_backoff_s < 0:
        raise ConfigError("invalid backend.retries / backend.retry_backoff_s: must be >= 0")
    if b.max_consecutive_failures < 1:
        raise ConfigError("invalid backend.max_consecutive_failures: must be >= 1")
    if cfg.telemetry.interval_s <= 0:
        raise ConfigError(f"invalid telemetry.interval_s={cfg.telemetry.interval_s}: must be > 0")
    if cfg.workload.endpoint not in ("generate", "chat") and not kind.openai_api:
        raise ConfigError(f"invalid workload.endpoint '{cfg.workload.endpoint}': use generate or chat")
    Objective.from_config(cfg.objective)
    if cfg.grid is not None:
        unknown = set(cfg.grid.axes) | set(cfg.grid.fixed)
        unknown -= set(OPTION_KEYS)
        if unknown:
            raise ConfigError(f"unknown grid option(s) {sorted(unknown)}: use {', '.join(OPTION_KEYS)}")
        n = grid_size(cfg)
        if cfg.cell is not None and not 0 <= cfg.cell < n:
            raise ConfigError(f"invalid cell={cfg.cell}: this grid has {n} cells (0..{n - 1})")


def _kinds_with(feature: str) -> str:
    """The backend kinds that have ``feature`` (a :class:`~sweep.backends.kinds.BackendKind` flag), for a message."""
    return "|".join(k.name for k in KINDS.values() if getattr(k, feature))


def _check_address_kind(b: DictConfig, kind: BackendKind) -> None:
    """An address given to a backend that starts its own server is a mistake, not a detail to ignore.

    Why: ``backend.base_url=http://host:11434`` without ``backend=ollama`` used to measure the
    embedded engine and exit 0; whoever meant their own server never learnt it was not measured.
    """
    if kind.remote:
        return
    own = f"is ignored by backend={kind.name}, which starts its own server"
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
    return int(cfg.warmup) if cfg.state == State.WARM else 0


def validate_design(cfg: DictConfig) -> None:
    """state, order and auto.* values (one line each, before any request)."""
    if cfg.state not in tuple(State):
        raise ConfigError(f"invalid state={cfg.state!r}: use {' | '.join(State)}")
    if cfg.order is not None and cfg.order not in tuple(Order):
        raise ConfigError(f"invalid order={cfg.order!r}: use {' | '.join(Order)}")
    if cfg.state == State.COLD and cfg.backend.get("api", "ollama") != "ollama":
        raise ConfigError("state=cold unloads with keep_alive 0 and checks GET /api/ps: it needs backend.api=ollama")
    rnd = cfg.get("round")
    rounds = trials_count(cfg) or cfg.auto.max_trials
    if rnd is not None and not 0 <= rnd < rounds:
        raise ConfigError(f"invalid round={rnd}: this sweep has rounds 0..{rounds - 1} (the sweeper sets round=)")
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
    validate(cfg)
    agents.validate_agents(cfg)
    prompts = load_prompts(cfg.workload)
    hosts = host_urls(cfg.backend)
    kind = kind_of(cfg.backend)
    base_url = " ".join(hosts) if kind.remote else None
    agent_kind = cfg.workload.kind in (WorkloadKind.AGENT_REPORT, WorkloadKind.MULTI_AGENT)
    data_dir = agents.resolve_data_dir(cfg.workload.data_dir) if agent_kind else ""
    load = load_plan(cfg.load, cfg.slo, trials_count(cfg)) if cfg.workload.kind == WorkloadKind.LOAD else None
    option_sets = _option_sets(cfg)
    if cfg.grid is not None and cfg.cell is not None:
        option_sets = [option_sets[cfg.cell]]
    cells = []
    for preset, options in option_sets:
        validate_options(options)
        kind.check(options, system=cfg.workload.system, endpoint=cfg.workload.endpoint,
                   keep_alive=cfg.backend.keep_alive)
        plan = None
        if agent_kind:
            servers = len(hosts) if hosts else cfg.backend.instances
            plan = agents.plan_agents(cfg, preset, options, OPTION_KEYS, servers, data_dir)
        cells.append(Cell(
            preset=preset, model=cfg.model.name, backend=cfg.backend.kind, base_url=base_url,
            options=options, workload=cfg.workload.name, prompts=prompts,
            system=cfg.workload.system, endpoint=cfg.workload.endpoint,
            keep_alive=cfg.backend.keep_alive, agent_plan=plan, load_plan=load,
            parallel=cfg.backend.get("parallel"),
        ))
    return cells


# ---------------------------------------------------------------- order

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
