"""What else ran on the measuring machine during a call: other processes' CPU, and the load average.

Why: two identical sweeps on a busy machine moved a baseline from 35 to 67 tok/s
and reversed a ``num_thread`` conclusion, and the rows held no sign of it.  Each
trial now carries ``background_cpu_pct`` (CPU time that *other* processes used
while the call ran, in % of one core) and ``loadavg_1m`` (the 1-minute load
average when it started); the summary and the report flag the cells that ran
beside load (:data:`sweep.contract.BACKGROUND_CPU_FLAG_PCT`).

How: ``/proc/stat`` counts every core's busy time since boot; our own process
tree (this Python, the embedded engine or llama-server it started, their
children) and the local server we measure (an ``ollama serve`` that is not our
child) report their own CPU seconds.  The machine's busy time over the call,
minus ours, over the call's wall time, is the background.  Two snapshots per call
(at its start and its end, never inside the stream loop), each a read of
``/proc/stat`` and of our few processes: about a millisecond.  Where there is no
``/proc/stat`` (macOS, Windows) the column is null: unknown, not zero.

The arithmetic is :func:`background_cpu_pct` on two :class:`CpuSnapshot` values,
so it is tested on hand-computed numbers without touching ``/proc``.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

PROC_STAT = "/proc/stat"
# /proc/stat's aggregate "cpu" line: user nice system idle iowait irq softirq steal guest guest_nice.
# Busy = everything but idle and iowait; guest time is already inside user (and guest_nice inside nice).
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


@dataclass(frozen=True)
class CpuSnapshot:
    """The machine's and our processes' CPU counters at one instant."""

    at_s: float                                  # monotonic clock, seconds
    busy_s: float | None                         # busy CPU seconds of all cores since boot; None: unknown
    own_s: dict[int, float] = field(default_factory=dict)   # pid → CPU seconds of each of our processes


def busy_seconds(stat_text: str, ticks_per_s: float) -> float | None:
    """Busy CPU seconds of all cores from the text of ``/proc/stat`` (None when its ``cpu`` line is missing)."""
    for line in stat_text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:]]
            return sum(values[i] for i in _BUSY_FIELDS if i < len(values)) / ticks_per_s
    return None


def background_cpu_pct(start: CpuSnapshot, end: CpuSnapshot) -> float | None:
    """CPU that other processes used between two snapshots, in % of one core (100 = one core busy).

    Our processes' time is each one's CPU seconds at ``end`` minus those at
    ``start``; a process new since ``start`` counts whole (it started inside the
    window).  Counters read at slightly different instants can make the
    difference a little negative on an idle machine: it is clamped at 0.
    None when either snapshot lacks the machine's counter or no time passed.
    """
    if start.busy_s is None or end.busy_s is None:
        return None
    wall_s = end.at_s - start.at_s
    if wall_s <= 0:
        return None
    own_s = sum(cpu - start.own_s.get(pid, 0.0) for pid, cpu in end.own_s.items())
    return max(0.0, 100.0 * (end.busy_s - start.busy_s - own_s) / wall_s)


def loadavg_1m() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def machine_load() -> dict[str, Any]:
    """The machine's load now, for ``_run.json`` (``load.start`` / ``load.end``)."""
    try:
        one, five, fifteen = os.getloadavg()
    except (OSError, AttributeError):
        one = five = fifteen = None
    return {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "loadavg_1m": one,
            "loadavg_5m": five, "loadavg_15m": fifteen, "cpu_count": os.cpu_count()}


def stat_cpu_seconds(stat_text: str, ticks_per_s: float) -> float:
    """User + system CPU seconds of a process, and of its children it has waited for, from ``/proc/<pid>/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields are counted after its last ``)``:
    utime, stime, cutime, cstime are fields 14–17.
    """
    fields = stat_text[stat_text.rindex(")") + 2:].split()
    return sum(int(v) for v in fields[11:15]) / ticks_per_s


def _children(pid: int) -> list[int]:
    """The direct children of ``pid``, from each of its threads' ``children`` file.

    Why not ``psutil.Process.children``: it reads every process of the machine
    (6.5 ms here on a busy box, twice per call); these files list just ours.
    Kernels without them (``CONFIG_PROC_CHILDREN``) fall back to psutil.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                out += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue   # the thread ended meanwhile
            try:
                return [c.pid for c in psutil.Process(pid).children()]
            except psutil.Error:
                return []
        except OSError:
            continue
    return out


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.append(pid)
            todo += _children(pid)
    return tree


class Probe:
    """Takes the snapshots of one job's calls: ours are this process's tree and ``server_pid``'s.

    ``server_pid``: the local server we measure when it is not our child (a
    running ``ollama serve``); the embedded engine and llama-server are our
    children and count as ours anyway.
    """

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        try:
            self._ticks = float(os.sysconf("SC_CLK_TCK"))
        except (ValueError, OSError, AttributeError):
            self._ticks = 100.0

    def _ours(self) -> list[int]:
        pids = process_tree(os.getpid())
        if self.server_pid is not None and self.server_pid not in pids:
            pids += process_tree(self.server_pid)
        return pids

    def snapshot(self) -> CpuSnapshot:
        """Now: the machine's busy seconds and each of our processes' CPU seconds (about 1 ms)."""
        try:
            with open(PROC_STAT, encoding="ascii") as f:
                busy = busy_seconds(f.read(), self._ticks)
        except (OSError, ValueError):
            return CpuSnapshot(time.monotonic(), None)
        own: dict[int, float] = {}
        for pid in self._ours():
            try:
                with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
                    own[pid] = stat_cpu_seconds(f.read(), self._ticks)
            except (OSError, ValueError):
                continue   # ended meanwhile
        return CpuSnapshot(time.monotonic(), busy, own)

    def start(self) -> tuple[CpuSnapshot, float | None]:
        """At a call's start: the snapshot and the 1-minute load average."""
        return self.snapshot(), loadavg_1m()

    def columns(self, started: tuple[CpuSnapshot, float | None]) -> dict[str, float | None]:
        """At the call's end: the trial's ``background_cpu_pct`` and ``loadavg_1m``."""
        snapshot, load = started
        return {"background_cpu_pct": background_cpu_pct(snapshot, self.snapshot()), "loadavg_1m": load}
