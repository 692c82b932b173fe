"""Cells measured beside other processes' CPU, and compared cells that differ in it: flagged, never hidden.

Why: two identical demo sweeps on a busy machine moved a baseline from 35 to 67
tok/s and turned ``num_thread=2`` from a few % faster into 60–88 % slower; the
rows held no sign of it.  Each trial now stores ``background_cpu_pct`` (CPU time
other processes used during the call, % of one core; :mod:`sweep.background`),
and this module names

* the cells whose mean over their measured trials is above
  :data:`~sweep.contract.BACKGROUND_CPU_FLAG_PCT` (their timings may be the
  machine's load, not their settings), and
* the compared pairs (a chimera cell and its baseline; one cell in two datasets)
  whose means differ by more than :data:`~sweep.contract.BACKGROUND_CPU_GAP_PCT`
  (their difference may be the load's).

The per-cell mean is the comprehensive table's ``background CPU % mean`` (one
computation, :mod:`analysis.cellstats`).  Sweeps made before the column, or off
Linux, have no values: no warning, and the report says the load was not recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.base import Analysis
from sweep.contract import BACKGROUND_CPU_FLAG_PCT, BACKGROUND_CPU_GAP_PCT, COLUMNS_BY_NAME

BACKGROUND = COLUMNS_BY_NAME["background_cpu_pct"].name
LOADAVG = COLUMNS_BY_NAME["loadavg_1m"].name
_MEAN = f"{BACKGROUND}:mean"


@dataclass(frozen=True)
class CellLoad:
    """A cell's mean background CPU (% of one core) over its measured trials."""

    label: str      # the cell's label (with its dataset when the report combines several)
    pct: float


def _means(an: Analysis) -> pd.DataFrame:
    """Per cell_key: dataset, cell label, shown label and mean background CPU (cells without values dropped)."""
    cs = an.cellstats
    if _MEAN not in cs.columns:
        return pd.DataFrame(columns=["dataset", "cell", "label", "pct"])
    frame = an.cells.loc[cs.index, ["dataset", "cell"]].astype(str).assign(pct=cs[_MEAN].astype(float))
    frame["label"] = frame["cell"] + (" [" + frame["dataset"] + "]" if an.multi_dataset else "")
    return frame.loc[frame["pct"].notna()]


def recorded(an: Analysis) -> bool:
    """Did any measured trial store its background CPU?"""
    return not _means(an).empty


def busy_cells(an: Analysis, threshold: float = BACKGROUND_CPU_FLAG_PCT) -> list[CellLoad]:
    """The cells whose mean background CPU is above ``threshold``, busiest first."""
    m = _means(an)
    busy = m.loc[m["pct"] > threshold].sort_values("pct", ascending=False, kind="mergesort")
    return [CellLoad(str(r.label), float(r.pct)) for r in busy.itertuples()]


def _compared(an: Analysis, m: pd.DataFrame) -> list[tuple[Any, Any]]:
    """The compared pairs of cells with values: (baseline, chimera) rows of the comparison table, and one
    cell label in two datasets (what ``--against`` and a multi-dataset report set side by side)."""
    by_label = {(r.dataset, r.cell): r for r in m.itertuples(index=False)}
    pairs = []
    table = an.get("baseline_vs_chimera")
    if table is not None and {"cell", "baseline"} <= set(table.frame.columns):
        f = table.frame
        datasets = f["dataset"].astype(str) if "dataset" in f.columns else pd.Series("", index=f.index)
        seen = set()
        for ds, cell, base in zip(datasets, f["cell"].astype(str), f["baseline"].astype(str)):
            chim = by_label.get((ds, cell)) or next((r for (d, c), r in by_label.items() if c == cell), None)
            bl = by_label.get((ds, base)) or next((r for (d, c), r in by_label.items() if c == base), None)
            if chim is not None and bl is not None and (bl.label, chim.label) not in seen:
                seen.add((bl.label, chim.label))
                pairs.append((bl, chim))
    if an.multi_dataset:
        for cell in sorted(set(m["cell"])):
            same = [r for r in by_label.values() if r.cell == cell]
            if len(same) > 1:
                pairs.append((min(same, key=lambda r: r.pct), max(same, key=lambda r: r.pct)))
    return pairs


def uneven_pairs(an: Analysis, gap: float = BACKGROUND_CPU_GAP_PCT) -> list[tuple[CellLoad, CellLoad]]:
    """Compared pairs whose mean background CPU differs by more than ``gap`` (% of one core)."""
    m = _means(an)
    out = []
    for a, b in _compared(an, m):
        if abs(float(a.pct) - float(b.pct)) > gap:
            out.append((CellLoad(str(a.label), float(a.pct)), CellLoad(str(b.label), float(b.pct))))
    return out


def _shown(items: list[str], limit: int) -> str:
    more = f"; … {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def lines(an: Analysis, limit: int = 3) -> list[str]:
    """The warnings (none when nothing ran beside load, or when the load was not recorded)."""
    out = []
    if busy := busy_cells(an):
        out.append(f"{len(busy)} cell(s) ran while other processes used more than {BACKGROUND_CPU_FLAG_PCT:g} % of "
                   f"a core (mean background CPU over their trials), so their timings may be the machine's load, "
                   f"not their settings: " + _shown([f"{c.label} ({c.pct:.0f} %)" for c in busy], limit))
    if uneven := uneven_pairs(an):
        out.append(f"{len(uneven)} compared pair(s) ran beside background CPU differing by more than "
                   f"{BACKGROUND_CPU_GAP_PCT:g} % of a core, so their difference may be the load's: "
                   + _shown([f"{a.label} ({a.pct:.0f} %) vs {b.label} ({b.pct:.0f} %)" for a, b in uneven], limit))
    return out


def fact(df: pd.DataFrame, an: Analysis) -> str:
    """The report's one line on background load: its range over cells, or that it was not recorded."""
    m = _means(an)
    if m.empty:
        return ("**Background load**: not recorded (these trials were measured before `background_cpu_pct` was "
                "stored, or off Linux), so a busy machine cannot be told from a slow setting.")
    text = (f"**Background load**: other processes' CPU during the calls, mean per cell {m['pct'].min():.1f} – "
            f"{m['pct'].max():.1f} % of a core (flagged above {BACKGROUND_CPU_FLAG_PCT:g} %, or when compared "
            f"cells differ by more than {BACKGROUND_CPU_GAP_PCT:g} %)")
    if LOADAVG in df.columns:
        load = pd.to_numeric(df.loc[df["measured"], LOADAVG], errors="coerce").dropna()
        if len(load):
            text += f"; 1-minute load average at the calls' start {load.min():.2f} – {load.max():.2f}"
    return text + "."
