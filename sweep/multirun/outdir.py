"""The sweep directory at the two edges of a run: refused up front when a file holds its name, removed at the
end when the run made it and stored no trial in it.

Why: Hydra makes the directory (and its ``_hydra/`` files) before the first job, so a run stopped
before its first trial (an unreachable server, a missing model, Ctrl-C) used to leave a directory
of Hydra's files only, which looked like a sweep to anyone listing ``output_root``; and a file where
the directory should go ended in Hydra's ``FileExistsError`` traceback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sweep.contract import trial_files
from sweep.cells import ConfigError


def check_free(directory: Path) -> None:
    """Raise :class:`ConfigError` when something that is not a directory already has the sweep directory's path."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"the sweep directory {directory} exists and is not a directory: choose another "
                          "sweep_id= (or output_root=), or move that file away")


def holds_trials(directory: Path) -> bool:
    """True when any trial file (a cell's part, a one-file cell) is stored under ``directory``."""
    return directory.is_dir() and bool(trial_files(directory))


def drop_if_empty(directory: Path, existed: bool) -> bool:
    """Remove ``directory`` when this run created it (``existed`` is False) and no trial was stored in it.

    Only a directory this run made goes: one that was there before (a resume, a sweep id given
    twice) is never touched, whatever it holds.  Returns True when it was removed.
    """
    if existed or not directory.is_dir() or holds_trials(directory):
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return not directory.exists()
