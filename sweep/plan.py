"""Config → cells: what to run, checked before any request (the cell itself is :mod:`sweep.cells`).

A *cell* is one point of the grid (model × options × workload on one backend).
This module reads the job's config into cells (grid, presets, prompts, agent plans)
and holds the order rules over their load keys (:func:`count_loads`, :func:`reload_order`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from sweep.backends.hosts import host_urls
from sweep.backends.kinds import KINDS, BackendKind, EosSwitch, Start, kind_of
from sweep.cells import FILLER_PROMPT_ID, Cell, ConfigError, Lengths, Prompt, normalize_base_url, validate_options
from sweep.config import Api, BackendConfig, Endpoint, State, SweepConfig, WorkloadConfig, WorkloadKind
from sweep.contract import OPTION_KEYS
from sweep.objective import Objective
from sweep.workloads import agents
from sweep.workloads.loadgen import load_plan


T = TypeVar("T")


# ---------------------------------------------------------------- validation

def validate(cfg: SweepConfig) -> None:
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
    kind.check_parallel(b.parallel)
    if b.instances < 1 or (b.instances > 1 and not kind.several_instances):
        raise ConfigError(f"invalid backend.instances={b.instances}: >= 1, and more than 1 only with "
                          f"backend={_kinds_with('several_instances')} (list running servers with backend.hosts=[URL,URL])")
    for key in ("connect_timeout_s", "stall_timeout_s", "request_timeout_s"):
        if getattr(b, key) <= 0:
            raise ConfigError(f"invalid backend.{key}={getattr(b, key)}: must be > 0")
    if b.retries < 0 or b.retry_backoff_s < 0:
        raise ConfigError("invalid backend.retries / backend.retry_backoff_s: must be >= 0")
    if b.max_consecutive_failures < 1:
        raise ConfigError("invalid backend.max_consecutive_failures: must be >= 1")
    if cfg.telemetry.interval_s <= 0:
        raise ConfigError(f"invalid telemetry.interval_s={cfg.telemetry.interval_s}: must be > 0")
    if cfg.workload.endpoint == Endpoint.completions and not kind.openai_api:
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


def _check_address_kind(b: BackendConfig, kind: BackendKind) -> None:
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


def trials_count(cfg: SweepConfig) -> int | None:
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


def warmups_per_visit(cfg: SweepConfig) -> int:
    """Warm-ups a single-prompt cell's visit starts with (when it needs them): ``warmup``, none unless state=warm.

    Why none: ``cold`` measures the load on purpose and ``reload`` flags it; a warm-up would hide it.
    The job's design and the dry run's count both read it here.
    """
    return int(cfg.warmup) if cfg.state == State.warm else 0


def validate_design(cfg: SweepConfig) -> None:
    """state, round and auto.* values (one line each, before any request); ``state`` and ``order``
    themselves are enums of the schema, refused by Hydra while composing."""
    if cfg.state == State.cold and cfg.backend.api != Api.ollama:
        raise ConfigError("state=cold unloads with keep_alive 0 and checks GET /api/ps: it needs backend.api=ollama")
    rnd = cfg.round
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

def load_prompts(workload: WorkloadConfig) -> tuple[Prompt, ...]:
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


def grid_size(cfg: SweepConfig) -> int:
    assert cfg.grid is not None
    n = 1
    for levels in cfg.grid.axes.values():
        n *= len(levels)
    return (n + (1 if cfg.grid.baseline else 0)) * max(1, len(cfg.grid.lengths))


def check_grid_coverage(configs: Sequence[SweepConfig], command_line: Sequence[str]) -> None:
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
        if cfg.grid is None:
            continue
        key = json.dumps(dataclasses.asdict(cfg.grid), sort_keys=True, default=str)
        size, seen = grids.setdefault(key, (grid_size(cfg), set()))
        seen.update(range(size) if cfg.cell is None else [int(cfg.cell)])
    for size, seen in grids.values():
        if not set(range(size)) <= seen:
            raise ConfigError(f"this grid has {size} cells (baseline + the product of its axes) but the jobs run "
                              f"{len(seen & set(range(size)))}: use cell=range(0,{size}) "
                              f"(hydra.sweeper.params in the experiment file)")


def _option_sets(cfg: SweepConfig) -> list[tuple[str, dict[str, Any]]]:
    """(preset, options) per cell: from the grid if there is one, else the chimera config."""
    chimera = dataclasses.asdict(cfg.chimera)
    preset = chimera.pop("preset")
    if cfg.grid is None:
        return [(preset, _set_options(chimera))]
    fixed = dict(cfg.grid.fixed)
    sets: list[tuple[str, dict[str, Any]]] = []
    if cfg.grid.baseline:
        sets.append(("baseline", _set_options(fixed)))
    axes = dict(cfg.grid.axes)
    for combo in itertools.product(*axes.values()):
        values = {**chimera, **dict(zip(axes, combo)), **fixed}
        sets.append((preset, _set_options(values)))
    return sets


def plan_cells(cfg: SweepConfig) -> list[Cell]:
    """The cells this job runs: one, or every grid cell when no ``cell`` index is given."""
    validate(cfg)
    agents.validate_agents(cfg)
    prompts = load_prompts(cfg.workload)
    hosts = host_urls(cfg.backend)
    kind = kind_of(cfg.backend)
    base_url = " ".join(hosts) if kind.remote else None
    agent_kind = cfg.workload.kind in (WorkloadKind.agent_report, WorkloadKind.multi_agent)
    data_dir = agents.resolve_data_dir(cfg.workload.data_dir) if agent_kind else ""
    load = load_plan(cfg.load, cfg.slo, trials_count(cfg)) if cfg.workload.kind == WorkloadKind.load else None
    option_sets = [(preset, opts, entry) for preset, opts in _option_sets(cfg) for entry in _length_entries(cfg)]
    if cfg.grid is not None and cfg.cell is not None:
        option_sets = [option_sets[cfg.cell]]
    cells = []
    for preset, options, entry in option_sets:
        options, lengths = plan_lengths(cfg, kind, options, entry)
        validate_options(options)
        kind.check(options, system=cfg.workload.system, endpoint=cfg.workload.endpoint,
                   keep_alive=cfg.backend.keep_alive)
        plan = None
        if agent_kind:
            servers = len(hosts) if hosts else cfg.backend.instances
            plan = agents.plan_agents(cfg, preset, options, OPTION_KEYS, servers, data_dir)
        filler = lengths is not None and lengths.prompt_tokens is not None   # its text comes from the server
        cells.append(Cell(
            preset=preset, model=cfg.model.name, backend=cfg.backend.kind, base_url=base_url,
            options=options, workload=cfg.workload.name,
            prompts=(Prompt(FILLER_PROMPT_ID, ""),) if filler else prompts,
            system=cfg.workload.system, endpoint=cfg.workload.endpoint,
            keep_alive=cfg.backend.keep_alive, agent_plan=plan, load_plan=load,
            parallel=cfg.backend.parallel, lengths=lengths,
        ))
    return cells


# ---------------------------------------------------------------- lengths under control (issue 29)

_LENGTH_KEYS = ("prompt_tokens", "max_tokens", "ignore_eos")


def _length_entries(cfg: SweepConfig) -> list[dict[str, Any]]:
    """``grid.lengths`` (each entry a cell's ``workload.prompt_tokens`` / ``max_tokens`` / ``ignore_eos``), or one
    empty entry: the workload's own values."""
    entries = list(cfg.grid.lengths) if cfg.grid is not None and cfg.grid.lengths else [{}]
    for entry in entries:
        unknown = set(entry) - set(_LENGTH_KEYS) if isinstance(entry, dict) else {"?"}
        if unknown:
            raise ConfigError(f"invalid grid.lengths entry {entry!r}: use keys {', '.join(_LENGTH_KEYS)}")
    return entries


def _positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"invalid workload.{name}={value!r}: must be a whole number >= 1")
    return value


