"""Stream formats: how to ask a server for a streamed completion, and what each line of its answer means.

The runner's hot loop (:mod:`sweep.runner`) knows no wire format: it splits the
body into lines, stamps each with ``perf_counter_ns`` at byte arrival and asks
the format what the line is.  A new API (OpenAI SSE next to Ollama NDJSON) is a
new :class:`StreamFormat`, registered in :data:`FORMATS` under the name that
``backend.api`` selects; nothing else changes.

A format implements three methods:

``request(cell, prompt) -> (path, json_body)``
    The URL path (``/api/generate``) and the JSON body for one streamed call.
``interpret(line) -> (kind, value)``
    One line (``bytes`` from the hot loop, ``str`` accepted) classified as

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
from typing import Any

import orjson

from sweep.backends.http import error_text
from sweep.cells import Cell, ConfigError

# The kinds a line can be (see the module docstring).
CONTENT, META, FINAL, ERROR, BAD, SKIP = "content", "meta", "final", "error", "bad", "skip"
NS_PER_MS = 1_000_000


class StreamFormat:
    """A wire format; subclasses implement :meth:`request`, :meth:`interpret` and :meth:`server_fields`."""

    name = ""

    def request(self, cell: Cell, prompt: str) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def interpret(self, line: bytes | str) -> tuple[str, Any]:
        raise NotImplementedError

    def server_fields(self, final: dict[str, Any] | None, metas: Sequence[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def error_text(self, body: bytes) -> str:
        """The message of a non-200 response's body (Ollama's and OpenAI's error shapes by default)."""
        return error_text(body)

    def final_text(self, final: dict[str, Any]) -> str:
        """Text that the final object itself carries (none by default)."""
        return ""


def request_body(cell: Cell, prompt: str, *, stream: bool = True) -> dict[str, Any]:
    """The JSON body Ollama expects; only set options are sent."""
    body: dict[str, Any] = {"model": cell.model, "stream": stream}
    if cell.options:
        body["options"] = dict(cell.options)
    if cell.keep_alive is not None:
        ka = cell.keep_alive
        body["keep_alive"] = int(ka) if str(ka).lstrip("-").isdigit() else ka
    if cell.endpoint == "chat":
        messages = [{"role": "system", "content": cell.system}] if cell.system else []
        messages.append({"role": "user", "content": prompt})
        body["messages"] = messages
    else:
        body["prompt"] = prompt
        if cell.system:
            body["system"] = cell.system
    return body


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


def _ns_to_ms(value: Any) -> float | None:
    return value / NS_PER_MS if isinstance(value, (int, float)) else None


class OllamaNDJSON(StreamFormat):
    """Ollama's ``/api/generate`` and ``/api/chat``: one JSON object per line, ``done: true`` last."""

    name = "ollama"

    def request(self, cell: Cell, prompt: str) -> tuple[str, dict[str, Any]]:
        return f"/api/{cell.endpoint}", request_body(cell, prompt)

    def interpret(self, line: bytes | str) -> tuple[str, Any]:
        if not line or line.isspace():
            return SKIP, None
        obj = loads(line)
        if not isinstance(obj, dict):
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
            return BAD, f"malformed NDJSON line: {text[:200]!r}"
        if "error" in obj:
            return ERROR, str(obj["error"])
        if obj.get("done") is True:
            return FINAL, obj
        message = obj.get("message")
        text = message.get("content", "") if isinstance(message, dict) else obj.get("response", "")
        return CONTENT, text if isinstance(text, str) else ""

    def server_fields(self, final: dict[str, Any] | None, metas: Sequence[Any]) -> dict[str, Any]:
        final = final or {}
        fields = {
            "load_duration_ms": _ns_to_ms(final.get("load_duration")),
            "prompt_eval_duration_ms": _ns_to_ms(final.get("prompt_eval_duration")),
            "eval_duration_ms": _ns_to_ms(final.get("eval_duration")),
            "total_duration_ms": _ns_to_ms(final.get("total_duration")),
            "prompt_eval_count": final.get("prompt_eval_count"),
            "eval_count": final.get("eval_count"),
            "done_reason": final.get("done_reason"),
        }
        if fields["eval_count"] and final.get("eval_duration"):
            fields["throughput_tok_s"] = fields["eval_count"] / (final["eval_duration"] / 1e9)
        return fields

    def final_text(self, final: dict[str, Any]) -> str:
        message = final.get("message")
        text = final.get("response") or (message.get("content") if isinstance(message, dict) else "") or ""
        return text if isinstance(text, str) else ""


OLLAMA = OllamaNDJSON()

# backend.api → its format.  A format in its own module registers itself here when imported
# (sweep/backends/openai.py: "openai"); format_for imports those modules.
FORMATS: dict[str, StreamFormat] = {OLLAMA.name: OLLAMA}


def format_for(api: str) -> StreamFormat:
    """The format ``backend.api`` names; a :class:`ConfigError` naming the choices otherwise."""
    import sweep.backends.openai  # noqa: F401  (registers "openai"; it subclasses StreamFormat, so it imports us)

    try:
        return FORMATS[api]
    except KeyError:
        raise ConfigError(f"backend.api={api} is not a known stream format: choose one of "
                          f"{', '.join(sorted(FORMATS))}") from None
