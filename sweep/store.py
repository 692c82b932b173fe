"""Trial rows on disk, append-only: a cell is a directory of Parquet parts.

``<sweep>/<cell>.parquet/`` holds ``part-<first>-<last>.parquet`` files.  Each
flush (one per trial) writes the new rows as a new part (temp file + rename;
the fsync follows within a second, :mod:`sweep.syncs`), so its cost does not
grow with the cell, a crash or SIGKILL loses at most the trial in flight, and a
reader never sees half a file.  Nothing
already written is rewritten, except that parts are merged as they accumulate
(:class:`PartLog`): every ``FANOUT`` parts of one level become one part of the
next level, and a run's parts become one part when the cell ends, so a
finished run of a cell is one file and a cell of 10,000 trials never holds
more than a few dozen.  A merged part is named by the range of parts it
covers, and the reader skips parts that a larger one covers
(:func:`sweep.contract.trial_files`), so even the instant between writing a
merged part and deleting what it covers reads as one consistent dataset; a
merge cut short there by a crash is finished when the cell is next opened
(:func:`drop_covered`), after which plain Parquet readers see each row once too.

Everything that is not trial data in a sweep directory starts with ``_`` (temp
files with ``.``), so ``pandas.read_parquet(sweep_dir)``, DuckDB and Polars
read only trials; every part carries the run's provenance as Parquet metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.contract import (PART_PREFIX, PROVENANCE_KEY, SCHEMA, TrialRecord, conform, part_name, part_range,
                            read_cell, read_whole, to_table)
from sweep import syncs
from sweep.cells import ConfigError


_WRITABLE: set[Path] = set()   # directories this process has probed (a multirun's jobs share one)


def ensure_writable(directory: Path) -> None:
    """Fail before measuring if the output directory cannot take files (probed once per process).

    A directory that fails later (full disk) is caught where it happens: the
    cell's rows go to :func:`rescue_path`.
    """
    if directory in _WRITABLE:
        return
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
    _WRITABLE.add(directory)


def _replace_atomically(path: Path, write: Callable[[BinaryIO], None], durable: bool = False) -> None:
    """Write to a temp file beside ``path``, rename: the file appears whole or not at all.

    That is all a SIGKILL needs.  The fsync that makes it survive a power cut is
    owed and paid in the background within a second (:mod:`sweep.syncs`), or here,
    before the rename, when ``durable`` (a merge, before deleting what it covers).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        syncs.fsync_path(path.parent)
    else:
        syncs.owe(path)


def write_atomic(table: pa.Table, path: Path, durable: bool = False) -> None:
    """Write ``table`` to ``path`` as Parquet, atomically (``durable``: fsynced before returning)."""
    _replace_atomically(path, lambda handle: pq.write_table(table, handle, compression="zstd"), durable)


def write_text_atomic(text: str, path: Path) -> None:
    """A text file, atomically (the same temp + rename as the trials)."""
    data = text.encode("utf-8")
    _replace_atomically(path, lambda handle: handle.write(data))


def write_json_atomic(obj: Any, path: Path) -> None:
    """A JSON file, atomically (the same temp + rename as the trials)."""
    write_text_atomic(json.dumps(obj, indent=2, default=str), path)


class SweepDirLost(RuntimeError):
    """Trials had to be rescued outside the sweep directory: the sweep must not end as a success."""

    def __init__(self, sweep_dir: Path, rescued: list[Path]) -> None:
        where = ", ".join(map(str, rescued))
        super().__init__(f"could not write to {sweep_dir}: the trials of {len(rescued)} cell(s) were saved to "
                         f"{where}; copy them into a writable sweep directory (or pass the files to "
                         f"python -m analysis) and resume there with resume=true")


def fail_if_rescued(sweep_dir: Path, stores: list[CellStore]) -> None:
    """Raise :class:`SweepDirLost` when any cell's trials went to its rescue path."""
    rescued = [s.rescued for s in stores if s.rescued is not None]
    if rescued:
        raise SweepDirLost(sweep_dir, rescued)


