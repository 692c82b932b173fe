"""backend=openai through the real runner: SSE against the loopback stand-in, and a sweep against our embedded server.

The stand-in writes SSE as OpenAI-compatible servers do (role chunk, one chunk
per token, a finish chunk, a usage-only chunk with llama.cpp ``timings``,
``data: [DONE]``), with scripted faults, so every status is checked over a real
socket.  The last test measures the real engine through its /v1 routes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.backends.openai import OPENAI
from sweep.cells import Cell, TrialSpec
from sweep.contract import TrialRecord
from sweep.runner import measure_trial
from tests import cells
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import run_sweep, trials_of

TOKENS = ["Hello", " world", ",", " this", " is", " a", " test", "."]


def make_cell(endpoint: str = "chat", **options: object) -> Cell:
    return cells.make_cell(endpoint=endpoint, backend="openai", **options)


def measure(standin: StandIn, cell: Cell | None = None) -> TrialRecord:
    cell = cell or make_cell()
    return measure_trial(standin.base_url + "/v1", cell, TrialSpec(0, cell.prompts[0], False), fmt=OPENAI,
                         request_timeout_s=30, stall_timeout_s=2.0)


@pytest.mark.parametrize("endpoint, path", [("chat", "/v1/chat/completions"), ("completions", "/v1/completions")])
def test_stream_chunks_usage_only_final_chunk_and_done(standin: StandIn, endpoint: str, path: str) -> None:
    standin.default = Script(first_token_delay_s=0.2, token_interval_s=0.03)
    record = measure(standin, make_cell(endpoint, num_predict=64, temperature=0.5, top_k=40))
    assert record.status == "ok" and record.error is None
    assert record.response == "".join(TOKENS) and record.content_chunks == len(TOKENS)
    sent = standin.sent[-1]                                    # when the chunks actually left the stand-in
    assert sent.ttft_ms >= 200 and len(sent.content_ns) == len(TOKENS)   # scripted 200 ms: never early
    sent.check(record)                                         # TTFT, ITL, client tok/s, e2e against the stamps
    assert (record.prompt_eval_count, record.eval_count) == (12, 8)           # usage
    assert (record.prompt_eval_duration_ms, record.eval_duration_ms) == (40.0, 400.0)  # llama.cpp timings
    assert record.throughput_tok_s == pytest.approx(20.0) and record.done_reason == "stop"
    sent = standin.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert (sent["max_tokens"], sent["temperature"], sent["top_k"]) == (64, 0.5, 40)
    assert ("messages" in sent) == (endpoint == "chat") and ("prompt" in sent) == (endpoint != "chat")


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_empty_text_chunk_is_not_the_first_token(standin: StandIn, endpoint: str) -> None:
    """SSE chunks with empty text before the first token are not token arrivals: TTFT is the first real token's."""
    standin.default = Script(empty_lines=2, first_token_delay_s=0.3)
    record = measure(standin, make_cell(endpoint))
    sent = standin.sent[-1]                          # the empty chunks left at ~0 ms, the first token at ≥ 300 ms
    assert record.status == "ok" and sent.ttft_ms >= 300
    assert record.ttft_ms >= sent.ttft_ms            # stamping an empty chunk would make it ~0 ms
    sent.check(record)
    assert record.content_chunks == len(TOKENS) and record.response == "".join(TOKENS)


def test_server_without_usage_or_timings_leaves_columns_null(standin: StandIn) -> None:
    standin.default = Script(usage_chunk=False, finish_on_last_token=True)
    record = measure(standin)
    assert record.status == "ok" and record.response == "".join(TOKENS)
    assert record.eval_count is None and record.eval_duration_ms is None and record.throughput_tok_s is None
    assert record.done_reason is None and record.ttft_ms > 0


@pytest.mark.parametrize("fault, status, fragment", [
    ("error_line", "server_error", "the model crashed: out of memory"),
    ("garbage_line", "protocol_error", "malformed SSE data"),
    ("kill_mid_stream", "protocol_error", ""),
    ("no_final_chunk", "protocol_error", "stream ended without a final chunk (openai)"),
    ("http_500", "http_error", "HTTP 500: llama runner process has terminated"),
    ("http_404", "http_error", "HTTP 404: model 'gemma3:latest' not found"),
])
def test_faults_become_the_same_statuses(standin: StandIn, fault: str, status: str, fragment: str) -> None:
    standin.default = Script(fault=fault, fault_after=3)
    record = measure(standin)
    assert record.status == status, record.error
    assert fragment in (record.error or "")
    if fault in ("error_line", "garbage_line", "kill_mid_stream"):
        assert record.content_chunks == 3 and record.response == "".join(TOKENS[:3])


def test_sweep_on_openai_backend_sends_key_and_stores_rows(standin: StandIn, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-stored-7c1")
    result = run_sweep("backend=openai", f"backend.base_url={standin.base_url}/v1", "model=gemma3",
                       "chimera=baseline", "chimera.temperature=0.2", "chimera.num_predict=32", "trials=2",
                       "warmup=0", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    df = trials_of(tmp_path)
    assert list(df["status"]) == ["ok", "ok"] and set(df["backend"]) == {"openai"}
    assert (df["eval_count"] == 8).all() and (df["response"] == "".join(TOKENS)).all()
    assert standin.request_headers[-1]["Authorization"] == "Bearer sk-never-stored-7c1"
    assert standin.requests[-1]["max_tokens"] == 32
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or b"sk-never-stored-7c1" not in path.read_bytes()


def test_unsupported_option_refused_in_one_line(tmp_path: Path) -> None:
    result = run_sweep("backend=openai", "backend.base_url=http://127.0.0.1:9/v1", "chimera=baseline", "chimera.num_ctx=512",
                       f"output_root={tmp_path}")
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "option num_ctx cannot be sent to backend=openai" in lines[0], result.stderr
    assert not tmp_path.exists() or not any(tmp_path.rglob("*.parquet"))


def test_missing_model_is_one_line(standin: StandIn, tmp_path: Path) -> None:
    result = run_sweep("backend=openai", f"backend.base_url={standin.base_url}/v1", "model.name=nope",
                       "chimera=baseline", f"output_root={tmp_path}")
    assert result.returncode == 2
    assert "model 'nope' is not served by" in result.stderr and "gemma3:latest" in result.stderr


@pytest.mark.timeout(300)
@pytest.mark.shares_machine   # the rows an OpenAI stream gives, not speed
def test_sweep_on_openai_backend_against_the_embedded_server(embedded_server, tmp_path: Path) -> None:
    result = run_sweep("backend=openai", f"backend.base_url={embedded_server.base_url}/v1", "model=gemma3_270m",
                       "chimera=baseline", "chimera.num_predict=16", "chimera.temperature=0", "trials=2",
                       "warmup=1", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    df = trials_of(tmp_path)
    measured = df[~df["warmup"]]
    assert list(measured["status"]) == ["ok", "ok"]
    assert (measured["eval_count"] == 16).all() and (measured["eval_duration_ms"] > 0).all()
    assert (measured["ttft_ms"] > 0).all() and measured["response"].str.contains(r"[A-Za-z]{3}").all()
