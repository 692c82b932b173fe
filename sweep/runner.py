"""Measure one streamed call: one request → one :class:`TrialRecord`, on aiohttp (:class:`~sweep.backends.http.StreamClient`).

The API for workloads (single prompt, agent workflows, N agents at once)::

    target = Target(StreamClient(url), OLLAMA, request_timeout_s=900)
    record = await measure_call(target, cell, prompt_text, TrialRecord(trial=0, prompt_id="0", ...))
    # several calls at once, in one event loop (one StreamClient per server):
    records = await asyncio.gather(measure_call(t0, cell, p0, r0), measure_call(t1, cell, p1, r1))

``record`` carries the identity columns the caller knows (sweep, cell, trial,
stage…); :func:`measure_call` returns a copy with the request's start time,
status, client timings and the server's own fields.  It never raises for a bad
server: every failure is a status.  Retries, storage and telemetry are the
caller's (:mod:`sweep.execute`).

Hot loop: :func:`_read_stream` iterates the raw body bytes, stamps each network
chunk with ``perf_counter_ns`` when it arrives, splits it into lines and asks the
format (:mod:`sweep.backends.stream`) what each line is.  Text pieces and stamps are
appended to lists; the maths (TTFT, inter-token latency, rates) and the server's
fields come after the stream, in :func:`_fill_timings`.  Nothing that logs,
writes or serialises runs between two token arrivals, so concurrent streams
in one loop cost each other only the microseconds of that loop (measured in
``python -m benchmarks runner``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sweep.backends.http import Failure, StreamClient, TransportError
from sweep.cells import Cell, TrialSpec
from sweep.contract import (Status, TrialRecord, client_overhead_ms, client_ttft_overhead_ms, prompt_tokens_per_s,
                            short_output, utc_now)
from sweep.backends.stream import NS_PER_MS, LineKind, StreamFormat


@dataclass(frozen=True)
class Target:
    """Where and how a call goes: the server's stream client, its wire format, the whole-request limit."""

    client: StreamClient
    fmt: StreamFormat
    request_timeout_s: float = 900.0


@dataclass
class _Stream:
    """What the loop collected: arrival stamps of content chunks, text, kept meta objects, final chunk."""

    content_ns: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    metas: list[Any] = field(default_factory=list)
    final: dict[str, Any] | None = None
    final_ns: int | None = None
    status: Status = Status.OK
    http_status: int | None = None
    error: str | None = None


def _take(line: bytes, arrived_ns: int, fmt: StreamFormat, got: _Stream) -> bool:
    """Keep what one line says; True when reading must stop (final chunk, error, garbage)."""
    kind, value = fmt.interpret(line)
    if kind == LineKind.CONTENT:
        if value:
            got.content_ns.append(arrived_ns)
            got.pieces.append(value)
        return False
    if kind == LineKind.SKIP:
        return False
    if kind == LineKind.META:
        got.metas.append(value)
        return False
    if kind == LineKind.FINAL:
        got.final, got.final_ns = value, arrived_ns
        text = fmt.final_text(value)
        if text:  # e.g. Ollama's stream: false puts the whole answer in the final object
            got.pieces.append(text)
    elif kind == LineKind.ERROR:
        got.status, got.error = Status.SERVER_ERROR, value
    else:
        bad = value if kind == LineKind.BAD else f"unknown line kind {kind!r}"
        got.status, got.error = Status.PROTOCOL_ERROR, bad
    return True


async def _read_stream(chunks: AsyncIterator[bytes], fmt: StreamFormat, deadline_ns: int, got: _Stream) -> None:
    """The hot loop: stamp each chunk at arrival, split lines, classify, stop at the final line or an error."""
    tail = b""
    async for chunk in chunks:
        arrived_ns = time.perf_counter_ns()
        lines = (tail + chunk).split(b"\n") if tail else chunk.split(b"\n")
        tail = lines.pop()
        for line in lines:
            if _take(line, arrived_ns, fmt, got):
                return
        if arrived_ns > deadline_ns:
            got.status, got.error = Status.TIMEOUT, "request exceeded backend.request_timeout_s"
            return
    if tail and _take(tail, time.perf_counter_ns(), fmt, got):  # a last line without its newline
        return
    got.status, got.error = Status.PROTOCOL_ERROR, f"stream ended without a final chunk ({fmt.name})"


# A silence is a stall; no connection or no answer is a connect error; a broken answer is a protocol error.
# Whether the response head had come is the client's call (:meth:`StreamClient.stream` raises CONNECT before it).
_STATUS_OF = {Failure.STALL: Status.STALL, Failure.CONNECT: Status.CONNECT_ERROR}


