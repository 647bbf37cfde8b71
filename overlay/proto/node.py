"""The sans-IO core of one node: its neighbour table and every decision made over it.

Theory of operation
-------------------
The trio driver (:class:`overlay.net.node.Node`) owns sockets, tasks and the
clock; this core owns the policy.  The driver feeds it events (a link came up,
measured an RTT, carried a message, went down; the application sends a packet
or an echo; the timer fired), always with ``now``, and carries out the
actions the core queues (:meth:`NodeCore.take_actions`): send a message on a
link, transmit a routed packet, close a link, hand a packet to a local
handler, report an echo's outcome.  Links are opaque handles to the core
(any hashable the driver likes; the driver passes its ``Link`` objects).
The core has one timer (:meth:`get_timer` / :meth:`handle_timer`): the
routing core's next deadline or the next echo timeout, whichever is first.
Randomness (the first packet id, the routing core's jitter) comes from an
injected ``random.Random``, so a simulated run replays from its seed.

Neighbour table
---------------
At most one established link per peer.  When a second one comes up (two
nodes dialling each other at once, or a reconnect racing an old link), both
ends must keep the same one without talking about it, so the rule depends only
on facts both know (:func:`keep_new_link`): between links dialled in opposite
directions, keep the one dialled by the node with the smaller id; between
links dialled the same way, keep the older.  The other is closed with
DUPLICATE_LINK.

Who routes
----------
A neighbour joins the routing core once its link has a first RTT sample (its
cost).  Routing never runs on an edge client, nor over links that are not for
routing: those an edge client or a probe dialled (they send ATTACH first) and
those whose far end declared itself an edge client or a probe.  An edge client
sends what has no direct link to its home supernode (its default route).
Promotion turns an edge client into a routing node: its attachments close and
it relays from then on; the configuration it was started with stays as given.

One module for one job, the node's policy over its neighbour table: every
decision above reads the same table, and the parts that stand alone are apart
(routing, forwarding, echo state).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

from overlay.addresses import Address
from overlay.errors import ControlError
from overlay.ids import NODE_ID_LEN, NodeId
from overlay.proto.echo import EchoResult, EchoTracker, parse_answer
from overlay.proto.forwarding import (
    ERROR_TYPES,
    Action,
    Deliver,
    ErrorReport,
    Forward,
    Forwarder,
)
from overlay.proto.link import LinkConfig
from overlay.proto.messages import (
    DEFAULT_TTL,
    Attach,
    AttachPurpose,
    CloseCode,
    Message,
    MessageType,
    RoutedPacket,
    RouteUpdate,
    SeqnoRequest,
)
from overlay.proto.reliable import ChannelConfig
from overlay.proto.route_table import DestinationIndex
from overlay.proto.routing import RouteInfo, Router, RoutingConfig

log = logging.getLogger("overlay.net.node")

L = TypeVar("L", bound=Hashable)


@dataclass(frozen=True)
class NodeConfig:
    """Everything that shapes a node's behaviour; times in seconds."""

    listen: Address | None = ("127.0.0.1", 0)
    connect: tuple[Address, ...] = ()
    link: LinkConfig = field(default_factory=LinkConfig)
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 5.0
    max_pending_handshakes: int = 64
    """Inbound connections in the handshake at once (see ``HandshakeSlots``)."""
    max_pending_per_address: int = 8
    """Of those, from one source host; a newcomer evicts that host's oldest."""
    shutdown_grace: float = 0.5
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    default_ttl: int = DEFAULT_TTL
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    outgoing_port: int | None = None
    """Dial every outgoing TCP connection from this one local port (0: a free one chosen
    at start), so that a NAT maps them all to one public port, which hole punching
    dials from (docs/roles.md, Hole punching); None: an ephemeral port per dial."""
    edge: bool = False
    """Start as an edge client: no routing, no relaying; what has no direct link goes to
    the home supernode (see :meth:`NodeCore.set_home`)."""


def keep_new_link(own_id: NodeId, peer_id: NodeId, existing_outgoing: bool,
                  new_outgoing: bool) -> bool:
    """The duplicate-link rule (module docstring): True to keep the new link."""
    if existing_outgoing == new_outgoing:
        return False  # same direction: keep the older
    we_dial = own_id < peer_id  # the smaller id's outgoing link wins
    return new_outgoing == we_dial


