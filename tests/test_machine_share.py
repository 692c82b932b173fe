"""The lock that lets an ``exclusive`` test have the machine to itself under pytest-xdist."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.machine_share import Holder, machine_share, one_engine_at_a_time


def _hold(run_dir: Path, exclusive: bool, name: str, events: list[str], hold_s: float,
          engine: bool = False) -> threading.Thread:
    def body() -> None:
        with machine_share(run_dir, exclusive), one_engine_at_a_time(run_dir, engine):
            events.append(f"{name} in")
            time.sleep(hold_s)
            events.append(f"{name} out")

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def test_shared_holders_run_together(tmp_path: Path) -> None:
    events: list[str] = []
    a = _hold(tmp_path, False, "a", events, 0.3)
    time.sleep(0.05)
    b = _hold(tmp_path, False, "b", events, 0.05)
    a.join(), b.join()
    assert events.index("b in") < events.index("a out"), events


def test_an_exclusive_test_waits_for_the_running_test_and_holds_off_the_next(tmp_path: Path) -> None:
    events: list[str] = []
    running = _hold(tmp_path, False, "running", events, 0.3)
    time.sleep(0.05)
    alone = _hold(tmp_path, True, "alone", events, 0.3)
    time.sleep(0.05)
    later = _hold(tmp_path, False, "later", events, 0.0)   # arrives while `alone` waits: must not overtake it
    for thread in (running, alone, later):
        thread.join()
    assert events == ["running in", "running out", "alone in", "alone out", "later in", "later out"], events


def test_a_worker_keeps_the_machine_from_one_exclusive_test_to_the_next(tmp_path: Path) -> None:
    events: list[str] = []
    worker = Holder(tmp_path)
    worker.before(exclusive=True)
    events.append("first in")
    other = _hold(tmp_path, False, "other", events, 0.0)   # the other worker's shared test arrives meanwhile
    time.sleep(0.1)
    events.append("first out")
    worker.after(next_exclusive=True)
    worker.before(exclusive=True)
    events.append("second in")
    time.sleep(0.1)
    events.append("second out")
    worker.after(next_exclusive=False)
    other.join()
    assert events == ["first in", "first out", "second in", "second out", "other in", "other out"], events


def test_engine_tests_that_share_the_machine_run_one_at_a_time_beside_the_others(tmp_path: Path) -> None:
    events: list[str] = []
    first = _hold(tmp_path, False, "engine 1", events, 0.3, engine=True)
    time.sleep(0.05)
    second = _hold(tmp_path, False, "engine 2", events, 0.0, engine=True)
    time.sleep(0.05)
    beside = _hold(tmp_path, False, "stand-in", events, 0.0)
    for thread in (first, second, beside):
        thread.join()
    assert events.index("engine 2 in") > events.index("engine 1 out"), events     # waits for the other engine
    assert events.index("stand-in out") < events.index("engine 1 out"), events    # not for it
