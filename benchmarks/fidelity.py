"""How fast our runner reads, and how truly it measures, against a server that knows the truth.

The server is :mod:`benchmarks.loopback` in its own process; the client is the
real measuring path (:func:`sweep.runner.measure_call` on one
:class:`~sweep.backends.http.StreamClient`, Ollama's NDJSON format), the one every
sweep uses.

- :func:`parse_rate`: chunks per second the runner consumes from a firehose
  (pre-built NDJSON, one write per request): our ceiling on one core.
- :func:`fidelity`: one stream paced at RATE tok/s; the record's
  ``client_tok_s`` and ``itl_ms_mean`` against the server's actual send times,
  and ``ttft_ms`` against (the server's first send − the runner's request stamp).
- :func:`concurrency`: N streams at once in one event loop, each paced; the
  per-stream and the aggregate ``client_tok_s`` against the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sweep.backends.http import StreamClient
from sweep.cells import Cell, Prompt
from sweep.contract import TrialRecord
from sweep.runner import Target, measure_call
from sweep.backends.ollama import OLLAMA

REPO = Path(__file__).resolve().parent.parent
CELL = Cell("chimera", "bench", "ollama", None, {}, "bench", (Prompt("0", "x"),), None, "generate", None)


class Loopback:
    """A :mod:`benchmarks.loopback` process; ``truth[id]`` fills as its requests finish."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.loopback", *args], cwd=REPO,
                                     stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.truth: dict[str, dict[str, Any]] = {}
        self._lock = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            obj = json.loads(line)
            with self._lock:
                self.truth[obj["id"]] = obj
                self._lock.notify_all()

    def wait(self, ids: list[str], timeout_s: float = 30.0) -> list[dict[str, Any]]:
        with self._lock:
            self._lock.wait_for(lambda: all(i in self.truth for i in ids), timeout_s)
            return [self.truth[i] for i in ids]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def loopback(*args: str) -> Iterator[Loopback]:
    server = Loopback(*args)
    try:
        yield server
    finally:
        server.close()


class _Watched(StreamClient):
    """The real client; it also notes each call's ``sent_ns`` (the runner's own TTFT start) by request id."""

    sent: dict[str, int]

    @contextlib.asynccontextmanager
    async def stream(self, path: str, body: dict[str, Any]):  # type: ignore[override]
        async with super().stream(path, body) as start:
            self.sent[body.get("prompt", "")] = start.sent_ns
            yield start


SENT: dict[str, int] = {}


async def _calls(url: str, ids: list[str], concurrent: bool) -> tuple[list[TrialRecord], list[float]]:
    """Measure one call per id through the real path; also each call's wall time."""
    async with _Watched(url, stall_timeout_s=60) as client:
        client.sent = SENT
        target = Target(client, OLLAMA, 600.0)

        async def one(rid: str) -> tuple[TrialRecord, float]:
            t0 = time.perf_counter()
            record = await measure_call(target, CELL, rid, TrialRecord())
            return record, time.perf_counter() - t0

        if concurrent:
            pairs = await asyncio.gather(*(one(i) for i in ids))
        else:
            pairs = [await one(i) for i in ids]
    bad = [(r.status, r.error) for r, _ in pairs if r.status != "ok"]
    assert not bad, bad[:3]
    return [r for r, _ in pairs], [s for _, s in pairs]


def parse_rate(chunks: int = 200_000, reps: int = 5) -> float:
    """Chunks per second the runner consumes from a firehose (best of ``reps``; the first warms up)."""
    with loopback("firehose", str(chunks)) as server:
        records, seconds = asyncio.run(_calls(server.url, [f"p{i}" for i in range(reps + 1)], False))
    assert all(r.content_chunks == chunks for r in records), [r.content_chunks for r in records]
    return max(chunks / s for s in seconds[1:])


def _truth_rate(sends: list[int]) -> float:
    return (len(sends) - 1) / ((sends[-1] - sends[0]) / 1e9)


def _ttft_error_ms(record: TrialRecord, truth: dict[str, Any]) -> float:
    """How late the runner stamped the first token's arrival.

    The TTFT truth is (server's first send − the runner's own ``sent_ns``).
    """
    return record.ttft_ms - (truth["send_ns"][0] - SENT[truth["id"]]) / 1e6


def _errors(record: TrialRecord, truth: dict[str, Any]) -> tuple[float, float, float]:
    """(tok/s error %, ITL mean error %, TTFT error ms) of one call."""
    sends = truth["send_ns"]
    rate = _truth_rate(sends)
    gap_ms = (sends[-1] - sends[0]) / (len(sends) - 1) / 1e6
    return (abs(record.client_tok_s / rate - 1) * 100, abs(record.itl_ms_mean / gap_ms - 1) * 100,
            _ttft_error_ms(record, truth))


def fidelity(rate: float, tokens: int = 1000, reps: int = 5) -> dict[str, float]:
    """One paced stream at a time: worst of tok/s and ITL error (median over calls), TTFT error p99."""
    with loopback("paced", str(tokens), str(rate), "0.005", "--spin") as server:
        ids = [f"f{i}" for i in range(reps + 1)]
        records, _ = asyncio.run(_calls(server.url, ids, False))
        truths = server.wait(ids)
    errs = [_errors(r, t) for r, t in zip(records[1:], truths[1:])]      # the first call warms up
    ttft = sorted(abs(e[2]) for e in errs)
    return {"err_pct": statistics.median(max(e[0], e[1]) for e in errs),
            "ttft_err_ms_p99": ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))]}


def ttft_error(calls: int = 200) -> dict[str, float]:
    """TTFT error over many short calls (5 ms to the first of 3 tokens): a p99 needs ~100 calls or more.

    :func:`fidelity`'s few long streams give a "p99" that is the worst of a handful of
    calls; here each call is short, so ``calls`` of them take seconds, not minutes.
    """
    with loopback("paced", "3", "5000", "0.005", "--spin") as server:
        ids = [f"t{i}" for i in range(calls + 1)]
        records, _ = asyncio.run(_calls(server.url, ids, False))
        truths = server.wait(ids)
    # the first call warms up; only the TTFT: 3 tokens 0.2 ms apart may arrive in one read (no tok/s to compare)
    errs = sorted(abs(_ttft_error_ms(r, t)) for r, t in zip(records[1:], truths[1:]))
    return {"ttft_err_ms_p99": float(np.percentile(errs, 99)), "ttft_err_ms_p50": float(np.percentile(errs, 50)),
            "ttft_calls": float(len(errs))}


def concurrency(streams: int = 64, rate: float = 200.0, tokens: int = 400) -> dict[str, float]:
    """``streams`` paced streams at once in one event loop: worst per-stream and aggregate tok/s error %.

    Streaming fidelity, not the start-up burst: the first token is due 250 ms
    after each request, so all requests are out (64 requests take the client
    tens of ms) before any token arrives.
    """
    with loopback("paced", str(tokens), str(rate), "0.25") as server:
        ids = [f"c{i}" for i in range(streams)]
        records, _ = asyncio.run(_calls(server.url, ids, True))
        truths = server.wait(ids)
    per = [abs(r.client_tok_s / _truth_rate(t["send_ns"]) - 1) * 100 for r, t in zip(records, truths)]
    aggregate = abs(sum(r.client_tok_s for r in records) / sum(_truth_rate(t["send_ns"]) for t in truths) - 1) * 100
    return {"worst_stream_err_pct": max(per), "median_stream_err_pct": statistics.median(per),
            "aggregate_err_pct": aggregate}
