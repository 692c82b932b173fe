"""The speed anchor: llama.cpp's own figures for the same GGUF, threads and batch.

Why an anchor: our engines' tok/s mean little alone; ``llama-bench`` is the C++
number with no HTTP, no Python and no sampling (``tg128``: 128 tokens decoded
one at a time; ``pp512``: a 512-token prompt in batches), built from the same
llama.cpp source with the same flags as the embedded engine.  ``llama-server``
is llama.cpp's own HTTP server on that build, measured by *our* runner through
the OpenAI format, so it is a real third-party engine on the same footing as
ours.  :mod:`benchmarks.engine` reports every engine as a ratio to ``tg128``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sweep.llama_tools import missing_hint, tool_path

TG, PP = 128, 512


@dataclass
class BenchFigure:
    """One llama-bench test: mean and sd of tok/s over its repetitions."""

    tok_s: float
    sd: float


def llama_bench(model: Path, threads: int, n_batch: int, reps: int = 3) -> dict[str, BenchFigure]:
    """``llama-bench -p 512 -n 128`` on ``model``: {"pp512": …, "tg128": …}."""
    binary = tool_path("llama-bench")
    if binary is None:
        raise RuntimeError(missing_hint("llama-bench"))
    cmd = [str(binary), "-m", str(model), "-t", str(threads), "-p", str(PP), "-n", str(TG), "-b", str(n_batch),
           "-ub", str(n_batch), "-r", str(reps), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    return parse_llama_bench(out.stdout)


def parse_llama_bench(stdout: str) -> dict[str, BenchFigure]:
    """llama-bench's ``-o json`` list → figures named as llama-bench names them (pp512, tg128)."""
    figures = {}
    for test in json.loads(stdout):
        name = f"pp{test['n_prompt']}" if test.get("n_gen", 0) == 0 else f"tg{test['n_gen']}"
        figures[name] = BenchFigure(float(test["avg_ts"]), float(test.get("stddev_ts") or 0.0))
    return figures
