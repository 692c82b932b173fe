"""Cells whose CPU engine used every core of the machine that also measured them: flagged, never hidden.

Why: the harness (our runner, and the embedded server's own Python) needs CPU for
every streamed token.  With ``num_thread`` below the core count that CPU is idle
anyway; with ``num_thread`` = all cores it is taken from a compute thread, and the
engine's tok/s drops by a few percent that only those cells pay, so a comparison
over ``num_thread`` understates them (measured in ``python -m benchmarks engine``;
docs/measurement.md, "Measuring on the machine that computes").  A cell counts when its server
is on the measuring machine (the embedded engine, or a loopback address), it put
nothing on a GPU (``vram_fraction`` 0 or unknown) and its ``num_thread`` is at
least the machine's logical CPUs from the sweep's provenance.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from analysis.columns import BASE_URL
from sweep.contract import COLUMNS_BY_NAME

BACKEND, NUM_THREAD, VRAM_FRACTION = (COLUMNS_BY_NAME[n].name for n in ("backend", "num_thread", "vram_fraction"))

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _cpu_counts(provenance: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Dataset → the measuring machine's logical CPUs (datasets whose provenance says so)."""
    counts: dict[str, int] = {}
    for dataset, dicts in provenance.items():
        found = {(p.get("machine") or {}).get("cpu_count") for p in dicts} - {None}
        if len(found) == 1:
            counts[dataset] = int(found.pop())
    return counts


def _local(df: pd.DataFrame) -> pd.Series:
    embedded = df[BACKEND].astype(str).eq("embedded") if BACKEND in df.columns else False
    host = df[BASE_URL].map(lambda url: urlsplit(str(url)).hostname if "://" in str(url) else None)
    return embedded | host.isin(_LOOPBACK)


def cells(df: pd.DataFrame, provenance: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The labels of the measured cells that used every core beside the harness."""
    needed = {NUM_THREAD, BASE_URL, "dataset", "cell"}
    counts = _cpu_counts(provenance)
    if not counts or not needed <= set(df.columns):
        return []
    rows = df.loc[df["measured"]]
    cores = rows["dataset"].map(counts)
    on_cpu = rows[VRAM_FRACTION].fillna(0).eq(0) if VRAM_FRACTION in rows.columns else True
    flagged = rows.loc[_local(rows) & on_cpu & rows[NUM_THREAD].ge(cores) & cores.notna()]
    return sorted(map(str, flagged["cell"].unique()))


def line(df: pd.DataFrame, provenance: dict[str, list[dict[str, Any]]], limit: int = 3) -> str | None:
    """The one-line flag (None when no cell used every core of the measuring machine)."""
    flagged = cells(df, provenance)
    if not flagged:
        return None
    shown = "; ".join(flagged[:limit])
    more = f"; … {len(flagged) - limit} more" if len(flagged) > limit else ""
    return (f"{len(flagged)} cell(s) ran a CPU engine with num_thread ≥ the cores of the machine that measured "
            f"them, so the harness's CPU per token was taken from the engine and their tok/s is understated "
            f"(docs/measurement.md: 'Measuring on the machine that computes'; measure them from another machine): "
            f"{shown}{more}")
