"""Starlette routes speaking Ollama's HTTP API (field names, units, error shapes).

The OpenAI-compatible ``/v1`` routes that Ollama also serves live in
:mod:`sweep.server.openai_routes` and share these handlers' checks and engine.

Why a worker thread per generation: llama.cpp calls block, so each request runs
:meth:`Engine.run` in its own thread, whose events reach the response as
:mod:`sweep.server.streaming` describes (after the first burst, the worker writes
a stream's tokens to the socket itself).  A client that disconnects sets the
job's cancel flag, and the engine stops after the current token.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import OLLAMA_API_VERSION
from .engine import Done, Engine, EngineError, Job, Piece
from .models import GEMMA_TEMPLATE, ModelEntry, ModelNotFound, Registry
from .streaming import BurstStream, Mailbox
from .options import OptionError, describe_defaults, parse_keep_alive, parse_options
from .templates import PromptError, generate_prompt, render_chat
from .vram import process_vram_bytes

log = logging.getLogger("sweep.server.app")

NDJSON = "application/x-ndjson"
_ROLES = {"system", "user", "assistant", "tool"}


class BadRequest(Exception):
    """An HTTP error with Ollama's ``{"error": ...}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Failed:
    """Queue item: the engine raised after (or before) some output."""

    def __init__(self, message: str, status: int = 500) -> None:
        self.message = message
        self.status = status


