"""The hole-punch coordinator: exact virtual times, stale messages, bounded attempts and
tries, which inbound connections are a punch."""

from __future__ import annotations

import heapq
import ipaddress
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import LocalProtocolError, MalformedMessage
from overlay.proto.punch import (
    Dial,
    GaveUp,
    NatMapping,
    PunchConfig,
    PunchCoordinator,
    PunchKind,
    PunchMessage,
    PunchState,
    SendPunch,
    classify_mapping,
    direct_expected,
    worth_dialling,
)
from tests.proto.test_vectors import VALID

A_CANDIDATES = (("203.0.113.1", 40001), ("100.64.1.10", 40001))
B_CANDIDATES = (("203.0.113.2", 40002),)


def coordinator(initiator: bool, config: PunchConfig | None = None,
                jitter: float = 0.5) -> PunchCoordinator:
    candidates = A_CANDIDATES if initiator else B_CANDIDATES
    return PunchCoordinator(initiator=initiator, candidates=candidates,
                            random=lambda: jitter, config=config)


@dataclass
class RelayedPair:
    """Two coordinators joined by a relayed path with a fixed one-way delay."""

    delay: float
    a: PunchCoordinator = field(default_factory=lambda: coordinator(True))
    b: PunchCoordinator = field(default_factory=lambda: coordinator(False))
    now: float = 0.0
    dials: list[tuple[float, str, Dial]] = field(default_factory=list)
    gave_up: list[tuple[float, GaveUp]] = field(default_factory=list)
    _in_flight: list[tuple[float, int, str, PunchMessage]] = field(default_factory=list)
    _order: int = 0

    def collect(self) -> None:
        for name, side in (("a", self.a), ("b", self.b)):
            for action in side.actions():
                if isinstance(action, SendPunch):
                    self._order += 1
                    to = "b" if name == "a" else "a"
                    heapq.heappush(self._in_flight,
                                   (self.now + self.delay, self._order, to, action.message))
                elif isinstance(action, Dial):
                    self.dials.append((self.now, name, action))
                else:
                    self.gave_up.append((self.now, action))

    def run_until(self, end: float, on_dial: object = None) -> None:
        self.collect()
        while True:
            times = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            if self._in_flight:
                times.append(self._in_flight[0][0])
            if not times or min(times) > end:
                self.now = end
                return
            self.now = min(times)
            while self._in_flight and self._in_flight[0][0] <= self.now:
                _, _, to, message = heapq.heappop(self._in_flight)
                (self.a if to == "a" else self.b).receive(message, self.now)
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
            self.collect()


def test_both_sides_dial_at_the_same_instant() -> None:
    pair = RelayedPair(delay=0.040)
    pair.a.start(0.0)
    pair.run_until(1.0)
    # CONNECT reaches B at 40 ms, the reply A at 80 ms (rtt 80 ms), SYNC B at 120 ms;
    # A waits rtt / 2 after sending SYNC: both dial at 120 ms.
    assert pair.a.rtt == pytest.approx(0.080)
    assert [(round(t, 6), who) for t, who, _ in pair.dials] == [(0.12, "a"), (0.12, "b")]
    by_side = {who: dial for _, who, dial in pair.dials}
    assert by_side["a"].candidates == B_CANDIDATES
    assert by_side["b"].candidates == A_CANDIDATES
    assert pair.a.state is PunchState.DIALING and pair.b.state is PunchState.DIALING


def test_a_successful_dial_rests_both_sides() -> None:
    pair = RelayedPair(delay=0.010)
    pair.a.start(0.0)
    pair.run_until(0.030)
    pair.a.dial_result(1, True, 0.031)
    pair.b.direct_up()  # the same link, seen from B
    assert pair.a.state is PunchState.DIRECT and pair.b.state is PunchState.DIRECT
    assert pair.a.get_timer() is None and pair.b.get_timer() is None
    pair.run_until(10_000.0)
    assert len(pair.dials) == 2 and not pair.gave_up


