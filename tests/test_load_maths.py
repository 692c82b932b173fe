"""workload=load's pure parts: arrivals, the SLO test, goodput, the knee's bisection and the capacity CI.

Hand-computed values first, then Hypothesis properties on generated data.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.capacity import capacity_ci, runs
from sweep.cells import LoadPlan
from sweep.contract import TrialRecord
from sweep.workloads.loadgen import (AT_HIGH, BELOW_LOW, BRACKETED, Bisection, arrival_offsets_s,
                                     completed_load_trials, goodput_fraction, goodput_per_s, slo_met)


def plan(**slo: float | None) -> LoadPlan:
    return LoadPlan(loop="open", arrivals="constant", level=1.0, duration_s=1.0, requests=None, sweep=False,
                    low=0.5, high=64.0, tolerance=0.05, seed=0, slo_ttft_ms=slo.get("ttft"),
                    slo_itl_ms=slo.get("itl"), slo_e2e_ms=slo.get("e2e"), slo_fraction=0.9)


# ---------------------------------------------------------------- arrivals

def test_constant_arrivals_by_hand() -> None:
    assert arrival_offsets_s(4, "constant", (0,), duration_s=1.0) == [0.0, 0.25, 0.5, 0.75]
    assert arrival_offsets_s(4, "constant", (0,), duration_s=1.1) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert arrival_offsets_s(2, "constant", (0,), requests=3) == [0.0, 0.5, 1.0]


def test_poisson_arrivals_are_seeded_per_run() -> None:
    a = arrival_offsets_s(10, "poisson", (0, 1, 2), requests=50)
    assert a == arrival_offsets_s(10, "poisson", (0, 1, 2), requests=50)        # a re-run draws the same
    assert a != arrival_offsets_s(10, "poisson", (0, 1, 3), requests=50)        # the next step draws anew
    gaps = np.random.default_rng([0, 1, 2]).exponential(0.1, size=49)
    assert np.diff(a) == pytest.approx(gaps)                                    # exponential gaps of mean 1/rate


@settings(max_examples=50)
@given(rate=st.floats(0.1, 200), duration=st.floats(0.05, 5), seed=st.integers(0, 2**31))
def test_arrivals_lie_in_the_run_in_order(rate: float, duration: float, seed: int) -> None:
    for kind in ("constant", "poisson"):
        off = arrival_offsets_s(rate, kind, (seed,), duration_s=duration)
        assert off[0] == 0.0 and all(0 <= x < duration for x in off) and off == sorted(off)
    n = len(arrival_offsets_s(rate, "constant", (seed,), duration_s=duration))
    assert n == math.ceil(duration * rate - 1e-9)                              # every 1/rate within the run


def test_poisson_mean_gap_is_one_over_rate() -> None:
    off = arrival_offsets_s(50, "poisson", (7,), requests=20_001)
    assert np.mean(np.diff(off)) == pytest.approx(1 / 50, rel=0.03)


# ---------------------------------------------------------------- SLO and goodput

def test_slo_by_hand() -> None:
    r = TrialRecord(status="ok", ttft_ms=400.0, itl_ms_mean=30.0, e2e_ms=900.0)
    assert slo_met(r, plan(ttft=500))
    assert not slo_met(r, plan(ttft=399.9))
    assert slo_met(r, plan(ttft=500, itl=30, e2e=900))                          # limits are inclusive
    assert not slo_met(r, plan(ttft=500, itl=29))
    assert not slo_met(r, plan(e2e=800))
    assert slo_met(r, plan())                                                   # no SLO: every success is good
    assert not slo_met(TrialRecord(status="timeout"), plan())                   # a failure never is
    assert slo_met(TrialRecord(status="ok", ttft_ms=10.0, e2e_ms=11.0), plan(itl=5))   # one chunk: no ITL to miss
    assert not slo_met(TrialRecord(status="ok"), plan(ttft=500))               # no TTFT: cannot have met it


def test_goodput_by_hand() -> None:
    assert goodput_fraction([True, True, False, True]) == 0.75
    assert goodput_per_s([True, True, False, True], 2.0) == 1.5
    assert goodput_fraction([]) == 0.0


def test_runs_table_by_hand() -> None:
    """The report's per-run numbers from four requests: 3 ok of which 2 good, over 2 s."""
    rows = pd.DataFrame({
        "load_run_id": ["r"] * 4, "cell_key": [0] * 4, "load_loop": ["open"] * 4, "load_rate": [2.0] * 4,
        "load_concurrency": [None] * 4, "trial": [0] * 4, "load_step": [0] * 4,
        "slo_ok": [True, True, False, None], "status": ["ok", "ok", "ok", "timeout"], "load_run_s": [2.0] * 4,
        "load_capacity": [None] * 4, "load_knee": [None] * 4, "slo": ["ttft_ms<=500 fraction>=0.9"] * 4})
    (r,) = runs(rows).to_dict("records")
    assert (r["requests"], r["good"], r["ok"], r["level"]) == (4, 2, 3, 2.0)
    assert r["goodput"] == 1.0 and r["fraction"] == 0.5 and r["throughput"] == 1.5


