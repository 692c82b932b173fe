"""The agent workflow's text steps: prompt builders, trimming to the context, post-processing.

Pure functions (no I/O, no clocks), so the workflow's timed path only glues them
to the calls, and tests check them directly.  Why trim by characters: the
client has no tokenizer for every model a server may run; a conservative
characters-per-token ratio keeps the prompt plus the answer inside the cell's
``num_ctx`` (the server would otherwise cut the prompt itself, silently, from
the front, where the instructions are).
"""

from __future__ import annotations

from sweep.config import Postprocess

CHARS_PER_TOKEN = 3          # conservative: English prose is ~4 characters per token, numbers and tables fewer
DEFAULT_NUM_CTX = 2048       # what Ollama uses when a request sends no num_ctx
MIN_PROMPT_CHARS = 200       # below this a prompt says nothing; the server truncates the rest
SUMMARY, ANALYSIS = "{summary}", "{analysis}"


def prompt_budget_chars(num_ctx: int | None, num_predict: int | None) -> int:
    """Characters a prompt may take so that prompt + answer fit in the context window."""
    ctx = num_ctx or DEFAULT_NUM_CTX
    answer = num_predict if num_predict is not None and num_predict > 0 else ctx // 4
    return max(MIN_PROMPT_CHARS, (ctx - min(answer, ctx - 1)) * CHARS_PER_TOKEN)


def fill(template: str, placeholder: str, text: str, budget_chars: int) -> str:
    """``template`` with ``placeholder`` replaced by ``text``, ``text`` cut so the whole fits ``budget_chars``.

    The instructions around the placeholder are never cut; the inserted text is
    cut at the end (a summary and an analysis put what matters first) and marked.
    """
    room = max(0, budget_chars - (len(template) - len(placeholder)))
    if len(text) > room:
        text = text[: max(0, room - 1)].rstrip() + "…"
    return template.replace(placeholder, text)


def postprocess(text: str, mode: Postprocess) -> str:
    """The custom agent's post-processing of a stage's output before it is used (``trim``: strip whitespace)."""
    return text.strip() if mode == Postprocess.trim else text
