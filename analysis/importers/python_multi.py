"""The Python multi-agent harness's run files → one trial row per agent and run (an aggregate of its calls).

Layout: ``phase_<p>_test_<NNN>/run_<k>/metrics.json`` plus ``summary.json``/``summary.md`` per test.
A run file holds ``collector`` and ``insight`` (each ``agent_type``, ``model``, ``configuration``,
``aggregate_metrics{total_requests, average_ttft_ms, average_tokens_per_second, …}``),
``collector_execution_time``/``insight_execution_time`` (seconds, as strings) and ``summary{…}``.

The harness kept no per-call rows, so each row is one agent's run: its mean tok/s and
TTFT over ``total_requests`` calls, marked by ``aggregated_calls``.  Statistics over
these rows count runs, not calls (the report says so).  The summary's figures are
checked against the agents' aggregates and clocks; the collector is taken as the
summary's ``baseline_*`` agent and the insight agent as its ``chimera_*`` one, as the
runner's baseline-vs-chimera scenario assigns them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.importers.common import (
    CONCURRENT, MS_PER_S, MULTI_AGENT_WORKLOAD, Difference, Problem, Rows, differ, need, number, options, preset,
)
from analysis.importers.rust_single import cell_hash
from sweep.contract import Status

HARNESS = "python-multi"
AGENTS = ("collector", "insight")
MIB_PER_GB = 1024.0


def matches(data: dict[str, Any]) -> bool:
    """A Python run file: collector/insight aggregates and their execution times at the top."""
    c = data.get("collector")
    return isinstance(c, dict) and "aggregate_metrics" in c and "collector_execution_time" in data


def test_dir(rel: str) -> str:
    """``phase_1_test_001`` for ``phase_1_test_001/run_1/metrics.json``."""
    parts = Path(rel).parts
    return "/".join(parts[:-2]) if len(parts) >= 3 else (parts[0] if len(parts) > 1 else ".")


def convert(path: Path, rel: str, data: dict[str, Any]) -> tuple[Rows, list[Difference]]:
    """One run file → two aggregate rows (collector, insight) and the summary's disagreements."""
    rows, diffs = Rows(), []
    summary = need(data, "summary", rel)
    wall_s = number(summary, "concurrent_wall_time", rel, "summary")
    test = test_dir(rel)
    run_id = str(Path(rel).parent)
    run_name = Path(run_id).name
    run_number = int(run_name.split("_")[-1]) if run_name.split("_")[-1].isdigit() else 1
    tps: dict[str, float] = {}
    ttft: dict[str, float] = {}
    exec_s: dict[str, float] = {}
    for agent_id, key in enumerate(AGENTS):
        agent = need(data, key, rel)
        agg = need(agent, "aggregate_metrics", rel, key)
        where = f"{key}.aggregate_metrics"
        calls = number(agg, "total_requests", rel, where)
        if calls < 1:
            raise Problem(rel, f"field `{where}.total_requests` is {calls:g}: no calls to import")
        exec_s[key] = number(data, f"{key}_execution_time", rel)
        tps[key] = number(agg, "average_tokens_per_second", rel, where)
        ttft[key] = number(agg, "average_ttft_ms", rel, where)
        opts = options(agent.get("configuration"), rel, f"{key}.configuration")
        total_ms = number(agg, "total_duration_ms", rel, where, required=False)
        gpu_gb = number(agg, "peak_gpu_memory_gb", rel, where, required=False)
        tokens = number(agg, "total_tokens_generated", rel, where, required=False)
        rows.add(
            source=f"{HARNESS}:{rel}", cell_id=f"{test}", cell_hash=cell_hash(HARNESS, test), preset=preset(opts),
            model=str(need(agent, "model", rel, key)), backend="ollama", workload=MULTI_AGENT_WORKLOAD,
            base_url=summary.get(f"{key}_ollama_url"), trial=run_number - 1, warmup=False, status=Status.OK.value,
            agents=len(AGENTS), agent_id=agent_id, run_id=run_id, run_kind=CONCURRENT, run_wall_ms=wall_s * MS_PER_S,
            workflow_id=f"{run_id}#{key}", workflow_wall_ms=exec_s[key] * MS_PER_S,
            aggregated_calls=int(calls), throughput_tok_s=tps[key], ttft_ms=ttft[key],
            e2e_ms=None if total_ms is None else total_ms / calls,
            eval_count=None if tokens is None else int(tokens),
            gpu_util_pct_mean=number(agg, "average_gpu_utilization", rel, where, required=False),
            gpu_mem_used_mb_max=None if gpu_gb is None else gpu_gb * MIB_PER_GB,
            gpu_temp_c_max=number(agg, "peak_gpu_temperature_c", rel, where, required=False),
            **opts,
        )
    seq = exec_s["collector"] + exec_s["insight"]
    figures = {
        "baseline_throughput": tps["collector"], "chimera_throughput": tps["insight"],
        "baseline_ttft_ms": ttft["collector"], "chimera_ttft_ms": ttft["insight"],
        "throughput_delta": tps["insight"] - tps["collector"], "ttft_delta_ms": ttft["collector"] - ttft["insight"],
        "sequential_estimated_time": seq, "concurrency_speedup": seq / wall_s if wall_s > 0 else None,
    }
    for name, value in figures.items():
        orig = summary.get(name)
        try:
            orig_f = float(orig) if orig is not None and not isinstance(orig, bool) else None
        except (TypeError, ValueError):
            orig_f = None
        if differ(orig_f, value):
            diffs.append(Difference(rel, f"summary.{name}", orig_f, value))
    return rows, diffs
