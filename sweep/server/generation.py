"""One generation on llama.cpp's low-level API: prompt prefill, one-token decode steps, sampling.

Why not ``Llama.generate``: per token it rebuilds a one-token batch element by
element, copies the token into a numpy history, and samples through a C chain
whose first step lays out the whole vocabulary (262 144 entries for Gemma 3)
and looks every entry up in the repetition-penalty hash map.  Measured on
Gemma 3 270M (1 thread): that C sampling took 0.8 ms per token without the
penalty and 1.6 ms with it (machine under load), against ~11 ms of decode; an
argmax over a zero-copy view of the logits with the penalty applied to the
≤ ``repeat_last_n`` recently seen ids took 0.09 ms.  So:

* :class:`DecodeState` keeps one ``llama_batch`` per loaded model, reused for
  every step (only the token and its position change), and remembers which
  tokens the KV cache holds so a request can reuse a cached prompt prefix
  exactly as ``Llama.generate`` did (same prefix rule, same counts).
* Greedy decoding (temperature 0) is :class:`GreedySampler`: llama.cpp's
  penalties sampler re-done on the few penalised ids with the same float32
  arithmetic, then the first maximum, which is what llama.cpp's greedy sampler
  returns; tests check the tokens are identical to ``Llama.generate``.
* Every other sampling mode is :class:`ChainSampler`: llama.cpp's own C chain
  (``llama_sampler_chain_init``) in the order ``Llama.generate`` builds it,
  seeded the same way, so seeded sampling gives the same tokens as before.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .options import SamplingParams

LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp: "pick a random seed"
MIROSTAT_M = 100  # what llama-cpp-python passes for mirostat v1


def _llama_cpp() -> Any:
    import llama_cpp  # deferred: importing the engine must not load the shared library

    return llama_cpp


class DecodeError(RuntimeError):
    """llama_decode failed (context full, out of memory, ...)."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


_EOG_IDS: dict[tuple[str, int], np.ndarray] = {}   # (model file, vocabulary size) → its end-of-generation ids


