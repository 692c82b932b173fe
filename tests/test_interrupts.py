"""Ctrl-C always stops the measurement loop, even when the cancellation it becomes is absorbed.

Real signals to this very process; the absorbing coroutine stands for a library
(a timeout or cancel scope finishing at the same instant) that eats a CancelledError.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from sweep import interrupts


def test_a_swallowed_cancellation_still_raises_keyboard_interrupt_at_the_next_call() -> None:
    calls: list[int] = []

    async def loop() -> str:
        for i in range(50):
            interrupts.check()              # what CellRun.call does before every call
            calls.append(i)
            if i == 2:
                os.kill(os.getpid(), signal.SIGINT)
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:  # the absorbing library
                pass
        return "ran to the end"

    with pytest.raises(KeyboardInterrupt):
        interrupts.run(loop())
    assert calls == [0, 1, 2]               # the trial after the signal was never started


def test_a_cancellation_that_comes_out_is_keyboard_interrupt() -> None:
    async def loop() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(10)

    with pytest.raises(KeyboardInterrupt):
        interrupts.run(loop())


def test_the_flag_does_not_outlive_its_run_and_sigint_is_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        interrupts.run(_interrupt_self())
    assert signal.getsignal(signal.SIGINT) is before

    async def fine() -> int:
        interrupts.check()
        return 7

    assert interrupts.run(fine()) == 7


async def _interrupt_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.sleep(10)
