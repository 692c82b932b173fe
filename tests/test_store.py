"""Trial storage on a real filesystem: whole files only, older schemas, rescue on a failing directory."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep import syncs
from sweep.cells import ConfigError
from sweep.contract import PROVENANCE_KEY, SCHEMA, TrialRecord, part_name, read_cell, read_whole, to_table, trial_files
from sweep import store as store_module
from sweep.store import FANOUT, CellStore, TraceStore, ensure_writable, write_atomic


def _record(trial: int) -> TrialRecord:
    return TrialRecord(sweep_id="s", cell_id="c", cell_hash="h", trial=trial, warmup=False, status="ok",
                       prompt_id="0", eval_count=10 + trial)


def test_rows_accumulate_and_carry_provenance(tmp_path: Path) -> None:
    store = CellStore(tmp_path / "cell.parquet", {"python": "3.x"})
    for trial in range(3):
        store.append(_record(trial))
    table = pq.read_table(tmp_path / "cell.parquet")
    assert table.column("eval_count").to_pylist() == [10, 11, 12]
    assert table.schema.remove_metadata() == SCHEMA
    assert json.loads(table.schema.metadata[PROVENANCE_KEY]) == {"python": "3.x"}
    assert [p.name for p in tmp_path.iterdir()] == ["cell.parquet"]  # no temp files left behind


def test_reopened_store_keeps_earlier_rows_first(tmp_path: Path) -> None:
    path = tmp_path / "cell.parquet"
    CellStore(path).append(_record(0))
    again = CellStore(path)
    again.append(_record(1))
    assert pq.read_table(path).column("trial").to_pylist() == [0, 1]


def test_file_from_an_older_schema_gains_null_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.parquet"
    pq.write_table(pa.table({"sweep_id": ["s"], "cell_hash": ["h"], "trial": [0], "warmup": [False],
                             "status": ["ok"], "prompt_id": ["0"], "throughput_tok_s": [42.0]}), path)
    store = CellStore(path)
    store.append(_record(1))
    table = pq.read_table(path)
    assert table.column("throughput_tok_s").to_pylist() == [42.0, None]
    assert table.column("gpu_energy_j").null_count == 2


def test_reading_some_columns_of_a_cell_gives_the_full_reads_rows_and_nulls_for_an_older_parts_gaps(
        tmp_path: Path) -> None:
    cell = tmp_path / "cell.parquet"
    cell.mkdir()
    # an older part: no eval_count column, trial stored as int32
    pq.write_table(pa.table({"cell_hash": ["h"], "trial": pa.array([0], pa.int32()), "status": ["ok"]}),
                   cell / part_name(0, 0))
    pq.write_table(to_table([_record(1), _record(2)]).replace_schema_metadata({PROVENANCE_KEY: b"{}"}),
                   cell / part_name(1, 1))
    some = read_cell(cell, columns=["trial", "eval_count"])
    assert some.schema == pa.schema([SCHEMA.field("trial"), SCHEMA.field("eval_count")])
    assert some.to_pylist() == read_cell(cell).select(["trial", "eval_count"]).to_pylist() == [
        {"trial": 0, "eval_count": None}, {"trial": 1, "eval_count": 11}, {"trial": 2, "eval_count": 12}]
    assert read_cell(cell / part_name(1, 1)).schema.metadata is None   # a part's own metadata stays with it


def test_failed_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "cell.parquet"
    write_atomic(to_table([_record(0)]), path)
    before = path.read_bytes()
    with pytest.raises((TypeError, AttributeError)):
        write_atomic("not a table", path)  # type: ignore[arg-type]  # fails after the temp file exists
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cell.parquet"]


def test_directory_lost_mid_sweep_rescues_the_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The sweep dir turning into something unwritable mid-sweep: the trials go to a printed rescue path."""
    sweep_dir = tmp_path / "sweep"
    store = CellStore(sweep_dir / "cell.parquet")
    store.append(_record(0))
    shutil.rmtree(sweep_dir)
    sweep_dir.write_text("not a directory any more")
    landed = store.append(_record(1))
    try:
        assert landed != sweep_dir / "cell.parquet"
        assert str(landed) in capsys.readouterr().out
        assert pq.read_table(landed).column("trial").to_pylist() == [0, 1]
    finally:
        landed.unlink(missing_ok=True)


