"""How much GPU memory this server process holds, for ``size_vram`` in ``/api/ps``.

Why measured and not estimated: ``num_gpu`` is a number of layers, and what
they cost in VRAM depends on the model, the context and the backend; NVML's
per-process accounting is the truthful figure.  On a CPU build of llama.cpp
nothing can be offloaded, so the answer is 0 without asking NVML.  (In a
container whose PID namespace hides host pids from NVML, no process matches and
the answer is 0 too: the README says so.)
"""

from __future__ import annotations

import os
from typing import Any


def gpu_offload_supported() -> bool:
    """True for a CUDA (or other GPU) build of llama.cpp."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except (ImportError, AttributeError, OSError):
        return False


def process_vram_bytes(pid: int | None = None, nvml: Any = None) -> int:
    """Bytes of GPU memory held by ``pid`` (this process by default), summed over GPUs."""
    if nvml is None and not gpu_offload_supported():
        return 0
    pid = os.getpid() if pid is None else pid
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
    except Exception:  # no NVML library or driver: nothing we can measure
        return 0
    total = 0
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and isinstance(proc.usedGpuMemory, int):
                    total += proc.usedGpuMemory
    except Exception:
        return total
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
    return total
