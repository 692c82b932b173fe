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

import contextlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sweep.backends.llama_tools import missing_hint, tool_path
from sweep.backends.openai import OPENAI
from sweep.cells import Cell, Prompt, TrialSpec
from sweep.contract import TrialRecord
from sweep.runner import measure_trial
from sweep.backends.stream import StreamFormat

TG, PP = 128, 512
Meter = Callable[[str], contextlib.AbstractContextManager[Any]]  # a named span around some trials


@dataclass
class BenchFigure:
    """One llama-bench test: mean and sd of tok/s over its repetitions."""

    tok_s: float
    sd: float


#: The engine's attention setting, given to both llama.cpp tools: llama.cpp's default (auto, on for this CPU)
#: decodes 3-8 % faster and changes greedy tokens, so an anchor with it on measures a different computation.
FLASH_ATTN = "off"


def llama_bench(model: Path, threads: int, n_batch: int, reps: int = 3) -> dict[str, BenchFigure]:
    """``llama-bench -p 512 -n 128 -fa 0`` on ``model``: {"pp512": …, "tg128": …}."""
    binary = tool_path("llama-bench")
    if binary is None:
        raise RuntimeError(missing_hint("llama-bench"))
    cmd = [str(binary), "-m", str(model), "-t", str(threads), "-p", str(PP), "-n", str(TG), "-b", str(n_batch),
           "-ub", str(n_batch), "-r", str(reps), "-fa", "1" if FLASH_ATTN == "on" else "0", "-o", "json"]
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


def run_trials(base_url: str, fmt: StreamFormat, cell_for: Callable[[int], Cell], warmup_tokens: int,
               num_predict: int, reps: int, meter: Meter | None = None) -> list[TrialRecord]:
    """One warm-up of ``warmup_tokens`` (same load-time options: no reload after it), then ``reps`` measured trials.

    With a ``meter``, a one-token trial runs after the warm-up inside ``meter("one")``, and the
    measured trials inside ``meter("all")``: the difference per token is what streaming costs,
    without each request's fixed cost.
    """
    def trial(i: int, tokens: int) -> TrialRecord:
        cell = cell_for(tokens)
        rec = measure_trial(base_url, cell, TrialSpec(i, cell.prompts[0], i == 0), fmt=fmt, request_timeout_s=600)
        if rec.status != "ok":
            raise RuntimeError(f"{cell.model} on {cell.backend}: {rec.status}: {rec.error}")
        return rec

    trial(0, warmup_tokens)
    if meter is None:
        return [trial(i, num_predict) for i in range(1, reps + 1)]
    with meter("one"):
        trial(1, 1)
    with meter("all"):
        return [trial(i, num_predict) for i in range(2, reps + 2)]


def measure_llama_server(model: str, options: dict[str, Any], prompt_text: str, warmup_tokens: int,
                         reps: int, meter: Meter | None = None) -> list[TrialRecord]:
    """Start llama-server with the options' load-time flags, warm up, then ``reps`` trials by our runner; stop it.

    The prompt goes to ``/v1/completions`` as text already templated the way the
    embedded server templates it, so both engines get the same tokens.
    """
    from sweep.backends.llama_server import Launch, LlamaServer, flags_for, free_port, model_path

    flags = (*flags_for(options), "-fa", FLASH_ATTN)
    server = LlamaServer(Launch(model, model_path(model, None), flags), free_port())
    try:
        return run_trials(server.base_url, OPENAI,
                          lambda tokens: Cell("bench", model, "llama_server", server.base_url,
                                              {**options, "num_predict": tokens}, "engine-bench",
                                              (Prompt("0", prompt_text),), None, "completions", None),
                          warmup_tokens, options["num_predict"], reps, meter)
    finally:
        server.stop()
