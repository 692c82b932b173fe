"""``workload.prompt_tokens=N``: a prompt of exactly N tokens for the served model, built once per cell.

What N counts: the prompt tokens the server evaluates for the request, its own
``prompt_eval_count`` (``usage.prompt_tokens`` on the OpenAI API), so BOS and any template
tokens are in it, as llama-bench's pp512 counts its BOS.  The text is seeded filler words
(no question, no instruction: nothing that invites an early end), the same for every trial
of the cell and for every cell with the same N and seed on the same model.

How the text is found, best first:

1. the server's tokenizer: Ollama-shaped ``POST /api/tokenize`` (our embedded server; an
   Ollama that has it) or llama.cpp's ``POST /tokenize`` at the server's root (llama-server,
   vLLM) counts a candidate text; one real request (``num_predict`` 1) tells what the server
   adds around the text (BOS, template), and a last one checks the result;
2. without a tokenize route (a plain OpenAI-compatible server, an Ollama release without it):
   every candidate is counted by a real request's reported prompt token count.  A server that
   reuses a cached prefix reports fewer evaluated tokens (Ollama does; it has no switch), so
   this path finds the closest text it can and says how close it got.

Each candidate count is a search step over the number of filler words (a bisection), then
single-token pads (`` a``) fill the last gap.  The row's ``prompt_eval_count`` is what the
server really evaluated; ``prompt_tokens`` is N.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sweep.backends.http import StreamClient, TransportError
from sweep.cells import FILLER_PROMPT_ID, Cell, Lengths, Prompt
from sweep.contract import Status, TrialRecord
from sweep.runner import Target, measure_call

PAD = " a"           # one token in every tokenizer we know, and it does not merge with its neighbours
MAX_PADS = 64
# Common words, lower case, mostly one token each: the filler is prose-like but asks nothing.
WORDS = (
    "the of and to in is was for on as with by at from that this it be are or an have had not but "
    "which one all were when there can more has been will if no other so some what about into than "
    "them only time new these two may first then do any like my now over such our man me even most "
    "made after also did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still own see men work "
    "long get here between both life being under never day same another know while last might us great "
    "old year off come since against go came right used take three small large water light house city "
    "river road field stone wood tree green blue black white red paper table window garden morning "
    "evening winter summer music story number letter office market money school family friend"
).split()


def filler(seed: int, n_words: int) -> str:
    """``n_words`` seeded filler words: the same seed gives the same text (a prefix for fewer words)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


@dataclass
class Built:
    """The prompt found: its text, the server's count of it, how it was counted."""

    text: str
    served: int | None       # the server's prompt token count of the final text (None: unknown)
    method: str              # "tokenize <route>" or "prompt_eval_count"

    @property
    def exact(self) -> bool:
        return self.served is not None


Counter = Callable[[str], Awaitable[int | None]]


async def closest_text(target_n: int, seed: int, count: Counter) -> tuple[str, int | None]:
    """The filler text whose ``count`` is ``target_n`` (or the closest from below, else above).

    A bisection over the number of words for the longest text at most ``target_n``, then pads
    of one token each.  ``count`` may be a tokenizer (cheap) or a real request (each a probe).
    """
    lo, hi = 1, max(2, 2 * target_n + 8)
    best_text, best_n = filler(seed, 1), await count(filler(seed, 1))
    if best_n is None:
        return best_text, None
    if best_n > target_n:
        return best_text, best_n
    while lo < hi:   # invariant: count(words[:lo]) <= target_n
        mid = (lo + hi + 1) // 2
        n = await count(filler(seed, mid))
        if n is None:
            return best_text, best_n
        if n <= target_n:
            lo, best_text, best_n = mid, filler(seed, mid), n
        else:
            hi = mid - 1
    text, n = best_text, best_n
    for _ in range(MAX_PADS):
        if n == target_n:
            break
        more = text + PAD
        m = await count(more)
        if m is None or m > target_n or m <= n:
            break
        text, n = more, m
    return text, n


