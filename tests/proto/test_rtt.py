"""RFC 6298 arithmetic on fixed samples."""

from __future__ import annotations

import pytest

from overlay.proto.rtt import RttConfig, RttEstimator


def test_first_sample_sets_srtt_and_half_rttvar() -> None:
    est = RttEstimator(RttConfig(min_rto=0.0))
    est.observe(0.100)
    assert est.srtt == pytest.approx(0.100)
    assert est.rttvar == pytest.approx(0.050)
    assert est.rto == pytest.approx(0.100 + 4 * 0.050)


def test_later_samples_follow_rfc6298_section_2_3() -> None:
    est = RttEstimator(RttConfig(min_rto=0.0))
    srtt, rttvar = 0.100, 0.050
    est.observe(0.100)
    for sample in (0.120, 0.080, 0.300, 0.090):
        rttvar = 0.75 * rttvar + 0.25 * abs(srtt - sample)  # RTTVAR uses the old SRTT
        srtt = 0.875 * srtt + 0.125 * sample
        est.observe(sample)
        assert est.rttvar == pytest.approx(rttvar)
        assert est.srtt == pytest.approx(srtt)
        assert est.rto == pytest.approx(srtt + max(0.001, 4 * rttvar))


def test_hand_computed_values() -> None:
    est = RttEstimator(RttConfig(min_rto=0.0))
    est.observe(1.0)
    est.observe(2.0)
    # RTTVAR = 3/4 * 0.5 + 1/4 * |1 - 2| = 0.625; SRTT = 7/8 * 1 + 1/8 * 2 = 1.125
    assert est.rttvar == pytest.approx(0.625)
    assert est.srtt == pytest.approx(1.125)
    assert est.rto == pytest.approx(1.125 + 2.5)


def test_granularity_floor_and_rto_clamps() -> None:
    est = RttEstimator(RttConfig(min_rto=0.0, granularity=0.01))
    for _ in range(200):
        est.observe(0.5)  # RTTVAR decays towards 0: the clock granularity G takes over
    assert est.rto == pytest.approx(0.5 + 0.01, abs=1e-6)
    clamped = RttEstimator(RttConfig(min_rto=0.2, max_rto=3.0))
    clamped.observe(0.001)
    assert clamped.rto == 0.2
    clamped.observe(10.0)
    assert clamped.rto == 3.0


def test_backoff_doubles_up_to_max_and_next_sample_recomputes() -> None:
    est = RttEstimator(RttConfig(initial_rto=1.0, min_rto=0.2, max_rto=5.0))
    assert est.rto == 1.0  # RFC 6298 2.1: before any sample
    est.backoff()
    est.backoff()
    assert est.rto == 4.0
    est.backoff()
    assert est.rto == 5.0
    est.observe(0.1)
    assert est.rto == pytest.approx(0.3)


# --- the link cost ---------------------------------------------------------------------

from overlay.proto.rtt import LinkCost  # noqa: E402


def _costs(samples: list[float], window: int = 30) -> list[tuple[int | None, int]]:
    cost = LinkCost(window)
    out = []
    for sample in samples:
        cost.observe(sample)
        out.append((cost.metric_us, cost.noise_us))
    return out


def test_an_early_outlier_neither_holds_the_metric_nor_widens_the_noise() -> None:
    # The case: a first sample of 61.36 ms on a link of 0.866 ms.
    got = _costs([0.06136, 0.000866, 0.000870, 0.000880])
    assert got == [(30680, 0), (433, 0), (433, 2), (433, 7)]


def test_a_router_adopts_the_real_cost_at_the_second_sample() -> None:
    from overlay.ids import NodeId
    from overlay.proto.routing import Router

    router = Router(NodeId(bytes(16)), now=0.0, rng=__import__("random").Random(1))
    peer = NodeId(bytes(15) + b"\x01")
    cost = LinkCost(30)
    cost.observe(0.06136)
    assert cost.metric_us is not None
    router.add_neighbour(peer, cost.metric_us, 0.0)
    cost.observe(0.000866)
    assert cost.metric_us is not None
    router.update_cost(peer, cost.metric_us, 1.0, noise_us=cost.noise_us)
    assert router.neighbour_cost(peer) == 433


def test_a_real_increase_is_believed_after_four_samples_and_a_decrease_at_once() -> None:
    steady = [0.010, 0.0102, 0.0101, 0.0103, 0.0100, 0.0104, 0.0102, 0.0101]
    got = _costs([*steady, 0.030, 0.0302, 0.0301, 0.0303, 0.0304, 0.012])
    assert [m for m, _ in got] == [5000] * 8 + [5000, 5000, 5000, 15000, 15000, 6000]
    assert got[11][1] == 100  # the new level's own spread (0.2 ms RTT, without its largest)


def test_one_outlier_later_on_changes_nothing() -> None:
    steady = [0.010, 0.0102, 0.0101, 0.0103] * 3
    got = _costs([*steady, 0.500, *steady])
    assert {m for m, _ in got} == {5000}
    assert max(n for _, n in got) == 150  # the 0.5 s sample is set aside


def test_jitter_never_passes_for_a_level_shift_and_routes_do_not_flap() -> None:
    # 1 ms base RTT plus uniform jitter of up to 4 ms, seeded: the hysteresis of the
    # router (10 %, 100 us, the noise) sees the metric settle once and never move again.
    rng = __import__("random").Random(7)
    samples = [0.001 + rng.uniform(0.0, 0.004) for _ in range(3000)]
    cost = LinkCost(30)
    in_use: int | None = None
    changes = []
    for i, sample in enumerate(samples):
        cost.observe(sample)
        metric = cost.metric_us
        assert metric is not None
        band = max((in_use or 0) * 0.1, 100, cost.noise_us)
        if in_use is None or abs(metric - in_use) > band:
            in_use = metric
            changes.append(i)
        assert cost.samples >= min(i + 1, 8)  # no level shift: the window never restarts
    assert changes == [0, 1]
    # Settled at the second sample: the noise band (about 2 ms one way) keeps it there.
    assert in_use == 802


def test_the_window_still_forgets_after_its_length() -> None:
    got = _costs([0.010] + [0.012] * 5, window=3)
    assert [m for m, _ in got] == [5000, 5000, 5000, 6000, 6000, 6000]
