"""The measurement path before the async core, kept as a reference to compare figures against.

Blocking ``httpx.Client``, ``iter_lines`` and a stamp per line, as ``sweep/runner.py``
did up to the async core; it shares the pure pieces (the format's request body and
line interpretation, the timing maths) so the only difference is the transport and
the loop.  Used by the old-vs-new test and ``python -m benchmarks runner``; not by sweeps.
"""

from __future__ import annotations

import time

import httpx

from sweep.plan import Cell
from sweep.contract import TrialRecord
from sweep.runner import _fill_timings, _Stream
from sweep.streams import CONTENT, FINAL, SKIP, StreamFormat


def measure_sync(base_url: str, cell: Cell, prompt: str, fmt: StreamFormat) -> TrialRecord:
    """One streamed call, measured the old way (successful calls only: the reference has no fault handling)."""
    path, body = fmt.request(cell, prompt)
    got = _Stream()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        sent_ns = time.perf_counter_ns()
        with client.stream("POST", path, json=body) as response:
            for line in response.iter_lines():
                arrived_ns = time.perf_counter_ns()
                kind, value = fmt.interpret(line)
                if kind == CONTENT and value:
                    got.content_ns.append(arrived_ns)
                    got.pieces.append(value)
                elif kind == FINAL:
                    got.final, got.final_ns = value, arrived_ns
                    break
                elif kind not in (CONTENT, SKIP):
                    raise AssertionError(f"reference path expects a clean stream, got {kind}: {value}")
    record = TrialRecord(status="ok")
    _fill_timings(record, sent_ns, got, fmt)
    return record
