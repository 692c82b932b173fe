"""The async measurement core: same figures as the old blocking path, concurrent calls, the format interface."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from sweep.backends.http import StreamClient
from sweep.cells import ConfigError
from sweep.contract import TrialRecord
from sweep.runner import Target, _read_stream, _Stream, measure_call
from sweep.backends.kinds import format_for
from sweep.backends.ollama import OLLAMA
from sweep.backends.stream import LineKind, StreamFormat
from tests.cells import make_cell
from sweep.testing.standin import DELIVERY_SLACK_MS, Script, StandIn
from sweep.testing.sync_reference import old_and_new


@pytest.mark.slow   # paced streams: seconds of real waiting
def test_old_and_new_path_give_the_same_figures_on_the_paced_standin(standin: StandIn) -> None:
    """Alternate old (blocking) and new (async) calls; their TTFT, ITL and tok/s agree and match the script."""
    standin.default = Script(tokens=["t"] * 21, first_token_delay_s=0.08, token_interval_s=0.03)
    old, new = old_and_new(standin.base_url, make_cell(), "x", OLLAMA, reps=6)
    old, new = old[1:], new[1:]   # the first call of each path opens its connection
    assert all(r.status == "ok" and r.content_chunks == 21 for r in old + new)

    def median(records: list[TrialRecord], name: str) -> float:
        return statistics.median(getattr(r, name) for r in records)

    # both paths see what the stand-in actually sent (calls alternate old, new, old, ...; the first of each dropped)
    for records, stamps in ((old, standin.sent[0::2][1:]), (new, standin.sent[1::2][1:])):
        assert len(stamps) == len(records) == 5
        for record, sent in zip(records, stamps):
            assert sent.ttft_ms >= 80       # the script's 80 ms: never early
            sent.check(record)
    # TTFT is one gap, not an average of 20: on a loaded 2-core machine it varies by a few ms either way
    assert median(new, "ttft_ms") == pytest.approx(median(old, "ttft_ms"), abs=30)
    assert median(new, "itl_ms_mean") == pytest.approx(median(old, "itl_ms_mean"), abs=2)
    assert median(new, "itl_ms_p50") == pytest.approx(median(old, "itl_ms_p50"), abs=2)
    assert median(new, "client_tok_s") == pytest.approx(median(old, "client_tok_s"), rel=0.06)
    assert [r.throughput_tok_s for r in new] == [r.throughput_tok_s for r in old]   # the server's own figure


def test_concurrent_calls_in_one_loop_stream_at_the_same_time(standin: StandIn) -> None:
    """Four calls at once through one client: all complete, each keeps its own pace, and they interleave."""
    standin.default = Script(tokens=["a"] * 10, first_token_delay_s=0.05, token_interval_s=0.04)
    cell = make_cell()

    async def run() -> list[TrialRecord]:
        async with StreamClient(standin.base_url) as client:
            target = Target(client, OLLAMA, 30.0)
            return await asyncio.gather(*(measure_call(target, cell, f"p{i}", TrialRecord(trial=i))
                                          for i in range(4)))

    records = asyncio.run(run())
    assert [r.trial for r in records] == [0, 1, 2, 3] and all(r.status == "ok" for r in records)
    assert all(r.content_chunks == 10 for r in records)
    assert sorted(b["prompt"] for b in standin.requests) == ["p0", "p1", "p2", "p3"]
    # each keeps its own pace, checked against when its chunks actually left the stand-in
    sent = {s.request["prompt"]: s for s in standin.sent}
    for r in records:
        stamps = sent[f"p{r.trial}"]
        assert stamps.ttft_ms <= r.ttft_ms and r.e2e_ms >= stamps.last_ms       # causal: cannot flake
        assert r.itl_ms_p50 == pytest.approx(stamps.itl_ms_p50, abs=DELIVERY_SLACK_MS / 4)
    # overlap, checked on what was received: every call started before every other call ended
    for a in records:
        for b in records:
            assert a.started_at < b.started_at + dt.timedelta(milliseconds=b.e2e_ms)


class _Lines(StreamFormat):
    """A test format: `c:text` content, `m:x` meta, `f` final, blank skipped."""

    name = "test"

    def interpret(self, line: bytes | str) -> tuple[LineKind, Any]:
        text = line.decode() if isinstance(line, bytes) else line
        if not text.strip():
            return LineKind.SKIP, None
        if text.startswith("c:"):
            return LineKind.CONTENT, text[2:]
        if text.startswith("m:"):
            return LineKind.META, text[2:]
        return (LineKind.FINAL, {"n": 1}) if text == "f" else (LineKind.BAD, f"bad line {text!r}")

    def server_fields(self, final: dict[str, Any] | None, metas: Sequence[Any]) -> dict[str, Any]:
        return {"eval_count": len(metas), "done_reason": (final or {}).get("n") and "stop"}


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _read(*parts: bytes, fmt: StreamFormat | None = None) -> _Stream:
    got = _Stream()
    asyncio.run(_read_stream(_chunks(*parts), fmt or _Lines(), 2**62, got))
    return got


def test_lines_split_across_and_within_network_chunks() -> None:
    got = _read(b"c:he", b"llo\nc:wor", b"ld\n\nm:usage\nc:!\n", b"f")   # last line without its newline
    assert got.pieces == ["hello", "world", "!"] and got.metas == ["usage"]
    assert got.final == {"n": 1} and got.status == "ok"
    assert got.content_ns[1] == got.content_ns[2]    # two lines in one network chunk share its arrival stamp
    assert got.content_ns[0] < got.content_ns[1]


def test_reading_stops_at_the_final_line_and_reports_garbage() -> None:
    assert _read(b"c:a\nf\nc:never\n").pieces == ["a"]
    bad = _read(b"c:a\nzzz\n")
    assert bad.status == "protocol_error" and "bad line" in bad.error
    cut = _read(b"c:a\nc:b\n")
    assert cut.status == "protocol_error" and "without a final chunk" in cut.error


def test_ollama_format_keeps_blank_and_crlf_lines_harmless() -> None:
    lines = [json.dumps({"response": "x", "done": False}).encode() + b"\r", b"",
             json.dumps({"done": True, "eval_count": 2, "eval_duration": 10**9}).encode()]
    got = _read(b"\n".join(lines) + b"\n", fmt=OLLAMA)
    assert got.pieces == ["x"] and got.status == "ok"
    assert OLLAMA.server_fields(got.final, got.metas)["throughput_tok_s"] == 2.0


def test_unknown_stream_format_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="backend.api=sse2 .*choose one of ollama"):
        format_for(SimpleNamespace(kind="ollama", api="sse2"))
