"""GPU machines: num_gpu offloads layers and /api/ps reports the VRAM they take (marked ``gpu``).

On a machine without an NVIDIA driver these are skipped with the reason; the
CPU-side truth (``size_vram`` 0 on a CPU build) is tested in test_server_api.py.
"""

from __future__ import annotations

import pytest

from sweep.server.vram import process_vram_bytes

pytest_plugins = ["tests.fixtures_server"]


class _FakeNvml:
    """NVML's process accounting with two GPUs, one of which runs our pid (the seam, not our I/O)."""

    class _Proc:
        def __init__(self, pid: int, used: int | None) -> None:
            self.pid, self.usedGpuMemory = pid, used

    def __init__(self, pid: int) -> None:
        self.procs = {0: [self._Proc(pid, 300 << 20), self._Proc(1, 5 << 30)], 1: [self._Proc(pid, None)]}

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: return 2
    def nvmlDeviceGetHandleByIndex(self, i: int) -> int: return i
    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list: return self.procs[h]


def test_vram_counts_only_this_process_and_known_sizes() -> None:
    assert process_vram_bytes(4242, nvml=_FakeNvml(4242)) == 300 << 20


@pytest.mark.gpu
@pytest.mark.timeout(300)
def test_num_gpu_offloads_layers_and_ps_reports_vram(http) -> None:
    sizes = {}
    for layers in (0, 999):
        r = http.post("/api/generate", json={"model": "gemma3:270m", "prompt": "Hi",
                                             "options": {"num_gpu": layers, "num_predict": 4}})
        assert r.status_code == 200
        sizes[layers] = http.get("/api/ps").json()["models"][0]["size_vram"]
    assert sizes[999] > sizes[0] and sizes[999] > 50 << 20, sizes
