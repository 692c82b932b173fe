"""What the Ollama routes (:mod:`sweep.server.app`) and the OpenAI routes (:mod:`sweep.server.openai_routes`) share.

Why a module of its own: the /v1 routes translate a request into the same validated
:class:`~sweep.server.engine.Job` as ``/api/generate``, so both need the request checks,
the engine's event queue and the model lookup.  Kept here, both route modules import
down to it and neither imports the other's private names (they did, in a circle).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from starlette.requests import Request

from .engine import Engine, EngineError, Job
from .models import ModelEntry, ModelNotFound, Registry
from .options import OptionError, parse_keep_alive, parse_options
from .streaming import Mailbox

log = logging.getLogger("sweep.server.app")

_ROLES = {"system", "user", "assistant", "tool"}


class BadRequest(Exception):
    """An HTTP error with Ollama's ``{"error": ...}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Failed:
    """Queue item: the engine raised after (or before) some output."""

    def __init__(self, message: str, status: int = 500) -> None:
        self.message = message
        self.status = status


END = object()  # queue item: the generation ended


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(400, "request body must be a JSON object")
    return body


def model_name(body: dict[str, Any]) -> str:
    name = body.get("model") or body.get("name")
    if not name:
        raise BadRequest(400, "model is required")
    if not isinstance(name, str):
        raise BadRequest(400, f"model must be a string, got {name!r}")
    return name


class Handlers:
    """The engine, registry and checks every route handler builds on."""

    engine_keep_alive: float = 300.0

    def __init__(self, engine: Engine, registry: Registry, version: str) -> None:
        self.engine = engine
        self.registry = registry
        self.version = version

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.registry.get(name)
        except ModelNotFound as exc:
            raise BadRequest(404, str(exc)) from exc

    def job(self, body: dict[str, Any], entry: ModelEntry, prompt: str | None,
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
        cache_prompt = body.get("cache_prompt", True)   # llama-server's extension field, also read here
        if not isinstance(cache_prompt, bool):
            raise BadRequest(400, f"'cache_prompt' must be true or false, got {cache_prompt!r}")
        return Job(entry=entry, load=load, sampling=sampling, prompt=prompt,
                   keep_alive_s=keep_alive, context=tuple(context), received_ns=received_ns,
                   cache_prompt=cache_prompt)


def checked_messages(value: Any) -> list[dict[str, Any]]:
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


async def begin(engine: Engine, job: Job) -> tuple[Mailbox, Any, Failed | None]:
    """Start the job and wait for its first event: (mailbox, first event, the failure if it failed at once)."""
    box = _start(engine, job)
    first = await box.get()
    if first is END:
        return box, first, Failed("generation ended without a result")
    return box, first, first if isinstance(first, Failed) else None


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
            put(Failed(str(exc)))
        except Exception as exc:  # keep serving; report the failure to this client only
            log.exception("generation failed")
            put(Failed(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            put(END)

    threading.Thread(target=work, name=f"gen-{job.entry.name}", daemon=True).start()
    return box
