"""ITL, TPOT, prompt tok/s and the latency percentiles (issue 29): the formulas by hand, then on generated data.

The hand-computed cases pin each formula (a wrong denominator, a pooled instead of a per-trial mean, a
percentile of the wrong column fails them); the Hypothesis properties check that no input crashes them,
that every interval brackets its estimate and that the bounds stay in range.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from analysis import render
from analysis.load import Loaded, Source, combine, tidy
from analysis.report import build
from sweep.contract import prompt_tokens_per_s, tpot_ms
from tests.test_properties import check_intervals
from tests.trial_tables import Spec, specs, table


# ---------------------------------------------------------------- the per-trial formulas


def test_prompt_tokens_per_s_is_count_over_duration_in_seconds() -> None:
    assert prompt_tokens_per_s(50, 250.0) == pytest.approx(200.0)        # 50 tokens in 0.25 s
    assert prompt_tokens_per_s(512, 1000.0) == pytest.approx(512.0)
    for count, ms in ((None, 10.0), (10, None), (0, 10.0), (10, 0.0), (-1, 10.0)):
        assert prompt_tokens_per_s(count, ms) is None, (count, ms)


def test_tpot_spreads_the_decode_time_over_the_tokens_after_the_first() -> None:
    assert tpot_ms(1100.0, 100.0, 11) == pytest.approx(100.0)            # 1000 ms over 10 tokens after the first
    assert tpot_ms(300.0, 100.0, 2) == pytest.approx(200.0)
    for args in ((None, 1.0, 5), (10.0, None, 5), (10.0, 1.0, None), (10.0, 1.0, 1), (10.0, 1.0, 0), (5.0, 9.0, 5)):
        assert tpot_ms(*args) is None, args


def test_the_series_forms_are_the_scalar_forms() -> None:
    count = pd.Series([50, 0, None, 10], dtype="float")
    ms = pd.Series([250.0, 10.0, 10.0, None])
    out = prompt_tokens_per_s(count, ms)
    assert out[0] == pytest.approx(200.0) and out[1:].isna().all()
    e2e, ttft, n = pd.Series([1100.0, 10.0, 300.0]), pd.Series([100.0, 1.0, 100.0]), pd.Series([11, 1, 2])
    assert tpot_ms(e2e, ttft, n).tolist()[0::2] == pytest.approx([100.0, 200.0]) and math.isnan(tpot_ms(e2e, ttft, n)[1])


finite = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False)


@given(count=st.one_of(st.none(), st.integers(-5, 10**6)), ms=st.one_of(st.none(), st.floats(-10, 1e7)))
def test_prompt_speed_never_crashes_and_inverts_to_its_inputs(count: int | None, ms: float | None) -> None:
    v = prompt_tokens_per_s(count, ms)
    series = prompt_tokens_per_s(pd.Series([count], dtype="float"), pd.Series([ms], dtype="float"))[0]
    if v is None:
        assert math.isnan(series)
        return
    assert v > 0 and v * ms / 1000 == pytest.approx(count) and series == pytest.approx(v)


@given(ttft=finite, decode=st.floats(0, 1e6), n=st.integers(-2, 10**5))
def test_tpot_never_crashes_and_rebuilds_the_e2e(ttft: float, decode: float, n: int) -> None:
    e2e = ttft + decode
    v = tpot_ms(e2e, ttft, n)
    if n < 2:
        assert v is None
        return
    assert v >= 0 and ttft + v * (n - 1) == pytest.approx(e2e)
    assert tpot_ms(pd.Series([e2e]), pd.Series([ttft]), pd.Series([n]))[0] == pytest.approx(v)


# ---------------------------------------------------------------- the report's tables, by hand

TTFT = [100.0, 200.0, 300.0]
E2E = [1100.0, 1200.0, 1400.0]
TOKENS = [11, 11, 21]                  # TPOT: 1000/10, 1000/10, 1100/20 = 100, 100, 55
ITL = [90.0, 100.0, 140.0]
PROMPT = [(40, 200.0), (40, 100.0), (60, 200.0)]    # 200, 400, 300 tok/s


def _hand_cell() -> pd.DataFrame:
    rows = [dict(sweep_id="S", cell_id="chimera m num_ctx=512", preset="chimera", model="m", backend="ollama",
                 workload="prompt", prompt_id="0", num_ctx=512, trial=i, warmup=False, status="ok",
                 ttft_ms=TTFT[i], e2e_ms=E2E[i], eval_count=TOKENS[i], throughput_tok_s=50.0 + i,
                 itl_ms_mean=ITL[i], itl_ms_p50=ITL[i] - 10, itl_ms_p99=ITL[i] * 2,
                 prompt_eval_count=PROMPT[i][0], prompt_eval_duration_ms=PROMPT[i][1])
            for i in range(3)]
    rows.append(rows[0] | dict(trial=0, warmup=True, ttft_ms=9000.0, e2e_ms=99000.0, itl_ms_mean=999.0))
    return pd.DataFrame(rows)


def _build(df: pd.DataFrame, where: Path, figures: bool = False):  # type: ignore[no-untyped-def]
    frame, fixed = combine([tidy(df, "gen")])
    loaded = Loaded(frame, [Source(where / "gen.csv", "gen", len(frame), 1)], {}, fixed)
    return build(loaded, out_dir=where / "report", figures=figures)


def _log_t(x: list[float]) -> tuple[float, float, float]:
    """mean · exp(± t · s / (mean · √n)), the report's interval of a positive mean, by hand."""
    a = np.asarray(x, float)
    m, s, n = a.mean(), a.std(ddof=1), a.size
    h = sps.t.ppf(0.975, n - 1) * s / (m * math.sqrt(n))
    return m, m * math.exp(-h), m * math.exp(h)


