"""Abuse limits as plain data structures: time is passed in, nothing is read from a clock.

:class:`TokenBucket` caps a connection's request rate; :class:`FailureWindow`
counts failed logins per key (a username, a source address) in a sliding
window and says how long a blocked key must wait.  Both are bounded in memory
whatever an attacker sends: a failure window forgets its oldest key first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one token per request."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    updated: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float) -> float | None:
        """Spend a token: None if there was one, else the seconds until there will be."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


class FailureWindow:
    """At most ``limit`` failures per key within ``window`` seconds.

    ``retry_after(key, now)`` is None while a key may try again, else how long
    until its oldest failure leaves the window.  Success does not erase
    failures: a guessed password must not reset the attacker's count.
    """

    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float | None:
        times = self._failures.get(key)
        if times is None:
            return None
        self._forget_old(key, times, now)
        if len(times) < self.limit:
            return None
        return times[0] + self.window - now

    def record(self, key: str, now: float) -> None:
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= self.max_keys:
                self._failures.popitem(last=False)
            times = self._failures[key] = deque(maxlen=self.limit)
        else:
            self._failures.move_to_end(key)
        times.append(now)

    def _forget_old(self, key: str, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]

    def __len__(self) -> int:
        return len(self._failures)


def idle_check(now: float, last_activity: float, timeout: float, *,
               exempt: bool) -> float | None:
    """None if a connection idle since ``last_activity`` must close now; otherwise when
    to look again, always after ``now`` (an exempt connection, one with a session, is
    looked at again a timeout later, never in a loop that does not wait)."""
    deadline = last_activity + timeout
    if now < deadline:
        return deadline
    return now + timeout if exempt else None
