"""What our measurement path costs per chunk, alone and with 1, 8 and 64 concurrent streams.

The stand-in runs in its own process, so the client's CPU time (``process_time``)
is the runner's own: aiohttp reading the socket plus our stamp-split-interpret
loop.  Per streamed chunk (one token line) that CPU is what the event loop is
busy with; with N concurrent streams it is also how late, at most, one stream's
stamp can be taken because another stream's chunk was being handled.

Figures:

- ``loop_us_per_line``: the hot loop alone on in-memory bytes (no socket);
- ``cpu_us_per_chunk_{1,8,64}``: client CPU per chunk with N concurrent streams
  from a stand-in that sends without delay (the client is the bottleneck);
- ``bare_cpu_us_per_chunk_{1,8,64}``: the same streams read by a bare aiohttp
  session (``content.iter_any()``, same pool and timeouts, nothing done per chunk),
  so ``cpu_us_per_chunk − bare`` is what our client wrapper and loop add over the
  HTTP library;
- ``itl_error_ms_{1,8,64}``: paced stand-in (``PACED_GAP_MS`` between tokens),
  median measured ITL minus the scripted gap: the distortion a user would see;
- ``old_*`` / ``new_*``: TTFT, ITL and client tok/s of the blocking path before
  the async core and of this one, on the same paced script.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from sweep.backends.http import StreamClient
from sweep.cells import Cell, Prompt
from sweep.contract import TrialRecord
from sweep.runner import Target, _read_stream, _Stream, measure_call
from sweep.backends.ollama import OLLAMA

REPO = Path(__file__).resolve().parent.parent
PACED_GAP_MS = 20.0
CONCURRENCY = (1, 8, 64)
CELL = Cell("chimera", "gemma3:latest", "ollama", None, {}, "bench", (Prompt("0", "x"),), None, "generate", None)

_STANDIN = """
import sys, time
from sweep.testing.standin import Script, StandIn
s = StandIn()
s.default = Script(tokens=["tok"] * int(sys.argv[1]), first_token_delay_s=float(sys.argv[2]),
                   token_interval_s=float(sys.argv[3]))
