"""Stream formats: how to ask a server for a streamed completion, and what each line of its answer means.

The runner's hot loop (:mod:`sweep.runner`) knows no wire format: it splits the
body into lines, stamps each with ``perf_counter_ns`` at byte arrival and asks
the format what the line is.  A new API (OpenAI SSE next to Ollama NDJSON) is a
new :class:`StreamFormat` in its backend's module (:mod:`sweep.backends.ollama`,
:mod:`sweep.backends.openai`), listed in :data:`sweep.backends.kinds.FORMATS` under the
name that ``backend.api`` selects; nothing else changes.

A format implements three methods:

``request(cell, prompt) -> (path, json_body)``
    The URL path (``/api/generate``) and the JSON body for one streamed call.
``interpret(line) -> (kind, value)``
    One line (``bytes`` from the hot loop, ``str`` accepted) classified as a :class:`LineKind`

    - ``content`` (text): a token chunk; non-empty text is stamped as a token arrival;
    - ``meta`` (object): keep it and keep reading (e.g. an OpenAI usage chunk);
    - ``final`` (object): the last chunk; reading stops here;
    - ``error`` (text): the server reported an error inside the stream → ``server_error``;
    - ``bad`` (text): unparseable → ``protocol_error``;
    - ``skip`` (``None``): blank line, keep-alive, SSE comment or ``[DONE]``.

    It runs between two token arrivals: parse the line, nothing else (no
    logging, no copying of earlier lines).
``server_fields(final, metas) -> {column: value}``
    After the stream: the server's own timings and counts from the final object
    (and the kept ``meta`` objects) into the existing columns, e.g.
    ``eval_count``, ``eval_duration_ms``, ``throughput_tok_s``, ``done_reason``.
    Columns the server does not report are left out (they stay null).

Two further methods have defaults that fit most JSON APIs: :meth:`StreamFormat.error_text`
(the message of a non-200 body) and :meth:`StreamFormat.final_text` (text carried by
the final object itself, as Ollama's ``stream: false`` answer does).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import orjson

from sweep.backends.http import error_text
from sweep.cells import Cell


class LineKind(StrEnum):
    """What one line of a streamed answer is (see the module docstring): the runner acts on it."""

    CONTENT = "content"   # a token chunk (text); non-empty text is stamped as a token arrival
    META = "meta"         # an object to keep while reading on (e.g. an OpenAI usage chunk)
    FINAL = "final"       # the last chunk (an object): reading stops
    ERROR = "error"       # the server reported an error inside the stream (text) → server_error
    BAD = "bad"           # unparseable (text) → protocol_error
    SKIP = "skip"         # blank line, keep-alive, SSE comment or [DONE] (None)


NS_PER_MS = 1_000_000


class StreamFormat:
    """A wire format; subclasses implement :meth:`request`, :meth:`interpret` and :meth:`server_fields`."""

    name = ""

    def request(self, cell: Cell, prompt: str) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def interpret(self, line: bytes | str) -> tuple[LineKind, Any]:
        raise NotImplementedError

    def server_fields(self, final: dict[str, Any] | None, metas: Sequence[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def error_text(self, body: bytes) -> str:
        """The message of a non-200 response's body (Ollama's and OpenAI's error shapes by default)."""
        return error_text(body)

    def final_text(self, final: dict[str, Any]) -> str:
        """Text that the final object itself carries (none by default)."""
        return ""


def loads(line: bytes | str) -> Any:
    """One JSON value, or None if the line is not JSON.

    orjson parses a token line in about a third of the time of ``json`` (it
    runs between two token arrivals); what orjson refuses but ``json`` reads
    (NaN, integers beyond 64 bits) still parses, through ``json``.
    """
    try:
        return orjson.loads(line)
    except ValueError:
        try:
            return json.loads(line)
        except ValueError:
            return None
