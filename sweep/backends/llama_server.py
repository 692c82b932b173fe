"""llama.cpp's own ``llama-server`` as a measured engine (``backend=llama_server``).

Why a process manager here: the load-time options of a cell (context, GPU
layers, threads, batch) are command-line flags of llama-server, not request
fields.  So the sweep starts llama-server on a free port of 127.0.0.1 with the
cell's flags, waits for ``GET /health``, measures it through the OpenAI format,
and restarts it only when the flags (or the model) change; the port stays the
same across restarts, so the base URL does too.

No orphan: the child is put in its own session (Ctrl-C reaches only the sweep,
whose exit handler stops it) and gets ``PR_SET_PDEATHSIG`` = SIGKILL, so a
SIGKILLed sweep takes it along.  (The death signal follows the *thread* that
started the child: start it from the thread that lives as long as the sweep.)
"""

from __future__ import annotations

import atexit
import collections
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sweep.backends.llama_tools import missing_hint, tool_path
from sweep.cells import ConfigError
from sweep.server.launch import die_with_parent, stop_process

#: load-time option → llama-server flag(s).  num_batch sets the micro-batch too, as the embedded engine does.
FLAGS: dict[str, tuple[str, ...]] = {"num_ctx": ("-c",), "num_gpu": ("-ngl",), "num_thread": ("-t",),
                                     "num_batch": ("-b", "-ub")}
#: Slots when ``backend.parallel`` is unset: one request at a time (like the embedded engine, OLLAMA_NUM_PARALLEL=1).
DEFAULT_SLOTS = 1


def flags_for(options: Mapping[str, Any], parallel: int | None = None) -> tuple[str, ...]:
    """The command-line flags for a cell's load-time options (unset: llama-server's default) and its slots.

    llama-server splits its context (``-c``) over its slots (``-np``): ``-c 2048 -np 2`` gives each
    request 1024 positions.  ``num_ctx`` means the context *one request* gets, as in Ollama and the
    embedded engine (each of whose slots holds the full ``num_ctx``), so llama-server is given
    ``-c num_ctx × slots``.  Without ``num_ctx``, llama-server's default context is split over the slots.
    """
    slots = parallel or DEFAULT_SLOTS
    out: list[str] = []
    for name, switches in FLAGS.items():
        if options.get(name) is not None:
            value = options[name] * slots if name == "num_ctx" else options[name]
            for switch in switches:
                out += [switch, str(value)]
    return (*out, "-np", str(slots))


def model_path(name: str, model_dir: str | None) -> Path:
    """The GGUF of ``model=`` (gemma3:270m, smollm2:135m, or a file in backend.model_dir)."""
    from sweep.server.models import ModelNotFound, default_registry

    registry = default_registry(model_dir)
    try:
        return registry.get(name).path
    except ModelNotFound:
        served = ", ".join(registry.names()) or "nothing"
        raise ConfigError(f"model '{name}' has no GGUF for backend=llama_server (known: {served}): "
                          "choose model=gemma3_270m or model=smollm2_135m, or backend.model_dir=DIR") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _pump(stream: IO[str], sink: collections.deque[str]) -> None:
    for line in stream:
        sink.append(line)


def binary() -> Path:
    path = tool_path("llama-server")
    if path is None:
        raise ConfigError(missing_hint("llama-server"))
    return path


def version(path: Path) -> str:
    """``llama-server --version`` (e.g. ``0.5.0-dev``), for provenance."""
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


@dataclass(frozen=True)
class Launch:
    """What a running llama-server was started with; a different one means a restart."""

    model: str
    path: Path
    flags: tuple[str, ...]

    @property
    def slots(self) -> int:
        """The ``-np`` it was started with (:func:`flags_for` always passes one)."""
        flags = list(self.flags)
        return int(flags[flags.index("-np") + 1]) if "-np" in flags else DEFAULT_SLOTS


class LlamaServer:
    """One llama-server child on 127.0.0.1.  ``stop()`` is idempotent."""

    def __init__(self, launch: Launch, port: int, startup_timeout_s: float = 180.0) -> None:
        self.launch = launch
        self.port = port
        cmd = [str(binary()), "-m", str(launch.path), "--host", "127.0.0.1", "--port", str(port),
               "--alias", launch.model, *launch.flags]
        self.command = cmd
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True, errors="replace",
                                      start_new_session=True, preexec_fn=die_with_parent)
        assert self._proc.stderr is not None
        threading.Thread(target=_pump, args=(self._proc.stderr, self._tail), daemon=True).start()
        try:
            self._wait_healthy(startup_timeout_s)
        except BaseException:
            self.stop(grace_s=2)
            raise

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def slots(self) -> int:
        return self.launch.slots

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (requests go to ``/chat/completions`` etc. under it)."""
        return self.root_url + "/v1"

    def stderr_tail(self) -> str:
        return " | ".join(" ".join(l.split()) for l in list(self._tail)[-5:] if l.strip())

    def _wait_healthy(self, timeout_s: float) -> None:
        import httpx  # lazily: httpx (with its CLI's rich/click/pygments) costs ~0.3 s to import

        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as http:
            while True:
                if self._proc.poll() is not None:
                    time.sleep(0.1)  # let the stderr pump catch the last lines
                    raise RuntimeError(f"llama-server exited with code {self._proc.returncode} before it was "
                                       f"healthy: {self.stderr_tail() or '(no stderr)'}")
                try:
                    if http.get(self.root_url + "/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama-server not healthy after {timeout_s:.0f}s: {self.stderr_tail()}")
                time.sleep(0.05)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``."""
        stop_process(self._proc, grace_s)


class Manager:
    """The one llama-server of this process: started on demand, restarted when its launch changes."""

    def __init__(self) -> None:
        self.server: LlamaServer | None = None
        self.port: int | None = None
        self.restarts = 0   # starts after the first: what a cell order should keep low
        self._registered = False

    def ensure(self, model: str, options: Mapping[str, Any], model_dir: str | None,
               parallel: int | None = None) -> LlamaServer:
        """A healthy llama-server for this model, these load-time options and slots (reused when unchanged)."""
        launch = Launch(model, model_path(model, model_dir), flags_for(options, parallel))
        if self.server is not None and self.server.launch == launch and self.server._proc.poll() is None:
            return self.server
        if self.server is not None:
            self.server.stop()
            self.restarts += 1
        if not self._registered:
            atexit.register(self.stop)
            self._registered = True
        self.port = self.port or free_port()
        try:
            self.server = LlamaServer(launch, self.port)
        except RuntimeError:
            self.port = free_port()  # the port may have been taken meanwhile: one more try elsewhere
            self.server = LlamaServer(launch, self.port)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


MANAGER = Manager()
