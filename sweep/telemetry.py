"""What the machine did during a trial: GPU via NVML, CPU and memory of the server via psutil.

A :class:`TrialSampler` runs a background thread for the length of one trial and
returns both the per-trial aggregates (the ``gpu_*``/``cpu_*`` columns of
:class:`sweep.contract.TrialRecord`) and the raw samples, which go to
``<sweep>/_telemetry/<cell>.parquet`` so a report can draw power or CPU over time.

Why NVML sits behind :class:`Gpus`: it is the one boundary where a machine
without an NVIDIA driver (this one, CI) differs from a GPU box, so tests give
:class:`Gpus` a fake NVML module there and nowhere else.  Without a driver every
GPU column stays null and one info line says telemetry is off; nothing crashes.

Multi-GPU aggregation (documented in the column docs too): power, energy and
memory are summed over GPUs (what the machine draws and holds); utilisation and
SM clock are averaged over GPUs; peaks (utilisation, temperature) are the
maximum of any GPU.  The server's CPU and RSS include its child processes,
because Ollama runs each model in a child "runner" process.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psutil
import pyarrow as pa

MIB = 1024 * 1024


@dataclass
class GpuReading:
    """One GPU at one instant (``None`` where the GPU does not report the value)."""

    util_pct: float | None = None
    mem_used_mb: float | None = None
    power_w: float | None = None
    temp_c: float | None = None
    sm_clock_mhz: float | None = None


@dataclass
class Sample:
    """The machine at ``t_s`` seconds after the trial started."""

    t_s: float
    gpus: list[GpuReading] = field(default_factory=list)
    cpu_pct_system: float | None = None
    cpu_pct_process: float | None = None
    server_rss_mb: float | None = None


def _maybe(read: Callable[[], Any]) -> Any:
    """A value the device may not support: ``None`` instead of an NVML error."""
    try:
        return read()
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Gpus:
    """NVML for this process: initialised once, saying why not when it cannot be.

    ``nvml`` is the ``pynvml`` module (nvidia-ml-py) or anything with the same functions.
    """

    def __init__(self, nvml: Any = None) -> None:
        self.handles: list[Any] = []
        self.names: list[str] = []
        self.off_reason: str | None = None
        self.driver_version: str | None = None
        self.cuda_driver_version: int | None = None
        try:
            if nvml is None:
                import pynvml as nvml
            nvml.nvmlInit()
        except Exception as exc:  # no library, no driver, no device: all mean "no GPU telemetry"
            self.off_reason = f"{type(exc).__name__}: {exc}"
            return
        self.nvml = nvml
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        self.names = [_text(nvml.nvmlDeviceGetName(h)) for h in self.handles]
        self.driver_version = _maybe(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        self.cuda_driver_version = _maybe(nvml.nvmlSystemGetCudaDriverVersion)
        if not self.handles:
            self.off_reason = "NVML found no GPU"
        atexit.register(self.close)

    @property
    def available(self) -> bool:
        return bool(self.handles)

    def read(self) -> list[GpuReading]:
        n = self.nvml
        readings = []
        for h in self.handles:
            mem = _maybe(lambda: n.nvmlDeviceGetMemoryInfo(h))
            power_mw = _maybe(lambda: n.nvmlDeviceGetPowerUsage(h))
            readings.append(GpuReading(
                util_pct=_maybe(lambda: float(n.nvmlDeviceGetUtilizationRates(h).gpu)),
                mem_used_mb=None if mem is None else mem.used / MIB,
                power_w=None if power_mw is None else power_mw / 1000.0,
                temp_c=_maybe(lambda: float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))),
                sm_clock_mhz=_maybe(lambda: float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM))),
            ))
        return readings

    def energy_mj(self) -> list[float | None]:
        """Each GPU's total-energy counter (mJ since driver load), ``None`` where unsupported."""
        return [_maybe(lambda: float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h))) for h in self.handles]

    def close(self) -> None:
        if self.handles:
            self.handles = []
            _maybe(self.nvml.nvmlShutdown)


