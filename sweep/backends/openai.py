"""The OpenAI API as a stream format: request bodies, SSE line meanings, usage/timings → columns.

Why one module: everything that depends on the OpenAI wire format sits here —
which of our options the API can carry and under which field (:data:`FIELDS`,
the one place of that mapping), the refusal of those it cannot carry, what one
``data:`` line means, and which server numbers go into which existing column.
The runner's stamp-then-interpret loop is the same as for Ollama.

Counts come from the server's ``usage`` (never re-tokenised here); server-side
timings come from llama.cpp's ``timings`` extension (``llama-server``, and our
embedded server's ``/v1`` routes), and stay null for servers that send none
(vLLM, OpenAI).  ``done_reason`` is the ``finish_reason`` of the chunk that
carries it without text (OpenAI, llama.cpp, Ollama); a server that puts it on
the last text chunk leaves ``done_reason`` null, since that chunk counts as a
token arrival.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sweep.cells import LOAD_TIME_OPTIONS, Cell, ConfigError
from sweep.config import Endpoint
from sweep.backends.stream import LineKind, StreamFormat

#: Our option → the request field that carries it.  ``top_k`` and ``repeat_penalty`` are
#: llama.cpp's extension fields (llama-server, our embedded server; vLLM takes ``top_k``).
FIELDS: dict[str, str] = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed",
    "num_predict": "max_tokens", "repeat_penalty": "repeat_penalty",
}

_ENDPOINTS = {Endpoint.chat: "/chat/completions", Endpoint.completions: "/completions",
              Endpoint.generate: "/completions"}


def check_cell(kind: str, options: Mapping[str, Any], *, system: str | None, endpoint: str,
               keep_alive: str | None, load_time_as_flags: bool = False) -> None:
    """Refuse, in one line naming every such option, the backend and the fix, what the OpenAI API cannot carry.

    Load-time options (fixed when the server loads the model) have no request
    field; a kind that starts its server with them as command-line flags
    (``load_time_as_flags``: llama_server) carries them, the others refuse them.
    All of them in one line: the default preset sets two, and one per attempt
    made the user try twice.
    """
    refused = [name for name in options
               if name not in FIELDS and not (load_time_as_flags and name in LOAD_TIME_OPTIONS)]
    if refused:
        raise ConfigError(unsendable_line(kind, refused))
    if keep_alive is not None:
        raise ConfigError(f"backend.keep_alive cannot be sent to backend={kind}: the OpenAI API has no "
                          "keep_alive; remove it")
    if endpoint not in _ENDPOINTS:
        raise ConfigError(f"invalid workload.endpoint '{endpoint}' for backend={kind}: use chat or completions")
    if system and endpoint != Endpoint.chat:
        raise ConfigError(f"workload.system needs workload.endpoint=chat on backend={kind} "
                          "(/v1/completions has no system prompt)")


def unsendable_line(kind: str, names: Sequence[str]) -> str:
    """'options num_gpu, num_ctx cannot be sent to backend=openai: …' with the two ways out."""
    load_time = all(n in LOAD_TIME_OPTIONS for n in names)
    them = "it" if len(names) == 1 else "them"
    why = ("fixed when the server starts, the OpenAI API has no field for " + them if load_time
           else "the OpenAI API has no field for " + them)
    nulls = " ".join(f"chimera.{n}=null" for n in names)
    also = f", or use backend=llama_server, which starts llama-server with {them}" if load_time else ""
    return (f"option{'s' if len(names) > 1 else ''} {', '.join(names)} cannot be sent to backend={kind} ({why}): "
            f"measure the server's defaults with chimera=baseline, or drop {them} with {nulls}{also}")


def request_of(cell: Cell, prompt: str, *, include_usage: bool = True) -> tuple[str, dict[str, Any]]:
    """The path (under the ``/v1`` base URL) and body of one streamed call.

    ``include_usage``: ask for the usage chunk (``stream_options``); a server that refuses the field gets none.
    """
    body: dict[str, Any] = {"model": cell.model, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    for name, value in cell.options.items():
        field = FIELDS.get(name)
        if field is None:
            continue  # load-time: llama_server passes it as a flag (check_cell refused it elsewhere)
        if name == "num_predict" and value < 0:
            continue  # Ollama's -1/-2 ("no limit", "until the context is full"): the API's default
        body[field] = value
    if cell.lengths is not None:
        body.update(cell.lengths.body)   # ignore_eos, cache_prompt: llama.cpp's (and vLLM's) extensions
    if cell.endpoint == Endpoint.chat:
        messages = [{"role": "system", "content": cell.system}] if cell.system else []
        body["messages"] = [*messages, {"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return _ENDPOINTS[cell.endpoint], body


def _text_of(line: bytes | str) -> str:
    return (line.decode("utf-8", "replace") if isinstance(line, bytes) else line)[:200]


def interpret_line(line: bytes | str) -> tuple[LineKind, Any]:
    """One line of an SSE body: a token's text, a chunk to keep (finish/usage), ``[DONE]``, an error."""
    if isinstance(line, str):
        line = line.encode()
    line = line.rstrip(b"\r")
    if not line.strip() or line.startswith(b":"):  # event separator, keep-alive comment
        return LineKind.SKIP, None
    if not line.startswith(b"data:"):
        if line.startswith((b"event:", b"id:", b"retry:")):
            return LineKind.SKIP, None
        return LineKind.BAD, f"not an SSE data line: {_text_of(line)!r}"
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return LineKind.FINAL, {}
    try:
        obj = json.loads(payload)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return LineKind.BAD, f"malformed SSE data: {_text_of(payload)!r}"
    error = obj.get("error")
    if error is not None or obj.get("object") == "error":
        detail = error if error is not None else obj
        return LineKind.ERROR, str(detail.get("message", detail)) if isinstance(detail, dict) else str(detail)
    choices = obj.get("choices")
    if choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if isinstance(text, str) and text:
            return LineKind.CONTENT, text
        if choice.get("finish_reason") or obj.get("usage") or obj.get("timings"):
            return LineKind.META, obj
        return LineKind.SKIP, None  # the role-only first chunk
    if obj.get("usage") or obj.get("timings"):
        return LineKind.META, obj
    return LineKind.SKIP, None


