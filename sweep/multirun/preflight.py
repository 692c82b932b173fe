"""Before the first request: every job of the (multi)run composed and planned; ``dry_run=true`` stops here.

Why a Hydra callback: Hydra composes a multirun's jobs one at a time, right
before each runs, so a value only :func:`sweep.plan.plan_cells` rejects
(``-m trials=3,-1``) used to fail after the first jobs had measured.  At
``on_run_start`` / ``on_multirun_start`` this composes every job the basic
sweeper will launch (the same overrides, the same config loader), plans its
cells and stops with one line on the first bad one.  With ``dry_run=true`` it
then prints the plan (cells, parameters, ids, what a resume would skip, the
model reloads the order implies, an estimated duration) and exits 0: no
request is sent, no server started, no directory made.

Which sweepers it checks: every sweeper but one that plans the multirun itself.  A sweeper class
says so explicitly with a true class attribute ``PLANS_EVERY_JOB`` (:data:`PLANS_EVERY_JOB`):
it composes every job before launching any, runs :func:`sweep.multirun.plan.plan_multirun` on
them (the same refusals this callback makes) and calls :func:`dry_run` itself with the jobs in
the order it will run them.  The reload-aware sweeper (``hydra/sweeper=reload_aware``, the
default) is such a class, so for it this callback only quiets the launcher and sets unreadable
parts aside; for Hydra's basic sweeper, Optuna and any other it plans every job here.  Why a
class attribute read from ``hydra.sweeper._target_`` (:func:`hydra.utils.get_class`): Hydra
calls ``on_multirun_start`` before it instantiates the sweeper, so the class is all there is
to ask, and a renamed or subclassed sweeper keeps (or drops) the promise with its code.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from sweep.workloads.agents import expected_rows
from sweep.workloads.loadgen import expected_requests
from sweep.backends import cpu_only
from sweep.multirun.cli_errors import EXIT_CONFIG, one_line
from sweep.cells import Cell, ConfigError, load_key
from sweep.config import State, SweepConfig, typed
from sweep.plan import check_grid_coverage, plan_cells, trials_count, warmups_per_visit
from sweep import corrupt, progress
from sweep.multirun import layout
from sweep.multirun.jobs import grid_jobs
from sweep.multirun.plan import plan_multirun
from sweep.contract import CORRUPT_DIR, Status, cell_path, read_whole, sweep_dirs, trial_files
from sweep.execute import already_measured, measured_ok
from sweep.store import CellStore

PLANS_EVERY_JOB = "PLANS_EVERY_JOB"   # the class attribute of a sweeper that plans the multirun itself

ASSUMED_TOK_S = 30.0        # no earlier sweep of the model to learn from: a small model on a CPU
ASSUMED_TOKENS = 256        # num_predict unset: the server decides; a typical report-length answer
ASSUMED_OVERHEAD_S = 0.3    # per request (prompt eval, TTFT) when nothing was measured
ASSUMED_RELOAD_S = 2.0      # per model (re)load when nothing was measured


def sweeper_plans_every_job(config: DictConfig) -> bool:
    """True when the multirun's sweeper class sets ``PLANS_EVERY_JOB`` (see the module docstring)."""
    target = OmegaConf.select(config, "hydra.sweeper._target_")
    if not target:
        return False
    try:
        sweeper = get_class(str(target))
    except Exception:  # noqa: BLE001 — a sweeper Hydra cannot load is Hydra's to report; check the jobs here
        return False
    return getattr(sweeper, PLANS_EVERY_JOB, False) is True


def job_overrides(config: DictConfig) -> list[list[str]]:
    """The override list of every job Hydra's basic sweeper would launch (one list for a plain run)."""
    task = list(config.hydra.overrides.task)
    if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
        return [task]
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return [task]   # Optuna & co. choose jobs as they go: only the base config can be checked
    params = config.hydra.sweeper.get("params") or {}
    strings = [f"{k}={v}" for k, v in params.items()] + task
    loader = GlobalHydra.instance().config_loader()
    return grid_jobs(OverridesParser.create(config_loader=loader).parse_overrides(strings))


