"""End-of-sweep summary (a Hydra callback): what was measured, what failed, how to re-run.

It reads the sweep's Parquet, not in-memory state, so it also tells the truth
about cells measured by earlier (resumed) runs and by other processes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from sweep import progress, provenance
from sweep.background import machine_load
from sweep.config import typed
from sweep.multirun import layout
from sweep.workloads.agents import completed_runs, runs_ok_text
from sweep.workloads.loadgen import completed_load_trials
from sweep.contract import Status, cell_paths, read_cell
from sweep.plan import trials_count
from sweep.objective import Objective, Score, score


def best_cell(sweep_dir: Path, objective: Objective, maximize: bool = True) -> tuple[str, Score] | None:
    """The cell with the best objective (``objective.*``), scored from its stored rows."""
    scored = []
    for path in cell_paths(sweep_dir):
        rows = read_cell(path).to_pylist()
        if rows:
            scored.append((rows[0]["cell_id"], score(rows, objective)))
    if not scored:
        return None
    return (max if maximize else min)(scored, key=lambda item: item[1].value)


def best_line(sweep_dir: Path, objective: Objective, maximize: bool = True) -> str | None:
    """'best (mean throughput_tok_s): <cell> = 52.31 (mean 52.31, 95 % CI 50.10 – 54.52, n=3)'."""
    found = best_cell(sweep_dir, objective, maximize)
    if found is None:
        return None
    cell_id, s = found
    if s.n == 0:
        return f"best ({objective.describe()}): none, every cell failed"
    ci = interval_text(sweep_dir, cell_id, objective.metric)
    note = f", scored {s.value:g}: {s.why_failed}" if s.why_failed else ""
    return (f"best ({objective.describe()}): {cell_id} = {s.value:.2f} "
            f"({objective.metric} mean {s.mean:.2f}, {ci}, n={s.n}{note})")


def interval_text(sweep_dir: Path, cell_id: str, metric: str) -> str:
    """'95 % CI 50.10 – 54.52' of a cell's mean, or why there is none: the analysis's own interval.

    Why the analysis computes it: the summary and ``python -m analysis`` used to
    print two different intervals for one cell (Student t here, another method
    there); one function (:func:`analysis.intervals.sample_ci`) gives one answer.
    """
    from analysis.intervals import sample_ci  # scipy: imported only when a summary is printed

    for path in cell_paths(sweep_dir):
        table = read_cell(path, columns=list(dict.fromkeys(["cell_id", "warmup", "status", metric, "reloaded"])))
        if table.num_rows == 0 or table.column("cell_id")[0].as_py() != cell_id:
            continue
        rows = [r for r in table.select(["warmup", "status", metric, "reloaded"]).to_pylist()
                if not r["warmup"] and r["status"] == Status.OK and r[metric] is not None]
        _, _, lo, hi, why = sample_ci([r[metric] for r in rows], reloaded=[bool(r["reloaded"]) for r in rows])
        return f"no CI: {why}" if why else f"95 % CI {lo:.2f} – {hi:.2f}"
    return "no CI"


_AGENT_COLUMNS = ["cell_hash", "workflow_id", "run_id", "run_kind", "agent_id", "agents", "stage", "trial"]
_LOAD_COLUMNS = ["load_run_id", "load_step", "load_knee", "load_run_s"]


def _ok_and_expected(rows: list[dict[str, Any]], trials: int, isolated_runs: int | None) -> tuple[int, int]:
    """Measured trials ok / expected; for agent cells, complete runs / scheduled runs; for load cells, finished
    runs or knee searches / trials."""
    if any(r.get("load_run_id") for r in rows):
        return len(completed_load_trials(rows, rows[0]["cell_hash"])), trials
    if not any(r.get("workflow_id") for r in rows):
        ok = sum(r["status"] == Status.OK for r in rows if not r["warmup"])
        return ok, trials * len({r["prompt_id"] for r in rows}) if rows else trials
    stages = len({r["stage"] for r in rows if r.get("stage")})
    ok = len(completed_runs(rows, rows[0]["cell_hash"], stages))
    agents = max((r.get("agents") or 0 for r in rows), default=0)
    if not agents:
        return ok, trials
    return ok, trials + agents * (trials if isolated_runs is None else isolated_runs)


def summarize(sweep_dir: Path, trials: int, isolated_runs: int | None = None) -> tuple[Table, list[str]]:
    """A table of cells and the list of cells that are not complete (agent cells count runs)."""
    table = Table(title=f"sweep {sweep_dir.name}", title_justify="left")
    for col in ("cell", "ok", "failed attempts", "state"):
        table.add_column(col)
    unfinished = []
    for path in cell_paths(sweep_dir):
        rows = read_cell(path, columns=["cell_id", "prompt_id", "warmup", "status", *_AGENT_COLUMNS,
                                        *_LOAD_COLUMNS]).to_pylist()
        failed = sum(r["status"] != Status.OK for r in rows)
        ok, expected = _ok_and_expected(rows, trials, isolated_runs)
        state = "complete" if ok >= expected else "INCOMPLETE"
        if ok < expected:
            unfinished.append(rows[0]["cell_id"] if rows else path.stem)
        counted = f"{ok}/{expected}"
        if any(r.get("run_kind") for r in rows):   # a multi-agent cell: its runs by kind, not as "trials"
            stages = len({r["stage"] for r in rows if r.get("stage")})
            counted = runs_ok_text(rows, rows[0]["cell_hash"], stages, trials, isolated_runs).removesuffix(" ok")
        table.add_row(rows[0]["cell_id"] if rows else path.stem, counted, str(failed), state)
    return table, unfinished


TABLE_MAX_CELLS = 12   # more cells than this: counts and the unfinished ones instead of a row per cell


def verdict_lines(sweep_dir: Path) -> list[str]:
    """Baseline-vs-chimera verdicts (Δ %, CI, adjusted p) and failures, as ``python -m analysis`` prints them.

    Computed in memory from the stored rows (no report files are written);
    an analysis that cannot run (e.g. no measured trial yet) just adds nothing.
    """
    from analysis import brief
    from analysis.load import InputError, load
    from analysis.tables import analyse

    try:
        loaded = load([sweep_dir])
        an = analyse(loaded.frame)
    except (InputError, ValueError, KeyError):
        return []
    return brief.summary_lines(loaded, an)[1:]


def _failed_attempts(table: Table) -> int:
    """The failed attempts the summary table counts (its third column)."""
    return sum(int(str(v)) for v in table.columns[2].cells)


class SweepSummary(Callback):
    """Prints the summary once, at the end of a run or multirun."""

    def _report(self, config: DictConfig) -> None:
        progress.stop()
        sweep_dir = layout.sweep_dir(config.hydra)
        if not sweep_dir.is_dir():
            return
        provenance.record_load_end(sweep_dir, machine_load())   # _run.json: the machine's load as the run ended
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        cfg = typed(config)   # this callback's one conversion
        table, unfinished = summarize(sweep_dir, trials_count(cfg) or cfg.auto.min_trials, cfg.agents.isolated_runs)
        if not unfinished and not _failed_attempts(table):   # nothing to look at cell by cell: one line
            console.print(f"sweep {sweep_dir.name}: {table.row_count} cell(s), every one complete, "
                          "no failed attempt")
        elif table.row_count <= TABLE_MAX_CELLS:
            console.print(table)
        else:
            shown = ", ".join(unfinished[:5]) + (" …" if len(unfinished) > 5 else "")
            console.print(f"sweep {sweep_dir.name}: {table.row_count} cells, {table.row_count - len(unfinished)} "
                          f"complete" + (f", {len(unfinished)} INCOMPLETE: {shown}" if unfinished else ""))
        for line in verdict_lines(sweep_dir):
            if not line.startswith(("best ", "baseline vs chimera: No")):   # best: the objective's line below
                console.print(line)
        if len(cell_paths(sweep_dir)) > 1:
            direction = str(config.hydra.sweeper.get("direction", "maximize"))
            line = best_line(sweep_dir, Objective.from_config(cfg.objective), not direction.endswith("minimize"))
            if line:
                console.print(line)
        console.print(f"trials: {sweep_dir}   report: python -m analysis {sweep_dir}")
        console.print(f"next: python -m analysis {sweep_dir} --open   (report.html with every table and figure)")
        if unfinished:
            args = " ".join(a for a in sys.argv[1:] if not a.startswith(("resume=", "sweep_id=")))
            console.print(f"[yellow]{len(unfinished)} cell(s) incomplete[/]; finish them with:\n"
                          f"  python -m sweep {args} resume=true sweep_id={sweep_dir.name}")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        layout.tidy_hydra_files(layout.sweep_dir(config.hydra))   # the sweeper's own files, written last
        self._report(config)
