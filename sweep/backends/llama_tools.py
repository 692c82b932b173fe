"""Where llama.cpp's own ``llama-server`` and ``llama-bench`` live once built.

``make tools`` (``scripts/install_engine.py --tools-only``) builds them from the llama.cpp tree vendored in
the llama-cpp-python sdist (the embedded engine's own llama.cpp version), with
the same CPU flags, into a directory keyed by version and flags (like the
wheel).  The sweep and the benchmarks only ask :func:`tool_path`, which takes
the most recent build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

TOOLS = ("llama-server", "llama-bench")
TOOLS_ENV = "CHIMERA_LLAMA_TOOLS"   # a directory holding both binaries overrides the cache


def tools_root() -> Path:
    """The cache root (``$CHIMERA_TOOLS_CACHE`` or ``~/.cache/chimera-sweep/llama-tools``)."""
    default = Path.home() / ".cache" / "chimera-sweep" / "llama-tools"
    return Path(os.environ.get("CHIMERA_TOOLS_CACHE", default))


def tools_dir(version: str, cmake_args: str) -> Path:
    """The directory for tools built from ``version`` with exactly these flags."""
    key = hashlib.sha256(f"{version}|{cmake_args}".encode()).hexdigest()[:12]
    return tools_root() / f"llama.cpp-{version}-{key}"


def tool_path(name: str) -> Path | None:
    """The binary to run: ``$CHIMERA_LLAMA_TOOLS``, else the newest cached build, else ``PATH``."""
    override = os.environ.get(TOOLS_ENV)
    if override:
        candidate = Path(override) / name
        return candidate if candidate.is_file() else None
    builds = sorted(tools_root().glob(f"llama.cpp-*/{name}"), key=lambda p: p.stat().st_mtime)
    if builds:
        return builds[-1]
    found = shutil.which(name)
    return Path(found) if found else None


def missing_hint(name: str) -> str:
    """The one line a user reads when a tool is missing: the command that builds it, and what it costs.

    Why an error and not a build on first use: a sweep's jobs may run in several worker processes or on other
    machines (launchers), where a 6-minute compile started by each would race; one command run once is plain.
    """
    return (f"{name} is not built: run 'make tools' (llama-server and llama-bench, once: ~6 min on 2 cores; "
            f"or python scripts/install_engine.py --tools-only), or set {TOOLS_ENV}=DIR to a directory holding both")
