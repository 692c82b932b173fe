"""One Hydra job: config → cells → measured, stored trials.

Plain functions under the thin ``@hydra.main`` entry, so tests drive them with
Hydra's ``compose()``.  Bad configuration raises :class:`ConfigError` before
the first request; failing servers only ever produce rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from sweep import backends, provenance
from sweep.adaptive import Auto
from sweep.execute import CellOutcome, CellRun, Design, DesignCost, Policy, Watch, run_cells
from sweep.model_state import block_count
from sweep.order import resolve
from sweep.ollama import OllamaClient, StreamClient, headers_from_env
from sweep.plan import Cell, ConfigError, load_key, plan_cells, reload_order, trials_count
from sweep.records import TrialRecord
from sweep.objective import Objective, score
from sweep.runner import Target
from sweep.running import Running
from sweep.streams import StreamFormat, format_for
from sweep.store import CellStore, TraceStore, ensure_writable, read_whole
from sweep.telemetry import TRACE_SCHEMA, Telemetry, process_gpus

console = Console(stderr=True, highlight=False, soft_wrap=True)
# httpx logs every request at INFO; the per-trial lines below say more, once.
logging.getLogger("httpx").setLevel(logging.WARNING)


TRACES_DIR = "_telemetry"  # per-sample series beside the trials; "_" keeps it out of read_parquet(sweep_dir)


def _trial_line(record: TrialRecord) -> str:
    kind = "warm-up" if record.warmup else "trial"
    if record.status != "ok":
        return f"    {kind} {record.trial} attempt {record.attempt}: [red]{record.status}[/] {record.error}"
    tps = f"{record.throughput_tok_s:.1f} tok/s" if record.throughput_tok_s else "- tok/s"
    ttft = f"TTFT {record.ttft_ms:.0f} ms" if record.ttft_ms is not None else "TTFT -"
    return f"    {kind} {record.trial} prompt {record.prompt_id}: {tps}, {ttft}, {record.eval_count} tokens"


def _tags(client: OllamaClient) -> list[dict[str, Any]]:
    """``/api/tags`` for model digests; a server without it still gets measured."""
    try:
        return client.tags()
    except (httpx.HTTPError, ValueError):
        return []


def policy_from(backend: DictConfig) -> Policy:
    return Policy(request_timeout_s=backend.request_timeout_s, retries=backend.retries,
                  retry_backoff_s=backend.retry_backoff_s,
                  max_consecutive_failures=backend.max_consecutive_failures)


def _open_store(cell: Cell, sweep_dir: Path, resume: bool, provenance: dict[str, Any]) -> CellStore:
    """The cell's file; an existing one is only continued with ``resume`` (or when a search revisits it)."""
    store = CellStore(sweep_dir / f"{cell.file_stem}.parquet", provenance)
    if store.previous is not None and not resume:
        raise ConfigError(f"{store.path} already holds trials of this cell: add resume=true to continue "
                          "that sweep, or leave out sweep_id= to start a new one")
    return store


def objective_value(cfg: DictConfig, outcomes: list[CellOutcome]) -> float | None:
    """What a search sweeper receives: the objective of this job's cell, from its stored rows.

    None for a job of several cells (a grid run in one job): there is no single value to return.
    """
    if len(outcomes) != 1:
        return None
    (outcome,) = outcomes
    rows = read_whole(outcome.path).to_pylist() if outcome.path.exists() else []
    return score([r for r in rows if r["cell_hash"] == outcome.cell.cell_hash],
                 Objective.from_config(cfg.objective)).value


