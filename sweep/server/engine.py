"""llama.cpp wrapper: loads models on demand, generates token by token, measures.

Why this shape: the HTTP layer runs each request's :meth:`Engine.run` in its own
worker thread and receives events through a callback, so generation never
waits for the network (eval time is decode time, not send time) and the
per-model lock is taken and released in one thread.  One generation at a time
per model, like Ollama with ``OLLAMA_NUM_PARALLEL=1``; a change of a load-time
option reloads the model and the reload is what ``load_duration`` measures.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

from .generation import DecodeError, DecodeState, Outcome, StopMatcher, generate_tokens, make_sampler
from .models import ModelEntry, Registry
from .options import DEFAULT_KEEP_ALIVE_S, LoadParams, SamplingParams

log = logging.getLogger("sweep.server.engine")

_FOREVER = _dt.timedelta(days=365 * 292)  # Ollama shows ~year 2318 for "never expires"


class EngineError(RuntimeError):
    """Loading or running the model failed (HTTP 500 or a final error line)."""


# ------------------------------------------------------------------ job/events

@dataclass
class Job:
    """One /api/generate or /api/chat request, validated and ready to run."""

    entry: ModelEntry
    load: LoadParams
    sampling: SamplingParams
    prompt: str | None  # None: only load the model (or unload, with keep_alive 0)
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    context: Sequence[int] = ()  # Ollama's 'context' tokens to continue from
    received_ns: int = field(default_factory=time.perf_counter_ns)
    cancel: threading.Event = field(default_factory=threading.Event)
    cache_prompt: bool = True  # False: evaluate the whole prompt even when the cache holds a prefix of it


@dataclass
class Piece:
    """Text produced by one generated token ('' while a UTF-8 sequence is incomplete)."""

    text: str


@dataclass
class Done:
    """Final statistics; durations in nanoseconds, measured with perf_counter_ns."""

    done_reason: str
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    context: list[int]


Event = Union[Piece, Done]


@dataclass
class LoadedInfo:
    """What /api/ps reports for one loaded model."""

    entry: ModelEntry
    size: int
    context_length: int
    expires_at: _dt.datetime
    load: LoadParams


# ------------------------------------------------------------------ llama

def load_llama(path: str, params: LoadParams) -> Any:
    """Construct the llama-cpp-python model with our load-time parameters."""
    from llama_cpp import Llama

    kwargs: dict[str, Any] = dict(
        n_ctx=params.n_ctx,
        n_batch=params.n_batch,
        n_ubatch=params.n_batch,
        n_gpu_layers=params.n_gpu_layers,
        use_mmap=params.use_mmap,
        verbose=False,
    )
    if params.n_threads:
        kwargs["n_threads"] = params.n_threads
        kwargs["n_threads_batch"] = params.n_threads
    return Llama(path, **kwargs)


def _prefix_reuse_safe(entry: ModelEntry) -> bool:
    """Whether reusing a cached prompt prefix leaves greedy output unchanged.

    Measured: for Gemma 3 (sliding-window attention, llama.cpp's iSWA cache)
    trimming the cache and re-evaluating the suffix changed the temperature-0
    answer; for SmolLM2 (plain attention) the answer was identical.  So the
    prefix cache is only used for models without a sliding window.
    """
    return f"{entry.architecture}.attention.sliding_window" not in entry.header.metadata


def kv_cache_bytes(entry: ModelEntry, n_ctx: int) -> int:
    """f16 K+V cache size for n_ctx positions, from the GGUF's dimensions."""
    md, arch = entry.header.metadata, entry.architecture
    n_layer = int(md.get(f"{arch}.block_count", 0))
    n_head = int(md.get(f"{arch}.attention.head_count", 1) or 1)
    n_head_kv = int(md.get(f"{arch}.attention.head_count_kv", n_head) or n_head)
    n_embd = int(md.get(f"{arch}.embedding_length", 0))
    k_len = int(md.get(f"{arch}.attention.key_length", n_embd // n_head))
    v_len = int(md.get(f"{arch}.attention.value_length", n_embd // n_head))
    return n_layer * n_ctx * n_head_kv * (k_len + v_len) * 2


# ------------------------------------------------------------------ engine

@dataclass
class _Slot:
    """One model's state: its lock (one generation at a time) and the loaded llama."""

    entry: ModelEntry
    lock: threading.Lock = field(default_factory=threading.Lock)
    llama: Any = None
    params: LoadParams | None = None
    n_ctx: int = 0
    size: int = 0
    expires_mono: float = math.inf
    expires_at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))
    last_used: float = 0.0
    state: DecodeState | None = None  # the low-level decode side of llama


class Engine:
    """Loaded models, keyed by registry name."""

    def __init__(
        self,
        registry: Registry,
        max_loaded: int = 3,
        prompt_cache: bool = True,
        reap_interval_s: float = 0.5,
    ) -> None:
        self.registry = registry
        self.max_loaded = max(1, max_loaded)
        self.prompt_cache = prompt_cache
        self._slots: dict[str, _Slot] = {}
        self._vocabs: dict[str, Any] = {}  # model path -> a vocabulary-only Llama (/api/tokenize)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper = threading.Thread(
            target=self._reap_loop, args=(reap_interval_s,), name="keep-alive-reaper", daemon=True
        )
        self._reaper.start()

    # -- bookkeeping ---------------------------------------------------------

    def _slot(self, entry: ModelEntry) -> _Slot:
        with self._lock:
            slot = self._slots.get(entry.name)
            if slot is None or slot.entry.path != entry.path:
                slot = self._slots[entry.name] = _Slot(entry=entry)
            return slot

    def loaded(self) -> list[LoadedInfo]:
        """Models whose weights are in memory right now."""
        with self._lock:
            slots = list(self._slots.values())
        out = []
        for s in slots:
            if s.llama is not None and s.params is not None:
                out.append(LoadedInfo(s.entry, s.size, s.n_ctx, s.expires_at, s.params))
        return out

    def _unload(self, slot: _Slot) -> None:
        """Free the model; caller holds slot.lock."""
        if slot.llama is not None:
            try:
                if slot.state is not None:
                    slot.state.close()
                slot.llama.close()
            except Exception:  # pragma: no cover - freeing must not fail a request
                log.exception("closing %s failed", slot.entry.name)
            slot.llama = None
            slot.params = None
            slot.state = None
            log.info("unloaded %s", slot.entry.name)

    def _make_room(self, keep: _Slot) -> None:
        """Evict least-recently-used idle models beyond max_loaded (Ollama's MAX_LOADED_MODELS)."""
        with self._lock:
            others = [s for s in self._slots.values() if s is not keep and s.llama is not None]
        others.sort(key=lambda s: s.last_used)
        while len(others) >= self.max_loaded:
            victim = others.pop(0)
            if victim.lock.acquire(blocking=False):
                try:
                    self._unload(victim)
                finally:
                    victim.lock.release()

    def _ensure_loaded(self, slot: _Slot, params: LoadParams) -> None:
        if slot.llama is not None and slot.params == params:
            return
        self._unload(slot)
        self._make_room(slot)
        try:
            llm = load_llama(str(slot.entry.path), params)
        except Exception as exc:
            raise EngineError(f"failed to load model '{slot.entry.name}': {exc}") from exc
        import llama_cpp

        slot.llama, slot.params, slot.state = llm, params, DecodeState(llm)
        # llama.cpp rounds the context up (to a multiple of 256) but llama-cpp-python's token
        # buffer holds exactly the requested n_ctx: going past it fails with a numpy
        # broadcast error.  So truncate and stop at the requested size (what Ollama reports
        # too) and count the allocated one only in the memory size.
        allocated = int(llm.n_ctx())
        slot.n_ctx = min(allocated, params.n_ctx)
        slot.size = int(llama_cpp.llama_model_size(llm.model)) + kv_cache_bytes(slot.entry, allocated)
        log.info("loaded %s with %s", slot.entry.name, params)

    def _set_expiry(self, slot: _Slot, keep_alive_s: float) -> None:
        now = _dt.datetime.now(_dt.timezone.utc)
        slot.last_used = time.monotonic()
        if math.isinf(keep_alive_s):
            slot.expires_mono, slot.expires_at = math.inf, now + _FOREVER
        else:
            slot.expires_mono = time.monotonic() + keep_alive_s
            slot.expires_at = now + _dt.timedelta(seconds=keep_alive_s)

    def _reap_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            with self._lock:
                slots = list(self._slots.values())
            now = time.monotonic()
            for s in slots:
                if s.llama is not None and s.expires_mono <= now and s.lock.acquire(blocking=False):
                    try:
                        if s.llama is not None and s.expires_mono <= time.monotonic():
                            self._unload(s)
                    finally:
                        s.lock.release()

    def shutdown(self) -> None:
        """Stop the reaper and free every model (waits for running generations)."""
        self._stop.set()
        with self._lock:
            slots = list(self._slots.values())
        for s in slots:
            with s.lock:
                self._unload(s)

    # -- tokenizer ------------------------------------------------------------

    def tokenize(self, entry: ModelEntry, text: str) -> list[int]:
        """The model's tokens of ``text`` as a prompt's text part (special tokens parsed, no BOS).

        Why a vocabulary-only model: tokenizing must not load (or reload) the weights with some
        load-time options, which would evict the model a sweep is measuring; the vocabulary loads
        once per model file (about a second for Gemma 3's 262 144 entries) and is kept.
        """
        with self._lock:
            vocab = self._vocabs.get(str(entry.path))
        if vocab is None:
            from llama_cpp import Llama

            try:
                vocab = Llama(str(entry.path), vocab_only=True, verbose=False)
            except Exception as exc:
                raise EngineError(f"failed to load the vocabulary of '{entry.name}': {exc}") from exc
            with self._lock:
                vocab = self._vocabs.setdefault(str(entry.path), vocab)
        return list(vocab.tokenize(text.encode(), add_bos=False, special=True)) if text else []

    # -- generation ----------------------------------------------------------

    def run(self, job: Job, emit: Callable[[Event], None]) -> None:
        """Blocking: load if needed, generate, call emit() per token and once with Done."""
        slot = self._slot(job.entry)
        with slot.lock:
            try:
                self._run_locked(slot, job, emit)
            finally:
                if job.keep_alive_s <= 0:
                    self._unload(slot)

    def _run_locked(self, slot: _Slot, job: Job, emit: Callable[[Event], None]) -> None:
        t0 = time.perf_counter_ns()
        if job.prompt is None and job.keep_alive_s <= 0:
            self._unload(slot)  # Ollama's "unload" request: empty prompt with keep_alive 0
            emit(self._done(job, "unload", 0, 0, 0, 0, 0, []))
            return
        self._ensure_loaded(slot, job.load)
        load_ns = time.perf_counter_ns() - t0
        self._set_expiry(slot, job.keep_alive_s)
        if job.prompt is None:
            emit(self._done(job, "load", load_ns, 0, 0, 0, 0, []))
            return
        prompt_tokens = self._prompt_tokens(slot.llama, job, slot.n_ctx)
        if job.sampling.num_predict == 0:
            emit(self._done(job, "length", load_ns, 0, 0, 0, 0, list(prompt_tokens)))
            return
        outcome = self._generate(slot, job, prompt_tokens, emit)
        if outcome is None:  # cancelled: the client is gone, nobody reads a final line
            return
        self._set_expiry(slot, job.keep_alive_s)
        if job.keep_alive_s <= 0:
            self._unload(slot)  # before the final chunk, so /api/ps is empty once it arrives
        emit(self._done(job, outcome.reason, load_ns, outcome.prompt_evaluated, outcome.prompt_ns,
                        len(outcome.generated), outcome.eval_ns, list(prompt_tokens) + outcome.generated))

    def _generate(self, slot: _Slot, job: Job, prompt_tokens: list[int],
                  emit: Callable[[Event], None]) -> Outcome | None:
        """Prefill and the token loop on the slot's decode state; None when cancelled."""
        state, s = slot.state, job.sampling
        assert state is not None
        last_n = slot.n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
        sampler = make_sampler(s, last_n, state.n_vocab)
        try:
            return generate_tokens(state, sampler, prompt_tokens, num_predict=s.num_predict, n_ctx=slot.n_ctx,
                                   stops=s.stop, cancel=job.cancel,
                                   reuse=self.prompt_cache and job.cache_prompt and _prefix_reuse_safe(slot.entry),
                                   on_text=lambda text: emit(Piece(text)), ignore_eos=s.ignore_eos)
        except DecodeError as exc:
            raise EngineError(f"generation failed: {exc}") from exc
        finally:
            sampler.close()

    @staticmethod
    def _prompt_tokens(llm: Any, job: Job, n_ctx: int) -> list[int]:
        """Tokenize (special tokens parsed, BOS as the GGUF asks); keep the end if too long."""
        assert job.prompt is not None
        if job.context:
            tokens = list(job.context) + llm.tokenize(job.prompt.encode(), add_bos=False, special=True)
        else:
            tokens = llm.tokenize(job.prompt.encode(), add_bos=True, special=True)
        if not tokens:
            tokens = [llm.token_bos()]
        if len(tokens) >= n_ctx:  # Ollama truncates from the front too; keep room to answer
            keep = max(1, n_ctx // 2)
            head = tokens[:1] if keep > 1 and tokens[0] == llm.token_bos() else []
            tokens = head + tokens[len(tokens) - (keep - len(head)):]
        return tokens

    @staticmethod
    def _done(job: Job, reason: str, load_ns: int, p_count: int, p_ns: int,
              e_count: int, e_ns: int, context: list[int]) -> Done:
        return Done(
            done_reason=reason,
            total_duration=time.perf_counter_ns() - job.received_ns,
            load_duration=load_ns,
            prompt_eval_count=p_count,
            prompt_eval_duration=p_ns,
            eval_count=e_count,
            eval_duration=e_ns,
            context=context,
        )


def default_max_loaded() -> int:
    """OLLAMA_MAX_LOADED_MODELS if set, else 3 (Ollama's CPU default)."""
    try:
        return int(os.environ.get("OLLAMA_MAX_LOADED_MODELS", "3"))
    except ValueError:
        return 3
