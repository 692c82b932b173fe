"""Ctrl-C that always stops a sweep, even when a library swallows the cancellation it becomes.

Why: ``asyncio.run`` turns the first SIGINT into one ``cancel()`` of the main
task and raises ``KeyboardInterrupt`` only if that cancellation comes back out.
A cancellation that lands inside a timeout or cancel scope that is finishing at
the same instant can be absorbed (Python 3.11's ``wait_for``, anyio cancel
scopes under httpx), and the sweep then measures on and exits 0 — seen under
load in the Ctrl-C tests.  :func:`run` remembers the signal; :func:`check`, called
before every measured call, raises ``KeyboardInterrupt`` once it came, and
:func:`run` raises it after the loop in any case.  A second Ctrl-C raises at once.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_interrupted = threading.Event()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C came during :func:`run` (a trial boundary is a safe stop)."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` whose Ctrl-C cannot be lost (in the main thread; elsewhere plain ``asyncio.run``)."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(coro)
    _interrupted.clear()
    state: dict[str, Any] = {}

    def on_sigint(signum: int, frame: Any) -> None:
        task, loop = state.get("task"), state.get("loop")
        if _interrupted.is_set() or task is None or task.done():
            raise KeyboardInterrupt
        _interrupted.set()
        loop.call_soon_threadsafe(task.cancel)

    async def main() -> T:
        state["task"], state["loop"] = asyncio.current_task(), asyncio.get_running_loop()
        return await coro

    previous = signal.signal(signal.SIGINT, on_sigint)   # asyncio.run then leaves SIGINT to us
    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:
        if _interrupted.is_set():
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    check()
    return result