_END = object()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _iso(ts: _dt.datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(400, "request body must be a JSON object")
    return body


def _model_name(body: dict[str, Any]) -> str:
    name = body.get("model") or body.get("name")
    if not name:
        raise BadRequest(400, "model is required")
    if not isinstance(name, str):
        raise BadRequest(400, f"model must be a string, got {name!r}")
    return name


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(400, f"'{key}' must be true or false, got {value!r}")
    return value


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(400, f"'{key}' must be a string, got {type(value).__name__}")
    return value


class OllamaAPI:
    """The route handlers, bound to one engine and registry."""

    def __init__(self, engine: Engine, registry: Registry, version: str) -> None:
        self.engine = engine
        self.registry = registry
        self.version = version

    # -- helpers ---------------------------------------------------------------

    def _entry(self, name: str) -> ModelEntry:
        try:
            return self.registry.get(name)
        except ModelNotFound as exc:
            raise BadRequest(404, str(exc)) from exc

    def _tag(self, entry: ModelEntry) -> dict[str, Any]:
        return {
            "name": entry.name,
            "model": entry.name,
            "modified_at": entry.modified_at,
            "size": entry.size,
            "digest": entry.digest,
            "details": entry.details(),
        }

    # -- inventory ---------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version_(self, request: Request) -> Response:
        return JSONResponse({"version": self.version})

    async def tags(self, request: Request) -> Response:
        entries = await asyncio.to_thread(lambda: [self._tag(e) for e in self.registry.entries()])
        return JSONResponse({"models": entries})

    async def show(self, request: Request) -> Response:
        body = await _json_body(request)
        entry = self._entry(_model_name(body))
        return JSONResponse(await asyncio.to_thread(self._show, entry))

    def _show(self, entry: ModelEntry) -> dict[str, Any]:
        template = entry.chat_template
        if template is None:
            template = GEMMA_TEMPLATE if entry.architecture.startswith("gemma") else "{{ .Prompt }}"
        defaults = describe_defaults()
        if entry.architecture.startswith("gemma") and entry.chat_template is None:
            defaults["stop"] = "<end_of_turn>"
        parameters = "\n".join(f"{k:<30} {json.dumps(v) if isinstance(v, str) else v}"
                               for k, v in defaults.items())
        note = f"# {entry.note}\n" if entry.note else ""
        modelfile = (
            f"# Modelfile generated by chimera-sweep's embedded server\n{note}"
            f"FROM {entry.path}\nTEMPLATE \"\"\"{template}\"\"\"\n"
            + "".join(f"PARAMETER {line}\n" for line in parameters.splitlines())
        )
        md = entry.header.metadata
        return {
            "license": str(md.get("general.license", "")),
            "modelfile": modelfile,
            "parameters": parameters,
            "template": template,
            "details": entry.details(),
            "model_info": entry.model_info(),
            "capabilities": ["completion"],
            "modified_at": entry.modified_at,
        }

    async def ps(self, request: Request) -> Response:
        infos = self.engine.loaded()
        # measured VRAM of this process (0 on a CPU build), shared among loaded models by size
        vram = await asyncio.to_thread(process_vram_bytes) if infos else 0
        total = sum(i.size for i in infos) or 1
        models = await asyncio.to_thread(
            lambda: [
                {
                    "name": i.entry.name,
                    "model": i.entry.name,
                    "size": i.size,
                    "digest": i.entry.digest,
                    "details": i.entry.details(),
                    "expires_at": _iso(i.expires_at),
                    "size_vram": vram * i.size // total,
                    "context_length": i.context_length,
                }
                for i in infos
            ]
        )
        return JSONResponse({"models": models})

    async def pull(self, request: Request) -> Response:
        """Models are local files: a known model 'pulls' instantly, an unknown one is 404."""
        body = await _json_body(request)
        entry = self._entry(_model_name(body))
        if _flag(body, "stream", True):
            lines = [{"status": "pulling manifest"},
                     {"status": "verifying sha256 digest", "digest": f"sha256:{entry.digest}",
                      "total": entry.size, "completed": entry.size},
                     {"status": "success"}]
            payload = "".join(json.dumps(x) + "\n" for x in lines)
            return Response(payload, media_type=NDJSON)
        return JSONResponse({"status": "success"})

    # -- generation ------------------------------------------------------------------

    def _job(self, body: dict[str, Any], entry: ModelEntry, prompt: str | None,
             received_ns: int) -> Job:
        if body.get("format"):
            raise BadRequest(400, "'format' (JSON mode / schemas) is not supported by the embedded server")
        try:
            load, sampling = parse_options(body.get("options"))
            keep_alive = parse_keep_alive(body.get("keep_alive"), self.engine_keep_alive)
        except OptionError as exc:
            raise BadRequest(400, str(exc)) from exc
        context = body.get("context") or ()
        if not isinstance(context, (list, tuple)) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in context
        ):
            raise BadRequest(400, "'context' must be a list of token ids")
        return Job(entry=entry, load=load, sampling=sampling, prompt=prompt,
                   keep_alive_s=keep_alive, context=tuple(context), received_ns=received_ns)

    engine_keep_alive: float = 300.0

    async def generate(self, request: Request) -> Response:
        received = time.perf_counter_ns()
        body = await _json_body(request)
        entry = self._entry(_model_name(body))
        prompt = _text(body, "prompt") or ""
        system, template = _text(body, "system"), _text(body, "template")
        raw, stream = _flag(body, "raw", False), _flag(body, "stream", True)
        try:
            text = await asyncio.to_thread(generate_prompt, entry, prompt, system, template, raw) \
                if prompt else None
        except PromptError as exc:
            raise BadRequest(400, str(exc)) from exc
        job = self._job(body, entry, text, received)

        def piece(t: str) -> dict[str, Any]:
            return {"model": entry.name, "created_at": _now(), "response": t, "done": False}

        def final(d: Done, full: str) -> dict[str, Any]:
            out = {"model": entry.name, "created_at": _now(), "response": full, "done": True,
                   "done_reason": d.done_reason}
            if d.context:
                out["context"] = d.context
            return {**out, **_timings(d)}

        return await self._respond(job, stream, piece, final)

    async def chat(self, request: Request) -> Response:
        received = time.perf_counter_ns()
        body = await _json_body(request)
        entry = self._entry(_model_name(body))
        messages = _messages(body.get("messages"))
        stream = _flag(body, "stream", True)
        try:
            text = await asyncio.to_thread(render_chat, entry, messages) if messages else None
        except PromptError as exc:
            raise BadRequest(400, str(exc)) from exc
        job = self._job({**body, "context": None}, entry, text, received)

        def piece(t: str) -> dict[str, Any]:
            return {"model": entry.name, "created_at": _now(),
                    "message": {"role": "assistant", "content": t}, "done": False}

        def final(d: Done, full: str) -> dict[str, Any]:
            return {"model": entry.name, "created_at": _now(),
                    "message": {"role": "assistant", "content": full}, "done": True,
                    "done_reason": d.done_reason, **_timings(d)}

        return await self._respond(job, stream, piece, final)

    async def _respond(
        self,
        job: Job,
        stream: bool,
        piece: Callable[[str], dict[str, Any]],
        final: Callable[[Done, str], dict[str, Any]],
    ) -> Response:
        queue, first, failed = await begin(self.engine, job)
        if failed is not None:
            return _error(failed.status, failed.message)
        if not stream:
            parts: list[str] = []
            item = first
            while True:
                if isinstance(item, Piece):
                    parts.append(item.text)
                elif isinstance(item, Done):
                    return JSONResponse(final(item, "".join(parts)))
                elif isinstance(item, _Failed):
                    return _error(item.status, item.message)
                elif item is _END:
                    return _error(500, "generation ended without a final result")
                item = await queue.get()

        return BurstStream(first, queue, job.cancel, lambda items: _ndjson_burst(items, piece, final), NDJSON)


