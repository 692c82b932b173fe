"""The model's state on the server around a trial: ``state=warm | cold | reload``, reloads, offload.

Why: a model load costs seconds and lands in the TTFT of whichever request
triggered it.  ``warm`` (default) absorbs it in untimed warm-ups; ``cold``
unloads the model before every trial (``keep_alive: 0``, confirmed by
``GET /api/ps``) so load time and cold TTFT are measured on purpose; ``reload``
skips warm-ups and flags each trial that loaded the model (``reloaded``), so
the analysis keeps those rows apart instead of letting them inflate a cell's
spread.  After a cell's first call of a visit, ``/api/ps`` tells whether the
load-time request took effect (``size_vram``, ``context_length``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sweep.backends.http import StreamClient, TransportError

# A load_duration this long means the server (re)loaded the model even when our options did not change
# (evicted by keep_alive, another client): a loaded model answers in well under a millisecond of load time.
RELOAD_LOAD_MS = 100.0
UNLOAD_TIMEOUT_S = 30.0


@dataclass
class ServerState:
    """What this process last asked a server to load: a different load key next means a reload.

    ``warmed``: cells (by hash) that had their warm-up on it in this process; a
    cell's first visit warms up even when the model stays loaded.
    """

    last_key: tuple[Any, ...] | None = None
    warmed: set[str] = field(default_factory=set)


_servers: dict[str, ServerState] = {}


def server_state(base_url: str) -> ServerState:
    """The state of the server at ``base_url`` as this process left it, shared by the jobs of a multirun.

    Why per process, not per job: under ``order=random`` a multirun runs one job
    per cell and round, and a job needs a warm-up only when the previous job on
    its server loaded other options.  A new process (a resume, a launcher's new
    worker) knows nothing, so its first visit of each cell warms up.  A server
    that loaded something else behind our back is still caught, by ``load_duration``.
    """
    return _servers.setdefault(base_url, ServerState())


def needs_warmup(visited: bool, last_key: tuple[Any, ...] | None, key: tuple[Any, ...]) -> bool:
    """A visit (state=warm) starts with the warm-ups: the cell is new in this process, or its server last loaded
    other load-time options.

    The one statement of the rule: the run applies it (:mod:`sweep.execute`) and the dry run replays it over the
    rounds' visits (:mod:`sweep.multirun.rounds`), so the warm-ups it announces are the ones that run.
    """
    return not visited or last_key != key


def forget_servers() -> None:
    """The servers this process started are gone (stopped): nothing they had loaded is known any more."""
    _servers.clear()


def was_reloaded(previous_key: tuple[Any, ...] | None, key: tuple[Any, ...], load_duration_ms: float | None) -> bool:
    """The request loaded the model: the model or a load-time option changed, or the server says it loaded."""
    return previous_key != key or (load_duration_ms is not None and load_duration_ms >= RELOAD_LOAD_MS)


def _entry(models: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    return next((m for m in models if model in (m.get("name"), m.get("model"))), None)


async def loaded_models(client: StreamClient) -> list[dict[str, Any]]:
    """``GET /api/ps`` → the models list (empty on a server without the route)."""
    try:
        return list((await client.get_json("/api/ps")).get("models") or [])
    except (TransportError, ValueError, AttributeError):
        return []


async def offload(client: StreamClient, model: str) -> dict[str, Any]:
    """size, size_vram, vram_fraction, context_length of ``model`` as the server reports it ({} if absent).

    Also ``server_parallel`` when the server reports its slots (the embedded engine's ``num_parallel``;
    Ollama's /api/ps has no such field, and then the value read elsewhere stays).
    """
    entry = _entry(await loaded_models(client), model)
    if entry is None:
        return {}
    size, vram = entry.get("size"), entry.get("size_vram")
    out = {
        "size": size, "size_vram": vram,
        "vram_fraction": (vram / size) if isinstance(size, (int, float)) and size and vram is not None else None,
        "context_length": entry.get("context_length"),
    }
    if isinstance(entry.get("num_parallel"), int):
        out["server_parallel"] = entry["num_parallel"]
    return out


async def unload(client: StreamClient, model: str, timeout_s: float = UNLOAD_TIMEOUT_S) -> bool:
    """Ask the server to unload ``model`` (``keep_alive: 0``) and poll ``/api/ps`` until it is gone."""
    try:
        await client.post_json("/api/generate", {"model": model, "keep_alive": 0})
    except TransportError:
        return False
    deadline = time.monotonic() + timeout_s
    while _entry(await loaded_models(client), model) is not None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def block_count(show: dict[str, Any]) -> int | None:
    """The model's layer count from ``/api/show`` (``<architecture>.block_count``), when reported."""
    info = show.get("model_info") or {}
    arch = info.get("general.architecture")
    value = info.get(f"{arch}.block_count") if arch else None
    return int(value) if isinstance(value, (int, float)) else None
