"""``python -m analysis`` end to end, on trial rows whose statistics are computed by hand here.

Data: a baseline cell with throughput 10, 12, 14 tok/s and TTFT 100, 110, 120 ms
(plus one warm-up row), a chimera cell with 20, 22, 24 tok/s and TTFT 50, 55, 60 ms
(plus one timed-out trial).  Hand values:

- mean 12, sd 2 (ddof=1), CV 16.67 %, CI95 = 12 ± t(.975, 2)·2/√3 = 12 ± 4.968;
  population sd (ddof=0) = √(8/3) = 1.633.
- Welch: Δ = 10, se = √(4/3 + 4/3) = 1.633, df = 4, CI95 = 10 ± 2.776·1.633 = [5.47, 14.53],
  t = 6.124, p = 0.0036; Hedges g = 5 · J(4) = 5 · 0.7979 = 3.99.
"""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis.render import tex_escape
from tests.sweep_cli import clean_env, run_module



def _rows(sweep_id: str = "S", shift: float = 0.0) -> list[dict]:
    rows = []

    def add(preset: str, tps: float | None, ttft: float | None, trial: int, warmup: bool = False,
            status: str = "ok") -> None:
        chimera = preset == "chimera"
        rows.append(dict(
            sweep_id=sweep_id, cell_id=f"{preset} m" + (" num_ctx=512" if chimera else ""), preset=preset,
            model="m", backend="ollama", workload="report", num_ctx=512 if chimera else None,
            temperature=0.8 if chimera else None, prompt_id="0", trial=trial, warmup=warmup, status=status,
            ttft_ms=ttft, throughput_tok_s=None if tps is None else tps + shift, eval_count=100,
            load_duration_ms=1.0, prompt_eval_duration_ms=2.0, eval_duration_ms=5000.0,
        ))

    for i, (tps, ttft) in enumerate([(10, 100), (12, 110), (14, 120)]):
        add("baseline", tps, ttft, i)
    add("baseline", 5, 900, 0, warmup=True)
    for i, (tps, ttft) in enumerate([(20, 50), (22, 55), (24, 60)]):
        add("chimera", tps, ttft, i)
    add("chimera", None, None, 3, status="timeout")
    return rows


