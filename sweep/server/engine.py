"""llama.cpp wrapper: loads models on demand, generates token by token, measures.

Why this shape: the HTTP layer runs each request's :meth:`Engine.run` in its own
worker thread and receives events through a callback, so generation never
waits for the network (eval time is decode time, not send time).  A change of
a load-time option reloads the model and the reload is what ``load_duration``
measures.

Parallel slots (``--parallel N``, Ollama's ``OLLAMA_NUM_PARALLEL``): a loaded
model has N llama.cpp *contexts* on one set of weights (one ``llama_model``,
N ``llama_context``), so up to N requests generate at once, each in its own
worker thread on its own KV cache; request N+1 waits in a first-come queue, as
Ollama queues.  Why a pool of contexts rather than N sequences in one batched
context (what llama-server does): each request keeps the single-sequence decode
loop of :mod:`sweep.server.generation` (same tokens, same stamps, same prefix
cache) and nothing central schedules steps.  The cost: no batching, so each
slot reads the weights for its own decode step (on a memory-bound CPU two slots
gain less than llama-server's batch would), and each slot holds a KV cache of
the full ``num_ctx`` (``num_ctx`` is per slot; llama-server is given
``-c num_ctx*N`` for the same meaning).  The weights are loaded once and shared.
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

from .generation import (DecodeError, DecodeState, Outcome, StopMatcher, common_prefix, generate_tokens,
                         make_sampler)
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
    parallel: int = 1  # generations it serves at once (its contexts)


# ------------------------------------------------------------------ llama

def parallel_from_env(default: int = 1) -> int:
    """``OLLAMA_NUM_PARALLEL`` (Ollama's variable, same meaning) if set, else ``default``.

    A value that is not a whole number >= 1 is a :class:`ValueError` naming the fix, not a silent default:
    a sweep over parallel slots must not measure one slot while believing it measured two.
    """
    raw = os.environ.get("OLLAMA_NUM_PARALLEL", "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"OLLAMA_NUM_PARALLEL={raw!r}: set it to a whole number >= 1, or pass --parallel N")
    return value


def extra_context(llm: Any) -> Any:
    """One more llama.cpp context on ``llm``'s weights (same context parameters), freed before the model."""
    from llama_cpp import _internals

    return _internals.LlamaContext(model=llm._model, params=llm.context_params, verbose=False)


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
    """One model: the loaded llama, one decode state per parallel context, and the queue for them.

    ``cond`` guards every field; ``busy`` counts generations running outside it.
    ``waiting`` is the first-come queue: only its head may take a context or
    (when nothing runs) reload, so request N+1 is served in arrival order.
    """

    entry: ModelEntry
    cond: threading.Condition = field(default_factory=threading.Condition)
    llama: Any = None
    params: LoadParams | None = None
    n_ctx: int = 0
    size: int = 0
    expires_mono: float = math.inf
    expires_at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))
    last_used: float = 0.0
    states: list[DecodeState] = field(default_factory=list)  # one per context: the low-level decode side
    contexts: list[Any] = field(default_factory=list)        # the contexts beyond llama's own
    free: list[DecodeState] = field(default_factory=list)
    busy: int = 0
    waiting: collections.deque[object] = field(default_factory=collections.deque)

    @property
    def state(self) -> DecodeState | None:
        """The first context's decode state (the only one with one slot)."""
        return self.states[0] if self.states else None