def _last(metas: Sequence[Any], pick: Any) -> Any:
    for obj in reversed(metas):
        value = pick(obj)
        if value:
            return value
    return None


def fields_of(final: Mapping[str, Any] | None, metas: Sequence[Any]) -> dict[str, Any]:
    """``usage`` counts, llama.cpp ``timings`` and ``finish_reason`` into the existing columns."""
    usage = _last(metas, lambda o: o.get("usage") if isinstance(o.get("usage"), dict) else None) or {}
    timings = _last(metas, lambda o: o.get("timings") if isinstance(o.get("timings"), dict) else None) or {}
    finish = _last(metas, lambda o: (o.get("choices") or [{}])[0].get("finish_reason")
                   if isinstance((o.get("choices") or [{}])[0], dict) else None)
    fields: dict[str, Any] = {
        "prompt_eval_count": _int(usage.get("prompt_tokens")),
        "eval_count": _int(usage.get("completion_tokens")),
        "prompt_eval_duration_ms": _num(timings.get("prompt_ms")),
        "eval_duration_ms": _num(timings.get("predicted_ms")),
        "done_reason": finish if isinstance(finish, str) else None,
    }
    if fields["eval_count"] is None:
        fields["eval_count"] = _int(timings.get("predicted_n"))
    predicted_n, predicted_ms = _int(timings.get("predicted_n")), _num(timings.get("predicted_ms"))
    # one token is sampled from the prompt's logits: no decode step to time (llama.cpp reports ~0.001 ms → 10⁶ tok/s)
    if predicted_n and predicted_n > 1 and predicted_ms:
        fields["throughput_tok_s"] = predicted_n / (predicted_ms / 1000)
    return {k: v for k, v in fields.items() if v is not None}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None



class OpenAISSE(StreamFormat):
    """``/v1/chat/completions`` and ``/v1/completions`` streamed as server-sent events."""

    name = "openai"

    def __init__(self, *, include_usage: bool = True) -> None:
        self.include_usage = include_usage   # False for a server that refuses stream_options

    def request(self, cell: Cell, prompt: str) -> tuple[str, dict[str, Any]]:
        return request_of(cell, prompt, include_usage=self.include_usage)

    def interpret(self, line: bytes | str) -> tuple[LineKind, Any]:
        return interpret_line(line)

    def server_fields(self, final: dict[str, Any] | None, metas: Sequence[Any]) -> dict[str, Any]:
        return fields_of(final, metas)


OPENAI = OpenAISSE()

def served_models(base_url: str, headers: Mapping[str, str], models: Sequence[str], *,
                  connect_timeout_s: float = 10.0) -> list[str]:
    """``GET /models`` before the first trial: a clear :class:`ConfigError` if unreachable or a model is missing."""
    import httpx

    try:
        response = httpx.get(base_url + "/models", headers=dict(headers),
                             timeout=httpx.Timeout(30.0, connect=connect_timeout_s))
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach the OpenAI-compatible server at {base_url} ({type(exc).__name__}): "
                          "start it, or fix backend.base_url (it ends in /v1, e.g. http://host:8000/v1)") from None
    try:
        ids = [m["id"] for m in response.json()["data"]] if response.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        ids = None
    if ids is None:
        raise ConfigError(f"{base_url}/models answered HTTP {response.status_code} without a model list: is this "
                          "an OpenAI-compatible server, and does backend.base_url end in /v1?")
    for name in models:
        if name not in ids:
            raise ConfigError(f"model '{name}' is not served by {base_url} (it serves {', '.join(ids) or 'nothing'}): "
                              "set model.name= to one of them")
    return ids
