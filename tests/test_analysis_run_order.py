"""Which trial is a cell's "first" in the run-order table: earliest started_at, else lowest trial, else file order.

The table takes the first row of a stable sort by (cell, that column) — it finds it
with a grouped idxmin, so ties must still go to the row read first.  One cell,
four measured trials in file order:

    trial       2   0   1   0
    TTFT ms    30  10  20  99
    started_at  3   2   4   1   (seconds)

- by started_at: the 4th row (99 ms); rest 30, 10, 20 → mean 20, and 99 > max(rest): "yes";
- by trial: trial 0 twice, the 2nd row comes first (10 ms); rest 30, 20, 99 → mean 49.67: "no";
- neither column: file order, the 1st row (30 ms); rest 10, 20, 99 → mean 43.0: "no".
"""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.load import combine, tidy
from analysis.tables import analyse

TRIALS, TTFT, STARTED = [2, 0, 1, 0], [30.0, 10.0, 20.0, 99.0], [3, 2, 4, 1]


def _run_order(drop: tuple[str, ...]) -> pd.Series:
    frame = pd.DataFrame({
        "cell_id": "c", "model": "m", "status": "ok", "throughput_tok_s": 10.0, "ttft_ms": TTFT, "trial": TRIALS,
        "started_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(STARTED, unit="s"),
    }).drop(columns=list(drop))
    df, _ = combine([tidy(frame, "S")])
    table = analyse(df).get("run_order")
    assert table is not None
    return table.frame.iloc[0]


@pytest.mark.parametrize(("drop", "first", "rest", "above"), [
    ((), 99.0, 20.0, "yes"),
    (("started_at",), 10.0, 149.0 / 3, "no"),
    (("started_at", "trial"), 30.0, 43.0, "no"),
])
def test_first_trial_by_started_at_then_trial_then_file_order(drop: tuple[str, ...], first: float, rest: float,
                                                              above: str) -> None:
    row = _run_order(drop)
    assert row["first TTFT ms"] == first
    assert row["rest TTFT ms mean"] == pytest.approx(rest)
    assert row["first > max(rest)"] == above