def job_configs(config: DictConfig) -> list[DictConfig]:
    """Every job's composed config, as the launcher will compose it."""
    loader = GlobalHydra.instance().config_loader()
    jobs = job_overrides(config)
    if len(jobs) == 1 and jobs[0] == list(config.hydra.overrides.task):
        return [config]
    return [loader.load_sweep_config(config, job) for job in jobs]


@dataclass
class Planned:
    """One cell of the plan with what a resume would find on disk."""

    cell: Cell
    trials: int
    warmup: int
    done: int          # measured ok trials already stored for this cell's hash
    reload: bool       # the server has to load the model anew before this cell
    calls: int = 0     # measured requests the cell needs (agent cells: every agent's calls of every run)
    warmup_calls: int = 0
    cold: bool = False  # state=cold: the model is unloaded before every measured call

    def __post_init__(self) -> None:
        plan = self.cell.agent_plan
        if not self.calls:
            self.calls = self.trials * len(self.cell.prompts)
        if not self.warmup_calls:
            self.warmup_calls = self.warmup * (len(plan.agents) * len(plan.stages) if plan else 1)

    def model_loads(self) -> int:
        """Loads this cell costs: one per measured call still to run under state=cold, else one if it reloads."""
        if self.cold:
            return max(0, self.calls - self.done)
        return int(self.reload)


def _done(cell: Cell, sweep_dir: Path) -> int:
    path = cell_path(sweep_dir, cell.file_stem)
    if not path.exists():
        return 0
    rows = CellStore(path).previous_rows()
    if cell.agent_plan is not None or cell.load_plan is not None:  # one row per call of a workflow, or request
        return len(measured_ok(rows, cell.cell_hash))
    return len(already_measured(rows, cell.cell_hash))


def plan_all(configs: Sequence[SweepConfig], sweep_dir: Path) -> list[Planned]:
    """Plan every job (raises ConfigError on the first bad one), in launch order; ``sweep_dir``: theirs."""
    planned: list[Planned] = []
    loaded: dict[Any, tuple[Any, ...]] = {}    # server → what it has loaded (as plan.count_loads counts)
    for cfg in configs:
        for cell in plan_cells(cfg):
            key = load_key(cell)
            done = _done(cell, sweep_dir) if cfg.resume else 0
            calls = (expected_rows(cell.agent_plan, trials_count(cfg) or int(cfg.auto.max_trials),
                                   cfg.agents.isolated_runs)
                     if cell.agent_plan is not None else 0)
            if cell.load_plan is not None:   # a request per row: the runs' requests (a knee search: its first run's)
                calls = (trials_count(cfg) or 1) * expected_requests(cell.load_plan)
            warmup = warmups_per_visit(cfg)   # per visit, for agent cells too (a warm-up run each)
            planned.append(Planned(cell, trials_count(cfg) or cfg.auto.max_trials, warmup, done,
                                   loaded.get(key[0]) != key, calls, cold=cfg.state == State.cold))
            loaded[key[0]] = key
    return planned


def _history(output_root: Path, exclude: Path) -> dict[str, tuple[float, float, float]]:
    """Per model, from the newest earlier sweep that has it: median s/request, tok/s, load s."""
    seen: dict[str, tuple[float, float, float]] = {}
    sweeps = [p for p in sweep_dirs(output_root) if p != exclude]
    cols = ["model", "status", "warmup", "e2e_ms", "throughput_tok_s", "eval_count", "load_duration_ms"]
    for sweep in sweeps[:5]:
        for path in trial_files(sweep):
            try:
                t = read_whole(path, columns=cols).to_pandas()
            except Exception:  # noqa: BLE001 — an unreadable old file just teaches us nothing
                continue
            if not set(cols) <= set(t.columns):   # nor does one written before these columns existed
                continue
            ok = t[(t["status"] == Status.OK) & ~t["warmup"]]
            for model, g in ok.groupby("model"):
                if model not in seen and g["e2e_ms"].notna().any():
                    # a server that reports no timings (backend=openai) leaves tok/s and load time null:
                    # NaN here, and estimate_s falls back to the request time and the assumed reload
                    seen[model] = (float(g["e2e_ms"].median()) / 1e3, float(g["throughput_tok_s"].median()),
                                   float(t.loc[t["model"] == model, "load_duration_ms"].max()) / 1e3)
    return seen


def _known(value: float) -> bool:
    """A usable measured figure: finite and positive (NaN when the server reported none)."""
    return math.isfinite(value) and value > 0


