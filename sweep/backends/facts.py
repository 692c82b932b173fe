"""What a server says before the first trial: its version and each model's identity, asked once per sweep.

A multirun's jobs run one after another in one process against the same
servers.  Neither a server's version nor a model's digest and details change
between two cells of one sweep, yet asking again for every cell cost three
requests (``/api/version``, ``/api/tags``, ``/api/show``) and a new client:
about 30 ms per cell on a quiet 2-core machine, the largest part of a cell's
overhead against a fast server.  So a process keeps the answers per server
for the sweep it is running (a Ray worker that later runs jobs of another
sweep asks again); a model not asked about yet costs its requests, and a
missing model is never kept (it is a :class:`ConfigError` for every job that
needs it).

A server is its backend kind, address and headers, and for servers this
process started (embedded, llama-server) also its pid: a restarted one is
asked again.  An outside Ollama restarted mid-sweep (say, upgraded) keeps the
version it had when the sweep first asked it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sweep import provenance
from sweep.config import BackendConfig
from sweep.backends import processes as backends
from sweep.backends.model_state import block_count
from sweep.backends.kinds import Start, kind_of
from sweep.backends.ollama import OllamaClient
from sweep.cells import Cell


@dataclass
class Facts:
    """One server's answers: its version and, per model asked so far, the model's record (with ``layers``)."""

    version: str | None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


_known: dict[tuple[Any, ...], Facts] = {}   # of one sweep: (sweep id, kind, url, headers, own pid) → facts


def server_facts(sweep_id: str, b: BackendConfig, url: str, headers: dict[str, str],
                 cells: list[Cell]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """The server's version and the record of each cell's model (``layers``: Ollama's block count).

    Only models this process has not asked ``url`` about in this sweep cost
    requests; a missing model or an unreachable server raises :class:`ConfigError`.
    """
    if any(k[0] != sweep_id for k in _known):
        _known.clear()
    kind = kind_of(b)
    own = None if kind.remote else backends.server_pid(b, url)
    key = (sweep_id, b.kind, url, tuple(sorted(headers.items())), own)
    known = _known.get(key)
    todo = [c for c in cells if known is None or c.model not in known.models]
    if todo:
        ask = backends.openai_preflight if kind.openai_api else _ollama_preflight
        version, shown = ask(b, url, headers, todo)
        known = _known.setdefault(key, Facts(version))
        known.models.update(shown)
    assert known is not None
    return known.version, {c.model: known.models[c.model] for c in cells}


def _tags(client: OllamaClient) -> list[dict[str, Any]]:
    """``/api/tags`` for model digests; a server without it still gets measured."""
    import httpx  # lazily: httpx (with its CLI's rich/click/pygments) costs ~0.3 s to import

    try:
        return client.tags()
    except (httpx.HTTPError, ValueError):
        return []


def _ollama_preflight(b: BackendConfig, base_url: str, headers: dict[str, str],
                      cells: list[Cell]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The server's version and each model's identity; a missing model is a :class:`ConfigError`."""
    with OllamaClient(base_url, connect_timeout_s=b.connect_timeout_s, stall_timeout_s=b.stall_timeout_s,
                      headers=headers) as client:
        server_version = client.version()
        tags = {m.get("name", ""): m for m in _tags(client)}
        served = list(tags) if kind_of(b).start is Start.EMBEDDED else []
        models = {}
        for cell in cells:
            if cell.model in models:
                continue
            show = client.show(cell.model, missing_hint=backends.missing_model_hint(b, served) or None)
            models[cell.model] = {**provenance.model_record(show, tags.get(cell.model)), "layers": block_count(show)}
    return server_version, models
