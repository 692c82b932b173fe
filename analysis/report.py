"""Assemble the report: header + environment + every table, written as MD, CSV and LaTeX.

Order of work is one-way: :func:`analysis.load.load` → :func:`analysis.tables.analyse`
→ :mod:`analysis.render` (text) and :mod:`analysis.figures` (images) → files in
``_report/``.  This module owns only the layout (section order, the header
block, file names), never numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from analysis import background, flags, html, render, summary_json
from analysis.environment import environment_frame
from analysis.importers import notes as import_notes
from analysis.load import Loaded
from analysis.tables import Analysis, Options, Table, ci_methods, analyse

REPORT_DIR = "_report"
HTML_NAME = "report.html"   # beside report.md: one file, figures inside

# Sections, in report order: key → (heading, its tables).  The numbers are given when the report is written,
# to the sections it has: a prompt sweep's report has no agent section, and no gap in its numbering.
SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("comprehensive", "Comprehensive results", ("comprehensive",)),
    ("latency", "Latency and token timings", ("latency_percentiles", "token_timing")),
    ("rankings", "Rankings", ("rank_throughput", "rank_ttft", "rank_consistency")),
    ("baseline_vs_chimera", "Baseline vs chimera", ("baseline_vs_chimera",)),
    ("sensitivity", "Parameter sensitivity", ("sensitivity_levels", "sensitivity_summary", "sensitivity_interactions")),
    ("population", "Population summary", ("population",)),
    ("run_order", "Run order / cold start", ("run_order",)),
    ("telemetry", "Telemetry over time", ()),   # a figure only, when the sweep recorded samples
    ("search", "Search", ("search_best", "search_history", "search_importance")),  # --search / Optuna sweeps
    ("client_side", "Client-side share", ("client_side",)),
    ("agent_stages", "Agent workflows", ("agent_stages",)),
    ("concurrency", "Concurrency", ("concurrency", "concurrency_scenarios")),
    ("load", "Load and capacity", ("load_capacity", "load_levels")),   # workload=load: goodput, the knee
    ("imported", "Imported results", ("import_sources", "import_differences")),  # old harnesses' folders
)


@dataclass
class Report:
    """What was written, for the CLI and tests."""

    markdown: str
    out_dir: Path
    analysis: Analysis
    files: list[Path]


def default_out_dir(loaded: Loaded) -> Path:
    """``<input dir>/_report`` for one input; ``<first>/_report/vs_<others>`` for several.

    Several inputs get a sub-directory so a comparison never overwrites the
    first sweep's own report.
    """
    first = loaded.sources[0].path
    base = (first if first.is_dir() else first.parent) / REPORT_DIR
    if len(loaded.sources) == 1:
        return base
    return base / ("vs_" + "+".join(s.label for s in loaded.sources[1:]))


def _list(values: Sequence[Any], limit: int = 8) -> str:
    vals = [str(v) for v in values]
    return ", ".join(vals[:limit]) + (f", … ({len(vals)} in all)" if len(vals) > limit else "") if vals else "–"


@dataclass
class Header:
    """The 'what was analysed' block as parts, so Markdown and HTML print the same facts."""

    intro: list[str]          # "Generated … by `cmd`."
    inputs: Table
    facts: list[str]          # one Markdown-ish line each (**bold**, `code`)
    environment: Table | None


def header_parts(loaded: Loaded, an: Analysis, argv: Sequence[str] | None) -> Header:
    """Inputs, ids, rows, cells, exclusions, methods and the environment."""
    df = loaded.frame
    opts = an.options
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python -m analysis" + (" " + " ".join(argv) if argv else "")
    src = Table("inputs", "Inputs", pd.DataFrame({
        "input": [str(s.path) for s in loaded.sources],
        "label": [s.label for s in loaded.sources],
        "files": [s.files for s in loaded.sources],
        "rows": [s.rows for s in loaded.sources],
    }))
    warm = int(df["is_warmup"].sum())
    failed = df.loc[df["is_failed"], "status"].value_counts()
    fail_txt = ", ".join(f"{k} {v}" for k, v in failed.items()) if len(failed) else "none"
    cells = an.cells
    facts = [
        f"**Rows**: {len(df):,} — measured {int(df['measured'].sum()):,}; excluded: "
        f"{warm:,} warm-up, {int(df['is_failed'].sum()):,} failed ({fail_txt}).",
        f"**Datasets** (sweep ids): {_list(loaded.datasets)}",
        f"**Cells**: {len(cells):,}"
        + (f" ({_list([f'{k} {v}' for k, v in cells['preset'].value_counts().items()])})" if "preset" in cells else ""),
    ]
    for col, name in (("model", "Models"), ("backend", "Backends"), ("base_url", "Servers"),
                      ("workload", "Workloads"), ("gpu_name", "GPUs")):
        if col in df.columns:
            facts.append(f"**{name}**: {_list(sorted(df[col].dropna().astype(str).unique()))}")
    ci = ci_methods(an.cellstats, opts)
    facts.append(
        f"**Methods**: {round(opts.confidence * 100)} % CIs ({ci}); sd {'sample (ddof=1)' if opts.ddof == 1 else 'population (ddof=0)'}; "
        f"comparison test {'Welch t' if opts.test == 'welch' else 'Mann–Whitney U'}, "
        f"{'Holm' if opts.correction == 'holm' else 'Benjamini–Hochberg'} correction, α = {opts.alpha}; "
        f"sensitivity {'one-way ANOVA' if opts.sensitivity_test == 'anova' else 'Kruskal–Wallis'}."
    )
    if spans := flags.servers_line(df, limit=len(cells)):
        facts.append(f"**Warning**: {spans}.")
    if shared := flags.shared_cpu_line(df, loaded.provenance, limit=len(cells)):
        facts.append(f"**Warning**: {shared}.")
    if short := flags.short_output_line(df, limit=len(cells)):
        facts.append(f"**Warning**: {short}.")
    if prompts := flags.prompt_mismatch_line(df, limit=len(cells)):
        facts.append(f"**Warning**: {prompts}.")
    facts.append(background.fact(df, an))
    facts += [f"**Warning**: {line}." for line in background.lines(an, limit=len(cells))]
    if loaded.held_fixed:
        held = "; ".join(f"{preset}: {opts}" for preset, opts in loaded.held_fixed.items())
        facts.append(f"**Held fixed** (cell labels show only what varies): {held}.")
    if an.multi_dataset:
        facts.append("Several datasets are combined: tables carry a `dataset` column; cells are never pooled across datasets.")
    env = None
    prov = {k: v for k, v in loaded.provenance.items() if v}
    if prov:
        frame = environment_frame(prov)
        if len(frame):
            env = Table("environment", "Environment", frame)
    return Header([f"Generated {now} by `{cmd}`."], src, facts, env)


def header(parts: Header) -> str:
    """The header block in Markdown."""
    lines = ["# Sweep analysis report", "", *parts.intro, "", "## What was analysed", ""]
    lines += [render.to_markdown(parts.inputs), ""]
    lines += [f"- {f}" for f in parts.facts]
    lines.append("")
    if parts.environment is not None:
        lines += ["## Environment", "", render.to_markdown(parts.environment), ""]
    return "\n".join(lines)


def _section(table: Table, csv_name: str) -> str:
    parts = [f"### {table.title}", ""]
    if table.note:
        parts += [f"*{table.note}*", ""]
    parts += [render.to_markdown(table), "", f"CSV: `{csv_name}`", ""]
    return "\n".join(parts)


LATEX_PREAMBLE = r"""\documentclass{article}
\usepackage[landscape,margin=1cm]{geometry}
\usepackage{booktabs}
\usepackage{adjustbox}
\usepackage[utf8]{inputenc}
\begin{document}
"""


def build(
    loaded: Loaded,
    opts: Options | None = None,
    out_dir: Path | None = None,
    figures: bool = True,
    argv: Sequence[str] | None = None,
    telemetry_cell: str | None = None,
) -> Report:
    """Analyse ``loaded`` and write report.md, report.html, one CSV per table, report.tex and figures."""
    opts = opts or Options()
    an = analyse(loaded.frame, opts)
    import_notes.extend(loaded.imports, loaded.frame, an)
    out = out_dir or default_out_dir(loaded)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    figs: dict[str, list[Path]] = {}
    skipped: dict[str, list[str]] = {}
    if figures:
        from analysis import figures as figmod  # matplotlib import is slow; only when asked

        figs, skipped = figmod.make_all(loaded.frame, an, out / "figures", loaded.traces, telemetry_cell)
        files += [p for ps in figs.values() for p in ps]
    head = header_parts(loaded, an, argv)
    md = [header(head)]
    tex = [LATEX_PREAMBLE]
    sections: list[html.Section] = []
    for key, title, names in SECTIONS:
        tables = [t for n in names if (t := an.get(n)) is not None]
        pngs = [p for p in figs.get(key, []) if p.suffix == ".png"]
        notes = [an.notes[key]] if an.notes.get(key) else []
        notes += [f"Figure skipped: {why}" for why in skipped.get(key, [])]
        if not tables and not pngs and not notes:
            continue  # nothing to show (a prompt sweep has no search or agent sections)
        heading = f"{len(sections) + 1}. {title}"
        sections.append(html.Section(heading, " ".join(notes), tables, pngs))
        md += [f"## {heading}", ""]
        for line in notes:
            md += [line, ""]
        for t in tables:
            csv_path = out / f"{t.name}.csv"
            csv_path.write_text(render.to_csv(t))
            files.append(csv_path)
            md.append(_section(t, csv_path.name))
            tex += [render.to_latex(t), ""]
        for png in pngs:
            md += [f"![{png.stem}]({png.relative_to(out).as_posix()})", ""]
    tex.append(r"\end{document}")
    text = "\n".join(md).rstrip() + "\n"
    (out / "report.md").write_text(text)
    (out / "report.tex").write_text("\n".join(tex) + "\n")
    env = [head.environment] if head.environment is not None else []
    (out / HTML_NAME).write_text(html.page("Sweep analysis report", head.intro, head.facts,
                                           [head.inputs, *env], sections), encoding="utf-8")
    files += [out / "report.md", out / "report.tex", out / HTML_NAME]
    files.append(summary_json.write(out, summary(loaded, an, argv)))
    return Report(text, out, an, files)


def summary(loaded: Loaded, an: Analysis, argv: Sequence[str] | None,
            gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json's content for this analysis (and the gate's result, when there is one)."""
    inputs = [{"path": str(s.path), "label": s.label, "files": s.files, "rows": s.rows} for s in loaded.sources]
    return summary_json.document(an, inputs, loaded.provenance, argv, ci_methods(an.cellstats, an.options), gate)