def _analyse(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_module("analysis", *map(str, args), cwd=cwd, timeout=120, env=clean_env(cwd, MPLBACKEND="Agg"))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def trials_csv(tmp_path: Path) -> Path:
    path = tmp_path / "trials.csv"
    pd.DataFrame(_rows()).to_csv(path, index=False)
    return path


def _analysed(where: Path, *options: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``python -m analysis trials.csv [options] --out out`` run once in ``where``: (trials.csv, the run)."""
    path = where / "trials.csv"
    pd.DataFrame(_rows()).to_csv(path, index=False)
    result = _analyse(path, *options, "--out", where / "out", cwd=where)
    assert result.returncode == 0, result.stderr
    return path, result


# One run each, read by several tests (they only read what it wrote): an analysis with figures costs seconds.
@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output directory of the default analysis (figures included) of the hand-computed rows."""
    where = tmp_path_factory.mktemp("report")
    _analysed(where)
    return where / "out"


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``--no-figures``: the input file and the run (its stdout is the terminal summary)."""
    return _analysed(tmp_path_factory.mktemp("summary"), "--no-figures")


@pytest.mark.slow
def test_comprehensive_table_matches_hand_values(tmp_path: Path, trials_csv: Path) -> None:
    result = _analyse(trials_csv, "--out", tmp_path / "out", "--markdown", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {r["cell"]: r for r in _csv(tmp_path / "out" / "comprehensive.csv")}
    base, chim = rows["baseline"], rows["chimera"]  # labels: preset + what varies (nothing here)
    assert (base["n"], base["tok/s mean"], base["tok/s sd"], base["tok/s CV %"]) == ("3", "12.00", "2.00", "16.67")
    # log-t: 12 · exp(∓ t(.975, 2) · (2/√3) / 12) = 12 · e^∓0.41403 (Student t would be 7.03 … 16.97)
    assert (base["tok/s CI95 lo"], base["tok/s CI95 hi"]) == ("7.93", "18.15")
    assert (base["TTFT ms mean"], base["TTFT ms sd"], base["TTFT ms p50"], base["TTFT ms p95"]) == \
        ("110.0", "10.0", "110.0", "119.0")
    assert (base["tokens"], base["failed"], base["warm-ups"]) == ("300", "0", "1")
    assert (chim["n"], chim["tok/s mean"], chim["failed"], chim["warm-ups"]) == ("3", "22.00", "1", "0")
    # The Markdown on stdout is the same table with the same numbers.
    assert "| baseline | 3 | 12.00 | 2.00 | 16.67 | 7.93 | 18.15 |" in result.stdout


@pytest.mark.slow
def test_baseline_vs_chimera_welch_and_verdict(report: Path) -> None:
    by_metric = {r["metric"]: r for r in _csv(report / "baseline_vs_chimera.csv")}
    tps = by_metric["tok/s"]
    assert (tps["Δ"], tps["Δ CI95 lo"], tps["Δ CI95 hi"], tps["Δ %"]) == ("10.00", "5.47", "14.53", "83.3")
    assert float(tps["p"]) == pytest.approx(0.0036, abs=5e-5)
    assert tps["hedges g"] == "3.99"
    assert tps["verdict"] == "faster"
    ttft = by_metric["TTFT ms"]
    assert (ttft["Δ %"], ttft["verdict"]) == ("-50.0", "faster")  # lower TTFT is faster


@pytest.mark.slow
def test_population_sd_flag_reproduces_older_reports(tmp_path: Path, trials_csv: Path) -> None:
    assert _analyse(trials_csv, "--population-sd", "--no-figures", "--out", tmp_path / "out",
                    cwd=tmp_path).returncode == 0
    base = _csv(tmp_path / "out" / "comprehensive.csv")[0]
    assert base["tok/s sd(pop)"] == "1.63"


@pytest.mark.slow
def test_markdown_csv_and_latex_show_the_same_numbers(report: Path) -> None:
    out = report
    markdown, latex = (out / "report.md").read_text(), (out / "report.tex").read_text()
    for row in _csv(out / "comprehensive.csv"):
        values = list(row.values())
        assert "| " + " | ".join(values) + " |" in markdown
        assert " & ".join(map(tex_escape, values)) + r" \\" in latex


@pytest.mark.slow
def test_figures_are_written_as_png_and_svg(report: Path) -> None:
    figures = {p.name for p in (report / "figures").iterdir()}
    for stem in ("throughput_per_cell", "ttft_distribution", "baseline_vs_chimera_forest"):
        assert {f"{stem}.png", f"{stem}.svg"} <= figures
    assert (report / "figures" / "throughput_per_cell.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_run_order_shows_the_warm_up_and_first_trial(report: Path) -> None:
    base = _csv(report / "run_order.csv")[0]
    assert (base["warm-up TTFT ms mean"], base["first TTFT ms"], base["rest TTFT ms mean"]) == ("900.0", "100.0", "115.0")


@pytest.mark.slow
def test_two_inputs_are_labelled_never_pooled(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame(_rows("A")).to_csv(a, index=False)
    pd.DataFrame(_rows("B", shift=100.0)).to_csv(b, index=False)
    assert _analyse(a, b, "--no-figures", "--out", tmp_path / "out", cwd=tmp_path).returncode == 0
    rows = _csv(tmp_path / "out" / "comprehensive.csv")
    assert len(rows) == 4 and "dataset" in rows[0]
    means = sorted(r["tok/s mean"] for r in rows if r["cell"] == "baseline")
    assert means == ["112.00", "12.00"]  # each dataset's own cell, not a pooled mean of 62


@pytest.mark.slow
def test_default_input_is_the_newest_sweep(tmp_path: Path) -> None:
    sweeps = tmp_path / "outputs" / "sweeps"
    for name in ("20260101-000000", "20260102-000000"):
        (sweeps / name).mkdir(parents=True)
        pd.DataFrame(_rows(name)).to_parquet(sweeps / name / "cell.parquet")
    result = _analyse("--no-figures", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "20260102-000000" in result.stderr
    assert (sweeps / "20260102-000000" / "_report" / "report.md").exists()


@pytest.mark.parametrize("make_input, message", [
    (lambda d: d / "missing", "does not exist"),
    (lambda d: _write(d / "warm.csv", [r | {"warmup": True} for r in _rows()]), "no usable rows"),
    (lambda d: _write(d / "junk.csv", [{"a": 1}]), "column"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, make_input, message: str) -> None:
    result = _analyse(make_input(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def _write(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_sensitivity_marginal_means_and_anova_by_hand(tmp_path: Path) -> None:
    """num_ctx levels 512/1024/2048 with tok/s {20,22,24}, {30,32,34}, {31,33,35}.

    Grand mean 29; SSB = 3·(49 + 9 + 16) = 222 (df 2), SSW = 3·8 = 24 (df 6),
    F = 111 / 4 = 27.75, p = P(F(2, 6) > 27.75) = 0.000929.
    """
    rows = _rows()
    chimera = [r for r in rows if r["preset"] == "chimera"]
    for ctx, shift in ((1024, 10), (2048, 11)):
        rows += [r | {"num_ctx": ctx, "cell_id": f"chimera m num_ctx={ctx}",
                      "throughput_tok_s": None if r["throughput_tok_s"] is None else r["throughput_tok_s"] + shift}
                 for r in chimera]
    path = _write(tmp_path / "grid.csv", rows)
    assert _analyse(path, "--no-figures", "--out", tmp_path / "out", cwd=tmp_path).returncode == 0
    cells = [r["cell"] for r in _csv(tmp_path / "out" / "comprehensive.csv")]
    assert sorted(cells) == ["baseline", "chimera num_ctx=1024", "chimera num_ctx=2048", "chimera num_ctx=512"]
    levels = {r["level"]: r["tok/s mean"] for r in _csv(tmp_path / "out" / "sensitivity_levels.csv")}
    assert levels == {"512": "22.00", "1024": "32.00", "2048": "33.00"}
    summary = _csv(tmp_path / "out" / "sensitivity_summary.csv")[0]
    assert (summary["parameter"], summary["tok/s best level"], summary["tok/s max Δ"]) == ("num_ctx", "2048", "11.00")
    assert float(summary["tok/s p"]) == pytest.approx(0.000929, rel=1e-3)
    assert summary["tok/s effect"] == "significant"
    assert summary["TTFT ms effect"] == "not significant"


def test_cells_identical_in_options_keep_their_full_ids(tmp_path: Path) -> None:
    """Two cells that differ only in something the columns don't show (e.g. a system prompt)."""
    rows = _rows()
    rows += [r | {"cell_id": r["cell_id"] + " system=terse"} for r in rows if r["preset"] == "chimera"]
    path = _write(tmp_path / "same.csv", rows)
    assert _analyse(path, "--no-figures", "--out", tmp_path / "out", cwd=tmp_path).returncode == 0
    cells = sorted(r["cell"] for r in _csv(tmp_path / "out" / "comprehensive.csv"))
    assert cells == ["baseline m", "chimera m num_ctx=512", "chimera m num_ctx=512 system=terse"]


def test_embedded_server_port_does_not_split_a_resumed_sweep(tmp_path: Path) -> None:
    """Resuming restarts the embedded engine on another port; baseline and chimera still pair."""
    rows = [r | {"backend": "embedded",
                 "base_url": "http://127.0.0.1:40001" if r["preset"] == "baseline" else "http://127.0.0.1:40002"}
            for r in _rows()]
    path = _write(tmp_path / "embedded.csv", rows)
    assert _analyse(path, "--no-figures", "--out", tmp_path / "out", cwd=tmp_path).returncode == 0
    assert {r["verdict"] for r in _csv(tmp_path / "out" / "baseline_vs_chimera.csv")} == {"faster"}


@pytest.mark.slow
def test_terminal_summary_instead_of_the_markdown(summary: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """stdout: best cells, each verdict with Δ % and its CI, failures, files, the next command; no tables."""
    trials_csv, result = summary
    out = trials_csv.parent / "out"
    lines = result.stdout.splitlines()
    assert lines[0] == f"{trials_csv}: 2 cells, 6 measured trials (1 warm-up rows excluded)"
    # log-t (analysis/intervals.py): 22 · e^∓h and 55 · e^∓h, h = t(.975, 2) · (s/√3) / mean = 0.22583 for both
    assert "best throughput: chimera  22.00 tok/s (n 3, CI95 17.55 … 27.57)" in lines
    assert "best TTFT:       chimera  55.0 ms (n 3, CI95 43.9 … 68.9)" in lines
    # p adj by hand: Welch p of tok/s (Δ 10, se √(8/3), df 4) = 0.003602 and of TTFT (Δ −55, se √(125/3),
    # df 2.94) = 0.003660; Holm over the 2: 2 × 0.003602 = 0.0072 for both (the raw p would print 0.0036).
    assert any(re.fullmatch(r"  chimera\s+tok/s\s+Δ \+83\.3 % \(CI \+30\.1 … \+158\.3\)  p adj 0\.0072  faster", l)
               for l in lines), lines
    assert "failures: 1 trials (timeout 1) in chimera (1)" in lines
    assert (f"files: {out}/  (report.html, report.md, report.tex, summary.json, 9 CSV tables)"
            in lines)   # 8th: client_side; 9th: latency_percentiles
    assert lines[-1] == (f"next: python -m analysis {trials_csv} --no-figures --out {out} --open"
                         "   (the HTML report in a browser)")
    assert "|" not in result.stdout and len(lines) < 15
