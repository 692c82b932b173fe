"""The client-side share of each trial, stored per row and summarised per cell (issue 16).

``client_overhead_ms`` = e2e − the server's total_duration and ``client_ttft_overhead_ms`` = TTFT − (load +
prompt eval) are computed where the trial record is built and stored; the analysis reads them, and computes
them only for rows of older sweeps that lack them.  The stand-in scripts the server's durations.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import client_share
from sweep.contract import COLUMN_NAMES, read_whole, trial_files
from sweep.testing.standin import Script, StandIn
from tests.sweep_cli import only_sweep, run_module, run_sweep, trials_of

COLUMNS = ("client_overhead_ms", "client_ttft_overhead_ms")


def _sweep(standin: StandIn, root: Path, *extra: str) -> pd.DataFrame:
    result = run_sweep("backend=ollama", f"backend.base_url={standin.base_url}", "model=gemma3", "trials=3",
                       "warmup=1", "telemetry.enabled=false", f"output_root={root}", *extra)
    assert result.returncode == 0, result.stderr
    return trials_of(root)


def test_both_figures_are_stored_per_row_from_the_server_durations(standin: StandIn, tmp_path: Path) -> None:
    # The server claims 30 ms in all, 2 ms of load and 8 ms of prompt eval; the call really takes ≥ 80 ms
    # to its first token and ≥ 120 ms in all, so the client side is large and positive, and exactly the rest.
    standin.default = Script(tokens=["a", "b", "c", "d", "e"], first_token_delay_s=0.08, token_interval_s=0.01,
                             total_duration=30_000_000, load_duration=2_000_000, prompt_eval_duration=8_000_000)
    df = _sweep(standin, tmp_path)
    stored = [c for c in df.columns if c in COLUMNS]
    assert stored == list(COLUMNS) and set(COLUMNS) <= set(COLUMN_NAMES)      # stored, in the contract's order
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert df["client_overhead_ms"].to_numpy() == pytest.approx((df["e2e_ms"] - 30.0).to_numpy())
    assert df["client_ttft_overhead_ms"].to_numpy() == pytest.approx((df["ttft_ms"] - 10.0).to_numpy())
    assert (df["client_overhead_ms"] >= 120 - 30).all() and (df["client_ttft_overhead_ms"] >= 80 - 10).all()

    out = tmp_path / "report"
    report = run_module("analysis", str(only_sweep(tmp_path)), "--no-figures", "--out", str(out))
    assert report.returncode == 0, report.stderr
    (row,) = pd.read_csv(out / "client_side.csv").to_dict("records")
    measured = df[~df["warmup"]]
    assert row["e2e n"] == 3
    assert row["client e2e ms mean"] == pytest.approx(measured["client_overhead_ms"].mean(), abs=0.01)
    assert row["client TTFT ms mean"] == pytest.approx(measured["client_ttft_overhead_ms"].mean(), abs=0.01)
    assert row["client e2e %"] == pytest.approx(100 * (1 - 30.0 / measured["e2e_ms"].mean()), abs=0.1)


def test_a_server_without_timings_leaves_them_null(standin: StandIn, tmp_path: Path) -> None:
    """An OpenAI-compatible server reports no total or load duration: nothing to subtract, so null."""
    standin.default = Script(first_token_delay_s=0.01, token_interval_s=0.001)
    df = _sweep(standin, tmp_path, "backend=openai", f"backend.base_url={standin.base_url}/v1", "chimera=baseline",
                "trials=1", "warmup=0")
    assert len(df) == 1 and df["status"].iloc[0] == "ok" and df["ttft_ms"].notna().all()
    assert df[list(COLUMNS)].isna().all().all()


def test_the_analysis_reads_the_stored_columns_and_computes_them_for_older_rows(
        standin: StandIn, tmp_path: Path) -> None:
    standin.default = Script(first_token_delay_s=0.02, token_interval_s=0.005, total_duration=10_000_000)
    _sweep(standin, tmp_path)
    sweep_dir = only_sweep(tmp_path)
    # An older sweep: the same rows written without the two columns.
    old = tmp_path / "old" / "20250101-000000"
    old.mkdir(parents=True)
    table = pa.concat_tables([read_whole(p) for p in trial_files(sweep_dir)]).drop_columns(list(COLUMNS))
    pq.write_table(table, old / "cell.parquet")
    new_rows = _client_side(sweep_dir, tmp_path / "r_new")
    old_rows = _client_side(old, tmp_path / "r_old")
    for col in ("client e2e ms mean", "client TTFT ms mean", "client e2e %", "client TTFT %"):
        assert new_rows[col] == pytest.approx(old_rows[col], abs=0.01), col

    # Stored values win over a recomputation; rows without them are computed from their inputs.
    frame = pd.DataFrame({"e2e_ms": [100.0, 100.0, 50.0], "total_duration_ms": [60.0, 60.0, None],
                          "ttft_ms": [20.0, 20.0, 5.0], "load_duration_ms": [1.0, 1.0, 1.0],
                          "prompt_eval_duration_ms": [4.0, 4.0, 1.0],
                          "client_overhead_ms": [7.0, None, None], "client_ttft_overhead_ms": [3.0, None, None]})
    client_share.add_columns(frame)
    assert frame["client_overhead_ms"].tolist()[:2] == [7.0, 40.0] and pd.isna(frame["client_overhead_ms"][2])
    assert frame["client_ttft_overhead_ms"].tolist() == [3.0, 15.0, 3.0]


def _client_side(sweep_dir: Path, out: Path) -> dict:
    report = run_module("analysis", str(sweep_dir), "--no-figures", "--out", str(out))
    assert report.returncode == 0, report.stderr
    (row,) = pd.read_csv(out / "client_side.csv").to_dict("records")
    return row