def test_three_failed_attempts_then_backoff_with_jitter() -> None:
    config = PunchConfig(attempts=3, dial_timeout=2.0, retry_after=60.0, retry_max=200.0)
    pair = RelayedPair(delay=0.050, a=coordinator(True, config, jitter=0.25),
                       b=coordinator(False, config))
    pair.a.start(0.0)
    pair.run_until(30.0)  # nobody reports a dial result: each dial times out
    a_dials = [(round(t, 6), d.attempt) for t, who, d in pair.dials if who == "a"]
    # Attempt n starts when attempt n - 1's dial times out: 0.15 + 2 s later, plus 0.15 s.
    assert a_dials == [(0.15, 1), (2.3, 2), (4.45, 3)]
    assert [d.attempt for _, who, d in pair.dials if who == "b"] == [1, 2, 3]
    assert len(pair.gave_up) == 1
    at, gave_up = pair.gave_up[0]
    assert at == pytest.approx(6.45)
    assert gave_up.attempts == 3
    assert gave_up.retry_at == pytest.approx(6.45 + 60.0 * 0.75)
    assert pair.a.state is PunchState.RELAYED
    # The next round starts on time, fails the same way, and backs off twice as long;
    # the third round's back-off is capped at retry_max.
    pair.run_until(200.0)
    assert [round(t, 6) for t, who, d in pair.dials if who == "a" and d.attempt == 1] == [
        0.15, round(51.45 + 0.15, 6), round(57.9 + 90.0 + 0.15, 6)]
    assert [round(g.retry_at - t, 6) for t, g in pair.gave_up] == [45.0, 90.0, 150.0]


def test_a_failed_dial_report_starts_the_next_attempt_at_once() -> None:
    pair = RelayedPair(delay=0.010)
    pair.a.start(0.0)
    pair.run_until(0.030)
    pair.a.dial_result(1, False, 0.035)
    assert [a.message.kind for a in pair.a.actions() if isinstance(a, SendPunch)] == [
        PunchKind.CONNECT]
    assert pair.a.attempt == 2 and pair.a.state is PunchState.AWAIT_REPLY


def dialling_pair(config: PunchConfig) -> RelayedPair:
    """A pair whose sides both dial at 0.12 s (relayed one-way delay 40 ms)."""
    pair = RelayedPair(delay=0.040, a=coordinator(True, config), b=coordinator(False, config))
    pair.a.start(0.0)
    pair.run_until(0.12)
    assert [(round(t, 6), who, d.redial) for t, who, d in pair.dials] == [
        (0.12, "a", 0), (0.12, "b", 0)]
    pair.dials.clear()
    return pair


def test_a_refused_candidate_is_tried_again_after_the_jittered_pause_within_the_budget(
        ) -> None:
    pair = dialling_pair(PunchConfig(redials=2, redial_pause=0.002))
    a, target = pair.a, B_CANDIDATES[0]
    # Refused at 121 ms: tried again 2 ms x (0.5 + 0.5) later, as try number 1.
    a.dial_failed(1, target, 0.121)
    assert a.get_timer() == pytest.approx(0.123)
    pair.run_until(0.1229)
    assert pair.dials == []
    pair.run_until(0.123)
    assert [(round(t, 6), d.candidates, d.attempt, d.redial) for t, _, d in pair.dials] == [
        (0.123, (target,), 1, 1)]
    a.dial_failed(1, target, 0.124)
    a.dial_failed(1, target, 0.124)  # a second report of the same try: ignored
    pair.run_until(0.126)
    assert [d.redial for _, _, d in pair.dials] == [1, 2]
    assert a.state is PunchState.DIALING and a.attempt == 1
    # The budget is spent: the third refusal ends the attempt and the next begins at once.
    a.dial_failed(1, target, 0.127)
    assert (a.state, a.attempt) == (PunchState.AWAIT_REPLY, 2)
    assert [x.message.kind for x in a.actions() if isinstance(x, SendPunch)] == [
        PunchKind.CONNECT]


def test_no_try_starts_after_the_redial_window() -> None:
    pair = dialling_pair(PunchConfig(redial_pause=0.002, redial_window=0.010))
    a, target = pair.a, B_CANDIDATES[0]
    a.dial_failed(1, target, 0.127)  # 0.129 <= 0.12 + 0.01: once more
    pair.run_until(0.129)
    assert [(round(t, 6), d.redial) for t, _, d in pair.dials] == [(0.129, 1)]
    a.dial_failed(1, target, 0.1285 + 0.001)  # a try at 0.1315 would be too late
    assert (a.state, a.attempt) == (PunchState.AWAIT_REPLY, 2)


def test_an_attempt_fails_only_when_every_candidate_has_given_up() -> None:
    pair = dialling_pair(PunchConfig(redials=0))
    b = pair.b  # dials A's two candidates
    b.dial_failed(1, A_CANDIDATES[0], 0.121)
    assert b.state is PunchState.DIALING and b.get_timer() == pytest.approx(0.12 + 5.0)
    b.dial_failed(1, ("198.51.100.9", 1), 0.122)  # not a candidate of this dial: ignored
    assert b.state is PunchState.DIALING
    b.dial_failed(1, A_CANDIDATES[1], 0.6)
    assert b.state is PunchState.RELAYED and b.get_timer() is None  # the responder waits


