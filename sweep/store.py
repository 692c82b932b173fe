"""Trial rows on disk: one Parquet file per cell, written atomically.

A cell's file is rewritten (temp file + fsync + rename) after every trial, so a
crash, a SIGKILL or a full disk loses at most the trial in flight, and a reader
never sees half a file.  Files only grow: a rewrite always holds every row the
previous version held.  Everything that is not trial data in a sweep directory
starts with ``_`` so that ``pandas.read_parquet(sweep_dir)`` reads only trials.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.contract import PROVENANCE_KEY, TrialRecord, conform, read_whole, to_table
from sweep.plan import ConfigError


def ensure_writable(directory: Path) -> None:
    """Fail before measuring if the output directory cannot take files."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix="_probe-", delete=True) as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise ConfigError(
            f"output directory '{directory}' is not writable ({exc.strerror or exc}): "
            "choose another with output_root=DIR"
        ) from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write to a temp file beside ``path``, fsync, rename: the file appears whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` as Parquet, atomically."""
    _replace_atomically(path, lambda handle: pq.write_table(table, handle, compression="zstd"))


def write_json_atomic(obj: Any, path: Path) -> None:
    """A JSON file, atomically (the same temp + fsync + rename as the trials)."""
    text = json.dumps(obj, indent=2, default=str).encode("utf-8")
    _replace_atomically(path, lambda handle: handle.write(text))


class CellStore:
    """The rows of one cell: loaded from an earlier run if there is one, saved after each trial."""

    def __init__(self, path: Path, provenance: dict[str, Any] | None = None) -> None:
        self.path = path
        self.provenance = provenance or {}
        self.previous: pa.Table | None = read_whole(path) if path.exists() else None
        self.records: list[TrialRecord] = []

    def previous_rows(self) -> list[dict[str, Any]]:
        return self.previous.to_pylist() if self.previous is not None else []

    def append(self, record: TrialRecord) -> Path:
        """Add a record and persist the whole cell; returns where it landed."""
        self.records.append(record)
        return self.save()

    def table(self) -> pa.Table:
        table = to_table(self.records)
        if self.previous is not None:
            table = pa.concat_tables([conform(self.previous, table.schema), table])
        metadata = {PROVENANCE_KEY: json.dumps(self.provenance, default=str).encode()}
        return table.replace_schema_metadata(metadata)

    def save(self) -> Path:
        """Atomic rewrite; if the directory fails mid-sweep, rescue to a temp path."""
        table = self.table()
        try:
            write_atomic(table, self.path)
            return self.path
        except OSError as exc:
            rescue = Path(tempfile.gettempdir()) / "chimera-sweep-rescue" / self.path.parent.name / self.path.name
            write_atomic(table, rescue)
            print(f"could not write {self.path} ({exc.strerror or exc}); trials saved to {rescue}", flush=True)
            return rescue


class TraceStore:
    """Telemetry samples of one cell (``_telemetry/<cell>.parquet``), rewritten atomically like its trials.

    Secondary data: if it cannot be written, the sweep says so and goes on
    measuring; the trial rows (with their telemetry aggregates) are what counts.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.tables: list[pa.Table] = [conform(read_whole(path), schema)] if path.exists() else []
        self.broken = False

    def extend(self, rows: list[dict[str, Any]]) -> None:
        if self.broken or not rows:
            return
        self.tables.append(pa.Table.from_pylist(rows, schema=self.schema))
        try:
            write_atomic(pa.concat_tables(self.tables), self.path)
        except OSError as exc:
            self.broken = True
            print(f"telemetry samples not saved ({exc.strerror or exc}): {self.path}", flush=True)
