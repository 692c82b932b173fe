"""Sweeps that survive: scripted faults, retries, abandonment, resume, SIGKILL and Ctrl-C.

Each test runs ``python -m sweep`` for real against the fault-injecting stand-in
and checks the stored rows: the right status on the right row, and no measured
trial lost or duplicated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from sweep.contract import read_cell
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import REPO, only_sweep, run_sweep, sweep_argv, trials_of


def common(standin: StandIn, tmp_path: Path, *extra: str) -> list[str]:
    return ["backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
            "backend.retry_backoff_s=0", "backend.stall_timeout_s=0.5", f"output_root={tmp_path}", *extra]


def measured_ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "ok") & ~df["warmup"]]


def assert_each_trial_once(df: pd.DataFrame, trials: int) -> None:
    ok = measured_ok(df)
    counts = ok.groupby(["cell_hash", "trial", "prompt_id"]).size()
    assert counts.eq(1).all(), counts[counts != 1]
    for _, cell in ok.groupby("cell_hash"):
        assert sorted(cell["trial"]) == list(range(trials))


# fault → the status its row must carry; is it retried (transient)?
FAULTS = [
    ("kill_mid_stream", "protocol_error", True),
    ("stall", "stall", True),
    ("garbage_line", "protocol_error", True),
    ("http_500", "http_error", True),
    ("http_404", "http_error", False),
    ("slow_first_byte", "stall", True),
    ("no_final_chunk", "protocol_error", True),
    ("error_line", "server_error", True),
    ("refuse", "connect_error", True),
]


@pytest.mark.parametrize(("fault", "status", "retried"), FAULTS)
def test_fault_is_recorded_and_no_trial_is_lost(standin: StandIn, tmp_path: Path, fault: str, status: str,
                                                retried: bool) -> None:
    standin.queue(Script(), Script(fault=fault, stall_s=1.5))   # the warm-up passes, trial 0 meets the fault
    result = run_sweep(*common(standin, tmp_path, "trials=3", "warmup=1", "backend.retries=1"))
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    failed = df[df["status"] != "ok"]
    assert failed["status"].tolist() == [status]
    assert failed["trial"].tolist() == [0] and failed["attempt"].tolist() == [1] and failed["error"].str.len().gt(0).all()
    if retried:   # the retry is its own row with attempt 2; the cell is complete
        assert_each_trial_once(df, 3)
        assert df[(df["trial"] == 0) & (df["status"] == "ok") & ~df["warmup"]]["attempt"].tolist() == [2]
    else:         # not transient: trial 0 stays missing until a resume
        assert sorted(measured_ok(df)["trial"]) == [1, 2]
        again = run_sweep(*common(standin, tmp_path, "trials=3", "warmup=1", "resume=true"))
        assert again.returncode == 0, again.stderr
        assert_each_trial_once(trials_of(tmp_path), 3)


def test_consecutive_failures_abandon_the_cell_and_resume_finishes_it(standin: StandIn, tmp_path: Path) -> None:
    standin.queue(Script(fault="http_500"), Script(fault="http_500"))
    args = common(standin, tmp_path, "trials=3", "warmup=0", "backend.retries=0",
                  "backend.max_consecutive_failures=2")
    result = run_sweep("-m", *args, "chimera.num_ctx=256,512")
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    first = df[df["num_ctx"] == 256]
    assert first["status"].tolist() == ["http_error", "http_error"]        # abandoned after K=2
    assert measured_ok(df[df["num_ctx"] == 512])["trial"].tolist() == [0, 1, 2]  # the sweep moved on
    assert "1 cell(s) incomplete" in result.stderr and "resume=true" in result.stderr

    before = len(standin.requests)
    again = run_sweep("-m", *args, "chimera.num_ctx=256,512", "resume=true")
    assert again.returncode == 0, again.stderr
    assert len(standin.requests) - before == 3                # exactly the missing trials, nothing else
    final = trials_of(tmp_path)
    assert_each_trial_once(final, 3)
    assert len(final) == len(df) + 3                          # earlier rows kept, failures included
    assert "cell(s) incomplete" not in again.stderr


def test_resume_of_a_complete_sweep_sends_nothing(standin: StandIn, tmp_path: Path) -> None:
    args = common(standin, tmp_path, "trials=2", "warmup=1")
    assert run_sweep(*args).returncode == 0
    before = len(standin.requests)
    result = run_sweep(*args, "resume=true")
    assert result.returncode == 0, result.stderr
    assert len(standin.requests) == before


def test_changed_parameter_is_a_new_cell_on_resume(standin: StandIn, tmp_path: Path) -> None:
    assert run_sweep(*common(standin, tmp_path, "trials=1", "warmup=0")).returncode == 0
    result = run_sweep(*common(standin, tmp_path, "trials=1", "warmup=0", "chimera.num_ctx=1024", "resume=true"))
    assert result.returncode == 0, result.stderr
    df = trials_of(tmp_path)
    assert df["cell_hash"].nunique() == 2 and sorted(df["num_ctx"]) == [512, 1024]


def test_same_sweep_without_resume_refuses_to_mix(standin: StandIn, tmp_path: Path) -> None:
    args = common(standin, tmp_path, "trials=1", "warmup=0", "sweep_id=fixed")
    assert run_sweep(*args).returncode == 0
    result = run_sweep(*args)
    assert result.returncode == 2 and "add resume=true" in result.stderr
    assert len(trials_of(tmp_path)) == 1


def _wait_for_rows(sweep_root: Path, n: int, timeout_s: float = 60) -> pd.DataFrame:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cells = list(sweep_root.glob("*/*.parquet"))
        if cells:
            df = read_cell(cells[0]).to_pandas()   # the sweep is still appending to it
            if len(df) >= n:
                return df
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows after {timeout_s} s")


def _start_sweep(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(sweep_argv(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_sigkill_mid_cell_then_resume_gives_every_trial_exactly_once(standin: StandIn, tmp_path: Path) -> None:
    standin.default = Script(token_interval_s=0.05)            # ~0.4 s per trial
    args = common(standin, tmp_path, "trials=8", "warmup=1")
    proc = _start_sweep(*args)
    seen = _wait_for_rows(tmp_path, 3)
    proc.kill()
    proc.wait(timeout=30)
    killed = pd.read_parquet(only_sweep(tmp_path))            # readable: no half-written file
    assert len(killed) >= len(seen) and len(measured_ok(killed)) < 8
    result = run_sweep(*args, "resume=true")
    assert result.returncode == 0, result.stderr
    final = trials_of(tmp_path)
    assert_each_trial_once(final, 8)
    kept = final.merge(killed[["started_at", "trial", "warmup"]], on=["started_at", "trial", "warmup"])
    assert len(kept) == len(killed)                           # rows measured before the kill are intact


@pytest.mark.slow
def test_ctrl_c_saves_completed_trials_and_exits_130(standin: StandIn, tmp_path: Path) -> None:
    standin.default = Script(token_interval_s=0.05)
    proc = _start_sweep(*common(standin, tmp_path, "trials=20", "warmup=0"))
    _wait_for_rows(tmp_path, 2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    sweep_dir = only_sweep(tmp_path)
    assert f"every completed trial is saved in {sweep_dir}" in stderr and "resume=true" in stderr
    assert len(measured_ok(pd.read_parquet(sweep_dir))) >= 2


def test_api_key_is_sent_but_never_stored(standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-5f2a9c0e-never-store-me"
    monkeypatch.setenv("OLLAMA_API_KEY", secret)
    monkeypatch.setenv("CHIMERA_SWEEP_HEADERS", "X-Proxy-Token: tok-77; X-Team: bench")
    result = run_sweep(*common(standin, tmp_path, "trials=1", "warmup=0"))
    assert result.returncode == 0, result.stderr
    headers = standin.request_headers[-1]
    assert headers["Authorization"] == f"Bearer {secret}" and headers["X-Proxy-Token"] == "tok-77"
    for path in only_sweep(tmp_path).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and b"tok-77" not in data, path
    assert secret not in result.stderr + result.stdout
