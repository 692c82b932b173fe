"""The Rust multi-agent runner's files → one trial row per LLM call, two agents per concurrent run.

Layout: ``<scenario>/<testNNN>/run_<k>/metrics.json`` plus ``<scenario>/<testNNN>/summary.json``.
A run file holds ``run_number``, ``scenario``, ``collector`` and ``insight`` (each ``config{id,
label, model, base_url, options}``, ``execution_time_s`` and ``result{llm_calls[], aggregate_metrics,
workflow{…}, …}``) and ``summary{concurrency_speedup, concurrent_wall_time_s, …}``.

Mapping: a test is a cell (its two agents' options may differ), a run file is a run
(``run_id``), the collector is agent 0 and the insight agent 1, every run is
``concurrent`` (the runner ran no agent alone), ``workflow_wall_ms`` is the agent's
``execution_time_s`` and ``run_wall_ms`` the run's ``concurrent_wall_time_s``.  The
summaries' figures are recomputed from the calls and compared (:func:`run_figures`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.importers.common import (
    CONCURRENT, MS_PER_S, MULTI_AGENT_WORKLOAD, Difference, Problem, Rows, call_row, differ, mean, need, number,
    options, preset, read_json, tok_per_s,
)
from analysis.importers.rust_single import aggregate_differences, cell_hash

HARNESS = "rust-multi"
AGENTS = ("collector", "insight")       # agent 0, agent 1
SUMMARY_FILE = "summary.json"
# TR114's threshold: a run below this speedup "detected contention".
CONTENTION_SPEEDUP = 1.5


def matches(data: dict[str, Any]) -> bool:
    """A Rust multi-agent run file: collector and insight executions with a ``result``."""
    c = data.get("collector")
    return isinstance(c, dict) and isinstance(data.get("insight"), dict) and "result" in c


def scenario_name(text: str) -> str:
    """``baseline-vs-chimera`` (a folder) or ``baseline_vs_chimera`` → our scenario name."""
    return text.strip().lower().replace("-", "_")


def test_dir(rel: str) -> str:
    """``chimera-homo/test001`` for ``chimera-homo/test001/run_1/metrics.json``."""
    parts = Path(rel).parts
    return "/".join(parts[:-2]) if len(parts) >= 3 else (parts[0] if len(parts) > 1 else ".")


def run_figures(tps: dict[str, float | None], ttft: dict[str, float | None], exec_s: dict[str, float],
                wall_s: float) -> dict[str, float | None]:
    """A run's summary figures, as the runner defined them, from its calls and clocks."""
    seq = exec_s["collector"] + exec_s["insight"]
    speedup = seq / wall_s if wall_s > 0 else None
    c_tps, i_tps, c_ttft, i_ttft = tps["collector"], tps["insight"], ttft["collector"], ttft["insight"]
    return {
        "collector_throughput": c_tps, "insight_throughput": i_tps,
        "collector_ttft_ms": c_ttft, "insight_ttft_ms": i_ttft,
        "throughput_delta": None if c_tps is None or i_tps is None else i_tps - c_tps,
        "ttft_delta_ms": None if c_ttft is None or i_ttft is None else c_ttft - i_ttft,
        "sequential_estimated_s": seq,
        "concurrency_speedup": speedup,
        "efficiency_percent": None if speedup is None else speedup / 2 * 100,
        "resource_contention_detected": None if speedup is None else float(speedup < CONTENTION_SPEEDUP),
    }


def compare(summary: Any, figures: dict[str, float | None], rel: str, where: str) -> list[Difference]:
    """The original summary's figures that disagree with the recomputed ones."""
    out = []
    if not isinstance(summary, dict):
        return out
    for name, value in figures.items():
        orig = summary.get(name)
        if isinstance(orig, (bool, int, float)) and differ(float(orig), value):
            out.append(Difference(rel, f"{where}.{name}", float(orig), value))
    return out


