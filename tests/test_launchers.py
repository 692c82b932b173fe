"""Hydra's launchers run our cells: Ray (local cluster, embedded engine), joblib, submitit_local.

What must hold whatever the launcher: one sweep directory, the same columns,
resume across launchers, and never two cells measured at once against one
server unless ``allow_shared_host=true``, with every row saying how many cells
were running at the same time (``concurrent_cells``).  Heavy on 2 cores:
few tests, tiny cells, every wait bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from sweep.contract import COLUMN_NAMES, read_cell
from sweep.running import RUNNING_DIR, Running, lease_host, own_cells
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import REPO, only_sweep, run_sweep, sweep_argv

TINY = ("chimera.num_predict=8", "warmup=1")


@pytest.fixture
def ray_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private, loopback-only local Ray (../shared/hydra-plugins.md).

    Its temp dir is short and directly under the system temp dir: Ray puts Unix
    sockets there and a socket path may not exceed 107 bytes (pytest's tmp_path does).
    """
    ray_tmp = tempfile.mkdtemp(prefix="ray-")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    yield
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _windows(rows: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp]:
    end = rows["started_at"] + pd.to_timedelta(rows["e2e_ms"], unit="ms")
    return rows["started_at"].min(), end.max()


def _assert_overlaps_counted(rows: pd.DataFrame) -> None:
    """Every row whose call overlapped a call of another cell counted at least 2 cells.

    A row's [started_at, + e2e_ms] lies inside the span its call was registered as running, so an overlap
    of these windows is an overlap of registrations, whatever the timing.
    """
    end = rows["started_at"] + pd.to_timedelta(rows["e2e_ms"], unit="ms")
    for i, row in rows.iterrows():
        others = rows["cell_hash"] != row["cell_hash"]
        if ((rows["started_at"] < end[i]) & (row["started_at"] < end) & others).any():
            assert row["concurrent_cells"] >= 2, rows[["num_ctx", "trial", "started_at", "e2e_ms", "concurrent_cells"]]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_ray_runs_two_cells_at_once_each_on_its_own_embedded_server_and_resumes_a_basic_run(
        embedded_server, ray_env: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_sweep("-m", "chimera.num_ctx=256", *TINY, "trials=1", f"output_root={out}", timeout=180)
    assert first.returncode == 0, first.stderr
    basic_done = pd.read_parquet(only_sweep(out))["started_at"].max()
    ray = run_sweep("-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                    "+hydra.launcher.ray.init.include_dashboard=false", "chimera.num_ctx=256,512", *TINY,
                    "trials=2", "resume=true", f"output_root={out}", timeout=360)
    assert ray.returncode == 0, ray.stderr
    assert "plan: 2 cell(s) in 2 job(s), 2 at once" in ray.stderr
    sweep_dir = only_sweep(out)
    df = pd.read_parquet(sweep_dir)
    assert list(df.columns) == list(COLUMN_NAMES) and df["status"].eq("ok").all()
    measured = df[~df["warmup"]].sort_values("trial")
    assert measured.groupby("num_ctx")["trial"].apply(list).to_dict() == {256: [0, 1], 512: [0, 1]}
    by_ray = df[df["started_at"] > basic_done]                                        # the resumed run's rows
    servers = by_ray.groupby("num_ctx")["base_url"].unique()
    assert all(len(s) == 1 for s in servers) and servers[256][0] != servers[512][0]  # one server per cell
    assert by_ray.groupby("num_ctx")["concurrent_cells"].max().to_dict() == {256: 2, 512: 2}
    (a0, a1), (b0, b1) = _windows(by_ray[by_ray["num_ctx"] == 256]), _windows(by_ray[by_ray["num_ctx"] == 512])
    assert a0 < b1 and b0 < a1                                                        # measured at the same time
    _assert_overlaps_counted(by_ray)
    assert "2/2" in ray.stderr and "INCOMPLETE" not in ray.stderr                     # summary covers all cells


def test_parallel_cells_on_one_server_are_refused_unless_allowed(standin: StandIn, tmp_path: Path) -> None:
    common = ("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "backend=ollama",
              f"backend.base_url={standin.base_url}", "model=gemma3", "chimera.num_ctx=256,512", "trials=2",
              "warmup=0")
    refused = run_sweep(*common, f"output_root={tmp_path / 'a'}", timeout=120)
    assert refused.returncode == 2 and standin.requests == []
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: 2 cells would run at once against 1 server(s) ({standin.base_url}) and slow each other down: "
        "give one server per worker (backend.hosts=[URL,URL,...]), run fewer at once, or accept it with "
        "allow_shared_host=true")
    standin.default = Script(token_interval_s=0.05)          # cells long enough to overlap
    allowed = run_sweep(*common, "allow_shared_host=true", f"output_root={tmp_path / 'b'}", timeout=180)
    assert allowed.returncode == 0, allowed.stderr
    df = pd.read_parquet(only_sweep(tmp_path / "b"))
    assert len(df) == 4 and df["concurrent_cells"].between(1, 2).all()
    _assert_overlaps_counted(df)   # judged on the rows' own windows: two workers need not overlap on a loaded machine