def test_tries_stop_when_the_link_is_up_and_a_late_timer_does_nothing() -> None:
    pair = dialling_pair(PunchConfig(redial_pause=0.002))
    a = pair.a
    a.dial_failed(1, B_CANDIDATES[0], 0.121)
    a.direct_up()  # e.g. the peer's SYN accepted on our outgoing port
    assert a.get_timer() is None
    a.handle_timer(0.123)
    assert a.actions() == [] and a.state is PunchState.DIRECT
    a.dial_failed(1, B_CANDIDATES[0], 0.124)
    assert a.get_timer() is None and a.actions() == []


def test_the_dial_times_out_at_dial_timeout_with_tries_pending() -> None:
    pair = dialling_pair(PunchConfig(dial_timeout=1.0, redial_pause=0.002))
    a = pair.a
    pair.run_until(1.119)
    assert a.state is PunchState.DIALING and a.get_timer() == pytest.approx(1.12)
    pair.run_until(1.12)
    assert (a.state, a.attempt) == (PunchState.AWAIT_REPLY, 2)


def test_an_inbound_connection_is_accepted_only_from_the_peers_candidates() -> None:
    b = coordinator(False)
    assert not b.accepts(A_CANDIDATES[0])  # no punch yet: nothing is expected
    b.receive(PunchMessage(PunchKind.CONNECT, 1, A_CANDIDATES), 0.0)
    # Before SYNC (the initiator's SYN may come first on a fast path) and after:
    assert b.accepts(A_CANDIDATES[0]) and b.accepts(A_CANDIDATES[1])
    assert not b.accepts(("203.0.113.1", 40002)) and not b.accepts(("198.51.100.7", 40001))
    b.receive(PunchMessage(PunchKind.SYNC, 1), 0.1)
    assert b.accepts(A_CANDIDATES[0])
    b.direct_up()
    assert not b.accepts(A_CANDIDATES[0])  # direct already: a second link is not wanted


def test_a_lost_reply_times_out_and_a_late_one_is_ignored() -> None:
    a = coordinator(True, PunchConfig(answer_timeout=1.0))
    a.start(0.0)
    assert [type(x) for x in a.actions()] == [SendPunch]
    a.handle_timer(1.0)  # no reply: attempt 2
    assert a.attempt == 2
    a.actions()
    a.receive(PunchMessage(PunchKind.CONNECT_REPLY, 1, B_CANDIDATES), 1.2)  # stale
    assert a.state is PunchState.AWAIT_REPLY and not a.actions()
    a.receive(PunchMessage(PunchKind.CONNECT_REPLY, 2, B_CANDIDATES), 1.3)
    assert a.rtt == pytest.approx(0.3)
    assert [x.message.kind for x in a.actions() if isinstance(x, SendPunch)] == [PunchKind.SYNC]
    assert a.get_timer() == pytest.approx(1.45)


def test_the_responder_ignores_sync_without_connect_and_waits_bounded() -> None:
    b = coordinator(False, PunchConfig(answer_timeout=1.0))
    b.receive(PunchMessage(PunchKind.SYNC, 1), 0.0)
    assert not b.actions() and b.get_timer() is None
    b.start(0.0)  # the responder never starts a round itself
    assert not b.actions()
    b.receive(PunchMessage(PunchKind.CONNECT, 1, A_CANDIDATES), 0.5)
    assert [x.message.kind for x in b.actions() if isinstance(x, SendPunch)] == [
        PunchKind.CONNECT_REPLY]
    b.handle_timer(1.5)  # SYNC lost
    assert b.state is PunchState.RELAYED and b.get_timer() is None
    b.receive(PunchMessage(PunchKind.SYNC, 1), 1.6)
    assert not b.actions()


def test_direct_down_retries_later() -> None:
    a = coordinator(True, PunchConfig(retry_after=30.0))
    a.direct_up()
    a.direct_down(100.0)
    assert a.state is PunchState.RELAYED and a.get_timer() == 130.0
    a.handle_timer(130.0)
    assert (a.state, a.attempt) == (PunchState.AWAIT_REPLY, 1)


