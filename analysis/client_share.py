"""How much of a reported latency is the client's and the network's, not the server's.

Why: e2e and TTFT are measured at our socket; the server reports its own
``total_duration`` and ``load + prompt_eval`` durations.  The difference is
time spent in our client, the HTTP stack and the network (and, for TTFT, the
first token's own eval step, which the server counts in ``eval_duration``).
A reader comparing our TTFT with another tool's needs to know that share.

Per row, the sweep stores both figures (columns of :mod:`sweep.contract`, computed
where the trial record is built):

* ``client_overhead_ms``      = e2e_ms − total_duration_ms
* ``client_ttft_overhead_ms`` = ttft_ms − (load_duration_ms + prompt_eval_duration_ms)

Rows of older sweeps (before those columns) get them computed here from the
same inputs, so every sweep reads alike.  Per cell: the means of both and their
share of the cell's mean e2e / TTFT.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from sweep.contract import COLUMNS_BY_NAME, client_overhead_ms, client_ttft_overhead_ms

CLIENT_E2E = COLUMNS_BY_NAME["client_overhead_ms"].name          # a column dropped from the contract fails here
CLIENT_TTFT = COLUMNS_BY_NAME["client_ttft_overhead_ms"].name
_E2E_PARTS = ("e2e_ms", "total_duration_ms")
_TTFT_PARTS = ("ttft_ms", "load_duration_ms", "prompt_eval_duration_ms")
_SHARES = ((CLIENT_E2E, "e2e_ms", "e2e"), (CLIENT_TTFT, "ttft_ms", "TTFT"))   # (column, its total, label)


def add_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Both per-row figures: the stored values, computed from their inputs where a row has none (in place).

    A row without a stored value is one from a sweep older than the columns (the
    loader gives it nulls); a row whose server sent no timings stays null either way.
    """
    if all(c in df.columns for c in _E2E_PARTS):
        _fill(df, CLIENT_E2E, lambda: client_overhead_ms(*(df[c] for c in _E2E_PARTS)))
    if all(c in df.columns for c in _TTFT_PARTS):
        _fill(df, CLIENT_TTFT, lambda: client_ttft_overhead_ms(*(df[c] for c in _TTFT_PARTS)))
    return df


def _fill(df: pd.DataFrame, column: str, compute: Callable[[], pd.Series]) -> None:
    stored = pd.to_numeric(df[column], errors="coerce") if column in df.columns else None
    if stored is not None and stored.notna().all():
        df[column] = stored                  # a sweep that stored them: nothing to derive
        return
    computed = pd.to_numeric(compute(), errors="coerce")
    df[column] = computed if stored is None else stored.where(stored.notna(), computed)


def per_cell(df: pd.DataFrame, index: pd.Index) -> pd.DataFrame | None:
    """Per cell_key (in ``index`` order): n and the mean client-side ms and share % of e2e and TTFT."""
    parts = [(col, total, label) for col, total, label in _SHARES if col in df.columns]
    # only the columns read: copying the text columns of a million rows cost more than the statistics
    m = df.loc[df["measured"], ["cell_key", *dict.fromkeys(c for col, total, _ in parts for c in (col, total))]]
    out = pd.DataFrame(index=index)
    for col, total, label in parts:
        if not m[col].notna().any():
            continue
        rows = m if m[col].notna().all() else m.loc[m[col].notna(), ["cell_key", col, total]]
        g = rows.groupby("cell_key", sort=True)
        mean_client = g[col].mean().reindex(index)
        mean_total = g[total].mean().reindex(index)
        out[f"{label} n"] = g[col].count().reindex(index, fill_value=0).astype(int)
        out[f"{label} ms mean"] = mean_total
        out[f"client {label} ms mean"] = mean_client
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"client {label} %"] = mean_client / mean_total * 100
    return out if len(out.columns) else None


NOTE = ("client e2e = e2e − the server's total_duration; client TTFT = TTFT − (load + prompt eval): time in our "
        "client, the HTTP stack and the network (TTFT's also holds the first token's eval step, which the server "
        "books under eval). % = share of the cell's mean e2e / TTFT. Means over measured trials.")
