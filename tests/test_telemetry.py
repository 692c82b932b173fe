"""Telemetry: the real no-GPU path on this machine, NVML aggregation against a fake NVML at the module
boundary (the only fake in the suite: no GPU exists here), and a real sweep writing the columns and samples."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import psutil
import pytest

from sweep.telemetry import (Gpus, GpuReading, Sample, Telemetry, TrialSampler, aggregate, gpu_energy_j,
                             joules_per_token)
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import only_sweep, run_sweep

TELEMETRY_COLUMNS = ("gpu_name", "gpu_count", "gpu_util_pct_mean", "gpu_util_pct_max", "gpu_mem_used_mb_max",
                     "gpu_power_w_mean", "gpu_energy_j", "gpu_temp_c_max", "gpu_sm_clock_mhz_mean",
                     "joules_per_token", "cpu_pct_system", "cpu_pct_process", "server_rss_mb_max",
                     "telemetry_samples")


class FakeNvml:
    """Two GPUs with scripted readings; GPU 1 has no energy counter (as on older boards)."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.reads = 0
        self.energy_mj = 1_000_000.0
        self.shut = False

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: self.shut = True
    def nvmlDeviceGetCount(self) -> int: return 2
    def nvmlDeviceGetHandleByIndex(self, i: int) -> int: return i
    def nvmlDeviceGetName(self, h: int) -> bytes: return [b"RTX 4080", b"RTX 4090"][h]
    def nvmlSystemGetDriverVersion(self) -> str: return "560.35"
    def nvmlSystemGetCudaDriverVersion(self) -> int: return 12060

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=[80, 40][h])

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(used=[2048, 1024][h] * 1024 * 1024)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return [200_000, 100_000][h]   # mW

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return [65, 71][h]

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        return [2500, 2000][h]

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> float:
        if h == 1:
            raise self.NVMLError("Not Supported")
        self.energy_mj += 50_000.0   # each read: +50 J on GPU 0
        return self.energy_mj


def _samples(*rows: tuple[float, list[tuple[float, float]]]) -> list[Sample]:
    """(t, [(util, power) per GPU]) → samples."""
    return [Sample(t, [GpuReading(util_pct=u, power_w=p, mem_used_mb=100.0 * (i + 1), temp_c=60.0 + i,
                                  sm_clock_mhz=1000.0 * (i + 1)) for i, (u, p) in enumerate(g)])
            for t, g in rows]


def test_aggregation_by_hand() -> None:
    samples = _samples((0.0, [(50, 100), (10, 50)]), (1.0, [(100, 300), (30, 50)]), (2.0, [(90, 200), (20, 50)]))
    cols = aggregate(samples, ["A", "B"], start_mj=[0.0, None], end_mj=[400_000.0, None])
    assert cols["gpu_name"] == "A + B" and cols["gpu_count"] == 2
    # utilisation: mean over GPUs per sample (30, 65, 55), then over samples; the peak of any GPU
    assert cols["gpu_util_pct_mean"] == pytest.approx(50.0) and cols["gpu_util_pct_max"] == 100
    # power: sum over GPUs per sample (150, 350, 250) → mean 250 W
    assert cols["gpu_power_w_mean"] == pytest.approx(250.0)
    # energy: GPU A's counter says 400 J; GPU B has none → ∫ 50 W over 2 s = 100 J
    assert cols["gpu_energy_j"] == pytest.approx(500.0)
    assert cols["gpu_mem_used_mb_max"] == pytest.approx(300.0)   # 100 + 200 MB, summed
    assert cols["gpu_temp_c_max"] == 61.0 and cols["gpu_sm_clock_mhz_mean"] == pytest.approx(1500.0)
    assert cols["telemetry_samples"] == 3
    assert joules_per_token(cols["gpu_energy_j"], 250) == pytest.approx(2.0)
    assert joules_per_token(None, 250) is None and joules_per_token(10.0, 0) is None


