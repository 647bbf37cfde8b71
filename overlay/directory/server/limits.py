"""Abuse limits as plain data structures: time is passed in, nothing is read from a clock.

:class:`TokenBucket` caps a rate (a connection's requests); :class:`KeyedBuckets`
keeps one bucket per key, and :class:`RegistrationLimiter` uses two of them to
cap new accounts per source address and per node key.  :class:`Backoff`
counts failures per key and makes each one past a free allowance double the
wait before the next attempt.  :class:`LoginThrottle` combines backoffs so that
password guessing is slow while nobody can lock an owner out of an account:

- the account's **owner** (the connection proves the node key the account is
  bound to) has a budget of its own, per (username, key), that nobody else can
  touch: neither other keys nor other users behind the same address;
- every **other key** is throttled per (username, key), per username for all
  other keys together, and per source address;
- an **unknown username** is handled exactly like an account whose key is
  nobody's (the same budgets, the same answers), so the throttle does not tell
  which names exist, and failures against it cannot touch any real account.

An attempt is charged before the password is checked and refunded if it was
right, so parallel guesses cannot all slip through before the first failure is
counted.  Every structure is bounded in memory whatever an attacker sends: it
forgets its least recently used key first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
MAX_KEYS = 100_000


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one token per request."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    updated: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def wait(self, now: float) -> float | None:
        """None if a token is there now, else the seconds until there will be one."""
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now
        if self.tokens >= 1.0:
            return None
        return (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> float | None:
        """Spend a token: None if there was one, else the seconds until there will be."""
        wait = self.wait(now)
        if wait is None:
            self.tokens -= 1.0
        return wait


class KeyedBuckets(Generic[K]):
    """One :class:`TokenBucket` per key (an address, a node key), at most ``max_keys`` of them.

    The least recently used key is forgotten first (its bucket starts full again).
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def wait(self, key: K, now: float) -> float | None:
        bucket = self._buckets.get(key)
        return None if bucket is None else bucket.wait(now)

    def take(self, key: K, now: float) -> float | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """``free`` failures cost nothing; the next waits ``base`` seconds, each further one
    twice as long, at most ``cap``; a key with no failure for ``forget`` seconds starts over."""

    free: int
    base: float
    cap: float
    forget: float

    def delay(self, failures: int) -> float:
        """How long after its latest failure a key that failed ``failures`` times waits."""
        if failures < self.free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - self.free, 62))


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


class Backoff(Generic[K]):
    """Failures per key under a :class:`BackoffPolicy`, at most ``max_keys`` keys."""

    def __init__(self, policy: BackoffPolicy, *, max_keys: int = MAX_KEYS) -> None:
        self.policy = policy
        self.max_keys = max_keys
        self._failures: OrderedDict[K, _Failures] = OrderedDict()

    def retry_after(self, key: K, now: float) -> float | None:
        """None if ``key`` may try now, else how many seconds until it may."""
        entry = self._current(key, now)
        if entry is None:
            return None
        delay = self.policy.delay(entry.count)
        wait = min(delay, entry.last + delay - now)  # a clock stepped back waits no longer
        return wait if wait > 0 else None

    def record(self, key: K, now: float) -> None:
        entry = self._current(key, now)
        if entry is None:
            if len(self._failures) >= self.max_keys:
                self._failures.popitem(last=False)
            self._failures[key] = _Failures(1, now)
        else:
            self._failures.move_to_end(key)
            entry.count += 1
            entry.last = max(entry.last, now)

    def refund(self, key: K) -> None:
        """Take one failure back (the attempt charged in advance turned out right)."""
        entry = self._failures.get(key)
        if entry is not None:
            entry.count -= 1
            if entry.count <= 0:
                del self._failures[key]

    def clear(self, key: K) -> None:
        self._failures.pop(key, None)

    def failures(self, key: K, now: float) -> int:
        entry = self._current(key, now)
        return 0 if entry is None else entry.count

    def _current(self, key: K, now: float) -> _Failures | None:
        entry = self._failures.get(key)
        if entry is not None and now - entry.last >= self.policy.forget:
            del self._failures[key]
            return None
        return entry

    def __len__(self) -> int:
        return len(self._failures)


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """The three budgets of :class:`LoginThrottle` (docs/directory.md, Abuse limits)."""

    per_key: BackoffPolicy = BackoffPolicy(free=5, base=1.0, cap=300.0, forget=3600.0)
    """Per (username, node key): the owner's own budget, and each other key's."""
    per_account: BackoffPolicy = BackoffPolicy(free=20, base=1.0, cap=300.0, forget=3600.0)
    """Per username, all keys but the owner's together."""
    per_address: BackoffPolicy = BackoffPolicy(free=50, base=1.0, cap=300.0, forget=3600.0)
    """Per source address, every username, all keys but the owners'."""


