"""The abuse limits, as pure data structures under fake time and generated schedules."""

from __future__ import annotations

import itertools

from hypothesis import example, given
from hypothesis import strategies as st

from overlay.directory.server.limits import (
    Backoff,
    BackoffPolicy,
    KeyedBuckets,
    LoginLimits,
    LoginThrottle,
    RegistrationLimiter,
    RegistrationLimits,
    TokenBucket,
    idle_check,
)

POLICY = BackoffPolicy(free=3, base=1.0, cap=8.0, forget=100.0)
OWNER, ATTACKER, BYSTANDER = b"o" * 32, b"a" * 32, b"b" * 32
HOST = "203.0.113.7"


def test_backoff_is_free_then_doubles_up_to_the_cap_then_forgets() -> None:
    backoff: Backoff[str] = Backoff(POLICY)
    for _ in range(3):
        assert backoff.retry_after("k", 0.0) is None
        backoff.record("k", 0.0)
    waits = []
    now = 0.0
    for _ in range(6):
        wait = backoff.retry_after("k", now)
        assert wait is not None
        waits.append(wait)
        now += wait
        assert backoff.retry_after("k", now) is None
        backoff.record("k", now)
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.retry_after("other", now) is None  # per key
    assert backoff.retry_after("k", now + 100.0) is None
    assert backoff.failures("k", now + 100.0) == 0  # forgotten after a quiet period


def test_backoff_refund_and_clear() -> None:
    backoff: Backoff[str] = Backoff(POLICY)
    for _ in range(3):
        backoff.record("k", 0.0)
    backoff.refund("k")
    assert backoff.failures("k", 0.0) == 2 and backoff.retry_after("k", 0.0) is None
    backoff.clear("k")
    assert backoff.failures("k", 0.0) == 0
    backoff.refund("missing")  # harmless


def test_backoff_does_not_wait_longer_when_the_clock_steps_back() -> None:
    backoff: Backoff[str] = Backoff(POLICY)
    for _ in range(4):
        backoff.record("k", 1000.0)
    wait = backoff.retry_after("k", 10.0)  # the wall clock went back 990 s
    assert wait is not None and wait <= POLICY.delay(4)


def test_backoff_memory_is_bounded() -> None:
    backoff: Backoff[str] = Backoff(POLICY, max_keys=100)
    for i in range(1_000):
        backoff.record(f"user{i}", 0.0)
    assert len(backoff) == 100


@given(st.lists(st.floats(min_value=0, max_value=600, allow_nan=False), max_size=80))
@example([0.0, 0.0, 1.9, 0.9])
def test_backoff_admits_at_most_free_plus_the_doubling_schedule(times: list[float]) -> None:
    """Whatever the attempt times: after ``free`` failures, consecutive admitted failures
    are at least the policy's delay apart."""
    backoff: Backoff[str] = Backoff(POLICY)
    admitted: list[float] = []
    for now in sorted(times):
        if backoff.retry_after("k", now) is None:
            backoff.record("k", now)
            admitted.append(now)
    count = 1  # failures on record after the previous admitted one
    for previous, current in itertools.pairwise(admitted):
        gap = current - previous
        if gap >= POLICY.forget:
            count = 0  # a quiet period starts over
        # As the limiter adds (1.9 - 0.9 is 0.9999999999999999, yet 0.9 + 1.0 is 1.9).
        assert current >= previous + POLICY.delay(count)
        count += 1


def test_the_owner_logs_in_whatever_attackers_do() -> None:
    """Item 6: thousands of failures from other keys, and from the owner's own address,
    leave the owner's budget untouched."""
    throttle = LoginThrottle()
    now = 0.0
    for i in range(2_000):
        key = ATTACKER if i % 2 else bytes([i % 251]) * 32
        if throttle.admit("alice", key, HOST, owner=False, now=now) is None:
            pass  # the hash ran and failed: the charge stays
        now += 0.01
    assert throttle.admit("alice", ATTACKER, HOST, owner=False, now=now) is not None
    assert throttle.admit("alice", OWNER, HOST, owner=True, now=now) is None
    throttle.succeeded("alice", OWNER, HOST, owner=True)


def test_unknown_usernames_do_not_touch_other_accounts() -> None:
    throttle = LoginThrottle()
    for i in range(500):
        throttle.admit(f"nobody{i}", ATTACKER, HOST, owner=False, now=float(i) / 100)
    now = 5.0
    # The attacker's address is throttled, and only that: a bystander elsewhere, and any
    # owner anywhere, are not.
    assert throttle.admit("bob", ATTACKER, HOST, owner=False, now=now) is not None
    assert throttle.admit("bob", BYSTANDER, "198.51.100.1", owner=False, now=now) is None
    assert throttle.admit("carol", BYSTANDER, HOST, owner=True, now=now) is None
    assert throttle.per_account.failures("bob", now) == 1  # the bystander's one attempt


