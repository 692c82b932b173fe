"""``python -m analysis [PATH ...]``: trial rows → report files in _report/ and a short summary on stdout.

Thin on purpose: parse flags, call :func:`analysis.load.load` and
:func:`analysis.report.build`, print :mod:`analysis.brief`'s summary (or the
whole Markdown with ``--markdown``), and turn input problems into one stderr
line and exit code 2.

Exit codes: 0 done (the gate passed), 1 the gate found a regression, 2 bad
input or usage, 3 the gate is inconclusive (its tests could not have detected
``--min-delta-pct`` at this number of trials).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Sequence

import webbrowser

from analysis import brief, gate, render
from analysis.importers import notes as import_notes
from analysis.load import InputError, load, newest_sweep, was_search
from analysis.report import HTML_NAME, build, default_out_dir, summary
from analysis.summary_json import rows as json_rows
from analysis.summary_json import write as write_summary
from analysis.tables import Options, Table, analyse

EXIT_INPUT = 2
EXIT_CODES = (f"exit codes: 0 done (with --gate: passed), {gate.REGRESSION} regression found by --gate, "
              f"{EXIT_INPUT} bad input or usage, {gate.INCONCLUSIVE} --gate inconclusive (its tests could not have "
              "detected --min-delta-pct at this n; the minimum detectable effect is printed)")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit 2), like bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"error: {message} (see python -m analysis --help)\n")


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be ≥ 1")
    return v


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m analysis",
        description="Analyse sweep trials: per-cell statistics, rankings, baseline vs chimera, "
        "parameter sensitivity, run-order effects. Writes report.html, report.md, CSVs, report.tex, "
        "summary.json and figures into <input>/_report/ and prints a short summary.",
        epilog=EXIT_CODES,
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="sweep directory, Parquet file/directory or CSV; several are read side by side, "
                        "never pooled: each cell stays keyed by its sweep "
                        "(default: the newest sweep under outputs/sweeps/)")
    p.add_argument("--out", type=Path, help="output directory (default: <input>/_report); with --against: where "
                                            "gate.csv and summary.json go (default: NEW's _report)")
    p.add_argument("--import-to", type=Path, metavar="DIR",
                   help="where to keep the conversion of a folder of the original harnesses' results "
                        "(default: <folder>/_imported; see docs/import.md)")
    p.add_argument("--top", type=_positive, default=5, metavar="K", help="cells per ranking (default 5)")
    p.add_argument("--population-sd", action="store_true",
                   help="report population sd (ddof=0) and its CV, to reproduce older reports")
    p.add_argument("--test", choices=("welch", "mannwhitney"), default="welch",
                   help="baseline-vs-chimera test (default welch)")
    p.add_argument("--correction", choices=("holm", "bh"), default="holm",
                   help="multiple-comparison correction (default holm)")
    p.add_argument("--sensitivity-test", choices=("anova", "kruskal"), default="anova",
                   help="test of a parameter's effect across its levels (default anova)")
    p.add_argument("--bootstrap", action="store_true",
                   help="bootstrap CIs for cell means and baseline-vs-chimera differences")
    p.add_argument("--bootstrap-method", choices=("bca", "percentile"), default="bca")
    p.add_argument("--resamples", type=_positive, default=9999, metavar="N", help="bootstrap resamples (default 9999)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--telemetry-cell", metavar="TEXT",
                   help="draw telemetry over time for the cell whose label contains TEXT "
                        "(default: the cell with the most samples)")
    p.add_argument("--search", action="store_true",
                   help="add the search section (best cell, optimisation history, parameter importance); "
                        "on by itself for a sweep run with hydra/sweeper=optuna")
    g = p.add_argument_group("regression gate", "compare NEW (the PATHs) with OLD, cells paired by model and parameters")
    g.add_argument("--against", nargs="+", type=Path, metavar="OLD", help="the reference sweep(s)")
    g.add_argument("--gate", action="store_true",
                   help="exit 1 when a paired cell, or the geometric mean over all pairs, regressed significantly "
                        "(Holm) by at least --min-delta-pct; exit 3 when no test could have detected that much")
    g.add_argument("--min-delta-pct", type=float, default=5.0, metavar="PCT",
                   help="smallest regression the gate fails on, in %% of OLD's mean (default 5)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG/SVG figures")
    p.add_argument("--markdown", action="store_true", help="print the whole Markdown report instead of the summary")
    p.add_argument("--quiet", action="store_true", help="print nothing but where the report went")
    p.add_argument("--open", action="store_true", help="open report.html in the web browser afterwards")
    return p


def _next_command(argv: Sequence[str], paths: Sequence[str | Path], opened: bool) -> str:
    """The command that opens this report in a browser (or, once opened, compares it with another sweep)."""
    args = [a for a in argv if a not in ("--open", "--quiet", "--markdown")]
    if not any(not a.startswith("-") for a in args):
        args = [str(p) for p in paths] + args
    if opened:
        return f"python -m analysis {' '.join(args)} OTHER_SWEEP   (two sweeps side by side)"
    return f"python -m analysis {' '.join(args)} --open   (the HTML report in a browser)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if not 0 < args.alpha < 1:
        print("error: --alpha must be between 0 and 1", file=sys.stderr)
        return EXIT_INPUT
    opts = Options(
        top=args.top, ddof=0 if args.population_sd else 1, test=args.test,
        correction=args.correction, sensitivity_test=args.sensitivity_test,
        bootstrap=args.bootstrap, bootstrap_method=args.bootstrap_method,
        resamples=args.resamples, seed=args.seed, alpha=args.alpha, search=args.search,
    )
    if args.gate and not args.against:
        print("error: --gate needs --against OLD (the sweep to compare with)", file=sys.stderr)
        return EXIT_INPUT
    if args.against:
        return _compare(args, opts, argv)
    try:
        paths = args.paths
        if not paths:
            paths = [newest_sweep()]
            print(f"analysing the newest sweep: {paths[0]}", file=sys.stderr)
        loaded = load(paths, args.import_to)
        if not opts.search and any(was_search(Path(p)) for p in paths):
            opts.search = True
        report = build(loaded, opts, out_dir=args.out, figures=not args.no_figures, argv=argv,
                       telemetry_cell=args.telemetry_cell)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.markdown:
        sys.stdout.write(report.markdown)
    elif not args.quiet:
        lines = brief.summary_lines(loaded, report.analysis) + import_notes.summary_lines(loaded.imports)
        lines += brief.file_lines(report.out_dir, report.files, _next_command(argv, paths, args.open))
        print("\n".join(lines))
    if args.markdown or args.quiet:
        print(f"report written to {report.out_dir}/{HTML_NAME}", file=sys.stderr)
    if args.open:
        page = (report.out_dir / HTML_NAME).resolve().as_uri()
        if not webbrowser.open(page):
            print(f"no web browser found: open {page} yourself", file=sys.stderr)
    return 0


def _compare(args: argparse.Namespace, opts: Options, argv: Sequence[str]) -> int:
    """``NEW --against OLD [--gate]``: print the paired comparison; with --gate, exit 1 on a regression, 3 when
    inconclusive.  gate.csv and summary.json (NEW's cells with the gate's result) go to ``--out``, by default
    NEW's ``_report/``."""
    if not args.paths:
        print("error: --against needs the NEW sweep as PATH (python -m analysis NEW --against OLD)", file=sys.stderr)
        return EXIT_INPUT
    if args.min_delta_pct < 0:
        print("error: --min-delta-pct must be ≥ 0", file=sys.stderr)
        return EXIT_INPUT
    try:
        new = load(args.paths, args.import_to)
        result = gate.compare(new, load(args.against, args.import_to), args.min_delta_pct, args.alpha)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    tests = int(result.table["p"].notna().sum())
    table = Table("gate", "NEW vs OLD", result.table, gate.FORMATS, gate.note(args.min_delta_pct, args.alpha, tests))
    if not args.quiet:
        sys.stdout.write(render.to_markdown(table) + "\n\n*" + table.note + "*\n")
    for side, cells in (("NEW", result.unpaired_new), ("OLD", result.unpaired_old)):
        if cells:
            print(f"not paired ({side} only): {', '.join(cells)}", file=sys.stderr)
    verdict = result.verdict(args.min_delta_pct)
    out = args.out or default_out_dir(new)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gate.csv").write_text(render.to_csv(table))
        result_doc = {"against": [str(p) for p in args.against], "min_delta_pct": args.min_delta_pct,
                      "alpha": args.alpha, "exit_code": result.exit_code, "verdict": verdict,
                      "regressions": result.regressions, "unpaired_new": result.unpaired_new,
                      "unpaired_old": result.unpaired_old, "rows": json_rows(result.table)}
        write_summary(out, summary(new, analyse(new.frame, opts), argv, result_doc))
    except OSError as exc:       # a read-only NEW: the verdict and exit code still stand
        print(f"warning: gate.csv and summary.json not written to {out} ({exc.strerror or exc}); "
              f"pass --out DIR", file=sys.stderr)
    print(f"gate: {verdict}" if args.gate else verdict, file=sys.stderr)
    return result.exit_code if args.gate else 0


if __name__ == "__main__":
    sys.exit(main())