def rescue_path(path: Path, sweep_id: str | None) -> Path:
    """Where a cell's rows go when its directory fails mid-sweep: per sweep id, so two sweeps never mix."""
    return Path(tempfile.gettempdir()) / "chimera-sweep-rescue" / (sweep_id or path.parent.name) / path.name


# ---------------------------------------------------------------- parts

FANOUT = 16   # parts of one level merged into one part of the next


@dataclass
class _Part:
    first: int   # flush numbers covered
    last: int
    start: int   # rows of this run covered: [start, stop)
    stop: int
    level: int


def drop_covered(directory: Path) -> list[tuple[int, int]]:
    """Finish a merge cut short: delete the parts that a merged part covers; the ranges of the parts left.

    A merge writes the merged part, then deletes the parts it covers; a SIGKILL in
    between leaves both.  The contract's reader skips the covered ones, but a plain
    ``pandas.read_parquet(<sweep>)`` would read their rows twice, so opening the cell
    (to write, resume or plan) deletes them.  Safe whoever else has the cell open:
    a covered part's rows are all in the part that covers it, and a writer deletes
    its covered parts with ``missing_ok``.  Best effort: a read-only directory stays
    as it is (and still reads right through the contract).
    """
    ranges = sorted(r for p in directory.glob(f"{PART_PREFIX}*.parquet") if (r := part_range(p.name))) \
        if directory.is_dir() else []
    kept = []
    for r in ranges:
        if any(a <= r[0] and r[1] <= b and (a, b) != r for a, b in ranges):
            try:
                (directory / part_name(*r)).unlink(missing_ok=True)
                continue
            except OSError:
                pass
        kept.append(r)
    return kept


class PartLog:
    """One directory of Parquet parts that only grows; this run's parts are merged as they accumulate.

    ``rows()`` gives the table of a row range of this run (the caller keeps the rows in
    memory), so merging re-reads nothing from disk.
    """

    def __init__(self, directory: Path, metadata: dict[bytes, bytes]) -> None:
        self.directory = directory
        self.metadata = metadata
        existing = drop_covered(directory)
        self.next = max((r[1] for r in existing), default=-1) + 1
        self.parts: list[_Part] = []

    def _write(self, table: pa.Table, first: int, last: int, durable: bool = False) -> None:
        write_atomic(table.replace_schema_metadata(self.metadata), self.directory / part_name(first, last), durable)

    def flush(self, start: int, stop: int, rows: Callable[[int, int], pa.Table]) -> None:
        """Write rows ``[start, stop)`` of this run as a new part (raises if that fails), then merge full levels."""
        self._write(rows(start, stop), self.next, self.next)
        self.parts.append(_Part(self.next, self.next, start, stop, 0))
        self.next += 1
        try:
            while len(self.parts) >= FANOUT and len({p.level for p in self.parts[-FANOUT:]}) == 1:
                self._merge(len(self.parts) - FANOUT, rows)
        except OSError as exc:   # the rows are safe in their parts; merging waits for the next flush
            print(f"could not merge parts in {self.directory} ({exc.strerror or exc})", flush=True)

    def _merge(self, since: int, rows: Callable[[int, int], pa.Table]) -> None:
        """The parts from index ``since`` on become one part of the next level."""
        group = self.parts[since:]
        if len(group) < 2:
            return
        merged = _Part(group[0].first, group[-1].last, group[0].start, group[-1].stop,
                       max(p.level for p in group) + 1)
        self._write(rows(merged.start, merged.stop), merged.first, merged.last, durable=True)
        for p in group:   # the reader already skips these: the merged part covers them
            (self.directory / part_name(p.first, p.last)).unlink(missing_ok=True)
        self.parts[since:] = [merged]

    def close(self, rows: Callable[[int, int], pa.Table]) -> None:
        """The run is over: its parts become one."""
        self._merge(0, rows)


