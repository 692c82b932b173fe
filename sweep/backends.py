"""Where a job's requests go: a real Ollama's address, or our embedded server.

The embedded server is started once per process (a multirun's jobs share it,
so model loads show up only where options really change) and stopped at exit,
on Ctrl-C and on errors.
"""

from __future__ import annotations

import atexit
from typing import Any

from omegaconf import DictConfig

from sweep.plan import ConfigError, normalize_base_url

_embedded: dict[str | None, Any] = {}


def base_url_for(backend: DictConfig) -> str:
    """The server address for this backend, starting the embedded engine if needed."""
    if backend.kind == "ollama":
        return normalize_base_url(backend.base_url)
    key = backend.model_dir
    if key not in _embedded:
        from sweep.server import launch  # imported lazily: `backend=ollama` needs no engine

        try:
            _embedded[key] = launch.start(model_dir=key)
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
        server = _embedded.get(backend.model_dir)
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
