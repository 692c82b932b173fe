"""Trial storage on a real filesystem: whole files only, older schemas, rescue on a failing directory."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep.plan import ConfigError
from sweep.contract import PROVENANCE_KEY, SCHEMA, TrialRecord, read_whole, trial_files
from sweep.store import CellStore, ensure_writable, write_atomic


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


def test_failed_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "cell.parquet"
    CellStore(path).append(_record(0))
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


def _while_rewritten(path: Path, read, seconds: float = 1.0) -> tuple[int, list[str]]:
    """Call ``read`` in a loop while another thread keeps replacing ``path`` atomically."""
    stop = threading.Event()

    def writer() -> None:
        n = 1
        while not stop.is_set():
            write_atomic(pa.table({"trial": list(range(n)), "text": ["x" * n] * n}), path)
            n += 1

    write_atomic(pa.table({"trial": [0], "text": ["x"]}), path)
    thread = threading.Thread(target=writer)
    thread.start()
    reads, errors = 0, []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                read()
                reads += 1
            except Exception as exc:   # what a reader of a live sweep would hit
                errors.append(str(exc))
    finally:
        stop.set()
        thread.join()
    return reads, errors


def test_reading_a_cell_that_is_being_rewritten_sees_a_whole_file(tmp_path: Path) -> None:
    """By path, pyarrow opens a file twice; a rename in between used to fail "page was smaller"."""
    path = tmp_path / "live.parquet"
    reads, errors = _while_rewritten(path, lambda: read_whole(path))
    assert reads > 50 and errors == []


def test_analysis_reads_a_live_sweep_consistently(tmp_path: Path) -> None:
    from analysis.load import _read_parquet_files

    path = tmp_path / "live.parquet"
    reads, errors = _while_rewritten(path, lambda: _read_parquet_files([path]))
    assert reads > 20 and errors == []
