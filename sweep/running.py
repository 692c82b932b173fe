"""Which cells of a sweep are being measured right now, across processes and launchers.

Each cell being measured holds an exclusive ``flock`` on its own file in
``<sweep>/_running/``; the number of held locks is the number of cells running
at once.  The kernel drops the lock of a process that dies, so a crashed
worker never counts, and no clock or PID is compared.  ``flock`` is local to
one machine (and unreliable on some network filesystems): cells on other nodes
of a Ray or SLURM cluster are not seen, which is right for what the count is
for, telling whether a trial shared its machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

RUNNING_DIR = "_running"


class Running:
    """The running-cells registry of one sweep directory."""

    def __init__(self, sweep_dir: Path) -> None:
        self.dir = sweep_dir / RUNNING_DIR

    @contextlib.contextmanager
    def cell(self, cell_hash: str) -> Iterator[None]:
        """Mark a cell as running for the duration of the block."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{socket.gethostname()}-{os.getpid()}-{cell_hash}"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)   # closing drops the lock

    def count(self) -> int:
        """Cells running now (this one included): files whose lock someone holds."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return 0
        held = 0
        for name in names:
            try:
                fd = os.open(self.dir / name, os.O_RDONLY)
            except OSError:
                continue   # finished between listdir and open
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                held += 1
            finally:
                os.close(fd)
        return held


LEASES_DIR = "_leases"


@contextlib.contextmanager
def own_cells(sweep_dir: Path, cell_hashes: list[str], *, wait_s: float = 60.0,
              poll_s: float = 0.2) -> Iterator[None]:
    """Hold the cells of this job so no other process writes them at the same time.

    Why: a worker orphaned by a crashed driver (Ray) may still be finishing a cell
    when ``resume=true`` starts it again; two writers of one cell would measure a
    trial twice and could clash on part names.  A resume waits (bounded) for the
    other writer, then reads what it stored.  Lock files are never deleted: deleting
    one while another process waits on it would let two processes hold "the" lock.
    """
    directory = sweep_dir / LEASES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    fds: list[int] = []
    try:
        for cell_hash in cell_hashes:
            fd = os.open(directory / f"cell-{cell_hash}", os.O_CREAT | os.O_RDWR, 0o644)
            fds.append(fd)
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"cell {cell_hash} is still being measured by another process of this "
                                           f"sweep after {wait_s:.0f} s: let it finish (or stop it), then resume")
                    time.sleep(poll_s)
        yield
    finally:
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def lease_host(sweep_dir: Path, hosts: list[str], *, wait_s: float = 900.0, poll_s: float = 0.2) -> Iterator[str]:
    """A server of ``hosts`` that no other cell of this sweep on this machine is using; held for the block.

    The sweeper already refused more parallel cells than servers, so a free one
    exists or is about to (a finishing job releases its lock as it exits); the
    wait is only bounded against a stuck job.
    """
    directory = sweep_dir / LEASES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for host in hosts:
            path = directory / hashlib.sha256(host.encode()).hexdigest()[:16]
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield host
                return
            finally:
                os.close(fd)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free server among {', '.join(hosts)} after {wait_s:.0f} s")
        time.sleep(poll_s)
