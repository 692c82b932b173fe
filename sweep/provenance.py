"""Where a dataset came from: the tool, the software, the machine, the server, the models, the config.

Collected once per job and stored twice: as Parquet key-value metadata of
every cell file (so a single file copied elsewhere still says what made it) and
as ``<sweep>/_run.json`` (one place to read for the whole sweep).  Throughput
numbers without the machine that made them are not comparable; this makes the
environment part of the data instead of something to remember.

Secrets never get here: the config holds only the *names* of the environment
variables with API keys or headers, and nothing reads their values.
"""

from __future__ import annotations

import functools

import contextlib
import fcntl
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from sweep.background import machine_load
from sweep.contract import RUN_FILE, RUN_LOCK
from sweep.store import write_text_atomic
from sweep.telemetry import Gpus

PACKAGES = ("chimera-sweep", "hydra-core", "omegaconf", "httpx", "aiohttp", "pandas", "pyarrow", "scipy",
            "llama-cpp-python", "nvidia-ml-py", "psutil")
_PROJECT = Path(__file__).resolve().parent.parent


@functools.cache   # one process = one set of installed packages; a multirun asks once per job
def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.cache   # the checkout a sweep runs from does not change under it
def git_state(directory: Path = _PROJECT) -> dict[str, Any]:
    """Commit and dirty flag of the checkout the tool runs from (nulls outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(gpus: Gpus) -> dict[str, Any]:
    return {
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "gpus": gpus.names,
        "gpu_driver": gpus.driver_version,
        "cuda_driver": gpus.cuda_driver_version,
        "gpu_telemetry": "on" if gpus.available else f"off: {gpus.off_reason}",
    }


def model_record(show: dict[str, Any], tag: dict[str, Any] | None) -> dict[str, Any]:
    """What identifies a model build: digest (from /api/tags) and details (from /api/show)."""
    details = show.get("details") or (tag or {}).get("details") or {}
    return {
        "digest": (tag or {}).get("digest") or show.get("digest"),
        "family": details.get("family"),
        "parameter_size": details.get("parameter_size"),
        "quantization_level": details.get("quantization_level"),
        "format": details.get("format"),
    }


def collect(*, config: dict[str, Any], backend: str, server_version: str | None,
            models: dict[str, dict[str, Any]], gpus: Gpus, argv: list[str] | None = None) -> dict[str, Any]:
    """The provenance dict of one job."""
    versions = dict(package_versions())   # a copy: the cached dict is shared
    return {
        "tool": {"version": versions.pop("chimera-sweep"), **git_state()},
        "python": sys.version.split()[0],
        "packages": versions,
        "machine": machine(gpus),
        "server": {"backend": backend, "version": server_version},
        "models": models,
        "command": list(sys.argv if argv is None else argv),
        "config": config,
        "load": {"start": machine_load()},   # _run.json keeps the first job's start and adds the run's end
    }


@contextlib.contextmanager
def _locked(sweep_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write of ``_run.json`` between jobs of a parallel launcher."""
    with open(sweep_dir / RUN_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _RunText:
    """``_run.json`` as this process last wrote it: its text, the environment's and each cell's part of it.

    Why: the file holds every cell's config (~3 kB each), so reading, merging and
    writing it whole in every job grew with the sweep (1 ms at the first cell,
    20 ms at the 40th on a busy machine).  A job now serialises only its own cells;
    the file is parsed again only when another process has written it since.
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.env = _dumps({k: v for k, v in data.items() if k != "cells"})
        self.cells = {stem: _dumps(entry) for stem, entry in (data.get("cells") or {}).items()}
        self.text = self.assemble()

    def assemble(self) -> str:
        """The same text as ``json.dumps({**env, "cells": cells}, indent=2)``, from the parts."""
        cells = ",\n".join(f"    {json.dumps(stem)}: " + text.replace("\n", "\n    ") for stem, text in self.cells.items())
        body = '"cells": {\n' + cells + "\n  }" if self.cells else '"cells": {}'
        head = self.env[:-2] + ",\n  " if self.env != "{}" else "{\n  "   # the environment without its closing brace
        return head + body + "\n}"


def record_load_end(sweep_dir: Path, load: dict[str, Any]) -> None:
    """At the end of a run (or multirun): the machine's load then, as ``load.end`` of ``_run.json``.

    Why: with ``load.start`` (:func:`collect`) it says whether the machine was busy
    around the sweep, even for trials of a sweep whose rows predate the per-trial columns.
    """
    path = sweep_dir / RUN_FILE
    with _locked(sweep_dir):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return   # no run file (nothing was measured), or one we cannot read: leave it as it is
        if not isinstance(data, dict):
            return
        data["load"] = {**(data.get("load") or {}), "end": load}
        write_text_atomic(_dumps(data), path)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


_written: dict[Path, _RunText] = {}   # per run file: what this process wrote there last


def record_run(sweep_dir: Path, provenance: dict[str, Any], cells: dict[str, dict[str, Any]]) -> Path:
    """Merge this job into ``_run.json``: the newest environment, and each cell's resolved config.

    Jobs of one sweep share the environment; their configs differ, so they are
    kept per cell file (``cells``: file stem → the cell's config and command).
    Unchanged (a resumed cell), the file is not written again.
    """
    path = sweep_dir / RUN_FILE
    with _locked(sweep_dir):
        current = None
        with contextlib.suppress(OSError):
            current = path.read_text()
        run = _written.get(path)
        if run is None or run.text != current:   # another process wrote it (or nobody yet)
            previous: dict[str, Any] = {}
            with contextlib.suppress(ValueError, TypeError):
                previous = json.loads(current) if current else {}
            run = _RunText(previous if isinstance(previous, dict) else {})
        env = {k: v for k, v in provenance.items() if k not in ("config", "command")}
        if "load" in env:   # the machine's load when the run started stays the first job's
            env["load"] = {**env["load"], **(json.loads(run.env).get("load") or {})}
        run.env = _dumps(env)
        run.cells.update({stem: _dumps(entry) for stem, entry in cells.items()})
        text = run.assemble()
        if text != current:
            write_text_atomic(text, path)
        run.text = text
        _written[path] = run
    return path