def test_unwritable_output_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="output_root="):
        ensure_writable(blocker / "sweeps")


def test_trial_files_skip_underscore_and_dot_files(tmp_path: Path) -> None:
    for name in ("a.parquet", "_run.parquet", ".a.parquet.tmp.parquet", "b.parquet"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in trial_files(tmp_path)] == ["a.parquet", "b.parquet"]


def _while_rewritten(path: Path, read: Callable[[], Any], versions: int = 60,
                     deadline_s: float = 60.0) -> tuple[set[int], list[str]]:
    """Call ``read`` in a loop while another thread keeps replacing ``path`` atomically.

    Returns the versions the reads saw (version ``n`` has ``n`` rows, each ``"x" * n``) and the
    errors.  It stops once the reads have seen ``versions`` different versions, i.e. ``versions``
    reads each separated from the last by at least one rename: a count of interleavings, not a
    read rate, so a loaded machine makes it slower, never wrong; the deadline only bounds a hang.
    """
    stop = threading.Event()

    def writer() -> None:
        n = 1
        while not stop.is_set():
            write_atomic(pa.table({"trial": list(range(n)), "text": ["x" * n] * n}), path)
            n += 1

    write_atomic(pa.table({"trial": [0], "text": ["x"]}), path)
    thread = threading.Thread(target=writer)
    thread.start()
    seen: set[int] = set()
    errors: list[str] = []
    try:
        deadline = time.monotonic() + deadline_s
        while len(seen) < versions and time.monotonic() < deadline:
            try:
                table = read()
            except Exception as exc:   # what a reader of a live sweep would hit
                errors.append(str(exc))
                continue
            n = len(table)
            if list(table["trial"]) != list(range(n)) or set(table["text"]) != {"x" * n}:
                errors.append(f"version {n} read mixed with another version")
            seen.add(n)
    finally:
        stop.set()
        thread.join()
    return seen, errors


def test_reading_a_cell_that_is_being_rewritten_sees_a_whole_file(tmp_path: Path) -> None:
    """By path, pyarrow opens a file twice; a rename in between used to fail "page was smaller"."""
    path = tmp_path / "live.parquet"
    seen, errors = _while_rewritten(path, lambda: read_whole(path).to_pandas())
    assert errors == [] and len(seen) >= 60


def test_analysis_reads_a_live_sweep_consistently(tmp_path: Path) -> None:
    from analysis.load import _read_parquet_files

    path = tmp_path / "live.parquet"
    seen, errors = _while_rewritten(path, lambda: _read_parquet_files(path)[0])
    assert errors == [] and len(seen) >= 60


# ---------------------------------------------------------------- append-only parts


def _files(cell: Path) -> list[str]:
    return sorted(p.name for p in cell.iterdir())


def test_each_flush_is_a_new_part_and_the_end_of_a_run_merges_them(tmp_path: Path) -> None:
    cell = tmp_path / "cell.parquet"
    store = CellStore(cell, {"run": 1})
    for trial in range(3):
        store.append(_record(trial))
    assert _files(cell) == [part_name(i, i) for i in range(3)]      # nothing rewritten
    assert pd.read_parquet(tmp_path)["trial"].tolist() == [0, 1, 2]
    store.close()
    assert _files(cell) == [part_name(0, 2)]
    part = pq.read_table(cell / part_name(0, 2))
    assert part["trial"].to_pylist() == [0, 1, 2] and json.loads(part.schema.metadata[PROVENANCE_KEY]) == {"run": 1}


@pytest.mark.parametrize("fanout", [4, pytest.param(FANOUT, marks=pytest.mark.slow)])
def test_parts_merge_by_level_so_a_long_cell_stays_a_few_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               fanout: int) -> None:
    """The production fanout (16) takes 291 fsynced appends (~6 s): it runs with the slow tests, a
    fanout of 4 (27 appends, the same levels) in the fast ones."""
    monkeypatch.setattr(store_module, "FANOUT", fanout)
    FANOUT = fanout  # noqa: N806 — the same names as the module's, so the expected layout reads alike
    cell = tmp_path / "cell.parquet"
    store = CellStore(cell)
    n = FANOUT * FANOUT + 2 * FANOUT + 3        # two merges of merges, plus loose parts
    for trial in range(n):
        store.append(_record(trial))
        if trial % 37 == 0:   # at any moment, the directory reads as exactly the rows so far
            assert read_cell(cell)["trial"].to_pylist() == list(range(trial + 1))
    names = _files(cell)
    assert names == [part_name(0, FANOUT * FANOUT - 1),
                     part_name(FANOUT * FANOUT, FANOUT * FANOUT + FANOUT - 1),
                     part_name(FANOUT * FANOUT + FANOUT, FANOUT * FANOUT + 2 * FANOUT - 1)] + \
                    [part_name(i, i) for i in range(FANOUT * FANOUT + 2 * FANOUT, n)]
    assert pd.read_parquet(cell)["trial"].tolist() == list(range(n))


