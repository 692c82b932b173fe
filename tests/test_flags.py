"""Which cells the analysis flags as "every core beside the harness", on rows built field by field."""

from __future__ import annotations

import pandas as pd

from analysis import flags

PROVENANCE = {"s1": [{"machine": {"cpu_count": 8}}]}


def _row(cell: str, base_url: str, num_thread: float, vram_fraction: float | None, backend: str = "ollama",
         measured: bool = True) -> dict:
    return {"cell": cell, "dataset": "s1", "base_url": base_url, "backend": backend, "num_thread": num_thread,
            "vram_fraction": vram_fraction, "measured": measured}


def test_only_local_cpu_cells_with_every_core_are_flagged() -> None:
    df = pd.DataFrame([
        _row("local all cores", "http://localhost:11434", 8, 0.0),
        _row("loopback more than cores", "http://127.0.0.1:11434", 16, None),
        _row("embedded all cores", "embedded (127.0.0.1)", 8, 0.0, backend="embedded"),
        _row("local fewer threads", "http://127.0.0.1:11434", 4, 0.0),
        _row("remote all cores", "http://gpu-box:11434", 8, 0.0),
        _row("local on the GPU", "http://127.0.0.1:11434", 8, 1.0),
        _row("runtime decides", "http://127.0.0.1:11434", float("nan"), 0.0),
        _row("warm-up only", "http://127.0.0.1:11434", 8, 0.0, measured=False),
    ])
    assert flags.shared_cpu_cells(df, PROVENANCE) == ["embedded all cores", "local all cores", "loopback more than cores"]
    assert flags.shared_cpu_line(df, PROVENANCE, limit=1).startswith("3 cell(s) ran a CPU engine")


def test_without_the_machines_core_count_nothing_is_flagged() -> None:
    df = pd.DataFrame([_row("local all cores", "http://localhost:11434", 8, 0.0)])
    assert flags.shared_cpu_cells(df, {"s1": [{}]}) == [] and flags.shared_cpu_line(df, {}) is None
