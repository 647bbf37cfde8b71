"""A reliable, ordered message channel over best-effort packets: TCP's ideas, sans-IO.

Theory of operation
-------------------
Two endpoints exchange *segments* carried in routed DATA packets, which may be
lost, duplicated, delayed or reordered.  Each segment carries a sequence
number; SYN, every DATA fragment and FIN consume one, so the channel counts
segments, not bytes (it is message-oriented; a message larger than one
segment is split into fragments and reassembled).

Opening is TCP's three-way handshake with random initial sequence numbers:
SYN(isn_a) -> SYN_ACK(isn_b, ack isn_a+1) -> ACK(ack isn_b+1).  Data may be
queued before the channel is open and flows once it is.

Every segment acknowledges: ``ack`` is the next sequence number expected
(cumulative), ``sack`` lists up to four ranges received beyond it, and
``window`` says how many more segments the sender of the ACK can buffer (flow
control).  The sender keeps at most ``min(window, max_in_flight)`` segments in
flight.

Loss recovery: a retransmission timeout per RFC 6298 (SRTT, RTTVAR, Karn's
rule: no samples from retransmitted segments; exponential backoff up to
``rtt.max_rto``); fast retransmit of the first missing segment after three
duplicate ACKs or once three segments above it are SACKed.  Either starts a
*recovery* that lasts until everything then in flight is acknowledged; during
it, every ACK resends each segment the peer's SACKs show missing (a hole
below the highest SACKed segment) and, on a partial ACK, the next segment the
peer still waits for (RFC 6675's and RFC 6582's ideas), each at most once per
recovery.  So an outage that lost many segments (a supernode failing over)
is repaired in a round trip or two, not one hole per timeout.

A peer is declared unreachable on *silence*, never on loss alone: once
nothing has been heard from it for ``keepalive_interval``, KEEPALIVE probes go
out every ``probe_interval`` (each must be answered), and after
``unreachable_after`` seconds of silence the application is told the peer is
gone; it is never left waiting.  Counting timeouts instead would fail live
peers: at 30% loss a probe and its answer both get through only half the
time, so a few failures in a row are common, while 50 in a row are not.

The receiver drops duplicates (below ``ack``, or already buffered), buffers
out-of-order segments within its window, and delivers whole messages strictly
in order.  ``close()`` sends FIN after every queued message; the channel is
closed once both FINs are acknowledged.  ``abort()`` sends RST.  An idle open
channel sends KEEPALIVE probes; a peer silent for ``unreachable_after``
seconds is unreachable (as above).

Internally sequence numbers are unbounded integers; on the wire they are
taken modulo 2**32 and unwrapped against the expected value.

One module for one state machine (the segment codec it speaks is a few lines
at the top): sending, acknowledging and recovering read and write the same
sequence space, and the RTT estimator it shares with links lives in
:mod:`overlay.proto.rtt`.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from overlay.errors import LocalProtocolError, MalformedMessage
from overlay.proto.codec import describe_value
from overlay.proto.rtt import RttConfig, RttEstimator

SEQ_MODULUS = 2**32
MAX_SACK_RANGES = 4
MAX_WINDOW = 2**16 - 1
MAX_SEGMENT_PAYLOAD = 60_000
"""Payload bytes per segment: a segment in a routed packet must fit a 65,535-byte frame."""


class SegmentKind(enum.IntEnum):
    SYN = 1
    SYN_ACK = 2
    ACK = 3
    DATA = 4
    FIN = 5
    RST = 6
    KEEPALIVE = 7


@dataclass(frozen=True, slots=True)
class Segment:
    """``[kind, channel, seq, ack, window, sack, last, payload]`` in a DATA packet's body."""

    kind: SegmentKind
    channel: int
    seq: int
    ack: int
    window: int
    sack: tuple[tuple[int, int], ...] = ()
    last: bool = False
    payload: bytes = b""

    def to_body(self) -> list[Any]:
        return [int(self.kind), self.channel, self.seq % SEQ_MODULUS, self.ack % SEQ_MODULUS,
                self.window, [[a % SEQ_MODULUS, b % SEQ_MODULUS] for a, b in self.sack],
                self.last, self.payload]

    @classmethod
    def from_body(cls, body: Any) -> Segment:
        """Parse a received body; MalformedMessage if it is not a valid segment."""
        if not isinstance(body, list) or len(body) != 8:
            raise MalformedMessage("a segment is an 8-element array")
        kind, channel, seq, ack, window, sack, last, payload = body
        for name, value, top in (("channel", channel, SEQ_MODULUS - 1),
                                 ("seq", seq, SEQ_MODULUS - 1), ("ack", ack, SEQ_MODULUS - 1),
                                 ("window", window, MAX_WINDOW)):
            if type(value) is not int or not 0 <= value <= top:
                raise MalformedMessage(f"{name} must be an integer in 0..{top}")
        if type(kind) is not int or kind not in SegmentKind._value2member_map_:
            raise MalformedMessage(f"unknown segment kind {describe_value(kind, 20)}")
        if not isinstance(sack, list) or len(sack) > MAX_SACK_RANGES:
            raise MalformedMessage(f"sack must be at most {MAX_SACK_RANGES} ranges")
        ranges = []
        for item in sack:
            if (not isinstance(item, list) or len(item) != 2
                    or not all(type(v) is int and 0 <= v < SEQ_MODULUS for v in item)):
                raise MalformedMessage("a sack range is [start, end]")
            ranges.append((item[0], item[1]))
        if type(last) is not bool or not isinstance(payload, bytes):
            raise MalformedMessage("last must be a boolean and payload bin")
        if len(payload) > MAX_SEGMENT_PAYLOAD:
            raise MalformedMessage(f"payload over {MAX_SEGMENT_PAYLOAD} bytes")
        return cls(SegmentKind(kind), channel, seq, ack, window, tuple(ranges), last, payload)


