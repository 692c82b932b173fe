"""Trial rows on disk, append-only: a cell is a directory of Parquet parts.

``<sweep>/<cell>.parquet/`` holds ``part-<first>-<last>.parquet`` files.  Each
flush (one per trial) writes the new rows as a new part (temp file + fsync +
rename), so its cost does not grow with the cell, a crash or SIGKILL loses at
most the trial in flight, and a reader never sees half a file.  Nothing
already written is rewritten, except that parts are merged as they accumulate
(:class:`PartLog`): every ``FANOUT`` parts of one level become one part of the
next level, and a run's parts become one part when the cell ends, so a
finished run of a cell is one file and a cell of 10,000 trials never holds
more than a few dozen.  A merged part is named by the range of parts it
covers, and the reader skips parts that a larger one covers
(:func:`sweep.contract.trial_files`), so even the instant between writing a
merged part and deleting what it covers reads as one consistent dataset.

Everything that is not trial data in a sweep directory starts with ``_`` (temp
files with ``.``), so ``pandas.read_parquet(sweep_dir)``, DuckDB and Polars
read only trials; every part carries the run's provenance as Parquet metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.plan import ConfigError
from sweep.records import TrialRecord, to_table

PROVENANCE_KEY = b"chimera.provenance"


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


def read_whole(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file through one open handle.

    Why: reading by path opens the file more than once (footer, then pages); a
    writer's atomic rename in between hands the reader two versions, and it
    fails with "page was smaller than expected".  One handle pins one inode.  It is
    Arrow's own file, not Python's ``open``: Arrow's reader threads calling back
    into a Python file aborted the interpreter at exit in about 1 run in 5.
    """
    with pa.OSFile(str(path), "rb") as handle:
        return pq.read_table(handle, columns=columns)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """An older file's rows in today's schema: columns added since then are null."""
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


# ---------------------------------------------------------------- parts

PART_PREFIX = "part-"
FANOUT = 16   # parts of one level merged into one part of the next
_PART = re.compile(r"^part-(\d{8})-(\d{8})\.parquet$")


def part_name(first: int, last: int) -> str:
    """A part covering flushes ``first``..``last`` (inclusive) of its cell."""
    return f"{PART_PREFIX}{first:08d}-{last:08d}.parquet"


def part_range(name: str) -> tuple[int, int] | None:
    """``(first, last)`` of a part's file name; None for any other file."""
    match = _PART.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def uncovered(paths: Sequence[Path]) -> list[Path]:
    """Drop the parts that a larger part in the same directory covers (a merge caught halfway)."""
    ranges: dict[Path, list[tuple[int, int]]] = {}
    for p in paths:
        r = part_range(p.name)
        if r:
            ranges.setdefault(p.parent, []).append(r)

    def covered(p: Path) -> bool:
        r = part_range(p.name)
        return r is not None and any(a <= r[0] and r[1] <= b and (a, b) != r for a, b in ranges[p.parent])

    return [p for p in paths if not covered(p)]


@dataclass
class _Part:
    first: int   # flush numbers covered
    last: int
    start: int   # rows of this run covered: [start, stop)
    stop: int
    level: int


class PartLog:
    """One directory of Parquet parts that only grows; this run's parts are merged as they accumulate.

    ``rows()`` gives the table of a row range of this run (the caller keeps the rows in
    memory), so merging re-reads nothing from disk.
    """

    def __init__(self, directory: Path, metadata: dict[bytes, bytes]) -> None:
        self.directory = directory
        self.metadata = metadata
        existing = [part_range(p.name) for p in directory.glob(f"{PART_PREFIX}*.parquet")] if directory.is_dir() else []
        self.next = max((r[1] for r in existing if r), default=-1) + 1
        self.parts: list[_Part] = []

    def _write(self, table: pa.Table, first: int, last: int) -> None:
        write_atomic(table.replace_schema_metadata(self.metadata), self.directory / part_name(first, last))

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
        self._write(rows(merged.start, merged.stop), merged.first, merged.last)
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
        _into_parts(path)
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
        self.records.append(record)
        return self.save()

    def _rows(self, start: int, stop: int) -> pa.Table:
        return to_table(self.records[start:stop])

    def table(self) -> pa.Table:
        """Every row of the cell: earlier runs' first, then this run's."""
        table = to_table(self.records)
        if self.previous is not None:
            table = pa.concat_tables([_conform(self.previous, table.schema), table])
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
                self.rescued = _rescue_path(self.path)
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


def _rescue_path(path: Path) -> Path:
    return Path(tempfile.gettempdir()) / "chimera-sweep-rescue" / path.parent.name / path.name


def _into_parts(path: Path) -> None:
    """A one-file cell (written before parts) becomes a directory holding that file as its first part.

    Two renames through a hidden staging directory; a crash between them is finished on the next open.
    """
    staging = path.with_name(f".{path.name}.parts")
    if path.is_file():   # in today's schema, so that every part of the directory has the same columns
        old = read_whole(path)
        write_atomic(_conform(old, to_table([]).schema).replace_schema_metadata(old.schema.metadata),
                     staging / part_name(0, 0))
        path.unlink()
    if staging.is_dir() and not path.exists():
        os.replace(staging, path)
        _fsync_dir(path.parent)


def read_cell(path: Path) -> pa.Table:
    """All rows of one cell (a directory of parts, or a one-file cell), in today's schema, oldest first."""
    files = uncovered(sorted(path.glob("*.parquet"))) if path.is_dir() else [path]
    schema = to_table([]).schema
    tables = [_conform(read_whole(f), schema) for f in files]
    return pa.concat_tables(tables) if tables else schema.empty_table()


class TraceStore:
    """Telemetry samples of one cell (``_telemetry/<cell>.parquet/``), appended as parts like its trials.

    Secondary data: if it cannot be written, the sweep says so and goes on
    measuring; the trial rows (with their telemetry aggregates) are what counts.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        _into_parts(path)
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


def cell_files(sweep_dir: Path) -> Sequence[Path]:
    return sorted(p for p in sweep_dir.glob("*.parquet") if not p.name.startswith(("_", ".")))


def trial_files(directory: Path) -> list[Path]:
    """The trial Parquet files under ``directory`` (anything under a ``_`` or ``.`` name skipped), covered parts dropped."""
    out = [p for p in sorted(directory.rglob("*.parquet"))
           if p.is_file() and not any(part.startswith(("_", ".")) for part in p.relative_to(directory).parts)]
    return uncovered(out)
