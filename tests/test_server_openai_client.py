"""The official ``openai`` Python client against the embedded server's /v1 routes (real engine)."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.fixtures_server import require_module

pytest_plugins = ["tests.fixtures_server"]
pytestmark = [pytest.mark.timeout(120), pytest.mark.shares_machine]   # the client's view, not speed


@pytest.fixture
def openai():
    """The ``openai`` package, imported here and not at collection (~2 s): skip, or fail on CI, if missing."""
    return require_module("openai", 'pip install -e ".[test]"')


@pytest.fixture
def client(embedded_server, openai):
    return openai.OpenAI(base_url=embedded_server.base_url + "/v1", api_key="unused", max_retries=0)


def _words(text: str) -> int:
    return len(re.findall(r"[A-Za-z]{2,}", text))


def test_models_lists_the_builtin_model(client) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gemma3:270m" in ids
    assert client.models.retrieve("gemma3:270m").id == "gemma3:270m"


def test_completion(client) -> None:
    r = client.completions.create(model="gemma3:270m", prompt="Explain what a GPU does.", max_tokens=24,
                                  temperature=0, seed=1)
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 3
    assert _words(choice.text) >= 3, choice.text


def test_chat_completion(client) -> None:
    r = client.chat.completions.create(model="gemma3:270m", max_tokens=32, temperature=0,
                                       messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 32
    assert _words(r.choices[0].message.content) >= 2, r.choices[0].message.content


def test_chat_stream_with_usage_chunk(client) -> None:
    chunks = list(client.chat.completions.create(
        model="gemma3:270m", max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Name three colours."}]))
    text_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None          # usage-only final chunk
    assert finish == ["length"] or finish == ["stop"]
    assert usage.completion_tokens >= len(text_chunks) - 1 and len(text_chunks) >= 1
    assert _words("".join(c.choices[0].delta.content for c in text_chunks)) >= 1


def test_completion_stream_carries_llama_cpp_timings(embedded_server) -> None:
    body = {"model": "gemma3:270m", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", embedded_server.base_url + "/v1/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    usage_chunk = json.loads(lines[-2][len("data: "):])
    timings = usage_chunk["timings"]
    assert usage_chunk["usage"]["completion_tokens"] == timings["predicted_n"] > 0
    assert timings["predicted_ms"] > 0 and timings["prompt_ms"] > 0


def test_errors_in_openai_shape(client, openai) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="gemma3:270m", prompt="hi", temperature=-1)
    assert "temperature" in bad.value.message
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="gemma3:270m", prompt="hi", n=2)
