"""What a table's numbers may not mean, flagged beside them, never hidden: one module for every such flag.

Why one module: each flag answers the same question ("did the cell measure what its label
says?") from the stored rows, and each is shown, never used to drop a row:

* **offload** (:func:`flags`, per cell, a column of every per-cell table): did the cell's
  load-time request take effect?  Ollama accepts ``num_gpu=80`` and runs on the CPU when the
  layers do not fit (or there is no GPU), and may pick its own context length.  A "fast"
  setting that silently ran on the CPU is a finding, not a result.  Inputs are the columns the
  sweep stores from ``GET /api/ps`` after each cell's warm-up (``size``, ``size_vram``,
  ``vram_fraction`` = size_vram / size, ``context_length``) with the cell's ``num_gpu`` /
  ``num_ctx`` and, when known, ``model_layers`` (the block count from ``/api/show``).  Cells
  without those columns (older sweeps, CSV) get an empty flag.
* **servers** (:func:`spanning`, :func:`servers_line`, one report and terminal line): cells
  whose measured rows came from more than one server (``base_url``).  The tables key a cell by
  its label and show its first row's server, so a cell measured partly on one machine and
  partly on another (a resume pointed at another server, or a sweep that moved a cell when its
  server stayed busy) gets one mean and one CI over two machines.  The sweep keeps a cell on its
  server (``sweep.backends.hosts``); this says so where a reader looks when it did not.
* **shared CPU** (:func:`shared_cpu_cells`, :func:`shared_cpu_line`, one report and terminal
  line): cells whose CPU engine used every core of the machine that also measured them.  The
  harness (our runner, and the embedded server's own Python) needs CPU for every streamed token.
  With ``num_thread`` below the core count that CPU is idle anyway; with ``num_thread`` = all
  cores it is taken from a compute thread, and the engine's tok/s drops by a few percent that
  only those cells pay, so a comparison over ``num_thread`` understates them (measured in
  ``python -m benchmarks engine``; docs/measurement.md, "Measuring on the machine that
  computes").  A cell counts when its server is on the measuring machine (the embedded engine,
  or a loopback address), it put nothing on a GPU (``vram_fraction`` 0 or unknown) and its
  ``num_thread`` is at least the machine's logical CPUs from the sweep's provenance.
* **short output** (:func:`short_output_cells`, :func:`short_output_line`, one report and terminal
  line): cells with ``workload.max_tokens`` whose trials generated fewer tokens (``short_output``,
  stored by the sweep as ``eval_count < num_predict``); **prompt length** (:func:`prompt_mismatch_line`):
  cells with ``workload.prompt_tokens`` whose server evaluated another number of prompt tokens.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from analysis.columns import BASE_URL
from sweep.contract import COLUMNS_BY_NAME

# ---------------------------------------------------------------- offload: did the load-time request take effect

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


# ---------------------------------------------------------------- servers: a cell's rows from several machines

def spanning(df: pd.DataFrame) -> dict[str, list[str]]:
    """Cell label → its servers, for each cell whose measured rows name more than one server."""
    if BASE_URL not in df.columns:
        return {}
    rows = df.loc[df["measured"] & df[BASE_URL].notna(), ["cell_key", "cell", BASE_URL]]
    servers = rows.groupby("cell_key", sort=True)[BASE_URL].unique()
    labels = rows.drop_duplicates("cell_key").set_index("cell_key")["cell"]
    return {str(labels[key]): sorted(map(str, urls)) for key, urls in servers.items() if len(urls) > 1}


def servers_line(df: pd.DataFrame, limit: int = 3) -> str | None:
    """The one-line flag (None when every cell kept one server)."""
    cells = spanning(df)
    if not cells:
        return None
    shown = "; ".join(f"{cell} ({', '.join(urls)})" for cell, urls in list(cells.items())[:limit])
    more = f"; … {len(cells) - limit} more" if len(cells) > limit else ""
    return (f"{len(cells)} cell(s) whose rows span servers, so their mean and CI pool several machines: "
            f"{shown}{more}")


# ---------------------------------------------------------------- shared CPU: every core beside the harness

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


def shared_cpu_cells(df: pd.DataFrame, provenance: dict[str, list[dict[str, Any]]]) -> list[str]:
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


def shared_cpu_line(df: pd.DataFrame, provenance: dict[str, list[dict[str, Any]]], limit: int = 3) -> str | None:
    """The one-line flag (None when no cell used every core of the measuring machine)."""
    flagged = shared_cpu_cells(df, provenance)
    if not flagged:
        return None
    shown = "; ".join(flagged[:limit])
    more = f"; … {len(flagged) - limit} more" if len(flagged) > limit else ""
    return (f"{len(flagged)} cell(s) ran a CPU engine with num_thread ≥ the cores of the machine that measured "
            f"them, so the harness's CPU per token was taken from the engine and their tok/s is understated "
            f"(docs/measurement.md: 'Measuring on the machine that computes'; measure them from another machine): "
            f"{shown}{more}")


# ---------------------------------------------------------------- short output: fewer tokens than max_tokens

SHORT_OUTPUT = COLUMNS_BY_NAME["short_output"].name


def short_output_cells(df: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Cell label → (measured trials that generated fewer tokens than ``workload.max_tokens``, measured trials).

    Why: a fixed output length is what makes two cells' decode speed and end-to-end time comparable;
    a backend without an ignore-EOS switch (Ollama) may still stop early, and its trial is shorter
    than its label says.  Shown, never dropped.
    """
    if SHORT_OUTPUT not in df.columns:
        return {}
    rows = df.loc[df["measured"] & df[SHORT_OUTPUT].notna(), ["cell", SHORT_OUTPUT]]
    if rows.empty:
        return {}
    short = rows[SHORT_OUTPUT].astype(bool)
    counts = short.groupby(rows["cell"].astype(str)).agg(["sum", "size"])
    return {cell: (int(s), int(n)) for cell, (s, n) in counts.iterrows() if s > 0}


