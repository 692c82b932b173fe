"""The measurement path before the async core, kept as a reference to compare figures against.

Blocking ``httpx.Client``, ``iter_lines`` and a stamp per line, as ``sweep/runner.py``
did up to the async core; it shares the pure pieces (the format's request body and
line interpretation, the timing maths) so the only difference is the transport and
the loop.  Used by the old-vs-new test and ``python -m benchmarks runner``; not by sweeps.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from sweep.contract import TrialRecord
from sweep.backends.http import StreamClient
from sweep.cells import Cell
from sweep.runner import Target, _fill_timings, _Stream, measure_call
from sweep.backends.stream import LineKind, StreamFormat


def measure_sync(client: httpx.Client, cell: Cell, prompt: str, fmt: StreamFormat) -> TrialRecord:
    """One streamed call, measured the old way (successful calls only: the reference has no fault handling).

    ``client`` is kept across calls, as a sweep kept its client across trials.
    """
    path, body = fmt.request(cell, prompt)
    got = _Stream()
    sent_ns = time.perf_counter_ns()
    with client.stream("POST", path, json=body) as response:
        for line in response.iter_lines():
            arrived_ns = time.perf_counter_ns()
            kind, value = fmt.interpret(line)
            if kind == LineKind.CONTENT and value:
                got.content_ns.append(arrived_ns)
                got.pieces.append(value)
            elif kind == LineKind.FINAL:
                got.final, got.final_ns = value, arrived_ns
                break
            elif kind not in (LineKind.CONTENT, LineKind.SKIP):
                raise AssertionError(f"reference path expects a clean stream, got {kind}: {value}")
    record = TrialRecord(status="ok")
    _fill_timings(record, sent_ns, got, fmt)
    return record


def old_and_new(base_url: str, cell: Cell, prompt: str, fmt: StreamFormat,
                reps: int) -> tuple[list[TrialRecord], list[TrialRecord]]:
    """``reps`` calls on each path, alternating, each path on its own client kept across its calls."""
    loop = asyncio.new_event_loop()
    stream_client = loop.run_until_complete(_open(base_url))
    target = Target(stream_client, fmt, 60.0)
    old, new = [], []
    try:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for _ in range(reps):
                old.append(measure_sync(client, cell, prompt, fmt))
                new.append(loop.run_until_complete(measure_call(target, cell, prompt, TrialRecord())))
    finally:
        loop.run_until_complete(stream_client.aclose())
        loop.close()
    return old, new


async def _open(base_url: str) -> StreamClient:
    return StreamClient(base_url)   # made inside the loop it is used from
