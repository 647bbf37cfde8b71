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

Edge clients and VIA
--------------------
Edge clients (maybe behind NAT) are not routing destinations: routing tables
hold supernodes only.  A packet for an edge client travels *inside* a VIA
packet addressed to the client's home supernode, like IP-in-IP tunnelling:
``VIA`` body ``[final_dst, src_home, inner_type, inner_body]``.  The home
supernode hands it to the attached client over the client's own (outbound)
link; the client unwraps it.  ``src_home`` is the sender's home (nil when the
sender is itself routable), and every node a VIA packet crosses learns from it
where the sender can be reached: answers, acknowledgements and error reports
find their way back, and a client that moved to another supernode is found at
its new home by the next packet it sends.  Where a client is attached comes
from the directory (presence) or from this reverse-path learning, kept in a
bounded table of *locations*.

An edge client does not relay: it sends everything it cannot deliver over a
direct link to its home supernode (its default route), and drops packets that
are not for it.

The core decides; the driver acts.  Each decision is a list of actions
(deliver locally, forward to a neighbour, dropped) and the driver carries
them out.  A send queue that is full is the driver's to count.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from overlay.errors import MalformedMessage
from overlay.ids import NODE_ID_LEN, NodeId
from overlay.proto.messages import (
    DEFAULT_TTL,
    MAX_TTL,
    ROUTED_TYPES,
    U32_MAX,
    MessageType,
    RoutedPacket,
)

ERROR_TYPES = frozenset({MessageType.TIME_EXCEEDED, MessageType.UNREACHABLE})


class UnreachableCode(enum.IntEnum):
    """Field 4 of an error report's body."""

    NONE = 0
    NO_ROUTE = 1
    NOT_ATTACHED = 2
    """A VIA packet reached the home supernode it named, but the client is not attached there."""


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


class HopKind(enum.Enum):
    """How a packet to some destination leaves this node (see :meth:`Forwarder.where`)."""

    LOCAL = "local"
    """It is for this node."""
    ROUTE = "route"
    """A route of the routing table, or a direct link (an attached client)."""
    VIA_HOME = "via-home"
    """Wrapped in VIA to the edge client's home supernode (from presence)."""
    DEFAULT = "default"
    """An edge client's default route: its home supernode."""
    UNREACHABLE = "unreachable"
    """Dropped here, with an UNREACHABLE report."""


@dataclass(frozen=True, slots=True)
class RouteLookup:
    """Where a packet to ``destination`` goes from here: ``overlay route``'s answer."""

    destination: NodeId
    kind: HopKind
    next_hop: NodeId | None
    home: NodeId | None = None
    """The destination's home supernode, for VIA_HOME."""


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
        """Parse a received report; MalformedMessage if it is malformed."""
        if not isinstance(body, list) or len(body) != 5:
            raise MalformedMessage("an error report body is a 5-element array")
        original_type, packet_id, dst, address, code = body
        if not all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (original_type, packet_id, code)):
            raise MalformedMessage("type, packet id and code must be integers")
        if not isinstance(dst, bytes) or len(dst) != NODE_ID_LEN:
            raise MalformedMessage("original destination must be a node id")
        if address is not None and not isinstance(address, str):
            raise MalformedMessage("reporter address must be a string or nil")
        return cls(original_type, packet_id, NodeId(dst), address, code)


