"""Example folders in the three harness formats, with consistent derived figures (tests, benchmarks, docs).

Why in the package: the benchmark of conversion speed and the tests need the same
files, and a user can look at one (``python -m analysis.importers.generate DIR``) to
see what the importer expects.  The derived figures (aggregates, deltas, speedups)
are computed here the way the original programs did, written out independently of
the importer's own recomputation, so that a test comparing the two is not circular.
``tamper`` changes one original figure so that the report must list it.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

MODEL = "gemma3:latest"
F32_TEMPERATURE = 0.6000000238418579    # 0.6 as the Rust harness wrote an f32


def _call(rng: random.Random, stage: str, run_number: int | None = None, text_chars: int = 0) -> dict[str, Any]:
    tokens = rng.randint(120, 400)
    tps = rng.uniform(60.0, 120.0)
    eval_ms = tokens / tps * 1000.0
    ttft = rng.uniform(60.0, 400.0)
    prompt_eval = rng.uniform(10.0, 50.0)
    call: dict[str, Any] = {
        "stage": stage, "prompt": f"{stage} prompt" + "p" * text_chars, "response": f"{stage} text" + "r" * text_chars,
        "metrics": {"throughput_tokens_per_sec": tokens / (eval_ms / 1000.0), "ttft_ms": ttft,
                    "prompt_eval_duration_ms": prompt_eval, "eval_duration_ms": eval_ms,
                    "load_duration_ms": rng.uniform(0.0, 5.0), "tokens_generated": tokens,
                    "total_duration_ms": ttft + eval_ms + rng.uniform(1.0, 20.0)},
    }
    if run_number is not None:
        call["run_number"] = run_number
    return call


def _aggregate(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """``aggregate_metrics`` as the Rust programs computed it: means of the per-call rates, sums of the rest."""
    m = [c["metrics"] for c in calls]
    n = len(m)
    return {"average_tokens_per_second": sum(x["throughput_tokens_per_sec"] for x in m) / n,
            "average_ttft_ms": sum(x["ttft_ms"] for x in m) / n,
            "total_duration_ms": sum(x["total_duration_ms"] for x in m),
            "total_tokens_generated": sum(x["tokens_generated"] for x in m),
            "prompt_eval_duration_ms": sum(x["prompt_eval_duration_ms"] for x in m),
            "eval_duration_ms": sum(x["eval_duration_ms"] for x in m),
            "load_duration_ms": sum(x["load_duration_ms"] for x in m)}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def rust_single(run_dir: Path, runs: int = 3, configuration: dict[str, Any] | None = None, seed: int = 0,
                model: str = MODEL, tamper: bool = False, text_chars: int = 0) -> Path:
    """``<run_dir>/data/metrics.json``: a baseline agent (``configuration {}``) and a chimera agent.

    ``text_chars`` pads each prompt and response (real files carry a few KB of text per call).
    """
    rng = random.Random(seed)
    chimera_cfg = {"num_gpu": 60, "num_ctx": 256, "temperature": F32_TEMPERATURE} if configuration is None \
        else configuration
    agents = {}
    for key, cfg in (("baseline", {}), ("chimera", chimera_cfg)):
        calls = [_call(rng, stage, run, text_chars) for run in range(1, runs + 1) for stage in ("analysis", "report")]
        workflow_runs = [{"run_number": run, "analysis": {}, "report_markdown": "# report",
                          "llm_calls": [c for c in calls if c["run_number"] == run]} for run in range(1, runs + 1)]
        agents[key] = {"agent_type": key.capitalize(), "model": model, "runs": runs, "timestamp": "2025-10-09T12:00:00Z",
                       "system_info": {"arch": "x86_64", "hostname": "bench", "os": "windows", "rust_version": "1.90.0"},
                       "configuration": cfg, "aggregate_metrics": _aggregate(calls),
                       "workflow_runs": workflow_runs, "llm_calls": calls}
    b, c = agents["baseline"]["aggregate_metrics"], agents["chimera"]["aggregate_metrics"]
    delta = {"throughput_delta": c["average_tokens_per_second"] - b["average_tokens_per_second"],
             "ttft_delta_ms": b["average_ttft_ms"] - c["average_ttft_ms"]}
    if tamper:
        agents["chimera"]["aggregate_metrics"]["average_tokens_per_second"] += 10.0
    path = run_dir / "data" / "metrics.json"
    _write(path, {"baseline": agents["baseline"], "chimera": agents["chimera"], "benchmark_type": "rust_agent",
                  "language": "rust", "delta": delta, "timestamp": "2025-10-09T12:00:00Z"})
    return path


def _summary(run_number: int, scenario: str, c_exec: float, i_exec: float, wall: float,
             c_agg: dict[str, Any], i_agg: dict[str, Any]) -> dict[str, Any]:
    speedup = (c_exec + i_exec) / wall
    return {"run_number": run_number, "scenario": scenario,
            "throughput_delta": i_agg["average_tokens_per_second"] - c_agg["average_tokens_per_second"],
            "ttft_delta_ms": c_agg["average_ttft_ms"] - i_agg["average_ttft_ms"],
            "concurrency_speedup": speedup, "efficiency_percent": speedup / 2 * 100,
            "sequential_estimated_s": c_exec + i_exec, "concurrent_wall_time_s": wall,
            "resource_contention_detected": speedup < 1.5,
            "collector_throughput": c_agg["average_tokens_per_second"],
            "insight_throughput": i_agg["average_tokens_per_second"],
            "collector_ttft_ms": c_agg["average_ttft_ms"], "insight_ttft_ms": i_agg["average_ttft_ms"]}


def rust_multi(root: Path, scenario: str = "chimera-homo", test: str = "test001", runs: int = 3,
               options_a: dict[str, Any] | None = None, options_b: dict[str, Any] | None = None, seed: int = 0,
               model: str = MODEL, tamper: bool = False) -> Path:
    """``<root>/<scenario>/<test>/run_<k>/metrics.json`` and the test's ``summary.json``; returns the test dir."""
    rng = random.Random(seed)
    opts = {"num_gpu": 80, "num_ctx": 512, "temperature": F32_TEMPERATURE}
    a = dict(opts) if options_a is None else options_a
    b = dict(opts) if options_b is None else options_b
    configs = [{"id": "collector", "label": "Agent A", "prompt": "p", "model": model,
                "base_url": "http://localhost:11434", "options": a},
               {"id": "insight", "label": "Agent B", "prompt": "p", "model": model,
                "base_url": "http://localhost:11435", "options": b}]
    test_dir = root / scenario / test
    summaries = []
    for run in range(1, runs + 1):
        ex = {}
        for key, cfg in zip(("collector", "insight"), configs):
            calls = [_call(rng, "analysis"), _call(rng, "report")]
            ingest = rng.uniform(0.01, 0.05)
            total = ingest + sum(c["metrics"]["total_duration_ms"] for c in calls) / 1000.0 + rng.uniform(0.0, 0.05)
            ex[key] = {"config": cfg, "execution_time_s": total, "result": {
                "agent_type": cfg["label"], "model": model, "runs": 2, "configuration": cfg["options"],
                "individual_runs": [c["metrics"] for c in calls], "aggregate_metrics": _aggregate(calls),
                "workflow": {"ingest_seconds": ingest, "analysis_seconds": 0.0, "report_seconds": 0.0,
                             "total_seconds": total}, "llm_calls": calls}}
        wall = max(ex["collector"]["execution_time_s"], ex["insight"]["execution_time_s"]) + rng.uniform(0.0, 0.2)
        summary = _summary(run, scenario.replace("-", "_"), ex["collector"]["execution_time_s"],
                           ex["insight"]["execution_time_s"], wall, ex["collector"]["result"]["aggregate_metrics"],
                           ex["insight"]["result"]["aggregate_metrics"])
        data = {"run_number": run, "scenario": summary["scenario"], "collector": ex["collector"],
                "insight": ex["insight"], "summary": dict(summary)}
        if tamper and run == 1:
            data["summary"]["concurrency_speedup"] = 1.99
        _write(test_dir / f"run_{run}" / "metrics.json", data)
        summaries.append(summary)
    n = len(summaries)
    aggregate = {"average_concurrency_speedup": sum(s["concurrency_speedup"] for s in summaries) / n,
                 "average_efficiency": sum(s["efficiency_percent"] for s in summaries) / n,
                 "average_throughput_delta": sum(s["throughput_delta"] for s in summaries) / n,
                 "average_ttft_delta_ms": sum(s["ttft_delta_ms"] for s in summaries) / n}
    _write(test_dir / "summary.json", {"scenario": scenario.replace("-", "_"), "runs": summaries,
                                       "aggregate": aggregate, "agent_a": configs[0], "agent_b": configs[1]})
    return test_dir


