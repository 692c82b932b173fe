"""``python -m analysis NEW --against OLD --gate``: exit 1 on a regression, 0 on noise, 2 on bad input, 3 inconclusive.

Two synthetic sweeps of the same 4-cell grid (num_ctx × num_thread), 10 trials per cell, throughput
≈ 50 tok/s with 2 % noise, TTFT ≈ 40 ms with 2 % noise (quiet enough that the gate can see a 5 % change
in both metrics: with 5 % TTFT noise its MDE is 6 % and the gate says inconclusive, exit 3).  NEW's cells carry different labels and sweep ids, so the
pairing can only come from model and parameters (OLD has no preset column, as an older harness's
file, so its labels are its raw cell ids).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sweep.contract import TrialRecord, to_table
from tests.test_analysis_report import _csv
from tests.test_gate_power import SLOW_NEW, SLOW_OLD, _quiet
from tests.sweep_cli import clean_env, run_module

pytestmark = pytest.mark.slow   # whole reports, several engines or a browser: seconds per test

GRID = [(512, 1), (512, 2), (2048, 1), (2048, 2)]


def _sweep(path: Path, seed: int, label: str, slow: dict[tuple[int, int], float] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for num_ctx, num_thread in GRID:
        factor = (slow or {}).get((num_ctx, num_thread), 1.0)
        for trial in range(10):
            rows.append(dict(
                sweep_id=label, cell_id=f"{label} cell ctx{num_ctx}/t{num_thread}", preset="chimera",
                model="gemma3:270m", backend="embedded", workload="report", num_ctx=num_ctx,
                num_thread=num_thread, trial=trial, status="ok", eval_count=64,
                throughput_tok_s=float(rng.normal(50 * num_thread, 1.0 * num_thread)) * factor,
                ttft_ms=float(rng.lognormal(np.log(40), 0.02)),
            ))
    frame = pd.DataFrame(rows)
    if label == "OLD":      # an older harness's file: no preset column, so its labels stay the raw cell ids
        frame = frame.drop(columns="preset")
    frame.to_csv(path, index=False)
    return path


def _gate(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_module("analysis", *map(str, args), cwd=cwd, timeout=120, env=clean_env(cwd))


def test_gate_fails_on_a_planted_10_percent_regression(tmp_path: Path) -> None:
    old = _sweep(tmp_path / "old.csv", 1, "OLD")
    new = _sweep(tmp_path / "new.csv", 2, "NEW", slow={(2048, 2): 0.90})
    r = _gate(new, "--against", old, "--gate", "--out", tmp_path / "g", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "gate: 1 significant regression(s) ≥ 5 %" in r.stderr
    rows = _csv(tmp_path / "g" / "gate.csv")
    bad = [x for x in rows if x["verdict"] == "REGRESSION"]
    assert [(x["cell"], x["metric"]) for x in bad] == [("chimera num_ctx=2048 num_thread=2", "tok/s")]
    assert bad[0]["cell old"] == "OLD cell ctx2048/t2"
    assert -12 < float(bad[0]["Δ %"]) < -8
    assert len(rows) == 10                        # (4 pairs + the sweep-wide row) × (tok/s, TTFT)
    assert [x["test"] for x in rows].count("sweep-wide") == 2
    # The same regression stays below a 15 % minimum: the gate passes.
    assert _gate(new, "--against", old, "--gate", "--min-delta-pct", "15", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_gate_passes_on_noise(tmp_path: Path, seed: int) -> None:
    old = _sweep(tmp_path / "old.csv", 1, "OLD")
    new = _sweep(tmp_path / "new.csv", seed, "NEW")
    r = _gate(new, "--against", old, "--gate", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gate: 0 significant regression(s)" in r.stderr
    assert "| REGRESSION" not in r.stdout


def test_an_improvement_is_not_a_regression(tmp_path: Path) -> None:
    old = _sweep(tmp_path / "old.csv", 1, "OLD")
    new = _sweep(tmp_path / "new.csv", 2, "NEW", slow={(512, 1): 1.2})
    r = _gate(new, "--against", old, "--gate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "better" in r.stdout


def test_gate_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    old = _sweep(tmp_path / "old.csv", 1, "OLD")
    other = pd.read_csv(old).assign(model="llama3.1:8b")
    other.to_csv(tmp_path / "other.csv", index=False)
    for args, message in (
        ((tmp_path / "other.csv", "--against", old, "--gate"), "no cell of NEW matches a cell of OLD"),
        ((old, "--gate"), "--gate needs --against OLD"),
        ((old, "--against", tmp_path / "missing.csv", "--gate"), "missing.csv"),
        ((old, "--against", old, "--gate", "--min-delta-pct", "-1"), "--min-delta-pct must be"),
    ):
        r = _gate(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---------------------------------------------------------------- power: exit 1 through the sweep-wide test, exit 3


def _parquet(path: Path, label: str, cells: dict[int, tuple[list[float], list[float]]]) -> Path:
    """Trial rows as a sweep writes them (the contract's records and schema) into one Parquet file."""
    records = [TrialRecord(sweep_id=label, cell_id=f"{label} ctx{256 * k}", preset="chimera", model="gemma3:270m",
                           backend="embedded", workload="report", num_ctx=256 * k, trial=i, warmup=False,
                           status="ok", throughput_tok_s=t, ttft_ms=f, eval_count=64)
               for k, (tps, ttft) in cells.items() for i, (t, f) in enumerate(zip(tps, ttft))]
    pq.write_table(to_table(records), path)
    return path


def test_gate_fails_a_uniform_2x_slowdown_no_single_cell_shows(tmp_path: Path) -> None:
    """5 cells × 3 trials, NEW about 2× slower in every cell: each cell's raw p is 0.01–0.05, none survives Holm
    over the 12 tests; the geometric mean over the 5 pairs does (hand values: tests/test_gate_power.py)."""
    old = _parquet(tmp_path / "old.parquet", "OLD", SLOW_OLD)
    new = _parquet(tmp_path / "new.parquet", "NEW", SLOW_NEW)
    r = _gate(new, "--against", old, "--gate", "--out", tmp_path / "g", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == "gate: 2 significant regression(s) ≥ 5 %"
    rows = _csv(tmp_path / "g" / "gate.csv")
    assert {x["verdict"] for x in rows if x["test"] == "cell"} == {"no significant change"}
    assert all(float(x["p"]) < 0.05 <= float(x["p adj"]) for x in rows if x["test"] == "cell")
    wide = {x["metric"]: x for x in rows if x["test"] == "sweep-wide"}
    assert {m: x["verdict"] for m, x in wide.items()} == {"tok/s": "REGRESSION", "TTFT ms": "REGRESSION"}
    assert wide["tok/s"]["cell"] == "all 5 pairs (geometric mean)"
    assert -100 < float(wide["tok/s"]["Δ % CI95 lo"]) < float(wide["tok/s"]["Δ %"]) < -49
    assert "| sweep-wide |" in r.stdout and "Holm over all 12 tests" in r.stdout


def test_gate_is_inconclusive_when_it_could_not_see_the_minimum(tmp_path: Path) -> None:
    """Same server twice (2 % noise), n = 3, --min-delta-pct 2: no test's MDE reaches 2 % → exit 3 with the MDE."""
    old = _parquet(tmp_path / "old.parquet", "OLD", _quiet(1))
    new = _parquet(tmp_path / "new.parquet", "NEW", _quiet(2))
    r = _gate(new, "--against", old, "--gate", "--min-delta-pct", "2", "--out", tmp_path / "g", cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    rows = _csv(tmp_path / "g" / "gate.csv")
    best = {}
    for x in rows:
        best[x["metric"]] = min(best.get(x["metric"], float("inf")), float(x["MDE %"]))
    metric = max(best, key=best.get)
    assert best[metric] > 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"gate: inconclusive: could not detect a 2 % change at this n (MDE {best[metric]:.1f} %, {metric}) "
        "— run more trials or raise --min-delta-pct")
    assert {x["verdict"] for x in rows} == {"no significant change"}
    # Without --gate the comparison is printed and the exit code stays 0.
    assert _gate(new, "--against", old, "--min-delta-pct", "2", cwd=tmp_path).returncode == 0


def test_help_documents_the_exit_codes(tmp_path: Path) -> None:
    r = _gate("--help", cwd=tmp_path)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert ("exit codes: 0 done (with --gate: passed), 1 regression found by --gate, 2 bad input or usage, "
            "3 --gate inconclusive") in text
