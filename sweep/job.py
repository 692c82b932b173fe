"""One Hydra job: config → cells → measured, stored trials.

Plain functions under the thin ``@hydra.main`` entry, so tests drive them with
Hydra's ``compose()``.  :func:`run_job` turns the composed config into a
:class:`~sweep.config.SweepConfig` once (``OmegaConf.to_object``); everything below takes
typed configs.  Bad configuration raises :class:`ConfigError` before
the first request; failing servers only ever produce rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from sweep import interrupts, progress, provenance
from sweep.backends import cpu_only
from sweep.backends import processes as backends
from sweep.workloads.agents import MULTI_AGENT, runs_ok_text
from sweep.background import Probe
from sweep.adaptive import Auto
from sweep.execute import CellOutcome, CellRun, Design, DesignCost, Policy, Watch, run_cells
from sweep.backends.hosts import moved_line, stored_host
from sweep.backends.kinds import Start, format_for, kind_of
from sweep.order import resolve
from sweep.backends.http import StreamClient, headers_from_env
from sweep.cells import Cell, ConfigError, Workload, load_key
from sweep.config import BackendConfig, ObjectiveConfig, Order, SweepConfig, typed
from sweep.plan import plan_cells, reload_order, trials_count, warmups_per_visit
from sweep.contract import TRACES_DIR, cell_path, cell_rows
from sweep.objective import Objective, score
from sweep.runner import Target
from sweep.running import Running, lease_host, own_cells
from sweep.backends.facts import server_facts
from sweep.backends.stream import StreamFormat
from sweep.store import CellStore, TraceStore, ensure_writable, fail_if_rescued
from sweep.telemetry import TRACE_SCHEMA, Telemetry, process_gpus
from sweep.workloads.load import load_workload
from sweep.workloads import lengths
from sweep.workloads.prompt import prompt_workload
from sweep.workloads.workflow import agent_workload

console = Console(stderr=True, highlight=False, soft_wrap=True)
# httpx (the inventory calls' client) logs every request at INFO; the per-trial lines below say more, once.
logging.getLogger("httpx").setLevel(logging.WARNING)
LEASE_WAIT_S = 900.0   # for a server held by another cell: against a stuck job only


@functools.cache
def freeze_imports() -> None:
    """Once per process, after the first job's imports: they live as long as the process (``gc.freeze``).

    Out of the collector's way, a full collection in a multirun's jobs takes milliseconds, not ~100 ms.
    Here, in an importable module, not in ``sweep/__main__.py``: a Ray or joblib worker unpickles the
    task function, and a cached function of ``__main__`` cannot be found in the worker's ``__main__``.
    """
    gc.freeze()


def policy_from(backend: BackendConfig) -> Policy:
    return Policy(request_timeout_s=backend.request_timeout_s, retries=backend.retries,
                  retry_backoff_s=backend.retry_backoff_s,
                  max_consecutive_failures=backend.max_consecutive_failures)


def _open_store(cell: Cell, sweep_dir: Path, resume: bool, provenance: dict[str, Any]) -> CellStore:
    """The cell's file; an existing one is only continued with ``resume`` (or when a search revisits it)."""
    try:
        store = CellStore(cell_path(sweep_dir, cell.file_stem), provenance)
    except OSError as exc:   # a damaged part: a resume moves it aside first (sweep/corrupt.py)
        fix = "run the resume again" if resume else "add resume=true"
        raise ConfigError(f"{str(exc).rstrip('.')}; {fix} to move unreadable parts aside and measure their trials again") from None
    if store.previous is not None and not resume:
        raise ConfigError(f"{store.path} already holds trials of this cell: add resume=true to continue "
                          "that sweep, or leave out sweep_id= to start a new one")
    return store


def objective_value(objective: ObjectiveConfig, outcomes: list[CellOutcome]) -> float | None:
    """What a search sweeper receives: the objective of this job's cell, from its stored rows.

    None for a job of several cells (a grid run in one job): there is no single value to return.
    """
    if len(outcomes) != 1:
        return None
    (outcome,) = outcomes
    return score(cell_rows(outcome.path, outcome.cell.cell_hash), Objective.from_config(objective)).value


def _say(line: str) -> None:
    console.print(f"[dim]{line}[/]")


