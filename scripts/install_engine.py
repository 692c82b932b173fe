"""Install llama-cpp-python built with CPU flags that work on this machine.

Why this script exists: the default (``-march=native``) build of llama.cpp
takes the AMX code path on CPUs that advertise AMX, and that path crashes with
SIGSEGV on the first decode of a quantized model inside sandboxes where AMX
tiles are not usable.  We therefore derive explicit ``-DGGML_*`` flags from
``/proc/cpuinfo`` (never AMX) and build once.

pip's wheel cache ignores ``CMAKE_ARGS``: a wheel built with other flags would
be silently reused.  So we build with ``--no-cache-dir`` into a wheel directory
keyed by the version *and* a hash of the flags, and install from there.  A
re-run with the same flags takes seconds; a flag change rebuilds.

Rebuild by hand: ``python scripts/install_engine.py --force``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"

# cpuinfo flag -> ggml CMake switch. AMX is deliberately absent.
_CPU_FLAG_TO_GGML = {
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "avx512f": "GGML_AVX512",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
    "avx_vnni": "GGML_AVX_VNNI",
}


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_args(flags: set[str]) -> str:
    """Explicit, non-native ggml flags matching what this CPU supports."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return "-DGGML_NATIVE=OFF"
    parts = ["-DGGML_NATIVE=OFF"]
    for cpu_flag, switch in _CPU_FLAG_TO_GGML.items():
        parts.append(f"-D{switch}={'ON' if cpu_flag in flags else 'OFF'}")
    return " ".join(parts)


def wheel_dir(args: str) -> Path:
    """Where the wheel built with exactly these flags lives."""
    root = Path(os.environ.get("CHIMERA_WHEEL_CACHE", Path.home() / ".cache" / "chimera-sweep" / "wheels"))
    key = hashlib.sha256(f"{LLAMA_CPP_VERSION}|{sys.version_info[:2]}|{args}".encode()).hexdigest()[:12]
    return root / f"llama-cpp-python-{LLAMA_CPP_VERSION}-{key}"


def _pip(*argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *argv], check=True, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild the wheel even if one exists")
    opts = parser.parse_args()

    args = cmake_args(cpu_flags())
    target = wheel_dir(args)
    print(f"llama-cpp-python {LLAMA_CPP_VERSION}: CMAKE_ARGS={args}", flush=True)
    wheels = sorted(target.glob("llama_cpp_python-*.whl"))
    if opts.force or not wheels:
        print(f"building wheel into {target} (first time: ~7 min on 2 cores)", flush=True)
        target.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, CMAKE_ARGS=args, FORCE_CMAKE="1")
        _pip("wheel", "--no-cache-dir", "--no-deps", "--quiet", "-w", str(target),
             f"llama-cpp-python=={LLAMA_CPP_VERSION}", env=env)
        wheels = sorted(target.glob("llama_cpp_python-*.whl"))
    _pip("install", "--quiet", "--force-reinstall", "--no-deps", str(wheels[-1]))
    # the wheel's own runtime dependencies (numpy, jinja2, diskcache, typing-extensions)
    _pip("install", "--quiet", str(wheels[-1]))
    print(f"installed {wheels[-1].name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
