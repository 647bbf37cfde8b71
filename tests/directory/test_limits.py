"""The abuse limits, as pure data structures under generated schedules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from overlay.directory.limits import FailureWindow, TokenBucket, idle_check


def test_failure_window_blocks_the_sixth_and_forgets_after_the_window() -> None:
    window = FailureWindow(limit=5, window=60.0)
    for second in range(5):
        assert window.retry_after("alice", float(second)) is None
        window.record("alice", float(second))
    assert window.retry_after("alice", 5.0) == 55.0  # the first failure leaves at t=60
    assert window.retry_after("bob", 5.0) is None  # per key
    assert window.retry_after("alice", 60.0) is None
    assert window.retry_after("alice", 100.0) is None
    assert len(window) == 0 or window.retry_after("alice", 200.0) is None


@given(st.lists(st.floats(min_value=0, max_value=600, allow_nan=False), max_size=60))
def test_failure_window_never_allows_more_than_limit_in_any_window(times: list[float]) -> None:
    window = FailureWindow(limit=5, window=60.0)
    accepted: list[float] = []
    for now in sorted(times):
        if window.retry_after("k", now) is None:
            window.record("k", now)
            accepted.append(now)
    for i, start in enumerate(accepted):
        assert sum(1 for t in accepted[i:] if t < start + 60.0) <= 5


def test_failure_window_memory_is_bounded() -> None:
    window = FailureWindow(limit=5, window=60.0, max_keys=100)
    for i in range(1_000):
        window.record(f"user{i}", 0.0)
    assert len(window) == 100


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1,
                max_size=300))
def test_token_bucket_never_exceeds_burst_plus_rate(times: list[float]) -> None:
    bucket = TokenBucket(rate=10.0, burst=20.0)
    taken = [now for now in sorted(times) if bucket.take(now) is None]
    assert len(taken) <= 20 + 10.0 * max(times) + 1e-9  # the bucket starts full at t=0


def test_token_bucket_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=2.0, burst=1.0)
    assert bucket.take(0.0) is None
    wait = bucket.take(0.0)
    assert wait == 0.5
    assert bucket.take(0.5) is None


def test_idle_check_closes_only_sessionless_connections_and_never_spins() -> None:
    assert idle_check(10.0, last_activity=5.0, timeout=60.0, exempt=False) == 65.0
    assert idle_check(70.0, last_activity=5.0, timeout=60.0, exempt=False) is None
    # A logged-in connection idle past the timeout is looked at again later, not at once.
    again = idle_check(70.0, last_activity=5.0, timeout=60.0, exempt=True)
    assert again is not None and again > 70.0
