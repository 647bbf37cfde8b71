"""run_interruptibly: Ctrl-C becomes a cancellation at a checkpoint, then KeyboardInterrupt."""

from __future__ import annotations

import os
import signal

import pytest
import trio
import trio.lowlevel
import trio.testing

from overlay.cli.common import run_interruptibly


def test_the_work_s_result_is_returned_and_the_handler_restored() -> None:
    before = signal.getsignal(signal.SIGINT)

    async def work(a: int, b: int) -> int:
        await trio.lowlevel.checkpoint()
        return a + b

    assert run_interruptibly(work, 2, 3) == 5
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_in_the_middle_of_sync_code_waits_for_a_checkpoint() -> None:
    """Plain ``trio.run`` would raise KeyboardInterrupt on the line after ``os.kill``;
    here the code goes on to its next checkpoint, and every cleanup runs in full."""
    events: list[str] = []

    async def work() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            events.append("went on after the signal")
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.01)  # a cleanup that itself waits
            events.append("cleaned up")

    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(work)
    assert events == ["went on after the signal", "cleaned up"]


def test_sigterm_stops_the_work_too_and_a_virtual_clock_is_used() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    seen: list[float] = []

    async def work() -> None:
        await trio.sleep(100)  # virtual: over at once
        seen.append(trio.current_time())
        os.kill(os.getpid(), signal.SIGTERM)
        await trio.sleep_forever()

    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(work, clock=clock)
    assert seen == [pytest.approx(100.0)]


def test_an_error_of_the_work_propagates_as_itself() -> None:
    async def work() -> None:
        raise LookupError("no such thing")

    with pytest.raises(LookupError, match="no such thing"):
        run_interruptibly(work)
