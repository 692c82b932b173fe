"""Start the tests' ``python -m sweep``/``analysis`` runs from a forked interpreter that has its libraries imported.

Why: a fresh interpreter spends ~1.3 s importing Hydra, OmegaConf, pyarrow, pandas, numpy, aiohttp and scipy
before it runs a line of ours, and the suite starts ~320 of them: about a quarter of the CPU of ``make test``
on two cores.  Forked from a process that imported those libraries once, a one-cell run against the stand-in
takes 1.0-1.2 s of CPU instead of 2.4 s, a five-cell multirun 4.0 s instead of 5.35 s; the zygote itself
costs ~2 s once per test process.

What the child is, and why the tests still see ``python -m`` as a user runs it:

* a new process, with its own pid, exit code, stdout and stderr (files, read back as ``subprocess.run(...,
  text=True)`` returns them), working directory and environment; it runs the module with
  :func:`runpy.run_module` as ``-m`` does (``__main__``, ``sys.argv``, and ``sys.path`` rebuilt: the working
  directory, ``PYTHONPATH``, the interpreter's own), and exits through the interpreter's own shutdown
  (``atexit`` handlers, non-daemon threads joined);
* only third-party libraries are imported beforehand (:data:`PRELOAD`), never ``sweep``, ``analysis`` or
  ``hydra_plugins``: our modules, Hydra's plugin discovery and config store are set up by the child, as in a
  fresh process;
* what a preloaded library reads from the environment when it is imported (threads, allocators, ``PYTHON*``)
  is the zygote's: a request whose environment differs in one of those (:data:`STARTUP_VARIABLES`, or a
  locale of another encoding) runs as a fresh subprocess instead, as does any request while another is
  running, or every request when ``CHIMERA_TESTS_FRESH=1``;
* numpy's global random generator is reseeded in the child (a fork copies its state, a fresh process draws its
  own; ``random`` reseeds itself after a fork).

Tests that send signals, watch process trees or read a process's output while it runs start their own
``subprocess.Popen``, and the demo runs the Makefile's recipe as fresh processes (``tests/test_first_touch.py``).
"""

from __future__ import annotations

import atexit
import io
import json
import locale
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

#: third-party libraries a run of ``python -m sweep`` or ``python -m analysis`` imports (~1.3 s together);
#: not matplotlib, which reads ``MPLBACKEND`` and ``HOME`` when it is imported (the tests set both per run)
PRELOAD = ("hydra", "hydra.main", "omegaconf", "yaml", "pyarrow", "pyarrow.parquet", "pyarrow.dataset", "numpy",
           "pandas", "aiohttp", "rich.console", "rich.table", "rich.progress", "scipy.special", "scipy.stats")
#: environment variables read at interpreter start-up or when a preloaded library is imported
STARTUP_VARIABLES = ("PYTHON", "OMP_", "OPENBLAS_", "MKL_", "GOTO", "ARROW_", "LD_", "MALLOC", "TZ")
#: set per child, as a fresh interpreter would read them (``PYTHONPATH``: ``sys.path`` is rebuilt)
PER_CHILD = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH"})
FRESH = "CHIMERA_TESTS_FRESH"


def _startup_env(env: dict[str, str]) -> dict[str, str | bool]:
    """What of ``env`` a fresh interpreter would have read before our first line runs.

    The locale variables only choose the encoding at start-up: UTF-8 under a UTF-8 locale and, through
    Python's UTF-8 mode, under none or the C locale; any other locale runs fresh.
    """
    found: dict[str, str | bool] = {k: v for k, v in env.items()
                                    if k.startswith(STARTUP_VARIABLES) and k not in PER_CHILD}
    locale_name = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or "C"
    found["utf-8"] = locale_name in ("C", "POSIX") or locale_name.lower().replace("-", "").endswith(".utf8")
    return found


