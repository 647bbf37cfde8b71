"""The benchmarks' child processes: started in a group, and always stopped within a bound.

Benches that run servers, nodes or client workers in processes of their own
(``transport --processes``, ``directory``, ``storm``) must never leave one
behind, whether the run ends, fails, times out or is interrupted by Ctrl-C
(which :func:`overlay.cli.common.run_interruptibly` turns into a
cancellation).  So every stop is the same bounded sequence, shielded from that
cancellation: ask politely (end of its stdin when this process holds the
child's stdin, the child's stop signal otherwise), wait up to a grace period,
then SIGKILL and reap.  :class:`Children` stops a whole group at once, in
parallel, so N children take one grace period, not N.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Sequence
from typing import Any

import trio

STOP_GRACE = 5.0
"""Seconds a child has to exit after being asked, before it is killed."""


async def stop_child(process: trio.Process, *, ask: signal.Signals = signal.SIGTERM,
                     grace: float = STOP_GRACE) -> None:
    """End ``process``: end of its stdin (if piped) or ``ask``; SIGKILL after ``grace`` s.

    Shielded: this runs on the way out of a cancelled or interrupted run too.
    Returns once the child has been reaped; a child already gone is fine.
    """
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            if process.stdin is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await process.stdin.aclose()
            else:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(ask)
            with trio.move_on_after(grace):
                await process.wait()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class Children:
    """The processes of one phase of a bench; leaving ``async with`` stops every one."""

    def __init__(self, *, grace: float = STOP_GRACE) -> None:
        self.grace = grace
        self._started: list[tuple[trio.Process, signal.Signals]] = []

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self, command: Sequence[str], *, ask: signal.Signals = signal.SIGTERM,
                    **options: Any) -> trio.Process:
        """``trio.lowlevel.open_process(command, **options)``, stopped with the group.

        ``ask`` is the signal that asks it to stop when its stdin is not a pipe.
        """
        process = await trio.lowlevel.open_process(list(command), **options)
        self._started.append((process, ask))
        return process

    async def aclose(self) -> None:
        """Stop every child, all at once (idempotent; shielded, like :func:`stop_child`)."""
        started, self._started = self._started, []
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for process, ask in started:
                    nursery.start_soon(_stop, process, ask, self.grace)


async def _stop(process: trio.Process, ask: signal.Signals, grace: float) -> None:
    await stop_child(process, ask=ask, grace=grace)
