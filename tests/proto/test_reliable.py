"""The reliable channel core over a hostile wire: loss, duplication, reordering, delay."""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from overlay.errors import MalformedMessage
from overlay.proto.reliable import (
    MAX_SEGMENT_PAYLOAD,
    ChannelConfig,
    ChannelState,
    Closed,
    Opened,
    PeerFinished,
    ReliableChannel,
    Segment,
    SegmentKind,
    unwrap,
)


@dataclass(order=True)
class _Flight:
    at: float
    order: int
    to: int = field(compare=False)
    body: list = field(compare=False)  # type: ignore[type-arg]


class Wire:
    """Two channel ends and a lossy network between them, in virtual time.

    Segments cross as encoded bodies (so the codec is exercised too).  ``cut``
    makes the wire drop everything from then on: the peer is truly gone.
    """

    def __init__(self, seed: int, *, loss: float = 0.0, duplicate: float = 0.0,
                 delay: float = 0.01, spread: float = 0.0,
                 config: ChannelConfig | None = None) -> None:
        self.rng = random.Random(seed)
        self.loss, self.duplicate, self.delay, self.spread = loss, duplicate, delay, spread
        self.now = 0.0
        self.cut = False
        self.config = config or ChannelConfig()
        self.ends: list[ReliableChannel | None] = [
            ReliableChannel(7, isn=self.rng.getrandbits(32), now=0.0, config=self.config),
            None,
        ]
        self.events: list[list[object]] = [[], []]
        self.received: list[list[bytes]] = [[], []]
        self._queue: list[_Flight] = []
        self._order = itertools.count()
        self._pump(0)

    def _pump(self, side: int) -> None:
        end = self.ends[side]
        if end is None:
            return
        while (event := end.next_event()) is not None:
            self.events[side].append(event)
        while (message := end.next_message()) is not None:
            self.received[side].append(message)
        for segment in end.segments_to_send():
            copies = 1 + (self.rng.random() < self.duplicate)
            for _ in range(copies):
                if self.cut or self.rng.random() < self.loss:
                    continue
                at = self.now + self.delay + self.rng.uniform(0, self.spread)
                heapq.heappush(self._queue, _Flight(at, next(self._order), 1 - side,
                                                    segment.to_body()))

    def run_until(self, end_time: float) -> None:
        while True:
            timers = [(e.get_timer(), i) for i, e in enumerate(self.ends)
                      if e is not None and e.get_timer() is not None]
            next_timer = min(timers, default=(float("inf"), -1))
            next_flight = self._queue[0].at if self._queue else float("inf")
            at = min(next_timer[0], next_flight)  # type: ignore[type-var]
            if at > end_time:
                self.now = end_time
                return
            self.now = at  # type: ignore[assignment]
            if next_flight <= next_timer[0]:  # type: ignore[operator]
                flight = heapq.heappop(self._queue)
                segment = Segment.from_body(flight.body)
                end = self.ends[flight.to]
                if end is None:
                    if segment.kind is not SegmentKind.SYN:
                        continue
                    end = ReliableChannel.accept(segment, isn=self.rng.getrandbits(32),
                                                 now=self.now, config=self.config)
                    self.ends[flight.to] = end
                else:
                    end.receive_segment(segment, self.now)
                self._pump(flight.to)
            else:
                side = next_timer[1]
                end = self.ends[side]
                assert end is not None
                end.handle_timer(self.now)
                self._pump(side)

    def send(self, side: int, message: bytes) -> None:
        end = self.ends[side]
        assert end is not None
        end.send(message, self.now)
        self._pump(side)

    def close(self, side: int) -> None:
        end = self.ends[side]
        assert end is not None
        end.close(self.now)
        self._pump(side)


def messages_strategy() -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=60)


def test_handshake_opens_both_ends_with_three_segments() -> None:
    wire = Wire(seed=1)
    wire.run_until(1.0)
    a, b = wire.ends
    assert a is not None and b is not None
    assert a.state is b.state is ChannelState.ESTABLISHED
    assert Opened() in wire.events[0] and Opened() in wire.events[1]
    assert a.counters.segments_sent == 2 and b.counters.segments_sent == 1  # SYN, ACK / SYN_ACK