# ---------------------------------------------------------------- the knee's bisection

def search(true_capacity: float, low: float, high: float, tolerance: float = 0.05,
           integer: bool = False) -> Bisection:
    """A search against a server whose goodput holds exactly up to ``true_capacity``."""
    b = Bisection(low, high, tolerance, integer=integer)
    while (level := b.next_level()) is not None:
        b.record(level, level <= true_capacity)
    return b


def test_bisection_by_hand() -> None:
    b = search(20, low=1, high=64)
    assert [lvl for lvl, _ in b.tried] == [1, 2, 4, 8, 16, 32, 24, 20, 22, 21]   # doubling, then halving the bracket
    assert (b.capacity, b.knee) == (20, BRACKETED)                              # 21 − 20 ≤ 0.05 × 20: stop
    c = search(5.5, low=1, high=64, integer=True)
    assert [lvl for lvl, _ in c.tried] == [1, 2, 4, 8, 6, 5]
    assert (c.capacity, c.knee) == (5, BRACKETED)
    assert (search(0.3, low=0.5, high=8).capacity, search(0.3, low=0.5, high=8).knee) == (None, BELOW_LOW)
    top = search(100, low=1, high=12)
    assert [lvl for lvl, _ in top.tried] == [1, 2, 4, 8, 12] and (top.capacity, top.knee) == (12, AT_HIGH)


@settings(max_examples=100)
@given(low=st.floats(0.1, 10), span=st.floats(1.5, 200), where=st.floats(0, 1, exclude_max=True),
       tolerance=st.floats(0.01, 0.5))
def test_bisection_brackets_the_true_knee(low: float, span: float, where: float, tolerance: float) -> None:
    """Inside the bounds the estimate is at most the knee and within ``tolerance`` of it, in bounded steps."""
    high = low * span
    true = low + where * (high - low)
    b = search(true, low, high, tolerance)
    assert b.knee == BRACKETED or (b.knee == AT_HIGH and true >= high)
    assert b.capacity is not None and b.capacity <= true
    if b.knee == BRACKETED:
        assert true < b.capacity * (1 + tolerance)
    assert len(b.tried) <= math.ceil(math.log2(span)) + 1 + math.ceil(math.log2(span / tolerance)) + 1


@settings(max_examples=100)
@given(low=st.integers(1, 8), span=st.integers(1, 60), true=st.floats(0.5, 600))
def test_integer_bisection_finds_the_floor(low: int, span: int, true: float) -> None:
    high = low + span
    b = search(true, low, high, integer=True)
    if true < low:
        assert b.capacity is None and b.knee == BELOW_LOW
    elif true >= high:
        assert b.capacity == high and b.knee == AT_HIGH
    else:
        assert b.capacity == math.floor(true) and b.knee == BRACKETED
    assert all(float(lvl).is_integer() for lvl, _ in b.tried)


# ---------------------------------------------------------------- the capacity's CI over searches