def _fill_timings(record: TrialRecord, sent_ns: int, got: _Stream, fmt: StreamFormat) -> None:
    """Client-side latencies from the stamps, the server's own fields from the final chunk."""
    stamps = got.content_ns
    if stamps:
        record.ttft_ms = (stamps[0] - sent_ns) / NS_PER_MS
    if len(stamps) >= 2:
        gaps = np.diff(np.asarray(stamps, dtype=np.int64)) / NS_PER_MS
        record.itl_ms_mean = float(gaps.mean())
        record.itl_ms_p50 = float(np.percentile(gaps, 50))
        record.itl_ms_p99 = float(np.percentile(gaps, 99))
        span_s = (stamps[-1] - stamps[0]) / 1e9
        record.client_tok_s = (len(stamps) - 1) / span_s if span_s > 0 else None
    record.content_chunks = len(stamps)
    record.response = "".join(got.pieces)
    if got.final_ns is not None:
        record.e2e_ms = (got.final_ns - sent_ns) / NS_PER_MS
    for name, value in fmt.server_fields(got.final, got.metas).items():
        setattr(record, name, value)
    _client_share(record)
    record.prompt_tokens_per_s = prompt_tokens_per_s(record.prompt_eval_count, record.prompt_eval_duration_ms)


def _client_share(record: TrialRecord) -> None:
    """What of e2e and TTFT the server did not account for: our client, the HTTP stack, the network.

    Computed once here, from the stamps and the server's durations of this very
    call, so the analysis reads it instead of re-deriving it; null when the
    server sent no timings (an OpenAI-compatible server, a failed call).
    """
    record.client_overhead_ms = client_overhead_ms(record.e2e_ms, record.total_duration_ms)
    record.client_ttft_overhead_ms = client_ttft_overhead_ms(record.ttft_ms, record.load_duration_ms,
                                                             record.prompt_eval_duration_ms)


async def measure_call(target: Target, cell: Cell, prompt: str, record: TrialRecord,
                       scheduled_ns: int | None = None) -> TrialRecord:
    """Send ``prompt`` as one streamed call of ``cell`` and measure it; ``record`` holds the identity columns.

    ``scheduled_ns`` (a load run's ``perf_counter_ns`` send time): TTFT and e2e count from it, not from the
    actual send, and ``send_delay_ms`` says how late the send was, so a client or server that falls behind
    cannot hide the wait (no coordinated omission).
    """
    record = dataclasses.replace(record, started_at=utc_now())
    fmt = target.fmt
    path, body = fmt.request(cell, prompt)
    got = _Stream()
    sent_ns = time.perf_counter_ns()
    try:
        async with target.client.stream(path, body) as start:
            sent_ns = start.sent_ns
            got.http_status = start.status
            if start.status != 200:
                got.status = Status.HTTP_ERROR
                got.error = f"HTTP {start.status}: {fmt.error_text(await start.body())}"
            else:
                deadline_ns = sent_ns + int(target.request_timeout_s * 1e9)
                # an early stop leaves the body unread: leaving stream() then closes the connection
                await _read_stream(start.chunks(), fmt, deadline_ns, got)
    except TransportError as exc:
        got.status = _STATUS_OF.get(exc.kind, Status.PROTOCOL_ERROR)
        got.error = str(exc)
    record.status, record.error, record.http_status = got.status, got.error, got.http_status
    if scheduled_ns is not None:
        record.send_delay_ms = (sent_ns - scheduled_ns) / NS_PER_MS
    _fill_timings(record, sent_ns if scheduled_ns is None else scheduled_ns, got, fmt)
    if cell.lengths is not None and cell.lengths.max_tokens is not None and got.status == Status.OK:
        record.short_output = short_output(record.eval_count, cell.lengths.max_tokens)
    return record


def measure_trial(base_url: str, cell: Cell, spec: TrialSpec, *, fmt: StreamFormat, request_timeout_s: float = 900.0,
                  stall_timeout_s: float = 120.0, connect_timeout_s: float = 10.0,
                  base: TrialRecord | None = None) -> TrialRecord:
    """One call from synchronous code (benchmarks, tests): its own event loop and client, same path."""
    record = dataclasses.replace(base or TrialRecord(), trial=spec.trial, warmup=spec.warmup,
                                 prompt_id=spec.prompt.id)

    async def once() -> TrialRecord:
        async with StreamClient(base_url, connect_timeout_s=connect_timeout_s,
                                stall_timeout_s=stall_timeout_s) as client:
            return await measure_call(Target(client, fmt, request_timeout_s), cell, spec.prompt.text, record)

    return asyncio.run(once())