def test_a_merge_caught_halfway_reads_once(tmp_path: Path) -> None:
    """Killed after writing a merged part but before deleting what it covers: no row counted twice."""
    cell = tmp_path / "cell.parquet"
    for first, last in ((0, 0), (1, 1), (2, 2), (0, 1)):
        write_atomic(to_table([_record(t) for t in range(first, last + 1)]), cell / part_name(first, last))
    assert read_cell(cell)["trial"].to_pylist() == [0, 1, 2]
    assert [p.name for p in trial_files(tmp_path)] == [part_name(0, 1), part_name(2, 2)]


# A writer that dies (SIGKILL) right after the first unlink of a merge: the merged part is on disk, and some of
# the parts it covers are too.  The kill is real; only the moment is chosen, by wrapping Path.unlink.
_DIE_MID_MERGE = """
import os, signal, sys
from pathlib import Path
from sweep.store import CellStore
from tests.test_store import _record
unlink = Path.unlink
def unlink_then_die(self, missing_ok=False):
    unlink(self, missing_ok=missing_ok)
    if self.name.startswith("part-"):
        os.kill(os.getpid(), signal.SIGKILL)
Path.unlink = unlink_then_die
store = CellStore(Path(sys.argv[1]))
for trial in range(3):
    store.append(_record(trial))
store.close()
"""


def test_a_writer_killed_mid_merge_leaves_each_trial_once_for_every_reader_after_the_next_open(tmp_path: Path) -> None:
    import subprocess
    import sys

    cell = tmp_path / "cell.parquet"
    died = subprocess.run([sys.executable, "-c", _DIE_MID_MERGE, str(cell)], cwd=Path(__file__).parent.parent,
                          capture_output=True, text=True, timeout=120)
    assert died.returncode == -9, died.stderr
    assert _files(cell) == [part_name(0, 2), part_name(1, 1), part_name(2, 2)]   # the crash point, for real
    assert sorted(pd.read_parquet(tmp_path)["trial"]) == [0, 1, 1, 2, 2]         # what a plain reader sees now
    assert read_cell(cell)["trial"].to_pylist() == [0, 1, 2]                      # the contract's reader: once each
    resumed = CellStore(cell)                                                     # the next open (resume, plan)
    assert [r["trial"] for r in resumed.previous_rows()] == [0, 1, 2]
    assert _files(cell) == [part_name(0, 2)]
    assert pd.read_parquet(tmp_path)["trial"].tolist() == [0, 1, 2]
    resumed.append(_record(3))
    resumed.close()
    assert _files(cell) == [part_name(0, 2), part_name(3, 3)]
    assert pd.read_parquet(tmp_path)["trial"].tolist() == read_cell(cell)["trial"].to_pylist() == [0, 1, 2, 3]


def test_resume_appends_after_the_earlier_runs_parts(tmp_path: Path) -> None:
    cell = tmp_path / "cell.parquet"
    first = CellStore(cell)
    first.append(_record(0))
    first.append(_record(1))
    first.close()
    again = CellStore(cell)
    assert [r["trial"] for r in again.previous_rows()] == [0, 1]
    again.append(_record(2))
    assert _files(cell) == [part_name(0, 1), part_name(2, 2)]
    assert read_cell(cell)["trial"].to_pylist() == [0, 1, 2]