class Engine:
    """Loaded models, keyed by registry name."""

    def __init__(
        self,
        registry: Registry,
        max_loaded: int = 3,
        prompt_cache: bool = True,
        reap_interval_s: float = 0.5,
        parallel: int = 1,
    ) -> None:
        self.registry = registry
        self.max_loaded = max(1, max_loaded)
        self.parallel = max(1, parallel)  # generations at once per model (contexts per loaded model)
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
                out.append(LoadedInfo(s.entry, s.size, s.n_ctx, s.expires_at, s.params, len(s.states)))
        return out

    def _unload(self, slot: _Slot) -> None:
        """Free the model; caller holds slot.cond and no generation runs (slot.busy == 0)."""
        if slot.llama is not None:
            try:
                for state in slot.states:
                    state.close()
                for ctx in slot.contexts:
                    ctx.close()
                slot.llama.close()
            except Exception:  # pragma: no cover - freeing must not fail a request
                log.exception("closing %s failed", slot.entry.name)
            slot.llama = None
            slot.params = None
            slot.states, slot.contexts, slot.free = [], [], []
            log.info("unloaded %s", slot.entry.name)

    def _make_room(self, keep: _Slot) -> None:
        """Evict least-recently-used idle models beyond max_loaded (Ollama's MAX_LOADED_MODELS)."""
        with self._lock:
            others = [s for s in self._slots.values() if s is not keep and s.llama is not None]
        others.sort(key=lambda s: s.last_used)
        while len(others) >= self.max_loaded:
            victim = others.pop(0)
            if victim.cond.acquire(blocking=False):
                try:
                    if victim.busy == 0:
                        self._unload(victim)
                finally:
                    victim.cond.release()

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

        try:
            contexts = [extra_context(llm) for _ in range(self.parallel - 1)]
        except Exception as exc:
            llm.close()
            raise EngineError(f"failed to create {self.parallel} contexts for '{slot.entry.name}': {exc}") from exc
        slot.llama, slot.params, slot.contexts = llm, params, contexts
        slot.states = [DecodeState(llm)] + [DecodeState(llm, c.ctx) for c in contexts]
        slot.free = list(slot.states)
        # llama.cpp rounds the context up (to a multiple of 256) but llama-cpp-python's token
        # buffer holds exactly the requested n_ctx: going past it fails with a numpy
        # broadcast error.  So truncate and stop at the requested size (what Ollama reports
        # too) and count the allocated one only in the memory size.
        allocated = int(llm.n_ctx())
        slot.n_ctx = min(allocated, params.n_ctx)
        slot.size = (int(llama_cpp.llama_model_size(llm.model))
                     + kv_cache_bytes(slot.entry, allocated) * len(slot.states))
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
                if s.llama is not None and s.expires_mono <= now and s.cond.acquire(blocking=False):
                    try:
                        if s.llama is not None and s.busy == 0 and s.expires_mono <= time.monotonic():
                            self._unload(s)
                    finally:
                        s.cond.release()

    def shutdown(self) -> None:
        """Stop the reaper and free every model (waits for running generations)."""
        self._stop.set()
        with self._lock:
            slots = list(self._slots.values())
        for s in slots:
            with s.cond:
                s.cond.wait_for(lambda: s.busy == 0)
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
        """Blocking: wait for a free slot (first come, first served), load if needed, generate, emit.

        ``emit()`` is called per token and once with :class:`Done`; nothing is
        emitted for a job cancelled while it waited.
        """
        slot = self._slot(job.entry)
        with slot.cond:
            ticket = object()
            slot.waiting.append(ticket)
            try:
                while not self._may_start(slot, job, ticket):
                    if job.cancel.is_set():   # the client left while queued
                        return
                    slot.cond.wait(timeout=0.25)
                state, prompt_tokens, load_ns = self._start_locked(slot, job, emit)
            finally:
                slot.waiting.remove(ticket)
                slot.cond.notify_all()
            if state is None:
                return
            slot.busy += 1
        outcome: Outcome | None = None
        try:
            outcome = self._generate(slot, state, job, prompt_tokens, emit)
        finally:
            with slot.cond:
                slot.busy -= 1
                slot.free.append(state)
                if outcome is not None:
                    self._set_expiry(slot, job.keep_alive_s)
                if job.keep_alive_s <= 0 and slot.busy == 0:
                    self._unload(slot)  # before the final chunk, so /api/ps is empty once it arrives
                slot.cond.notify_all()
        if outcome is None:  # cancelled: the client is gone, nobody reads a final line
            return
        emit(self._done(job, outcome.reason, load_ns, outcome.prompt_evaluated, outcome.prompt_ns,
                        len(outcome.generated), outcome.eval_ns, list(prompt_tokens) + outcome.generated))

    @staticmethod
    def _may_start(slot: _Slot, job: Job, ticket: object) -> bool:
        """The head of the queue starts when a context with its load-time options is free, or when nothing
        runs (a load, a reload or an unload needs the model to itself)."""
        if slot.waiting[0] is not ticket:
            return False
        if slot.busy == 0:
            return True
        wants_context = job.prompt is not None and job.sampling.num_predict != 0
        return wants_context and slot.llama is not None and slot.params == job.load and bool(slot.free)

    def _start_locked(self, slot: _Slot, job: Job,
                      emit: Callable[[Event], None]) -> tuple[DecodeState | None, list[int], int]:
        """Under slot.cond: load as needed and take a context; (None, …) when the job is answered already.

        The time queued is in ``total_duration`` (from the request's arrival), not in ``load_duration``.
        """
        t0 = time.perf_counter_ns()
        try:
            if job.prompt is None and job.keep_alive_s <= 0:
                self._unload(slot)  # Ollama's "unload" request: empty prompt with keep_alive 0
                emit(self._done(job, "unload", 0, 0, 0, 0, 0, []))
                return None, [], 0
            self._ensure_loaded(slot, job.load)
            load_ns = time.perf_counter_ns() - t0
            self._set_expiry(slot, job.keep_alive_s)
            if job.prompt is None:
                emit(self._done(job, "load", load_ns, 0, 0, 0, 0, []))
                return None, [], load_ns
            prompt_tokens = self._prompt_tokens(slot.llama, job, slot.n_ctx)
            if job.sampling.num_predict == 0:
                emit(self._done(job, "length", load_ns, 0, 0, 0, 0, list(prompt_tokens)))
                return None, [], load_ns
        except BaseException:
            if job.keep_alive_s <= 0 and slot.busy == 0:
                self._unload(slot)
            raise
        return self._take(slot, prompt_tokens), prompt_tokens, load_ns

    def _take(self, slot: _Slot, prompt_tokens: list[int]) -> DecodeState:
        """A free context: the one whose cache holds at least half the prompt as a prefix (the longest such),
        else the least recently used one, whose cache is the least likely to be asked for again.

        llama-server picks its slots by the same kind of rule (prompt similarity, then least recently used).
        ``slot.free`` is kept in the order the contexts were given back, so its head is the least recently used.
        """
        best = 0
        if self.prompt_cache and _prefix_reuse_safe(slot.entry) and len(slot.free) > 1:
            shared = [common_prefix(state.cached, prompt_tokens) for state in slot.free]
            i = max(range(len(shared)), key=shared.__getitem__)
            if 2 * shared[i] >= len(prompt_tokens):
                best = i
        return slot.free.pop(best)

    def _generate(self, slot: _Slot, state: DecodeState, job: Job, prompt_tokens: list[int],
                  emit: Callable[[Event], None]) -> Outcome | None:
        """Prefill and the token loop on one of the model's decode states; None when cancelled."""
        s = job.sampling
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