class ServerProcess:
    """CPU % (100 = one core) and RSS of the server and its children, between consecutive reads.

    CPU seconds are remembered per pid, so a runner started mid-trial adds only
    its own time and one that exits does not make the total run backwards.
    """

    # Listing children scans every pid in /proc (~0.5 ms here, more on a busy box) while the
    # stream loop shares our GIL: re-list at most once a second, which still catches a
    # runner that a cold model load starts mid-trial.
    RELIST_S = 1.0

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self._cpu_s: dict[int, float] = {}
        self._last_t: float | None = None
        self._tree: list[psutil.Process] = []
        self._listed_at = -float("inf")

    def _processes(self, now: float) -> list[psutil.Process]:
        if now - self._listed_at >= self.RELIST_S:
            self._listed_at = now
            try:
                self._tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                self._tree = [self.root]
        return self._tree

    def read(self) -> tuple[float | None, float | None]:
        now = time.monotonic()
        spent, rss, alive = 0.0, 0, False
        for proc in self._processes(now):
            try:
                with proc.oneshot():
                    times, mem = proc.cpu_times(), proc.memory_info().rss
            except psutil.Error:
                continue
            alive = True
            cpu_s = times.user + times.system
            spent += cpu_s - self._cpu_s.get(proc.pid, cpu_s if self._last_t is None else 0.0)
            self._cpu_s[proc.pid] = cpu_s
            rss += mem
        wall = None if self._last_t is None else now - self._last_t
        self._last_t = now
        if not alive:
            return None, None
        return (100.0 * max(spent, 0.0) / wall if wall else None), rss / MIB


def _server(pid: int | None) -> ServerProcess | None:
    if pid is None:
        return None
    try:
        return ServerProcess(pid)
    except psutil.Error:
        return None


# ---------------------------------------------------------------- aggregation (pure)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _trapezoid(times: list[float], values: list[float]) -> float:
    return sum((t1 - t0) * (v0 + v1) / 2 for t0, t1, v0, v1 in zip(times, times[1:], values, values[1:]))


def gpu_energy_j(samples: list[Sample], start_mj: list[float | None], end_mj: list[float | None]) -> float | None:
    """Energy over the trial, summed over GPUs: counter delta where there is one, else ∫ power dt."""
    total, measured = 0.0, False
    for i, (a, b) in enumerate(zip(start_mj, end_mj)):
        if a is not None and b is not None and b >= a:
            total += (b - a) / 1000.0
            measured = True
            continue
        points = [(s.t_s, s.gpus[i].power_w) for s in samples if i < len(s.gpus) and s.gpus[i].power_w is not None]
        if len(points) >= 2:
            total += _trapezoid([t for t, _ in points], [p for _, p in points])
            measured = True
    return total if measured else None


def aggregate(samples: list[Sample], names: list[str], start_mj: list[float | None],
              end_mj: list[float | None]) -> dict[str, Any]:
    """The per-trial telemetry columns from the samples of one trial."""
    def per_sample(attr: str, combine: Callable[[list[float]], float | None]) -> list[float]:
        out = []
        for s in samples:
            values = [getattr(g, attr) for g in s.gpus if getattr(g, attr) is not None]
            if values:
                out.append(combine(values))
        return out

    def every(attr: str) -> list[float]:
        return [getattr(g, attr) for s in samples for g in s.gpus if getattr(g, attr) is not None]

    def machine(attr: str) -> list[float]:
        return [getattr(s, attr) for s in samples if getattr(s, attr) is not None]

    gpu = bool(names)
    return {
        "gpu_name": " + ".join(names) if gpu else None,
        "gpu_count": len(names) if gpu else None,
        "gpu_util_pct_mean": _mean(per_sample("util_pct", _mean)),
        "gpu_util_pct_max": max(every("util_pct"), default=None),
        "gpu_mem_used_mb_max": max(per_sample("mem_used_mb", sum), default=None),
        "gpu_power_w_mean": _mean(per_sample("power_w", sum)),
        "gpu_energy_j": gpu_energy_j(samples, start_mj, end_mj) if gpu else None,
        "gpu_temp_c_max": max(every("temp_c"), default=None),
        "gpu_sm_clock_mhz_mean": _mean(per_sample("sm_clock_mhz", _mean)),
        "cpu_pct_system": _mean(machine("cpu_pct_system")),
        "cpu_pct_process": _mean(machine("cpu_pct_process")),
        "server_rss_mb_max": max(machine("server_rss_mb"), default=None),
        "telemetry_samples": len(samples),
    }


def joules_per_token(energy_j: float | None, eval_count: int | None) -> float | None:
    return energy_j / eval_count if energy_j is not None and eval_count else None


# ---------------------------------------------------------------- sampling


