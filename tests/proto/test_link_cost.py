"""The link cost on real RTT samples: exact sequences through LinkCost and the router's band.

Each test feeds samples to a :class:`LinkCost` and the estimates, as the node core
does, to a :class:`Router` with one neighbour, and checks the cost the router
uses after every sample: that is what routes are built on.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.ids import NodeId
from overlay.proto.routing import Router, RoutingConfig
from overlay.proto.rtt import LinkCost

PEER = NodeId(bytes(15) + b"\x01")
WINDOW = 30


def in_use(samples: list[float], window: int = WINDOW) -> list[int]:
    """The router's cost for the link after each sample (the node core's calls)."""
    router = Router(NodeId(bytes(16)), now=0.0, rng=random.Random(1))
    cost = LinkCost(window)
    out = []
    for i, sample in enumerate(samples):
        cost.observe(sample)
        assert cost.metric_us is not None
        if i == 0:
            router.add_neighbour(PEER, cost.metric_us, 0.0)
        else:
            router.update_cost(PEER, cost.metric_us, float(i), noise_us=cost.noise_us,
                               recent_high_us=cost.recent_high_us)
        got = router.neighbour_cost(PEER)
        assert got is not None
        out.append(got)
    return out


def estimates(samples: list[float], window: int = WINDOW) -> list[tuple[int | None, int]]:
    cost = LinkCost(window)
    out = []
    for sample in samples:
        cost.observe(sample)
        out.append((cost.metric_us, cost.noise_us))
    return out


def test_one_early_outlier_is_forgotten_at_the_second_sample() -> None:
    # The case: a first sample of 61.36 ms on a link of 0.866 ms.
    samples = [0.06136, 0.000866, 0.000870, 0.000880]
    assert estimates(samples) == [(30680, 0), (433, 0), (433, 0), (433, 0)]
    assert in_use(samples) == [30680, 433, 433, 433]


def test_several_early_outliers_are_followed_down_at_once() -> None:
    # Four slow PINGs while the peer starts, then a 0.866 ms link.  Until the window has
    # filled nothing has left it, its floor only falls, and there is no noise band yet.
    good = [0.000866, 0.000870, 0.000880, 0.000868] * 3
    samples = [0.060, 0.045, 0.050, 0.030, *good]
    assert in_use(samples) == [30000, 22500, 22500, 15000] + [433] * len(good)


def test_a_step_up_is_believed_after_four_samples_and_a_step_down_at_once() -> None:
    steady = [0.010, 0.0102, 0.0101, 0.0103, 0.0100, 0.0104, 0.0102, 0.0101] * 4
    up = [0.030, 0.0302, 0.0301, 0.0303, 0.0304]
    down = [0.012, 0.0121, 0.0122, 0.0121, 0.0120]
    got = in_use([*steady, *up, *down])
    assert got == [5000] * 35 + [15000] * 2 + [6000] * 5


def test_on_a_jittery_link_a_step_down_is_believed_once_the_samples_agree() -> None:
    # 10 ms RTT plus a repeating 0-2 ms of queueing, a full window of it: noise 2 ms.
    jitter = [0.0, 0.001, 0.002, 0.0005]
    level = [0.010 + j for j in jitter] * 8
    small = [0.0086 + j for j in jitter] * 4  # 0.7 ms one way down: its samples overlap
    large = [0.0065 + j for j in jitter] * 4  # 1.75 ms one way down: below the old ones
    samples = [*level, *small, *large]
    got = in_use(samples)
    assert estimates(samples)[31] == (5000, 2000)
    # The small step's samples reach above the cost in use: noise, as far as the band
    # can tell.  The large step's do not; the window straddles three levels, so its
    # spread (4.1 ms) would refuse it until the older samples leave, but once the last
    # four samples and most of the window lie below the cost in use it is believed.
    assert estimates(samples)[58] == (3250, 4100)
    assert got == [5000] * 59 + [3250] * 5


def test_one_outlier_later_on_changes_nothing() -> None:
    steady = [0.010, 0.0102, 0.0101, 0.0103] * 8
    samples = [*steady, 0.500, *steady]
    assert set(in_use(samples)) == {5000}
    assert max(noise for _, noise in estimates(samples)) == 300  # the 0.5 s sample set aside


def test_the_window_still_forgets_after_its_length() -> None:
    got = estimates([0.010] + [0.012] * 5, window=3)
    assert [m for m, _ in got] == [5000, 5000, 5000, 6000, 6000, 6000]


def _jittered(rng: random.Random, base: float, jitter: float, exponential: bool) -> float:
    if exponential:
        return base + rng.expovariate(1 / jitter)
    return base + rng.uniform(0, jitter) + rng.uniform(0, jitter)  # two one-way delays


def test_jitter_settles_within_the_first_window_and_never_flaps() -> None:
    # Uniform (bounded) and exponential (heavy-tailed) queueing, 0.5 to 10 ms on links
    # of 0.2 to 20 ms, seeded: the cost follows the floor down during the first window
    # and never moves again.
    for exponential in (False, True):
        for jitter in (0.0005, 0.002, 0.010):
            for base in (0.0002, 0.002, 0.020):
                for seed in range(4):
                    rng = random.Random(seed)
                    samples = [_jittered(rng, base, jitter, exponential) for _ in range(2000)]
                    got = in_use(samples)
                    late = {i for i in range(WINDOW, len(got)) if got[i] != got[i - 1]}
                    assert not late, (exponential, jitter, base, seed, sorted(late))
                    # ...and the cost is within the fixed band and a quarter of the
                    # jitter of the true one-way latency (measured: 0.18 of it at most).
                    fixed = max(got[-1] * 0.1, 100)
                    assert got[-1] - base / 2 * 1e6 <= fixed + 0.25 * jitter * 1e6


_CONFIG = RoutingConfig()


def _within_fixed_band(cost: int, true_us: int) -> bool:
    band = max(cost * _CONFIG.cost_hysteresis, _CONFIG.cost_floor_us)
    return abs(cost - true_us) <= band


@settings(max_examples=300, deadline=None)
@given(base=st.floats(0.0001, 0.2), extra=st.lists(st.floats(0.0, 1.0), max_size=40))
def test_any_outliers_are_forgotten_after_four_quiet_samples(base: float,
                                                             extra: list[float]) -> None:
    # Whatever came before (samples at or above the true RTT: delay is only ever added),
    # four exact samples put the cost in use within the fixed band of the truth.
    got = in_use([base + e for e in extra] + [base] * 4)
    assert _within_fixed_band(got[-1], max(1, round(base / 2 * 1e6)))


@settings(max_examples=300, deadline=None)
@given(base=st.floats(0.0001, 0.2), before=st.lists(st.floats(0.00001, 1.0), max_size=40))
def test_any_history_is_forgotten_after_one_window_at_the_new_level(
        base: float, before: list[float]) -> None:
    # A real change in either direction from any history: after a window of samples
    # at the new level the cost in use is within the fixed band of it.
    got = in_use([*before, *[base] * WINDOW])
    assert _within_fixed_band(got[-1], max(1, round(base / 2 * 1e6)))
