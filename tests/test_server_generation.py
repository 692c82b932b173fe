"""The engine's low-level generation loop against llama-cpp-python's own ``Llama.generate`` (real models).

Why against ``Llama.generate``: the engine used it until the loop was rewritten on
llama.cpp's low-level API for speed; the rewrite must not change a single token.
So each test runs the same request through the engine (in-process, no HTTP) and
through ``Llama.generate`` with the same load-time parameters, sampling options
and stop rule, and compares token ids.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

from sweep.server.engine import Done, Engine, Job, load_llama
from sweep.server.models import default_registry
from sweep.server.options import parse_options
from sweep.server.templates import generate_prompt
from tests.fixtures_server import require

PROMPT = "Generate a technical report about GPU inference."
MODELS = ("gemma3:270m", "smollm2:135m")

pytestmark = [pytest.mark.timeout(300), pytest.mark.shares_machine]   # tokens, not speed


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    eng = Engine(default_registry())
    try:
        yield eng
    finally:
        eng.shutdown()


def _entry(model: str) -> Any:
    try:
        return default_registry().get(model)
    except KeyError:
        require(False, f"model {model} is not installed")


def run_engine(engine: Engine, model: str, options: dict[str, Any], prompt: str = PROMPT) -> tuple[list[Any], Done]:
    entry = _entry(model)
    load, sampling = parse_options(options)
    events: list[Any] = []
    engine.run(Job(entry=entry, load=load, sampling=sampling,
                   prompt=generate_prompt(entry, prompt, None, None, False)), events.append)
    assert isinstance(events[-1], Done)
    return events[:-1], events[-1]


def reference(model: str, options: dict[str, Any], prompt: str = PROMPT) -> tuple[list[int], list[int]]:
    """(prompt tokens, generated tokens) from llama-cpp-python's Llama.generate, as the engine used it before."""
    import llama_cpp

    entry = _entry(model)
    load, s = parse_options(options)
    llm = load_llama(str(entry.path), load)
    try:
        tokens = llm.tokenize(generate_prompt(entry, prompt, None, None, False).encode(), add_bos=True, special=True)
        llm.set_seed(s.seed & 0xFFFFFFFF if s.seed >= 0 else 0xFFFFFFFF)
        llm.last_n_tokens_size = load.n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        out: list[int] = []
        for tok in llm.generate(tokens, temp=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
                                typical_p=s.typical_p, repeat_penalty=s.repeat_penalty,
                                presence_penalty=s.presence_penalty, frequency_penalty=s.frequency_penalty,
                                mirostat_mode=s.mirostat, mirostat_tau=s.mirostat_tau,
                                mirostat_eta=s.mirostat_eta, reset=True):
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                break
            out.append(tok)
            if len(out) >= s.num_predict:
                break
        return tokens, out
    finally:
        llm.close()


def generated(done: Done, prompt_tokens: list[int]) -> list[int]:
    assert done.context[:len(prompt_tokens)] == prompt_tokens
    return done.context[len(prompt_tokens):]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("options", [
    {},  # the defaults: repeat_penalty 1.1 over the last 64 tokens
    {"repeat_penalty": 1.0},
    {"repeat_penalty": 1.3, "repeat_last_n": 8, "frequency_penalty": 0.5, "presence_penalty": 0.3},
], ids=["default-penalty", "no-penalty", "all-penalties"])
def test_greedy_tokens_identical_to_llama_generate(engine: Engine, model: str, options: dict[str, Any]) -> None:
    opts = {"temperature": 0, "num_predict": 48, **options}
    prompt_tokens, expected = reference(model, opts)
    pieces, done = run_engine(engine, model, opts)
    assert generated(done, prompt_tokens) == expected
    assert done.eval_count == len(expected)
    assert 1 <= done.prompt_eval_count <= len(prompt_tokens)  # fewer when SmolLM2 reuses a cached prefix
    assert len(pieces) == len(expected)  # one event per token, streamed as it is sampled


@pytest.mark.parametrize("model", MODELS)
def test_seeded_sampling_reproducible_and_as_before(engine: Engine, model: str) -> None:
    opts = {"temperature": 0.9, "top_k": 20, "top_p": 0.8, "seed": 1234, "num_predict": 32}
    prompt_tokens, expected = reference(model, opts)
    first = generated(run_engine(engine, model, opts)[1], prompt_tokens)
    second = generated(run_engine(engine, model, opts)[1], prompt_tokens)
    assert first == second == expected
    other = generated(run_engine(engine, model, {**opts, "seed": 99})[1], prompt_tokens)
    assert other != first  # the seed is really used (32 tokens at temperature 0.9 do not repeat by chance)


def test_stop_string_cuts_text_before_it(engine: Engine) -> None:
    full_pieces, full = run_engine(engine, "gemma3:270m", {"temperature": 0, "num_predict": 32})
    full_text = "".join(p.text for p in full_pieces)
    assert "." in full_text
    pieces, done = run_engine(engine, "gemma3:270m", {"temperature": 0, "num_predict": 32, "stop": ["."]})
    text = "".join(p.text for p in pieces)
    assert done.done_reason == "stop"
    assert text == full_text[:full_text.index(".")]
    assert done.eval_count < full.eval_count


@pytest.mark.parametrize("n", [1, 5, 17])
def test_num_predict_is_the_token_count(engine: Engine, n: int) -> None:
    pieces, done = run_engine(engine, "smollm2:135m", {"temperature": 0, "num_predict": n})
    assert done.done_reason == "length" and done.eval_count == n and len(pieces) == n
    assert done.eval_duration > 0 or n == 1
    assert done.prompt_eval_duration > 0


def test_cached_prompt_prefix_is_reused_with_the_same_answer(engine: Engine) -> None:
    """SmolLM2 (no sliding window): a repeated prompt evaluates only its last token and answers the same."""
    opts = {"temperature": 0, "num_predict": 24}
    _, first = run_engine(engine, "smollm2:135m", {**opts, "num_predict": 3}, prompt="Something else entirely.")
    _, a = run_engine(engine, "smollm2:135m", opts)
    _, b = run_engine(engine, "smollm2:135m", opts)
    assert a.context == b.context
    assert a.prompt_eval_count > 1 and b.prompt_eval_count == 1


@pytest.mark.parametrize("threads", [1, 2])
def test_num_thread_reaches_llama_cpp_for_decode_and_prompt(engine: Engine, threads: int) -> None:
    """num_thread sets both of llama.cpp's thread counts (n_threads: decode, n_threads_batch: prompt)."""
    import llama_cpp

    run_engine(engine, "gemma3:270m", {"temperature": 0, "num_predict": 2, "num_thread": threads})
    (info,) = [i for i in engine.loaded() if i.entry.name == "gemma3:270m"]
    assert info.load.n_threads == threads
    ctx = engine._slots["gemma3:270m"].llama.ctx
    assert llama_cpp.llama_n_threads(ctx) == threads and llama_cpp.llama_n_threads_batch(ctx) == threads