def test_energy_integral_fallback_is_trapezoidal() -> None:
    samples = _samples((0.0, [(0, 100)]), (0.5, [(0, 200)]), (1.5, [(0, 200)]))
    # 0.5 s × 150 W + 1 s × 200 W = 275 J
    assert gpu_energy_j(samples, [None], [None]) == pytest.approx(275.0)
    assert gpu_energy_j(samples[:1], [None], [None]) is None   # one point: no integral


def _wait_for_samples(sampler: TrialSampler, n: int, at_least_s: float = 0.0, deadline_s: float = 30.0) -> None:
    """Poll until the sampler holds ``n`` samples (and ``at_least_s`` has passed), instead of a fixed
    sleep: on a loaded machine the sampler thread may take several intervals to get a core."""
    t0 = time.monotonic()
    while len(sampler.samples) < n or time.monotonic() - t0 < at_least_s:
        assert time.monotonic() - t0 < deadline_s, f"{len(sampler.samples)} samples after {deadline_s} s"
        time.sleep(0.01)


def test_sampler_reads_the_fake_nvml_at_the_boundary() -> None:
    nvml = FakeNvml()
    gpus = Gpus(nvml)
    assert gpus.available and gpus.names == ["RTX 4080", "RTX 4090"]
    assert (gpus.driver_version, gpus.cuda_driver_version) == ("560.35", 12060)
    sampler = TrialSampler(gpus, interval_s=0.02).start()
    _wait_for_samples(sampler, 4)
    cols = sampler.stop()
    assert cols["gpu_name"] == "RTX 4080 + RTX 4090" and cols["gpu_count"] == 2
    assert cols["gpu_power_w_mean"] == pytest.approx(300.0)      # 200 W + 100 W
    assert cols["gpu_util_pct_mean"] == pytest.approx(60.0) and cols["gpu_util_pct_max"] == 80
    assert cols["gpu_mem_used_mb_max"] == pytest.approx(3072.0)
    assert cols["gpu_temp_c_max"] == 71 and cols["gpu_sm_clock_mhz_mean"] == pytest.approx(2250.0)
    # GPU 0: counter read at start and stop (+50 J); GPU 1: 100 W integrated over the trial's span
    span = sampler.samples[-1].t_s - sampler.samples[0].t_s
    assert cols["gpu_energy_j"] == pytest.approx(50.0 + 100.0 * span, rel=1e-6)
    assert cols["telemetry_samples"] == len(sampler.samples) >= 4
    gpus.close()
    assert nvml.shut


def test_no_driver_here_means_null_gpu_columns_and_one_info_line() -> None:
    gpus = Gpus()   # the real pynvml on this machine: no NVIDIA driver
    if gpus.available:
        pytest.skip("this machine has an NVIDIA GPU")
    assert gpus.off_reason
    said: list[str] = []
    Telemetry._announced = False
    Telemetry(0.05, None, gpus, say=said.append)
    Telemetry(0.05, None, gpus, say=said.append)
    assert len(said) == 1 and said[0].startswith("GPU telemetry off")
    cols = TrialSampler(gpus, 0.05).start().stop()
    assert all(cols[c] is None for c in TELEMETRY_COLUMNS if c.startswith("gpu_"))
    assert cols["cpu_pct_system"] is not None and cols["cpu_pct_process"] is None


def test_cpu_of_a_busy_server_process_tree_is_measured() -> None:
    """The parent sleeps while its child spins, as Ollama's server does while its runner generates.

    The reference is the child's own CPU time over the same window, not "≈ 100 % of a core":
    on a loaded 2-core machine the spinning child may get a third of one.
    """
    spawn_busy_child = ("import subprocess, sys, time; "
                        "c = subprocess.Popen([sys.executable, '-c', 'while True: pass']); "
                        "time.sleep(60)")
    busy = subprocess.Popen([sys.executable, "-c", spawn_busy_child])
    try:
        children: list[psutil.Process] = []
        deadline = time.monotonic() + 30
        while not children and time.monotonic() < deadline:   # poll: interpreter start-up varies with load
            children = psutil.Process(busy.pid).children(recursive=True)
            time.sleep(0.05)
        assert children, "the busy child never started"
        child = children[0]
        before, t0 = sum(child.cpu_times()[:2]), time.monotonic()
        sampler = TrialSampler(Gpus(FakeNvmlOff()), interval_s=0.05, server_pid=busy.pid).start()
        _wait_for_samples(sampler, 5, at_least_s=0.6)
        cols = sampler.stop()
        child_pct = (sum(child.cpu_times()[:2]) - before) / (time.monotonic() - t0) * 100
    finally:
        for c in psutil.Process(busy.pid).children(recursive=True):
            c.kill()
        busy.kill()
        busy.wait()
    assert child_pct > 5, child_pct                  # the child did spin in the window
    assert cols["cpu_pct_process"] > 0.5 * child_pct, (cols["cpu_pct_process"], child_pct)  # and it is counted
    assert 0 < cols["cpu_pct_system"] <= 100
    assert cols["server_rss_mb_max"] > 1
    assert cols["telemetry_samples"] >= 5


