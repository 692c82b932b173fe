"""Where a job's requests go: a real Ollama's address (or several), an OpenAI-compatible server's,
our embedded server(s), or a llama.cpp ``llama-server`` started for the sweep.

The embedded server is started once per process (a multirun's jobs share it,
so model loads show up only where options really change) and stopped at exit,
on Ctrl-C and on errors.  ``backend.instances=N`` starts N of them, each on its
own port (the dual-Ollama set-up of the multi-agent reports); all are stopped
together.  llama-server takes the load-time options as flags, so
:func:`prepare_cell` (re)starts it before a cell when they change (see
:mod:`sweep.backends.llama_server`).

``backend.parallel`` (the server's slots) is load-time for both: the embedded
engine is restarted with ``--parallel N`` when a job asks for other slots, and
llama-server with ``-np N``.  A running server's slots are its own setting;
:func:`server_slots` reads them where it can (``server_parallel``).
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from typing import Any

from sweep.cells import Cell, ConfigError
from sweep.backends.hosts import host_urls
from sweep.backends.kinds import Start, kind_of
from sweep.config import BackendConfig

_embedded: dict[tuple[str | None, int], Any] = {}
_embedded_slots: dict[tuple[str | None, int], int] = {}   # the --parallel each one was started with
#: Slots of a server this sweep starts when ``backend.parallel`` is unset (one request at a time).
DEFAULT_SLOTS = 1


def base_url_for(backend: BackendConfig, first: Cell | None = None,
                 say: Callable[[str], None] | None = None) -> str:
    """The (first) server address for this backend, starting the embedded engine (or llama-server for ``first``)."""
    return base_urls_for(backend, first, say)[0]


def base_urls_for(backend: BackendConfig, first: Cell | None = None,
                  say: Callable[[str], None] | None = None) -> list[str]:
    """Every server of this backend: ``backend.hosts`` (or ``base_url``), ``instances`` embedded engines,
    or the llama-server started for the cell ``first``."""
    start = kind_of(backend).start
    if start is Start.REMOTE:
        return host_urls(backend)
    if start is Start.LLAMA_SERVER:
        if first is None:
            raise ConfigError("backend=llama_server needs a cell to choose llama-server's flags")
        return [prepare_cell(backend, first, say)]
    slots = backend.parallel or DEFAULT_SLOTS
    return [_start_embedded(backend.model_dir, i, slots, say) for i in range(backend.instances)]


def _start_embedded(model_dir: str | None, index: int, slots: int = DEFAULT_SLOTS,
                    say: Callable[[str], None] | None = None) -> str:
    """The embedded engine ``index`` with ``slots`` parallel slots: started once, restarted when the slots change.

    Always started with ``--parallel``: an ``OLLAMA_NUM_PARALLEL`` in the sweep's own environment
    must not change what a cell measures behind its back.
    """
    key = (model_dir, index)
    if key in _embedded and _embedded_slots.get(key) != slots:
        _embedded.pop(key).stop()
        if say is not None:
            say(f"embedded engine restarted with --parallel {slots} (was {_embedded_slots[key]})")
    if key not in _embedded:
        from sweep.server import launch  # imported lazily: `backend=ollama` needs no engine

        try:
            _embedded[key] = launch.start(model_dir=model_dir, extra_args=("--parallel", str(slots)))
            _embedded_slots[key] = slots
        except RuntimeError as exc:
            raise ConfigError(
                f"the embedded engine did not start ({exc}); install it with 'make install' "
                "or use a running Ollama with backend=ollama"
            ) from None
        atexit.register(stop_embedded)
    return _embedded[key].base_url


def prepare_cell(backend: BackendConfig, cell: Cell, say: Callable[[str], None] | None = None) -> str:
    """The address to measure ``cell`` at: for llama_server, a server started with the cell's flags."""
    if kind_of(backend).start is not Start.LLAMA_SERVER:
        return base_url_for(backend)
    from sweep.backends import llama_server

    before = llama_server.MANAGER.server
    try:
        server = llama_server.MANAGER.ensure(cell.model, cell.options, backend.model_dir, cell.parallel)
    except RuntimeError as exc:
        raise ConfigError(f"llama-server did not start ({exc})") from None
    if server is not before and say is not None:
        say(f"llama-server started: pid {server.pid}, port {server.port}, flags "
            f"{' '.join(server.launch.flags) or '(defaults)'} (model {server.launch.path.name})")
    return server.base_url


def server_version(backend: BackendConfig) -> str | None:
    """For servers that have no /api/version: llama-server's own version, else unknown."""
    if kind_of(backend).start is not Start.LLAMA_SERVER:
        return None
    from sweep.backends import llama_server

    return llama_server.version(llama_server.binary())