def test_slurm_gpu_config_reaches_sbatch_with_partition_time_and_gres(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """As far as SLURM goes without a cluster: our preset → Hydra → submitit → the sbatch script it submits.

    ``srun`` only has to exist; the stand-in ``sbatch`` keeps the script and refuses the job.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text('#!/bin/sh\ncp "$1" "$SBATCH_COPY"\necho "sbatch: error: no cluster" >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    script = tmp_path / "submitted.sh"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_COPY", str(script))
    result = run_sweep("-m", "hydra/launcher=slurm_gpu", "hydra.launcher.partition=a100", "hydra.launcher.timeout_min=30",
                       "chimera.num_ctx=256,512,1024", f"output_root={tmp_path / 'out'}", timeout=120)
    assert result.returncode != 0 and "sbatch: error: no cluster" in result.stderr
    lines = script.read_text().splitlines()
    for expected in ("#SBATCH --partition=a100", "#SBATCH --time=30", "#SBATCH --gres=gpu:1",
                     "#SBATCH --array=0-2%3", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB"):
        assert expected in lines, script.read_text()
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in lines)



@pytest.mark.slow
@pytest.mark.parametrize("launcher", [
    ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "chimera.num_ctx=256,512,1024,2048"),
    ("hydra/launcher=submitit_local", "chimera.num_ctx=256,512"),          # every cell at once: 2 cells, 2 hosts
], ids=["joblib", "submitit_local"])
def test_parallel_launchers_give_each_running_cell_its_own_host(launcher: tuple[str, ...], tmp_path: Path) -> None:
    with StandIn(models=("gemma3:latest",)) as a, StandIn(models=("gemma3:latest",)) as b:
        for server in (a, b):
            server.default = Script(token_interval_s=0.05)   # ~0.5 s per trial: cells overlap
        result = run_sweep("-m", *launcher, "backend=ollama", f'backend.hosts=["{a.base_url}","{b.base_url}"]',
                           "model=gemma3", "trials=3", "warmup=0", f"output_root={tmp_path}", timeout=240)
        assert result.returncode == 0, result.stderr
        assert ", 2 at once," in result.stderr
        df = pd.read_parquet(only_sweep(tmp_path))
        cells = df["num_ctx"].nunique()
        assert len(df) == 3 * cells and df["status"].eq("ok").all()
        assert len(a.requests) + len(b.requests) == 3 * cells and a.requests and b.requests
    hosts = df.groupby("num_ctx")["base_url"].unique()
    assert all(len(h) == 1 for h in hosts)                                  # a cell stays on its host
    assert df["concurrent_cells"].max() == 2
    _assert_overlaps_counted(df)
    spans = {c: (*_windows(rows), rows["base_url"].iloc[0]) for c, rows in df.groupby("num_ctx")}
    for x, (x0, x1, xh) in spans.items():
        for y, (y0, y1, yh) in spans.items():
            if x < y and x0 < y1 and y0 < x1:
                assert xh != yh, f"cells {x} and {y} overlapped on {xh}"   # never two at once on one host


@pytest.mark.slow
def test_a_cell_whose_calls_fit_inside_another_cells_call_is_counted_by_both(tmp_path: Path) -> None:
    """One cell's short calls start and end inside the other's long ones: both rows count 2 cells.

    Counting at a call's start and end only (before issue 17's fix) gave the long call 1 here in 5 runs of 7.
    """
    with StandIn(models=("gemma3:latest",)) as slow, StandIn(models=("gemma3:latest",)) as fast:
        slow.default = Script(token_interval_s=0.25)     # 16 tokens: 4 s per call
        fast.default = Script(token_interval_s=0.005)    # a fraction of a second per call
        result = run_sweep("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "backend=ollama",
                           f'backend.hosts=["{slow.base_url}","{fast.base_url}"]', "model=gemma3",
                           "chimera.num_ctx=256,512", "chimera.num_predict=16", "trials=3", "warmup=0",
                           f"output_root={tmp_path}", timeout=300)
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(only_sweep(tmp_path))
    assert len(df) == 6 and df["concurrent_cells"].between(1, 2).all()
    _assert_overlaps_counted(df)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_crashed_ray_worker_loses_only_its_trial_in_flight_and_a_basic_run_resumes(
        ray_env: None, tmp_path: Path) -> None:
    """SIGKILL the Ray worker measuring one cell mid-cell; then finish the sweep with the basic launcher."""
    out = tmp_path / "out"
    with StandIn(models=("gemma3:latest",)) as a, StandIn(models=("gemma3:latest",)) as b:
        for server in (a, b):
            server.default = Script(token_interval_s=0.08)          # ~0.7 s per trial
        common = ("backend=ollama", f'backend.hosts=["{a.base_url}","{b.base_url}"]', "model=gemma3",
                  "chimera.num_ctx=256,512", "trials=6", "warmup=0", f"output_root={out}")
        proc = subprocess.Popen(sweep_argv("-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                                           "+hydra.launcher.ray.init.include_dashboard=false",
                                           "+hydra.launcher.ray.remote.max_retries=0", *common),
                                cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            victim = _kill_worker_after(out, trials=2, deadline_s=180)
            output, _ = proc.communicate(timeout=180)
        finally:
            proc.kill()
        assert proc.returncode != 0, output                         # the multirun reports the crashed job
        sweep_dir = only_sweep(out)
        kept = read_cell(sweep_dir / f"{victim}.parquet").to_pandas()
        assert len(kept) >= 2 and kept["status"].eq("ok").all()   # its completed trials survived, whole
        resumed = run_sweep("-m", *common, "resume=true", timeout=180)
        assert resumed.returncode == 0, resumed.stderr
    df = pd.read_parquet(sweep_dir)
    ok = df[df["status"] == "ok"]
    assert ok.groupby("num_ctx")["trial"].apply(sorted).to_dict() == {256: list(range(6)), 512: list(range(6))}


def _kill_worker_after(out: Path, trials: int, deadline_s: float) -> str:
    """SIGKILL the process measuring the first cell that stored ``trials`` rows; returns that cell's file stem.

    The process is found through the sweep's running-cells registry (``_running/<host>-<pid>-<cell hash>``).
    """
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for cell_file in out.glob("*/*.parquet"):
            try:
                rows = read_cell(cell_file).column("cell_hash").to_pylist()   # the cell's parts so far
            except (OSError, ValueError):
                continue
            if len(rows) >= trials:
                for marker in (cell_file.parent / RUNNING_DIR).glob(f"*-{rows[0]}"):
                    os.kill(int(marker.name.rsplit("-", 2)[1]), signal.SIGKILL)
                    return cell_file.stem
        time.sleep(0.05)
    raise AssertionError(f"no cell stored {trials} trials within {deadline_s:.0f} s")


def test_running_cells_are_counted_and_a_cell_has_one_writer(tmp_path: Path) -> None:
    """The flock registry behind concurrent_cells, host leases and cell ownership (real locks, one process)."""
    running = Running(tmp_path)
    with running.cell("a") as a:
        with running.cell("b") as b:
            assert running.count() == 2
        assert running.count() == 1
    assert running.count() == 0 and (a.peak, b.peak) == (2, 2)
    with running.cell("a") as a:                      # b's call starts and ends inside a's: both count 2
        with running.cell("b") as b:
            pass
        with running.cell("c") as c:                  # one at a time inside a's call: a's peak stays 2
            with running.cell("c") as c2:             # a cell's parallel calls (agents) count once
                pass
    assert (a.peak, b.peak, c.peak, c2.peak) == (2, 2, 2, 2)
    first = running.enter("a")                        # overlapping, not nested: each counts the other
    second = running.enter("b")
    running.leave(first)
    third = running.enter("c")
    assert (running.leave(second), running.leave(third)) == (2, 2) and first.peak == 2
    with running.cell("alone") as alone:
        pass
    assert alone.peak == 1


def test_a_killed_process_is_not_counted_as_running(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from sweep.running import Running; "
            "Running(Path(sys.argv[1])).enter('dead'); print('in', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "in"
        running = Running(tmp_path)
        assert running.count() == 1
        with running.cell("alive") as alive:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert running.count() == 1                      # its marker's lock went with it
        with running.cell("later") as later:
            pass
    finally:
        proc.kill()
    assert alive.peak == 2 and later.peak == 1
    assert not list((tmp_path / RUNNING_DIR).glob("*-dead"))   # the stale marker was cleared
    with lease_host(tmp_path, ["http://h1", "http://h2"]) as first, \
            lease_host(tmp_path, ["http://h1", "http://h2"]) as second:
        assert {first, second} == {"http://h1", "http://h2"}
        with pytest.raises(TimeoutError):
            with lease_host(tmp_path, ["http://h1", "http://h2"], wait_s=0.3):
                pass
    with own_cells(tmp_path, ["c1"]):
        with pytest.raises(TimeoutError, match="cell c1 is still being measured"):
            with own_cells(tmp_path, ["c1"], wait_s=0.3):
                pass
    with own_cells(tmp_path, ["c1"]):          # released when the first owner is done
        pass
