"""Ollama request options -> validated load-time and sampling parameters.

Why separate: the HTTP layer must reject a bad option with 400 *before* any
work starts, and the engine must be able to compare load-time parameters to
decide whether a reload is needed.  Both get plain frozen dataclasses from here.
Unknown option names are accepted and ignored, as Ollama does.  Which options
exist, their types, ranges and which are load-time come from :mod:`sweep.contract`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from sweep.contract import OPTIONS, Option

# Defaults when a request leaves an option unset (Ollama's documented defaults;
# num_thread unset means llama-cpp-python's own default, half the cores).
DEFAULT_NUM_CTX = 2048
DEFAULT_NUM_BATCH = 512
DEFAULT_NUM_GPU = 0  # this is a CPU build: layers "offloaded" stay on the CPU
DEFAULT_KEEP_ALIVE_S = 300.0

MAX_NUM_CTX = 131072  # guards against a typo allocating tens of GB of KV cache


class OptionError(ValueError):
    """A request option has a wrong type or value (HTTP 400)."""


@dataclass(frozen=True)
class LoadParams:
    """Parameters fixed when llama.cpp loads a model; a change means a reload."""

    n_ctx: int = DEFAULT_NUM_CTX
    n_gpu_layers: int = DEFAULT_NUM_GPU
    n_threads: int | None = None  # None: llama-cpp-python's default
    n_batch: int = DEFAULT_NUM_BATCH
    use_mmap: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation parameters (no reload needed)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int = -1  # -1: random
    num_predict: int = -1  # -1/-2: until the context is full
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False  # keep generating past end-of-generation tokens (llama.cpp's ignore_eos)


# ---------------------------------------------------------------- validators

def _int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise OptionError(f"invalid option '{name}': expected an integer, got {v!r}")
    if isinstance(v, float):
        if not math.isfinite(v) or not v.is_integer():
            raise OptionError(f"invalid option '{name}': expected an integer, got {v!r}")
        v = int(v)
    return v


def _float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise OptionError(f"invalid option '{name}': expected a number, got {v!r}")
    return float(v)


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise OptionError(f"invalid option '{name}': expected true or false, got {v!r}")
    return v


def _stop(name: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise OptionError(f"invalid option '{name}': expected a list of strings, got {v!r}")
    return tuple(s for s in v if s)


_CONVERTERS: dict[type, Callable[[str, Any], Any]] = {int: _int, float: _float, bool: _bool, tuple: _stop}

# Our own guard on top of the contract's range: a typo must not allocate tens of GB of KV cache
# (a real Ollama may allow more, so the sweep does not impose it).
_SERVER_CAPS: dict[str, float] = {"num_ctx": MAX_NUM_CTX}

# Load-time options (sweep.contract.OPTIONS marks them) → LoadParams field; per-request ones keep their name.
_LOAD_FIELDS: dict[str, str] = {
    "num_ctx": "n_ctx", "num_gpu": "n_gpu_layers", "num_thread": "n_threads", "num_batch": "n_batch",
    "use_mmap": "use_mmap",
}


def _validator(option: Option) -> Callable[[str, Any], Any]:
    """Type conversion, then the contract's range (plus our cap), as one check."""
    conv = _CONVERTERS[option.type]
    cap = _SERVER_CAPS.get(option.name)

    def check(name: str, v: Any) -> Any:
        x = conv(name, v)
        if option.type in (int, float):
            problem = option.range_error(x) or (f"must be between {option.lo:g} and {cap:g}" if cap is not None
                                                 and x > cap else None)
            if problem:
                raise OptionError(f"invalid option '{name}': {problem}, got {v!r}")
        return x

    return check


# Ollama option name -> (target field, validator), split by when the option takes effect.
_LOAD_OPTIONS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    o.name: (_LOAD_FIELDS[o.name], _validator(o)) for o in OPTIONS if o.load_time
}
_SAMPLING_OPTIONS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    o.name: (o.name, _validator(o)) for o in OPTIONS if not o.load_time
}

#: Ollama options we accept and ignore (no llama-cpp-python equivalent here).
IGNORED_OPTIONS = frozenset(
    {"num_keep", "penalize_newline", "tfs_z", "numa", "low_vram", "main_gpu", "use_mlock",
     "vocab_only", "f16_kv", "logits_all", "embedding_only", "rope_frequency_base",
     "rope_frequency_scale", "num_gqa", "num_gpu_layers"}
)


def parse_options(
    options: Any, base_load: LoadParams | None = None
) -> tuple[LoadParams, SamplingParams]:
    """Validate an Ollama ``options`` object; raise OptionError (-> 400) on bad input."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise OptionError(f"invalid 'options': expected an object, got {type(options).__name__}")
    load_kw: dict[str, Any] = {}
    samp_kw: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in _LOAD_OPTIONS:
            target, check = _LOAD_OPTIONS[key]
            load_kw[target] = check(key, value)
        elif key in _SAMPLING_OPTIONS:
            target, check = _SAMPLING_OPTIONS[key]
            samp_kw[target] = check(key, value)
    if load_kw.get("n_threads") == 0:  # Ollama: 0 means "let the runtime decide"
        load_kw["n_threads"] = None
    base = base_load or LoadParams()
    load = LoadParams(**{**base.as_dict(), **load_kw})
    return load, SamplingParams(**samp_kw)


_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any, default_s: float = DEFAULT_KEEP_ALIVE_S) -> float:
    """Ollama keep_alive -> seconds (math.inf: forever, 0: unload after the request).

    Accepts a number of seconds, a numeric string, or a Go duration ("5m", "1h30m",
    "0s", "-1m"); negative means forever, as in Ollama.
    """
    if value is None:
        return default_s
    if isinstance(value, bool):
        raise OptionError(f"invalid keep_alive: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            pos, total = 0, 0.0
            for m in _DURATION_RE.finditer(body):
                if m.start() != pos:
                    break
                total += float(m.group(1)) * _UNIT_S[m.group(2)]
                pos = m.end()
            if not body or pos != len(body):
                raise OptionError(f"invalid keep_alive: {value!r} (use seconds or a duration like '5m')")
            seconds = sign * total
    else:
        raise OptionError(f"invalid keep_alive: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        return math.inf
    return seconds


def describe_defaults() -> dict[str, Any]:
    """The defaults, in Ollama option names, for /api/show ``parameters``."""
    s = SamplingParams()
    load = LoadParams()
    return {
        "num_ctx": load.n_ctx,
        "num_batch": load.n_batch,
        "num_gpu": load.n_gpu_layers,
        "temperature": s.temperature,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "typical_p": s.typical_p,
        "repeat_penalty": s.repeat_penalty,
        "repeat_last_n": s.repeat_last_n,
        "seed": s.seed,
        "num_predict": s.num_predict,
    }
