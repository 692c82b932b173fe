"""The embedded server's HTTP API against the real Gemma 3 270M model (no mocks).

Shapes and units follow /work/shared/ollama-api.md: durations in nanoseconds,
one NDJSON line per token, then exactly one final ``done: true`` line.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest

pytest_plugins = ["tests.fixtures_server"]

MODEL = "gemma3:270m"
PROMPT = "Generate a technical report about GPU inference."
FINAL_FIELDS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                "eval_count", "eval_duration")

pytestmark = [pytest.mark.timeout(120), pytest.mark.shares_machine]   # the API's shape, not its speed


def stream(http: httpx.Client, endpoint: str, body: dict[str, Any]) -> tuple[list[tuple[float, dict]], float]:
    """POST and collect (seconds since send, object) per NDJSON line, plus the end time."""
    t0 = time.perf_counter()
    out: list[tuple[float, dict]] = []
    with http.stream("POST", f"/api/{endpoint}", json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        for line in r.iter_lines():
            if line.strip():
                out.append((time.perf_counter() - t0, json.loads(line)))
    return out, time.perf_counter() - t0


def check_final(final: dict[str, Any]) -> None:
    assert final["done"] is True
    assert final["done_reason"] in ("stop", "length")
    for key in FINAL_FIELDS:
        assert isinstance(final[key], int) and final[key] >= 0, key
    # nanoseconds: the parts fit in the whole, and the whole is a plausible wall time
    parts = final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    assert parts <= final["total_duration"]
    assert 1e6 < final["total_duration"] < 120e9
    if final["eval_count"] > 1:
        per_token_s = final["eval_duration"] / (final["eval_count"] - 1) / 1e9
        assert 1e-4 < per_token_s < 2.0, per_token_s


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]{2,}", text)


# ---------------------------------------------------------------- inventory

def test_root_and_head(http: httpx.Client) -> None:
    r = http.get("/")
    assert r.status_code == 200 and r.text == "Ollama is running"
    assert http.head("/").status_code == 200


def test_version_is_ollama_shaped(http: httpx.Client) -> None:
    version = http.get("/api/version").json()["version"]
    assert re.match(r"^\d+\.\d+\.\d+", version)


def test_tags_lists_real_gguf_files(http: httpx.Client) -> None:
    models = {m["name"]: m for m in http.get("/api/tags").json()["models"]}
    m = models[MODEL]
    assert m["model"] == MODEL
    assert m["size"] > 200_000_000  # the 253 MB Q4_K_M file
    assert re.fullmatch(r"[0-9a-f]{64}", m["digest"])
    assert m["modified_at"]
    d = m["details"]
    assert d["format"] == "gguf" and d["family"] == "gemma3" and d["families"] == ["gemma3"]
    assert d["quantization_level"] == "Q4_K_M"
    assert d["parameter_size"].endswith("M")


@pytest.mark.parametrize("key", ["model", "name"])
def test_show_from_gguf_metadata(http: httpx.Client, key: str) -> None:
    r = http.post("/api/show", json={key: MODEL})
    assert r.status_code == 200
    body = r.json()
    info = body["model_info"]
    assert info["general.architecture"] == "gemma3"
    assert info["gemma3.block_count"] == 18
    assert info["gemma3.context_length"] == 32768
    assert body["details"]["quantization_level"] == "Q4_K_M"
    assert "<start_of_turn>" in body["template"]
    assert "num_ctx" in body["parameters"] and "temperature" in body["parameters"]
    assert body["modelfile"].startswith("#") and "FROM " in body["modelfile"]


def test_ps_reports_what_is_loaded(http: httpx.Client) -> None:
    http.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                     "options": {"num_predict": 1, "num_ctx": 1024}})
    models = http.get("/api/ps").json()["models"]
    m = next(x for x in models if x["name"] == MODEL)
    assert m["model"] == MODEL
    assert m["size_vram"] == 0
    assert m["size"] > 200_000_000  # weights plus KV cache, in bytes
    assert m["context_length"] == 1024
    assert re.fullmatch(r"[0-9a-f]{64}", m["digest"])
    assert m["details"]["family"] == "gemma3"
    assert m["expires_at"].startswith("20")


# ---------------------------------------------------------------- generation

def test_generate_stream_order_and_units(http: httpx.Client) -> None:
    lines, _ = stream(http, "generate", {"model": MODEL, "prompt": PROMPT,
                                          "options": {"num_predict": 16, "temperature": 0}})
    objs = [o for _, o in lines]
    *chunks, final = objs
    assert all(c["done"] is False and isinstance(c["response"], str) for c in chunks)
    assert all(c["model"] == MODEL and c["created_at"] for c in objs)
    assert final["response"] == "" and final["model"] == MODEL
    assert sum(o.get("done") is True for o in objs) == 1  # exactly one final, and it is last
    check_final(final)
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 16 == len(chunks)  # one chunk per generated token
    assert final["prompt_eval_count"] == 9  # BOS + 8 text tokens: the whole prompt was evaluated
    assert isinstance(final["context"], list) and len(final["context"]) == 9 + 16


def test_generate_non_stream_is_real_text(http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": MODEL, "prompt": PROMPT, "stream": False,
                                         "options": {"num_predict": 32, "temperature": 0, "seed": 7}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    check_final(body)
    text = body["response"]
    assert len(words(text)) >= 5, text
    letters = sum(ch.isascii() and (ch.isalpha() or ch.isspace()) for ch in text)
    assert letters / max(1, len(text)) > 0.6, text


def test_eval_count_matches_num_predict(http: httpx.Client) -> None:
    for n in (1, 8):
        body = http.post("/api/generate", json={"model": MODEL, "prompt": PROMPT, "stream": False,
                                                "options": {"num_predict": n}}).json()
        if body["done_reason"] == "length":
            assert body["eval_count"] == n
        else:
            assert body["eval_count"] <= n


def test_first_chunk_arrives_long_before_the_last(http: httpx.Client) -> None:
    """Streaming is real: the first token is sent at once, not after the whole answer.

    Judged against the server's own eval_duration, not the wall clock from the send: on a
    loaded machine the prompt and the first token can take most of the time, but a burst
    sent at the end would arrive within milliseconds while decoding took hundreds.
    """
    http.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                     "options": {"num_predict": 1}})  # load with default options
    lines, _ = stream(http, "generate", {"model": MODEL, "prompt": PROMPT,
                                          "options": {"num_predict": 24, "temperature": 0}})
    first_t = lines[0][0]
    final_t = lines[-1][0]
    assert lines[-1][1]["done"] is True
    eval_s = lines[-1][1]["eval_duration"] / 1e9
    assert final_t - first_t > 0.5 * eval_s, (first_t, final_t, eval_s)
    # and the gaps between chunks follow decoding, not one burst at the end
    arrivals = [t for t, _ in lines[:-1]]
    assert arrivals[-1] - arrivals[len(arrivals) // 2] > 0.2 * (final_t - first_t)


def test_same_seed_same_answer(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "stream": False,
            "options": {"num_predict": 12, "temperature": 0.9, "seed": 1234}}
    a = http.post("/api/generate", json=body).json()["response"]
    b = http.post("/api/generate", json=body).json()["response"]
    assert a == b


def test_stop_string_ends_generation(http: httpx.Client) -> None:
    body = http.post("/api/generate", json={"model": MODEL, "prompt": PROMPT, "stream": False,
                                            "options": {"num_predict": 32, "temperature": 0,
                                                        "stop": ["."]}}).json()
    assert "." not in body["response"]
    assert body["done_reason"] == "stop"
    assert body["eval_count"] < 32


def test_chat_stream_uses_gemma_turns(http: httpx.Client) -> None:
    lines, _ = stream(http, "chat", {"model": MODEL, "options": {"num_predict": 16, "temperature": 0},
                                      "messages": [{"role": "system", "content": "Answer briefly."},
                                                   {"role": "user", "content": "What is a GPU?"}]})
    *chunks, final = [o for _, o in lines]
    assert chunks and all(c["message"]["role"] == "assistant" and not c["done"] for c in chunks)
    assert final["done"] is True and final["message"] == {"role": "assistant", "content": ""}
    check_final(final)
    text = "".join(c["message"]["content"] for c in chunks)
    assert "<start_of_turn>" not in text and "<end_of_turn>" not in text
    assert final["prompt_eval_count"] > 10  # the turn markup is part of the prompt


def test_chat_non_stream(http: httpx.Client) -> None:
    r = http.post("/api/chat", json={"model": MODEL, "stream": False, "options": {"num_predict": 8},
                                     "messages": [{"role": "user", "content": "Hello"}]})
    assert r.status_code == 200
    body = r.json()
    assert body["message"]["role"] == "assistant" and isinstance(body["message"]["content"], str)
    check_final(body)


def test_empty_prompt_loads_the_model(http: httpx.Client) -> None:
    body = http.post("/api/generate", json={"model": MODEL, "stream": False}).json()
    assert body["done"] is True and body["done_reason"] == "load"


# ---------------------------------------------------------------- errors

def test_unknown_model_is_404_and_server_keeps_serving(http: httpx.Client) -> None:
    for endpoint, body in [("generate", {"model": "nope:1b", "prompt": "x"}),
                           ("chat", {"model": "nope:1b", "messages": []}),
                           ("show", {"model": "nope:1b"})]:
        r = http.post(f"/api/{endpoint}", json=body)
        assert r.status_code == 404
        assert r.json() == {"error": "model 'nope:1b' not found"}
    assert http.get("/").status_code == 200


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "object"),
        (json.dumps({"prompt": "x"}).encode(), "model is required"),
        (json.dumps({"model": MODEL, "prompt": "x", "options": {"num_ctx": "abc"}}).encode(), "num_ctx"),
        (json.dumps({"model": MODEL, "prompt": "x", "options": {"num_ctx": -5}}).encode(), "num_ctx"),
        (json.dumps({"model": MODEL, "prompt": "x", "options": {"temperature": -0.1}}).encode(), "temperature"),
        (json.dumps({"model": MODEL, "prompt": "x", "options": {"top_k": 1.5}}).encode(), "top_k"),
        (json.dumps({"model": MODEL, "prompt": "x", "options": "fast"}).encode(), "options"),
        (json.dumps({"model": MODEL, "prompt": "x", "keep_alive": "soon"}).encode(), "keep_alive"),
        (json.dumps({"model": MODEL, "prompt": "x", "stream": "yes"}).encode(), "stream"),
    ],
)
def test_bad_requests_are_400(http: httpx.Client, content: bytes, fragment: str) -> None:
    r = http.post("/api/generate", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert fragment in r.json()["error"]
    # the server is still serving real generations afterwards
    ok = http.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                          "options": {"num_predict": 1}})
    assert ok.status_code == 200 and ok.json()["done"] is True


def test_bad_chat_messages_are_400(http: httpx.Client) -> None:
    r = http.post("/api/chat", json={"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]})
    assert r.status_code == 400 and "role" in r.json()["error"]


def test_unknown_options_are_ignored(http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                         "options": {"num_predict": 2, "penalize_newline": True,
                                                     "made_up_option": 3}})
    assert r.status_code == 200 and r.json()["eval_count"] <= 2
