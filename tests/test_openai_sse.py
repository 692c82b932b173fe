"""The OpenAI stream format: SSE line meanings, usage/timings → columns, the option mapping and its refusals."""

from __future__ import annotations

import json

import pytest

from sweep.backends import openai as sse
from sweep.backends.kinds import KINDS
from sweep.cells import Cell, ConfigError, Prompt


def _data(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode()


def _cell(endpoint: str = "chat", system: str | None = None, **options) -> Cell:
    return Cell(preset="chimera", model="m", backend="openai", base_url="http://h/v1", options=options,
                workload="w", prompts=(Prompt("0", "p"),), system=system, endpoint=endpoint, keep_alive=None)


@pytest.mark.parametrize("line, kind, value", [
    (_data({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}), "content", "Hi"),
    (_data({"choices": [{"index": 0, "text": " there", "finish_reason": None}]}), "content", " there"),
    (_data({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}), "skip", None),
    (b"data: [DONE]", "final", {}),
    (b"data: [DONE]\r", "final", {}),
    (b"", "skip", None),
    (b": keep-alive", "skip", None),
    (b"event: message", "skip", None),
    (_data({"error": {"message": "out of memory", "type": "server_error"}}), "error", "out of memory"),
    (_data({"object": "error", "message": "bad things"}), "error", "bad things"),
    (b"data: {not json", "bad", None),
    (b"<html>oops</html>", "bad", None),
])
def test_interpret(line: bytes, kind: str, value) -> None:
    got_kind, got_value = sse.OPENAI.interpret(line)
    assert got_kind == kind
    if value is not None:
        assert got_value == value
    assert sse.OPENAI.interpret(line.decode())[0] == kind  # str lines too


def test_finish_and_usage_chunks_are_kept_not_stamped() -> None:
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 32, "total_tokens": 41},
             "timings": {"prompt_n": 9, "prompt_ms": 12.5, "predicted_n": 32, "predicted_ms": 640.0,
                         "predicted_per_second": 50.0, "cache_n": 0}}
    assert sse.OPENAI.interpret(_data(finish)) == ("meta", finish)
    assert sse.OPENAI.interpret(_data(usage)) == ("meta", usage)
    fields = sse.OPENAI.server_fields({}, [finish, usage])
    assert fields == {"prompt_eval_count": 9, "eval_count": 32, "prompt_eval_duration_ms": 12.5,
                      "eval_duration_ms": 640.0, "done_reason": "length", "throughput_tok_s": 50.0}


def test_server_without_timings_leaves_timing_columns_null() -> None:
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}
    assert sse.OPENAI.server_fields({}, [usage]) == {"prompt_eval_count": 5, "eval_count": 7}
    assert sse.OPENAI.server_fields({}, []) == {}


def test_request_maps_options_in_one_place() -> None:
    cell = _cell("chat", system="be brief", temperature=0.5, top_p=0.9, top_k=40, seed=3, num_predict=64,
                 repeat_penalty=1.1)
    path, body = sse.OPENAI.request(cell, "hello")
    assert path == "/chat/completions"
    assert body == {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.5,
                    "top_p": 0.9, "top_k": 40, "seed": 3, "max_tokens": 64, "repeat_penalty": 1.1,
                    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]}
    path, body = sse.OPENAI.request(_cell("completions", num_predict=-1), "hello")
    assert path == "/completions" and body["prompt"] == "hello" and "max_tokens" not in body
    assert sse.OPENAI.request(_cell("generate"), "x")[0] == "/completions"


def test_llama_server_body_leaves_load_time_options_to_flags() -> None:
    _, body = sse.OPENAI.request(_cell("chat", num_ctx=512, num_thread=2, temperature=0.0), "hi")
    assert "num_ctx" not in body and "num_thread" not in body and body["temperature"] == 0.0


@pytest.mark.parametrize("kind, options, kwargs, fragment", [
    ("openai", {"num_ctx": 512}, {}, "option num_ctx cannot be sent to backend=openai"),
    ("openai", {"num_gpu": 80}, {}, "use backend=llama_server"),
    ("openai", {}, {"keep_alive": "0"}, "backend.keep_alive cannot be sent to backend=openai"),
    ("openai", {}, {"endpoint": "embeddings"}, "invalid workload.endpoint 'embeddings'"),
    ("llama_server", {}, {"system": "s", "endpoint": "completions"}, "workload.system needs workload.endpoint=chat"),
])
def test_unsupported_is_refused_in_one_line(kind, options, kwargs, fragment) -> None:
    args = {"system": None, "endpoint": "chat", "keep_alive": None, **kwargs}
    with pytest.raises(ConfigError) as err:
        KINDS[kind].check(options, **args)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_llama_server_carries_load_time_options() -> None:
    """backend=llama_server accepts the load-time options backend=openai refuses, and carries them as flags."""
    from sweep.backends.llama_server import flags_for

    options = {"num_ctx": 512, "num_gpu": 0, "num_thread": 1, "num_batch": 64, "temperature": 0.1}
    args = {"system": None, "endpoint": "chat", "keep_alive": None}
    assert KINDS["llama_server"].check(options, **args) is None             # accepted: no error
    with pytest.raises(ConfigError, match="num_batch cannot be sent to backend=openai"):
        KINDS["openai"].check(options, **args)                              # the same cell, refused
    # carried: each load-time option becomes llama-server's flag, the per-request one stays in the body
    assert flags_for(options) == ("-c", "512", "-ngl", "0", "-t", "1", "-b", "64", "-ub", "64", "-np", "1")
    _, body = sse.OPENAI.request(_cell("chat", **options), "hi")
    assert body["temperature"] == 0.1 and not {"num_ctx", "num_gpu", "num_thread", "num_batch"} & set(body)


def test_every_load_time_option_has_a_llama_server_flag() -> None:
    from sweep.backends.llama_server import FLAGS, flags_for
    from sweep.cells import LOAD_TIME_OPTIONS

    assert set(FLAGS) == set(LOAD_TIME_OPTIONS)
    assert flags_for({"num_ctx": 512, "num_thread": 2, "num_batch": 64, "temperature": 0.5}) == (
        "-c", "512", "-t", "2", "-b", "64", "-ub", "64", "-np", "1")
    # backend.parallel=2: two slots, and num_ctx stays each request's context (llama-server splits -c over slots)
    assert flags_for({"num_ctx": 512}, parallel=2) == ("-c", "1024", "-np", "2")
    assert flags_for({}, parallel=3) == ("-np", "3")
