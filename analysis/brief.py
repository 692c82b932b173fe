"""The short terminal summary: what a person reads after a sweep or ``python -m analysis``.

Why not the Markdown report: it has six tables that scroll off any terminal.
This prints the few lines that decide what to do next (the best cell, each
baseline-vs-chimera verdict with its Δ % and CI, failures, where the files are,
the exact next command) and leaves the full report in the files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis import background, flags, intervals
from analysis.columns import HEADLINE, THROUGHPUT, TTFT, Metric
from analysis.load import Loaded
from analysis.tables import Analysis

MAX_VERDICTS = 8   # more comparisons than this: the strongest ones, and a pointer to the report
_NAMES = {THROUGHPUT: ("throughput", "tok/s"), TTFT: ("TTFT", "ms")}


def _ci(lo: float, hi: float, decimals: int, sign: bool = False) -> str:
    f = f"+.{decimals}f" if sign else f".{decimals}f"
    return f"{format(lo, f)} … {format(hi, f)}"


def _best(an: Analysis, metric: Metric) -> str | None:
    cs = an.cellstats
    col = f"{metric.column}:mean"
    if col not in cs or cs[col].dropna().empty:
        return None
    key = cs[col].idxmax() if metric.higher_is_better else cs[col].idxmin()
    d, conf = metric.decimals, round(an.options.confidence * 100)
    lo, hi, n = cs.loc[key, f"{metric.column}:ci_lo"], cs.loc[key, f"{metric.column}:ci_hi"], cs.loc[key, f"{metric.column}:n"]
    note = cs.loc[key, f"{metric.column}:{intervals.NOTE}"]
    ci = f", CI{conf} {_ci(lo, hi, d)}" if not (math.isnan(lo) or math.isnan(hi)) else (f", no CI: {note}" if note else "")
    name, unit = _NAMES.get(metric.column, (metric.label, ""))
    return f"best {name + ':':<11} {an.cells.loc[key, 'cell']}  {cs.loc[key, col]:.{d}f} {unit} (n {int(n)}{ci})"


def _verdicts(an: Analysis) -> list[str]:
    t = an.get("baseline_vs_chimera")
    if t is None:
        note = an.notes.get("baseline_vs_chimera")
        return [f"baseline vs chimera: {note}"] if note else []
    f = t.frame
    lo = next(c for c in f.columns if c.startswith("Δ % ") and c.endswith(" lo"))
    hi = next(c for c in f.columns if c.startswith("Δ % ") and c.endswith(" hi"))
    opts = an.options
    corr = "Holm" if opts.correction == "holm" else "BH"
    test = "Welch" if opts.test == "welch" else "Mann–Whitney"
    lines = [f"baseline vs chimera ({test}, {corr}-adjusted, α {opts.alpha}):"]
    order = f.assign(_p=f["p adj"].fillna(2.0)).sort_values("_p", kind="mergesort")
    width = min(48, max(len(str(c)) for c in order["cell"]))
    for _, r in order.head(MAX_VERDICTS).iterrows():
        pct = "Δ –" if pd.isna(r["Δ %"]) else f"Δ {r['Δ %']:+.1f} %"
        ci = "" if pd.isna(r[lo]) or pd.isna(r[hi]) else f" (CI {_ci(r[lo], r[hi], 1, sign=True)})"
        p = "" if pd.isna(r["p adj"]) else f"  p adj {r['p adj']:.3g}"
        lines.append(f"  {str(r['cell'])[:width]:<{width}}  {r['metric']:<8} {pct}{ci}{p}  {r['verdict']}{_mde(r)}")
    if len(order) > MAX_VERDICTS:
        lines.append(f"  … {len(order) - MAX_VERDICTS} more comparisons in the report")
    return lines


def _mde(row: pd.Series) -> str:
    """`` (MDE 6.1 %)`` after a "no significant difference": how large a change could have been seen."""
    if row["verdict"] != "no significant difference" or pd.isna(row.get("MDE %", math.nan)):
        return ""
    return f" (MDE {row['MDE %']:.1f} %)"


def _failures(df: pd.DataFrame) -> str:
    failed = df.loc[df["is_failed"]]
    if failed.empty:
        return "failures: none"
    kinds = ", ".join(f"{k} {v}" for k, v in failed["status"].value_counts().items())
    cells = failed["cell"].value_counts()
    where = ", ".join(f"{c} ({n})" for c, n in cells.head(3).items()) + (" …" if len(cells) > 3 else "")
    return f"failures: {len(failed)} trials ({kinds}) in {where}"


def summary_lines(loaded: Loaded, an: Analysis) -> list[str]:
    """Counts, best cells, verdicts and failures: the numbers, without file locations."""
    df = loaded.frame
    inputs = ", ".join(str(s.path) for s in loaded.sources)
    lines = [f"{inputs}: {len(an.cells)} cells, {int(df['measured'].sum())} measured trials "
             f"({int(df['is_warmup'].sum())} warm-up rows excluded)"]
    lines += [b for m in HEADLINE if (b := _best(an, m))]
    lines += _verdicts(an)
    lines.append(_failures(df))
    if spans := flags.servers_line(df):
        lines.append(f"warning: {spans}")
    if shared := flags.shared_cpu_line(df, loaded.provenance):
        lines.append(f"warning: {shared}")
    if short := flags.short_output_line(df):
        lines.append(f"warning: {short}")
    if prompts := flags.prompt_mismatch_line(df):
        lines.append(f"warning: {prompts}")
    lines += [f"warning: {line}" for line in background.lines(an)]
    return lines


def file_lines(out_dir: Path, files: Sequence[Path], next_command: str) -> list[str]:
    """Where the report went and what to run next."""
    csvs = sum(1 for p in files if p.suffix == ".csv")
    figs = sum(1 for p in files if p.parent.name == "figures")
    json_files = [p.name for p in files if p.suffix == ".json"]
    parts = ["report.html", "report.md", "report.tex", *json_files, f"{csvs} CSV tables"] + ([f"figures/ ({figs} files)"] if figs else [])
    return [f"files: {out_dir}/  ({', '.join(parts)})",
            f"next: {next_command}"]
