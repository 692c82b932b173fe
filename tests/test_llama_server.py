"""backend=llama_server: real sweeps on llama.cpp's own server, restarts on flag changes, no orphans.

Each test runs ``python -m sweep`` for real with gemma3:270m; llama-server is
the binary ``make install`` built from the llama-cpp-python sdist.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from sweep.contract import read_tables
from tests.fixtures_server import require_tool
from tests.sweep_cli import REPO, only_sweep, run_sweep, sweep_argv, trials_of

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow, pytest.mark.usefixtures("llama_server_installed")]


@pytest.fixture(scope="module")
def llama_server_installed() -> None:
    """Skip without llama-server on a developer's machine; on CI (CI=true) fail instead."""
    require_tool("llama-server")

STARTED = re.compile(r"llama-server started: pid (\d+), port (\d+), flags (.*)")


def common(tmp_path: Path, *extra: str) -> list[str]:
    return ["backend=llama_server", "model=gemma3_270m", f"output_root={tmp_path}", "chimera.num_predict=16",
            "chimera.num_thread=1", "chimera.seed=7", "telemetry.interval_s=0.05", *extra]


def _gone(pid: int, within_s: float = 20.0) -> bool:
    """True once ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_two_cell_sweep_real_text_server_timings_client_ttft(tmp_path: Path) -> None:
    result = run_sweep("-m", *common(tmp_path, "chimera.num_ctx=512,1024", "trials=2", "warmup=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    starts = STARTED.findall(result.stderr)
    assert len(starts) == 2, result.stderr[-2000:]                     # one restart: num_ctx changed
    assert "-c 512 " in starts[0][2] and "-c 1024 " in starts[1][2] and "-t 1" in starts[1][2]
    assert starts[0][1] == starts[1][1]                                # same port, same base URL
    df = trials_of(tmp_path)
    measured = df[~df["warmup"]]
    assert len(measured) == 4 and set(measured["status"]) == {"ok"}
    assert set(measured["num_ctx"]) == {512, 1024} and set(df["backend"]) == {"llama_server"}
    assert measured["base_url"].str.match(r"http://127\.0\.0\.1:\d+/v1$").all()
    for _, row in measured.iterrows():
        assert len(re.findall(r"[A-Za-z]{2,}", row["response"])) >= 3, row["response"]
        assert 0 < row["eval_count"] <= 16 and row["prompt_eval_count"] > 3       # usage
        assert row["eval_duration_ms"] > 0 and row["prompt_eval_duration_ms"] > 0  # llama.cpp timings
        assert row["throughput_tok_s"] > 0 and row["done_reason"] in ("stop", "length")
        assert 0 < row["ttft_ms"] < row["e2e_ms"] and row["content_chunks"] >= 2     # client clock
    for pid, _, _ in starts:
        assert _gone(int(pid)), f"llama-server {pid} outlived the sweep"


def _name(process: psutil.Process) -> str:
    """A child's name, or "" when it ended between being listed and being asked (the sweep's short-lived
    children: a fresh-clone `make test` once failed on one)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return process.name()
    return ""


def _start_and_wait_for_server(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """A long llama_server sweep, once its llama-server is up and a first trial is stored."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(sweep_argv(*common(tmp_path, "trials=200", "warmup=0")), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        children = [c for c in psutil.Process(proc.pid).children(recursive=True) if "llama-server" in _name(c)]
        if children and _stored_trial_rows(tmp_path) > 0:
            return proc, children[0].pid
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the sweep did not start llama-server and store a trial within 240 s")


def test_no_orphan_after_ctrl_c(tmp_path: Path) -> None:
    proc, server_pid = _start_and_wait_for_server(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    try:
        assert proc.returncode == 130, stderr[-2000:]
        assert _gone(server_pid), "llama-server survived Ctrl-C of the sweep"
    finally:
        _kill_if_alive(server_pid)
    assert (trials_of(tmp_path)["status"] == "ok").sum() >= 1
    assert only_sweep(tmp_path).is_dir()


def test_no_orphan_after_sigkill(tmp_path: Path) -> None:
    proc, server_pid = _start_and_wait_for_server(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    try:
        assert _gone(server_pid), "llama-server survived SIGKILL of the sweep (PR_SET_PDEATHSIG)"
    finally:
        _kill_if_alive(server_pid)


def _stored_trial_rows(output_root: Path) -> int:
    """Trial rows stored so far; telemetry parts under ``_telemetry/`` are written first and do not count."""
    return sum(t.num_rows for _, t in read_tables(output_root)) if output_root.is_dir() else 0


def _kill_if_alive(pid: int) -> None:
    """A failed test must not leave its orphan running on a shared machine."""
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).kill()