def estimate_s(planned: Sequence[Planned], history: dict[str, tuple[float, float, float]]) -> tuple[float, str]:
    """Seconds the plan takes, and what the figure is based on."""
    total, measured = 0.0, set()
    for p in planned:
        todo = max(0, p.calls - p.done)
        requests = todo + (p.warmup_calls if todo else 0)
        tokens = p.cell.options.get("num_predict") or ASSUMED_TOKENS
        if p.cell.model in history:
            per_request, tok_s, load_s = history[p.cell.model]
            # scale the measured request time by this cell's token budget when it is known
            if p.cell.options.get("num_predict") and _known(tok_s):
                per_request = ASSUMED_OVERHEAD_S + tokens / tok_s
            load_s = load_s if _known(load_s) else ASSUMED_RELOAD_S
            measured.add(p.cell.model)
        else:
            per_request, load_s = ASSUMED_OVERHEAD_S + tokens / ASSUMED_TOK_S, ASSUMED_RELOAD_S
        total += requests * per_request + (load_s * p.model_loads() if requests else 0.0)
    models = {p.cell.model for p in planned}
    basis = (f"from earlier sweeps of {', '.join(sorted(measured))}" if measured else "")
    assumed = sorted(models - measured)
    if assumed:
        basis += ("; " if basis else "") + (f"assumed {ASSUMED_TOK_S:.0f} tok/s, {ASSUMED_TOKENS} tokens when "
                                            f"num_predict is unset, {ASSUMED_RELOAD_S:.0f} s per reload for "
                                            f"{', '.join(assumed)}")
    return total, basis


