"""Background load: other processes' CPU during a call (hand-computed /proc deltas) and the analysis's flags."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import background, brief
from analysis.load import load
from analysis.report import build
from analysis.tables import analyse
from sweep import provenance
from sweep.background import (CpuSnapshot, Probe, background_cpu_pct, busy_seconds, machine_load, process_tree,
                              stat_cpu_seconds)
from sweep.contract import BACKGROUND_CPU_FLAG_PCT, RUN_FILE, TrialRecord, to_table

# A real /proc/stat head (4 cores): user nice system idle iowait irq softirq steal guest guest_nice.
PROC_STAT = """cpu  10132153 290696 3084719 46828483 16683 0 25195 7 175628 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0
intr 199292 0 0 0
ctxt 296582
"""


def test_busy_seconds_sums_every_field_but_idle_and_iowait() -> None:
    # user + nice + system + irq + softirq + steal = 10132153 + 290696 + 3084719 + 0 + 25195 + 7 = 13532770 ticks;
    # guest (175628) is already inside user, so it is not added again
    assert busy_seconds(PROC_STAT, 100.0) == pytest.approx(135327.70)
    assert busy_seconds(PROC_STAT, 250.0) == pytest.approx(13532770 / 250)
    assert busy_seconds("intr 1 2 3\n", 100.0) is None


def test_a_processs_cpu_seconds_are_counted_after_its_name() -> None:
    # fields 14-17 (utime 250, stime 50, cutime 30, cstime 20 ticks), after a name with spaces and parentheses
    line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 1 0 5000 1000 200\n"
    assert stat_cpu_seconds(line, 100.0) == pytest.approx(3.5)


def test_background_is_machine_busy_time_minus_ours_over_wall_time() -> None:
    start = CpuSnapshot(at_s=10.0, busy_s=100.0, own_s={1: 10.0, 2: 5.0})
    end = CpuSnapshot(at_s=12.0, busy_s=103.0, own_s={1: 10.5, 2: 6.0})
    # machine 3.0 s busy, ours 0.5 + 1.0 = 1.5 s, over 2 s of wall time: 1.5 / 2 = 75 % of a core
    assert background_cpu_pct(start, end) == pytest.approx(75.0)


@settings(max_examples=60, deadline=None)
@given(busy0=st.floats(0, 1e6), wall=st.floats(0.01, 600), others=st.floats(0, 8 * 600),
       ours=st.dictionaries(st.integers(1, 10**6), st.tuples(st.floats(0, 1e4), st.floats(0, 600)), max_size=6),
       new=st.dictionaries(st.integers(2 * 10**6, 3 * 10**6), st.floats(0, 600), max_size=3))
def test_the_others_cpu_is_recovered_from_any_snapshots(busy0: float, wall: float, others: float,
                                                        ours: dict[int, tuple[float, float]],
                                                        new: dict[int, float]) -> None:
    """Whatever our processes did (old ones, new ones), what remains of the machine's time is the others'."""
    start = CpuSnapshot(5.0, busy0, {pid: before for pid, (before, _) in ours.items()})
    spent = sum(used for _, used in ours.values()) + sum(new.values())
    end = CpuSnapshot(5.0 + wall, busy0 + spent + others,
                      {**{pid: before + used for pid, (before, used) in ours.items()}, **new})
    assert background_cpu_pct(start, end) == pytest.approx(100.0 * others / wall, rel=1e-6, abs=1e-3)


def test_a_process_of_ours_started_during_the_call_counts_whole() -> None:
    start = CpuSnapshot(0.0, 50.0, {1: 4.0})
    end = CpuSnapshot(4.0, 54.0, {1: 5.0, 7: 0.8})      # pid 7 (the engine's new child) used 0.8 s, all in the call
    # machine 4.0 s, ours 1.0 + 0.8 = 1.8 s → others 2.2 s over 4 s = 55 %
    assert background_cpu_pct(start, end) == pytest.approx(55.0)


def test_two_cores_of_others_read_as_200_percent_and_none_as_zero() -> None:
    assert background_cpu_pct(CpuSnapshot(0.0, 0.0, {1: 0.0}), CpuSnapshot(1.0, 2.5, {1: 0.5})) == pytest.approx(200.0)
    # counters read a moment apart: ours may exceed the machine's by a tick; clamped at 0, never negative
    assert background_cpu_pct(CpuSnapshot(0.0, 0.0, {1: 0.0}), CpuSnapshot(1.0, 0.99, {1: 1.0})) == 0.0


def test_unknown_without_the_machines_counter_or_without_time() -> None:
    known = CpuSnapshot(0.0, 1.0, {})
    assert background_cpu_pct(CpuSnapshot(0.0, None), known) is None       # off Linux: unknown, not 0
    assert background_cpu_pct(known, CpuSnapshot(1.0, None)) is None
    assert background_cpu_pct(known, CpuSnapshot(0.0, 2.0, {})) is None    # no wall time passed


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")
def test_probe_reads_this_machine_and_our_own_process() -> None:
    probe = Probe()
    started = probe.start()
    snapshot, load_1m = started
    assert snapshot.busy_s is not None and snapshot.busy_s > 0 and os.getpid() in snapshot.own_s
    assert load_1m == pytest.approx(os.getloadavg()[0], abs=5.0)
    sum(range(2_000_000))   # some CPU of our own: not background
    columns = probe.columns(started)
    assert set(columns) == {"background_cpu_pct", "loadavg_1m"} and columns["background_cpu_pct"] >= 0.0


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc")
def test_a_child_process_is_ours_and_its_cpu_is_not_background() -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time\nwhile time.process_time() < 0.5: pass"])
    try:
        probe = Probe()
        started = probe.start()
        assert child.pid in process_tree(os.getpid()) and child.pid in started[0].own_s
        child.wait(timeout=30)
    finally:
        child.kill()
    # the child's 0.5 s of CPU is ours (reaped: in our children's time), so it adds nothing to the background
    end = probe.snapshot()
    own = sum(end.own_s.values()) - sum(v for p, v in started[0].own_s.items() if p != child.pid)
    assert own >= 0.45     # clock ticks (10 ms) round each of user and system time down


def test_run_file_keeps_the_first_jobs_load_at_start_and_the_runs_end(tmp_path: Path) -> None:
    def env(load_1m: float) -> dict:
        return {"tool": {"version": "x"}, "load": {"start": {"loadavg_1m": load_1m}}}

    provenance.record_run(tmp_path, env(0.5), {"a": {"cell_id": "a"}})
    provenance.record_run(tmp_path, env(3.0), {"b": {"cell_id": "b"}})   # a later job of the same run
    provenance.record_load_end(tmp_path, {"loadavg_1m": 1.25})
    data = json.loads((tmp_path / RUN_FILE).read_text())
    assert data["load"] == {"start": {"loadavg_1m": 0.5}, "end": {"loadavg_1m": 1.25}}
    assert set(data["cells"]) == {"a", "b"}
    provenance.record_run(tmp_path, env(9.0), {"c": {"cell_id": "c"}})   # and a job after the end keeps both
    assert json.loads((tmp_path / RUN_FILE).read_text())["load"]["end"] == {"loadavg_1m": 1.25}
    assert set(machine_load()) >= {"at", "loadavg_1m", "loadavg_5m", "loadavg_15m", "cpu_count"}


# ---------------------------------------------------------------- the analysis's flags


def _rows(preset: str, cell: str, background_pct: list[float | None], num_ctx: int | None = None) -> list[TrialRecord]:
    return [TrialRecord(sweep_id="s1", cell_id=cell, cell_hash=cell, preset=preset, model="m", backend="ollama",
                        base_url="http://127.0.0.1:11434", num_ctx=num_ctx, workload="w", prompt_id="0", trial=i,
                        warmup=False, status="ok", ttft_ms=100.0 + i, throughput_tok_s=50.0 + i,
                        background_cpu_pct=pct, loadavg_1m=None if pct is None else 0.5 + i)
            for i, pct in enumerate(background_pct)]


def _analysed(tmp_path: Path, *cells: list[TrialRecord]):
    import pyarrow.parquet as pq

    pq.write_table(to_table([r for rows in cells for r in rows]), tmp_path / "trials.parquet")
    loaded = load([tmp_path])
    return loaded, analyse(loaded.frame)


def test_busy_cells_and_uneven_pairs_are_named(tmp_path: Path) -> None:
    loaded, an = _analysed(
        tmp_path,
        _rows("baseline", "base", [2.0, 3.0, 4.0]),                          # mean 3: quiet
        _rows("chimera", "hog", [95.0, 100.0, 90.0], num_ctx=512),         # mean 95: above 20
        _rows("chimera", "uneven", [15.0, 16.0, 17.0], num_ctx=1024),      # mean 16: below 20, but 13 above base
    )
    label = dict(zip(an.cells["cell"].map(lambda c: "hog" if "512" in c else "uneven" if "1024" in c else "base"),
                     an.cells["cell"]))
    busy = background.busy_cells(an)
    assert [(c.label, c.pct) for c in busy] == [(label["hog"], pytest.approx(95.0))]
    pairs = {(a.label, b.label): (a.pct, b.pct) for a, b in background.uneven_pairs(an)}
    assert pairs == {(label["base"], label["hog"]): (pytest.approx(3.0), pytest.approx(95.0)),
                     (label["base"], label["uneven"]): (pytest.approx(3.0), pytest.approx(16.0))}
    warnings = background.lines(an, limit=5)
    assert len(warnings) == 2
    assert warnings[0].startswith(f"1 cell(s) ran while other processes used more than {BACKGROUND_CPU_FLAG_PCT:g} %")
    assert f"{label['hog']} (95 %)" in warnings[0] and label["uneven"] not in warnings[0]
    assert f"{label['base']} (3 %) vs {label['uneven']} (16 %)" in warnings[1]
    summary = [ln for ln in brief.summary_lines(loaded, an) if ln.startswith("warning: ")]
    assert summary == [f"warning: {w}" for w in warnings]             # the terminal summary says the same
    fact = background.fact(loaded.frame, an)
    assert "3.0 – 95.0 % of a core" in fact and "load average at the calls' start 0.50 – 2.50" in fact


def test_a_pair_within_the_gap_and_cells_under_the_threshold_are_not_flagged(tmp_path: Path) -> None:
    _, an = _analysed(tmp_path, _rows("baseline", "base", [5.0, 5.0]), _rows("chimera", "c", [12.0, 14.0], 512))
    # means 5 and 13: both under 20 %, 8 points apart (gap 10): nothing to say
    assert background.busy_cells(an) == [] and background.uneven_pairs(an) == [] and background.lines(an) == []
    assert background.recorded(an)


def test_a_sweep_without_the_columns_analyses_and_says_load_was_not_recorded(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    table = to_table(_rows("baseline", "base", [None, None]) + _rows("chimera", "c", [None, None], 512))
    old = table.drop_columns(["background_cpu_pct", "loadavg_1m"])      # a sweep made before the columns
    pq.write_table(old, tmp_path / "trials.parquet")
    loaded = load([tmp_path])
    report = build(loaded, figures=False, out_dir=tmp_path / "_report")
    an = report.analysis
    assert not background.recorded(an) and background.lines(an) == []
    assert "**Background load**: not recorded" in report.markdown
    assert not any("background" in ln for ln in brief.summary_lines(loaded, an))


def test_one_cell_in_two_datasets_is_a_compared_pair(tmp_path: Path) -> None:
    """``python -m analysis OLD NEW`` sets each cell beside itself: a load that differs between the runs is named."""
    import pyarrow.parquet as pq

    for sweep, pct in (("old", [1.0, 2.0, 3.0]), ("new", [40.0, 42.0, 44.0])):
        (tmp_path / sweep).mkdir()
        rows = [dataclasses.replace(r, sweep_id=sweep) for r in _rows("chimera", "c", pct, 512)]
        pq.write_table(to_table(rows), tmp_path / sweep / "trials.parquet")
    loaded = load([tmp_path / "old", tmp_path / "new"])
    an = analyse(loaded.frame)
    assert an.multi_dataset
    [(quiet, busy)] = background.uneven_pairs(an)
    assert (quiet.pct, busy.pct) == (pytest.approx(2.0), pytest.approx(42.0))
    assert quiet.label.endswith("[old]") and busy.label.endswith("[new]")
    assert [c.label for c in background.busy_cells(an)] == [busy.label]