def _one_server_per_cell(held: contextlib.ExitStack, sweep_dir: Path, backend: BackendConfig, urls: list[str],
                         cells: list[Cell]) -> list[str]:
    """With several servers (``backend.hosts``), a single-call cell leases one no other running cell holds.

    Why: under a parallel launcher (joblib, submitit, Ray on one machine) two
    cells measured at once on one server slow each other down; the sweeper
    refused plans with more cells at once than servers, and this picks the free
    one.  A cell with stored trials takes the server they ran on, waiting for it
    if need be (:mod:`sweep.backends.hosts`): its rounds and a resume never mix machines.
    The leased server goes first (the cell's target); the lease is held until
    the job ends.  Agent cells use every server at once, round-robin.
    """
    if len(urls) < 2 or any(c.agent_plan is not None for c in cells):
        return urls
    home = stored_host(sweep_dir, cells) if kind_of(backend).stable_address else None
    host = held.enter_context(lease_host(sweep_dir, urls, prefer=home, wait_s=LEASE_WAIT_S))
    if (line := moved_line(cells, home, host, urls, LEASE_WAIT_S)) is not None:
        console.print(line, markup=False)
    return [host] + [u for u in urls if u != host]


def run_job(composed: DictConfig, sweep_dir: Path, *, search: bool = False,
            overrides: list[str] | None = None) -> float | None:
    """Measure every cell of this job into ``sweep_dir``; return the objective (``objective.*``) to a search.

    The job's one conversion of its config (:func:`sweep.config.typed`): below, typed configs only.
    ``search``: the job runs under a search sweeper (Optuna), which reads the value returned
    (a grid's is dropped: it costs a read of the cell's file) and may revisit a cell.
    """
    cfg = typed(composed)
    outcomes = measure_job(cfg, sweep_dir, revisit=search, overrides=overrides)
    return objective_value(cfg.objective, outcomes) if search else None


def measure_job(cfg: SweepConfig, sweep_dir: Path, *, revisit: bool = False,
                overrides: list[str] | None = None) -> list[CellOutcome]:
    """Measure every cell of this job into ``sweep_dir``.

    ``revisit``: a search may propose a cell it already measured in this sweep; its
    missing trials run (none when complete) instead of the "already holds trials" error.
    ``overrides``: the job's command-line overrides, recorded with each cell in ``_run.json``
    (a multirun's jobs save no Hydra files of their own).
    """
    cells = reload_order(plan_cells(cfg), load_key)
    cpu_only.say_once(cpu_only.planned_note(cfg.backend, cells))   # num_gpu on the CPU-only embedded engine
    fmt = format_for(cfg.backend)
    ensure_writable(sweep_dir)
    with contextlib.ExitStack() as held:
        b = cfg.backend
        urls = _one_server_per_cell(held, sweep_dir, b, backends.base_urls_for(b, cells[0], say=_say), cells)
        base_url = urls[0]
        headers = headers_from_env(b.api_key_env, b.headers_env)
        for url in urls:  # every server is checked before the first trial (the first one's answers are recorded)
            version, shown = server_facts(cfg.sweep_id, b, url, headers, cells)
            if url == base_url:
                server_version, models = version, shown
                layers = {m: rec.get("layers") for m, rec in shown.items()}   # block counts (Ollama's /api/show)
        telemetry = (Telemetry(cfg.telemetry.interval_s, backends.server_pid(b, base_url), say=_say)
                     if cfg.telemetry.enabled else None)
        design = design_from(cfg, cells)
        config = dataclasses.asdict(cfg)   # resolved (typed() resolved it); enum members are strings
        config.update(order=design.order, order_seed=design.seed)   # the order actually run, replayable
        env = provenance.collect(config=config, backend=b.kind, server_version=server_version, models=models,
                                 gpus=telemetry.gpus if telemetry else process_gpus())
        slots, slots_source = backends.server_slots(b, base_url)   # the server's parallel slots, where known
        env["server"].update(parallel=slots, parallel_source=slots_source)
        provenance.record_run(sweep_dir, env, {c.file_stem: {"cell_id": c.cell_id, "cell_hash": c.cell_hash,
                                                              "config": config, "command": env["command"],
                                                              "overrides": overrides or []}
                                               for c in cells})
        try:   # before reading what the cells hold: another writer may still be finishing one
            held.enter_context(own_cells(sweep_dir, [c.cell_hash for c in cells]))
        except TimeoutError as exc:
            raise ConfigError(str(exc)) from None
        later_round = bool(cfg.round)   # a multirun's round job after round 0 continues its cells
        stores = [_open_store(cell, sweep_dir, cfg.resume or revisit or later_round, {"sweep_id": cfg.sweep_id, **env})
                  for cell in cells]
        outcomes = interrupts.run(_measure(cfg, cells, stores, sweep_dir, fmt, urls, headers, telemetry, design,
                                            layers))
        fail_if_rescued(sweep_dir, stores)
        return outcomes


