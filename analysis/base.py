"""What every table builder shares: the analysis options, the Table and Analysis types, and the id/CI helpers.

Why a module of its own: the builders (:mod:`analysis.cellstats`,
:mod:`analysis.comparisons`, :mod:`analysis.sensitivity`, …) and the agent and
search sections all produce :class:`Table` objects under the same
:class:`Options`; :mod:`analysis.tables` imports every builder, so these types
cannot live there without an import cycle.  ``analysis.tables`` re-exports
them, which is where scripts import them from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from analysis import intervals
from analysis.columns import HEADLINE, Metric


@dataclass
class Options:
    """Analysis choices; defaults are what a reviewer expects without flags."""

    top: int = 5
    ddof: int = 1                                        # 0 with --population-sd
    test: Literal["welch", "mannwhitney"] = "welch"
    correction: Literal["holm", "bh"] = "holm"
    sensitivity_test: Literal["anova", "kruskal"] = "anova"
    bootstrap: bool = False
    bootstrap_method: Literal["bca", "percentile"] = "bca"
    resamples: int = 9999
    seed: int = 0
    alpha: float = 0.05
    confidence: float = 0.95
    search: bool = False                                 # --search (or an Optuna sweep): the search section


@dataclass
class Table:
    """One report table: a numeric frame plus how to print it.

    ``formats`` maps float columns to a format spec (``.2f``, ``.3g``); integer
    and text columns print as they are.  ``name`` is the file stem of the CSV/TeX.
    """

    name: str
    title: str
    frame: pd.DataFrame
    formats: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass
class Analysis:
    """All tables plus the intermediate numbers the figures and header need."""

    tables: list[Table]
    cells: pd.DataFrame                 # one row per cell_key: dataset, cell, identity/options
    cellstats: pd.DataFrame             # per cell_key: "<column>:<stat>" numbers
    notes: dict[str, str]               # section → sentence (e.g. why a table is absent)
    multi_dataset: bool
    options: Options
    concurrency: pd.DataFrame | None = None   # per multi-agent cell: speedup and tr114 means with CIs (figure)

    def get(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)


CI = "CI95"
STOP_REASON = "stop_reason"     # trials=auto: why the cell stopped (on its last row)


def present_metrics(df: pd.DataFrame, candidates: tuple[Metric, ...]) -> list[Metric]:
    """The candidates that are columns of ``df`` with at least one value."""
    return [m for m in candidates if m.column in df.columns and df[m.column].notna().any()]


def ci_label(opts: Options) -> str:
    """``CI95`` (or the confidence asked for): the prefix of every interval column."""
    return f"CI{round(opts.confidence * 100):d}"


def ci_methods(cs: pd.DataFrame, opts: Options) -> str:
    """The interval method of each headline metric present, as the table header states it."""
    present = [(m.column, m.label) for m in HEADLINE if f"{m.column}:mean" in cs]
    return intervals.methods_note(present, opts.bootstrap, opts.bootstrap_method, opts.resamples, opts.seed)


def id_columns(cells: pd.DataFrame, index: pd.Index, multi: bool) -> pd.DataFrame:
    """The columns that name a cell in every per-cell table: [dataset,] cell [, its offload flag]."""
    cols = (["dataset"] if multi else []) + ["cell"] + (["offload"] if "offload" in cells.columns else [])
    return cells.loc[index, cols].reset_index(drop=True)


def significance(p_adj: np.ndarray | pd.Series, alpha: float) -> np.ndarray:
    """'not testable' / 'significant' / 'not significant' per adjusted p (NaN: not testable)."""
    p = np.asarray(p_adj, dtype=float)
    return np.where(np.isnan(p), "not testable", np.where(p < alpha, "significant", "not significant"))
