"""Properties of the whole analysis on generated trial tables (Hypothesis), run in-process on each example.

Whatever the sweep (1–30 trials per cell, 1–12 cells, log-normal, bimodal with reloads, constant, with zeros
or NaN, failed and warm-up rows, with or without a baseline, one or two datasets, prompt, agent and
multi-agent workloads; ``tests/trial_tables.py``), the report must:

- complete (never raise);
- print every interval around the estimate printed beside it, or words instead of bounds;
- keep bounds in range: positive quantities > 0, Δ % > −100 %;
- give p adj ≥ p, monotone in p under Holm, in every table with a correction;
- number its sections 1, 2, 3 … without gaps, each with content;
- agree with the terminal summary (best cells, verdicts) and the end-of-sweep summary, number for number.

The ``fast`` profile (default) keeps these in the ``-m "not slow"`` set; ``--hypothesis-profile=thorough``
runs many more examples.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import brief, intervals, render
from analysis import Options
from analysis.load import InputError, Loaded, Source, combine, tidy
from analysis.report import Report, build
from analysis.tables import Table
from sweep.contract import SCHEMA, conform
from tests.trial_tables import Spec, specs, table, tr110_like, tr114_like
from tests.sweep_cli import clean_env, run_module

SIGNED = ("Δ", "throughput delta", "TTFT delta ms")       # intervals of quantities that may be negative
NO_VERDICT = {"insufficient data", "inconclusive"}


def _loaded(df: pd.DataFrame, where: Path) -> Loaded:
    frame, fixed = combine([tidy(df, "gen")])
    return Loaded(frame, [Source(where / "gen.csv", "gen", len(frame), 1)], {}, fixed)


def _report(df: pd.DataFrame, where: Path, opts: Options | None = None, figures: bool = False) -> tuple[Loaded, Report]:
    loaded = _loaded(df, where)
    return loaded, build(loaded, opts, out_dir=where / "report", figures=figures)


# ---------------------------------------------------------------- the invariants, one function each


def interval_columns(t: Table) -> list[tuple[str, str, str, str, str | None]]:
    """(label, estimate, lo, hi, note) columns of every interval a table prints."""
    out = []
    for c in t.frame.columns:
        m = re.fullmatch(r"(.+) (CI\d+) lo", str(c))
        if not m:
            continue
        label, ci = m.groups()
        estimate = label if label in ("Δ", "Δ %") else f"{label} mean"
        note = intervals.note_column(label, ci)
        out.append((label, estimate, c, f"{label} {ci} hi", note if note in t.frame.columns else None))
    return out


def check_intervals(t: Table) -> int:
    """Every printed interval holds its printed estimate; bounds in range; no bounds ⇒ words. Returns the count."""
    text = pd.DataFrame(render.cells_text(t), columns=t.frame.columns) if len(t.frame) else None
    checked = 0
    for label, est, lo, hi, note in interval_columns(t):
        assert est in t.frame.columns, (t.name, label)
        for i in range(len(t.frame)):
            s_lo, s_hi, s_est = text.at[i, lo], text.at[i, hi], text.at[i, est]
            assert bool(s_lo) == bool(s_hi), (t.name, label, i)
            words = text.at[i, note] if note else ""
            if s_lo:
                assert not words, (t.name, label, i, words)
                assert float(s_lo) <= float(s_est) <= float(s_hi), (t.name, label, s_lo, s_est, s_hi)
                v_lo = float(t.frame.at[i, lo])
                if label == "Δ %":
                    assert v_lo > -100, (t.name, v_lo)
                elif label not in SIGNED:
                    assert v_lo > 0, (t.name, label, v_lo)
                checked += 1
            elif s_est:                                   # an estimate without bounds says why
                if t.name == "baseline_vs_chimera":
                    assert text.at[i, "verdict"] in NO_VERDICT, (t.name, label, i, text.at[i, "verdict"])
                else:
                    assert words, (t.name, label, i)
    return checked


def check_p_adjusted(t: Table, holm: bool) -> None:
    """p adj ≥ p; under Holm, ordered as p is (over the whole family the table corrects together)."""
    f = t.frame
    pairs = [(c, f"{c} adj") for c in f.columns if (c == "p" or str(c).endswith(" p")) and f"{c} adj" in f.columns]
    if not pairs:
        return
    p = np.concatenate([f[a].to_numpy(float) for a, _ in pairs])
    adj = np.concatenate([f[b].to_numpy(float) for _, b in pairs])
    ok = ~np.isnan(p)
    assert (np.isnan(adj) == ~ok).all(), t.name
    assert (adj[ok] >= p[ok] - 1e-12).all() and (adj[ok] <= 1).all(), t.name
    if holm:
        order = np.argsort(p[ok], kind="mergesort")
        assert (np.diff(adj[ok][order]) >= -1e-12).all(), t.name


def check_sections(markdown: str) -> None:
    """## 1., ## 2., … without gaps, and something under each heading."""
    parts = re.split(r"^## (\d+)\. .*$", markdown, flags=re.M)
    numbers = [int(n) for n in parts[1::2]]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    for n, body in zip(numbers, parts[2::2]):
        assert body.strip(), f"section {n} is empty"


