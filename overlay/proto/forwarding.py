"""Best-effort forwarding of routed packets, as IP forwards datagrams.

Theory of operation
-------------------
A packet addressed to this node is delivered.  Any other packet has its TTL
decremented; at zero it is dropped and a TIME_EXCEEDED report goes back to its
source, naming this node (and its address, so traceroute can print it).  A
packet with no route is dropped with an UNREACHABLE report.  The source never
decrements: a packet sent with TTL n is reported by the n-th hop.  Reports
are routed packets themselves, and a report never causes another report, so
errors cannot multiply.  ECHO_REQUEST is answered here with an ECHO_REPLY,
which is how ``overlay ping`` and ``overlay traceroute`` work.

The core decides; the driver acts.  Each decision is a list of actions
(deliver locally, forward to a neighbour, dropped) and the driver carries
them out.  A send queue that is full is the driver's to count.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from overlay.ids import NODE_ID_LEN, NodeId
from overlay.proto.messages import DEFAULT_TTL, MAX_TTL, U32_MAX, MessageType, RoutedPacket

ERROR_TYPES = frozenset({MessageType.TIME_EXCEEDED, MessageType.UNREACHABLE})


class UnreachableCode(enum.IntEnum):
    """Field 4 of an error report's body."""

    NONE = 0
    NO_ROUTE = 1


@dataclass(frozen=True, slots=True)
class Deliver:
    packet: RoutedPacket


@dataclass(frozen=True, slots=True)
class Forward:
    next_hop: NodeId
    packet: RoutedPacket


@dataclass(frozen=True, slots=True)
class Dropped:
    packet: RoutedPacket
    reason: str


Action = Deliver | Forward | Dropped


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """The body of TIME_EXCEEDED and UNREACHABLE: which packet failed, where and why.

    Wire form: ``[original_type, original_packet_id, original_dst, reporter_address, code]``.
    """

    original_type: int
    original_packet_id: int
    original_dst: NodeId
    reporter_address: str | None
    code: int

    def to_body(self) -> list[Any]:
        return [self.original_type, self.original_packet_id, self.original_dst.raw,
                self.reporter_address, self.code]

    @classmethod
    def from_body(cls, body: Any) -> ErrorReport:
        """Parse a received report; ValueError if it is malformed."""
        if not isinstance(body, list) or len(body) != 5:
            raise ValueError("an error report body is a 5-element array")
        original_type, packet_id, dst, address, code = body
        if not all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (original_type, packet_id, code)):
            raise ValueError("type, packet id and code must be integers")
        if not isinstance(dst, bytes) or len(dst) != NODE_ID_LEN:
            raise ValueError("original destination must be a node id")
        if address is not None and not isinstance(address, str):
            raise ValueError("reporter address must be a string or nil")
        return cls(original_type, packet_id, NodeId(dst), address, code)


def echo_reply_body(request: RoutedPacket, address: str | None) -> list[Any]:
    """ECHO_REPLY carries ``[request_packet_id, request_body, responder_address]``."""
    return [request.packet_id, request.body, address]


@dataclass(slots=True)
class ForwardingCounters:
    originated: int = 0
    delivered: int = 0
    forwarded: int = 0
    dropped_ttl: int = 0
    dropped_no_route: int = 0
    errors_sent: int = 0
    echo_replies_sent: int = 0


class Forwarder:
    """Forwarding decisions of one node; routes come from ``next_hop``."""

    def __init__(
        self,
        node_id: NodeId,
        next_hop: Callable[[NodeId], NodeId | None],
        *,
        address: str | None = None,
        default_ttl: int = DEFAULT_TTL,
        first_packet_id: int = 0,
    ) -> None:
        if not 1 <= default_ttl <= MAX_TTL:
            raise ValueError(f"default TTL must be in 1..{MAX_TTL}")
        self.node_id = node_id
        self.address = address
        self.default_ttl = default_ttl
        self.counters = ForwardingCounters()
        self._next_hop = next_hop
        self._packet_id = first_packet_id & U32_MAX

    def new_packet(self, packet_type: int, dst: NodeId, body: Any,
                   ttl: int | None = None) -> RoutedPacket:
        """A packet from this node, with a fresh packet id."""
        packet_id = self._packet_id
        self._packet_id = (packet_id + 1) & U32_MAX
        return RoutedPacket(packet_type, self.default_ttl if ttl is None else ttl,
                            self.node_id, dst, packet_id, body)

    def originate(self, packet: RoutedPacket) -> list[Action]:
        """Send a packet of our own: routed, but not TTL-decremented here."""
        self.counters.originated += 1
        return self._route(packet, packet.ttl)

    def receive(self, packet: RoutedPacket) -> list[Action]:
        """A packet arrived from a neighbour."""
        if packet.dst == self.node_id:
            return self._arrive(packet)
        ttl = packet.ttl - 1
        if ttl <= 0:
            self.counters.dropped_ttl += 1
            return [Dropped(packet, "TTL expired"),
                    *self._report(packet, MessageType.TIME_EXCEEDED, UnreachableCode.NONE)]
        return self._route(packet, ttl)

    def _route(self, packet: RoutedPacket, ttl: int) -> list[Action]:
        if packet.dst == self.node_id:
            return self._arrive(packet)
        hop = self._next_hop(packet.dst)
        if hop is None:
            self.counters.dropped_no_route += 1
            return [Dropped(packet, "no route"),
                    *self._report(packet, MessageType.UNREACHABLE, UnreachableCode.NO_ROUTE)]
        if packet.src != self.node_id:
            self.counters.forwarded += 1
        return [Forward(hop, packet if ttl == packet.ttl else replace(packet, ttl=ttl))]

    def _arrive(self, packet: RoutedPacket) -> list[Action]:
        self.counters.delivered += 1
        if packet.type == MessageType.ECHO_REQUEST:
            self.counters.echo_replies_sent += 1
            reply = self.new_packet(MessageType.ECHO_REPLY, packet.src,
                                    echo_reply_body(packet, self.address))
            return self.originate(reply)
        return [Deliver(packet)]

    def _report(self, packet: RoutedPacket, report_type: MessageType,
                code: UnreachableCode) -> list[Action]:
        if packet.type in ERROR_TYPES:
            return []  # never an error about an error
        self.counters.errors_sent += 1
        body = ErrorReport(packet.type, packet.packet_id, packet.dst, self.address, code)
        return self.originate(self.new_packet(report_type, packet.src, body.to_body()))
