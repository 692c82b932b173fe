"""Whether this machine can run the GPU tests, and if not, why (shown in the skip reason)."""

from __future__ import annotations


def gpu_missing_reason() -> str | None:
    """None when an NVIDIA driver answers and llama.cpp was built with GPU offload; else the reason."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as exc:
        return f"no NVIDIA driver ({type(exc).__name__}: {exc})"
    if count == 0:
        return "NVML found no GPU"
    from sweep.server.vram import gpu_offload_supported

    if not gpu_offload_supported():
        return "llama-cpp-python is a CPU build (make install builds with CUDA when nvcc and a driver are present)"
    return None
