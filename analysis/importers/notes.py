"""What the report says about imported results: where they came from, what they lack, where their summaries erred.

Why a module of its own: the tables are computed from the trial columns alone, the
same for imported rows as for ours; what differs is what the reader must be told —
the original harnesses ran no isolated runs (the speedup against agents run alone is
"not available", the TR114-style figures are given), the Python harness kept
per-agent aggregates (its n counts runs, not calls), and some of their own derived
figures disagree with their raw data (the "differences from the original summaries"
table).  :func:`extend` adds those to an analysis before the report is written.
"""

from __future__ import annotations

import pandas as pd

from analysis.base import Analysis, Table
from analysis.importers.common import CONCURRENT
from analysis.importers.store import Imported
from sweep.contract import COLUMNS_BY_NAME

SECTION = "imported"
SOURCE = COLUMNS_BY_NAME["source"].name
AGGREGATED = COLUMNS_BY_NAME["aggregated_calls"].name
RUN_KIND = COLUMNS_BY_NAME["run_kind"].name
ISOLATED_NOTE = ("Isolated runs: not available for the imported multi-agent results (the original harnesses ran "
                 "none), so speedup and efficiency against agents run alone are empty for them; the TR114-style "
                 "figures (Σ the agents' execution times ÷ the concurrent wall time) are given.")
MAX_LISTED = 12


def aggregate_cells(df: pd.DataFrame) -> pd.DataFrame:
    """(dataset, cell) of the cells whose rows are per-agent aggregates (n counts runs, not calls)."""
    if AGGREGATED not in df.columns:
        return pd.DataFrame(columns=["dataset", "cell"])
    agg = pd.to_numeric(df[AGGREGATED], errors="coerce").notna()
    return df.loc[agg, ["dataset", "cell"]].drop_duplicates()


def sources_table(imports: dict[str, Imported], df: pd.DataFrame) -> Table:
    """Per imported folder and harness: run files, rows, the calls they stand for, files skipped."""
    rows = []
    for label, imp in imports.items():
        ds = df["dataset"].astype(str)
        mine = (ds == label) | ds.str.startswith(label + " [")       # " [GPU]": a dataset split by GPU
        sub = df.loc[mine & df[SOURCE].notna()] if SOURCE in df.columns else df.iloc[:0]
        harness = sub[SOURCE].astype(str).str.split(":", n=1).str[0] if len(sub) else pd.Series(dtype=str)
        for name, group in sub.groupby(harness, sort=True):
            calls = pd.to_numeric(group[AGGREGATED], errors="coerce").fillna(1).sum() if AGGREGATED in group else len(group)
            rows.append({"input": label, "harness": name, "files": group[SOURCE].nunique(), "rows": len(group),
                         "calls": int(calls), "kept in": str(imp.kept_in) if imp.kept_in else "(not kept)"})
        if imp.problems:
            rows.append({"input": label, "harness": "(skipped)", "files": len(imp.problems), "rows": 0, "calls": 0,
                         "kept in": ""})
    return Table("import_sources", "Imported results", pd.DataFrame(rows),
                 note="One row per imported folder and harness. rows: trial rows made (Rust: one per LLM call; "
                      "Python: one per agent and run); calls: the LLM calls they stand for (a Python row is an "
                      "aggregate of total_requests calls).")


def differences_table(imports: dict[str, Imported]) -> Table:
    """Every original derived figure that disagrees with its raw data."""
    rows = [{"input": label, "file": d.file, "figure": d.figure, "original value": d.original,
             "recomputed value": d.recomputed}
            for label, imp in imports.items() for d in imp.differences]
    frame = pd.DataFrame(rows, columns=["input", "file", "figure", "original value", "recomputed value"])
    return Table("import_differences", "Differences from the original summaries", frame,
                 {"original value": ".6g", "recomputed value": ".6g"},
                 "Figures the original programs derived (aggregate_metrics, delta, run summaries, summary.json) that "
                 "disagree (beyond 0.01 %) with the same figure recomputed from the raw calls (Rust) or the agents' "
                 "aggregates and clocks (Python); the report's tables use the raw values. tok/s is recomputed as "
                 "eval_count ÷ eval_duration (the Rust harness divided by at least 1 µs, so a call without timings "
                 "had millions of tok/s).")


def extend(imports: dict[str, Imported], df: pd.DataFrame, an: Analysis) -> None:
    """Add the imported-results section and the notes the other sections need (in place)."""
    if not imports:
        return
    an.tables.append(sources_table(imports, df))
    if any(imp.differences for imp in imports.values()):
        an.tables.append(differences_table(imports))
    lines = []
    problems = [p for imp in imports.values() for p in imp.problems]
    if problems:
        shown = "; ".join(problems[:MAX_LISTED]) + (f"; … ({len(problems)} in all)" if len(problems) > MAX_LISTED else "")
        lines.append(f"Skipped files (one line each on stderr too): {shown}.")
    if not any(imp.differences for imp in imports.values()):
        lines.append("Differences from the original summaries: none — every derived figure agrees with the raw data.")
    imported = df[SOURCE].notna() if SOURCE in df.columns else pd.Series(False, index=df.index)
    multi = imported & df[RUN_KIND].astype(object).eq(CONCURRENT) if RUN_KIND in df.columns else imported & False
    if multi.any():
        lines.append(ISOLATED_NOTE)
        an.notes["concurrency"] = (an.notes.get("concurrency", "") + " " + ISOLATED_NOTE).strip()
    agg = aggregate_cells(df)
    if len(agg):
        sentence = ("Cells of the Python harness (" + ", ".join(sorted(agg["cell"].astype(str).unique())[:MAX_LISTED])
                    + "): each row is one agent's run, an aggregate of total_requests calls; their n counts runs, "
                      "not calls.")
        lines.append(sentence)
        cells = set(agg["cell"].astype(str))
        for t in an.tables:
            if "cell" in t.frame.columns and t.frame["cell"].astype(str).isin(cells).any():
                t.note = (t.note + " " + sentence).strip()
    an.notes[SECTION] = " ".join(lines)


def summary_lines(imports: dict[str, Imported]) -> list[str]:
    """The CLI summary's lines about imported folders: rows made, files skipped, summaries that disagree."""
    lines = []
    for label, imp in imports.items():
        made = ", ".join(f"{n:,} {h}" for h, n in imp.rows_by_harness.items())
        kept = f"kept in {imp.kept_in}" if imp.kept_in else "not kept"
        lines.append(f"imported {label}: {made} rows from {imp.files:,} run files ({'reused, ' if imp.reused else ''}"
                     f"{kept}); {len(imp.problems)} skipped; {len(imp.differences)} original figure(s) disagree "
                     f"with the raw data{' (see Differences from the original summaries)' if imp.differences else ''}")
    return lines