def _duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``42 s``; ``unknown`` when the estimate is not a number."""
    if not math.isfinite(seconds):
        return "unknown"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def print_plan(planned: Sequence[Planned], configs: Sequence[SweepConfig], sweep_dir: Path,
               order_lines: Sequence[str] = (), extra_loads: int = 0, upper_bound: bool = False) -> None:
    """The dry run's output: one row per cell, then totals and the command that runs it.

    ``order_lines``: a multirun in rounds (:mod:`sweep.multirun.rounds`) prints its order, round by round;
    ``extra_loads``: the model loads its rounds add to the blocked plan (their warm-ups are in each
    cell's ``warmup_calls``); ``upper_bound``: the warm-ups, loads and duration are at most these.
    """
    console = Console(stderr=False, highlight=False, soft_wrap=True, width=200 if not sys.stdout.isatty() else None)
    cfg = configs[0]
    table = Table(title=f"dry run: {len(planned)} cells → {sweep_dir}", title_justify="left")
    for col in ("#", "preset", "model", "options", "cell id", "trials", "done", "reload"):
        table.add_column(col, justify="right" if col in ("#", "trials", "done") else "left")
    for i, p in enumerate(planned):
        opts = " ".join(f"{k}={v}" for k, v in p.cell.options.items()) or "(server defaults)"
        if p.cell.lengths is not None and p.cell.lengths.label():   # prompt_tokens=512, ignore_eos
            opts += " " + p.cell.lengths.label()
        if p.cell.agent_plan is not None and p.cell.agent_plan.label():
            opts = f"{p.cell.agent_plan.label()} {opts}"
        if p.cell.load_plan is not None:
            opts = f"{p.cell.load_plan.label()} {opts}"
        expected = p.calls
        done = f"{p.done}/{expected}" if p.done else "–"
        table.add_row(str(i), p.cell.preset, p.cell.model, opts, p.cell.cell_hash,
                      f"{p.warmup_calls}+{expected}", done, "yes" if p.reload else "")
    console.print(table)
    for line in order_lines:
        console.print(line)
    cpu_only.say_once(cpu_only.planned_note(cfg.backend, [p.cell for p in planned]), console.print)
    history = _history(Path(cfg.output_root), sweep_dir)
    seconds, basis = estimate_s(planned, history)
    todo = sum(max(0, p.calls - p.done) for p in planned)
    requests = todo + sum(p.warmup_calls for p in planned if p.calls > p.done)
    if extra_loads and planned:      # every extra load at the plan's mean load time
        seconds += extra_loads * _load_s(planned, history)
    skipped = sum(1 for p in planned if p.done >= p.calls)
    up = "up to " if upper_bound else ""
    console.print(f"{up}{requests} requests ({todo} measured trials + {up}{requests - todo} warm-ups), "
                  f"{up}{sum(p.model_loads() for p in planned) + extra_loads} model loads, "
                  f"{skipped} cells already complete")
    console.print(f"estimated duration: {up}{_duration(seconds)} ({basis})")
    args = [a for a in sys.argv[1:] if not a.startswith("dry_run=")]
    console.print(f"nothing was sent; run it with: python -m sweep {' '.join(args)}")


def _stop(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG)


def _print_or_stop(show: Callable[[], None]) -> None:
    """Print the dry run's plan; any failure doing so is one line and an exit, never the real sweep.

    Why: Hydra turns an exception in a callback into a warning and goes on to run the jobs,
    so a dry run whose printing failed used to measure for real.
    """
    try:
        show()
    except Exception as exc:  # noqa: BLE001 — whatever went wrong, nothing may be sent
        _stop(f"dry run: could not print the plan ({type(exc).__name__}: {exc}); nothing was sent")


def _unreadable_parts(config: DictConfig) -> None:
    """A resume moves unreadable trial parts aside (:mod:`sweep.corrupt`); a dry run only says it would."""
    if not OmegaConf.select(config, "resume", default=False):
        return
    directory = layout.sweep_dir(config.hydra)
    if not OmegaConf.select(config, "dry_run", default=False):
        corrupt.set_aside(directory, lambda line: print(line, file=sys.stderr, flush=True))
        return
    bad = corrupt.unreadable_parts(directory)
    if bad:
        names = ", ".join(str(p.relative_to(directory)) for p in bad)
        _stop(f"dry run: {len(bad)} unreadable part(s) in {directory}: {names}; the resume without dry_run "
              f"moves them to {CORRUPT_DIR}/ and measures their trials again (nothing was sent)")


class Preflight(Callback):
    """Plans every job before the first one runs; prints the plan and stops when ``dry_run`` is set."""

    def _check(self, config: DictConfig) -> None:
        # Hydra turns an exception raised by a callback into a warning and carries on, so every
        # way out of here is a SystemExit: a dry run must never fall through into the real sweep.
        sweep_dir = layout.sweep_dir(config.hydra)
        try:
            composed = job_configs(config)
            if layout.is_multirun(config.hydra):   # the refusals the reload-aware sweeper makes, for any sweeper
                configs = [job.cfg for job in plan_multirun([([], cfg) for cfg in composed],
                                                            list(config.hydra.overrides.task),
                                                            reorder=False, rounds=False).jobs]
            else:
                configs = [typed(cfg) for cfg in composed]   # this entry's one conversion of each job's config
            planned = plan_all(configs, sweep_dir)
        except ConfigError as exc:
            _stop(str(exc))
        except (HydraException, OmegaConfBaseException) as exc:
            _stop(one_line(exc))
        except Exception as exc:  # noqa: BLE001 — a bug here must not start (or skip checking) the sweep
            _stop(f"could not plan the sweep: {type(exc).__name__}: {exc}")
        if OmegaConf.select(config, "dry_run", default=False):
            _print_or_stop(lambda: print_plan(planned, configs, sweep_dir))
            raise SystemExit(0)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _unreadable_parts(config)
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "progress", default=True):
            progress.quiet_launcher()   # every job's line comes from sweep.progress
        _unreadable_parts(config)   # before the sweeper reads what the cells hold
        if sweeper_plans_every_job(config):
            return   # it composes, checks and orders every job itself, then calls dry_run()
        self._check(config)


def dry_run(configs: Sequence[SweepConfig], sweep_dir: Path, rounds: Any = None,
            rounds_plan: Sequence[Sequence[int]] | None = None, one_process: bool = True) -> None:
    """Called by the reload-aware sweeper with the typed jobs in run order and their directory: print the plan, exit 0.

    ``rounds`` (a :class:`sweep.multirun.rounds.Rounds`) and ``rounds_plan`` (its preview: job indexes per round):
    the multirun runs in rounds, and the plan shows their order by the table's cell numbers and the
    warm-ups the rounds run; ``one_process``: the launcher runs the jobs in this process (else the
    warm-ups, loads and duration printed are upper bounds).
    """
    try:
        planned = plan_all(configs, sweep_dir)
    except ConfigError as exc:
        _stop(str(exc))
    lines: list[str] = []
    extra_loads = 0
    bound = False
    if rounds is not None and rounds_plan is not None:
        lines, extra_loads = _order_lines(planned, rounds, rounds_plan)
        auto = any(trials_count(job.cfg) is None for job in rounds.jobs)     # cells may leave earlier
        lines.append(_round_warmups(planned, rounds, rounds_plan, one_process, auto))
        bound = not one_process or auto
        if not one_process:      # a fresh process per job: any visit may load the model
            extra_loads = max(0, sum(len(r) for r in rounds_plan) - sum(p.model_loads() for p in planned))
        if any(p.cold for p in planned):   # state=cold already counts a load per trial, whatever the order
            extra_loads = 0
    _print_or_stop(lambda: print_plan(planned, configs, sweep_dir, lines, extra_loads, upper_bound=bound))
    raise SystemExit(0)


ROUNDS_SHOWN = 6


def _load_s(planned: Sequence[Planned], history: dict[str, tuple[float, float, float]]) -> float:
    """Seconds one more model load costs, averaged over the cells (as :func:`estimate_s` counts a load)."""
    costs = [history[p.cell.model][2] if p.cell.model in history and _known(history[p.cell.model][2])
             else ASSUMED_RELOAD_S for p in planned]
    return sum(costs) / len(costs)


def _round_warmups(planned: Sequence[Planned], rounds: Any, plan: Sequence[Sequence[int]], one_process: bool,
                   auto: bool) -> str:
    """Set each cell's warm-ups to what the rounds run (:meth:`sweep.multirun.rounds.Rounds.warmups`); the line that says so.

    Why: a round job warms up again whenever its server last loaded other options (in one
    process), or on every visit (a launcher's fresh worker process), not once per cell.
    """
    exact = rounds.warmups(plan, one_process=True)
    counts = exact if one_process else rounds.warmups(plan, one_process=False)
    for p in planned:
        if p.cell.cell_hash in counts:      # warm-up trials: a request, or an agent run (every agent's stages)
            agents = p.cell.agent_plan
            p.warmup_calls = counts[p.cell.cell_hash] * (len(agents.agents) * len(agents.stages) if agents else 1)
    visits = sum(len(r) for r in plan)
    total, in_one = sum(counts.values()), sum(exact.values())
    if not any(warmups_per_visit(job.cfg) for job in rounds.jobs):
        return "warm-ups: none (warmup=0, or state=cold|reload)"
    if one_process:
        up = "up to " if auto else ""
        return (f"warm-ups: {up}{total} over {up}{visits} round job(s): a job warms up its cell on its first visit "
                "and after its server loaded other load-time options (the jobs run in this process)")
    return (f"warm-ups: up to {total} over {visits} round job(s) (upper bound): this launcher may run a job in a "
            f"fresh process, which warms up every cell it visits (in one process: {in_one})")


def _order_lines(planned: Sequence[Planned], rounds: Any, plan: Sequence[Sequence[int]]) -> tuple[list[str], int]:
    """The rounds' order by cell number (#), and the model loads they add to the blocked order."""
    numbers: list[list[int]] = []
    i = 0
    for job in rounds.jobs:                  # the table lists every job's cells in run order
        numbers.append(list(range(i, i + len(job.cells))))
        i += len(job.cells)
    order = rounds.order
    head = f"run order: {order.describe()}, one job per cell and round (cells by # above)"
    if order.drawn:
        head += f"; add order_seed={order.seed} to run exactly this order"
    if any(trials_count(job.cfg) is None for job in rounds.jobs):
        head += "; trials=auto: cells leave the rounds once precise enough"
    lines = [head]
    for rnd, jobs in enumerate(plan[:ROUNDS_SHOWN]):
        cells = " ".join(str(n) for j in jobs for n in numbers[j])
        lines.append(f"  round {rnd}: {cells or '(stored)'}")
    if len(plan) > ROUNDS_SHOWN:
        lines.append(f"  … {len(plan) - ROUNDS_SHOWN} more round(s)")
    blocked = sum(p.reload for p in planned)
    return lines, max(0, rounds.loads(plan) - blocked)
