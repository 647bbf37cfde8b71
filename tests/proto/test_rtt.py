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
