"""The OpenAI-compatible routes Ollama itself serves: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

Why here and this shape: clients written for the OpenAI API (the official
``openai`` package, and our own ``backend=openai``) must work against the
embedded server as they do against Ollama.  A request is translated into the
same validated :class:`~sweep.server.engine.Job` as ``/api/generate`` (so option
checks, templates and the engine path are shared), and the engine's events are
written as OpenAI objects: one SSE ``data:`` line per token, a chunk with
``finish_reason``, a ``usage`` chunk when ``stream_options.include_usage`` is
set, then ``data: [DONE]``.  Like llama.cpp's ``llama-server``, the usage chunk
(and a non-streamed answer) also carries ``timings`` (prompt/predicted counts
and milliseconds measured by the engine), so a sweep gets server-side timings
over this API too.  Errors use OpenAI's ``{"error": {"message", "type", ...}}``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .handlers import END, BadRequest, Failed, Handlers, begin, checked_messages, json_body, model_name
from .engine import Done, Piece
from .streaming import BurstStream
from .templates import PromptError, generate_prompt, render_chat

SSE = "text/event-stream"
NS_PER_MS = 1_000_000

# OpenAI request field -> Ollama option.  top_k and repeat_penalty are llama.cpp's
# extension fields (llama-server accepts them too); everything else is OpenAI's own.
_OPTION_FIELDS = {
    "max_tokens": "num_predict", "max_completion_tokens": "num_predict", "temperature": "temperature",
    "top_p": "top_p", "seed": "seed", "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty", "stop": "stop", "top_k": "top_k", "repeat_penalty": "repeat_penalty",
    "ignore_eos": "ignore_eos",
}


def _openai_error(status: int, message: str, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}},
                        status_code=status)


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI sampling fields -> an Ollama ``options`` object (validated later, with the same rules)."""
    n = body.get("n", 1)
    if n not in (1, None):
        raise BadRequest(400, "'n' other than 1 is not supported by the embedded server")
    if body.get("response_format") not in (None, {"type": "text"}):
        raise BadRequest(400, "'response_format' (JSON mode / schemas) is not supported by the embedded server")
    return {option: body[name] for name, option in _OPTION_FIELDS.items() if body.get(name) is not None}


def _include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict) or not isinstance(opts.get("include_usage", False), bool):
        raise BadRequest(400, "'stream_options' must be an object like {\"include_usage\": true}")
    return bool(opts.get("include_usage"))


def _chat_messages(value: Any) -> list[dict[str, Any]]:
    """OpenAI messages (content as a string or a list of text parts) -> plain role/content dicts."""
    if not isinstance(value, list) or not value:
        raise BadRequest(400, "'messages' must be a non-empty list")
    flat = []
    for i, m in enumerate(value):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if len(texts) != len(content):
                raise BadRequest(400, f"messages[{i}]: only text content parts are supported")
            m = {**m, "content": "".join(texts)}
        flat.append(m)
    return checked_messages(flat)


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise BadRequest(400, "'prompt' must be a string (or a list of one string)")
    return value


def usage_of(done: Done) -> dict[str, Any]:
    """OpenAI ``usage`` plus llama.cpp-style ``timings`` from the engine's own measurements."""
    usage = {"prompt_tokens": done.prompt_eval_count, "completion_tokens": done.eval_count,
             "total_tokens": done.prompt_eval_count + done.eval_count}
    predicted_ms = done.eval_duration / NS_PER_MS
    timings = {"prompt_n": done.prompt_eval_count, "prompt_ms": done.prompt_eval_duration / NS_PER_MS,
               "predicted_n": done.eval_count, "predicted_ms": predicted_ms,
               "predicted_per_second": done.eval_count / (predicted_ms / 1000) if predicted_ms > 0 else None}
    return {"usage": usage, "timings": timings}


