"""Cells whose measured rows came from more than one server (``base_url``): flagged, never hidden.

Why: the tables key a cell by its label and show its first row's server, so a
cell measured partly on one machine and partly on another (a resume pointed at
another server, or a sweep that moved a cell when its server stayed busy) gets
one mean and one CI over two machines.  The sweep keeps a cell on its server
(:mod:`sweep.backends.hosts`); this says so where a reader looks when it did not.
"""

from __future__ import annotations

import pandas as pd

from analysis.columns import BASE_URL


def spanning(df: pd.DataFrame) -> dict[str, list[str]]:
    """Cell label → its servers, for each cell whose measured rows name more than one server."""
    if BASE_URL not in df.columns:
        return {}
    rows = df.loc[df["measured"] & df[BASE_URL].notna(), ["cell_key", "cell", BASE_URL]]
    servers = rows.groupby("cell_key", sort=True)[BASE_URL].unique()
    labels = rows.drop_duplicates("cell_key").set_index("cell_key")["cell"]
    return {str(labels[key]): sorted(map(str, urls)) for key, urls in servers.items() if len(urls) > 1}


def line(df: pd.DataFrame, limit: int = 3) -> str | None:
    """The one-line flag (None when every cell kept one server)."""
    cells = spanning(df)
    if not cells:
        return None
    shown = "; ".join(f"{cell} ({', '.join(urls)})" for cell, urls in list(cells.items())[:limit])
    more = f"; … {len(cells) - limit} more" if len(cells) > limit else ""
    return (f"{len(cells)} cell(s) whose rows span servers, so their mean and CI pool several machines: "
            f"{shown}{more}")
