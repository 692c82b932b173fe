"""Where a job's requests go: a real Ollama's address (or several), or our embedded server(s).

The embedded server is started once per process (a multirun's jobs share it,
so model loads show up only where options really change) and stopped at exit,
on Ctrl-C and on errors.  ``backend.instances=N`` starts N of them, each on its
own port (the dual-Ollama set-up of the multi-agent reports); all are stopped
together.
"""

from __future__ import annotations

import atexit
from typing import Any

from omegaconf import DictConfig

from sweep.plan import ConfigError, host_urls

_embedded: dict[tuple[str | None, int], Any] = {}


def base_url_for(backend: DictConfig) -> str:
    """The (first) server address for this backend, starting the embedded engine if needed."""
    return base_urls_for(backend)[0]


def base_urls_for(backend: DictConfig) -> list[str]:
    """Every server of this backend: ``backend.hosts`` (or ``base_url``), or ``instances`` embedded engines."""
    if backend.kind == "ollama":
        return host_urls(backend)
    return [_start_embedded(backend.model_dir, i) for i in range(backend.instances)]


def _start_embedded(model_dir: str | None, index: int) -> str:
    key = (model_dir, index)
    if key not in _embedded:
        from sweep.server import launch  # imported lazily: `backend=ollama` needs no engine

        try:
            _embedded[key] = launch.start(model_dir=model_dir)
        except RuntimeError as exc:
            raise ConfigError(
                f"the embedded engine did not start ({exc}); install it with 'make install' "
                "or use a running Ollama with backend=ollama"
            ) from None
        atexit.register(stop_embedded)
    return _embedded[key].base_url


def server_pid(backend: DictConfig, base_url: str) -> int | None:
    """The server's process on this machine, for CPU/RSS telemetry (None if it runs elsewhere)."""
    if backend.kind == "embedded":
        server = next((s for s in _embedded.values() if s.base_url == base_url), None)
        return server.pid if server is not None else None
    from sweep.telemetry import find_local_ollama_pid

    return find_local_ollama_pid(base_url)


def missing_model_hint(backend: DictConfig, served: list[str]) -> str:
    """What to do about a model the server does not have."""
    if backend.kind == "ollama":
        return ""
    names = ", ".join(served) or "nothing"
    return (f"the embedded engine serves {names}; choose one with model=gemma3_270m or model=smollm2_135m, "
            "or serve your own .gguf with backend.model_dir=DIR")


def stop_embedded() -> None:
    """Stop every embedded server this process started (idempotent)."""
    while _embedded:
        _, server = _embedded.popitem()
        server.stop()