def unwrap(wire: int, reference: int) -> int:
    """The unbounded sequence number closest to ``reference`` whose low 32 bits are ``wire``."""
    delta = (wire - reference + SEQ_MODULUS // 2) % SEQ_MODULUS - SEQ_MODULUS // 2
    return reference + delta


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Times in seconds, sizes in segments unless named otherwise."""

    max_in_flight: int = 64
    receive_window: int = 256
    send_buffer_bytes: int = 4 << 20
    keepalive_interval: float = 5.0
    """Silence after which the peer is probed."""
    probe_interval: float = 0.5
    """Time between probes while the peer is silent."""
    unreachable_after: float = 30.0
    """Silence after which the peer is declared unreachable."""
    rtt: RttConfig = field(
        default_factory=lambda: RttConfig(initial_rto=1.0, min_rto=0.05, max_rto=4.0))

    def __post_init__(self) -> None:
        if not 1 <= self.receive_window <= MAX_WINDOW or self.max_in_flight < 1:
            raise ValueError(f"windows must be in 1..{MAX_WINDOW}")
        if not 0 < self.probe_interval <= self.keepalive_interval < self.unreachable_after:
            raise ValueError("need 0 < probe_interval <= keepalive_interval < unreachable_after")


class ChannelState(enum.Enum):
    SYN_SENT = "syn-sent"
    SYN_RECEIVED = "syn-received"
    ESTABLISHED = "established"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """Base class of what a channel reports."""


@dataclass(frozen=True, slots=True)
class Opened(ChannelEvent):
    """The three-way handshake completed."""


@dataclass(frozen=True, slots=True)
class PeerFinished(ChannelEvent):
    """The peer closed its sending side: no message will follow those already received."""


@dataclass(frozen=True, slots=True)
class Closed(ChannelEvent):
    """The channel is over.  ``error`` is None for an orderly close."""

    error: str | None


@dataclass(slots=True)
class _InFlight:
    segment: Segment
    sent_at: float
    retransmitted: bool = False
    sacked: bool = False


@dataclass(slots=True)
class ChannelCounters:
    segments_sent: int = 0
    segments_received: int = 0
    retransmissions: int = 0
    fast_retransmissions: int = 0
    timeouts: int = 0
    duplicates_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0


class ReliableChannel:
    """One end of a channel (see the module docstring)."""

    def __init__(self, channel_id: int, *, isn: int, now: float,
                 config: ChannelConfig | None = None, syn: Segment | None = None) -> None:
        """Open actively (a SYN goes out), or passively when given the peer's ``syn``
        (a SYN_ACK goes out); use :meth:`accept` for the latter."""
        self.channel_id = channel_id
        self.config = config or ChannelConfig()
        self.state = ChannelState.SYN_SENT
        self.rtt = RttEstimator(self.config.rtt)
        self.counters = ChannelCounters()
        self.error: str | None = None
        self._isn = isn
        self._snd_una = isn  # oldest unacknowledged
        self._snd_nxt = isn  # next sequence number to assign
        self._in_flight: dict[int, _InFlight] = {}
        self._pending: deque[Segment] = deque()  # assigned a kind, not yet a seq
        self._pending_bytes = 0
        self._in_flight_bytes = 0
        self._peer_window = 1
        self._rcv_next: int | None = None
        self._out_of_order: dict[int, Segment] = {}
        self._assembly: list[bytes] = []
        self._inbox: deque[bytes] = deque()
        self._inbox_segments = 0
        self._events: list[ChannelEvent] = []
        self._outgoing: list[Segment] = []
        self._ack_due = False
        self._window_was_closed = False
        self._rto_deadline: float | None = None
        self._dupacks = 0
        self._recovery_until: int | None = None
        self._recovery_started = 0.0
        self._last_heard = now
        self._next_keepalive = now + self.config.keepalive_interval
        self._closing = False
        self._fin_seq: int | None = None
        self._peer_finished = False
        if syn is None:
            self._send(SegmentKind.SYN, now)
        else:
            if syn.kind is not SegmentKind.SYN or syn.channel != channel_id:
                raise LocalProtocolError("a channel is accepted from its SYN")
            self.state = ChannelState.SYN_RECEIVED
            self._rcv_next = syn.seq + 1
            self._peer_window = max(syn.window, 1)
            self._send(SegmentKind.SYN_ACK, now)

    @classmethod
    def accept(cls, syn: Segment, *, isn: int, now: float,
               config: ChannelConfig | None = None) -> ReliableChannel:
        """Open passively, answering a received SYN with SYN_ACK."""
        return cls(syn.channel, isn=isn, now=now, config=config, syn=syn)

    # --- application side -------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Bytes queued but not yet acknowledged: what ``send_buffer_bytes`` bounds."""
        return self._pending_bytes + self._in_flight_bytes

    @property
    def peer_window(self) -> int:
        """Segments the peer last said it could still buffer."""
        return self._peer_window

    @property
    def receive_window(self) -> int:
        """Segments we can still buffer (what our next ACK will advertise)."""
        return self._window()

    @property
    def can_send(self) -> bool:
        return (self.state is not ChannelState.CLOSED and not self._closing
                and self.buffered_bytes < self.config.send_buffer_bytes)

    def send(self, message: bytes, now: float) -> None:
        """Queue one message; the driver waits for ``can_send`` to keep memory bounded."""
        if self.state is ChannelState.CLOSED or self._closing:
            raise LocalProtocolError("cannot send on a closing or closed channel")
        chunks = [message[i:i + MAX_SEGMENT_PAYLOAD]
                  for i in range(0, len(message), MAX_SEGMENT_PAYLOAD)] or [b""]
        for index, chunk in enumerate(chunks):
            self._pending.append(Segment(SegmentKind.DATA, self.channel_id, 0, 0, 0,
                                         last=index == len(chunks) - 1, payload=chunk))
            self._pending_bytes += len(chunk)
        self.counters.messages_sent += 1
        self._transmit(now)

    def next_message(self) -> bytes | None:
        """The next message received in order, or None."""
        if not self._inbox:
            return None
        message = self._inbox.popleft()
        self._inbox_segments -= max(1, -(-len(message) // MAX_SEGMENT_PAYLOAD))
        if self._window_was_closed and self._window() > 0:
            self._window_was_closed = False
            self._ack_due = True  # tell the sender the window opened again
        return message

    def close(self, now: float) -> None:
        """Orderly close: FIN after every queued message (idempotent)."""
        if self.state is ChannelState.CLOSED or self._closing:
            return
        self._closing = True
        self._pending.append(Segment(SegmentKind.FIN, self.channel_id, 0, 0, 0))
        self._transmit(now)

    def abort(self, reason: str = "aborted") -> None:
        """Send RST and end the channel at once."""
        if self.state is not ChannelState.CLOSED:
            self._outgoing.append(self._segment(SegmentKind.RST, self._snd_nxt))
            self._finish(reason)

    # --- driver side ----------------------------------------------------------------

    def next_event(self) -> ChannelEvent | None:
        return self._events.pop(0) if self._events else None

    def segments_to_send(self) -> list[Segment]:
        """Segments to put on the wire now (a pure ACK included when one is due)."""
        if self._ack_due and self._rcv_next is not None and self.state is not ChannelState.CLOSED:
            if not self._outgoing:
                self._outgoing.append(self._segment(SegmentKind.ACK, self._snd_nxt))
            self._ack_due = False
        out, self._outgoing = self._outgoing, []  # after CLOSED: a last ACK, or RST
        self.counters.segments_sent += len(out)
        return out

    def get_timer(self) -> float | None:
        if self.state is ChannelState.CLOSED:
            return None
        deadlines = [self._next_keepalive, self._last_heard + self.config.unreachable_after]
        if self._rto_deadline is not None:
            deadlines.append(self._rto_deadline)
        return min(deadlines)

    def handle_timer(self, now: float) -> None:
        if self.state is ChannelState.CLOSED:
            return
        silent = now - self._last_heard
        if silent >= self.config.unreachable_after:
            self._fail(f"peer unreachable: nothing heard for {silent:.3g} s")
            return
        if self._rto_deadline is not None and now >= self._rto_deadline:
            self._on_timeout(now)
        if now >= self._next_keepalive:
            if self.state is ChannelState.ESTABLISHED:
                self._outgoing.append(self._segment(SegmentKind.KEEPALIVE, self._snd_nxt))
            self._next_keepalive = now + self.config.probe_interval

    def receive_segment(self, segment: Segment, now: float) -> None:
        if segment.channel != self.channel_id:
            return
        if self.state is ChannelState.CLOSED:
            if self.error is None and segment.kind is SegmentKind.FIN:
                # Like TCP's TIME_WAIT: our last ACK was lost, the peer repeats its FIN.
                self._outgoing.append(self._segment(SegmentKind.ACK, self._snd_nxt))
            return
        self.counters.segments_received += 1
        self._last_heard = now
        self._next_keepalive = now + self.config.keepalive_interval
        if segment.kind is SegmentKind.RST:
            self._finish("reset by peer")
            return
        if segment.kind is SegmentKind.SYN:
            if self.state is ChannelState.SYN_RECEIVED:
                self._retransmit_first(now)  # our SYN_ACK was lost: say it again
            return
        if segment.kind is SegmentKind.SYN_ACK:
            if self.state is ChannelState.SYN_SENT:
                self._rcv_next = segment.seq + 1
            self._ack_due = True  # also answers a retransmitted SYN_ACK
        if self._rcv_next is None:
            return  # nothing but SYN_ACK is meaningful before we know the peer's isn
        self._process_ack(segment, now)
        if segment.kind in (SegmentKind.DATA, SegmentKind.FIN):
            self._receive_data(segment)
        elif segment.kind is SegmentKind.KEEPALIVE:
            self._ack_due = True
        self._transmit(now)
        self._maybe_closed()

    # --- sending ----------------------------------------------------------------------

    def _segment(self, kind: SegmentKind, seq: int, *, last: bool = False,
                 payload: bytes = b"") -> Segment:
        ack = self._rcv_next if self._rcv_next is not None else 0
        return Segment(kind, self.channel_id, seq, ack, self._window(), self._sack_ranges(),
                       last, payload)

    def _send(self, kind: SegmentKind, now: float, *, last: bool = False,
              payload: bytes = b"") -> None:
        """Assign the next sequence number and transmit."""
        seq = self._snd_nxt
        self._snd_nxt += 1
        segment = self._segment(kind, seq, last=last, payload=payload)
        self._in_flight[seq] = _InFlight(segment, now)
        self._in_flight_bytes += len(payload)
        self._outgoing.append(segment)
        self._ack_due = False
        if self._rto_deadline is None:
            self._rto_deadline = now + self.rtt.rto

    def _transmit(self, now: float) -> None:
        if self.state is not ChannelState.ESTABLISHED:
            return
        limit = min(self._peer_window, self.config.max_in_flight)
        while self._pending and len(self._in_flight) < limit:
            queued = self._pending.popleft()
            self._pending_bytes -= len(queued.payload)
            if queued.kind is SegmentKind.FIN:
                self._fin_seq = self._snd_nxt
            self._send(queued.kind, now, last=queued.last, payload=queued.payload)

    def _retransmit_first(self, now: float) -> None:
        """Resend the oldest segment the peer has not SACKed (or the oldest, if all are:
        then only the cumulative ACK went missing, and any answer will carry it)."""
        if not self._in_flight:
            return
        order = sorted(self._in_flight)
        seq = next((s for s in order if not self._in_flight[s].sacked), order[0])
        self._retransmit(seq, self._in_flight[seq], now)

    def _retransmit(self, seq: int, flight: _InFlight, now: float) -> None:
        segment = self._segment(flight.segment.kind, seq, last=flight.segment.last,
                                payload=flight.segment.payload)
        flight.segment, flight.sent_at, flight.retransmitted = segment, now, True
        self._outgoing.append(segment)
        self._ack_due = False
        self.counters.retransmissions += 1

    def _on_timeout(self, now: float) -> None:
        self.counters.timeouts += 1
        self.rtt.backoff()  # RFC 6298 5.5
        self._dupacks = 0
        self._retransmit_first(now)
        if self._in_flight:
            self._start_recovery(now)
        self._rto_deadline = now + self.rtt.rto if self._in_flight else None

    def _start_recovery(self, now: float) -> None:
        self._recovery_until = self._snd_nxt
        self._recovery_started = now

    def _repair(self, now: float, *, partial_ack: bool) -> None:
        """In recovery: resend what the peer shows it lacks, each segment once."""
        if self._recovery_until is None or not self._in_flight:
            return
        sacked = [seq for seq, flight in self._in_flight.items() if flight.sacked]
        highest_sacked = max(sacked) if sacked else None
        for seq in sorted(self._in_flight):
            flight = self._in_flight[seq]
            if flight.sacked or flight.sent_at >= self._recovery_started:
                continue  # arrived, or already resent in this recovery
            below_sacked = highest_sacked is not None and seq < highest_sacked
            awaited = partial_ack and seq == self._snd_una
            if below_sacked or awaited:
                self._retransmit(seq, flight, now)
            elif highest_sacked is None or seq > highest_sacked:
                break

    def _process_ack(self, segment: Segment, now: float) -> None:
        ack = unwrap(segment.ack, self._snd_una)
        self._peer_window = segment.window
        for start_wire, end_wire in segment.sack:
            start, end = unwrap(start_wire, self._snd_una), unwrap(end_wire, self._snd_una)
            for seq in range(max(start, self._snd_una), min(end, self._snd_nxt)):
                if seq in self._in_flight:
                    self._in_flight[seq].sacked = True
        if self._snd_una < ack <= self._snd_nxt:
            newest = None
            for seq in range(self._snd_una, ack):
                flight = self._in_flight.pop(seq, None)
                if flight is None:
                    continue
                self._in_flight_bytes -= len(flight.segment.payload)
                if not flight.retransmitted:
                    newest = flight
            if newest is not None:
                self.rtt.observe(now - newest.sent_at)  # Karn: never a retransmitted one
            self._snd_una = ack
            self._dupacks = 0
            self._rto_deadline = now + self.rtt.rto if self._in_flight else None
            if self.state is not ChannelState.ESTABLISHED and self._isn < ack:
                self.state = ChannelState.ESTABLISHED
                self._events.append(Opened())
            if self._recovery_until is not None and ack >= self._recovery_until:
                self._recovery_until = None
            self._repair(now, partial_ack=True)
        elif ack == self._snd_una and self._in_flight and not segment.payload:
            self._dupacks += 1
            self._repair(now, partial_ack=False)
        else:
            self._repair(now, partial_ack=False)
        self._sack_recovery(now)

    def _sack_recovery(self, now: float) -> None:
        """Fast retransmit: 3 duplicate ACKs, or 3 SACKed segments above a hole."""
        if not self._in_flight or self._recovery_until is not None:
            return
        sacked_above = 0
        hole = None
        for seq in sorted(self._in_flight, reverse=True):
            flight = self._in_flight[seq]
            if flight.sacked:
                sacked_above += 1
            elif sacked_above >= 3 or (self._dupacks >= 3 and seq == self._snd_una):
                hole = seq
        if hole is None and self._dupacks >= 3 and self._snd_una in self._in_flight:
            hole = self._snd_una
        if hole is not None and not self._in_flight[hole].sacked:
            self.counters.fast_retransmissions += 1
            self._start_recovery(now)
            self._retransmit(hole, self._in_flight[hole], now)
            self._repair(now, partial_ack=False)

    # --- receiving --------------------------------------------------------------------

    def _window(self) -> int:
        used = len(self._out_of_order) + self._inbox_segments
        return max(0, min(MAX_WINDOW, self.config.receive_window - used))

    def _receive_data(self, segment: Segment) -> None:
        assert self._rcv_next is not None
        seq = unwrap(segment.seq, self._rcv_next)
        self._ack_due = True
        if seq < self._rcv_next or seq in self._out_of_order:
            self.counters.duplicates_received += 1
            return
        if seq >= self._rcv_next + self.config.receive_window:
            return  # beyond any window we offered: the sender will retry
        self._out_of_order[seq] = segment
        while self._rcv_next in self._out_of_order:
            ready = self._out_of_order.pop(self._rcv_next)
            self._rcv_next += 1
            if ready.kind is SegmentKind.FIN:
                if not self._peer_finished:
                    self._peer_finished = True
                    self._events.append(PeerFinished())
                continue
            self._assembly.append(ready.payload)
            if ready.last:
                message = b"".join(self._assembly)
                self._assembly.clear()
                self._inbox.append(message)
                self._inbox_segments += max(1, -(-len(message) // MAX_SEGMENT_PAYLOAD))
                self.counters.messages_received += 1
        if self._window() == 0:
            self._window_was_closed = True

    def _sack_ranges(self) -> tuple[tuple[int, int], ...]:
        if not self._out_of_order:
            return ()
        ranges: list[tuple[int, int]] = []
        for seq in sorted(self._out_of_order):
            if ranges and ranges[-1][1] == seq:
                ranges[-1] = (ranges[-1][0], seq + 1)
            else:
                ranges.append((seq, seq + 1))
        return tuple(ranges[:MAX_SACK_RANGES])

    # --- endings ------------------------------------------------------------------------

    @property
    def fin_acknowledged(self) -> bool:
        """Our FIN (so every byte before it) has been acknowledged by the peer."""
        return self._fin_seq is not None and self._snd_una > self._fin_seq

    def _maybe_closed(self) -> None:
        fin_acked = self.fin_acknowledged
        if fin_acked and self._peer_finished and self.state is not ChannelState.CLOSED:
            if self._ack_due:  # the peer's FIN still needs its ACK
                self._outgoing.append(self._segment(SegmentKind.ACK, self._snd_nxt))
                self._ack_due = False
            self._finish(None)

    def _fail(self, reason: str) -> None:
        self._finish(reason)

    def _finish(self, error: str | None) -> None:
        self.state = ChannelState.CLOSED
        self.error = error
        self._rto_deadline = None
        self._events.append(Closed(error))