class DecodeState:
    """A loaded model's decode side: its context, one reused batch, the tokens in its KV cache."""

    def __init__(self, llm: Any, ctx: Any = None) -> None:
        """``ctx``: one of the model's parallel contexts (default: ``llm``'s own)."""
        lc = _llama_cpp()
        self.llm = llm
        self.ctx = llm.ctx if ctx is None else ctx
        self.vocab = lc.llama_model_get_vocab(llm.model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self.vocab))
        self.n_batch = int(llm.n_batch)
        self._mem = lc.llama_get_memory(self.ctx)
        self._batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self._decode = lc.llama_decode
        self._get_logits = lc.llama_get_logits_ith
        self._seq_rm = lc.llama_memory_seq_rm
        self._is_eog = lc.llama_vocab_is_eog
        self._token_to_piece = lc.llama_token_to_piece
        for i in range(self.n_batch):  # one sequence, fixed for good: only token, pos and logits change
            self._batch.seq_id[i][0] = 0
            self._batch.n_seq_id[i] = 1
        self._tok, self._pos, self._out = self._batch.token, self._batch.pos, self._batch.logits
        self.cached: list[int] = []  # the tokens whose K/V the cache holds, in order
        self.logits_live = False  # whether the context's logits are those of cached[-1]
        self._view_addr = 0
        self._view: np.ndarray | None = None
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._eog_ids: np.ndarray | None = None

    def close(self) -> None:
        if self._batch is not None:
            _llama_cpp().llama_batch_free(self._batch)
            self._batch = None

    # -- cache ---------------------------------------------------------------

    def forget(self) -> None:
        """Treat the cache as empty (the next prefill evaluates its whole prompt)."""
        self.cached = []
        self.logits_live = False

    def _truncate(self, keep: int) -> int:
        """Drop cached positions from ``keep`` on; returns what is kept (0 if the model cannot cut its memory).

        Like ``Llama.eval``, a removal of positions (all of them when nothing is
        kept) rather than a clear: a clear with data zeroes the whole KV buffer
        (tens of MB at num_ctx 2048), which would land in the prompt time.
        """
        if not self._seq_rm(self._mem, -1, keep, -1):
            keep = 0  # recurrent models cannot drop a partial sequence: start again, as Llama.reset does
            _llama_cpp().llama_memory_clear(self._mem, True)
        del self.cached[keep:]
        self.logits_live = False
        return keep

    def prefill(self, tokens: Sequence[int], reuse: bool) -> int:
        """Make the cache hold ``tokens`` with the last one's logits ready; returns how many were evaluated.

        ``reuse``: keep the longest cached prefix (``Llama.generate``'s rule: a
        fully cached prompt whose logits are still live is not evaluated at all;
        otherwise at least its last token is, to refresh the logits).
        """
        keep = 0
        if reuse and self.cached:
            prefix = common_prefix(self.cached, tokens)
            consumed = prefix == len(tokens)
            if consumed and len(self.cached) == len(tokens) and self.logits_live:
                return 0
            keep = prefix - 1 if consumed else prefix
        keep = self._truncate(keep)
        todo = list(tokens[keep:])
        for start in range(0, len(todo), self.n_batch):
            chunk = todo[start:start + self.n_batch]
            last = start + len(chunk) == len(todo)
            self._run(chunk, len(self.cached), last)
            self.cached.extend(chunk)
        self.logits_live = True
        return len(todo)

    def _run(self, chunk: Sequence[int], pos0: int, want_logits: bool) -> None:
        tok, pos, out = self._tok, self._pos, self._out
        for i, t in enumerate(chunk):
            tok[i], pos[i], out[i] = t, pos0 + i, 0
        out[len(chunk) - 1] = 1 if want_logits else 0
        self._batch.n_tokens = len(chunk)
        rc = self._decode(self.ctx, self._batch)
        if rc != 0:
            self.logits_live = False
            raise DecodeError(f"llama_decode returned {rc}")

    def step(self, token: int) -> None:
        """Decode one token at the next position (its logits become the live ones)."""
        self._tok[0], self._pos[0], self._out[0] = token, len(self.cached), 1
        self._batch.n_tokens = 1
        rc = self._decode(self.ctx, self._batch)
        if rc != 0:
            self.logits_live = False
            raise DecodeError(f"llama_decode returned {rc}")
        self.cached.append(token)

    # -- per-token reads -----------------------------------------------------

    def logits(self) -> np.ndarray:
        """The last output's logits as a numpy view of llama.cpp's buffer (no copy; valid until the next decode)."""
        ptr = self._get_logits(self.ctx, -1)
        addr = ctypes.cast(ptr, ctypes.c_void_p).value or 0
        if addr != self._view_addr or self._view is None:
            self._view = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
            self._view_addr = addr
        return self._view

    def eog_ids(self) -> np.ndarray:
        """Every end-of-generation token id of the vocabulary, found once per model file.

        Why per file: the scan asks llama.cpp about each of Gemma 3's 262 144 ids (~0.3 s), and it
        runs between the prefill and the first sample, inside the prompt time; a reload (state=cold)
        must not pay it again.
        """
        if self._eog_ids is None:
            key = (str(getattr(self.llm, "model_path", id(self.llm))), self.n_vocab)
            found = _EOG_IDS.get(key)
            if found is None:
                found = _EOG_IDS[key] = np.array([t for t in range(self.n_vocab) if self.is_eog(t)], dtype=np.intp)
            self._eog_ids = found
        return self._eog_ids

    def ban_eog(self) -> None:
        """``ignore_eos``: end-of-generation logits to -inf in llama.cpp's buffer, so no sampler can pick one.

        Why in the buffer: the greedy sampler reads a view of it and llama.cpp's chain reads the
        buffer itself, so one write serves both (llama.cpp's own ``ignore_eos`` is a logit bias of -inf).
        """
        ids = self.eog_ids()
        if len(ids):
            self.logits()[ids] = -np.inf

    def is_eog(self, token: int) -> bool:
        known = self._eog.get(token)
        if known is None:
            known = self._eog[token] = bool(self._is_eog(self.vocab, token))
        return known

    def piece(self, token: int) -> bytes:
        """The token's text bytes (special tokens rendered empty, as ``Llama.detokenize`` does); cached per id."""
        known = self._pieces.get(token)
        if known is None:
            buf = (ctypes.c_char * 64)()
            n = self._token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = (ctypes.c_char * -n)()
                n = self._token_to_piece(self.vocab, token, buf, -n, 0, False)
            known = self._pieces[token] = bytes(buf[:n])
        return known