class CellStore:
    """The rows of one cell: earlier runs' rows (for resume), and this run's, flushed after each trial.

    ``path`` is the cell's directory of parts (``<sweep>/<cell>.parquet``).  A cell
    written before parts existed is one file at that path: it is moved into the
    directory as its first part when the cell is opened for more trials.
    """

    def __init__(self, path: Path, provenance: dict[str, Any] | None = None) -> None:
        self.path = path
        self.provenance = provenance or {}
        _into_parts(path, SCHEMA)
        previous = read_cell(path) if path.is_dir() else None
        self.previous: pa.Table | None = previous if previous is not None and previous.num_rows else None
        self.records: list[TrialRecord] = []
        self.flushed = 0
        self.log = PartLog(path, {PROVENANCE_KEY: json.dumps(self.provenance, default=str).encode()})
        self.rescued: Path | None = None

    def previous_rows(self) -> list[dict[str, Any]]:
        return self.previous.to_pylist() if self.previous is not None else []

    def append(self, record: TrialRecord) -> Path:
        """Add a record and persist it; returns where it landed."""
        return self.extend([record])

    def extend(self, records: Sequence[TrialRecord]) -> Path:
        """Add records and persist them together (one part); returns where they landed."""
        self.records.extend(records)
        return self.save()

    def _rows(self, start: int, stop: int) -> pa.Table:
        return to_table(self.records[start:stop])

    def table(self) -> pa.Table:
        """Every row of the cell: earlier runs' first, then this run's."""
        table = to_table(self.records)
        if self.previous is not None:
            table = pa.concat_tables([conform(self.previous, table.schema), table])
        metadata = {PROVENANCE_KEY: json.dumps(self.provenance, default=str).encode()}
        return table.replace_schema_metadata(metadata)

    def save(self) -> Path:
        """Flush the rows not yet on disk as a new part; if the directory fails, rescue the cell to a temp path."""
        if self.rescued is None and self.flushed < len(self.records):
            try:
                self.log.flush(self.flushed, len(self.records), self._rows)
                self.flushed = len(self.records)
                return self.path
            except OSError as exc:
                self.rescued = rescue_path(self.path, self.provenance.get("sweep_id"))
                print(f"could not write {self.path} ({exc.strerror or exc}); trials saved to {self.rescued}",
                      flush=True)
        if self.rescued is None:
            return self.path
        write_atomic(self.table(), self.rescued)
        return self.rescued

    def close(self) -> None:
        """The cell's run is over: merge its parts into one file."""
        if self.rescued is None and self.log.parts:
            try:
                self.log.close(self._rows)
            except OSError as exc:   # the parts stay as they are: still one consistent dataset
                print(f"could not merge the parts of {self.path} ({exc.strerror or exc})", flush=True)


def _into_parts(path: Path, schema: pa.Schema) -> None:
    """A one-file cell (written before parts) becomes a directory holding that file as its first part.

    Two renames through a hidden staging directory; a crash between them is finished on the next open.
    """
    staging = path.with_name(f".{path.name}.parts")
    if path.is_file():   # in today's schema, so that every part of the directory has the same columns
        old = read_whole(path)
        write_atomic(conform(old, schema).replace_schema_metadata(old.schema.metadata),
                     staging / part_name(0, 0), durable=True)
        path.unlink()
    if staging.is_dir() and not path.exists():
        os.replace(staging, path)
        syncs.fsync_path(path.parent)


class TraceStore:
    """Telemetry samples of one cell (``_telemetry/<cell>.parquet/``), appended as parts like its trials.

    Secondary data: if it cannot be written, the sweep says so and goes on
    measuring; the trial rows (with their telemetry aggregates) are what counts.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        _into_parts(path, schema)
        self.tables: list[pa.Table] = []
        self.log = PartLog(path, {})
        self.broken = False

    def _rows(self, start: int, stop: int) -> pa.Table:
        return pa.concat_tables(self.tables[start:stop])

    def extend(self, rows: list[dict[str, Any]]) -> None:
        if self.broken or not rows:
            return
        self.tables.append(pa.Table.from_pylist(rows, schema=self.schema))
        try:
            self.log.flush(len(self.tables) - 1, len(self.tables), self._rows)
        except OSError as exc:
            self.broken = True
            print(f"telemetry samples not saved ({exc.strerror or exc}): {self.path}", flush=True)

    def close(self) -> None:
        if not self.broken and self.log.parts:
            try:
                self.log.close(self._rows)
            except OSError:
                self.broken = True
