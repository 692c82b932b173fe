"""A folder of the original harnesses' results → trial rows, the problems met, and the summaries' disagreements.

Why one driver for three formats: a user's results folder mixes them (single-agent run
directories beside multi-agent scenarios), and a file is recognised by its content, not
its place.  Every file is converted on its own: a truncated file, a missing field or a
JSON of something else is one line naming the file and the field, and the rest of the
folder is still imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from analysis.importers import python_multi, rust_multi, rust_single
from analysis.importers.common import Difference, Problem, Rows, read_json
from sweep.contract import PRIVATE_PREFIXES, RUN_FILE

METRICS_FILE = "metrics.json"
HARNESSES = (rust_single.HARNESS, rust_multi.HARNESS, python_multi.HARNESS)


@dataclass
class Converted:
    """What one conversion of a folder gave."""

    table: pa.Table
    problems: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    rows_by_harness: dict[str, int] = field(default_factory=dict)
    files: int = 0                       # run files imported
    provenance: list[dict[str, Any]] = field(default_factory=list)   # distinct machines, for the environment table


def harness_files(root: Path) -> list[Path]:
    """Every ``metrics.json`` and ``summary.json`` under ``root`` (``_``/``.`` folders skipped: our own output)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(PRIVATE_PREFIXES))
        for name in (METRICS_FILE, rust_multi.SUMMARY_FILE):
            if name in filenames:
                out.append(Path(dirpath) / name)
    return out


def is_harness_folder(path: Path) -> bool:
    """A directory that is not one of our sweeps and holds at least one ``metrics.json``."""
    if not path.is_dir() or (path / RUN_FILE).is_file():
        return False
    for _, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(PRIVATE_PREFIXES)]
        if METRICS_FILE in filenames:
            return True
    return False


def _machines(data: dict[str, Any], harness: str) -> list[dict[str, Any]]:
    """The Rust programs' ``system_info{arch, hostname, os, rust_version}`` of each agent, labelled by harness."""
    out = []
    for agent in data.values():
        if isinstance(agent, dict):
            info = agent.get("system_info") or (agent.get("result") or {}).get("system_info")
            if isinstance(info, dict):
                out.append({"harness": harness, **{k: info[k] for k in sorted(info) if isinstance(info[k], str)}})
    return out


def convert(root: Path, files: list[Path] | None = None) -> Converted:
    """Convert every harness file under ``root``; problems are collected, never raised."""
    files = harness_files(root) if files is None else files
    rows, diffs, problems = Rows(), [], []
    counts = dict.fromkeys(HARNESSES, 0)
    tests: dict[str, list[dict[str, Any]]] = {}
    imported = 0
    machines: list[dict[str, Any]] = []
    for path in files:
        if path.name != METRICS_FILE:
            continue
        rel = path.relative_to(root).as_posix()
        try:
            data = read_json(path, rel)
            if rust_single.matches(data):
                part, d = rust_single.convert(path, rel, data)
                harness = rust_single.HARNESS
            elif rust_multi.matches(data):
                part, d, figures = rust_multi.convert(path, rel, data)
                tests.setdefault(figures["test"], []).append(figures)
                harness = rust_multi.HARNESS
            elif python_multi.matches(data):
                part, d = python_multi.convert(path, rel, data)
                harness = python_multi.HARNESS
            else:
                raise Problem(rel, "missing field `baseline`/`chimera` (Rust single agent) or `collector`/`insight` "
                                   "(multi-agent): not a metrics.json of a known harness")
        except Problem as exc:
            problems.append(str(exc))
            continue
        rows.extend(part)
        machines += [m for m in _machines(data, harness) if m not in machines]
        diffs += d
        counts[harness] += part.count
        imported += 1
    for test, runs in sorted(tests.items()):
        summary = root / test / rust_multi.SUMMARY_FILE
        if summary.is_file():
            try:
                diffs += rust_multi.check_summary(summary, summary.relative_to(root).as_posix(), runs)
            except Problem as exc:
                problems.append(str(exc))
    return Converted(rows.table(), problems, diffs, {k: v for k, v in counts.items() if v}, imported, machines)
