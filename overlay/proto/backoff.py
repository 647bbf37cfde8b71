"""Reconnect delays: exponential backoff with jitter, reset by a link that came up.

A dialer that keeps failing waits ``initial``, then twice that, and so on up to
``maximum``; each wait is drawn from the upper half of the current delay
(``uniform(0.5, 1.0)``), so that peers restarted together do not redial in step.
A link that got established resets the delay: the next failure starts over.
The randomness is injected, so a simulated run redials at the same moments
every time.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng
        self._delay = initial

    def reset(self) -> None:
        self._delay = self._initial

    def next_wait(self, *, established: bool) -> float:
        """How long to wait before the next dial, after an attempt that ``established`` or not."""
        if established:
            self._delay = self._initial
        wait = self._delay * self._rng.uniform(0.5, 1.0)
        if not established:
            self._delay = min(self._delay * 2, self._maximum)
        return wait
