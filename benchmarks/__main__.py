"""``python -m benchmarks [NAME ...] [--quick]``: our own speed, as one table of figures and ratios.

Speed goals live here, not in timed tests.  Each benchmark is a function that
returns figures (``{key: value}``); this module runs the chosen ones, prints
one table (figure, value, goal, met?) and writes every figure to
``benchmarks/results.json`` (or ``--out``), with the machine and the command,
so the README's table can be regenerated from a file.  ``--quick`` runs each
in well under a few minutes on 2 cores; ``--tiny`` is for tests (the figures
are then only a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"
SIZES = ("tiny", "quick", "full")


@dataclass(frozen=True)
class Goal:
    """A figure's meaning, unit, and the goal it must meet (None: reported, no goal)."""

    label: str
    unit: str
    goal: float | None = None
    higher_is_better: bool = False
    decimals: int = 2

    def met(self, value: float | None) -> bool | None:
        if self.goal is None or value is None or math.isnan(value):
            return None
        return value >= self.goal if self.higher_is_better else value < self.goal


# The headline figures, in table order.  Figures a benchmark returns beyond these are printed after them.
GOALS: dict[str, Goal] = {
    "parse_chunks_per_s": Goal("chunks/s the runner consumes from a server that is not the bottleneck",
                               "chunks/s", 50_000, True, 0),
    "fidelity_err_pct_5000": Goal("client tok/s and ITL vs the truth, one stream at 5,000 tok/s", "%", 1.0),
    "fidelity_err_pct_500": Goal("client tok/s and ITL vs the truth, one stream at 500 tok/s", "%", 1.0),
    "ttft_err_ms_p99": Goal("TTFT vs (first send − the runner's request stamp), p99 over 200 short calls", "ms", 1.0,
                            decimals=3),
    "concurrency_err_pct": Goal("64 streams × 200 tok/s in one process: worst of per-stream and aggregate", "%", 2.0),
    "cell_overhead_ms": Goal("50-cell multirun, instant server: time per cell outside requests", "ms", 50.0, decimals=1),
    "analysis_1m_rows_s": Goal("1 M trial rows, 1,000 cells → every table", "s", 1.5),
    "import_1000_runs_s": Goal("1,000 Rust run folders of old results → trial rows, kept as Parquet", "s", 10.0),
    "embedded_ratio": Goal("embedded server over HTTP / the same engine in process (lowest)", "ratio", 0.9, True),
    "embedded_vs_tg128": Goal("embedded server tok/s / llama-bench tg128, same GGUF and threads (lowest)",
                              "ratio", 0.9, True),
    "llama_server_vs_tg128": Goal("llama.cpp's llama-server over HTTP / llama-bench tg128 (lowest)", "ratio"),
    "server_loop_us_per_token": Goal("embedded server's event-loop thread, CPU per streamed token (worst block)",
                                     "µs", decimals=0),
    "client_us_per_token": Goal("our runner's CPU per streamed token from the embedded server (worst block)", "µs",
                                decimals=0),
    "llama_bench_tg128_tok_s": Goal("llama-bench tg128, fastest model and thread count", "tok/s", decimals=1),
    "embedded_pp512_vs_bench": Goal("embedded pp512 prompt tok/s (+experiment=pp_tg) / llama-bench pp512 (lowest)",
                                    "ratio"),
    "embedded_tg128_vs_bench": Goal("embedded tg128 decode tok/s (+experiment=pp_tg) / llama-bench tg128 (lowest)",
                                    "ratio"),
    "llama_server_pp512_vs_bench": Goal("llama-server pp512 through the sweep / llama-bench pp512 (lowest)", "ratio"),
    "llama_server_tg128_vs_bench": Goal("llama-server tg128 through the sweep / llama-bench tg128 (lowest)", "ratio"),
}


def _parse(size: str) -> dict[str, float]:
    from benchmarks import fidelity

    chunks, reps = {"tiny": (2_000, 1), "quick": (50_000, 3), "full": (200_000, 5)}[size]
    return {"parse_chunks_per_s": fidelity.parse_rate(chunks, reps)}


