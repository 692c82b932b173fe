"""llama-bench's pp512 / tg128 pair through our sweep (``+experiment=pp_tg``) against llama-bench itself.

What is compared, per model and ``num_thread``, in rounds whose order rotates (this shared
machine drifts by ±10 % over minutes, so a ratio is taken per round and then averaged):

* **embedded**: ``python -m sweep +experiment=pp_tg`` on our engine, as a user runs it (a
  subprocess: Hydra, the server start, the prompt built through ``/api/tokenize``);
* **llama-server**: the same command with ``backend=llama_server`` (llama.cpp's own HTTP server,
  started by the sweep with ``-t``, ``-c``; its flash attention is its default, ``auto``);
* **llama-bench**: ``-p 512 -n 128`` on the same GGUF and threads (no HTTP, no Python, no
  sampling; flash attention off like our engine, :data:`benchmarks.anchor.FLASH_ATTN`).

Prompt tok/s of a sweep = mean over the pp cell's measured trials of ``prompt_eval_count /
prompt_eval_duration`` (exactly 512 tokens each, checked); decode tok/s = mean ``throughput_tok_s``
(``eval_count / eval_duration``) of the tg cell (128 tokens each, ``ignore_eos``, checked).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks import anchor
from benchmarks.spread import mean, mean_sd
from sweep.backends.llama_tools import missing_hint, tool_path
from sweep.server.models import default_registry

MODELS = {"gemma3:270m": "gemma3_270m", "smollm2:135m": "smollm2_135m"}   # served name → conf/model/ file
N_BATCH = 512
SIDES = ("embedded", "llama_server")


@dataclass
class Figures:
    """One side's prompt and decode tok/s of one round."""

    pp: float
    tg: float


@dataclass
class PairBlock:
    """A (model, threads) block: each round's figures per side and llama-bench's."""

    model: str
    threads: int
    rounds: list[dict[str, Figures]] = field(default_factory=list)

    def ratios(self, side: str, test: str) -> list[float]:
        return [getattr(r[side], test) / getattr(r["llama-bench"], test) for r in self.rounds if side in r]

    def values(self, side: str, test: str) -> list[float]:
        return [getattr(r[side], test) for r in self.rounds if side in r]


def sweep_figures(frame: pd.DataFrame) -> Figures:
    """pp and tg tok/s from a ``+experiment=pp_tg`` sweep's rows; refuses rows that did not hold their lengths."""
    rows = frame[(frame["status"] == "ok") & ~frame["warmup"].astype(bool)]
    pp = rows[rows["num_predict"] == 1]
    tg = rows[rows["num_predict"] == anchor.TG]
    if pp.empty or tg.empty:
        raise RuntimeError("the pp_tg sweep stored no successful pp or tg trial")
    if not (pp["prompt_eval_count"] == anchor.PP).all():
        raise RuntimeError(f"pp trials evaluated {sorted(set(pp['prompt_eval_count']))} prompt tokens, not {anchor.PP}")
    if not (tg["eval_count"] == anchor.TG).all():
        raise RuntimeError(f"tg trials generated {sorted(set(tg['eval_count']))} tokens, not {anchor.TG}")
    prompt = pp["prompt_eval_count"] / (pp["prompt_eval_duration_ms"] / 1000)
    return Figures(float(prompt.mean()), float(tg["throughput_tok_s"].mean()))


def run_sweep(model: str, threads: int, side: str, trials: int, root: Path) -> Figures:
    """``python -m sweep +experiment=pp_tg`` in a subprocess, as a user runs it; its rows → :class:`Figures`."""
    out = root / f"{side}-{MODELS[model]}-{threads}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "sweep", "+experiment=pp_tg", f"model={MODELS[model]}", f"backend={side}",
           f"grid.fixed.num_thread={threads}", f"trials={trials}", f"output_root={out}", "progress=false",
           "telemetry.enabled=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env={**os.environ})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return sweep_figures(pd.read_parquet(out))


def bench_figures(model: str, threads: int, reps: int) -> Figures:
    got = anchor.llama_bench(default_registry().get(model).path, threads, N_BATCH, reps=reps)
    return Figures(got[f"pp{anchor.PP}"].tok_s, got[f"tg{anchor.TG}"].tok_s)




def print_blocks(blocks: list[PairBlock]) -> None:
    print(f"\npp{anchor.PP} / tg{anchor.TG} through the server (python -m sweep +experiment=pp_tg) vs llama-bench "
          f"-p {anchor.PP} -n {anchor.TG} -b {N_BATCH} -ub {N_BATCH} -fa {anchor.FLASH_ATTN}; tok/s and ratios, "
          "mean ± sd over rounds")
    head = (f"{'model':<13} {'thr':>3} | {'bench pp512':>15} {'bench tg128':>13} | "
            + " ".join(f"{s + ' pp':>15} {s + ' tg':>15} {s + ' pp/bench':>20} {s + ' tg/bench':>20}" for s in SIDES))
    print(head)
    print("-" * len(head))
    for b in blocks:
        line = (f"{b.model:<13} {b.threads:>3} | {mean_sd(b.values('llama-bench', 'pp')):>15} "
                f"{mean_sd(b.values('llama-bench', 'tg')):>13} | ")
        line += " ".join(f"{mean_sd(b.values(s, 'pp')):>15} {mean_sd(b.values(s, 'tg')):>15} "
                         f"{mean_sd(b.ratios(s, 'pp'), 2):>20} {mean_sd(b.ratios(s, 'tg'), 2):>20}" for s in SIDES)
        print(line)
    print(f"pp = prompt_eval_count / prompt_eval_duration of the pp cell (exactly {anchor.PP} tokens, checked); "
          f"tg = eval_count / eval_duration of the tg cell ({anchor.TG} tokens past any end-of-sequence, checked). "
          "The sweep's figures include what a server adds (HTTP, our client, the first token's sampling); "
          f"llama-server runs with its default flash attention (auto), llama-bench and our engine without. "
          f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.")


def run(quick: bool = False, threads: list[int] | None = None) -> dict[str, float]:
    """Every (model, threads) block: rounds of embedded, llama-server and llama-bench; the lowest ratios returned."""
    if tool_path("llama-bench") is None or tool_path("llama-server") is None:
        print(f"  pp/tg comparison skipped: {missing_hint('llama-bench')}")
        return {}
    rounds, trials, reps = (2, 3, 2) if quick else (3, 5, 3)
    models = ["gemma3:270m"] if quick else list(MODELS)
    blocks = []
    with tempfile.TemporaryDirectory(prefix="pp_tg-") as tmp:
        for model in models:
            for t in threads or ([1] if quick else sorted({1, os.cpu_count() or 1})):
                block = PairBlock(model, t)
                started = time.perf_counter()
                for r in range(rounds):
                    steps = {"embedded": lambda: run_sweep(model, t, "embedded", trials, Path(tmp)),
                             "llama_server": lambda: run_sweep(model, t, "llama_server", trials, Path(tmp)),
                             "llama-bench": lambda: bench_figures(model, t, reps)}
                    names = list(steps)
                    shift = r % len(names)
                    block.rounds.append({name: steps[name]() for name in names[shift:] + names[:shift]})
                print(f"  pp/tg {model} num_thread={t}: {time.perf_counter() - started:.1f} s", flush=True)
                blocks.append(block)
    print_blocks(blocks)
    figures: dict[str, float] = {}
    for side in SIDES:
        for test in ("pp", "tg"):
            key = f"{side}_{test}{anchor.PP if test == 'pp' else anchor.TG}_vs_bench"
            figures[key] = min(mean(b.ratios(side, test)) for b in blocks)
    return figures


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
