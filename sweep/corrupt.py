"""Unreadable trial parts found by a resume: moved aside to ``_corrupt/``, their trials measured again.

Why: one damaged Parquet part (a disk error, a file cut by hand) made ``resume=true`` stop
with a traceback, and the only way on was deleting files by hand.  A resume knows which
trials it still needs from what it can read, so a part that cannot be read is moved out
of the way (kept, under the ``_`` name every reader skips, at the same relative path) and
its trials are simply missing: the resume measures exactly those again, nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from sweep.contract import CORRUPT_DIR, read_whole, trial_files


def unreadable_parts(sweep_dir: Path) -> list[Path]:
    """The trial files under ``sweep_dir`` that cannot be read whole (empty files are fine: no rows yet)."""
    bad = []
    for path in trial_files(sweep_dir) if sweep_dir.is_dir() else []:
        try:
            if path.stat().st_size:
                read_whole(path)
        except FileNotFoundError:   # merged away meanwhile: its rows are in the part that covers it
            continue
        except (OSError, pa.ArrowException):
            bad.append(path)
    return bad


def set_aside(sweep_dir: Path, say: Callable[[str], None]) -> list[Path]:
    """Move every unreadable part to ``<sweep>/_corrupt/<same relative path>``, one line each; their new paths."""
    moved = []
    for path in unreadable_parts(sweep_dir):
        relative = path.relative_to(sweep_dir)
        target = sweep_dir / CORRUPT_DIR / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved.append(target)
        say(f"unreadable part moved aside to {CORRUPT_DIR}/: {relative} (the resume measures its trials again)")
    return moved