def _fidelity(size: str) -> dict[str, float]:
    from benchmarks import fidelity

    tokens, reps = {"tiny": (20, 1), "quick": (500, 3), "full": (2_000, 7)}[size]
    fast, slow = fidelity.fidelity(5000, tokens, reps), fidelity.fidelity(500, max(20, tokens // 5), reps)
    ttft = fidelity.ttft_error({"tiny": 10, "quick": 200, "full": 1_000}[size])
    return {"fidelity_err_pct_5000": fast["err_pct"], "fidelity_err_pct_500": slow["err_pct"], **ttft}


def _concurrency(size: str) -> dict[str, float]:
    from benchmarks import fidelity

    streams, tokens = {"tiny": (4, 20), "quick": (64, 200), "full": (64, 600)}[size]
    f = fidelity.concurrency(streams, 200.0, tokens)
    return {"concurrency_err_pct": max(f["worst_stream_err_pct"], f["aggregate_err_pct"]),
            "concurrency_aggregate_err_pct": f["aggregate_err_pct"],
            "concurrency_median_stream_err_pct": f["median_stream_err_pct"]}


def _cells(size: str) -> dict[str, float]:
    from benchmarks import cell_overhead

    return cell_overhead.measure({"tiny": 3, "quick": 20, "full": 50}[size])


def _analysis(size: str) -> dict[str, float]:
    from benchmarks import analysis_speed

    rows = {"tiny": 10_000, "quick": 1_000_000, "full": 1_000_000}[size]
    return analysis_speed.measure(rows)


def _engine(size: str) -> dict[str, float]:
    from benchmarks import engine

    got = engine.run(quick=size != "full")
    if isinstance(got, dict):
        return got
    return {"embedded_ratio": float(got) if got is not None else math.nan}


def _pp_tg(size: str) -> dict[str, float]:
    from benchmarks import pp_tg

    return pp_tg.run(quick=size != "full")


def _launchers(size: str) -> dict[str, float]:
    from benchmarks import launchers

    got = launchers.run(quick=size != "full")     # start-up and seconds per cell per Hydra launcher
    return got if isinstance(got, dict) else {}


def _runner(size: str) -> dict[str, float]:
    from benchmarks import runner_overhead

    return runner_overhead.run(quick=size != "full")


def _store(size: str) -> dict[str, float]:
    from benchmarks import store_speed

    return store_speed.measure({"tiny": 50, "quick": 1_000, "full": 10_000}[size])


def _import(size: str) -> dict[str, float]:
    from benchmarks import import_speed

    return import_speed.measure({"tiny": 5, "quick": 1_000, "full": 1_000}[size])


# name → (function, keys it produces first); order = table order
BENCHMARKS: dict[str, Callable[[str], dict[str, float]]] = {
    "parse": _parse, "fidelity": _fidelity, "concurrency": _concurrency, "cells": _cells,
    "analysis": _analysis, "import": _import, "engine": _engine, "runner": _runner, "store": _store, "launchers": _launchers,
    "pp_tg": _pp_tg,   # the engine benchmark's pp512/tg128 part alone (engine runs it too)
}


def _fmt(value: Any, decimals: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)


def table(figures: dict[str, float]) -> list[str]:
    """The one table: headline figures with their goals, then the other figures."""
    rows = [("figure", "value", "goal", "met")]
    for key, g in GOALS.items():
        if key in figures:
            v = figures[key]
            goal = "–" if g.goal is None else f"{'≥' if g.higher_is_better else '<'} {_fmt(float(g.goal), g.decimals)}"
            met = {True: "yes", False: "NO", None: "–"}[g.met(v)]
            rows.append((key, f"{_fmt(float(v), g.decimals)} {g.unit}", goal, met))
    rows += [(k, _fmt(float(v) if isinstance(v, (int, float)) else v), "", "") for k, v in figures.items()
             if k not in GOALS]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _machine() -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "load_avg_1m_at_end": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="shorter runs (a few minutes in all on 2 cores)")
    parser.add_argument("--tiny", action="store_true", help="smallest sizes, for tests: a smoke test, not a measurement")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where the figures go (default {RESULTS})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        print(f"error: unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    size = "tiny" if args.tiny else ("quick" if args.quick else "full")
    figures: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for name in args.names or list(BENCHMARKS):
        print(f"== {name} ==", flush=True)
        started = time.perf_counter()
        figures.update({k: float(v) for k, v in BENCHMARKS[name](size).items()})
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"({name}: {seconds[name]:.1f} s)\n", flush=True)
    print("\n".join(table(figures)))
    command = "python -m benchmarks" + (" " + " ".join(sys.argv[1:] if argv is None else argv) if (argv or sys.argv[1:]) else "")
    result = {**figures, "meta": {"size": size, "command": command, "seconds": seconds, "machine": _machine(),
                                  "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}}
    previous = json.loads(args.out.read_text()) if args.out.exists() and args.names else {}
    merged = {**{k: v for k, v in previous.items() if k != "meta"}, **result} if args.names else result
    if args.names and "meta" in previous:   # figures kept from an earlier run keep their own provenance
        merged["meta"]["earlier"] = [*previous["meta"].pop("earlier", []), previous["meta"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in merged.items()}
    args.out.write_text(json.dumps(clean, indent=2, allow_nan=False, default=str) + "\n")
    print(f"\nfigures written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