def short_output_line(df: pd.DataFrame, limit: int = 3) -> str | None:
    """The one-line flag (None when every trial with a max_tokens generated all of them)."""
    cells = short_output_cells(df)
    if not cells:
        return None
    shown = "; ".join(f"{cell} ({s}/{n} trials)" for cell, (s, n) in list(cells.items())[:limit])
    more = f"; … {len(cells) - limit} more" if len(cells) > limit else ""
    return (f"{len(cells)} cell(s) with trials that generated fewer tokens than workload.max_tokens (the server "
            f"stopped early; its decode figures cover a shorter output; ignore_eos where the backend has it): "
            f"{shown}{more}")


# ---------------------------------------------------------------- prompt length: served ≠ asked

PROMPT_TOKENS, PROMPT_EVAL_COUNT = (COLUMNS_BY_NAME[n].name for n in ("prompt_tokens", "prompt_eval_count"))


def prompt_mismatch_cells(df: pd.DataFrame) -> dict[str, tuple[int, int, list[int]]]:
    """Cell label → (trials whose ``prompt_eval_count`` ≠ ``prompt_tokens``, measured trials, the counts served).

    Why: ``workload.prompt_tokens=N`` is built to be evaluated whole; a server that reuses a cached prefix
    (Ollama has no switch), truncates to its context or could not be searched exactly evaluates fewer or more,
    and its prompt tok/s is then of another length.
    """
    if PROMPT_TOKENS not in df.columns or PROMPT_EVAL_COUNT not in df.columns:
        return {}
    rows = df.loc[df["measured"] & df[PROMPT_TOKENS].notna() & df[PROMPT_EVAL_COUNT].notna(),
                  ["cell", PROMPT_TOKENS, PROMPT_EVAL_COUNT]]
    out: dict[str, tuple[int, int, list[int]]] = {}
    for cell, group in rows.groupby(rows["cell"].astype(str)):
        off = group[group[PROMPT_EVAL_COUNT] != group[PROMPT_TOKENS]]
        if len(off):
            out[cell] = (len(off), len(group), sorted({int(v) for v in off[PROMPT_EVAL_COUNT]}))
    return out


def prompt_mismatch_line(df: pd.DataFrame, limit: int = 3) -> str | None:
    """The one-line flag (None when every trial with a prompt_tokens evaluated exactly that many)."""
    cells = prompt_mismatch_cells(df)
    if not cells:
        return None
    shown = "; ".join(f"{cell} ({s}/{n} trials: {', '.join(map(str, counts[:4]))})"
                      for cell, (s, n, counts) in list(cells.items())[:limit])
    more = f"; … {len(cells) - limit} more" if len(cells) > limit else ""
    return (f"{len(cells)} cell(s) with trials whose server evaluated another number of prompt tokens than "
            f"workload.prompt_tokens (a cached prefix, a truncation, or no exact text found): {shown}{more}")
