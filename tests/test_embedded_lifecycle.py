"""No embedded server outlives its sweep: normal end, a config error, Ctrl-C (130), SIGKILL.

Each sweep gets a unique tag in its environment, which the ``sweep.server`` child
inherits; afterwards no process on the machine may carry the tag (psutil).  Other
sweeps running at the same time (other tests, other users) carry other tags.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.sweep_cli import REPO, sweep_argv

pytest_plugins = ["tests.fixtures_server"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.shares_machine]   # which processes are left
TAG = "CHIMERA_LIFECYCLE_TAG"


@pytest.fixture(autouse=True)
def _engine_installed(embedded_server) -> None:
    """Skips (fails on CI) like the other real-engine tests when llama-cpp-python is missing."""


def _tagged(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "sweep.server" in " ".join(proc.info["cmdline"] or []) and proc.environ().get(TAG) == tag:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str, Path]:
    """The sweep, its tag, and the file its stderr (and its server's, which inherits it) goes to.

    Not a pipe: nobody reads it while the sweep runs, and the engine's model-loading log once filled the
    pipe's 64 KB, so the sweep blocked on a write and never answered Ctrl-C within the test's wait.
    """
    tag = uuid.uuid4().hex
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{TAG: tag})
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(sweep_argv("backend=embedded", f"output_root={tmp_path}", *args), cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    return proc, tag, log


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


def _wait_for_server(proc: subprocess.Popen[str], tag: str, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not _tagged(tag):
        assert proc.poll() is None, _tail(log)
        assert time.monotonic() < deadline, "the embedded server never started"
        time.sleep(0.1)


def _none_left(tag: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := _tagged(tag)) and time.monotonic() < deadline:   # poll: teardown takes a moment
        time.sleep(0.1)
    assert not left, [p.pid for p in left]


def test_normal_end_and_config_error_leave_no_server(tmp_path: Path) -> None:
    proc, tag, log = _start(tmp_path / "ok", "trials=1", "warmup=0", "chimera.num_predict=4")
    assert proc.wait(timeout=240) == 0, _tail(log)
    _none_left(tag)
    proc, tag, _ = _start(tmp_path / "bad", "model.name=no-such-model:1b", "trials=1", "warmup=0")
    assert proc.wait(timeout=240) == 2                          # the model is missing: exit 2, after the engine may have started
    _none_left(tag)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)])
def test_interrupted_or_killed_sweep_leaves_no_server(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    proc, tag, log = _start(tmp_path, "trials=50", "warmup=0", "chimera.num_predict=64")
    try:
        _wait_for_server(proc, tag, log)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == code, _tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()
    _none_left(tag)