def convert(path: Path, rel: str, data: dict[str, Any]) -> tuple[Rows, list[Difference], dict[str, Any]]:
    """One run file → its call rows, its disagreements, and its recomputed figures (for the test's summary)."""
    rows, diffs = Rows(), []
    summary = need(data, "summary", rel)
    wall_s = number(summary, "concurrent_wall_time_s", rel, "summary")
    run_number = int(number(data, "run_number", rel))
    test = test_dir(rel)
    scenario = scenario_name(str(data.get("scenario") or Path(test).parts[0]))
    run_id = str(Path(rel).parent)
    tps: dict[str, float | None] = {}
    ttft: dict[str, float | None] = {}
    exec_s: dict[str, float] = {}
    for agent_id, key in enumerate(AGENTS):
        ex = need(data, key, rel)
        config, result = need(ex, "config", rel, key), need(ex, "result", rel, key)
        exec_s[key] = number(ex, "execution_time_s", rel, key)
        opts = options(config.get("options"), rel, f"{key}.config.options")
        calls = need(result, "llm_calls", rel, f"{key}.result")
        if not isinstance(calls, list) or not calls:
            raise Problem(rel, f"field `{key}.result.llm_calls` holds no calls")
        workflow = result.get("workflow") if isinstance(result.get("workflow"), dict) else {}
        ingest = workflow.get("ingest_seconds")
        ident = {"source": f"{HARNESS}:{rel}", "cell_id": f"{scenario} {test}", "cell_hash": cell_hash(test),
                 "preset": preset(opts), "model": str(need(config, "model", rel, f"{key}.config")),
                 "base_url": config.get("base_url"), "backend": "ollama", "workload": MULTI_AGENT_WORKLOAD,
                 "scenario": scenario, "agents": len(AGENTS), "agent_id": agent_id, "run_id": run_id,
                 "run_kind": CONCURRENT, "run_wall_ms": wall_s * MS_PER_S, "trial": run_number - 1,
                 "workflow_id": f"{run_id}#{key}", "workflow_wall_ms": exec_s[key] * MS_PER_S,
                 "ingest_ms": ingest * MS_PER_S if isinstance(ingest, (int, float)) else None, **opts}
        call_tps, call_ttft = [], []
        for i, call in enumerate(calls):
            where = f"{key}.result.llm_calls[{i}]"
            stage = str(need(call, "stage", rel, where))
            metrics = need(call, "metrics", rel, where)
            response = call.get("response")
            call_row(rows, metrics, rel, f"{where}.metrics", **ident, stage=stage, prompt_id=stage,
                     response=response if isinstance(response, str) else None)
            call_tps.append(tok_per_s(metrics.get("tokens_generated"), metrics.get("eval_duration_ms")))
            call_ttft.append(metrics.get("ttft_ms"))
        tps[key], ttft[key] = mean(call_tps), mean(call_ttft)
        diffs += aggregate_differences(result.get("aggregate_metrics"), calls, rel, f"{key}.result.aggregate_metrics")
    figures = run_figures(tps, ttft, exec_s, wall_s)
    diffs += compare(summary, figures, rel, "summary")
    return rows, diffs, {"test": test, "run_number": run_number, "figures": figures}


_AVERAGES = {"average_concurrency_speedup": "concurrency_speedup", "average_efficiency": "efficiency_percent",
             "average_throughput_delta": "throughput_delta", "average_ttft_delta_ms": "ttft_delta_ms"}


def check_summary(path: Path, rel: str, runs: list[dict[str, Any]]) -> list[Difference]:
    """A test's ``summary.json`` (its ``runs[]`` and ``aggregate``) against the figures of its imported run files.

    Only runs imported here count: a run file that could not be read is reported on its
    own, and the aggregate is compared with the mean over the runs that were.
    """
    data = read_json(path, rel)
    by_number = {r["run_number"]: r["figures"] for r in runs}
    diffs = []
    for i, run in enumerate(data.get("runs") or []):
        if isinstance(run, dict) and run.get("run_number") in by_number:
            diffs += compare(run, by_number[run["run_number"]], rel, f"runs[{i}]")
    aggregate = data.get("aggregate")
    if isinstance(aggregate, dict) and runs:
        for name, figure in _AVERAGES.items():
            orig = aggregate.get(name)
            value = mean([r["figures"][figure] for r in runs])
            if isinstance(orig, (int, float)) and differ(float(orig), value):
                diffs.append(Difference(rel, f"aggregate.{name}", float(orig), value))
    return diffs