def test_a_start_delay_holds_the_first_attempt_off_exactly_that_long() -> None:
    a = coordinator(True, PunchConfig(start_delay=3.0))
    a.start(10.0)
    assert (a.state, a.get_timer(), a.actions()) == (PunchState.RELAYED, 13.0, [])
    a.handle_timer(12.999)
    assert a.state is PunchState.RELAYED and a.actions() == []
    a.handle_timer(13.0)
    [sent] = a.actions()
    assert isinstance(sent, SendPunch) and sent.message.kind is PunchKind.CONNECT
    assert (a.state, a.attempt) == (PunchState.AWAIT_REPLY, 1)
    b = coordinator(False, PunchConfig(start_delay=3.0))
    b.start(10.0)  # the responder waits for CONNECT, delay or not
    assert (b.state, b.get_timer()) == (PunchState.RELAYED, None)


def test_message_round_trip_and_refusals() -> None:
    message = PunchMessage(PunchKind.CONNECT, 3, A_CANDIDATES)
    assert PunchMessage.from_body(message.to_body()) == message
    assert PunchMessage(PunchKind.SYNC, 1).to_body() == [2, 1, []]
    for bad in (None, [0, 1], [9, 1, []], [0, 0, []], [0, 256, []], [True, 1, []],
                [0, 1, [["h", 0]]], [0, 1, [["", 1]]], [0, 1, [["h", 1, 2]]],
                [0, 1, [["h", 1]] * 9], [0, 1, "x"]):
        with pytest.raises(MalformedMessage):
            PunchMessage.from_body(bad)


def test_a_candidate_host_is_an_address_never_a_name() -> None:
    # A name would make the dialling peer ask its resolver (and some text makes the
    # resolver raise UnicodeError, which once escaped the punch driver).
    for host in ("a" * 64, "..", "example.com", "localhost", "0.0.0.0", "::", "224.0.0.1",
                 "ff02::1", "1.2.3", "203.0.113.5 ", "2001:db8::1" + "0" * 40):
        with pytest.raises(MalformedMessage, match="IPv4 or IPv6 address"):
            PunchMessage.from_body([0, 1, [[host, 7000]]])
    for host in ("127.0.0.1", "203.0.113.5", "::1", "2001:db8::1", "::ffff:192.0.2.1"):
        assert PunchMessage.from_body([0, 1, [[host, 7000]]]).candidates == ((host, 7000),)


def test_a_loopback_candidate_is_dialled_only_from_loopback() -> None:
    lab = [("203.0.113.1", 40000), ("100.64.1.10", 40000)]
    assert worth_dialling(("203.0.113.2", 41000), lab)
    assert not worth_dialling(("127.0.0.1", 22), lab)  # this machine's ssh, not a peer
    assert not worth_dialling(("::1", 22), lab)
    assert not worth_dialling(("127.0.0.1", 41000), [])  # nothing known of ourselves yet
    assert worth_dialling(("127.0.0.1", 41000), [("127.0.0.1", 40000)])  # overlay demo


def test_a_loopback_candidate_off_loopback_is_not_dialled_accepted_or_waited_for() -> None:
    # B is on the lab's addresses; A's CONNECT names a loopback candidate besides a real
    # one.  B dials only the real one, so when that fails the attempt fails at once,
    # not after dial_timeout waiting for a dial it never made.
    b = PunchCoordinator(initiator=False, candidates=B_CANDIDATES, random=lambda: 0.5,
                         config=PunchConfig(redials=0))
    b.receive(PunchMessage(PunchKind.CONNECT, 1, (("127.0.0.1", 22), *A_CANDIDATES)), 0.0)
    b.receive(PunchMessage(PunchKind.SYNC, 1), 0.1)
    [dial] = [a for a in b.actions() if isinstance(a, Dial)]
    assert dial.candidates == A_CANDIDATES
    assert not b.accepts(("127.0.0.1", 22)) and b.accepts(A_CANDIDATES[0])
    for candidate in A_CANDIDATES:
        b.dial_failed(1, candidate, 0.2)
    assert b.state is PunchState.RELAYED


@given(st.text(max_size=80))
def test_any_host_text_is_an_address_or_malformed(host: str) -> None:
    try:
        [(parsed, _)] = PunchMessage.from_body([1, 1, [[host, 1]]]).candidates
    except MalformedMessage:
        return
    assert ipaddress.ip_address(parsed)


def test_config_refuses_nonsense() -> None:
    for kwargs in ({"attempts": 0}, {"dial_timeout": 0}, {"retry_after": 10, "retry_max": 5},
                   {"start_delay": -1}, {"redials": -1}, {"redial_pause": 0},
                   {"redial_window": 0}, {"dial_timeout": 2.0, "redial_window": 2.5}):
        with pytest.raises(LocalProtocolError):
            PunchConfig(**kwargs)


