"""The Rust single agent's ``metrics.json`` (one per run directory) → one trial row per LLM call.

Layout: ``<run dir>/data/metrics.json`` (``gpu60_ctx256_temp0p6/``), top level ``baseline`` and
``chimera`` (one agent object each), ``benchmark_type``, ``language``, ``delta``, ``timestamp``.
An agent object holds ``model``, ``configuration`` (the options sent), ``aggregate_metrics``
(derived: checked, never used), ``workflow_runs[]`` and ``llm_calls[]`` (``run_number``,
``stage``, ``response``, ``metrics{…}``).  A workflow is the calls of one ``run_number``;
each run directory's agent is a cell of its own (``<run dir> baseline``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from analysis.importers.common import (
    AGENT_WORKLOAD, MS_PER_S, Difference, Problem, Rows, call_row, differ, mean, need, number, options, preset,
    tok_per_s,
)

HARNESS = "rust-single"
AGENTS = ("baseline", "chimera")


def matches(data: dict[str, Any]) -> bool:
    """A single-agent file has a baseline and a chimera agent object at the top."""
    return isinstance(data.get("baseline"), dict) and isinstance(data.get("chimera"), dict)


def run_label(rel: str) -> str:
    """The run directory's name (``gpu60_ctx256_temp0p6`` for ``gpu60_ctx256_temp0p6/data/metrics.json``)."""
    parts = Path(rel).parts[:-1]
    if parts and parts[-1] == "data":
        parts = parts[:-1]
    return "/".join(parts) or "."