def test_capacity_ci_by_hand() -> None:
    """log-t: mean · e^∓h, h = t(1 − α/2, n − 1) · (s/√n) / mean (a capacity is positive, like every mean reported)."""
    mean, lo, hi, note = capacity_ci(np.array([18.0, 20.0, 22.0]))
    h = 4.302652729911275 * (2.0 / math.sqrt(3)) / 20.0      # t(0.975, 2), s = 2
    assert (mean, note) == (20.0, "") and lo == pytest.approx(20 * math.exp(-h)) and hi == pytest.approx(20 * math.exp(h))
    assert (lo, hi) == (pytest.approx(15.6007, abs=1e-4), pytest.approx(25.6398, abs=1e-4))   # not 20 ∓ 4.97
    mean, lo, hi, _ = capacity_ci(np.array([10.0, 12.0]), confidence=0.9)
    h = 6.313751514675041 * (math.sqrt(2.0) / math.sqrt(2)) / 11.0   # t(0.95, 1), s = √2
    assert (lo, hi) == (pytest.approx(11 * math.exp(-h)), pytest.approx(11 * math.exp(h)))
    one = capacity_ci(np.array([7.0]))
    assert one[0] == 7.0 and math.isnan(one[1]) and math.isnan(one[2]) and one[3] == "n too small"
    assert capacity_ci(np.array([5.0, 5.0, 5.0])) == (5.0, 5.0, 5.0, "")
    # two searches far apart (0.5 and 2.5 req/s): a t interval would go to −11; log-t's bounds are ×10⁷ apart,
    # so words instead of bounds
    mean, lo, hi, note = capacity_ci(np.array([0.5, 2.5]))
    assert mean == 1.5 and math.isnan(lo) and math.isnan(hi) and note.startswith("too variable for n = 2")


@settings(max_examples=50)
@given(values=st.lists(st.floats(0.1, 1000), min_size=2, max_size=30), scale=st.floats(0.1, 10))
def test_capacity_ci_brackets_its_mean_in_range_and_scales(values: list[float], scale: float) -> None:
    v = np.array(values)
    mean, lo, hi, note = capacity_ci(v)
    assert mean == pytest.approx(v.mean())
    if note:                                   # words instead of bounds, never a bound out of range
        assert math.isnan(lo) and math.isnan(hi)
        return
    assert 0 < lo <= mean <= hi
    _, lo2, hi2, _ = capacity_ci(v * scale)    # a rate in other units: the same interval in those units
    assert lo2 == pytest.approx(lo * scale, rel=1e-6) and hi2 == pytest.approx(hi * scale, rel=1e-6)
    _, lo8, hi8, note8 = capacity_ci(v, confidence=0.8)
    assert not note8 and lo <= lo8 + 1e-9 and hi8 <= hi + 1e-9


def test_capacity_ci_covers_the_true_mean_about_95_percent() -> None:
    """Coverage on generated searches: normal estimates around 20, five searches each."""
    rng = np.random.default_rng(1)
    hits = sum(lo <= 20 <= hi for _, lo, hi, _ in (capacity_ci(rng.normal(20, 1.5, 5)) for _ in range(400)))
    assert 0.92 <= hits / 400 <= 0.98                                          # ± 3 binomial sd around 0.95
    narrow = sum(lo <= 20 <= hi for _, lo, hi, _ in (capacity_ci(rng.normal(20, 1.5, 5), confidence=0.5)
                                                  for _ in range(400)))
    assert 0.42 <= narrow / 400 <= 0.58                                        # and at 50 % confidence


def test_complete_load_trials_from_the_rows_alone() -> None:
    """What resume and the sweep's summary count: finished fixed runs with a success, knee searches that ended."""
    def row(trial: int, **kw: object) -> dict[str, object]:
        return {"cell_hash": "h", "warmup": False, "load_run_id": f"r{trial}", "trial": trial, "status": "ok",
                "load_step": None, "load_run_s": 1.0, "load_knee": None, **kw}
    rows = [row(0), row(0, status="timeout"),                       # a finished run, one request timed out
            row(1, load_run_s=None),                                # Ctrl-C: its finished requests, no span
            row(2, status="connect_error"),                         # nothing answered
            row(3, load_step=0), row(3, load_step=1),               # a knee search under way
            row(4, load_step=0), row(4, load_step=1, load_knee="below_low"),
            row(5, cell_hash="other"), {**row(6), "warmup": True}]
    assert completed_load_trials(rows, "h") == {0, 4}