def design_from(cfg: SweepConfig, cells: list[Cell]) -> Design:
    """The job's order, seed, state and trials policy (the order resolved, the seed drawn when not given)."""
    order, seed = resolve(cfg.order, [c.preset for c in cells], cfg.order_seed)
    a = cfg.auto
    return Design(order=order, seed=seed, state=cfg.state, trials=trials_count(cfg),
                  auto=Auto(a.metric, float(a.ci_pct), int(a.min_trials), int(a.max_trials)),
                  warmup=warmups_per_visit(cfg), only_round=cfg.round)


@dataclass
class _Job:
    """What the cells of one job share while they run: config, servers, telemetry, design, progress."""

    cfg: SweepConfig
    sweep_dir: Path
    urls: list[str]
    targets: list[Target]        # one per server, the first is every single-server cell's
    telemetry: Telemetry | None
    design: Design
    layers: dict[str, int | None]
    shown: progress.Progress
    running: Running
    cost: DesignCost = field(default_factory=DesignCost)


async def _measure(cfg: SweepConfig, cells: list[Cell], stores: list[CellStore], sweep_dir: Path, fmt: StreamFormat,
                   urls: list[str], headers: dict[str, str], telemetry: Telemetry | None, design: Design,
                   layers: dict[str, int | None]) -> list[CellOutcome]:
    """The cells in the design's order, in one event loop with one stream client per server.

    Every workload (prompts, an agent's workflow, multi-agent runs) runs the same way (:func:`_cells`).
    """
    b = cfg.backend
    async with contextlib.AsyncExitStack() as stack:
        targets = [Target(await stack.enter_async_context(
            StreamClient(url, connect_timeout_s=b.connect_timeout_s, stall_timeout_s=b.stall_timeout_s,
                         headers=headers)), fmt, b.request_timeout_s) for url in urls]
        job = _Job(cfg, sweep_dir, urls, targets, telemetry, design, layers, _progress(cfg, len(cells)),
                   Running(sweep_dir))
        # in order: a llama-server restart belongs right before its cell
        outcomes = await _cells(job, [await _cell_run(job, cell, store, headers) for cell, store in zip(cells, stores)])
        _say_extra_warmups(job)
    return outcomes


def _progress(cfg: SweepConfig, cells: int) -> progress.Progress:
    """The job's progress display; a plain run's total is this job's cells (a multirun's comes from the plan)."""
    shown = progress.for_job(console, cfg.progress)
    if shown.state.cells_total is None:
        shown.state.cells_total = cells
    return shown


_Run = tuple[CellRun, Workload, TraceStore | None]


async def _cell_run(job: _Job, cell: Cell, store: CellStore, headers: dict[str, str]) -> _Run:
    """A cell's run, its workload (and its telemetry file), its server ready: llama-server restarted when its
    flags differ; a ``workload.prompt_tokens`` cell's prompt built through that server's tokenizer."""
    b = job.cfg.backend
    if kind_of(b).start is Start.LLAMA_SERVER:  # same port; in this (the main) thread: the child's death signal follows it
        backends.prepare_cell(b, cell, _say)
        if job.telemetry:
            job.telemetry.server_pid = backends.server_pid(b, job.urls[0])
    cell, built = await lengths.with_prompt(job.targets[0], cell, headers)
    if built is not None:
        _say(lengths.built_line(cell, built))
    traces = (TraceStore(cell_path(job.sweep_dir / TRACES_DIR, cell.file_stem), TRACE_SCHEMA)
              if job.telemetry else None)
    server = job.telemetry.server_pid if job.telemetry else backends.server_pid(b, job.urls[0])
    run = CellRun(job.targets[0], cell, store, policy_from(b), job.cfg.sweep_id,
                  Watch(job.telemetry, traces) if job.telemetry and traces else None, on_record=job.shown.trial,
                  running=job.running, background=Probe(server))
    run.extra["server_parallel"] = backends.server_slots(b, job.urls[0])[0]
    if cell.agent_plan is None and job.layers.get(cell.model) is not None:
        run.extra["model_layers"] = job.layers[cell.model]
    return run, _workload(job, run), traces


def _workload(job: _Job, run: CellRun) -> Workload:
    """The cell's :class:`~sweep.cells.Workload`: its prompts, a load run, or its agents over every server."""
    if run.cell.load_plan is not None:
        return load_workload(run, job.design.trials)
    if run.cell.agent_plan is None:
        return prompt_workload(run, job.design.trials)
    return agent_workload(run, job.targets, job.design.trials, job.cfg.agents.isolated_runs)


