"""Blocking calls (SQLite, password hashing) off the event loop, a bounded number at a time.

A trio program stalls whole while one task sits in a blocking call: every
link's keepalive, every relay, every timer waits for the fsync.  So blocking
work runs in trio's worker threads, and a :class:`trio.CapacityLimiter`
bounds how many run at once: one for an SQLite connection (a connection is
used from one thread at a time, so it is opened with
``check_same_thread=False`` and never shared concurrently), one per core for
hashing, one per pooled connection for PostgreSQL.

A call in a worker thread is not abandoned when its task is cancelled: it
runs to the end (a transaction is never cut in half), and the cancellation
takes effect at the task's next checkpoint.

``inline=True`` runs the calls in the event loop's thread instead, for trio's
virtual clock (the simulator, ``MockClock(autojump_threshold=0)``): there a
task waiting on a thread counts as blocked, so the clock would jump past every
timeout while the thread works in real time.

Used by the chat engine for its history (:mod:`overlay.chat.service`).  The
directory service (:mod:`overlay.directory.server.service`) does the same with a
private ``_offload``; this helper is the one to share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import trio

P = ParamSpec("P")
T = TypeVar("T")


class WorkerThreads:
    """Run blocking calls in worker threads, at most ``limit`` at a time (see the module)."""

    def __init__(self, limit: int = 1, *, inline: bool = False) -> None:
        self._limiter = trio.CapacityLimiter(limit)
        self.inline = inline

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` in a worker thread, once one of the ``limit`` is free."""
        def call() -> T:
            return fn(*args, **kwargs)
        if self.inline:
            await trio.lowlevel.checkpoint()
            return call()
        return await trio.to_thread.run_sync(call, limiter=self._limiter)