# --- actions: what the core asks the driver to do ---------------------------------------

@dataclass(frozen=True, slots=True)
class SendMessage(Generic[L]):
    """Queue a link-local message (route update, seqno request, ATTACH) on ``link``;
    a full queue drops it (the driver counts it)."""

    link: L
    message: Message


@dataclass(frozen=True, slots=True)
class Transmit(Generic[L]):
    """Queue a routed packet on ``link``: the driver counts and traces what does not fit."""

    link: L
    packet: RoutedPacket


@dataclass(frozen=True, slots=True)
class CloseLink(Generic[L]):
    link: L
    code: CloseCode
    reason: str


@dataclass(frozen=True, slots=True)
class DeliverLocal:
    """A routed packet for this node that no core consumed: the application's."""

    packet: RoutedPacket


@dataclass(frozen=True, slots=True)
class EchoDone:
    """The echo sent as packet ``echo_id`` is settled."""

    echo_id: int
    result: EchoResult


@dataclass(frozen=True, slots=True)
class DeliveryFailed:
    """A router reported that a packet this node sent (not an echo) was dropped.

    ``kind`` is ``MessageType.UNREACHABLE`` (no route, or not attached where the
    VIA said) or ``MessageType.TIME_EXCEEDED``; ``reporter`` is the node that
    dropped it (this node itself when it had no route).  Best effort, like ICMP:
    the reliable channels decide what it means (see ``overlay.net.channels``).
    """

    destination: NodeId
    original_type: int
    kind: MessageType
    reporter: NodeId


@dataclass(frozen=True, slots=True)
class Trace:
    """A packet was originated, received, delivered or dropped here (only when tracing)."""

    event: str
    packet: RoutedPacket


NodeAction = (SendMessage[L] | Transmit[L] | CloseLink[L] | DeliverLocal | EchoDone
              | DeliveryFailed | Trace)


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """What the core keeps about a neighbour's link: enough for policy and log lines."""

    initiator: bool
    address: str
    purpose: AttachPurpose | None
    """Why this node dialled it, when it dialled as an edge client or a probe."""

    @property
    def direction(self) -> str:
        return "out" if self.initiator else "in"


@dataclass(frozen=True, slots=True)
class CoreStatistics:
    """The core's share of ``overlay status``."""

    routes: tuple[RouteInfo, ...]
    links_accepted: int
    forwarding: dict[str, int]
    """The forwarding core's counters and the decisions whose next hop had no link."""
    routing: dict[str, int]
    edge: bool
    home: NodeId | None
    attached: tuple[NodeId, ...]
    locations: int