def server_pid(backend: BackendConfig, base_url: str) -> int | None:
    """The server's process on this machine, for CPU/RSS telemetry (None if it runs elsewhere)."""
    kind = kind_of(backend)
    if kind.start is Start.EMBEDDED:
        server = next((s for s in _embedded.values() if s.base_url == base_url), None)
        return server.pid if server is not None else None
    if kind.start is Start.LLAMA_SERVER:
        from sweep.backends import llama_server

        return llama_server.MANAGER.server.pid if llama_server.MANAGER.server is not None else None
    if kind.openai_api:   # a remote OpenAI-compatible server: no way to tell its process
        return None
    from sweep.telemetry import find_local_ollama_pid

    return find_local_ollama_pid(base_url)


def server_slots(backend: BackendConfig, base_url: str) -> tuple[int | None, str]:
    """The slots of the server at ``base_url`` (requests it generates at once) and where that was read.

    A server this sweep started: what it was started with.  A local ``ollama serve``: its
    ``OLLAMA_NUM_PARALLEL``, read from its environment (``/proc/PID/environ``, same user only);
    unset there, Ollama chooses by itself (null).  Any other running server: null.
    """
    kind = kind_of(backend)
    if kind.start is Start.EMBEDDED:
        key = next((k for k, s in _embedded.items() if s.base_url == base_url), None)
        return (_embedded_slots[key], "--parallel") if key is not None else (None, "unknown")
    if kind.start is Start.LLAMA_SERVER:
        from sweep.backends import llama_server

        server = llama_server.MANAGER.server
        return (server.slots, "-np") if server is not None else (None, "unknown")
    pid = server_pid(backend, base_url)
    if pid is None:
        return None, ("unknown: a running server's own setting (OLLAMA_NUM_PARALLEL where `ollama serve` runs)"
                      if not kind.openai_api else "unknown: a running server's own setting")
    return ollama_env_slots(pid)


def ollama_env_slots(pid: int) -> tuple[int | None, str]:
    """``OLLAMA_NUM_PARALLEL`` in the environment of the local Ollama ``pid``, and where it was read."""
    import psutil

    try:
        raw = psutil.Process(pid).environ().get("OLLAMA_NUM_PARALLEL")
    except psutil.Error as exc:
        return None, f"unknown: the environment of ollama pid {pid} is not readable ({type(exc).__name__})"
    if raw is None:
        return None, f"OLLAMA_NUM_PARALLEL unset in the environment of ollama pid {pid} (Ollama's own default)"
    try:
        return int(raw), f"OLLAMA_NUM_PARALLEL in the environment of ollama pid {pid}"
    except ValueError:
        return None, f"unknown: OLLAMA_NUM_PARALLEL={raw!r} in the environment of ollama pid {pid}"


def missing_model_hint(backend: BackendConfig, served: list[str]) -> str:
    """What to do about a model the server does not have (a running Ollama's own hint: ``ollama pull``)."""
    if kind_of(backend).start is not Start.EMBEDDED:
        return ""
    names = ", ".join(served) or "nothing"
    return (f"the embedded engine serves {names}; choose one with model=gemma3_270m or model=smollm2_135m, "
            "or serve your own .gguf with backend.model_dir=DIR")


def stop_embedded() -> None:
    """Stop every server this process started: embedded engines and llama-server (idempotent)."""
    from sweep.backends.model_state import forget_servers

    forget_servers()
    while _embedded:
        _, server = _embedded.popitem()
        server.stop()
    _embedded_slots.clear()
    import sys

    if "sweep.backends.llama_server" in sys.modules:  # never started one otherwise
        sys.modules["sweep.backends.llama_server"].MANAGER.stop()


def openai_preflight(backend: BackendConfig, base_url: str, headers: dict[str, str],
                     cells: list[Cell]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """Before the first trial on an OpenAI-compatible server: the model is served; version and model identity.

    llama-server's models are our own GGUFs, so their digest and details come
    from the file; a remote server's models are known by name only.
    """
    from sweep import provenance
    from sweep.backends.openai import served_models

    names = sorted({c.model for c in cells})
    served_models(base_url, headers, names, connect_timeout_s=backend.connect_timeout_s)
    models: dict[str, dict[str, Any]] = {}
    for name in names:
        if kind_of(backend).start is Start.LLAMA_SERVER:   # our own GGUFs
            from sweep.server.models import default_registry

            entry = default_registry(backend.model_dir).get(name)
            models[name] = provenance.model_record({"details": entry.details()}, {"digest": entry.digest})
        else:
            models[name] = provenance.model_record({}, None)
    return server_version(backend), models
