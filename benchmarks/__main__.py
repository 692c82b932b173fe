"""``python -m benchmarks [NAME ...] [--quick]``: our own speed, printed as figures and ratios.

Speed and memory goals live here, not in timed tests.  Each benchmark module
exposes ``run(quick: bool = False) -> None`` and prints what it measured.
"""

from __future__ import annotations

import argparse
import importlib
import time

BENCHMARKS = {
    "engine": "benchmarks.engine",              # embedded server over HTTP vs llama.cpp in-process
    "analysis": "benchmarks.analysis_speed",    # 1 M trial rows → all tables
    "runner": "benchmarks.runner_overhead",     # client-side cost per chunk at 1, 8, 64 concurrent streams
    "store": "benchmarks.store_speed",          # cost of storing one trial as a cell grows to 10,000
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    for name in args.names or list(BENCHMARKS):
        print(f"== {name} ==", flush=True)
        started = time.perf_counter()
        importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        print(f"({name}: {time.perf_counter() - started:.1f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
