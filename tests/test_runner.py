"""The streaming runner against the scripted stand-in: maths and statuses over a real socket."""

from __future__ import annotations

import pytest

from sweep.cells import Cell, TrialSpec
from sweep.contract import TrialRecord
from sweep.runner import _fill_timings, _Stream, measure_trial
from sweep.backends.ollama import OLLAMA, request_body
from tests.cells import make_cell
from sweep.testing.standin import Script, StandIn


def measure(standin: StandIn, cell: Cell | None = None, stall_timeout_s: float = 2.0,
            request_timeout_s: float = 30.0) -> TrialRecord:
    cell = cell or make_cell()
    return measure_trial(standin.base_url, cell, TrialSpec(0, cell.prompts[0], False), fmt=OLLAMA,
                         request_timeout_s=request_timeout_s, stall_timeout_s=stall_timeout_s)


def test_timing_maths_on_exact_stamps() -> None:
    """TTFT, ITL and rates from known arrival stamps (ns), computed by hand."""
    got = _Stream(content_ns=[50_000_000, 60_000_000, 80_000_000, 110_000_000],
                  pieces=["a", "b", "c", "d"], final_ns=120_000_000,
                  final={"eval_count": 4, "eval_duration": 200_000_000, "load_duration": 3_000_000,
                         "prompt_eval_duration": 7_000_000, "total_duration": 250_000_000,
                         "prompt_eval_count": 9, "done_reason": "stop"})
    record = TrialRecord()
    _fill_timings(record, 0, got, OLLAMA)
    assert record.ttft_ms == 50.0
    assert record.itl_ms_mean == pytest.approx(20.0)          # gaps 10, 20, 30 ms
    assert record.itl_ms_p50 == pytest.approx(20.0)
    assert record.itl_ms_p99 == pytest.approx(29.8)           # linear interpolation 20 + 0.98*10
    assert record.client_tok_s == pytest.approx(3 / 0.060)    # 3 gaps over 60 ms
    assert record.e2e_ms == 120.0
    assert record.throughput_tok_s == pytest.approx(20.0)     # 4 tokens / 0.2 s
    assert (record.load_duration_ms, record.prompt_eval_duration_ms) == (3.0, 7.0)
    assert (record.eval_duration_ms, record.total_duration_ms) == (200.0, 250.0)
    assert record.response == "abcd" and record.content_chunks == 4


def test_streamed_trial_measures_scripted_timings(standin: StandIn) -> None:
    standin.default = Script(tokens=["t"] * 11, first_token_delay_s=0.2, token_interval_s=0.05,
                             eval_count=11, eval_duration=500_000_000)
    record = measure(standin)
    assert record.status == "ok" and record.error is None
    sent = standin.sent[-1]                                   # when the chunks actually left the stand-in
    assert sent.ttft_ms >= 200                                # scripted 200 ms: never early
    sent.check(record)                                        # TTFT, ITL, client tok/s, e2e against the stamps
    assert record.throughput_tok_s == pytest.approx(22.0)     # 11 / 0.5 s, the server's figure
    assert record.eval_count == 11 and record.content_chunks == 11 == len(sent.content_ns)
    assert record.response == "t" * 11 and record.done_reason == "stop"


def test_chat_endpoint_reads_message_content(standin: StandIn) -> None:
    record = measure(standin, make_cell(endpoint="chat"))
    assert record.status == "ok"
    assert record.response == "Hello world, this is a test."
    assert "messages" in standin.requests[-1] and standin.requests[-1]["messages"][-1]["role"] == "user"


@pytest.mark.parametrize("endpoint", ["generate", "chat"])
def test_empty_text_line_is_not_the_first_token(standin: StandIn, endpoint: str) -> None:
    """Lines with empty text before the first token are not token arrivals: TTFT is the first real token's."""
    standin.default = Script(empty_lines=2, first_token_delay_s=0.3)
    record = measure(standin, make_cell(endpoint=endpoint))
    sent = standin.sent[-1]                          # the empty lines left at ~0 ms, the first token at ≥ 300 ms
    assert record.status == "ok" and sent.ttft_ms >= 300
    assert record.ttft_ms >= sent.ttft_ms            # stamping an empty line would make it ~0 ms
    sent.check(record)
    assert record.content_chunks == len(standin.default.tokens) and record.response == "Hello world, this is a test."


def test_only_set_options_are_sent() -> None:
    body = request_body(make_cell(num_ctx=512, temperature=0.8), "hi")
    assert body["options"] == {"num_ctx": 512, "temperature": 0.8}
    assert body["stream"] is True and body["prompt"] == "hi"
    assert "options" not in request_body(make_cell(), "hi")


@pytest.mark.parametrize(("fault", "status", "text"), [
    ("http_500", "http_error", "llama runner process has terminated"),
    ("http_404", "http_error", "not found"),
    ("kill_mid_stream", "protocol_error", ""),
    ("garbage_line", "protocol_error", "malformed NDJSON"),
    ("no_final_chunk", "protocol_error", "without a final chunk"),
    ("error_line", "server_error", "out of memory"),
    ("stall", "stall", "ReadTimeout"),
    ("slow_first_byte", "stall", "ReadTimeout"),
    ("refuse", "connect_error", ""),
])
def test_faults_become_statuses(standin: StandIn, fault: str, status: str, text: str) -> None:
    standin.queue(Script(fault=fault, stall_s=1.5))
    record = measure(standin, stall_timeout_s=0.5)
    assert record.status == status
    assert text in (record.error or "")
    if fault in ("kill_mid_stream", "garbage_line", "no_final_chunk", "error_line"):
        assert record.response == "Hello world,"   # the 3 chunks before the fault are kept
        assert record.ttft_ms is not None


def test_unreachable_port_is_connect_error() -> None:
    with StandIn() as gone:
        url = gone.base_url
    cell = make_cell()
    record = measure_trial(url, cell, TrialSpec(0, cell.prompts[0], False), fmt=OLLAMA,
                           request_timeout_s=5.0, connect_timeout_s=1.0)
    assert record.status == "connect_error" and "ConnectError" in record.error


def test_overall_timeout(standin: StandIn) -> None:
    standin.queue(Script(tokens=["x"] * 30, token_interval_s=0.05))
    record = measure(standin, request_timeout_s=0.4)
    assert record.status == "timeout"
    assert 3 <= record.content_chunks < 30