class NodeCore(Generic[L]):
    """One node's protocol state; see the module docstring."""

    def __init__(self, node_id: NodeId, config: NodeConfig, *, rng: random.Random,
                 route_index: DestinationIndex | None = None) -> None:
        """``route_index``: a destination index shared with the other nodes of this
        process (the simulator's thousands of nodes keep one copy of every id)."""
        self.node_id = node_id
        self.edge = config.edge
        """An edge client (until promoted): no routing, no relaying."""
        self._config = config
        self._rng = rng
        self._route_index = route_index
        self._router: Router | None = None
        self._neighbours: dict[NodeId, L] = {}
        self._facts: dict[L, LinkFacts] = {}
        self._attached: dict[NodeId, L] = {}
        """Edge clients attached to this node (their links sent ATTACH EDGE)."""
        self._non_routing: set[NodeId] = set()
        """Peers whose links carry no routing: edge clients and probes."""
        self.forwarder = Forwarder(node_id, self._next_hop, default_ttl=config.default_ttl,
                                   first_packet_id=rng.getrandbits(32),
                                   default_hop=self._default_hop,
                                   attached=self._attached.__contains__,
                                   relays=not config.edge)
        self._echoes = EchoTracker()
        self._out: list[NodeAction[L]] = []
        self._links_accepted = 0
        self._routes_seen = 0
        self._stopping = False
        self.dropped_no_link = 0
        """Forwarding decisions whose next hop had no link (a route outliving its link)."""
        self.tracing = False
        """Queue :class:`Trace` actions (the simulator checks paths with them)."""
        self.generation = 0
        """Bumped on every change a waiter may care about (links, routes, roles)."""
        self.timer_moved = True
        """Set when :meth:`get_timer` may have changed; the driver clears it when it re-arms."""

    def start(self, now: float) -> None:
        """The node starts running at ``now``: its routing core starts its clock."""
        self._router = Router(self.node_id, now=now, rng=self._rng, config=self._config.routing,
                              index=self._route_index)
        self.timer_moved = True

    # --- queries ------------------------------------------------------------------

    @property
    def router(self) -> Router:
        if self._router is None:
            raise RuntimeError("the node is not running")
        return self._router

    def message_lost(self, peer: NodeId, message: Message, now: float) -> None:
        """A link-local message for ``peer`` did not fit its queue.  A lost route update
        leaves the neighbour's table behind, so the router sends it everything again;
        any other message was best-effort and is just gone."""
        if self._router is not None and isinstance(message, RouteUpdate):
            self._router.resync(peer, now)

    def take_actions(self) -> list[NodeAction[L]]:
        """What the driver must do now, in order; the queue is emptied."""
        out, self._out = self._out, []
        return out

    @property
    def neighbours(self) -> dict[NodeId, L]:
        """Established links by peer id (the live table: do not mutate)."""
        return self._neighbours

    @property
    def attached_clients(self) -> list[NodeId]:
        return list(self._attached)

    @property
    def home(self) -> NodeId | None:
        return self.forwarder.home

    def facts(self, link: L) -> LinkFacts | None:
        return self._facts.get(link)

    def get_timer(self) -> float:
        """The next moment :meth:`handle_timer` has work (inf before :meth:`start`)."""
        echo = self._echoes.deadline()
        routing = math.inf if self._router is None else self._router.get_timer()
        return routing if echo is None else min(routing, echo)

    def statistics(self) -> CoreStatistics:
        router = self._router
        return CoreStatistics(
            routes=tuple(router.table()) if router else (),
            links_accepted=self._links_accepted,
            forwarding={**asdict(self.forwarder.counters),
                        "dropped_no_link": self.dropped_no_link},
            routing=asdict(router.counters) if router else {},
            edge=self.edge, home=self.forwarder.home, attached=tuple(self._attached),
            locations=len(self.forwarder.locations))

    def resolve_node_id(self, text: str) -> NodeId:
        """A full hex id, or a unique prefix of a known destination, neighbour, or edge
        client whose home supernode we know (an edge client's contacts)."""
        text = text.strip().lower()
        if len(text) == 2 * NODE_ID_LEN:
            try:
                return NodeId.from_hex(text)
            except ValueError as exc:
                raise ControlError(str(exc)) from None
        if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
            raise ControlError(f"not a node id or a prefix of at least 4 hex digits: {text!r}")
        known = {self.node_id, *self._neighbours, *self.router.destinations(),
                 *self.forwarder.locations}
        matches = [n for n in known if n.hex().startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ControlError(f"no known node id starts with {text} (give the full id)")
        raise ControlError(f"{text} is ambiguous: {len(matches)} known node ids start with it")

    # --- application events -------------------------------------------------------

    def send_packet(self, packet_type: int, dst: NodeId, body: Any, now: float,
                    ttl: int | None = None) -> RoutedPacket:
        """Originate a routed packet (best effort: it may be dropped on the way)."""
        packet = self.forwarder.new_packet(packet_type, dst, body, ttl)
        self._trace("originate", packet)
        self._execute(self.forwarder.originate(packet), now)
        return packet

    def send_echo(self, dst: NodeId, now: float, *, ttl: int | None = None,
                  patience: float = 2.0) -> int:
        """Send an ECHO_REQUEST; an :class:`EchoDone` with its id follows within ``patience``."""
        packet = self.forwarder.new_packet(MessageType.ECHO_REQUEST, dst, None, ttl)
        self._echoes.start(packet, now, patience)
        self.timer_moved = True
        self._trace("originate", packet)
        self._execute(self.forwarder.originate(packet), now)
        return packet.packet_id

    def cancel_echo(self, echo_id: int) -> None:
        self._echoes.cancel(echo_id)

    def set_home(self, supernode: NodeId | None) -> None:
        """An edge client's home supernode: where packets without a direct link go."""
        self.forwarder.home = supernode
        self._changed()

    def set_location(self, node: NodeId, home: NodeId) -> None:
        """``node`` is an edge client attached to ``home`` (from the directory's presence)."""
        self.forwarder.set_location(node, home)

    def promote(self) -> bool:
        """An edge client becomes a routing node; False if it already is one."""
        if not self.edge:
            return False
        self.edge = False
        self.forwarder.relays = True
        self.forwarder.home = None
        for link in list(self._neighbours.values()):
            if self._facts[link].purpose is AttachPurpose.EDGE:
                self._out.append(CloseLink(link, CloseCode.NORMAL, "promoted to supernode"))
        log.info("node %s promoted: now routing and relaying", self.node_id)
        self._changed()
        return True

    def stop(self) -> None:
        """The node is shutting down: no more routing work, the routes go away with it."""
        self._stopping = True

    def handle_timer(self, now: float) -> None:
        if self._router is not None and now >= self._router.get_timer():
            self._router.handle_timer(now)
            self._after_routing()
        for echo_id, result in self._echoes.expire(now):
            self._out.append(EchoDone(echo_id, result))
        self.timer_moved = True

    # --- link events ----------------------------------------------------------------

    def link_established(self, link: L, peer: NodeId, facts: LinkFacts) -> None:
        existing = self._neighbours.get(peer)
        if existing is not None and existing is not link:
            loser = link
            if keep_new_link(self.node_id, peer, self._facts[existing].initiator,
                             facts.initiator):
                loser = existing
                self._neighbours[peer] = link
                del self._facts[existing]
                self._facts[link] = facts
            self._out.append(CloseLink(
                loser, CloseCode.DUPLICATE_LINK,
                f"node {self.node_id.short} already has a link with {peer.short}"))
            return
        self._neighbours[peer] = link
        self._facts[link] = facts
        self._links_accepted += 1
        if facts.purpose is not None:
            self._out.append(SendMessage(link, Attach(facts.purpose)))
        self._changed()

    def link_rtt(self, link: L, peer: NodeId, *, cost_us: int, noise_us: int, samples: int,
                 sample: float, now: float, recent_high_us: int | None = None) -> None:
        """A link measured an RTT (``sample`` seconds); ``cost_us`` is its routing metric."""
        if self._neighbours.get(peer) is not link:
            return
        facts = self._facts[link]
        if not self._routes_with(peer, link):
            if samples == 1 and not self._is_probe(peer):
                what = "edge client" if peer in self._attached else "neighbour"
                log.info("%s %s up via %s (%s), rtt %.3f ms", what, peer, facts.address,
                         facts.direction, sample * 1000)
                self._changed()
            return
        if samples == 1:
            log.info("neighbour %s up via %s (%s), rtt %.3f ms", peer, facts.address,
                     facts.direction, sample * 1000)
            self.router.add_neighbour(peer, cost_us, now)
        else:
            # A change smaller than the spread of recent samples is noise, not news.
            self.router.update_cost(peer, cost_us, now, noise_us=noise_us,
                                    recent_high_us=recent_high_us)
        self._after_routing()
        self._changed()

    def link_message(self, link: L, peer: NodeId, message: Message, now: float) -> None:
        if self._neighbours.get(peer) is not link:
            return  # a duplicate link being closed: ignore what it still carries
        if isinstance(message, RoutedPacket):
            self._trace("receive", message)
            self._execute(self.forwarder.receive(message), now)
        elif isinstance(message, RouteUpdate | SeqnoRequest):
            if self._routes_with(peer, link):
                self.router.receive(peer, message, now)
                self._after_routing()
        elif isinstance(message, Attach):
            self._peer_attached(peer, link, message, now)

    def link_down(self, link: L, peer: NodeId, why: str, now: float) -> None:
        """An established link ended (``why`` describes it, for the log)."""
        facts = self._facts.get(link)
        if facts is None or self._neighbours.get(peer) is not link:
            log.debug("duplicate link closed: %s", why)
            self._changed()
            return
        del self._neighbours[peer]
        del self._facts[link]
        probe = self._is_probe(peer)
        self._non_routing.discard(peer)
        if probe:
            log.debug("probe from %s done (%s)", peer, facts.address)
        elif self._attached.pop(peer, None) is not None:
            log.info("edge client %s detached (%s): %s", peer, facts.address, why)
        else:
            log.info("neighbour %s down (%s): %s", peer, facts.address, why)
        if self._router is not None and not self._stopping:
            self._router.remove_neighbour(peer, now)
            self._after_routing()
        self._changed()

    # --- policy -------------------------------------------------------------------------

    def _routes_with(self, peer: NodeId, link: L) -> bool:
        """Does routing run over this link?  Not on edge clients, nor with edges and probes."""
        if self.edge or peer in self._non_routing:
            return False
        facts = self._facts.get(link)
        return facts is not None and facts.purpose is None

    def _peer_attached(self, peer: NodeId, link: L, message: Attach, now: float) -> None:
        """The peer declared its link non-routing (an edge client or a probe)."""
        if self.edge and message.purpose == AttachPurpose.EDGE:
            self._out.append(CloseLink(link, CloseCode.PROTOCOL_ERROR,
                                       "an edge client cannot take attachments"))
            return
        self._non_routing.add(peer)
        if self._router is not None and not self._stopping:
            self._router.remove_neighbour(peer, now)
            self._after_routing()
        if message.purpose == AttachPurpose.EDGE:
            self._attached[peer] = link
            self._changed()

    def _is_probe(self, peer: NodeId) -> bool:
        """A non-routing link that is no attachment: someone measuring its RTT to us."""
        return peer in self._non_routing and peer not in self._attached

    def _next_hop(self, destination: NodeId) -> NodeId | None:
        if self.edge:
            return destination if destination in self._neighbours else None
        hop = self._router.next_hop(destination) if self._router is not None else None
        if hop is None and destination in self._attached:
            return destination
        return hop

    def _default_hop(self) -> NodeId | None:
        """An edge client's default route: its home supernode, else any attached supernode."""
        if not self.edge:
            return None
        home = self.forwarder.home
        if home is not None and home in self._neighbours:
            return home
        for peer, link in self._neighbours.items():
            if self._facts[link].purpose is AttachPurpose.EDGE:
                return peer
        return None

    def _after_routing(self) -> None:
        """Queue what the routing core wants sent; its timer may have moved."""
        router = self.router
        while (out := router.next_outgoing()) is not None:
            target, message = out
            if target is not None:
                link = self._neighbours.get(target)
                if link is not None:
                    self._out.append(SendMessage(link, message))
            else:
                for peer, link in self._neighbours.items():
                    if self._routes_with(peer, link):
                        self._out.append(SendMessage(link, message))
        self.timer_moved = True
        if router.counters.route_changes != self._routes_seen:
            self._routes_seen = router.counters.route_changes
            self._changed()  # waiters may look at routes

    def _execute(self, actions: list[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, Forward):
                link = self._neighbours.get(action.next_hop)
                if link is None:
                    self.dropped_no_link += 1
                    self._trace("drop", action.packet)
                else:
                    self._out.append(Transmit(link, action.packet))
            elif isinstance(action, Deliver):
                self._trace("deliver", action.packet)
                self._deliver(action.packet, now)
            else:
                log.debug("dropped %s: %s", action.packet, action.reason)
                self._trace("drop", action.packet)

    def _deliver(self, packet: RoutedPacket, now: float) -> None:
        if packet.type != MessageType.ECHO_REPLY and packet.type not in ERROR_TYPES:
            self._out.append(DeliverLocal(packet))
            return
        answer = parse_answer(packet)
        if answer is None:
            log.debug("malformed echo answer from %s", packet.src)
            return
        link = self._neighbours.get(answer.responder)
        fallback = self._facts[link].address if link is not None else None
        result = self._echoes.answer(answer, now, fallback)
        if result is not None:
            self._out.append(EchoDone(answer.echo_id, result))
            self.timer_moved = True
        elif packet.type in ERROR_TYPES:
            report = ErrorReport.from_body(packet.body)  # parse_answer has checked it
            if report.original_type == MessageType.ECHO_REQUEST:
                return  # a late answer to an echo nobody waits for
            self._out.append(DeliveryFailed(report.original_dst, report.original_type,
                                            MessageType(packet.type), packet.src))

    def _trace(self, event: str, packet: RoutedPacket) -> None:
        if self.tracing:
            self._out.append(Trace(event, packet))

    def _changed(self) -> None:
        self.generation += 1
