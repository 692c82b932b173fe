"""Measure one trial: one streamed request → one :class:`TrialRecord`.

The stream loop only stamps lines and asks :func:`_interpret` what each means;
the maths (TTFT, inter-token latency, rates) happens after the stream is done,
so nothing slow sits between two token arrivals.  Every failure becomes a
status on the record; nothing here raises for a bad server.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from sweep.ollama import OllamaClient, error_text
from sweep.plan import Cell, TrialSpec
from sweep.contract import TRANSIENT_STATUSES, Status, TrialRecord, utc_now  # noqa: F401

NS_PER_MS = 1_000_000


def request_body(cell: Cell, prompt: str, *, stream: bool = True) -> dict[str, Any]:
    """The JSON body Ollama expects; only set options are sent."""
    body: dict[str, Any] = {"model": cell.model, "stream": stream}
    if cell.options:
        body["options"] = dict(cell.options)
    if cell.keep_alive is not None:
        ka = cell.keep_alive
        body["keep_alive"] = int(ka) if str(ka).lstrip("-").isdigit() else ka
    if cell.endpoint == "chat":
        messages = [{"role": "system", "content": cell.system}] if cell.system else []
        messages.append({"role": "user", "content": prompt})
        body["messages"] = messages
    else:
        body["prompt"] = prompt
        if cell.system:
            body["system"] = cell.system
    return body


@dataclass
class _Stream:
    """What the loop collected: arrival stamps of content chunks, text, final chunk."""

    content_ns: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None
    final_ns: int | None = None
    status: Status = Status.OK
    http_status: int | None = None
    error: str | None = None


def _interpret(line: str) -> tuple[str, Any]:
    """Classify one NDJSON line: ('content', text) | ('final', obj) | ('error', text) | ('bad', text)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return "bad", f"malformed NDJSON line: {line[:200]!r}"
    if not isinstance(obj, dict):
        return "bad", f"malformed NDJSON line: {line[:200]!r}"
    if "error" in obj:
        return "error", str(obj["error"])
    if obj.get("done") is True:
        return "final", obj
    message = obj.get("message")
    text = message.get("content", "") if isinstance(message, dict) else obj.get("response", "")
    return "content", text if isinstance(text, str) else ""


def _read_stream(lines: Any, deadline_ns: int, got: _Stream) -> None:
    """The hot loop: stamp, classify, stop at the final chunk or the first error."""
    for arrived_ns, line in lines:
        if not line:
            continue
        kind, value = _interpret(line)
        if kind == "content":
            if value:
                got.content_ns.append(arrived_ns)
                got.pieces.append(value)
        elif kind == "final":
            got.final, got.final_ns = value, arrived_ns
            text = value.get("response") or (value.get("message") or {}).get("content") or ""
            if text:  # stream: false puts the whole answer in the final object
                got.pieces.append(text)
            return
        elif kind == "error":
            got.status, got.error = Status.SERVER_ERROR, value
            return
        else:
            got.status, got.error = Status.PROTOCOL_ERROR, value
            return
        if arrived_ns > deadline_ns:
            got.status, got.error = Status.TIMEOUT, "request exceeded backend.request_timeout_s"
            return
    got.status, got.error = Status.PROTOCOL_ERROR, "stream ended without a final chunk (done: true)"


def _classify(exc: httpx.HTTPError, responded: bool) -> Status:
    if isinstance(exc, httpx.ReadTimeout):
        return Status.STALL
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)) or not responded:
        return Status.CONNECT_ERROR
    return Status.PROTOCOL_ERROR


def _ns_to_ms(value: Any) -> float | None:
    return value / NS_PER_MS if isinstance(value, (int, float)) else None


def _fill_timings(record: TrialRecord, sent_ns: int, got: _Stream) -> None:
    """Client-side latencies from the stamps, server timings from the final chunk."""
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
    final = got.final or {}
    record.load_duration_ms = _ns_to_ms(final.get("load_duration"))
    record.prompt_eval_duration_ms = _ns_to_ms(final.get("prompt_eval_duration"))
    record.eval_duration_ms = _ns_to_ms(final.get("eval_duration"))
    record.total_duration_ms = _ns_to_ms(final.get("total_duration"))
    record.prompt_eval_count = final.get("prompt_eval_count")
    record.eval_count = final.get("eval_count")
    record.done_reason = final.get("done_reason")
    if record.eval_count and final.get("eval_duration"):
        record.throughput_tok_s = record.eval_count / (final["eval_duration"] / 1e9)


def measure_trial(client: OllamaClient, cell: Cell, spec: TrialSpec, *,
                  request_timeout_s: float, base: TrialRecord) -> TrialRecord:
    """Send one request and measure it.  ``base`` carries the identity columns."""
    record = TrialRecord(**{**base.__dict__, "trial": spec.trial, "warmup": spec.warmup,
                            "prompt_id": spec.prompt.id, "started_at": utc_now()})
    got = _Stream()
    sent_ns = time.perf_counter_ns()
    responded = False
    try:
        with client.stream(cell.endpoint, request_body(cell, spec.prompt.text)) as start:
            sent_ns = start.sent_ns
            responded = True
            got.http_status = start.status_code
            if start.status_code != 200:
                start.response.read()
                got.status = Status.HTTP_ERROR
                got.error = f"HTTP {start.status_code}: {error_text(start.response)}"
            else:
                _read_stream(start.lines, sent_ns + int(request_timeout_s * 1e9), got)
    except httpx.HTTPError as exc:
        got.status = _classify(exc, responded)
        got.error = f"{type(exc).__name__}: {exc}".strip(": ") or type(exc).__name__
    record.status, record.error, record.http_status = got.status, got.error, got.http_status
    _fill_timings(record, sent_ns, got)
    return record