def test_a_one_file_cell_from_before_parts_becomes_the_first_part(tmp_path: Path) -> None:
    cell = tmp_path / "cell.parquet"
    write_atomic(to_table([_record(0)]).replace_schema_metadata({PROVENANCE_KEY: b'{"old": true}'}), cell)
    store = CellStore(cell)
    store.append(_record(1))
    assert _files(cell) == [part_name(0, 0), part_name(1, 1)]
    assert json.loads(pq.read_table(cell / part_name(0, 0)).schema.metadata[PROVENANCE_KEY]) == {"old": True}
    assert pd.read_parquet(tmp_path)["trial"].tolist() == [0, 1]


def test_pandas_duckdb_and_polars_read_the_sweep_directory_alike(tmp_path: Path) -> None:
    import duckdb
    import polars as pl

    for name, trials in (("a.parquet", 3), ("b.parquet", 2)):
        store = CellStore(tmp_path / name)
        for trial in range(trials):
            store.append(_record(trial))
        if name == "a.parquet":
            store.close()   # one cell finished (merged), one still as parts
    TraceStore(tmp_path / "_telemetry" / "a.parquet", pa.schema([("t_s", pa.float64())])).extend([{"t_s": 0.1}])
    (tmp_path / "_run.json").write_text("{}")
    expected = sorted([0, 1, 2, 0, 1])
    assert sorted(pd.read_parquet(tmp_path)["trial"]) == expected
    assert sorted(pl.read_parquet(f"{tmp_path}/*.parquet/*.parquet")["trial"].to_list()) == expected
    rows = duckdb.sql(f"select trial from read_parquet('{tmp_path}/*.parquet/*.parquet')").fetchall()
    assert sorted(r[0] for r in rows) == expected


def test_rows_kept_together_are_one_part(tmp_path: Path) -> None:
    """A concurrent run's rows (N agents) are flushed at once: one part, not N."""
    cell = tmp_path / "cell.parquet"
    store = CellStore(cell)
    store.extend([_record(0), _record(1)])
    store.append(_record(2))
    assert _files(cell) == [part_name(0, 0), part_name(1, 1)]
    assert pq.read_table(cell / part_name(0, 0))["trial"].to_pylist() == [0, 1]
    store.close()
    assert read_cell(cell)["trial"].to_pylist() == [0, 1, 2]


def test_store_benchmark_runs_at_tiny_size(tmp_path: Path) -> None:
    """``python -m benchmarks store --tiny``: a smoke test of the figures, not a measurement."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks", "store", "--tiny", "--out", str(out)], cwd=root,
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(root)))
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    for key in ("parts_ms_first_10", "parts_ms_at_end", "parts_ms_mean", "rewrite_ms_at_10", "rewrite_ms_at_end",
                "read_ms_at_end"):
        assert figures[key] > 0, key
    assert figures["trials"] == 50 and figures["files_at_end"] == 50 // FANOUT + 50 % FANOUT   # 3 merged parts of 16 flushes, 2 loose ones


def test_a_stored_trial_owes_its_fsync_and_the_background_pays_it(tmp_path: Path) -> None:
    """Renamed into place at once (SIGKILL-safe), fsynced within about SYNC_S (power cut), not on the spot."""
    store = CellStore(tmp_path / "cell.parquet")
    with syncs._paying:   # the payer, woken by an earlier test's write, must not pay it before we look
        store.append(_record(0))
        (part,) = (tmp_path / "cell.parquet").iterdir()
        assert str(part) in syncs.owed()
    deadline = time.monotonic() + syncs.SYNC_S + 30   # generous: a loaded machine delays the payer thread
    while str(part) in syncs.owed() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert str(part) not in syncs.owed()


def test_a_merge_is_on_disk_before_the_parts_it_covers_go(tmp_path: Path) -> None:
    store = CellStore(tmp_path / "cell.parquet")
    store.append(_record(0))
    store.append(_record(1))
    syncs.pay()
    store.close()                      # the two parts become one, fsynced before they are deleted
    (merged,) = (tmp_path / "cell.parquet").iterdir()
    assert merged.name == part_name(0, 1) and str(merged) not in syncs.owed()


def test_an_empty_part_left_by_a_power_cut_reads_as_no_rows(tmp_path: Path) -> None:
    store = CellStore(tmp_path / "cell.parquet")
    store.append(_record(0))
    (tmp_path / "cell.parquet" / part_name(1, 1)).write_bytes(b"")   # its data never reached the disk
    assert read_cell(tmp_path / "cell.parquet").column("trial").to_pylist() == [0]