def test_messages_arrive_in_order_on_a_clean_wire_and_close_is_orderly() -> None:
    wire = Wire(seed=2)
    for i in range(100):
        wire.send(0, f"message {i}".encode())
    wire.run_until(5.0)
    assert wire.received[1] == [f"message {i}".encode() for i in range(100)]
    wire.close(0)
    wire.run_until(6.0)
    wire.close(1)
    wire.run_until(10.0)
    assert PeerFinished() in wire.events[1] and PeerFinished() in wire.events[0]
    assert Closed(None) in wire.events[0] and Closed(None) in wire.events[1]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), messages=messages_strategy(),
       loss=st.floats(0.0, 0.3), duplicate=st.floats(0.0, 0.1), spread=st.floats(0.0, 0.2))
def test_every_message_arrives_exactly_once_in_order_through_loss_duplication_reordering(
    seed: int, messages: list[bytes], loss: float, duplicate: float, spread: float,
) -> None:
    wire = Wire(seed, loss=loss, duplicate=duplicate, spread=spread)
    for message in messages:
        wire.send(0, message)
    wire.close(0)
    wire.run_until(600.0)
    assert wire.received[1] == messages
    errors = [e for e in wire.events[0] + wire.events[1] if isinstance(e, Closed) and e.error]
    assert errors == [], "a live peer must never be reported unreachable"


def test_large_messages_are_segmented_and_reassembled() -> None:
    wire = Wire(seed=3, loss=0.1, spread=0.05)
    big = bytes(random.Random(3).randbytes(5 * MAX_SEGMENT_PAYLOAD + 123))
    wire.send(0, big)
    wire.send(0, b"after")
    wire.run_until(120.0)
    assert wire.received[1] == [big, b"after"]


def test_a_peer_that_is_gone_is_reported_unreachable() -> None:
    wire = Wire(seed=4)
    wire.run_until(1.0)
    wire.cut = True
    wire.send(0, b"into the void")
    wire.run_until(10_000.0)
    [closed] = [e for e in wire.events[0] if isinstance(e, Closed)]
    assert closed.error is not None and "unreachable" in closed.error


def test_an_idle_channel_notices_a_silent_peer_by_keepalive() -> None:
    config = ChannelConfig(keepalive_interval=1.0, probe_interval=0.25, unreachable_after=5.0)
    wire = Wire(seed=5, config=config)
    wire.run_until(60.0)  # idle but alive: probes keep it open
    assert wire.ends[0] is not None and wire.ends[0].state is ChannelState.ESTABLISHED
    wire.cut = True
    cut_at = wire.now
    wire.run_until(cut_at + 20.0)
    [closed] = [e for e in wire.events[0] if isinstance(e, Closed)]
    assert closed.error is not None and "nothing heard for 5 s" in closed.error


def test_flow_control_never_overruns_a_slow_reader() -> None:
    config = ChannelConfig(receive_window=4, max_in_flight=64)
    wire = Wire(seed=6, config=config)
    wire.run_until(1.0)
    receiver = wire.ends[1]
    assert receiver is not None
    original = wire._pump

    def lazy_pump(side: int) -> None:  # the receiving application reads nothing
        if side == 1:
            end = wire.ends[1]
            assert end is not None
            while end.next_event() is not None:
                pass
            for segment in end.segments_to_send():
                heapq.heappush(wire._queue, _Flight(wire.now + wire.delay,
                                                    next(wire._order), 0, segment.to_body()))
        else:
            original(side)

    wire._pump = lazy_pump  # type: ignore[method-assign]
    for i in range(20):
        wire.send(0, bytes([i]))
    wire.run_until(5.0)
    assert len(receiver._inbox) == 4, "the window is 4 segments: no more may be accepted"
    wire._pump = original  # type: ignore[method-assign]
    wire._pump(1)  # the application reads, the window opens
    wire.run_until(60.0)
    assert wire.received[1] == [bytes([i]) for i in range(20)]


def test_fast_retransmit_recovers_a_single_loss_before_the_timeout() -> None:
    wire = Wire(seed=7, delay=0.01)
    wire.run_until(1.0)
    sender = wire.ends[0]
    assert sender is not None
    drop_next = [True]
    original_push = heapq.heappush

    def dropping_push(queue: list, item: _Flight) -> None:  # type: ignore[type-arg]
        segment = Segment.from_body(item.body)
        if drop_next[0] and segment.kind is SegmentKind.DATA and item.to == 1:
            drop_next[0] = False  # lose the first data segment only
            return
        original_push(queue, item)

    heapq.heappush = dropping_push  # type: ignore[assignment]
    try:
        for i in range(10):
            wire.send(0, bytes([i]))
        wire.run_until(1.0 + sender.rtt.rto * 0.9)
    finally:
        heapq.heappush = original_push
    assert wire.received[1] == [bytes([i]) for i in range(10)]
    assert sender.counters.fast_retransmissions == 1 and sender.counters.timeouts == 0