@dataclass(frozen=True, slots=True)
class Throttled:
    """An attempt refused: wait ``retry_after`` seconds; ``reason`` says which budget ran out."""

    retry_after: float
    reason: str


class LoginThrottle:
    """Decides whether a password may be tried now; see the module docstring."""

    def __init__(self, limits: LoginLimits | None = None, *, max_keys: int = MAX_KEYS) -> None:
        self.limits = limits or LoginLimits()
        self.per_key: Backoff[tuple[str, bytes]] = Backoff(self.limits.per_key,
                                                           max_keys=max_keys)
        self.per_account: Backoff[str] = Backoff(self.limits.per_account, max_keys=max_keys)
        self.per_address: Backoff[str] = Backoff(self.limits.per_address, max_keys=max_keys)

    def admit(self, username: str, key: bytes, host: str, *, owner: bool,
              now: float) -> Throttled | None:
        """Throttled if a budget is spent, else None, and the attempt is charged as a
        failure until :meth:`succeeded` refunds it.  ``owner``: ``key`` is the one the
        account is bound to (always False for a username nobody has)."""
        waits = [(wait, f"for {username!r} from this node key")
                 for wait in (self.per_key.retry_after((username, key), now),)
                 if wait is not None]
        if not owner:
            for wait, what in ((self.per_account.retry_after(username, now),
                                f"for {username!r} from node keys it is not bound to"),
                               (self.per_address.retry_after(host, now), "from your address")):
                if wait is not None:
                    waits.append((wait, what))
        if waits:
            wait, what = max(waits)
            return Throttled(wait, f"too many failed logins {what}; "
                                   f"retry in {max(1, round(wait))} s")
        self.charge(username, key, host, owner=owner, now=now)
        return None

    def charge(self, username: str, key: bytes, host: str, *, owner: bool,
               now: float) -> None:
        """Count an attempt as a failure without asking: one another server process
        admitted (several processes on one database keep their throttles in step)."""
        self.per_key.record((username, key), now)
        if not owner:
            self.per_account.record(username, now)
            self.per_address.record(host, now)

    def succeeded(self, username: str, key: bytes, host: str, *, owner: bool) -> None:
        """The password was right: this key starts over; the shared budgets get the charge
        back (only failures count there, so a right guess never resets anyone's count)."""
        self.per_key.clear((username, key))
        if not owner:
            self.per_account.refund(username)
            self.per_address.refund(host)


@dataclass(frozen=True, slots=True)
class RegistrationLimits:
    """New accounts per ``period`` seconds, per source address and per node key."""

    per_address: int = 30
    per_key: int = 3
    period: float = 3600.0


class RegistrationLimiter:
    """Token buckets of new accounts per source address and per node key (both must have
    a token; only then are both spent)."""

    def __init__(self, limits: RegistrationLimits | None = None, *,
                 max_keys: int = MAX_KEYS) -> None:
        self.limits = limits = limits or RegistrationLimits()
        self.per_address: KeyedBuckets[str] = KeyedBuckets(
            limits.per_address / limits.period, limits.per_address, max_keys=max_keys)
        self.per_key: KeyedBuckets[bytes] = KeyedBuckets(
            limits.per_key / limits.period, limits.per_key, max_keys=max_keys)

    def admit(self, host: str, key: bytes, now: float) -> Throttled | None:
        limits = self.limits
        waits = [(wait, what) for wait, what in (
            (self.per_key.wait(key, now), f"from this node key (at most {limits.per_key}"),
            (self.per_address.wait(host, now),
             f"from your address (at most {limits.per_address}"),
        ) if wait is not None]
        if waits:
            wait, what = max(waits)
            return Throttled(wait, f"too many new accounts {what} per "
                                   f"{_duration(limits.period)}); retry in "
                                   f"{max(1, round(wait))} s")
        self.charge(host, key, now)
        return None

    def charge(self, host: str, key: bytes, now: float) -> None:
        """Spend the tokens of a registration (this process's, or another's on the same
        database) without asking."""
        self.per_key.take(key, now)
        self.per_address.take(host, now)


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return "hour" if hours == 1 else f"{hours} hours"
    return f"{seconds:g} s"


def idle_check(now: float, last_activity: float, timeout: float, *,
               exempt: bool) -> float | None:
    """None if a connection idle since ``last_activity`` must close now; otherwise when
    to look again, always after ``now`` (an exempt connection, one with a session, is
    looked at again a timeout later, never in a loop that does not wait)."""
    deadline = last_activity + timeout
    if now < deadline:
        return deadline
    return now + timeout if exempt else None