# ---------------------------------------------------------------------- sampling

class Sampler(Protocol):
    def sample(self, state: DecodeState) -> int: ...

    def close(self) -> None: ...


class GreedySampler:
    """Temperature 0: llama.cpp's penalties then greedy, on a view of the logits.

    The penalties follow ``llama_sampler_penalties`` exactly: a window of the
    last ``last_n`` sampled tokens (the prompt is not in it, as with
    ``Llama.generate``), a logit ``<= 0`` multiplied by the repeat penalty and
    one ``> 0`` divided by it, then ``count * frequency + (count > 0) *
    presence`` subtracted, all in float32.  The penalised values are written
    into the logits buffer only for the argmax and restored afterwards, so the
    buffer stays what llama.cpp produced (a later request may sample from it).
    """

    def __init__(self, s: SamplingParams, last_n: int) -> None:
        self.last_n = max(0, last_n)
        self.repeat = np.float32(s.repeat_penalty)
        self.freq = np.float32(s.frequency_penalty)
        self.present = np.float32(s.presence_penalty)
        self.enabled = self.last_n > 0 and not (
            self.repeat == 1 and self.freq == 0 and self.present == 0)
        self.window: collections.deque[int] = collections.deque()
        self.counts: dict[int, int] = {}

    def _accept(self, token: int) -> None:
        counts = self.counts
        counts[token] = counts.get(token, 0) + 1
        if len(self.window) >= self.last_n:
            old = self.window.popleft()
            counts[old] -= 1
            if counts[old] == 0:
                del counts[old]
        self.window.append(token)

    def sample(self, state: DecodeState) -> int:
        logits = state.logits()
        if not self.enabled or not self.counts:
            token = int(logits.argmax())
        else:
            ids = np.fromiter(self.counts, dtype=np.intp, count=len(self.counts))
            saved = logits[ids]
            penalised = np.where(saved <= 0, saved * self.repeat, saved / self.repeat)
            if self.freq != 0 or self.present != 0:
                n = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
                penalised = penalised - (n * self.freq + np.float32(1) * self.present)
            logits[ids] = penalised
            try:
                token = int(logits.argmax())
            finally:
                logits[ids] = saved
        if self.enabled:
            self._accept(token)
        return token

    def close(self) -> None:
        pass