def _ndjson_burst(items: list[Any], piece: Callable[[str], dict[str, Any]],
                  final: Callable[[Done, str], dict[str, Any]]) -> tuple[bytes, bool]:
    """NDJSON lines for a burst of events, and whether the stream ends with it."""
    out = bytearray()
    for item in items:
        if isinstance(item, Piece):
            out += _line(piece(item.text))
            continue
        if isinstance(item, Done):
            out += _line(final(item, ""))
        elif isinstance(item, _Failed):
            out += _line({"error": item.message})
        else:  # _END before a final result
            out += _line({"error": "generation ended without a final result"})
        return bytes(out), True
    return bytes(out), False


def _timings(d: Done) -> dict[str, int]:
    return {
        "total_duration": d.total_duration,
        "load_duration": d.load_duration,
        "prompt_eval_count": d.prompt_eval_count,
        "prompt_eval_duration": d.prompt_eval_duration,
        "eval_count": d.eval_count,
        "eval_duration": d.eval_duration,
    }


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode()


def _messages(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(400, "'messages' must be a list")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise BadRequest(400, f"messages[{i}] must be an object")
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise BadRequest(400, f"messages[{i}]: invalid role {role!r}")
        if content is not None and not isinstance(content, str):
            raise BadRequest(400, f"messages[{i}]: content must be a string")
        out.append({"role": role, "content": content or ""})
    return out


async def begin(engine: Engine, job: Job) -> tuple[Mailbox, Any, _Failed | None]:
    """Start the job and wait for its first event: (mailbox, first event, the failure if it failed at once)."""
    box = _start(engine, job)
    first = await box.get()
    if first is _END:
        return box, first, _Failed("generation ended without a result")
    return box, first, first if isinstance(first, _Failed) else None


def _start(engine: Engine, job: Job) -> Mailbox:
    """Run the job in a worker thread; its events arrive in the returned mailbox."""
    box = Mailbox(asyncio.get_running_loop())

    def put(item: Any) -> None:
        try:
            box.put(item)
        except RuntimeError:  # event loop closed (shutdown): stop generating
            job.cancel.set()

    def work() -> None:
        try:
            engine.run(job, put)
        except EngineError as exc:
            put(_Failed(str(exc)))
        except Exception as exc:  # keep serving; report the failure to this client only
            log.exception("generation failed")
            put(_Failed(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            put(_END)

    threading.Thread(target=work, name=f"gen-{job.entry.name}", daemon=True).start()
    return box


def create_app(engine: Engine, registry: Registry, keep_alive_s: float = 300.0,
               version: str | None = None) -> Starlette:
    """The ASGI app.  ``version`` defaults to Ollama's API level tagged as ours."""
    api = OllamaAPI(engine, registry, version or OLLAMA_API_VERSION)
    api.engine_keep_alive = keep_alive_s

    def wrap(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except BadRequest as exc:
                return _error(exc.status, exc.message)

        return endpoint

    routes = [
        Route("/", wrap(api.root), methods=["GET", "HEAD"]),
        Route("/api/version", wrap(api.version_), methods=["GET", "HEAD"]),
        Route("/api/tags", wrap(api.tags), methods=["GET", "HEAD"]),
        Route("/api/show", wrap(api.show), methods=["POST"]),
        Route("/api/ps", wrap(api.ps), methods=["GET"]),
        Route("/api/pull", wrap(api.pull), methods=["POST"]),
        Route("/api/generate", wrap(api.generate), methods=["POST"]),
        Route("/api/chat", wrap(api.chat), methods=["POST"]),
    ]
    from .openai_routes import openai_routes  # the /v1 routes build on this module's handlers

    routes += openai_routes(api)
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(engine.shutdown)

    return Starlette(routes=routes, lifespan=lifespan)
