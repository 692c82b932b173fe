"""Start and stop the embedded server from Python (used when ``backend=embedded``).

Why a subprocess rather than a thread: llama.cpp holds the GIL-free CPU cores
and can crash on a bad build; a separate process keeps the sweep's own timing
and memory clean and lets us kill a stuck engine.  The child dies with the
parent (PR_SET_PDEATHSIG) and ignores Ctrl-C (own session), so the parent's
handler decides when to stop it.
"""

from __future__ import annotations

import collections
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Sequence

from .identity import READY_PREFIX

_PR_SET_PDEATHSIG = 1
_STDERR_TAIL_LINES = 40


def die_with_parent() -> None:
    """In a child before exec: die with the parent (SIGKILL), ignore SIGINT.  Also used for llama-server."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except OSError:
            pass


def stop_process(proc: subprocess.Popen[str], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; nothing if it already exited.  Also used for llama-server."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


class EmbeddedServer:
    """A running ``python -m sweep.server`` child.  Context manager; stop() is idempotent."""

    def __init__(self, proc: subprocess.Popen[str], base_url: str, stderr_tail: "collections.deque[str]") -> None:
        self._proc = proc
        self.base_url = base_url
        self._stderr_tail = stderr_tail
        self._stopped = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr (for error messages)."""
        lines = [" ".join(line.split()) for line in list(self._stderr_tail)[-5:]]
        return " | ".join(line for line in lines if line)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after grace_s; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        stop_process(self._proc, grace_s)

    def __enter__(self) -> "EmbeddedServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedServer(base_url={self.base_url!r}, pid={self.pid}, running={self.running})"


def _pump(stream: IO[str], sink: "collections.deque[str]") -> None:
    for line in stream:
        sink.append(line)


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def start(
    host: str = "127.0.0.1",
    model_dir: str | None = None,
    models: Sequence[str] = (),
    startup_timeout_s: float = 180.0,
    extra_args: Sequence[str] = (),
) -> EmbeddedServer:
    """Spawn the server on a free port and wait until it accepts connections.

    Raises RuntimeError (one line, with the server's stderr tail) if it exits or
    does not report ready within startup_timeout_s.
    """
    proc = _spawn(_command(host, model_dir, models, extra_args))
    tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
    lines: collections.deque[str] = collections.deque()
    assert proc.stderr is not None and proc.stdout is not None
    threading.Thread(target=_pump, args=(proc.stderr, tail), daemon=True).start()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    server = EmbeddedServer(proc, "", tail)
    server.base_url = _wait_ready(server, proc, lines, reader, startup_timeout_s)
    return server


def _command(host: str, model_dir: str | None, models: Sequence[str], extra_args: Sequence[str]) -> list[str]:
    """``python -m sweep.server`` on port 0 (the OS picks a free one) with our options."""
    cmd = [sys.executable, "-m", "sweep.server", "--port", "0", "--host", host]
    if model_dir:
        cmd += ["--model-dir", str(model_dir)]
    for m in models:
        cmd += ["--model", str(m)]
    return cmd + list(extra_args)


def _spawn(cmd: list[str]) -> subprocess.Popen[str]:
    """Start the child with this project on its path, unbuffered, in its own session, dying with us."""
    env = dict(os.environ)
    root = _project_root()
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # Ctrl-C in the terminal reaches the parent only
        preexec_fn=die_with_parent,
    )


def _wait_ready(server: EmbeddedServer, proc: subprocess.Popen[str], lines: "collections.deque[str]",
                reader: threading.Thread, timeout_s: float) -> str:
    """The base URL from the child's ready line; RuntimeError if it exits first or takes too long."""
    deadline = time.monotonic() + timeout_s
    while True:
        while lines:
            line = lines.popleft().strip()
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX):].strip()
        if proc.poll() is not None:
            reader.join(timeout=1)
            if any(l.startswith(READY_PREFIX) for l in lines):
                continue
            time.sleep(0.1)  # let the stderr pump catch the last lines
            raise RuntimeError(
                f"embedded server exited with code {proc.returncode} before it was ready: "
                f"{server.stderr_tail() or '(no stderr)'}"
            )
        if time.monotonic() > deadline:
            server.stop(grace_s=2)
            raise RuntimeError(
                f"embedded server not ready after {timeout_s:.0f}s: "
                f"{server.stderr_tail() or '(no stderr)'}"
            )
        time.sleep(0.02)
