"""What our stream loop costs per chunk, against bare httpx line iteration.

The stand-in streams chunks with no delay, so the client is the bottleneck:
the difference per chunk is the runner's own overhead (parse, stamp, keep).
At 30–100 tok/s a chunk arrives every 10–30 ms; the overhead should be
microseconds, i.e. far below 1 % of an inter-token gap.
"""

from __future__ import annotations

import statistics
import time

import httpx

from sweep.ollama import OllamaClient
from sweep.plan import Cell, Prompt, TrialSpec
from sweep.contract import TrialRecord
from sweep.runner import _read_stream, _Stream, measure_trial
from tests.ollama_standin import Script, StandIn


def _bare(base_url: str, body: dict) -> float:
    started = time.perf_counter()
    with httpx.Client(base_url=base_url) as client, client.stream("POST", "/api/generate", json=body) as r:
        for _ in r.iter_lines():
            pass
    return time.perf_counter() - started


def _loop_cost_us(lines: int) -> float:
    """The hot loop alone on in-memory lines: µs per line (stamp + classify + keep)."""
    chunk = '{"model":"gemma3:latest","created_at":"2026-01-01T00:00:00Z","response":" tok","done":false}'
    final = '{"model":"gemma3:latest","done":true,"eval_count":1,"eval_duration":1}'
    feed = [(time.perf_counter_ns(), chunk)] * lines + [(0, final)]
    started = time.perf_counter()
    _read_stream(iter(feed), 2**62, _Stream())
    return (time.perf_counter() - started) / lines * 1e6


def run(quick: bool = False) -> None:
    chunks, reps = (2000, 3) if quick else (5000, 7)
    cell = Cell("chimera", "gemma3:latest", "ollama", None, {}, "bench", (Prompt("0", "x"),), None, "generate", None)
    with StandIn() as standin:
        standin.default = Script(tokens=["tok"] * chunks, first_token_delay_s=0, token_interval_s=0)
        body = {"model": cell.model, "prompt": "x", "stream": True}
        bare = [_bare(standin.base_url, body) for _ in range(reps)]
        ours = []
        with OllamaClient(standin.base_url) as client:
            for _ in range(reps):
                started = time.perf_counter()
                record = measure_trial(client, cell, TrialSpec(0, cell.prompts[0], False),
                                       request_timeout_s=60, base=TrialRecord())
                ours.append(time.perf_counter() - started)
                assert record.status == "ok" and record.content_chunks == chunks
    b, o = statistics.median(bare), statistics.median(ours)
    per_chunk_us = (o - b) / chunks * 1e6
    loop_us = statistics.median(_loop_cost_us(100_000) for _ in range(3))
    print(f"stream loop alone: {loop_us:.2f} µs per line ({loop_us / 33_000 * 100:.4f} % of a 33 ms gap)")
    print(f"over loopback, chunks per trial: {chunks}, repetitions: {reps} (the stand-in is the bottleneck)")
    print(f"bare httpx iter_lines: {chunks / b:,.0f} chunks/s   runner: {chunks / o:,.0f} chunks/s")
    print(f"runner/bare time ratio: {o / b:.2f}   overhead: {per_chunk_us:.1f} µs per chunk "
          f"({per_chunk_us / 33_000 * 100:.3f} % of a 33 ms gap at 30 tok/s)")


if __name__ == "__main__":
    run()
