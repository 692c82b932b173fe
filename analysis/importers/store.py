"""Keep a folder's conversion (``<folder>/_imported/`` or ``--import-to DIR``), so it is done once.

The kept copy is the trial rows as Parquet (``trials.parquet``, our schema) and a
manifest (``manifest.json``) listing every harness file it was made from with its size
and modification time, plus the problems and disagreements found.  A later run reuses
it while that list is unchanged; a file added, removed or rewritten converts again.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.importers.common import Difference
from analysis.importers.folder import Converted, convert, harness_files
from sweep.contract import read_whole

IMPORT_DIR = "_imported"
TRIALS_FILE = "trials.parquet"
MANIFEST_FILE = "manifest.json"
# Bump when a conversion changes its rows: older kept copies are then converted again.
VERSION = 1


@dataclasses.dataclass
class Imported(Converted):
    """A conversion and where it is kept (``None``: it could not be written)."""

    kept_in: Path | None = None
    reused: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)


def kept_dir(root: Path, import_to: Path | None) -> Path:
    """``<root>/_imported`` by default; ``<DIR>/<root name>`` with ``--import-to DIR``."""
    return import_to / root.resolve().name if import_to is not None else root / IMPORT_DIR


def _listing(root: Path, files: list[Path]) -> list[list[Any]]:
    out = []
    for f in files:
        st = f.stat()
        out.append([f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    return out


def _reuse(where: Path, listing: list[list[Any]]) -> Imported | None:
    try:
        manifest = json.loads((where / MANIFEST_FILE).read_text())
        if manifest.get("version") != VERSION or manifest.get("files") != listing:
            return None
        table = read_whole(where / TRIALS_FILE)
    except (OSError, ValueError, pa.ArrowException):
        return None
    diffs = [Difference(**d) for d in manifest.get("differences", [])]
    return Imported(table, manifest.get("problems", []), diffs, manifest.get("rows_by_harness", {}),
                    manifest.get("imported_files", 0), manifest.get("provenance", []), where, True)


def _keep(where: Path, conv: Converted, listing: list[list[Any]]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    tmp = where / (TRIALS_FILE + ".tmp")
    pq.write_table(conv.table, tmp)
    os.replace(tmp, where / TRIALS_FILE)
    manifest = {"version": VERSION, "files": listing, "problems": conv.problems,
                "differences": [dataclasses.asdict(d) for d in conv.differences],
                "rows_by_harness": conv.rows_by_harness, "imported_files": conv.files,
                "provenance": conv.provenance}
    (where / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def import_folder(root: Path, import_to: Path | None = None) -> Imported:
    """The folder's trial rows: the kept conversion when its files are unchanged, else a new one (then kept)."""
    files = harness_files(root)
    listing = _listing(root, files)
    where = kept_dir(root, import_to)
    if (kept := _reuse(where, listing)) is not None:
        return kept
    conv = convert(root, files)
    out = Imported(**{f.name: getattr(conv, f.name) for f in dataclasses.fields(Converted)})
    if conv.table.num_rows:
        try:
            _keep(where, conv, listing)
            out.kept_in = where
        except OSError as exc:
            out.warnings.append(f"cannot keep the conversion in {where} ({exc.strerror or exc}): "
                                f"pass --import-to DIR to keep it elsewhere")
    return out
