"""The fsyncs owed by the atomic writes of :mod:`sweep.store`, paid together in the background.

A stored trial must survive a SIGKILL of the sweep: for that, writing it to a
temp file and renaming it into place is enough, the kernel keeps the data.  An
fsync adds survival of a power cut or a kernel crash, at 8–16 ms each on this
2-core machine (a journal commit for the file, another for its directory).
Paid on the spot for every trial part, telemetry part and run file, that was
more than all the rest of a cell's overhead against a fast server.  So a write
*owes* its fsync (:func:`owe`), and a background thread pays what was owed
during the last :data:`SYNC_S` in one go, files first, then their directories:
a trial is safe from SIGKILL the moment it is stored, as before, and on disk
within about ``SYNC_S`` against a power cut (which may leave the last second's
parts empty: readers skip empty parts).  With trials of a second or more, as
against a real model, that is one fsync per trial as before, off the measuring
path.  Everything owed is paid at exit; merges stay synchronous (the merged
part is on disk before the parts it covers are deleted).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path

SYNC_S = 1.0   # the longest a stored row waits for its fsync (power-cut safety)

_lock = threading.Lock()       # guards the owed paths and the thread handle
_paying = threading.Lock()     # one payment at a time: exit waits for the one under way
_files: dict[str, None] = {}   # ordered sets
_dirs: dict[str, None] = {}
_due = threading.Event()
_thread: threading.Thread | None = None


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory by name; one deleted meanwhile (a merged part) needs nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass   # a file system that cannot fsync a directory: nothing more to do
    finally:
        os.close(fd)


def owe(path: Path) -> None:
    """``path`` was just renamed into place: fsync it and its directory within :data:`SYNC_S`."""
    global _thread
    with _lock:
        _files[str(path)] = None
        _dirs[str(path.parent)] = None
        if _thread is None:
            _thread = threading.Thread(target=_pay_every, name="chimera-sweep-fsync", daemon=True)
            _thread.start()
    _due.set()


def owed() -> list[str]:
    """The files whose fsync is still owed (for tests and the curious)."""
    with _lock:
        return list(_files)


def pay() -> None:
    """fsync everything owed now: the files, then the directories that name them."""
    with _paying:
        with _lock:
            files, dirs = list(_files), list(_dirs)
            _files.clear()
            _dirs.clear()
        for path in files + dirs:
            fsync_path(path)


def _pay_every() -> None:
    while True:
        _due.wait()
        time.sleep(SYNC_S)   # gather what the next SYNC_S writes too
        _due.clear()
        pay()


def _forget_in_child() -> None:
    """A forked child owes nothing (its parent pays) and has no payer thread yet."""
    global _lock, _paying, _due, _thread
    _lock, _paying, _due, _thread = threading.Lock(), threading.Lock(), threading.Event(), None
    _files.clear()
    _dirs.clear()


atexit.register(pay)
os.register_at_fork(after_in_child=_forget_in_child)