def run_job(cfg: DictConfig, sweep_dir: Path, *, revisit: bool = False) -> list[CellOutcome]:
    """Measure every cell of this job into ``sweep_dir``.

    ``revisit``: a search may propose a cell it already measured in this sweep; its
    missing trials run (none when complete) instead of the "already holds trials" error.
    """
    cells = reload_order(plan_cells(cfg), load_key)
    fmt = format_for(cfg.backend.api)
    ensure_writable(sweep_dir)
    base_url = backends.base_url_for(cfg.backend)
    b = cfg.backend
    headers = headers_from_env(b.api_key_env, b.headers_env)
    with OllamaClient(base_url, connect_timeout_s=b.connect_timeout_s, stall_timeout_s=b.stall_timeout_s,
                      headers=headers) as client:
        server_version = client.version()
        tags = {m.get("name", ""): m for m in _tags(client)}
        served = list(tags) if b.kind == "embedded" else []
        models, layers = {}, {}
        for cell in cells:
            show = client.show(cell.model, missing_hint=backends.missing_model_hint(b, served) or None)
            models[cell.model] = provenance.model_record(show, tags.get(cell.model))
            layers[cell.model] = block_count(show)
    telemetry = (Telemetry(cfg.telemetry.interval_s, backends.server_pid(b, base_url),
                           say=lambda line: console.print(f"[dim]{line}[/]"))
                 if cfg.telemetry.enabled else None)
    design = design_from(cfg, cells)
    config = OmegaConf.to_container(cfg, resolve=True)
    config.update(order=design.order, order_seed=design.seed)   # the order actually run, replayable
    env = provenance.collect(config=config, backend=b.kind, server_version=server_version, models=models,
                             gpus=telemetry.gpus if telemetry else process_gpus())
    provenance.record_run(sweep_dir, env, {c.file_stem: {"cell_id": c.cell_id, "cell_hash": c.cell_hash,
                                                          "config": config, "command": env["command"]}
                                           for c in cells})
    stores = [_open_store(cell, sweep_dir, cfg.resume or revisit, {"sweep_id": cfg.sweep_id, **env})
              for cell in cells]
    return asyncio.run(_measure(cfg, cells, stores, sweep_dir, fmt, base_url, headers, telemetry, design, layers))


def design_from(cfg: DictConfig, cells: list[Cell]) -> Design:
    """The job's order, seed, state and trials policy (the order resolved, the seed drawn when not given)."""
    order, seed = resolve(cfg.order, [c.preset for c in cells], cfg.order_seed)
    a = cfg.auto
    return Design(order=order, seed=seed, state=cfg.state, trials=trials_count(cfg),
                  auto=Auto(a.metric, float(a.ci_pct), int(a.min_trials), int(a.max_trials)),
                  warmup=0 if cfg.state != "warm" else int(cfg.warmup))


async def _measure(cfg: DictConfig, cells: list[Cell], stores: list[CellStore], sweep_dir: Path, fmt: StreamFormat,
                   base_url: str, headers: dict[str, str], telemetry: Telemetry | None,
                   design: Design, layers: dict[str, int | None]) -> list[CellOutcome]:
    """The cells in the design's order, in one event loop with one stream client."""
    b = cfg.backend
    async with StreamClient(base_url, connect_timeout_s=b.connect_timeout_s, stall_timeout_s=b.stall_timeout_s,
                            headers=headers) as client:
        target = Target(client, fmt, b.request_timeout_s)
        running = Running(sweep_dir)
        runs = []
        for cell, store in zip(cells, stores):
            watch = (Watch(telemetry, TraceStore(sweep_dir / TRACES_DIR / f"{cell.file_stem}.parquet", TRACE_SCHEMA))
                     if telemetry else None)
            label = f"{cell.cell_id}: " if design.order != "blocked" and len(cells) > 1 else ""
            runs.append(CellRun(target, cell, store, policy_from(b), cfg.sweep_id, watch,
                                on_record=_printer(label, cell, store, design), running=running))
            if layers.get(cell.model) is not None:
                runs[-1].extra["model_layers"] = layers[cell.model]
        if design.order != "blocked" and len(cells) > 1:
            seed = f", order_seed={design.seed}" if design.order == "random" else ""
            console.print(f"[bold]order[/] {design.order}{seed}: {len(cells)} cells, one trial each per round")
        cost = DesignCost()
        outcomes = await run_cells(runs, design, cost)
        for outcome in outcomes:
            state = "abandoned" if outcome.abandoned else ("complete" if outcome.complete else "incomplete")
            console.print(f"  {outcome.cell.cell_id}: {outcome.measured_ok}/{outcome.expected} trials ok, "
                          f"{outcome.failed_attempts} failed attempts, {state}")
        if cost.extra_warmups:
            console.print(f"order={design.order}: {cost.extra_warmups} extra warm-up(s) after reloads between cells, "
                          f"{cost.extra_warmup_s:.1f} s = {cost.extra_warmup_s / cost.measuring_s:.0%} of "
                          f"{cost.measuring_s:.1f} s measuring")
    return outcomes


def _printer(label: str, cell: Cell, store: CellStore, design: Design) -> Callable[[TrialRecord], None]:
    """Per-row console line; blocked order prints the cell header before its first row."""
    first = [True]

    def show(record: TrialRecord) -> None:
        if first[0] and not label:
            console.print(f"[bold]cell[/] {cell.cell_id}  → {store.path.name}")
        first[0] = False
        console.print(f"    {label}{_trial_line(record).lstrip()}" if label else _trial_line(record))

    return show