def test_an_unknown_and_a_real_username_are_throttled_alike() -> None:
    """Item 10: the same attempts from a stranger's key get the same answers, whether the
    name exists or not (the owner flag is False for a stranger either way)."""
    throttle = LoginThrottle()
    answers: dict[str, list[tuple[float, str] | None]] = {"alice": [], "nobody": []}
    for name, seen in answers.items():
        for i in range(12):
            got = throttle.admit(name, ATTACKER, f"192.0.2.{len(name)}", owner=False,
                                 now=i / 10)
            seen.append(None if got is None
                                 else (got.retry_after, got.reason.replace(name, "X")))
    assert answers["alice"] == answers["nobody"]
    assert answers["alice"][5] is not None and "this node key" in answers["alice"][5][1]


def test_parallel_guesses_cannot_slip_through_before_the_first_failure() -> None:
    """Charged before the hash: many attempts at one instant get at most the free ones."""
    throttle = LoginThrottle()
    admitted = sum(throttle.admit("alice", ATTACKER, HOST, owner=False, now=0.0) is None
                   for _ in range(100))
    assert admitted == LoginLimits().per_key.free


def test_a_right_password_refunds_shared_budgets_and_resets_its_key() -> None:
    throttle = LoginThrottle()
    for _ in range(3):
        throttle.admit("alice", ATTACKER, HOST, owner=False, now=0.0)
    assert throttle.admit("alice", BYSTANDER, HOST, owner=False, now=0.0) is None
    throttle.succeeded("alice", BYSTANDER, HOST, owner=False)
    assert throttle.per_key.failures(("alice", BYSTANDER), 0.0) == 0
    assert throttle.per_account.failures("alice", 0.0) == 3  # the attacker's stay
    assert throttle.per_address.failures(HOST, 0.0) == 3


def test_registrations_are_limited_per_key_and_per_address() -> None:
    limiter = RegistrationLimiter(RegistrationLimits(per_address=5, per_key=2, period=3600.0))
    assert limiter.admit(HOST, OWNER, 0.0) is None
    assert limiter.admit(HOST, OWNER, 0.0) is None
    refused = limiter.admit(HOST, OWNER, 0.0)
    assert refused is not None and "node key" in refused.reason
    assert refused.retry_after == 1800.0  # one account back every 3600/2 s
    for key in (b"1" * 32, b"2" * 32, b"3" * 32):
        assert limiter.admit(HOST, key, 0.0) is None
    refused = limiter.admit(HOST, b"4" * 32, 0.0)
    assert refused is not None and "address" in refused.reason
    assert refused.retry_after == 720.0
    assert limiter.per_key.wait(b"4" * 32, 0.0) is None  # the refusal spent nothing
    assert limiter.admit("198.51.100.1", b"5" * 32, 0.0) is None  # per address
    assert limiter.admit(HOST, b"4" * 32, 720.0) is None  # refilled


def test_keyed_buckets_memory_is_bounded() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(1.0, 1.0, max_keys=10)
    for i in range(100):
        buckets.take(f"k{i}", 0.0)
    assert len(buckets) == 10


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1,
                max_size=300))
def test_token_bucket_never_exceeds_burst_plus_rate(times: list[float]) -> None:
    bucket = TokenBucket(rate=10.0, burst=20.0)
    taken = [now for now in sorted(times) if bucket.take(now) is None]
    assert len(taken) <= 20 + 10.0 * (max(times) - min(times)) + 1e-9


def test_token_bucket_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=2.0, burst=1.0)
    assert bucket.take(0.0) is None
    wait = bucket.take(0.0)
    assert wait == 0.5
    assert bucket.take(0.5) is None
    assert bucket.take(0.2) is not None  # a clock stepping back refills nothing


def test_idle_check_closes_only_sessionless_connections_and_never_spins() -> None:
    assert idle_check(10.0, last_activity=5.0, timeout=60.0, exempt=False) == 65.0
    assert idle_check(70.0, last_activity=5.0, timeout=60.0, exempt=False) is None
    # A logged-in connection idle past the timeout is looked at again later, not at once.
    again = idle_check(70.0, last_activity=5.0, timeout=60.0, exempt=True)
    assert again is not None and again > 70.0
