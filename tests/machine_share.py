"""Run the suite on every core (pytest-xdist) while the tests that need the machine to themselves run alone.

Most of the suite is CPU-bound subprocess work (``python -m sweep`` against a stand-in) that shares two
cores well: two workers halve its wall time.  A test marked ``exclusive`` cannot share them.  The real
engine decodes on every core, and beside another busy process its threads wait on each other: the demo
took 297 s instead of 107 s in a two-worker run.  The background-load tests measure the machine's other
CPU use, and under a second worker they skip as "busy".

So, under xdist, every test holds a shared lock on a file of this run for its whole protocol (set-up, call,
tear-down), and an ``exclusive`` test holds it exclusively: it waits for the other worker's current test to
end, and no other test starts until it is done.  A turnstile lock in front keeps a stream of shared holders
from starving the exclusive one (``flock`` itself promises no order).  Without xdist nothing is locked.
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    worker = getattr(item.config, "workerinput", None)
    if worker is None:
        yield
        return
    run_dir = Path(tempfile.gettempdir()) / f"chimera-tests-{worker['testrunuid']}"
    with machine_share(run_dir, exclusive=item.get_closest_marker("exclusive") is not None):
        yield