_BEST = re.compile(r"best (throughput|TTFT):\s+(.*)  (\S+) (tok/s|ms) \(n (\d+)(?:, CI\d+ (\S+) … (\S+)|, no CI: (.*))?\)$")
_VERDICT = re.compile(r"  (.*?)\s+(tok/s|TTFT ms)\s+Δ (\S+) %(?: \(CI (\S+) … (\S+)\))?(?:  p adj \S+)?  (.+?)"
                      r"(?: \(MDE (\S+) %\))?$")


def check_summary_agrees(loaded: Loaded, report: Report) -> int:
    """Every number of the terminal summary is the report's, as the report prints it."""
    an = report.analysis
    ci = f"CI{round(an.options.confidence * 100)}"
    comp = an.get("comprehensive")
    text = pd.DataFrame(render.cells_text(comp), columns=comp.frame.columns)
    if an.multi_dataset:
        text["cell"] = text["dataset"] + "\x00" + text["cell"]
    compared = 0
    for line in brief.summary_lines(loaded, an):
        if m := _BEST.match(line):
            which, cell, mean, _, n, lo, hi, why = m.groups()
            lab = "tok/s" if which == "throughput" else "TTFT ms"
            rows = text[text["cell"].str.endswith(cell) & (text[f"{lab} mean"] == mean)]
            assert len(rows), (line, cell)
            row = rows.iloc[0]
            if lo is not None:
                assert (row[f"{lab} {ci} lo"], row[f"{lab} {ci} hi"]) == (lo, hi), line
            else:
                assert (row[f"{lab} {ci} lo"], row.get(f"{lab} {ci} note", "")) == ("", why or ""), line
            compared += 1
        elif (m := _VERDICT.match(line)) and an.get("baseline_vs_chimera") is not None:
            cell, metric, pct, lo, hi, verdict, mde = m.groups()
            f = an.get("baseline_vs_chimera").frame
            rows = f[(f["metric"] == metric) & f["cell"].astype(str).str.startswith(cell)]
            plo, phi = f"Δ % {ci} lo", f"Δ % {ci} hi"
            printed = [(f"{r['Δ %']:+.1f}", None if pd.isna(r[plo]) else f"{r[plo]:+.1f}",
                        None if pd.isna(r[phi]) else f"{r[phi]:+.1f}", r["verdict"],
                        None if mde is None else f"{r['MDE %']:.1f}")   # the summary's MDE is the table's
                       for _, r in rows.iterrows()]
            assert (pct, lo, hi, verdict, mde) in printed or pct == "–", (line, printed)
            compared += 1
    return compared


def check_report(loaded: Loaded, report: Report) -> None:
    holm = report.analysis.options.correction == "holm"
    for t in report.analysis.tables:
        check_intervals(t)
        check_p_adjusted(t, holm)
    check_sections(report.markdown)
    check_summary_agrees(loaded, report)