@dataclass(frozen=True, slots=True)
class Via:
    """The body of a VIA packet (see the module docstring)."""

    final_dst: NodeId
    src_home: NodeId | None
    inner_type: int
    inner_body: Any

    def to_body(self) -> list[Any]:
        home = None if self.src_home is None else self.src_home.raw
        return [self.final_dst.raw, home, self.inner_type, self.inner_body]

    @classmethod
    def from_body(cls, body: Any) -> Via:
        """Parse a received VIA body; MalformedMessage if it is malformed."""
        if not isinstance(body, list) or len(body) != 4:
            raise MalformedMessage("a VIA body is a 4-element array")
        final_dst, src_home, inner_type, inner_body = body
        if not isinstance(final_dst, bytes) or len(final_dst) != NODE_ID_LEN:
            raise MalformedMessage("VIA final destination must be a node id")
        if src_home is not None and (not isinstance(src_home, bytes)
                                     or len(src_home) != NODE_ID_LEN):
            raise MalformedMessage("VIA source home must be a node id or nil")
        if not isinstance(inner_type, int) or isinstance(inner_type, bool) \
                or inner_type not in ROUTED_TYPES \
                or inner_type == MessageType.VIA:
            raise MalformedMessage("VIA inner type must be a routed type other than VIA")
        return cls(NodeId.interned(final_dst),
                   None if src_home is None else NodeId.interned(src_home),
                   int(inner_type), inner_body)


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
    wrapped: int = 0
    dropped_not_attached: int = 0
    dropped_not_relaying: int = 0
    dropped_malformed: int = 0


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
        default_hop: Callable[[], NodeId | None] = lambda: None,
        attached: Callable[[NodeId], bool] = lambda _node: False,
        relays: bool = True,
        max_locations: int = 100_000,
    ) -> None:
        if not 1 <= default_ttl <= MAX_TTL:
            raise ValueError(f"default TTL must be in 1..{MAX_TTL}")
        self.node_id = node_id
        self.address = address
        self.default_ttl = default_ttl
        self.counters = ForwardingCounters()
        self._next_hop = next_hop
        self._default_hop = default_hop
        self._attached = attached
        self.relays = relays
        """False for an edge client: it originates and receives, never forwards."""
        self.home: NodeId | None = None
        """This node's own home supernode (edge clients), stamped on the VIA packets it sends."""
        self.locations: OrderedDict[NodeId, NodeId] = OrderedDict()
        self._max_locations = max_locations
        self._packet_id = first_packet_id & U32_MAX

    def set_location(self, node: NodeId, home: NodeId) -> None:
        """``node`` is an edge client attached to ``home`` (most recent first; bounded)."""
        if node == home:
            return
        self.locations[node] = home
        self.locations.move_to_end(node)
        if len(self.locations) > self._max_locations:
            self.locations.popitem(last=False)

    def new_packet(self, packet_type: int, dst: NodeId, body: Any,
                   ttl: int | None = None) -> RoutedPacket:
        """A packet from this node, with a fresh packet id."""
        packet_id = self._packet_id
        self._packet_id = (packet_id + 1) & U32_MAX
        return RoutedPacket(packet_type, self.default_ttl if ttl is None else ttl,
                            self.node_id, dst, packet_id, body)

    def where(self, dst: NodeId) -> RouteLookup:
        """Where a packet of ours to ``dst`` would go now, without sending anything: the
        decision :meth:`_route` takes for an originated packet, step for step."""
        if dst == self.node_id:
            return RouteLookup(dst, HopKind.LOCAL, None)
        hop = self._next_hop(dst)
        if hop is not None:
            return RouteLookup(dst, HopKind.ROUTE, hop)
        home = self.locations.get(dst)
        if home is not None and home != self.node_id:
            to_home = self._next_hop(home) or self._default_hop()
            if to_home is None:
                return RouteLookup(dst, HopKind.UNREACHABLE, None, home)
            return RouteLookup(dst, HopKind.VIA_HOME, to_home, home)
        hop = self._default_hop()
        if hop is not None:
            return RouteLookup(dst, HopKind.DEFAULT, hop)
        return RouteLookup(dst, HopKind.UNREACHABLE, None)

    def originate(self, packet: RoutedPacket) -> list[Action]:
        """Send a packet of our own: routed, but not TTL-decremented here."""
        self.counters.originated += 1
        return self._route(packet, packet.ttl)

    def receive(self, packet: RoutedPacket) -> list[Action]:
        """A packet arrived from a neighbour."""
        if packet.type == MessageType.VIA:
            return self._receive_via(packet)
        if packet.dst == self.node_id:
            return self._arrive(packet)
        refused = self._refuse_to_relay(packet)
        if refused is not None:
            return refused
        return self._route(packet, packet.ttl - 1)

    def _refuse_to_relay(self, packet: RoutedPacket) -> list[Action] | None:
        """Why ``packet`` goes no further from here (we are an edge client, or its TTL
        runs out here), with the report owed to its source; None if it may go on."""
        if not self.relays:
            self.counters.dropped_not_relaying += 1
            return [Dropped(packet, "an edge client does not relay")]
        if packet.ttl - 1 <= 0:
            self.counters.dropped_ttl += 1
            return [Dropped(packet, "TTL expired"),
                    *self._report(packet, MessageType.TIME_EXCEEDED, UnreachableCode.NONE)]
        return None

    def _route(self, packet: RoutedPacket, ttl: int) -> list[Action]:
        if packet.dst == self.node_id:
            return self._arrive(packet)
        hop = self._next_hop(packet.dst)
        if hop is None and packet.type != MessageType.VIA:
            home = self.locations.get(packet.dst)
            if home is not None and home != self.node_id:
                return self._route(self._wrap(packet, home, ttl), ttl)
        if hop is None:
            hop = self._default_hop()
        if hop is None:
            self.counters.dropped_no_route += 1
            return [Dropped(packet, "no route"),
                    *self._report(packet, MessageType.UNREACHABLE, UnreachableCode.NO_ROUTE)]
        if packet.src != self.node_id:
            self.counters.forwarded += 1
        return [Forward(hop, packet if ttl == packet.ttl else packet.with_ttl(ttl))]

    def _wrap(self, packet: RoutedPacket, home: NodeId, ttl: int) -> RoutedPacket:
        """``packet`` inside a VIA packet to the destination's home supernode."""
        self.counters.wrapped += 1
        src_home = self.home if packet.src == self.node_id else self.locations.get(packet.src)
        via = Via(packet.dst, src_home, packet.type, packet.body)
        return RoutedPacket(MessageType.VIA, ttl, packet.src, home, packet.packet_id,
                            via.to_body())

    def _receive_via(self, packet: RoutedPacket) -> list[Action]:
        try:
            via = Via.from_body(packet.body)
        except MalformedMessage as exc:
            self.counters.dropped_malformed += 1
            return [Dropped(packet, f"malformed VIA: {exc}")]
        if via.src_home is not None and via.src_home != self.node_id:
            self.set_location(packet.src, via.src_home)  # reverse-path learning
        if via.final_dst == self.node_id:
            return self._arrive(RoutedPacket(via.inner_type, packet.ttl, packet.src,
                                             self.node_id, packet.packet_id, via.inner_body))
        refused = self._refuse_to_relay(packet)
        if refused is not None:
            return refused
        ttl = packet.ttl - 1
        if packet.dst != self.node_id:
            return self._route(packet, ttl)
        # We are the home supernode the sender named: hand over to the attached client.
        if self._attached(via.final_dst):
            self.counters.forwarded += 1
            return [Forward(via.final_dst, packet.with_ttl(ttl))]
        self.counters.dropped_not_attached += 1
        inner = RoutedPacket(via.inner_type, packet.ttl, packet.src, via.final_dst,
                             packet.packet_id, via.inner_body)
        return [Dropped(packet, "client not attached here"),
                *self._report(inner, MessageType.UNREACHABLE, UnreachableCode.NOT_ATTACHED)]

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