def test_nat_classification_and_expectation() -> None:
    local = ("100.64.1.10", 40001)
    assert classify_mapping(local, [("203.0.113.1", 40001)]) is NatMapping.UNKNOWN
    assert classify_mapping(local, [local, local]) is NatMapping.NONE
    same = [("203.0.113.1", 40001), ("203.0.113.1", 40001)]
    assert classify_mapping(local, same) is NatMapping.ENDPOINT_INDEPENDENT
    moved = [("203.0.113.1", 40001), ("203.0.113.1", 51234)]
    assert classify_mapping(local, moved) is NatMapping.ENDPOINT_DEPENDENT
    easy, hard = NatMapping.ENDPOINT_INDEPENDENT, NatMapping.ENDPOINT_DEPENDENT
    assert direct_expected(easy, easy)
    assert not direct_expected(easy, hard) and not direct_expected(hard, hard)
    assert direct_expected(NatMapping.NONE, hard)
    assert not direct_expected(NatMapping.UNKNOWN, easy)


EVENTS = st.lists(st.tuples(
    st.sampled_from(["a", "b"]),
    st.sampled_from(["start", "connect", "reply", "sync", "ok", "fail", "refused", "up", "down",
                     "timer"]),
    st.integers(1, 4),
    st.floats(0.0, 5.0),
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_any_event_order_keeps_the_bounds(events: list[tuple[str, str, int, float]]) -> None:
    """Whatever arrives in whatever order: no exception, attempts within the bound,
    time never scheduled in the past, a dial only after the peer's candidates."""
    config = PunchConfig(attempts=3)
    sides = {"a": coordinator(True, config), "b": coordinator(False, config)}
    now = 0.0
    kinds = {"connect": PunchKind.CONNECT, "reply": PunchKind.CONNECT_REPLY,
             "sync": PunchKind.SYNC}
    for who, event, attempt, step in events:
        now += step
        side = sides[who]
        before = side.get_timer()
        if event == "start":
            side.start(now)
        elif event in kinds:
            side.receive(PunchMessage(kinds[event], attempt, B_CANDIDATES), now)
        elif event in ("ok", "fail"):
            side.dial_result(attempt, event == "ok", now)
        elif event == "refused":
            side.dial_failed(attempt, B_CANDIDATES[0], now)
        elif event == "up":
            side.direct_up()
        elif event == "down":
            side.direct_down(now)
        else:
            timer = side.get_timer()
            if timer is not None:
                now = max(now, timer)
                side.handle_timer(now)
        assert 0 <= side.attempt <= 4
        if side.initiator:
            assert side.attempt <= config.attempts
        timer = side.get_timer()
        assert timer is None or timer == before or timer >= now  # never set in the past
        if side.state is PunchState.DIRECT:
            assert timer is None
        for action in side.actions():
            if isinstance(action, Dial):
                assert action.candidates == B_CANDIDATES
                assert 0 <= action.redial <= config.redials
            if isinstance(action, GaveUp):
                assert action.retry_at > now


def test_the_documented_punch_vectors_are_punch_messages() -> None:
    """docs/protocol.md's PUNCH vectors carry bodies the punch codec reads back exactly."""
    bodies = [v.expected_message() for v in VALID if v.name.startswith("PUNCH")]
    parsed = [PunchMessage.from_body(getattr(m, "body", None)) for m in bodies]
    assert [(p.kind, p.attempt) for p in parsed] == [(PunchKind.CONNECT, 1),
                                                     (PunchKind.OBSERVED, 1)]
    assert parsed[1].candidates == (("203.0.113.2", 40777),)
    assert [p.to_body() for p in parsed] == [getattr(m, "body", None) for m in bodies]


@pytest.mark.parametrize("kind", [PunchKind.OBSERVE, PunchKind.OBSERVED])
def test_observe_messages_leave_the_coordinator_alone(kind: PunchKind) -> None:
    """OBSERVE and OBSERVED are between a client and its supernode, not part of a punch."""
    for side in (coordinator(initiator=True), coordinator(initiator=False)):
        side.start(0.0)
        side.actions()
        before = (side.state, side.get_timer())
        side.receive(PunchMessage(kind, 1, B_CANDIDATES if kind is PunchKind.OBSERVED else ()),
                     1.0)
        assert (side.state, side.get_timer()) == before and side.actions() == []
