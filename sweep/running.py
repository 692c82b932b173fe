"""Which cells of a sweep are being measured right now, across processes and launchers.

A cell is registered while one of its calls is in flight: it holds an exclusive
``flock`` on its own marker ``<sweep>/_running/<host>-<pid>-<cell hash>``, so
the kernel drops the registration of a process that dies and a crashed worker
never blocks or counts later.  Every registration and deregistration also
appends one line to an event log (``_running/.events``), all under one registry
lock (``_running/.lock``).  A call notes which markers are held and where the
log ends when it starts, and replays the log when it ends (atomically with its
own deregistration): ``concurrent_cells`` is the largest number of cells that
had a call in flight at any one moment during this call.

Why not "count the held markers at the call's start and at its end": a cell
whose call started and ended inside ours was never seen, and the two counts of
two overlapping calls could disagree (one row saying "alone" while another
cell was measured at the same time).  With the log, two cells whose calls
overlap both count each other, whatever the timing.

``flock`` is local to one machine (and unreliable on some network
filesystems): only this machine's markers and events count, which is right for
what the count is for, telling whether a trial shared its machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RUNNING_DIR = "_running"


@dataclass
class Presence:
    """One call's registration: the markers held and the end of the log when it started; ``peak`` once it ended."""

    name: str
    held: frozenset[str]
    offset: int
    peak: int | None = None


class Running:
    """The running-cells registry of one sweep directory, as seen from this machine.

    Calls of one cell that overlap inside one process (an agent workflow's parallel
    calls) share one marker, counted: the cell counts once.
    """

    def __init__(self, sweep_dir: Path) -> None:
        self.dir = sweep_dir / RUNNING_DIR
        self.host = socket.gethostname()
        self._mine: dict[str, list[int]] = {}   # marker name -> [its fd, calls in flight]

    @property
    def _events(self) -> Path:   # per host: a network filesystem shared by nodes never mixes their offsets
        return self.dir / f".events-{self.host}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The registry lock: markers, the log and the counts change and are read as one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / f".lock-{self.host}", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)   # closing drops the lock

    def _held(self) -> frozenset[str]:
        """This machine's markers whose lock someone holds; a dead process's marker is deleted (lock held)."""
        held = set()
        for name in os.listdir(self.dir):
            if not name.startswith(f"{self.host}-"):
                continue
            if name in self._mine:
                held.add(name)
                continue
            try:
                fd = os.open(self.dir / name, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                (self.dir / name).unlink(missing_ok=True)   # nobody holds it: its process died mid-call
            except BlockingIOError:
                held.add(name)
            finally:
                os.close(fd)
        return frozenset(held)

    def _log(self, line: str) -> None:
        fd = os.open(self._events, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)

    def _since(self, offset: int) -> list[str]:
        try:
            with open(self._events, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def enter(self, cell_hash: str) -> Presence:
        """Register one call of a cell; what was running and where the log ends are noted with it."""
        name = f"{self.host}-{os.getpid()}-{cell_hash}"
        with self._locked():
            mine = self._mine.get(name)
            if mine:
                mine[1] += 1
            else:
                fd = os.open(self.dir / name, os.O_CREAT | os.O_RDWR, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # ours alone: the name carries our pid
                except OSError:
                    os.close(fd)
                    raise
                self._mine[name] = [fd, 1]
                self._log(f"+{name}")
            held = self._held()
            offset = self._events.stat().st_size
        return Presence(name, held, offset)

    def leave(self, presence: Presence) -> int:
        """Deregister a call and set its ``peak``: the most cells in flight at once since it entered."""
        with self._locked():
            current = set(presence.held)
            peak = len(current)
            for line in self._since(presence.offset):
                if line[:1] == "+":
                    current.add(line[1:])
                    peak = max(peak, len(current))
                elif line[:1] == "-":
                    current.discard(line[1:])
            presence.peak = peak
            mine = self._mine[presence.name]
            mine[1] -= 1
            if mine[1] == 0:
                del self._mine[presence.name]
                self._log(f"-{presence.name}")
                (self.dir / presence.name).unlink(missing_ok=True)
                os.close(mine[0])
                if not self._held():   # nobody is in a call, so nobody holds an offset: start the log afresh
                    os.truncate(self._events, 0)
        return peak

    @contextlib.contextmanager
    def cell(self, cell_hash: str) -> Iterator[Presence]:
        """Mark a cell as running for the duration of the block; the presence's ``peak`` is set at its end.

        The registry only fills a column: when its directory becomes unusable (the
        sweep directory deleted or turned into a file mid-run), the call is measured
        anyway with ``peak`` None, so the store can rescue the trial instead of the
        sweep dying in the bookkeeping.
        """
        try:
            presence: Presence | None = self.enter(cell_hash)
        except OSError:
            presence = None
        if presence is None:
            yield Presence(f"{self.host}-{os.getpid()}-{cell_hash}", frozenset(), 0)
            return
        try:
            yield presence
        finally:
            self._leave_or_forget(presence)

    def _leave_or_forget(self, presence: Presence) -> None:
        """:meth:`leave`, or, if the registry is gone, drop our marker's lock and leave ``peak`` None."""
        try:
            self.leave(presence)
        except OSError:
            presence.peak = None
            mine = self._mine.pop(presence.name, None)
            if mine is not None:
                os.close(mine[0])

    def count(self) -> int:
        """Cells with a call in flight on this machine now."""
        with self._locked():
            return len(self._held())


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


def _try_lease(directory: Path, host: str) -> int | None:
    """The locked lease file of ``host`` (its fd; closing it lets go), or None when another job holds it."""
    fd = os.open(directory / hashlib.sha256(host.encode()).hexdigest()[:16], os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def lease_host(sweep_dir: Path, hosts: list[str], *, prefer: str | None = None, wait_s: float = 900.0,
               poll_s: float = 0.2) -> Iterator[str]:
    """A server of ``hosts`` that no other cell of this sweep on this machine is using; held for the block.

    The sweeper already refused more parallel cells than servers, so a free one
    exists or is about to (a finishing job releases its lock as it exits); the
    wait is only bounded against a stuck job.

    ``prefer`` (the server the cell's stored trials ran on, :mod:`sweep.backends.hosts`):
    only that one is taken, waiting for it while another cell holds it, so a
    cell's trials never mix two machines.  Waiting cannot deadlock: a job leases
    its server before anything else it waits for (:func:`own_cells` comes after),
    and a holder waits for nothing while it measures, so every holder finishes
    and lets go.  What waiting costs is time: a worker idles while another
    server may be free.  Only after ``wait_s`` (a stuck holder) does the cell
    take any free server; the caller sees the difference and says so.
    """
    directory = sweep_dir / LEASES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    home = prefer if prefer in hosts else None
    while True:
        waited = time.monotonic() - started
        for host in ([home] if home is not None and waited < wait_s else hosts):
            fd = _try_lease(directory, host)
            if fd is None:
                continue
            try:
                yield host
                return
            finally:
                os.close(fd)
        if waited > (wait_s if home is None else 2 * wait_s):
            raise TimeoutError(f"no free server among {', '.join(hosts)} after {waited:.0f} s")
        time.sleep(poll_s)
