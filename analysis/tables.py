"""Tidy trial frame → the report's tables, as numeric DataFrames (no formatting here).

Each builder returns :class:`Table` objects whose frames hold numbers; the
renderer turns one frame into Markdown, CSV and LaTeX so all three show the
same values.  Everything is vectorised: trials are scanned by a handful of
pandas ``groupby`` calls to per-cell moments (n, mean, m2), and every further
statistic is computed from those moments (see :mod:`analysis.stats`).  Only the
opt-in rank tests and bootstrap touch raw samples per group.

This module only runs the builders in report order; each lives in a module of
its own (one job each) and is re-exported here, where scripts import it from:

- :mod:`analysis.base`: :class:`Options`, :class:`Table`, :class:`Analysis` and shared helpers;
- :mod:`analysis.cellstats`: the cells and their per-cell statistics (the one scan over trials);
- :mod:`analysis.summaries`: comprehensive, population and client-side tables;
- :mod:`analysis.latency`: latency percentiles, ITL, TPOT and prompt tok/s;
- :mod:`analysis.rankings`: the top cells;
- :mod:`analysis.comparisons`: baseline vs chimera;
- :mod:`analysis.sensitivity`: parameter sensitivity and interactions;
- :mod:`analysis.run_order`: first trial vs the rest (cold start);
- :mod:`analysis.search` and :mod:`analysis.agents`: the search and agent sections;
- :mod:`analysis.capacity`: the load section (capacity, goodput and latency per level).
"""

from __future__ import annotations

import pandas as pd

from analysis.agents import analyse_agents
from analysis.capacity import analyse_load
from analysis.base import CI, STOP_REASON, Analysis, Options, Table, ci_methods
from analysis.cellstats import Measured, cell_frame, cell_statistics
from analysis.comparisons import baseline_vs_chimera
from analysis.latency import percentile_table, timing_table
from analysis.rankings import rankings
from analysis.run_order import run_order
from analysis.search import search_tables
from analysis.sensitivity import sensitivity, swept_parameters
from analysis.summaries import client_side, comprehensive, population

__all__ = [
    "CI", "STOP_REASON", "Analysis", "Measured", "Options", "Table", "analyse", "baseline_vs_chimera", "cell_frame",
    "cell_statistics", "ci_methods", "client_side", "comprehensive", "population", "rankings", "run_order",
    "sensitivity", "swept_parameters",
]


def analyse(df: pd.DataFrame, opts: Options | None = None) -> Analysis:
    """Tidy frame → every table (no I/O, no formatting)."""
    opts = opts or Options()
    cells = cell_frame(df)
    multi = cells["dataset"].nunique() > 1
    measured = Measured(df)          # the measured rows, copied and grouped by cell once for every table
    cs, moments = cell_statistics(df, cells, opts, measured)
    notes: dict[str, str] = {}
    tables = [comprehensive(cells, cs, multi, opts)]
    tables += [t for t in (percentile_table(cells, cs, multi), timing_table(cells, cs, multi, opts)) if t is not None]
    tables += rankings(cells, cs, multi, opts)
    bvc, note = baseline_vs_chimera(df, cells, cs, multi, opts, measured)
    if bvc is not None:
        tables.append(bvc)
    else:
        notes["baseline_vs_chimera"] = note
    sens, note = sensitivity(df, cells, moments, opts)
    tables += sens
    if note:
        notes["sensitivity"] = note
    tables.append(population(cells, cs, multi, opts))
    ro = run_order(df, cells, cs, multi, opts, measured)
    if ro is not None:
        tables.append(ro)
    cst = client_side(cells, df, multi)
    if cst is not None:
        tables.append(cst)
    if opts.search:
        tables += search_tables(df, cells, opts)
    agent_tables, concurrency_figure = analyse_agents(df, cells, multi, opts)
    tables += agent_tables
    load_tables, note = analyse_load(df, cells, opts)
    tables += load_tables
    if note:
        notes["load"] = note
    return Analysis(tables, cells, cs, notes, multi, opts, concurrency_figure)