def _root(base_url: str) -> str:
    """The server's root: llama.cpp's /tokenize is not under the OpenAI prefix (…/v1)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


async def _tokens(client: StreamClient, path: str, body: dict[str, Any]) -> list[int] | None:
    """The token list of one tokenize call; None when the route is missing or answers something else."""
    try:
        answer = await client.post_json(path, body)
    except (TransportError, ValueError):
        return None
    tokens = answer.get("tokens") if isinstance(answer, dict) else None
    if not isinstance(tokens, list):
        return None
    return [t if isinstance(t, int) else t.get("id") for t in tokens]


@dataclass
class TokenizeRoute:
    """A server's tokenizer route: ``count(text)`` is the number of tokens it makes of the text."""

    client: StreamClient      # on the server's root (llama.cpp's /tokenize is not under …/v1)
    path: str
    body: Callable[[str], dict[str, Any]]

    async def count(self, text: str) -> int | None:
        tokens = await _tokens(self.client, self.path, self.body(text))
        return None if tokens is None else len(tokens)

    @property
    def method(self) -> str:
        return f"tokenize {self.path}"


async def tokenize_route(target: Target, cell: Cell, headers: dict[str, str]) -> TokenizeRoute | None:
    """The server's own tokenizer route, if it answers one: Ollama-shaped on the Ollama API, llama.cpp's otherwise.

    Close its ``client`` when done.  None when the route is missing (a 404) or answers without ``tokens``.
    """
    if target.fmt.name == "ollama":
        path, body = "/api/tokenize", lambda t: {"model": cell.model, "content": t}
    else:
        path, body = "/tokenize", lambda t: {"model": cell.model, "content": t, "add_special": False}
    route = TokenizeRoute(StreamClient(_root(target.client.base_url), headers=headers), path, body)
    if await route.count("hello") is None:
        await route.client.aclose()
        return None
    return route


def _probe_cell(cell: Cell) -> Cell:
    """The cell as a one-token request: its options and wire extras, no ignore_eos (nothing to generate)."""
    lengths = cell.lengths or Lengths()
    options = {**cell.options, "num_predict": 1}
    probe = dataclasses.replace(lengths, ignore_eos=False, options={k: v for k, v in lengths.options.items()
                                                                    if k != "ignore_eos"},
                                body={k: v for k, v in lengths.body.items() if k != "ignore_eos"})
    return dataclasses.replace(cell, options=options, lengths=probe)


async def served_count(target: Target, cell: Cell, text: str) -> int | None:
    """The server's prompt token count for ``text`` sent as this cell sends it (one real request)."""
    record = await measure_call(target, _probe_cell(cell), text, TrialRecord())
    return record.prompt_eval_count if record.status == Status.OK else None


async def build(target: Target, cell: Cell, headers: dict[str, str] | None = None) -> Built:
    """The cell's prompt text of ``cell.lengths.prompt_tokens`` tokens (see the module docstring)."""
    assert cell.lengths is not None and cell.lengths.prompt_tokens is not None
    n, seed = cell.lengths.prompt_tokens, cell.lengths.seed
    route = await tokenize_route(target, cell, headers or {})
    if route is None:
        text, served = await closest_text(n, seed, lambda t: served_count(target, cell, t))
        return Built(text, served, "prompt_eval_count")
    try:
        sample = filler(seed, 8)
        overhead = 0
        sample_tokens = await route.count(sample)
        sample_served = await served_count(target, cell, sample)
        if sample_tokens is not None and sample_served is not None:
            overhead = sample_served - sample_tokens   # BOS, template: what the server adds around the text

        async def with_overhead(text: str) -> int | None:
            c = await route.count(text)
            return None if c is None else c + overhead

        text, _ = await closest_text(n, seed, with_overhead)
        served = await served_count(target, cell, text)
        if served is not None and served != n:   # the text's tokens merged with the template's: once more
            overhead += served - n
            text, _ = await closest_text(n, seed, with_overhead)
            served = await served_count(target, cell, text)
    finally:
        await route.client.aclose()
    return Built(text, served, route.method)


async def with_prompt(target: Target, cell: Cell, headers: dict[str, str] | None = None
                      ) -> tuple[Cell, Built | None]:
    """``cell`` with its built prompt (the cell's hash does not change: N and the seed identify it)."""
    if cell.lengths is None or cell.lengths.prompt_tokens is None:
        return cell, None
    built = await build(target, cell, headers)
    return dataclasses.replace(cell, prompts=(Prompt(FILLER_PROMPT_ID, built.text),)), built


def built_line(cell: Cell, built: Built) -> str:
    """One line for the console: what was built and how close it is."""
    n = cell.lengths.prompt_tokens if cell.lengths else None
    if built.served == n:
        return f"prompt_tokens={n}: filler text counted by {built.method}; the server evaluates exactly {n} tokens"
    got = "an unknown number of" if built.served is None else str(built.served)
    return (f"prompt_tokens={n}: the closest filler text found ({built.method}) is {got} tokens; each row's "
            "prompt_eval_count says what was served")