def plan_lengths(cfg: SweepConfig, kind: BackendKind, options: dict[str, Any],
                 entry: Mapping[str, Any]) -> tuple[dict[str, Any], Lengths | None]:
    """The cell's options (``max_tokens`` as ``num_predict``) and its :class:`~sweep.cells.Lengths`, checked.

    ``max_tokens`` and ``num_predict`` are one fact, stored in the ``num_predict`` column: both
    given with different values is refused, naming the fix.  What the backend kind needs on the
    wire (``ignore_eos``, ``cache_prompt: false``, ``raw``) is decided here, once per cell.
    """
    w = cfg.workload
    values = {k: entry.get(k, getattr(w, k)) for k in _LENGTH_KEYS}
    prompt_tokens = _positive("prompt_tokens", values["prompt_tokens"])
    max_tokens = _positive("max_tokens", values["max_tokens"])
    ignore_eos, raw = bool(values["ignore_eos"]), w.raw
    if prompt_tokens is None and max_tokens is None and not ignore_eos and not raw:
        return options, None
    predict = options.get("num_predict")
    if max_tokens is not None and predict is not None and predict != max_tokens:
        raise ConfigError(f"workload.max_tokens={max_tokens} and num_predict={predict} give the output length twice: "
                          f"keep one (workload.max_tokens={max_tokens} chimera.num_predict=null)")
    if max_tokens is not None:   # into the cell's options, in their canonical order
        options = _set_options({**options, "num_predict": max_tokens})
    limit = options.get("num_predict")
    if ignore_eos and (limit is None or limit <= 0):
        raise ConfigError("workload.ignore_eos=true needs an output length: add workload.max_tokens=M (without it "
                          "generation runs until the context is full)")
    if w.kind != WorkloadKind.prompt and (prompt_tokens is not None or max_tokens is not None or ignore_eos):
        raise ConfigError(f"workload.prompt_tokens / max_tokens / ignore_eos are for prompt workloads, not "
                          f"workload={w.name}: drop them")
    if prompt_tokens is not None and w.prompt_file:
        raise ConfigError("workload.prompt_tokens builds its own prompt: drop workload.prompt_file")
    if raw and w.endpoint != Endpoint.generate:
        raise ConfigError(f"workload.raw=true sends the text without a template, which only endpoint=generate "
                          f"does: use workload.endpoint=generate (it is {w.endpoint})")
    ctx = options.get("num_ctx")
    if prompt_tokens is not None and ctx is not None and prompt_tokens + max(limit or 0, 1) > ctx:
        raise ConfigError(f"workload.prompt_tokens={prompt_tokens} plus {max(limit or 0, 1)} generated token(s) do "
                          f"not fit num_ctx={ctx}: raise num_ctx (chimera.num_ctx={prompt_tokens + max(limit or 0, 1)} "
                          "or more) or lower prompt_tokens")
    body: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if ignore_eos and kind.eos_switch is EosSwitch.OPTION:
        extra["ignore_eos"] = True
    elif ignore_eos and kind.eos_switch is EosSwitch.BODY:
        body["ignore_eos"] = True
    if prompt_tokens is not None and kind.cache_switch:
        body["cache_prompt"] = False     # each trial evaluates its whole prompt (a prompt speed, not a cache hit)
    if raw and not kind.openai_api:
        body["raw"] = True               # /v1/completions sends its text untemplated anyway
    return options, Lengths(prompt_tokens, max_tokens if max_tokens is not None else (limit if ignore_eos else None),
                            ignore_eos, raw, w.prompt_seed, body, extra)


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