# ---------------------------------------------------------------- the properties


@pytest.mark.slow   # seconds by design: a full report built for each generated sweep; make test runs it
@given(spec=specs())
def test_the_report_of_any_sweep_keeps_every_promise(spec: Spec) -> None:
    df = table(spec)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            loaded, report = _report(df, Path(tmp))
        except InputError as exc:                       # only when nothing was measured
            assert "no usable rows" in str(exc)
            return
        check_report(loaded, report)


@settings(max_examples=4)
@given(spec=specs(), options=st.sampled_from([
    Options(bootstrap=True, resamples=199), Options(bootstrap=True, bootstrap_method="percentile", resamples=199),
    Options(correction="bh"), Options(test="mannwhitney", sensitivity_test="kruskal"), Options(confidence=0.9),
]))
def test_the_promises_hold_under_every_option(spec: Spec, options: Options) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            loaded, report = _report(table(spec), Path(tmp), options)
        except InputError:
            return
        check_report(loaded, report)


def _sweep_dir(df: pd.DataFrame, where: Path) -> Path:
    """The rows as a sweep directory: one Parquet file per cell, in the contract's schema."""
    where.mkdir(parents=True)
    for i, (_, cell) in enumerate(df.groupby("cell_id", sort=True)):
        data = pa.Table.from_pandas(cell[[c for c in cell.columns if c in SCHEMA.names]], preserve_index=False)
        pq.write_table(conform(data), where / f"c{i}.parquet")
    return where


@pytest.mark.slow   # seconds by design: a full report built for each generated sweep; make test runs it
@settings(max_examples=4)
@given(spec=specs(workloads=("prompt",), most_datasets=1))
def test_the_end_of_sweep_summary_prints_the_reports_interval_for_every_cell(spec: Spec) -> None:
    from sweep.multirun.summary import interval_text

    df = table(spec)
    with tempfile.TemporaryDirectory() as tmp:
        sweep = _sweep_dir(df, Path(tmp) / "S0")
        try:
            loaded, report = _report(df, Path(tmp))
        except InputError:
            return
        cs, frame = report.analysis.cellstats, loaded.frame
        for cell_id in df["cell_id"].unique()[:4]:            # each call reads the sweep: a few cells suffice
            key = frame.loc[frame["cell_id"] == cell_id, "cell_key"].iloc[0]
            lo, hi = cs.at[key, "throughput_tok_s:ci_lo"], cs.at[key, "throughput_tok_s:ci_hi"]
            note = cs.at[key, "throughput_tok_s:ci_note"]
            expected = f"no CI: {note}" if note else f"95 % CI {lo:.2f} – {hi:.2f}"
            assert interval_text(sweep, cell_id, "throughput_tok_s") == expected


# ---------------------------------------------------------------- hand-checked edge cases the strategy reaches


def test_three_well_behaved_trials_print_an_interval_close_to_student_t(tmp_path: Path) -> None:
    """tok/s 100, 110, 121 (CV 10 %): log-t 87.10 … 139.77 (Student t 84.24 … 136.43; ratio of widths 1.009)."""
    rows = [dict(cell_id="c", model="m", trial=i, status="ok", throughput_tok_s=v, ttft_ms=v)
            for i, v in enumerate((100.0, 110.0, 121.0))]
    loaded, report = _report(pd.DataFrame(rows), tmp_path)
    (row,) = render.cells_text(report.analysis.get("comprehensive"))
    cols = list(report.analysis.get("comprehensive").frame.columns)
    assert row[cols.index("tok/s CI95 lo")] == "87.10" and row[cols.index("tok/s CI95 hi")] == "139.77"
    assert "best throughput: c  110.33 tok/s (n 3, CI95 87.10 … 139.77)" in brief.summary_lines(loaded, report.analysis)