def test_retransmission_timeout_backs_off_exponentially() -> None:
    wire = Wire(seed=8)
    wire.run_until(1.0)
    sender = wire.ends[0]
    assert sender is not None
    wire.cut = True
    wire.send(0, b"x")
    rtos = []
    for _ in range(4):
        deadline = sender.get_timer()
        assert deadline is not None
        rtos.append(sender.rtt.rto)
        wire.run_until(deadline)
    assert rtos[1] == pytest.approx(2 * rtos[0]) and rtos[2] == pytest.approx(2 * rtos[1])


def test_sequence_numbers_wrap_around_2_to_the_32() -> None:
    assert unwrap(5, 2**32 - 3) == 2**32 + 5
    assert unwrap(2**32 - 3, 2**32 + 5) == 2**32 - 3
    wire = Wire(seed=9)
    first = wire.ends[0]
    assert first is not None
    # Restart the initiator just below the wrap point and push messages across it.
    wire.ends[0] = ReliableChannel(7, isn=2**32 - 5, now=0.0, config=wire.config)
    wire._queue.clear()
    wire._pump(0)
    for i in range(20):
        wire.send(0, bytes([i]))
    wire.run_until(30.0)
    assert wire.received[1] == [bytes([i]) for i in range(20)]


@pytest.mark.parametrize("body", [None, [], [9, 1, 1, 1, 1, [], False, b""],
                                  [4, 1, 1, 1, 2**16, [], False, b""],
                                  [4, 1, 1, 1, 1, [[1, 2]] * 5, False, b""],
                                  [4, 1, 1, 1, 1, [], 1, b""], [4, -1, 1, 1, 1, [], False, b""]])
def test_malformed_segments_are_rejected(body: object) -> None:
    with pytest.raises(MalformedMessage):
        Segment.from_body(body)


class ChannelPairMachine(RuleBasedStateMachine):
    """Hypothesis drives a channel pair step by step through a changing, hostile wire.

    Invariants after every step: what arrived is an in-order prefix of what was
    sent, with nothing duplicated, and neither end has declared the other
    unreachable.  At the end, with the wire quiet, everything has arrived.
    """

    def __init__(self) -> None:
        super().__init__()
        self.wire = Wire(seed=0)
        self.sent: list[bytes] = []

    @initialize(seed=st.integers(0, 2**32))
    def start(self, seed: int) -> None:
        self.wire = Wire(seed)

    @rule(message=st.binary(max_size=300), copies=st.integers(1, 5))
    def send(self, message: bytes, copies: int) -> None:
        for index in range(copies):
            payload = message + len(self.sent).to_bytes(4, "big") + bytes([index])
            self.wire.send(0, payload)
            self.sent.append(payload)

    @rule(big=st.integers(1, 3))
    def send_large(self, big: int) -> None:
        payload = bytes([len(self.sent) % 256]) * (big * MAX_SEGMENT_PAYLOAD + 17)
        self.wire.send(0, payload)
        self.sent.append(payload)

    @rule(loss=st.floats(0.0, 0.3), duplicate=st.floats(0.0, 0.1),
          spread=st.floats(0.0, 0.3))
    def change_the_wire(self, loss: float, duplicate: float, spread: float) -> None:
        self.wire.loss, self.wire.duplicate, self.wire.spread = loss, duplicate, spread

    @rule(seconds=st.floats(0.001, 20.0))
    def let_time_pass(self, seconds: float) -> None:
        self.wire.run_until(self.wire.now + seconds)

    @invariant()
    def delivered_in_order_exactly_once(self) -> None:
        received = self.wire.received[1]
        assert received == self.sent[:len(received)]

    @invariant()
    def nobody_declared_a_live_peer_unreachable(self) -> None:
        errors = [e for side in self.wire.events for e in side
                  if isinstance(e, Closed) and e.error]
        assert errors == []

    def teardown(self) -> None:
        self.wire.loss = self.wire.duplicate = 0.0
        self.wire.run_until(self.wire.now + 300.0)
        assert self.wire.received[1] == self.sent


ChannelPairMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30,
                                                deadline=None)
test_channel_pair_state_machine = ChannelPairMachine.TestCase