def cell_hash(*parts: str) -> str:
    """A stable 16-hex id for an imported cell (so re-imports keep their cell keys)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _calls(agent: dict[str, Any], rel: str, key: str) -> list[tuple[int, dict[str, Any]]]:
    """(run_number, call) pairs: ``llm_calls[]``, else the calls inside ``workflow_runs[]``."""
    calls = agent.get("llm_calls")
    if isinstance(calls, list) and calls:
        return [(int(number(c, "run_number", rel, f"{key}.llm_calls[{i}]")), c) for i, c in enumerate(calls)]
    out = []
    for i, run in enumerate(agent.get("workflow_runs") or []):
        n = int(number(run, "run_number", rel, f"{key}.workflow_runs[{i}]"))
        out += [(n, c) for c in need(run, "llm_calls", rel, f"{key}.workflow_runs[{i}]")]
    if not out:
        raise Problem(rel, f"missing field `{key}.llm_calls` (no calls in it or in `{key}.workflow_runs`)")
    return out


def _walls(agent: dict[str, Any]) -> dict[int, tuple[float | None, float | None]]:
    """run_number → (workflow wall ms, ingest ms) where a workflow run recorded ``workflow{total_seconds,…}``."""
    out = {}
    for run in agent.get("workflow_runs") or []:
        wf = run.get("workflow") if isinstance(run, dict) else None
        if isinstance(wf, dict) and isinstance(run.get("run_number"), (int, float)):
            total, ingest = wf.get("total_seconds"), wf.get("ingest_seconds")
            out[int(run["run_number"])] = (
                total * MS_PER_S if isinstance(total, (int, float)) else None,
                ingest * MS_PER_S if isinstance(ingest, (int, float)) else None,
            )
    return out


def aggregate_differences(agg: Any, calls: list[dict[str, Any]], rel: str, where: str) -> list[Difference]:
    """The harness's ``aggregate_metrics`` against the same figures from its calls' metrics."""
    if not isinstance(agg, dict):
        return []
    m = [c.get("metrics") or {} for c in calls]

    def col(name: str) -> list[float | None]:
        return [x.get(name) if isinstance(x.get(name), (int, float)) else None for x in m]

    def total(name: str) -> float | None:
        xs = [v for v in col(name) if v is not None]
        return sum(xs) if xs else None

    tps = [tok_per_s(t, e) for t, e in zip(col("tokens_generated"), col("eval_duration_ms"))]
    recomputed = {
        "average_tokens_per_second": mean(tps),
        "average_ttft_ms": mean(col("ttft_ms")),
        "total_duration_ms": total("total_duration_ms"),
        "total_tokens_generated": total("tokens_generated"),
        "prompt_eval_duration_ms": total("prompt_eval_duration_ms"),
        "eval_duration_ms": total("eval_duration_ms"),
        "load_duration_ms": total("load_duration_ms"),
    }
    out = []
    for name, value in recomputed.items():
        orig = agg.get(name)
        if isinstance(orig, (int, float)) and differ(float(orig), value):
            out.append(Difference(rel, f"{where}.{name}", float(orig), value))
    return out


# delta figures as the single-agent summary may name them: (chimera, baseline) means → the figure
_DELTAS = {
    "throughput_delta": lambda c_tps, b_tps, c_ttft, b_ttft: _sub(c_tps, b_tps),
    "ttft_delta_ms": lambda c_tps, b_tps, c_ttft, b_ttft: _sub(b_ttft, c_ttft),
    "throughput_improvement_percent": lambda c_tps, b_tps, c_ttft, b_ttft: _pct(_sub(c_tps, b_tps), b_tps),
    "ttft_reduction_percent": lambda c_tps, b_tps, c_ttft, b_ttft: _pct(_sub(b_ttft, c_ttft), b_ttft),
}


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _pct(d: float | None, base: float | None) -> float | None:
    return None if d is None or not base else d / base * 100.0


def convert(path: Path, rel: str, data: dict[str, Any]) -> tuple[Rows, list[Difference]]:
    """One single-agent ``metrics.json`` → its call rows and the disagreements of its derived figures."""
    rows, diffs = Rows(), []
    label = run_label(rel)
    means: dict[str, tuple[float | None, float | None]] = {}
    for key in AGENTS:
        agent = need(data, key, rel)
        model = str(need(agent, "model", rel, key))
        opts = options(agent.get("configuration"), rel, f"{key}.configuration")
        calls = _calls(agent, rel, key)
        walls = _walls(agent)
        ident = {"source": f"{HARNESS}:{rel}", "cell_id": f"{label} {key}", "cell_hash": cell_hash(rel, key),
                 "preset": preset(opts), "model": model, "backend": "ollama", "workload": AGENT_WORKLOAD, **opts}
        first = min(n for n, _ in calls)
        for i, (run, call) in enumerate(calls):
            where = f"{key}.llm_calls[{i}]"
            stage = str(need(call, "stage", rel, where))
            wall, ingest = walls.get(run, (None, None))
            response = call.get("response")
            call_row(rows, need(call, "metrics", rel, where), rel, f"{where}.metrics", **ident,
                     trial=run - first, stage=stage, prompt_id=stage, workflow_id=f"{rel}#{key}#{run}",
                     workflow_wall_ms=wall, ingest_ms=ingest,
                     response=response if isinstance(response, str) else None)
        diffs += aggregate_differences(agent.get("aggregate_metrics"), [c for _, c in calls], rel,
                                       f"{key}.aggregate_metrics")
        tps = [tok_per_s(c["metrics"].get("tokens_generated"), c["metrics"].get("eval_duration_ms")) for _, c in calls]
        means[key] = (mean(tps), mean([c["metrics"].get("ttft_ms") for _, c in calls]))
    delta = data.get("delta")
    if isinstance(delta, dict):
        (c_tps, c_ttft), (b_tps, b_ttft) = means["chimera"], means["baseline"]
        for name, formula in _DELTAS.items():
            orig = delta.get(name)
            value = formula(c_tps, b_tps, c_ttft, b_ttft)
            if isinstance(orig, (int, float)) and differ(float(orig), value):
                diffs.append(Difference(rel, f"delta.{name}", float(orig), value))
    return rows, diffs