class ChainSampler:
    """Any other mode: llama.cpp's C sampler chain, built like ``Llama._init_sampler`` builds it."""

    def __init__(self, s: SamplingParams, last_n: int, n_vocab: int) -> None:
        lc = _llama_cpp()
        seed = s.seed & 0xFFFFFFFF if s.seed >= 0 else LLAMA_DEFAULT_SEED
        self.chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        add = lambda smpl: lc.llama_sampler_chain_add(self.chain, smpl)  # noqa: E731
        add(lc.llama_sampler_init_penalties(n_vocab, last_n, s.repeat_penalty, s.frequency_penalty,
                                            s.presence_penalty))
        if s.temperature < 0:
            add(lc.llama_sampler_init_dist(seed))
        elif s.mirostat == 1:
            add(lc.llama_sampler_init_mirostat(n_vocab, seed, s.mirostat_tau, s.mirostat_eta, MIROSTAT_M))
        elif s.mirostat == 2:
            add(lc.llama_sampler_init_mirostat_v2(seed, s.mirostat_tau, s.mirostat_eta))
        else:
            add(lc.llama_sampler_init_top_k(s.top_k))
            add(lc.llama_sampler_init_typical(s.typical_p, 1))
            add(lc.llama_sampler_init_top_p(s.top_p, 1))
            add(lc.llama_sampler_init_min_p(s.min_p, 1))
            add(lc.llama_sampler_init_temp(s.temperature))
            add(lc.llama_sampler_init_dist(seed))
        self._sample = lc.llama_sampler_sample

    def sample(self, state: DecodeState) -> int:
        return int(self._sample(self.chain, state.ctx, -1))

    def close(self) -> None:
        if self.chain is not None:
            _llama_cpp().llama_sampler_free(self.chain)
            self.chain = None


def make_sampler(s: SamplingParams, last_n: int, n_vocab: int) -> Sampler:
    """Greedy on the logits view for temperature 0, llama.cpp's chain otherwise (as ``Llama.generate`` chose)."""
    if s.temperature == 0:
        return GreedySampler(s, last_n)
    return ChainSampler(s, last_n, n_vocab)


# ---------------------------------------------------------------------- the token loop

class StopMatcher:
    """Finds Ollama ``stop`` strings in streamed text, holding back possible prefixes."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was hit)."""
        if not self.stops:
            return text, False
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), keep, -1):
                if self.pending.endswith(s[:k]):
                    keep = k
                    break
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class Outcome:
    """What one generation produced; durations in nanoseconds (perf_counter_ns)."""

    generated: list[int]
    reason: str  # "stop" (end of generation or a stop string) or "length"
    prompt_evaluated: int  # prompt tokens really evaluated (the rest came from the cache)
    prompt_ns: int  # from the start of the prefill to the first sampled token
    eval_ns: int  # from the first to the last sampled token


def generate_tokens(state: DecodeState, sampler: Sampler, prompt: Sequence[int], *, num_predict: int,
                    n_ctx: int, stops: Sequence[str], cancel: threading.Event, reuse: bool,
                    on_text: Callable[[str], None], ignore_eos: bool = False) -> Outcome | None:
    """Prefill ``prompt``, then sample, emit and decode one token at a time; None if ``cancel`` was set.

    Stamps as before the rewrite: a token's time is when it was sampled; the
    end-of-generation token is stamped but not counted or emitted; ``on_text``
    gets each token's text as soon as it is complete UTF-8 (possibly ``''``)
    with stop strings held back until they are ruled out.  ``ignore_eos``: end-of-generation
    tokens are never sampled, so only ``num_predict``, the context or a stop string ends it.
    """
    limit = num_predict if num_predict > 0 else math.inf
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stopper = StopMatcher(stops)
    generated: list[int] = []
    reason = "stop"
    clock = time.perf_counter_ns
    t_start = clock()
    evaluated = state.prefill(prompt, reuse)
    t_first = 0
    while True:
        if ignore_eos:
            state.ban_eog()
        token = sampler.sample(state)
        t_last = clock()
        if not t_first:
            t_first = t_last
        if state.is_eog(token):
            break
        generated.append(token)
        text, hit = stopper.feed(decoder.decode(state.piece(token)))
        on_text(text)
        if hit or cancel.is_set():
            break
        if len(generated) >= limit or len(prompt) + len(generated) >= n_ctx:
            reason = "length"
            break
        state.step(token)
    if cancel.is_set():
        return None
    tail = stopper.flush()
    if tail:
        on_text(tail)
    return Outcome(generated, reason, evaluated, t_first - t_start, t_last - t_first)