print(s.base_url, flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def standin_process(tokens: int, first_s: float, gap_s: float) -> Iterator[str]:
    """A stand-in in its own process (its CPU is not ours); yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-c", _STANDIN, str(tokens), str(first_s), str(gap_s)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


async def _bare(session: aiohttp.ClientSession, url: str) -> None:
    """The HTTP library alone: the same request, its body read and dropped chunk by chunk."""
    async with session.post(url, json={"model": CELL.model, "prompt": "x", "stream": True}) as response:
        async for _ in response.content.iter_any():
            pass


async def _concurrent(base_url: str, streams: int, *, bare: bool) -> list[TrialRecord]:
    if bare:   # a session as StreamClient makes one (pool bound, stall timeout), without our wrapper
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                         timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=120)) as s:
            await asyncio.gather(*(_bare(s, base_url + "/api/generate") for _ in range(streams)))
        return []
    async with StreamClient(base_url) as client:
        target = Target(client, OLLAMA, 600.0)
        return list(await asyncio.gather(*(measure_call(target, CELL, "x", TrialRecord()) for _ in range(streams))))


def _cpu_us_per_chunk(base_url: str, streams: int, chunks: int, *, bare: bool) -> float:
    started = time.process_time()
    records = asyncio.run(_concurrent(base_url, streams, bare=bare))
    spent = time.process_time() - started
    bad = [(r.status, r.error, r.content_chunks) for r in records if r.status != "ok" or r.content_chunks != chunks]
    assert not bad, bad[:3]
    return spent / (streams * chunks) * 1e6


def loop_us_per_line(lines: int = 100_000) -> float:
    """The hot loop alone on in-memory bytes: µs per line (split + stamp + classify + keep)."""
    chunk = b'{"model":"gemma3:latest","created_at":"2026-01-01T00:00:00Z","response":" tok","done":false}\n'
    final = b'{"model":"gemma3:latest","done":true,"eval_count":1,"eval_duration":1}\n'

    async def feed() -> Any:
        for _ in range(lines):
            yield chunk
        yield final

    async def read() -> None:
        async with contextlib.aclosing(feed()) as chunks:
            await _read_stream(chunks, OLLAMA, 2**62, _Stream())

    started = time.perf_counter()
    asyncio.run(read())
    return (time.perf_counter() - started) / lines * 1e6


def _old_vs_new(base_url: str, reps: int) -> dict[str, float]:
    """Alternating calls, each path on its own client kept across calls (as a sweep keeps one)."""
    from sweep.testing.sync_reference import old_and_new

    old, new = old_and_new(base_url, CELL, "x", OLLAMA, reps + 1)
    old, new = old[1:], new[1:]   # the first call of each path opens its connection
    out = {}
    for label, records in (("old", old), ("new", new)):
        for name in ("ttft_ms", "itl_ms_mean", "itl_ms_p99", "client_tok_s"):
            out[f"{label}_{name}"] = statistics.median(getattr(r, name) for r in records)
    return out


def measure(quick: bool = False) -> dict[str, float]:
    """Every figure of this benchmark, as a dict (see the module docstring)."""
    chunks, reps = (500, 3) if quick else (2000, 5)
    figures: dict[str, float] = {"loop_us_per_line": statistics.median(loop_us_per_line() for _ in range(3))}
    for n in CONCURRENCY:
        per_stream = max(chunks // n, 50)   # similar total work at every N
        with standin_process(per_stream, 0.0, 0.0) as url:
            figures[f"cpu_us_per_chunk_{n}"] = statistics.median(
                _cpu_us_per_chunk(url, n, per_stream, bare=False) for _ in range(reps))
            figures[f"bare_cpu_us_per_chunk_{n}"] = statistics.median(
                _cpu_us_per_chunk(url, n, per_stream, bare=True) for _ in range(reps))
    paced_tokens = 30 if quick else 60
    with standin_process(paced_tokens, 0.05, PACED_GAP_MS / 1000) as url:
        for n in CONCURRENCY:
            records = asyncio.run(_concurrent(url, n, bare=False))
            assert all(r.status == "ok" for r in records)
            figures[f"itl_error_ms_{n}"] = statistics.median(r.itl_ms_mean for r in records) - PACED_GAP_MS
            figures[f"itl_p99_ms_{n}"] = statistics.median(r.itl_ms_p99 for r in records)
        figures.update(_old_vs_new(url, reps))
    return figures


def run(quick: bool = False) -> dict[str, float]:
    """Measure and print; returns the figures for the benchmarks table."""
    f = measure(quick)
    print(f"stream loop alone: {f['loop_us_per_line']:.2f} µs per line "
          f"({f['loop_us_per_line'] / 33_000 * 100:.4f} % of a 33 ms gap at 30 tok/s)")
    print("client CPU per chunk (stand-in in its own process, sending without delay):")
    for n in CONCURRENCY:
        ours, bare = f[f"cpu_us_per_chunk_{n}"], f[f"bare_cpu_us_per_chunk_{n}"]
        print(f"  {n:>2} concurrent streams: runner {ours:6.1f} µs, bare aiohttp {bare:6.1f} µs, "
              f"ours adds {ours - bare:5.1f} µs per chunk")
    print(f"paced stand-in ({PACED_GAP_MS:.0f} ms gaps): measured ITL − scripted gap, median over streams:")
    for n in CONCURRENCY:
        print(f"  {n:>2} concurrent streams: {f[f'itl_error_ms_{n}']:+.3f} ms (ITL p99 {f[f'itl_p99_ms_{n}']:.2f} ms)")
    print("old blocking path vs async path, same paced script (medians):")
    for name, unit in (("ttft_ms", "ms"), ("itl_ms_mean", "ms"), ("itl_ms_p99", "ms"), ("client_tok_s", "tok/s")):
        print(f"  {name:<13} old {f['old_' + name]:8.2f}  new {f['new_' + name]:8.2f} {unit}")
    return f


if __name__ == "__main__":
    run()