def test_a_sweep_without_agents_numbers_its_sections_without_gaps(tmp_path: Path) -> None:
    spec = Spec(seed=1, cells=3, trials=(3, 3, 3), shapes=("lognormal",) * 3, baseline=True, datasets=1,
                workload="prompt", failed=0, warmups=0, reload_flags=False)
    _, report = _report(table(spec), tmp_path)
    headings = re.findall(r"^## (.*)$", report.markdown, re.M)
    assert headings == ["What was analysed", "1. Comprehensive results", "2. Latency and token timings",
                        "3. Rankings", "4. Baseline vs chimera", "5. Parameter sensitivity", "6. Population summary",
                        "7. Run order / cold start", "8. Client-side share"]


@pytest.mark.parametrize("make", [tr114_like, tr110_like], ids=["tr114", "tr110"])
def test_multi_agent_data_of_other_harnesses_keep_every_promise(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    loaded, report = _report(make(), tmp_path)
    check_report(loaded, report)
    assert report.analysis.get("concurrency") is not None
    assert sum(check_intervals(t) for t in report.analysis.tables) > 50


def test_reload_flags_turn_a_tr114_cell_into_words_and_its_verdict_inconclusive(tmp_path: Path) -> None:
    _, report = _report(tr114_like(reload_flags=True), tmp_path)
    comp = report.analysis.get("comprehensive").frame
    notes = comp["TTFT ms CI95 note"]
    assert notes.str.fullmatch(r"\d+ of 20 trials reloaded the model").sum() >= 5
    assert comp.loc[notes != "", "TTFT ms CI95 lo"].isna().all()
    bvc = report.analysis.get("baseline_vs_chimera").frame
    worded = set(comp.loc[notes != "", "cell"])
    ttft = bvc[bvc["metric"] == "TTFT ms"]
    assert (ttft.loc[ttft["cell"].isin(worded) | ttft["baseline"].isin(worded), "verdict"] == "inconclusive").all()


# ---------------------------------------------------------------- figures: drawn, or skipped with a line




@pytest.mark.parametrize("make", [tr114_like, tr110_like], ids=["tr114", "tr110"])
def test_python_m_analysis_draws_the_figures_of_multi_agent_data(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The TR114 shape (bimodal TTFT with 6–7 s reloads) took the report down in the sensitivity figure
    (``'yerr' must not contain negative values``): the interval beside a mean did not contain it."""
    data = tmp_path / "trials.parquet"
    make().to_parquet(data)
    result = run_module("analysis", str(data), "--out", str(tmp_path / "out"), cwd=tmp_path, timeout=300,
                        env=clean_env(tmp_path, MPLBACKEND="Agg"))
    assert result.returncode == 0, result.stderr
    figures = {p.name for p in (tmp_path / "out" / "figures").glob("*.png")}
    assert {"sensitivity_num_gpu.png", "concurrency_speedup.png", "baseline_vs_chimera_forest.png"} <= figures
    assert "Figure skipped" not in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_a_figure_that_cannot_be_drawn_is_one_line_in_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis import figures

    def broken(an: object, out: Path) -> list[Path]:
        raise ValueError("'yerr' must not contain negative values")

    monkeypatch.setattr(figures, "sensitivity", broken)
    spec = Spec(seed=3, cells=3, trials=(3, 3, 3), shapes=("lognormal",) * 3, baseline=True, datasets=1,
                workload="prompt", failed=0, warmups=0, reload_flags=False)
    _, report = _report(table(spec), tmp_path, figures=True)
    section = re.split(r"## \d+\. Parameter sensitivity", report.markdown)[1].split("\n## ")[0]
    assert ("Figure skipped: sensitivity could not be drawn (ValueError: 'yerr' must not contain negative values)."
            in section)
    assert (tmp_path / "report" / "figures" / "baseline_vs_chimera_forest.png").is_file()   # the others are drawn
    assert (tmp_path / "report" / "figures" / "latency_percentiles.png").is_file()
    assert "Figure skipped" in (tmp_path / "report" / "report.html").read_text()