def test_token_timing_table_by_hand(tmp_path: Path) -> None:
    report = _build(_hand_cell(), tmp_path)
    row = report.analysis.get("token_timing").frame.iloc[0]
    expected = {"ITL ms": ITL, "ITL p50 ms": [v - 10 for v in ITL], "ITL p99 ms": [v * 2 for v in ITL],
                "TPOT ms": [100.0, 100.0, 55.0], "prompt tok/s": [200.0, 400.0, 300.0],
                "decode tok/s": [50.0, 51.0, 52.0]}
    for label, values in expected.items():
        m, lo, hi = _log_t(values)
        assert row[f"{label} mean"] == pytest.approx(m), label
        assert (row[f"{label} CI95 lo"], row[f"{label} CI95 hi"]) == (pytest.approx(lo), pytest.approx(hi)), label
    assert row["TPOT ms mean"] == pytest.approx(85.0)          # not (Σ e2e − Σ TTFT) / Σ(tokens − 1) = 77.5
    assert row["n"] == 3                                        # the warm-up is not a trial
    csv = (tmp_path / "report" / "token_timing.csv").read_text().splitlines()
    assert csv[0].startswith("cell,n,ITL ms mean,ITL ms CI95 lo,ITL ms CI95 hi,ITL p50 ms mean")
    assert "TPOT ms mean" in csv[0] and "prompt tok/s mean" in csv[0] and "decode tok/s mean" in csv[0]


def test_latency_percentiles_by_hand(tmp_path: Path) -> None:
    report = _build(_hand_cell(), tmp_path, figures=True)
    row = report.analysis.get("latency_percentiles").frame.iloc[0]
    # linear interpolation over the 3 trials: position q·(n−1) between the sorted values
    assert [row[f"TTFT ms p{q}"] for q in (50, 95, 99)] == pytest.approx([200.0, 290.0, 298.0])
    assert [row[f"e2e ms p{q}"] for q in (50, 95, 99)] == pytest.approx([1200.0, 1380.0, 1396.0])
    comp = report.analysis.get("comprehensive").frame.iloc[0]
    assert comp["TTFT ms p99"] == pytest.approx(298.0) and comp["TTFT ms p95"] == pytest.approx(290.0)
    assert comp["prompt tok/s mean"] == pytest.approx(300.0)
    md = report.markdown
    assert "Latency and token timings" in md and "TTFT ms p99" in md and "TPOT ms mean" in md
    assert (tmp_path / "report" / "figures" / "latency_percentiles.png").is_file()
    tex = (tmp_path / "report" / "report.tex").read_text()
    assert "tab:token-timing" in tex and "tab:latency-percentiles" in tex


def test_a_stored_prompt_speed_is_read_and_a_missing_one_derived(tmp_path: Path) -> None:
    df = _hand_cell()
    df["prompt_tokens_per_s"] = [1000.0, None, None, None]     # the first row stored it (a cache hit, say)
    row = _build(df, tmp_path).analysis.get("token_timing").frame.iloc[0]
    assert row["prompt tok/s mean"] == pytest.approx((1000.0 + 400.0 + 300.0) / 3)


def test_no_token_timings_no_table(tmp_path: Path) -> None:
    df = _hand_cell().drop(columns=["itl_ms_mean", "itl_ms_p50", "itl_ms_p99", "prompt_eval_count", "e2e_ms"])
    report = _build(df, tmp_path)
    assert report.analysis.get("token_timing") is None and report.analysis.get("latency_percentiles") is not None
    assert "e2e ms p99" not in report.analysis.get("latency_percentiles").frame.columns


# ---------------------------------------------------------------- generated sweeps


@pytest.mark.slow   # seconds by design: a full report built for each generated sweep; make test runs it
@settings(max_examples=25, deadline=None)
@given(spec=specs(workloads=("prompt",), most_datasets=1))
def test_token_timings_and_percentiles_keep_their_promises(spec: Spec) -> None:
    df = table(spec)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = _build(df, Path(tmp))
        except Exception as exc:                                 # only "no usable rows"
            assert "no usable rows" in str(exc)
            return
        timing = report.analysis.get("token_timing")
        if timing is not None:
            check_intervals(timing)
            text = pd.DataFrame(render.cells_text(timing), columns=timing.frame.columns)
            for col in [c for c in timing.frame.columns if str(c).endswith(" mean")]:
                vals = timing.frame[col].dropna()
                assert (vals >= 0).all(), col                    # speeds and times are never negative
            assert len(text) == len(report.analysis.cells)
        pct = report.analysis.get("latency_percentiles")
        if pct is not None:
            for lab in ("TTFT ms", "e2e ms"):
                if f"{lab} p50" not in pct.frame:
                    continue
                p = pct.frame[[f"{lab} p50", f"{lab} p95", f"{lab} p99"]].to_numpy(float)
                ok = ~np.isnan(p).any(axis=1)
                assert (np.diff(p[ok], axis=1) >= -1e-9).all(), lab       # p50 ≤ p95 ≤ p99
            frame, _ = combine([tidy(df, "gen")])               # a percentile lies within its cell's trials
            m = frame.loc[frame["measured"]].groupby("cell_key")["ttft_ms"].agg(["min", "max"])
            for key, p99 in zip(report.analysis.cellstats.index, pct.frame["TTFT ms p99"]):
                if not np.isnan(p99):
                    assert m.at[key, "min"] - 1e-9 <= p99 <= m.at[key, "max"] + 1e-9
