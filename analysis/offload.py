"""Did the cell's load-time request take effect?  One flag per cell, from what the server reported.

Why: Ollama accepts ``num_gpu=80`` and runs on the CPU when the layers do not
fit (or there is no GPU), and may pick its own context length.  A "fast"
setting that silently ran on the CPU is a finding, not a result, so every
per-cell table shows this flag next to the cell.

Inputs are the columns the sweep stores from ``GET /api/ps`` after each cell's
warm-up — ``size``, ``size_vram``, ``vram_fraction`` (= size_vram / size),
``context_length`` — with the cell's ``num_gpu`` / ``num_ctx`` and, when known,
``model_layers`` (the model's block count from ``/api/show``).  Cells without
those columns (older sweeps, CSV) get an empty flag.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

OK = "ok"
PS_COLUMNS = ("size", "size_vram", "vram_fraction", "context_length")
# A partial offload within this many percentage points of the share asked is not flagged:
# /api/ps sizes include the KV cache and buffers, so the fraction is not exactly layers/total.
TOLERANCE = 0.10


def asked_share(num_gpu: float, layers: float) -> float:
    """Share of the model the request asked to put in VRAM: num_gpu / (blocks + output layer), at most 1."""
    if np.isnan(num_gpu):
        return np.nan
    if num_gpu <= 0:
        return 0.0
    if np.isnan(layers) or layers <= 0:
        return 1.0 if num_gpu >= 999 else np.nan   # only "all layers" is known without the block count
    return float(min(num_gpu / (layers + 1), 1.0))


def flag_one(num_gpu: float, num_ctx: float, size: float, vram_fraction: float,
             context_length: float, layers: float = np.nan) -> str:
    """The flag text of one cell: ``ok``, or what did not take effect (``; ``-joined); ``""`` without data."""
    if all(np.isnan(v) for v in (size, vram_fraction, context_length)):
        return ""
    problems = []
    if not np.isnan(vram_fraction) and not np.isnan(num_gpu):
        share = asked_share(num_gpu, layers)
        if num_gpu > 0 and vram_fraction <= 0:
            problems.append(f"CPU only: num_gpu={int(num_gpu)} but 0 % in VRAM")
        elif num_gpu > 0 and not np.isnan(share) and vram_fraction < share - TOLERANCE:
            problems.append(f"partial offload: {vram_fraction:.0%} in VRAM, num_gpu={int(num_gpu)} asks ≈{share:.0%}")
        elif num_gpu == 0 and vram_fraction > 0:
            problems.append(f"{vram_fraction:.0%} in VRAM although num_gpu=0")
    if not np.isnan(context_length) and not np.isnan(num_ctx) and int(context_length) != int(num_ctx):
        problems.append(f"context_length {int(context_length)} ≠ num_ctx {int(num_ctx)}")
    return "; ".join(problems) or OK


def flags(df: pd.DataFrame, index: pd.Index) -> pd.Series | None:
    """Per cell_key (``index``): the offload flag, or None when no row carries /api/ps data."""
    have = [c for c in PS_COLUMNS if c in df.columns]
    if not have or not df[have].notna().any().any():
        return None
    cols = [c for c in ("num_gpu", "num_ctx", "model_layers", *PS_COLUMNS) if c in df.columns]
    rows = df.loc[df[have].notna().any(axis=1), ["cell_key", *cols]]
    first = rows.groupby("cell_key", sort=True)[cols].first().reindex(index)

    def get(name: str) -> np.ndarray:
        return first[name].to_numpy(float) if name in first.columns else np.full(len(first), np.nan)

    size, vram, frac = get("size"), get("size_vram"), get("vram_fraction")
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(np.isnan(frac) & (size > 0), vram / size, frac)
    out = [
        flag_one(g, c, s, f, cl, ly)
        for g, c, s, f, cl, ly in zip(get("num_gpu"), get("num_ctx"), size, frac, get("context_length"),
                                      get("model_layers"))
    ]
    return pd.Series(out, index=index, dtype=object)
