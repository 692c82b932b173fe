"""Which server a cell's trials belong on: the one its stored rows were measured on (``base_url``).

Why: with several servers (``backend.hosts``) each job of a parallel multirun
leases a free one (:func:`sweep.running.lease_host`), and a multirun in rounds
starts a new job per cell and round (:mod:`sweep.multirun.rounds`), as does a resume.
The servers are often two machines (two GPUs); a cell whose rounds landed on
both would pool them in one mean and CI, confounding every comparison with it.
The stored rows are the one record of where a cell ran, so rounds, resume and
a crashed run all find the cell's server the same way, with nothing else to keep.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from sweep.contract import cell_path, cell_rows
from sweep.backends.kinds import kind_of
from sweep.cells import Cell, normalize_base_url
from sweep.config import BackendConfig

T = TypeVar("T")

def most_used(urls: Iterable[str | None]) -> str | None:
    """The server most of these rows name (the first such on a tie); None when none names one."""
    counts = Counter(url for url in urls if url)
    return counts.most_common(1)[0][0] if counts else None


def stored_host(sweep_dir: Path, cells: Sequence[Cell]) -> str | None:
    """The server most of these cells' stored rows were measured on; None before their first row."""
    return most_used(row["base_url"] for cell in cells
                     for row in cell_rows(cell_path(sweep_dir, cell.file_stem), cell.cell_hash, ["base_url"]))


def alternate(items: Sequence[T], server: Callable[[T], str | None]) -> list[T]:
    """``items`` taking the servers in turn, each server's items in their given order.

    Why: a launcher hands a round's jobs to its workers in order, and two jobs of
    one server side by side make the second wait for the first's lease while
    another server idles (docs/scaling.md has what it cost and saves).  What
    the order means for the measurement is the sequence each server sees
    (reloads, warm-ups): that stays the round's order.  Jobs with no server yet
    (a cell's first round) count as one more server.
    """
    queues: dict[str | None, deque[T]] = {}
    for item in items:
        queues.setdefault(server(item), deque()).append(item)
    out: list[T] = []
    while queues:
        for key in list(queues):
            out.append(queues[key].popleft())
            if not queues[key]:
                del queues[key]
    return out


def moved_line(cells: Sequence[Cell], home: str | None, host: str, hosts: Sequence[str], wait_s: float) -> str | None:
    """The one line saying a cell measures away from its server (its rows will span two); None when it did not."""
    if home is None or host == home:
        return None
    why = ("which is not among backend.hosts" if home not in hosts
           else f"which another cell of this sweep still held after {wait_s:.0f} s")
    names = ", ".join(c.cell_id for c in cells)
    return (f"{names}: its stored trials ran on {home}, {why}; measuring on {host}, so its rows span servers "
            "(the analysis report lists such cells)")


def host_urls(backend: BackendConfig) -> list[str]:
    """The configured servers of a remote backend: ``backend.hosts``, else ``backend.base_url`` (none if started here)."""
    if not kind_of(backend).remote:
        return []
    return [normalize_base_url(str(h)) for h in backend.hosts] or [normalize_base_url(backend.base_url)]