def _expected_rows(job: _Job, workload: Workload) -> int:
    """Rows the job's rounds of a cell store when complete (measured calls), for its progress line."""
    return sum(workload.rows_per_trial(t) for r in job.design.rounds for t in workload.round_trials(r))


async def _cells(job: _Job, runs: list[_Run]) -> list[CellOutcome]:
    """The cells by the design (:func:`run_cells`): under ``blocked`` (or alone) one at a time
    with a progress line each, otherwise together in rounds under one line."""
    if job.design.order == Order.blocked or len(runs) < 2:
        return [await _one_cell(job, *run) for run in runs]
    return await _cells_together(job, runs)


async def _one_cell(job: _Job, run: CellRun, workload: Workload, traces: TraceStore | None) -> CellOutcome:
    cell = run.cell
    job.shown.cell_started(cell.cell_id + _of_round(job.design), run.store.path.name, _expected_rows(job, workload))
    try:
        (outcome,) = await run_cells([(run, workload)], job.design, job.cost)
    finally:   # also on Ctrl-C: a finished run's parts become one file
        _close(run, traces)
    _done(job.shown, outcome, _runs_counted(job, run))
    return outcome


def _runs_counted(job: _Job, run: CellRun) -> str | None:
    """A multi-agent cell's complete runs by kind (:func:`runs_ok_text`), up to this job's rounds."""
    plan = run.cell.agent_plan
    if plan is None or plan.kind != MULTI_AGENT:
        return None
    rows = run.store.table().to_pylist()
    trials = job.design.trials
    if trials is None:   # trials=auto: the rounds the cell ran
        trials = max((r["trial"] + 1 for r in rows if r["cell_hash"] == run.cell.cell_hash and not r["warmup"]),
                     default=0)
    return runs_ok_text(rows, run.cell.cell_hash, len(plan.stages), trials, job.cfg.agents.isolated_runs)


async def _cells_together(job: _Job, runs: list[_Run]) -> list[CellOutcome]:
    design = job.design
    seed = f", order_seed={design.seed}" if design.order == Order.random else ""
    job.shown.cell_started(f"{len(runs)} cells, order={design.order}{seed}, one trial each per round"
                           + _of_round(design),
                           "", sum(_expected_rows(job, w) for _, w, _ in runs))
    try:
        together = await run_cells([(r, w) for r, w, _ in runs], design, job.cost)
    finally:
        for run, _, traces in runs:
            _close(run, traces)
    state = "complete" if all(o.complete for o in together) else "incomplete"
    job.shown.cell_done(sum(o.measured_ok for o in together), sum(o.expected for o in together),
                        sum(o.failed_attempts for o in together),
                        "more rounds to come" if any(o.more_rounds for o in together) else state,
                        cells=sum(not o.more_rounds for o in together), dropped=sum(o.skipped for o in together))
    return together


def _say_extra_warmups(job: _Job) -> None:
    """What an order that reloads between cells cost in extra warm-ups (nothing when none)."""
    cost = job.cost
    if cost.extra_warmups and job.design.only_round is None:   # a multirun in rounds: the sweeper sums them
        console.print(f"order={job.design.order}: {cost.extra_warmups} extra warm-up(s) after reloads between "
                      f"cells, {cost.extra_warmup_s:.1f} s = {cost.extra_warmup_s / cost.measuring_s:.0%} of "
                      f"{cost.measuring_s:.1f} s measuring")


def _close(run: CellRun, traces: TraceStore | None) -> None:
    """A finished run's parts become one file (trials and telemetry)."""
    run.store.close()
    if traces:
        traces.close()


def _of_round(design: Design) -> str:
    """' (round 2 of 3)' for a multirun's round job, else nothing."""
    if design.only_round is None:
        return ""
    total = f"of {design.trials}" if design.trials is not None else f"of ≤ {design.auto.max_trials}"
    return f" (round {design.only_round + 1} {total}, order={design.order})"


def _done(shown: progress.Progress, outcome: CellOutcome, counted: str | None = None) -> None:
    """The cell's line; a multirun's round job with more rounds to come does not finish its cell."""
    state = "abandoned" if outcome.abandoned else ("complete" if outcome.complete else "incomplete")
    if outcome.more_rounds:
        state = "more rounds to come"
    shown.cell_done(outcome.measured_ok, outcome.expected, outcome.failed_attempts, state,
                    cells=0 if outcome.more_rounds else 1, dropped=outcome.skipped, counted=counted)
