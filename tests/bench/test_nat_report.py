"""``overlay bench nat``'s arithmetic: per-pairing summaries and the two targets, from records."""

from __future__ import annotations

from overlay.bench.nat_report import Pairing, SessionResult, _quantile, summarise


def direct(pairing: str, number: int, t: float, attempts: int) -> SessionResult:
    return SessionResult(pairing, number, direct=True, time_to_direct_s=t, attempts=attempts,
                         delivered=True, clean_before=True, before_rtt_ms=2.0,
                         after_rtt_ms=1.0, before_bytes=1000, after_bytes=100,
                         before_forwarded=40, after_forwarded=0)


def relayed(pairing: str, number: int, *, delivered: bool = True) -> SessionResult:
    return SessionResult(pairing, number, attempts=3, delivered=delivered, before_rtt_ms=2.0,
                         after_rtt_ms=2.0, before_forwarded=40, after_forwarded=40)


def test_nearest_rank_quantiles_are_figures_some_session_had() -> None:
    assert _quantile([], 0.9) is None
    assert _quantile([3.0], 0.9) == 3.0
    values = [float(v) for v in range(1, 11)]
    assert _quantile(values, 0.9) == 9.0 and _quantile(values, 0.5) == 5.0
    assert _quantile(list(reversed(values)), 1.0) == 10.0


def test_expected_pairings_failures_and_hard_hard_delivery() -> None:
    pairings = (Pairing("easy", "easy"), Pairing("easy", "hard"), Pairing("hard", "hard"))
    assert [p.direct_expected for p in pairings] == [True, False, False]
    assert [p.name for p in pairings] == ["easy-easy", "easy-hard", "hard-hard"]
    assert Pairing("hard", "hard", firewall=False).name == "hard-hard-nofw"
    sessions = [direct("easy-easy", 1, 0.5, 1), direct("easy-easy", 2, 1.5, 2),
                SessionResult("easy-easy", 3, error="sender printed nothing in time"),
                relayed("easy-hard", 4), relayed("hard-hard", 5),
                relayed("hard-hard", 6, delivered=False)]
    report = summarise(pairings, 3, 20, sessions, stopped_early=False, wall_s=1.0)
    easy, easy_hard, hard = report.pairings
    # A failed session counts against the share: it did not end direct.
    assert (easy.sessions, easy.failed, easy.direct, easy.delivered) == (3, 1, 2, 2)
    assert easy.direct_share == 2 / 3
    assert (easy.time_to_direct_median_s, easy.time_to_direct_p90_s) == (1.0, 1.5)
    assert easy.attempts_per_success == 1.5 and easy.rtt_ratio == 0.5
    assert (easy.before_forwarded, easy.after_forwarded) == (40, 0)
    assert easy_hard.direct == 0 and easy_hard.attempts_per_success is None
    assert report.direct_share_where_expected == round(2 / 3, 4)  # easy-easy only
    assert report.hard_hard_delivered_share == 0.5
    assert hard.time_to_direct_median_s is None and hard.rtt_ratio is None
    assert report.to_json()["pairings"][0]["direct_share"] == 2 / 3