class FakeNvmlOff:
    def nvmlInit(self) -> None:
        raise RuntimeError("Driver Not Loaded")


def _sweep(standin: StandIn, tmp_path: Path, *extra: str) -> Path:
    standin.queue(*[Script(token_interval_s=0.03) for _ in range(3)])
    result = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3",
                       "trials=2", "warmup=1", "telemetry.interval_s=0.02", f"output_root={tmp_path}", *extra)
    assert result.returncode == 0, result.stderr
    return only_sweep(tmp_path)


@pytest.mark.slow
def test_sweep_stores_telemetry_columns_and_samples(standin: StandIn, tmp_path: Path) -> None:
    sweep_dir = _sweep(standin, tmp_path)
    df = pd.read_parquet(sweep_dir)
    assert len(df) == 3   # the _telemetry/ samples are not read as trials
    assert set(TELEMETRY_COLUMNS) <= set(df.columns)
    assert df["telemetry_samples"].ge(2).all() and df["cpu_pct_system"].notna().all()
    if not Gpus().available:
        assert df["gpu_name"].isna().all() and df["gpu_energy_j"].isna().all()
    (trace_file,) = (sweep_dir / "_telemetry").glob("*.parquet")
    traces = pd.read_parquet(trace_file)
    per_trial = traces.groupby(["trial", "warmup"]).size()
    assert len(per_trial) == 3
    stored = df.set_index(["trial", "warmup"])["telemetry_samples"]
    assert (per_trial.sort_index() == stored.sort_index()).all()   # no GPU: one row per sample
    assert traces["t_s"].ge(0).all()


@pytest.mark.slow
def test_telemetry_can_be_switched_off(standin: StandIn, tmp_path: Path) -> None:
    sweep_dir = _sweep(standin, tmp_path, "telemetry.enabled=false")
    df = pd.read_parquet(sweep_dir)
    assert df["telemetry_samples"].isna().all() and df["cpu_pct_system"].isna().all()
    assert not (sweep_dir / "_telemetry").exists()


@pytest.mark.slow
def test_report_draws_telemetry_over_time(standin: StandIn, tmp_path: Path) -> None:
    sweep_dir = _sweep(standin, tmp_path)
    from analysis.load import load
    from analysis.report import build

    report = build(load([sweep_dir]), argv=[str(sweep_dir)])
    assert (report.out_dir / "figures" / "telemetry_over_time.png").read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"^## \d+\. Telemetry over time$", report.markdown, re.M)
    assert "machine CPU %" in report.markdown   # the telemetry means are table columns


def test_unwritable_samples_never_cost_a_trial(standin: StandIn, tmp_path: Path) -> None:
    """``_telemetry`` taken by a file: one line says the samples are not saved; every trial is stored."""
    sweep_id = "blocked"
    (tmp_path / sweep_id).mkdir()
    (tmp_path / sweep_id / "_telemetry").write_text("not a directory")
    standin.queue(*[Script() for _ in range(3)])
    result = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3", "trials=2",
                       "warmup=1", f"sweep_id={sweep_id}", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert out.count("telemetry samples not saved") == 1 and "Traceback" not in out
    df = pd.read_parquet(tmp_path / sweep_id)
    assert len(df) == 3 and df["status"].eq("ok").all() and df["telemetry_samples"].ge(2).all()
