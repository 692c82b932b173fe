"""Run ``python -m sweep`` as a user would, in a subprocess, and read what it stored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from tests import zygote

REPO = Path(__file__).resolve().parent.parent


def sweep_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweep", *args]


def cli_env(*, repo_on_path: bool = False, **extra: str) -> dict[str, str]:
    """This process's environment for a CLI run: unbuffered, so its output arrives as it is written; with
    ``repo_on_path``, the repository first on ``PYTHONPATH``, for a run from another directory."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    if repo_on_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def run_module(module: str, *args: str, timeout: float = 300, cwd: Path = REPO,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m <module> args…`` from ``cwd`` (the repository), output captured: a process of its own, forked
    from an interpreter with the libraries already imported (``tests/zygote.py`` says what that changes: nothing
    the tests check).  ``env``: :func:`cli_env` unless given."""
    return zygote.run(module, list(args), cwd=cwd, env=cli_env() if env is None else env, timeout=timeout)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A bare environment, as a new user's shell might give: the repository importable, system binaries, a home
    of its own (``extra``: e.g. ``MPLBACKEND="Agg"``)."""
    return {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(home), **extra}


def run_sweep(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_module("sweep", *args, timeout=timeout)


def only_sweep(output_root: Path) -> Path:
    (sweep_dir,) = [p for p in output_root.iterdir() if p.is_dir()]
    return sweep_dir


def trials_of(output_root: Path) -> pd.DataFrame:
    return pd.read_parquet(only_sweep(output_root))


def interrupt_sweep(*args: str, until: Callable[[], bool], what: str, timeout_s: float = 120) -> tuple[int, str]:
    """``python -m sweep args…``, Ctrl-C as soon as ``until()`` holds: (exit code, stderr).

    Fails the test, naming ``what`` it waited for, when the sweep ends first or ``until()`` never holds.
    """
    proc = subprocess.Popen(sweep_argv(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    try:
        deadline = time.monotonic() + timeout_s
        while not until():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err
