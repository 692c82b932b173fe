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

``--tools-only`` builds llama.cpp's own ``llama-server`` and ``llama-bench``
(``backend=llama_server``, the speed anchor of ``python -m benchmarks engine``
and their tests: ``make tools``, which ``make test`` and ``make bench`` run)
from the llama.cpp tree vendored in the same sdist, with the same flags, into
a directory keyed the same way (see :mod:`sweep.backends.llama_tools`).  It is a
separate step because it costs another ~6 min on 2 cores the first time and
``make demo`` uses neither tool.

Where an NVIDIA driver *and* the CUDA toolkit (``nvcc``) are present, both
builds add ``-DGGML_CUDA=ON``; the chosen flags are printed and part of the key.

Rebuild by hand: ``python scripts/install_engine.py --force`` (the engine) or
``--tools-only --force`` (the tools).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweep.backends.llama_tools import TOOLS, tools_dir  # noqa: E402  (one place for where the tools live)

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


def cuda_available() -> bool:
    """A CUDA toolkit to build with *and* a driver to run on (a toolkit alone is not a GPU)."""
    if shutil.which("nvcc") is None:
        return False
    return Path("/proc/driver/nvidia/version").exists() or _nvidia_smi_ok()


def _nvidia_smi_ok() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def cmake_args(flags: set[str], cuda: bool = False) -> str:
    """Explicit, non-native ggml flags matching what this CPU supports (plus CUDA when usable)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        parts = ["-DGGML_NATIVE=OFF"]
    else:
        parts = ["-DGGML_NATIVE=OFF"]
        for cpu_flag, switch in _CPU_FLAG_TO_GGML.items():
            parts.append(f"-D{switch}={'ON' if cpu_flag in flags else 'OFF'}")
    if cuda:
        parts.append("-DGGML_CUDA=ON")
    return " ".join(parts)


def wheel_dir(args: str) -> Path:
    """Where the wheel built with exactly these flags lives."""
    root = Path(os.environ.get("CHIMERA_WHEEL_CACHE", Path.home() / ".cache" / "chimera-sweep" / "wheels"))
    key = hashlib.sha256(f"{LLAMA_CPP_VERSION}|{sys.version_info[:2]}|{args}".encode()).hexdigest()[:12]
    return root / f"llama-cpp-python-{LLAMA_CPP_VERSION}-{key}"


def _pip(*argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *argv], check=True, env=env)


# Only what llama-server and llama-bench need: no tests, examples, web UI download, curl or TLS.
# Static binaries: the cached directory does not depend on the (deleted) build tree's library paths.
_TOOLS_CMAKE = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_UI=OFF",
                "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF"]


def _vendored_tree(workdir: Path) -> Path:
    """Download the sdist (the same file the wheel is built from) and unpack its llama.cpp tree."""
    _pip("download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", str(workdir),
         f"llama-cpp-python=={LLAMA_CPP_VERSION}")
    sdist = next(workdir.glob("llama_cpp_python-*.tar.gz"))
    prefix = f"llama_cpp_python-{LLAMA_CPP_VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(workdir, members=members, **safe)
    return workdir / prefix


def build_tools(args: str, force: bool) -> Path:
    """Build llama-server and llama-bench once per flag set; return their directory."""
    target = tools_dir(LLAMA_CPP_VERSION, args)
    if not force and all((target / name).is_file() for name in TOOLS):
        print(f"llama.cpp tools: cached in {target}", flush=True)
        return target
    print(f"building llama-server and llama-bench (for make test, make bench and backend=llama_server; first time "
          f"only, ~6 min on 2 cores) into {target}; compiler output: {target.name}.build.log beside it", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chimera-llama-tools-") as tmp:
        source = _vendored_tree(Path(tmp))
        build = Path(tmp) / "build"
        log = target.parent / f"{target.name}.build.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:  # compiler warnings by the thousand: kept in a file, shown on failure
            for step in (["cmake", "-S", str(source), "-B", str(build), "-Wno-dev", *_TOOLS_CMAKE, *args.split()],
                         ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1), "--target", *TOOLS]):
                if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    tail = log.read_text(errors="replace").splitlines()[-30:]
                    sys.exit("llama.cpp tools build failed:\n" + "\n".join(tail) + f"\n(full log: {log})")
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(build / "bin", staging, symlinks=True)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    print(f"built llama.cpp tools in {time.monotonic() - started:.0f} s", flush=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--tools-only", action="store_true",
                        help="build llama-server and llama-bench instead of the engine's wheel (make tools)")
    opts = parser.parse_args()

    cuda = cuda_available()
    args = cmake_args(cpu_flags(), cuda)
    print(f"llama-cpp-python {LLAMA_CPP_VERSION}: CMAKE_ARGS={args} "
          f"({'CUDA toolkit and driver found' if cuda else 'CPU build: no CUDA toolkit + NVIDIA driver'})",
          flush=True)
    if opts.tools_only:
        build_tools(args, opts.force)
    else:
        install_wheel(args, opts.force)
    return 0


def install_wheel(args: str, force: bool) -> None:
    """Build (once per flag set) and install the llama-cpp-python wheel."""
    target = wheel_dir(args)
    wheels = sorted(target.glob("llama_cpp_python-*.whl"))
    if force or not wheels:
        print(f"building the llama-cpp-python wheel (the embedded engine; first time only, ~7-9 min on 2 cores) "
              f"into {target}", flush=True)
        target.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, CMAKE_ARGS=args, FORCE_CMAKE="1")
        _pip("wheel", "--no-cache-dir", "--no-deps", "--quiet", "-w", str(target),
             f"llama-cpp-python=={LLAMA_CPP_VERSION}", env=env)
        wheels = sorted(target.glob("llama_cpp_python-*.whl"))
    _pip("install", "--quiet", "--force-reinstall", "--no-deps", str(wheels[-1]))
    # the wheel's own runtime dependencies (numpy, jinja2, diskcache, typing-extensions)
    _pip("install", "--quiet", str(wheels[-1]))
    print(f"installed {wheels[-1].name}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