def _sse(obj: dict[str, Any] | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


class OpenAIRoutes:
    """The /v1 handlers, sharing the Ollama API's registry, option checks and engine."""

    def __init__(self, api: Handlers) -> None:
        self.api = api

    async def models(self, request: Request) -> Response:
        entries = list(self.api.registry.entries())
        return JSONResponse({"object": "list", "data": [self._model(e) for e in entries]})

    async def model(self, request: Request) -> Response:
        return JSONResponse(self._model(self.api.entry(request.path_params["name"])))

    @staticmethod
    def _model(entry: Any) -> dict[str, Any]:
        return {"id": entry.name, "object": "model", "created": int(entry.path.stat().st_mtime),
                "owned_by": "library"}

    async def chat(self, request: Request) -> Response:
        received = time.perf_counter_ns()
        body = await json_body(request)
        entry = self.api.entry(model_name(body))
        messages = _chat_messages(body.get("messages"))
        try:
            text = render_chat(entry, messages)
        except PromptError as exc:
            raise BadRequest(400, str(exc)) from exc

        def piece(t: str) -> dict[str, Any]:
            return {"index": 0, "delta": {"role": "assistant", "content": t}, "finish_reason": None}

        def whole(t: str, reason: str) -> dict[str, Any]:
            return {"index": 0, "message": {"role": "assistant", "content": t}, "finish_reason": reason}

        return await self._respond(body, entry, text, received, "chat.completion", piece, whole,
                                   {"index": 0, "delta": {}})

    async def completions(self, request: Request) -> Response:
        received = time.perf_counter_ns()
        body = await json_body(request)
        entry = self.api.entry(model_name(body))
        try:
            text = generate_prompt(entry, _prompt(body.get("prompt")), None, None, False)
        except PromptError as exc:
            raise BadRequest(400, str(exc)) from exc

        def piece(t: str) -> dict[str, Any]:
            return {"index": 0, "text": t, "logprobs": None, "finish_reason": None}

        def whole(t: str, reason: str) -> dict[str, Any]:
            return {"index": 0, "text": t, "logprobs": None, "finish_reason": reason}

        return await self._respond(body, entry, text, received, "text_completion", piece, whole,
                                   {"index": 0, "text": "", "logprobs": None})

    async def _respond(self, body: dict[str, Any], entry: Any, text: str, received: int, kind: str,
                       piece: Callable[[str], dict[str, Any]], whole: Callable[[str, str], dict[str, Any]],
                       last: dict[str, Any]) -> Response:
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest(400, f"'stream' must be true or false, got {stream!r}")
        include_usage = _include_usage(body)
        job = self.api.job({"options": _options(body), "cache_prompt": body.get("cache_prompt", True)}, entry, text,
                           received)
        head = {"id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex[:24]}",
                "object": kind + (".chunk" if stream and kind == "chat.completion" else ""),
                "created": int(time.time()), "model": entry.name, "system_fingerprint": "chimera-embedded"}
        queue, first, failed = await begin(self.api.engine, job)
        if failed is not None:
            return _openai_error(failed.status, failed.message)
        if not stream:
            parts: list[str] = []
            item = first
            while not isinstance(item, Done):
                if isinstance(item, Failed) or item is END:
                    return _openai_error(500, getattr(item, "message", "generation ended without a result"))
                parts.append(item.text)
                item = await queue.get()
            return JSONResponse({**head, "choices": [whole("".join(parts), item.done_reason)], **usage_of(item)})

        def burst(items: list[Any]) -> tuple[bytes, bool]:
            """SSE events for what arrived together, and whether the stream ends with it."""
            out = bytearray()
            for item in items:
                if isinstance(item, Piece):
                    if item.text:
                        out += _sse({**head, "choices": [piece(item.text)]})
                    continue
                if isinstance(item, Done):
                    out += _sse({**head, "choices": [{**last, "finish_reason": item.done_reason}]})
                    if include_usage:
                        out += _sse({**head, "choices": [], **usage_of(item)})
                    out += _sse("[DONE]")
                else:
                    message = item.message if isinstance(item, Failed) else "generation ended without a result"
                    out += _sse({"error": {"message": message, "type": "server_error", "param": None,
                                           "code": None}})
                return bytes(out), True
            return bytes(out), False

        return BurstStream(first, queue, job.cancel, burst, SSE, headers={"Cache-Control": "no-cache"})


def openai_routes(api: Handlers) -> list[Route]:
    """The /v1 routes, each answering errors in OpenAI's shape."""
    v1 = OpenAIRoutes(api)

    def wrap(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except BadRequest as exc:
                code = "model_not_found" if exc.status == 404 else None
                return _openai_error(exc.status, exc.message, code)

        return endpoint

    return [
        Route("/v1/models", wrap(v1.models), methods=["GET"]),
        Route("/v1/models/{name:path}", wrap(v1.model), methods=["GET"]),
        Route("/v1/chat/completions", wrap(v1.chat), methods=["POST"]),
        Route("/v1/completions", wrap(v1.completions), methods=["POST"]),
    ]