def python_multi(root: Path, phase: int = 1, test: int = 1, runs: int = 3, requests: int = 4, seed: int = 0,
                 model: str = MODEL, tamper: bool = False) -> Path:
    """``<root>/phase_<p>_test_<NNN>/run_<k>/metrics.json`` plus ``summary.json``/``summary.md``; returns the test dir."""
    rng = random.Random(seed)
    test_dir = root / f"phase_{phase}_test_{test:03d}"
    configs = [{"num_gpu": 80, "num_ctx": 1024, "temperature": 0.8, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1},
               {"num_gpu": 80, "num_ctx": 1024, "temperature": 0.8, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1}]
    for run in range(1, runs + 1):
        agents, exec_s = {}, {}
        for key, cfg in zip(("collector", "insight"), configs):
            tps, ttft = rng.uniform(60.0, 110.0), rng.uniform(100.0, 600.0)
            total_ms = requests * rng.uniform(2000.0, 5000.0)
            exec_s[key] = total_ms / 1000.0 + rng.uniform(0.05, 0.3)
            agents[key] = {"agent_type": "chimera", "model": model, "configuration": cfg, "aggregate_metrics": {
                "total_requests": requests, "total_duration_ms": total_ms, "total_tokens_generated": requests * 250,
                "average_ttft_ms": ttft, "average_tokens_per_second": tps, "p95_ttft_ms": ttft * 1.3,
                "p95_tokens_per_second": tps * 1.1, "average_gpu_utilization": rng.uniform(40, 90),
                "peak_gpu_memory_gb": 5.5, "peak_gpu_temperature_c": 70.0}, "execution_summary": {}}
        wall = max(exec_s.values()) + rng.uniform(0.0, 0.3)
        c, i = agents["collector"]["aggregate_metrics"], agents["insight"]["aggregate_metrics"]
        seq = exec_s["collector"] + exec_s["insight"]
        summary = {"collector_ollama_url": "http://localhost:11434", "insight_ollama_url": "http://localhost:11435",
                   "baseline_throughput": c["average_tokens_per_second"],
                   "chimera_throughput": i["average_tokens_per_second"],
                   "throughput_delta": i["average_tokens_per_second"] - c["average_tokens_per_second"],
                   "baseline_ttft_ms": c["average_ttft_ms"], "chimera_ttft_ms": i["average_ttft_ms"],
                   "ttft_delta_ms": c["average_ttft_ms"] - i["average_ttft_ms"],
                   "concurrent_wall_time": wall, "sequential_estimated_time": seq,
                   "concurrency_speedup": (2.5 if tamper and run == 1 else seq / wall),
                   "gpu_memory_peak": 5.5, "resource_contention_detected": seq / wall < 1.5}
        _write(test_dir / f"run_{run}" / "metrics.json", {
            "collector": agents["collector"], "insight": agents["insight"],
            "collector_execution_time": str(exec_s["collector"]), "insight_execution_time": str(exec_s["insight"]),
            "summary": summary})
    _write(test_dir / "summary.json", {"test": test_dir.name, "runs": runs})
    (test_dir / "summary.md").write_text(f"# {test_dir.name}\n")
    return test_dir


def example(root: Path, seed: int = 0) -> Path:
    """One folder holding each format: two single-agent run dirs, a multi-agent test, a Python test."""
    rust_single(root / "gpu60_ctx256_temp0p6", seed=seed)
    rust_single(root / "gpu80_ctx512_temp0p8", configuration={"num_gpu": 80, "num_ctx": 512, "temperature": 0.8},
                seed=seed + 1)
    rust_multi(root / "multi", scenario="baseline-vs-chimera", options_a={}, seed=seed + 2)
    python_multi(root / "python", seed=seed + 3)
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m analysis.importers.generate DIR")
    print(example(Path(sys.argv[1])))
