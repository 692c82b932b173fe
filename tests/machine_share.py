"""Run the suite on every core (pytest-xdist) while the tests that need the machine to themselves run alone.

Most of the suite is CPU-bound subprocess work (``python -m sweep`` against a stand-in) that shares two
cores well: two workers halve its wall time.  A test marked ``exclusive`` cannot share them.  The real
engine decodes on every core, and beside another busy process its threads wait on each other: the demo
took 297 s instead of 107 s in a two-worker run.  The background-load tests measure the machine's other
CPU use, and under a second worker they skip as "busy".

A real-engine test that checks what the engine answers (tokens, the API's fields, which processes are left)
rather than how fast carries ``shares_machine`` and runs with the rest: beside a busy core it is slower, not
wrong (tests/test_server_generation.py, test_server_api.py and test_embedded_lifecycle.py: 78 s alone, 91 s
beside a busy loop), and the other core works meanwhile instead of idling.

So, under xdist, every test holds a shared lock on a file of this run for its whole protocol (set-up, call,
tear-down), and an ``exclusive`` test holds it exclusively: it waits for the other worker's current test to
end, and no other test starts until it is done.  A turnstile lock in front keeps a stream of shared holders
from starving the exclusive one (``flock`` itself promises no order).  Without xdist nothing is locked.

Handing the machine back and forth costs: each time an exclusive test waits for the other worker's current
test to end, one core idles, and the turnstile lets that worker in again between two exclusive tests.  So
the exclusive tests run first, as one block (each worker's own collection, sorted; xdist hands each worker
a contiguous range of it), and a worker keeps its exclusive hold from one exclusive test to the next.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest


@contextmanager
def _locked(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def machine_share(run_dir: Path, exclusive: bool) -> Iterator[None]:
    """Hold the machine shared, or alone if ``exclusive``, across the workers of one test run.

    Everyone passes the turnstile to take the machine lock: while an exclusive test waits at the machine
    lock it holds the turnstile, so no test that arrives later gets in first.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as held:
        with _locked(run_dir / "turnstile.lock", fcntl.LOCK_EX):
            held.enter_context(_locked(run_dir / "machine.lock", fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH))
        yield


class Holder:
    """One worker's hold on the machine: taken before each test, kept from an exclusive test to the next one."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._held: ExitStack | None = None
        self._exclusive = False

    def before(self, exclusive: bool) -> None:
        if self._held is not None and not (self._exclusive and exclusive):
            self.release()
        if self._held is None:
            self._held = ExitStack()
            self._held.enter_context(machine_share(self.run_dir, exclusive))
            self._exclusive = exclusive

    def after(self, next_exclusive: bool) -> None:
        """The test ended: keep an exclusive hold only when the next test is exclusive too."""
        if not (self._exclusive and next_exclusive):
            self.release()

    def release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None


def _exclusive(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("exclusive") is not None


def _engine_sharing(item: pytest.Item) -> bool:
    return item.get_closest_marker("shares_machine") is not None


@contextmanager
def one_engine_at_a_time(run_dir: Path, engine: bool) -> Iterator[None]:
    """A ``shares_machine`` test shares the machine with stand-in work, never with another engine: two engines
    side by side wait on each other's threads (70 such tests: 86 s one after another, 114 s two at a time)."""
    if not engine:
        yield
        return
    with _locked(run_dir / "engine.lock", fcntl.LOCK_EX):
        yield


_holder: Holder | None = None


@pytest.hookimpl(trylast=True)   # after tests/conftest.py has marked the exclusive tests
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the exclusive tests first (stable: each file's order kept), so they run as one block, then the
    ``shares_machine`` ones: in the first worker's range, so they run one after another beside the other worker's
    tests."""
    if getattr(config, "workerinput", None) is not None:
        items.sort(key=lambda item: (not _exclusive(item), not _engine_sharing(item)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    global _holder
    worker = getattr(item.config, "workerinput", None)
    if worker is None:
        yield
        return
    if _holder is None:
        _holder = Holder(Path(tempfile.gettempdir()) / f"chimera-tests-{worker['testrunuid']}")
    _holder.before(_exclusive(item))
    try:
        with one_engine_at_a_time(_holder.run_dir, _engine_sharing(item)):
            yield
    finally:
        _holder.after(_exclusive(nextitem))