class TrialSampler:
    """Samples every ``interval_s`` from :meth:`start` to :meth:`stop` on a daemon thread.

    CPU figures are "since the previous read", so the first sample (t = 0)
    carries GPU readings only, and a final sample is taken at stop: even a
    trial shorter than the interval gets its CPU figures.
    """

    def __init__(self, gpus: Gpus, interval_s: float = 0.1, server_pid: int | None = None) -> None:
        self.gpus = gpus
        self.interval_s = interval_s
        self.server = _server(server_pid)
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._energy_start: list[float | None] = []

    def start(self) -> "TrialSampler":
        psutil.cpu_percent(None)
        if self.server is not None:
            self.server.read()
        self._t0 = time.monotonic()
        self._energy_start = self.gpus.energy_mj() if self.gpus.available else []
        self.samples.append(Sample(0.0, self.gpus.read() if self.gpus.available else []))
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self._sample())

    def _sample(self) -> Sample:
        cpu, rss = self.server.read() if self.server is not None else (None, None)
        return Sample(
            t_s=time.monotonic() - self._t0,
            gpus=self.gpus.read() if self.gpus.available else [],
            cpu_pct_system=psutil.cpu_percent(None),
            cpu_pct_process=cpu,
            server_rss_mb=rss,
        )

    def stop(self) -> dict[str, Any]:
        """Stop sampling; the aggregate columns of this trial."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(self._sample())
        end = self.gpus.energy_mj() if self.gpus.available else []
        return aggregate(self.samples, self.gpus.names if self.gpus.available else [], self._energy_start, end)


_OLLAMA_PIDS: dict[str, int | None] = {}   # base_url → what the last search found


def find_local_ollama_pid(base_url: str) -> int | None:
    """The pid of an ``ollama serve`` on this machine, if ``base_url`` points here.

    Searching every process costs 5–10 ms on a busy machine, once per job; the
    answer is kept for the process while that process lives (a restarted Ollama
    is searched again).  "None here" is kept too: a server already answering at
    that address that is not an ``ollama serve`` (a container, a stand-in) does
    not become one between two cells.
    """
    if urlsplit(base_url).hostname not in ("localhost", "127.0.0.1", "::1"):
        return None
    if base_url in _OLLAMA_PIDS:
        pid = _OLLAMA_PIDS[base_url]
        if pid is None or _is_ollama(pid):
            return pid
    _OLLAMA_PIDS[base_url] = next((p.pid for p in psutil.process_iter() if _is_ollama(p.pid)), None)
    return _OLLAMA_PIDS[base_url]


def _is_ollama(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.name() == "ollama" and "serve" in proc.cmdline()
    except psutil.Error:
        return False


# ---------------------------------------------------------------- the samples file

TRACE_SCHEMA = pa.schema([
    ("cell_id", pa.string()), ("cell_hash", pa.string()), ("trial", pa.int64()), ("warmup", pa.bool_()),
    ("attempt", pa.int64()), ("started_at", pa.timestamp("us", tz="UTC")), ("t_s", pa.float64()),
    ("cpu_pct_system", pa.float64()), ("cpu_pct_process", pa.float64()), ("server_rss_mb", pa.float64()),
    ("gpu_index", pa.int64()), ("gpu_util_pct", pa.float64()), ("gpu_power_w", pa.float64()),
    ("gpu_mem_used_mb", pa.float64()), ("gpu_temp_c", pa.float64()),
])


def sample_rows(samples: list[Sample], identity: dict[str, Any]) -> list[dict[str, Any]]:
    """Long-format rows for ``_telemetry/<cell>.parquet``: one per sample and GPU (or one without GPU)."""
    rows = []
    for s in samples:
        base = {**identity, "t_s": s.t_s, "cpu_pct_system": s.cpu_pct_system,
                "cpu_pct_process": s.cpu_pct_process, "server_rss_mb": s.server_rss_mb}
        for index, g in enumerate(s.gpus or [None]):
            rows.append({**base, "gpu_index": None if g is None else index,
                         "gpu_util_pct": None if g is None else g.util_pct,
                         "gpu_power_w": None if g is None else g.power_w,
                         "gpu_mem_used_mb": None if g is None else g.mem_used_mb,
                         "gpu_temp_c": None if g is None else g.temp_c})
    return rows


# ---------------------------------------------------------------- per job


class Telemetry:
    """One job's telemetry: the NVML session, the server process, the sampling interval.

    Made once per job; :meth:`sampler` gives a fresh :class:`TrialSampler` per trial.
    """

    _announced = False

    def __init__(self, interval_s: float, server_pid: int | None, gpus: Gpus | None = None,
                 say: Callable[[str], None] = print) -> None:
        self.interval_s = interval_s
        self.server_pid = server_pid
        self.gpus = gpus if gpus is not None else process_gpus()
        if not self.gpus.available and not Telemetry._announced:
            Telemetry._announced = True
            say(f"GPU telemetry off ({self.gpus.off_reason}); sampling CPU and memory only")

    def sampler(self) -> TrialSampler:
        return TrialSampler(self.gpus, self.interval_s, self.server_pid)


_GPUS: Gpus | None = None


def process_gpus() -> Gpus:
    """One NVML session per process (a multirun's jobs share it)."""
    global _GPUS
    if _GPUS is None:
        _GPUS = Gpus()
    return _GPUS
