"""How much of a reported latency is the client's and the network's, not the server's.

Why: e2e and TTFT are measured at our socket; the server reports its own
``total_duration`` and ``load + prompt_eval`` durations.  The difference is
time spent in our client, the HTTP stack and the network (and, for TTFT, the
first token's own eval step, which the server counts in ``eval_duration``).
A reader comparing our TTFT with another tool's needs to know that share.

Per row (added to the tidy frame when the inputs are present):

* ``client_e2e_ms``  = e2e_ms − total_duration_ms
* ``client_ttft_ms`` = ttft_ms − (load_duration_ms + prompt_eval_duration_ms)

Per cell: the means of both and their share of the cell's mean e2e / TTFT.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CLIENT_E2E = "client_e2e_ms"
CLIENT_TTFT = "client_ttft_ms"
_E2E_PARTS = ("e2e_ms", "total_duration_ms")
_TTFT_PARTS = ("ttft_ms", "load_duration_ms", "prompt_eval_duration_ms")


def add_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``client_e2e_ms`` / ``client_ttft_ms`` where their inputs exist (in place; returns ``df``)."""
    if all(c in df.columns for c in _E2E_PARTS):
        df[CLIENT_E2E] = df["e2e_ms"] - df["total_duration_ms"]
    if all(c in df.columns for c in _TTFT_PARTS):
        df[CLIENT_TTFT] = df["ttft_ms"] - (df["load_duration_ms"] + df["prompt_eval_duration_ms"])
    return df


def per_cell(df: pd.DataFrame, index: pd.Index) -> pd.DataFrame | None:
    """Per cell_key (in ``index`` order): n and the mean client-side ms and share % of e2e and TTFT."""
    m = df.loc[df["measured"]]
    out = pd.DataFrame(index=index)
    for col, total, label in ((CLIENT_E2E, "e2e_ms", "e2e"), (CLIENT_TTFT, "ttft_ms", "TTFT")):
        if col not in m.columns or not m[col].notna().any():
            continue
        rows = m.loc[m[col].notna(), ["cell_key", col, total]]
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