class Zygote:
    """The parent's handle: one zygote process per test process, started on first use, one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._env: dict[str, str] = {}

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        self._env = dict(os.environ)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", f"import tests.zygote as z; z.serve({theirs.fileno()})"],
            cwd=Path(__file__).resolve().parent.parent, env=self._env, pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        theirs.close()
        self._sock = ours
        self._reader = ours.makefile("r", encoding="utf-8")

    def close(self) -> None:
        """Closing the socket ends the zygote (its loop reads end-of-file)."""
        if self._sock is not None:
            self._reader.close()
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def _usable(self, env: dict[str, str]) -> bool:
        if os.environ.get(FRESH) == "1":
            return False
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            self._start()
        return _startup_env(env) == _startup_env(self._env)

    def run(self, module: str, args: list[str], *, cwd: Path, env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess[str]:
        """``python -m module args…``, output captured as text: as :func:`subprocess.run` returns it."""
        argv = [sys.executable, "-m", module, *args]
        if not self._lock.acquire(blocking=False):
            return _fresh(argv, cwd, env, timeout)
        try:
            if not self._usable(env):
                return _fresh(argv, cwd, env, timeout)
            return self._forked(module, args, argv, cwd, env, timeout)
        finally:
            self._lock.release()

    def _forked(self, module: str, args: list[str], argv: list[str], cwd: Path, env: dict[str, str],
                timeout: float) -> subprocess.CompletedProcess[str]:
        assert self._sock is not None
        with tempfile.TemporaryDirectory(prefix="zygote-") as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            request = {"module": module, "args": args, "cwd": str(cwd), "env": env, "out": str(out), "err": str(err)}
            pid = None
            try:
                self._sock.sendall((json.dumps(request) + "\n").encode())
                pid = json.loads(self._reader.readline())["pid"]
                self._sock.settimeout(timeout)
                line = self._reader.readline()
                self._sock.settimeout(None)
            except BaseException as exc:
                # a timed-out socket file cannot be read again, and a test's own timeout (pytest-timeout's
                # signal) or a Ctrl-C can land mid-request, a reply still owed: the child goes, a new zygote next
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                self.close()
                if isinstance(exc, TimeoutError):
                    raise subprocess.TimeoutExpired(argv, timeout, _text(out), _text(err)) from None
                raise
            if not line:
                raise RuntimeError("the tests' zygote process ended; run with CHIMERA_TESTS_FRESH=1 to compare")
            return subprocess.CompletedProcess(argv, json.loads(line)["returncode"], _text(out), _text(err))


def _text(path: Path) -> str:
    """A child's output as ``text=True`` gives it: the locale's encoding, universal newlines."""
    data = path.read_bytes() if path.exists() else b""
    return io.TextIOWrapper(io.BytesIO(data), encoding=locale.getpreferredencoding(False)).read()


def _fresh(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


_zygote = Zygote()
atexit.register(_zygote.close)


def run(module: str, args: list[str], *, cwd: Path, env: dict[str, str],
        timeout: float) -> subprocess.CompletedProcess[str]:
    return _zygote.run(module, args, cwd=cwd, env=env, timeout=timeout)


# --- the zygote process -------------------------------------------------------------------------------------


#: the zygote's ``sys.path`` without its working directory and PYTHONPATH (the standard library, site-packages)
_BASE_PATH: list[str] = []


def serve(fd: int) -> None:
    """Import :data:`PRELOAD`, then fork a child per request until the parent closes the socket."""
    import importlib

    global _BASE_PATH
    own = set(_pythonpath())
    _BASE_PATH = [p for p in sys.path[1:] if p not in own]
    for name in PRELOAD:
        importlib.import_module(name)
    sock = socket.socket(fileno=fd)
    requests = sock.makefile("r", encoding="utf-8")
    while line := requests.readline():
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            sock.close()
            _child(request)          # does not return: the child leaves by SystemExit or an exception
        try:
            sock.sendall((json.dumps({"pid": pid}) + "\n").encode())
        finally:
            _, status = os.waitpid(pid, 0)
        try:
            sock.sendall((json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n").encode())
        except OSError:          # the parent gave up on this request (it killed the child) and closed the socket
            return


def _pythonpath() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _child(request: dict) -> None:
    import runpy

    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY | os.O_CREAT),
                            (2, request["err"], os.O_WRONLY | os.O_CREAT)):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    sys.stdin = sys.__stdin__ = open(0, closefd=False)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(open(1, "wb", buffering=0 if unbuffered else -1, closefd=False),
                                                   write_through=unbuffered)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(open(2, "wb", buffering=0 if unbuffered else -1, closefd=False),
                                                   errors="backslashreplace", line_buffering=True,
                                                   write_through=unbuffered)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if "numpy" in sys.modules:          # ``random`` reseeds itself after a fork; numpy's global generator does not
        sys.modules["numpy"].random.seed()
    # as a fresh ``-m`` builds it: the working directory, then PYTHONPATH, then the interpreter's own
    sys.path[:] = [os.getcwd(), *_pythonpath(), *_BASE_PATH]
    sys.argv = [request["module"], *request["args"]]   # run_module replaces argv[0] with the module's file
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    raise SystemExit(0)
