"""Two paths a sweep takes rarely, end to end: resuming a complete sweep on the embedded engine
(a new port every run), and a sweep directory lost in the middle of a run (the rescue path)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import analysis
from tests.fixtures_server import require_engine
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import REPO, only_sweep, run_sweep, sweep_argv, trials_of


def _trial_files(sweep_dir: Path) -> dict[str, bytes]:
    """Every trial file of a sweep, by path inside it, with its bytes (Hydra's and private files aside)."""
    return {str(p.relative_to(sweep_dir)): p.read_bytes() for p in sorted(sweep_dir.rglob("*.parquet")) if p.is_file()
            if not any(part.startswith(("_", ".")) for part in p.relative_to(sweep_dir).parts)}


@pytest.mark.shares_machine   # what is stored and sent, not speed
def test_a_complete_embedded_sweep_resumes_without_measuring_anything(tmp_path: Path) -> None:
    """The embedded engine listens on a new port each run, and base_url is a column: the resume must still
    recognise every trial as done (the cell hash ignores the port).  Counted on what is stored: a trial
    measured again would add a row (with a new started_at) or rewrite a trial file."""
    require_engine()
    args = ("-m", "chimera.num_ctx=256,512", "trials=2", "warmup=1", "chimera.num_predict=4",
            "telemetry.enabled=false", "progress=false", f"output_root={tmp_path}")   # a line per trial
    first = run_sweep(*args, timeout=300)
    assert first.returncode == 0, first.stderr
    sweep_dir = only_sweep(tmp_path)
    before, files = trials_of(tmp_path), _trial_files(sweep_dir)
    assert len(before) == 2 * (1 + 2) and before["status"].eq("ok").all() and before["backend"].eq("embedded").all()

    again = run_sweep(*args, "resume=true", timeout=300)
    assert again.returncode == 0, again.stderr
    assert only_sweep(tmp_path) == sweep_dir                     # the same sweep, not a new one
    after = trials_of(tmp_path)
    assert len(after) == len(before)
    assert sorted(after["started_at"]) == sorted(before["started_at"])
    assert _trial_files(sweep_dir) == files                      # not one trial file rewritten
    measured = re.compile(r"^\s+trial \d+ prompt \S+: ", re.M)     # the line each measured trial prints
    assert measured.search(first.stderr) and not measured.search(again.stderr), again.stderr[-2000:]


def test_a_sweep_directory_lost_mid_run_rescues_its_trials_under_the_sweep_id(standin: StandIn,
                                                                              tmp_path: Path) -> None:
    """The sweep directory is replaced by a file after the first trial is stored (as the store's unit
    test does, on a whole sweep): the cell's trials go to <tmp>/chimera-sweep-rescue/<sweep id>/, the
    path is printed, the sweep exits non-zero, and the analysis reads every rescued row."""
    standin.default = Script(tokens=["t"] * 5, first_token_delay_s=0.05, token_interval_s=0.05)  # ~0.3 s a trial
    temp = tmp_path / "tmp"     # the child's tempfile.gettempdir(): this test's rescue folder, no one else's
    temp.mkdir()
    sweep_id = f"lost-{os.getpid()}"
    sweep_dir = tmp_path / "out" / sweep_id
    proc = subprocess.Popen(
        sweep_argv("backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3", "trials=12",
                   "warmup=0", "telemetry.enabled=false", f"output_root={tmp_path / 'out'}", f"sweep_id={sweep_id}"),
        cwd=REPO, env=dict(os.environ, TMPDIR=str(temp), PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(sweep_dir.rglob("part-*.parquet")):      # poll: start-up time varies with load
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no trial stored within 120 s"
            time.sleep(0.02)
        shutil.rmtree(sweep_dir)
        sweep_dir.write_text("not a directory any more")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    rescued = sorted((temp / "chimera-sweep-rescue" / sweep_id).glob("*.parquet"))
    assert len(rescued) == 1, (out[-2000:], err[-2000:])
    assert str(rescued[0]) in out + err                          # the path is printed
    assert proc.returncode != 0, (out[-2000:], err[-2000:])     # and the sweep does not claim success
    last = err.strip().splitlines()[-1]                          # one line that names where the trials are
    assert last.startswith(f"error: could not write to {sweep_dir}") and str(rescued[0]) in last, last
    assert proc.returncode == 1 and "Traceback" not in err, err[-2000:]
    frame = analysis.load_trials([rescued[0]]).frame
    assert len(frame) == 12 and frame["sweep_id"].eq(sweep_id).all()
    assert sorted(frame["trial"]) == list(range(12)) and frame["status"].eq("ok").all()
    assert len(standin.requests) == 12                            # measured once each, none lost
    assert isinstance(frame, pd.DataFrame)
