"""A running overlay node: its listener, its dialers and its neighbour links.

The node owns one nursery.  In it run the listener (one task per accepted
connection), one dialer per configured neighbour address, and the control
socket.  Each link is driven by :class:`~overlay.net.link.Link` inside the task
that accepted or dialled it, so a link's lifetime is exactly that task's.

Neighbour table
---------------
At most one established link per peer.  When a second one comes up (two
nodes dialling each other at once, or a reconnect racing an old link), both
ends must keep the same one without talking about it, so the rule depends only
on facts both know: between links dialled in opposite directions, keep the one
dialled by the node with the smaller id; between links dialled the same way,
keep the older.  The other is closed with DUPLICATE_LINK.

Inbound connections in the handshake hold a slot of :class:`HandshakeSlots`
(per source address and in all; a newcomer evicts the oldest idle one, never an
established neighbour or a link this node dialled).

Dialers reconnect with exponential backoff and jitter (``reconnect_initial``
doubling up to ``reconnect_max``), and stay quiet while the peer they reach is
linked through some other connection.

Routing and forwarding
----------------------
A neighbour joins the routing core once its link has a first RTT sample (its
cost); route updates and seqno requests travel over the links, and a routing
timer task drives the core's periodic work.  Routed packets go through the
forwarding core, whose decisions this driver carries out: deliver to a local
handler, send to the next hop's link (a full send buffer drops the packet and
counts it), or drop.  ``echo()`` sends an ECHO_REQUEST and waits for the reply
or for an error report naming the hop that dropped it: ping and traceroute.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from overlay.addresses import Address, format_address
from overlay.errors import (
    ConfigError,
    ControlError,
    LocalProtocolError,
    MalformedMessage,
    OverlayError,
)
from overlay.ids import NODE_ID_LEN, Identity, NodeId
from overlay.net.channels import Channel, ChannelManager
from overlay.net.control import ControlConnection, serve_control
from overlay.net.link import HandshakeSlots, Link, LinkStatistics
from overlay.net.messaging import handle_listen, handle_send
from overlay.net.transport import TcpTransport, Transport, describe_connect_error
from overlay.proto.forwarding import (
    ERROR_TYPES,
    Action,
    Deliver,
    ErrorReport,
    Forward,
    Forwarder,
)
from overlay.proto.link import LinkConfig, LinkCore, LinkDown, LinkState, RttMeasured
from overlay.proto.messages import (
    DEFAULT_TTL,
    MAX_TTL,
    METRIC_INFINITY,
    NONCE_LEN,
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
from overlay.proto.routing import RouteInfo, Router, RoutingConfig

log = logging.getLogger(__name__)


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
    """Inbound connections in the handshake at once (see :class:`HandshakeSlots`)."""
    max_pending_per_address: int = 8
    """Of those, from one source host; a newcomer evicts that host's oldest."""
    shutdown_grace: float = 0.5
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    default_ttl: int = DEFAULT_TTL
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    edge: bool = False
    """An edge client: no routing, no relaying; what has no direct link goes to the home
    supernode (see :meth:`Node.attach`)."""


def keep_new_link(own_id: NodeId, peer_id: NodeId, existing_outgoing: bool,
                  new_outgoing: bool) -> bool:
    """The duplicate-link rule (module docstring): True to keep the new link."""
    if existing_outgoing == new_outgoing:
        return False  # same direction: keep the older
    we_dial = own_id < peer_id  # the smaller id's outgoing link wins
    return new_outgoing == we_dial


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    node_id: NodeId
    listen: str | None
    neighbours: tuple[LinkStatistics, ...]
    pending: tuple[LinkStatistics, ...]
    routes: tuple[RouteInfo, ...]
    links_accepted: int
    links_refused: int
    forwarding: dict[str, int]
    routing: dict[str, int]
    dropped_queue_full: int
    dropped_unencodable: int
    dropped_no_link: int


@dataclass(frozen=True, slots=True)
class EchoResult:
    """The outcome of one ECHO_REQUEST: a reply, an error report, or silence."""

    kind: str  # "reply", "time_exceeded", "unreachable" or "timeout"
    responder: NodeId | None
    address: str | None
    rtt: float | None
    ttl: int

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "responder": self.responder.hex() if self.responder else None,
            "address": self.address,
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3),
            "ttl": self.ttl,
        }


PacketHandler = Callable[[RoutedPacket], None]
PacketTrace = Callable[[str, NodeId, RoutedPacket], None]


class Node:
    """``async with Node(identity, config) as node:`` runs a node until the block exits."""

    def __init__(
        self,
        identity: Identity,
        config: NodeConfig | None = None,
        *,
        transport: Transport | None = None,
        control_path: Path | None = None,
        rng: random.Random | None = None,
        nonce_source: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.config = config or NodeConfig()
        self.listen_address: Address | None = None
        self._transport: Transport = transport or TcpTransport()
        self._control_path = control_path
        self._rng = rng or random.Random()
        self._nonce_source = nonce_source
        self._nursery: trio.Nursery | None = None
        self._links: set[Link] = set()
        self._handshake_slots = HandshakeSlots(per_address=self.config.max_pending_per_address,
                                               total=self.config.max_pending_handshakes)
        self._neighbours: dict[NodeId, Link] = {}
        self._changed = trio.Event()
        self._started_at = 0.0
        self._links_accepted = 0
        self._links_refused = 0
        self._dropped_queue_full = 0
        self._dropped_unencodable = 0
        self._dropped_no_link = 0
        self._running_cm: Any = None
        self._routing_scope: trio.CancelScope | None = None
        self._stopping = False
        self._routes_seen = 0
        self._router: Router | None = None
        self._attached: dict[NodeId, Link] = {}
        """Edge clients attached to this node (their links sent ATTACH EDGE)."""
        self._non_routing: set[NodeId] = set()
        """Peers whose links carry no routing: edge clients and probes."""
        self._attach_purpose: dict[Link, AttachPurpose] = {}
        """Links this node dialled as an edge client or a probe: ATTACH goes first on them."""
        self.forwarder = Forwarder(self.node_id, self._next_hop,
                                   default_ttl=self.config.default_ttl,
                                   first_packet_id=self._rng.getrandbits(32),
                                   default_hop=self._default_hop,
                                   attached=self._attached.__contains__,
                                   relays=not self.config.edge)
        self._handlers: dict[int, PacketHandler] = {}
        self.channels = ChannelManager(self.node_id, self.send_packet, self.config.channel)
        self._handlers[MessageType.DATA] = self.channels.handle_packet
        self._echoes: dict[int, tuple[float, trio.Event, list[EchoResult]]] = {}
        self.role_status: Callable[[], dict[str, Any]] | None = None
        """Adds the running role's view (edge client, supernode) to ``status``."""
        self.name_resolver: Callable[[str], Awaitable[NodeId]] | None = None
        """Turns a username into a node id for ``overlay send`` (set by the edge role)."""
        self.trace: PacketTrace | None = None
        """Called as ``trace(event, node_id, packet)`` for every packet this node
        originates, forwards, delivers or drops (the simulator checks paths with it)."""

    def __repr__(self) -> str:
        return f"<Node {self.node_id.short}>"

    # --- lifetime ---------------------------------------------------------------

    async def __aenter__(self) -> Node:
        self._running_cm = self._running()
        await self._running_cm.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        result: bool | None = await self._running_cm.__aexit__(exc_type, exc, tb)
        return result

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        self._started_at = trio.current_time()
        self._router = Router(self.node_id, now=self._started_at, rng=self._rng,
                              config=self.config.routing)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._routing_timer)
            await nursery.start(self.channels.run)
            if self.config.listen is not None:
                try:
                    self.listen_address = await nursery.start(
                        self._transport.serve, self.config.listen, self._accept
                    )
                except OSError as exc:
                    raise ConfigError(
                        f"cannot listen on {format_address(self.config.listen)}: "
                        f"{exc.strerror or exc}"
                    ) from None
                log.info("node %s listening on %s", self.node_id,
                         format_address(self.listen_address))
                self.forwarder.address = format_address(self.listen_address)
            if self._control_path is not None:
                await nursery.start(serve_control, self._control_path, self._control)
            for address in self.config.connect:
                self.connect(address)
            try:
                yield
            finally:
                await self._close_links_gracefully()
                nursery.cancel_scope.cancel()

    async def _close_links_gracefully(self) -> None:
        self._stopping = True  # no more routing work: the routes are going away with us
        for link in list(self._links):
            link.close(CloseCode.NORMAL, "node shutting down")
        with trio.move_on_after(self.config.shutdown_grace, shield=True):
            for link in list(self._links):
                await link.finished.wait()

    # --- public API ---------------------------------------------------------------

    def connect(self, address: Address, *, expected_peer: NodeId | None = None,
                attach: bool = False) -> trio.CancelScope:
        """Keep a link to ``address``: dial now, and redial with backoff whenever it drops.

        ``attach``: dial as an edge client (ATTACH EDGE goes first on the link).
        Cancel the returned scope to stop redialling (the current link stays up
        until closed; see :meth:`disconnect`).
        """
        if self._nursery is None:
            raise RuntimeError("the node is not running")
        scope = trio.CancelScope()
        purpose = AttachPurpose.EDGE if attach else None
        self._nursery.start_soon(self._dial_loop, address, expected_peer, purpose, scope)
        return scope

    def disconnect(self, peer: NodeId, reason: str = "no longer wanted") -> None:
        """Close the link to ``peer`` if there is one (its dialer, if any, must be cancelled)."""
        link = self._neighbours.get(peer)
        if link is not None:
            link.close(CloseCode.NORMAL, reason)

    @property
    def home(self) -> NodeId | None:
        """An edge client's home supernode: where packets without a direct link go."""
        return self.forwarder.home

    def set_home(self, supernode: NodeId | None) -> None:
        self.forwarder.home = supernode
        self._notify()

    def set_location(self, node: NodeId, home: NodeId) -> None:
        """``node`` is an edge client attached to ``home`` (from the directory's presence)."""
        self.forwarder.set_location(node, home)

    def promote(self) -> None:
        """An edge client becomes a routing node (a supernode), keeping its channels.

        Its attachments are closed (their far ends treat them as edge links); the
        caller then joins the mesh like any supernode (:mod:`overlay.roles.supernode`).
        """
        if not self.config.edge:
            return
        self.config = replace(self.config, edge=False)
        self.forwarder.relays = True
        self.forwarder.home = None
        for link in list(self._neighbours.values()):
            if self._attach_purpose.get(link) is AttachPurpose.EDGE:
                link.close(CloseCode.NORMAL, "promoted to supernode")
        log.info("node %s promoted: now routing and relaying", self.node_id)
        self._notify()

    @property
    def attached_clients(self) -> list[NodeId]:
        return list(self._attached)

    @property
    def router(self) -> Router:
        if self._router is None:
            raise RuntimeError("the node is not running")
        return self._router

    def open_channel(self, peer: NodeId) -> Channel:
        """A reliable, ordered channel to ``peer``: ``async with node.open_channel(p) as ch``."""
        return self.channels.open(peer)

    async def accept_channel(self) -> Channel:
        """The next reliable channel another node opened to this one."""
        return await self.channels.accept()

    def register_handler(self, packet_type: int, handler: PacketHandler) -> None:
        """Deliver routed packets of ``packet_type`` addressed to this node to ``handler``."""
        self._handlers[packet_type] = handler

    def send_packet(self, packet_type: int, dst: NodeId, body: Any,
                    ttl: int | None = None) -> RoutedPacket:
        """Originate a routed packet (best effort: it may be dropped on the way)."""
        packet = self.forwarder.new_packet(packet_type, dst, body, ttl)
        self._trace("originate", packet)
        self._execute(self.forwarder.originate(packet))
        return packet

    async def echo(self, dst: NodeId, *, ttl: int | None = None,
                   patience: float = 2.0) -> EchoResult:
        """Send one ECHO_REQUEST; the reply, an error report, or a timeout after ``patience``."""
        sent_at = trio.current_time()
        done, slot = trio.Event(), list[EchoResult]()
        packet = self.forwarder.new_packet(MessageType.ECHO_REQUEST, dst, None, ttl)
        self._echoes[packet.packet_id] = (sent_at, done, slot)
        try:
            self._trace("originate", packet)
            self._execute(self.forwarder.originate(packet))
            with trio.move_on_after(patience):
                await done.wait()
        finally:
            del self._echoes[packet.packet_id]
        if slot:
            result: EchoResult = replace(slot[0], ttl=packet.ttl)
            return result
        return EchoResult("timeout", None, None, None, packet.ttl)

    @property
    def neighbours(self) -> dict[NodeId, Link]:
        """Established links by peer id (a copy)."""
        return dict(self._neighbours)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; re-checked after every link or route change."""
        while not predicate():
            await self._changed.wait()

    def statistics(self) -> NodeStatistics:
        neighbours = tuple(link.statistics() for link in self._neighbours.values())
        pending = tuple(
            link.statistics() for link in self._links if link.core.state is LinkState.HANDSHAKE
        )
        return NodeStatistics(
            node_id=self.node_id,
            listen=format_address(self.listen_address) if self.listen_address else None,
            neighbours=neighbours,
            pending=pending,
            routes=tuple(self._router.table()) if self._router else (),
            links_accepted=self._links_accepted,
            links_refused=self._links_refused,
            forwarding=asdict(self.forwarder.counters),
            routing=asdict(self._router.counters) if self._router else {},
            dropped_queue_full=self._dropped_queue_full,
            dropped_unencodable=self._dropped_unencodable,
            dropped_no_link=self._dropped_no_link,
        )

    def status(self) -> dict[str, Any]:
        """The JSON-able answer to ``overlay status``."""
        stats = self.statistics()
        return {
            "node_id": stats.node_id.hex(),
            "listen": stats.listen,
            "uptime_s": round(trio.current_time() - self._started_at, 3),
            "neighbours": [_link_json(s) for s in stats.neighbours],
            "pending": [_link_json(s) for s in stats.pending],
            "routes": [
                {
                    "destination": r.destination.hex(),
                    "next_hop": r.next_hop.hex() if r.next_hop else None,
                    "metric_us": None if r.metric >= METRIC_INFINITY else r.metric,
                    "seqno": r.seqno,
                }
                for r in stats.routes
            ],
            "links_accepted": stats.links_accepted,
            "links_refused": stats.links_refused,
            "forwarding": {**stats.forwarding, "dropped_queue_full": stats.dropped_queue_full,
                           "dropped_unencodable": stats.dropped_unencodable,
                           "dropped_no_link": stats.dropped_no_link},
            "routing": stats.routing,
            "edge": self.config.edge,
            "home": None if self.home is None else self.home.hex(),
            "attached_clients": [peer.hex() for peer in self._attached],
            "locations": len(self.forwarder.locations),
            "role": self.role_status() if self.role_status is not None else None,
        }

    # --- link tasks ---------------------------------------------------------------

    def _new_link(self, stream: trio.abc.Stream, address: Address, *, initiator: bool,
                  expected_peer: NodeId | None = None) -> Link:
        core = LinkCore(
            self.identity,
            initiator=initiator,
            nonce=self._nonce_source(NONCE_LEN),
            now=trio.current_time(),
            config=self.config.link,
            expected_peer=expected_peer,
        )
        link = Link(core, stream, address, self)
        self._links.add(link)
        return link

    async def _run_link(self, link: Link) -> LinkDown:
        try:
            return await link.run()
        finally:
            self._links.discard(link)
            self._notify()

    async def _accept(self, stream: trio.abc.Stream, address: Address) -> None:
        link = self._new_link(stream, address, initiator=False)
        victim = self._handshake_slots.admit(link)
        if victim is not None:
            log.debug("evicted pending connection from %s for one from %s",
                      format_address(victim.address), format_address(address))
        await self._run_link(link)

    async def _dial_loop(self, address: Address, expected_peer: NodeId | None,
                         purpose: AttachPurpose | None, scope: trio.CancelScope) -> None:
        with scope:
            await self._dial_forever(address, expected_peer, purpose)

    async def _dial_forever(self, address: Address, expected_peer: NodeId | None,
                            purpose: AttachPurpose | None) -> None:
        delay = self.config.reconnect_initial
        known_peer = expected_peer
        failures = 0
        while True:
            if known_peer is not None and known_peer in self._neighbours:
                await self._wait_unlinked(known_peer)
                delay = self.config.reconnect_initial
                continue
            established = False
            try:
                with trio.fail_after(self.config.connect_timeout):
                    stream = await self._transport.connect(address)
            except (OSError, trio.TooSlowError) as exc:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "cannot reach %s (%s); retrying with backoff",
                        format_address(address), describe_connect_error(exc))
            else:
                failures = 0
                link = self._new_link(stream, address, initiator=True,
                                      expected_peer=expected_peer)
                if purpose is not None:
                    self._attach_purpose[link] = purpose
                try:
                    await self._run_link(link)
                finally:
                    self._attach_purpose.pop(link, None)
                if link.core.peer_id is not None:
                    known_peer = link.core.peer_id
                established = link.core.established_at is not None
            if established:
                delay = self.config.reconnect_initial
            await trio.sleep(delay * self._rng.uniform(0.5, 1.0))
            if not established:
                delay = min(delay * 2, self.config.reconnect_max)

    async def _wait_unlinked(self, peer: NodeId) -> None:
        await self.wait_until(lambda: peer not in self._neighbours)

    # --- LinkHandler ----------------------------------------------------------------

    def link_established(self, link: Link) -> None:
        peer = link.peer_id
        assert peer is not None
        existing = self._neighbours.get(peer)
        if existing is not None and existing is not link:
            if keep_new_link(self.node_id, peer, existing.core.initiator, link.core.initiator):
                existing, link = link, existing
            self._neighbours[peer] = existing
            link.close(
                CloseCode.DUPLICATE_LINK,
                f"node {self.node_id.short} already has a link with {peer.short}",
            )
            return
        self._neighbours[peer] = link
        self._links_accepted += 1
        purpose = self._attach_purpose.get(link)
        if purpose is not None:
            link.send_nowait(Attach(purpose))
        self._notify()

    def link_rtt(self, link: Link, event: RttMeasured) -> None:
        peer, cost = link.peer_id, link.core.metric_us
        if peer is None or cost is None or self._neighbours.get(peer) is not link:
            return
        if not self._routes_with(peer, link):
            if link.core.rtt.samples == 1 and not self._is_probe(peer):
                what = "edge client" if peer in self._attached else "neighbour"
                log.info("%s %s up via %s (%s), rtt %.3f ms", what, peer,
                         format_address(link.address), link.direction, event.sample * 1000)
                self._notify()
            return
        if link.core.rtt.samples == 1:
            log.info("neighbour %s up via %s (%s), rtt %.3f ms", peer,
                     format_address(link.address), link.direction, event.sample * 1000)
            self.router.add_neighbour(peer, cost, trio.current_time())
        else:
            # A change smaller than the spread of recent samples is noise, not news.
            self.router.update_cost(peer, cost, trio.current_time(),
                                    noise_us=link.core.metric_noise_us)
        self._after_routing()
        self._notify()

    def link_message(self, link: Link, message: Message) -> None:
        peer = link.peer_id
        if peer is None or self._neighbours.get(peer) is not link:
            return  # a duplicate link being closed: ignore what it still carries
        if isinstance(message, RoutedPacket):
            self._trace("receive", message)
            self._execute(self.forwarder.receive(message))
        elif isinstance(message, RouteUpdate | SeqnoRequest):
            if self._routes_with(peer, link):
                self.router.receive(peer, message, trio.current_time())
                self._after_routing()
        elif isinstance(message, Attach):
            self._peer_attached(peer, link, message)

    def link_down(self, link: Link, event: LinkDown) -> None:
        peer = link.peer_id
        where = format_address(link.address)
        if peer is not None and self._neighbours.get(peer) is link:
            del self._neighbours[peer]
            probe = self._is_probe(peer)
            self._non_routing.discard(peer)
            if probe:
                log.debug("probe from %s done (%s)", peer, where)
            elif self._attached.pop(peer, None) is not None:
                log.info("edge client %s detached (%s): %s", peer, where, event.describe())
            else:
                log.info("neighbour %s down (%s): %s", peer, where, event.describe())
            if self._router is not None and not self._stopping:
                self._router.remove_neighbour(peer, trio.current_time())
                self._after_routing()
        elif link.core.established_at is None:
            self._links_refused += 1
            # A connection that never said who it is (no HELLO), or that we evicted for a
            # newer one, is load, not news: only handshakes that got somewhere and failed
            # are worth a warning (no log flood under attack).
            quiet = event.code in (CloseCode.NORMAL, CloseCode.OVERLOADED) or (
                not link.core.initiator and link.core.peer_public_key is None)
            level = logging.DEBUG if quiet else logging.WARNING
            log.log(level, "link %s %s failed during handshake: %s", link.direction, where,
                    event.describe())
        else:
            log.debug("duplicate link %s %s closed: %s", link.direction, where, event.describe())
        self._notify()

    # --- routing and forwarding -------------------------------------------------------

    def _routes_with(self, peer: NodeId, link: Link) -> bool:
        """Does routing run over this link?  Not on edge clients, nor with edges and probes."""
        if self.config.edge or peer in self._non_routing:
            return False
        return link not in self._attach_purpose

    def _peer_attached(self, peer: NodeId, link: Link, message: Attach) -> None:
        """The peer declared its link non-routing (an edge client or a probe)."""
        if self.config.edge and message.purpose == AttachPurpose.EDGE:
            link.close(CloseCode.PROTOCOL_ERROR, "an edge client cannot take attachments")
            return
        self._non_routing.add(peer)
        if self._router is not None and not self._stopping:
            self._router.remove_neighbour(peer, trio.current_time())
            self._after_routing()
        if message.purpose == AttachPurpose.EDGE:
            self._attached[peer] = link
            self._notify()

    def _is_probe(self, peer: NodeId) -> bool:
        """A non-routing link that is no attachment: someone measuring its RTT to us."""
        return peer in self._non_routing and peer not in self._attached

    def _next_hop(self, destination: NodeId) -> NodeId | None:
        if self.config.edge:
            return destination if destination in self._neighbours else None
        hop = self._router.next_hop(destination) if self._router else None
        if hop is None and destination in self._attached:
            return destination
        return hop

    def _default_hop(self) -> NodeId | None:
        """An edge client's default route: its home supernode, else any attached supernode."""
        if not self.config.edge:
            return None
        home = self.forwarder.home
        if home is not None and home in self._neighbours:
            return home
        for peer, link in self._neighbours.items():
            if self._attach_purpose.get(link) is AttachPurpose.EDGE:
                return peer
        return None

    async def _routing_timer(self) -> None:
        while True:
            with trio.CancelScope(deadline=self.router.get_timer()) as scope:
                self._routing_scope = scope
                await trio.sleep_forever()
            self.router.handle_timer(trio.current_time())
            self._after_routing()

    def _after_routing(self) -> None:
        """Send what the routing core queued and re-arm its timer."""
        router = self.router
        while (out := router.next_outgoing()) is not None:
            target, message = out
            if target is not None:
                links = [self._neighbours.get(target)]
            else:
                links = [link for peer, link in self._neighbours.items()
                         if self._routes_with(peer, link)]
            for link in links:
                if link is not None and not link.send_nowait(message):
                    self._dropped_queue_full += 1
                    if link.peer_id is not None:  # a lost update: resend everything later
                        router.resync(link.peer_id, trio.current_time())
        if self._routing_scope is not None:
            self._routing_scope.deadline = router.get_timer()
        if router.counters.route_changes != self._routes_seen:
            self._routes_seen = router.counters.route_changes
            self._notify()  # wait_until() predicates may look at routes

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Forward):
                link = self._neighbours.get(action.next_hop)
                if link is None:
                    self._dropped_no_link += 1
                    self._trace("drop", action.packet)
                else:
                    self._forward(link, action.packet)
            elif isinstance(action, Deliver):
                self._trace("deliver", action.packet)
                self._deliver(action.packet)
            else:
                log.debug("dropped %s: %s", action.packet, action.reason)
                self._trace("drop", action.packet)

    def _forward(self, link: Link, packet: RoutedPacket) -> None:
        """Send ``packet`` on ``link``, or drop and count it.

        A packet built around a peer's bytes may not fit the wire: an echo
        reply one level deeper than a request at the nesting limit, or larger
        than a request near the size limit, a relayed float32 re-sent as
        float64.  Encoding refuses it (LocalProtocolError) before anything is
        queued, and it is dropped like a packet for a full queue.
        """
        try:
            sent = link.send_nowait(packet)
        except LocalProtocolError as exc:
            self._dropped_unencodable += 1
            self._trace("drop", packet)
            log.debug("dropped %s: %s", packet, exc)
            return
        if sent:
            self._trace("forward", packet)
        else:
            self._dropped_queue_full += 1
            self._trace("drop", packet)

    def _deliver(self, packet: RoutedPacket) -> None:
        if packet.type == MessageType.ECHO_REPLY:
            body = packet.body
            address = body[2] if isinstance(body, list) and len(body) == 3 else None
            self._echo_answered(packet, "reply", packet.src,
                                address if isinstance(address, str) else None, body)
        elif packet.type in ERROR_TYPES:
            try:
                report = ErrorReport.from_body(packet.body)
            except MalformedMessage as exc:
                log.debug("malformed error report from %s: %s", packet.src, exc)
                return
            kind = "time_exceeded" if packet.type == MessageType.TIME_EXCEEDED else "unreachable"
            self._echo_answered(packet, kind, packet.src, report.reporter_address,
                                [report.original_packet_id])
        elif (handler := self._handlers.get(packet.type)) is not None:
            handler(packet)
        else:
            log.debug("no handler for packet type 0x%02x from %s", packet.type, packet.src)

    def _echo_answered(self, packet: RoutedPacket, kind: str, responder: NodeId,
                       address: str | None, body: Any) -> None:
        if not isinstance(body, list) or not body or not isinstance(body[0], int):
            return
        pending = self._echoes.get(body[0])
        if pending is None or pending[2]:
            return  # late, duplicate, or not ours
        sent_at, done, slot = pending
        if address is None:
            link = self._neighbours.get(responder)
            address = format_address(link.address) if link is not None else None
        slot.append(EchoResult(kind, responder, address, trio.current_time() - sent_at, 0))
        done.set()

    def _trace(self, event: str, packet: RoutedPacket) -> None:
        if self.trace is not None:
            self.trace(event, self.node_id, packet)

    # --- helpers --------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _control(self, op: str, request: dict[str, Any],
                       connection: ControlConnection) -> Any:
        if op == "status":
            return self.status()
        if op == "send":
            return await handle_send(self, request, connection)
        if op == "listen":
            return await handle_listen(self, request, connection)
        if op == "echo":
            dst = self.resolve_node_id(str(request.get("dst", "")))
            ttl, patience = request.get("ttl"), request.get("patience", 2.0)
            if ttl is not None and (type(ttl) is not int or not 1 <= ttl <= MAX_TTL):
                raise ControlError(f"ttl must be an integer from 1 to {MAX_TTL}")
            if type(patience) not in (int, float) or not 0 < patience <= 4:
                raise ControlError("patience must be a number of seconds in (0, 4]")
            return (await self.echo(dst, ttl=ttl, patience=float(patience))).to_json()
        raise ControlError(f"unknown control operation {op!r}")

    async def resolve_peer(self, text: str) -> NodeId:
        """A node id (or unique prefix), or a contact's username via the edge role."""
        text = text.strip()
        if self.name_resolver is not None and text and not all(
                c in "0123456789abcdef" for c in text.lower()):
            try:
                return await self.name_resolver(text)
            except OverlayError as exc:
                raise ControlError(f"cannot find {text!r}: {exc}") from None
        return self.resolve_node_id(text)

    def resolve_node_id(self, text: str) -> NodeId:
        """A full hex id, or a unique prefix of a known destination or neighbour."""
        text = text.strip().lower()
        if len(text) == 2 * NODE_ID_LEN:
            try:
                return NodeId.from_hex(text)
            except ValueError as exc:
                raise ControlError(str(exc)) from None
        if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
            raise ControlError(f"not a node id or a prefix of at least 4 hex digits: {text!r}")
        known = {self.node_id, *self._neighbours, *self.router.destinations()}
        matches = [n for n in known if n.hex().startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ControlError(f"no known node id starts with {text} (give the full id)")
        raise ControlError(f"{text} is ambiguous: {len(matches)} known node ids start with it")


def _link_json(stats: LinkStatistics) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "id": stats.peer_id.hex() if stats.peer_id else None,
        "address": stats.address,
        "direction": stats.direction,
        "state": stats.state,
        "srtt_ms": ms(stats.srtt),
        "rttvar_ms": ms(stats.rttvar),
        "metric_us": stats.metric_us,
        "rtt_samples": stats.rtt_samples,
        "pings_sent": stats.pings_sent,
        "pongs_received": stats.pongs_received,
        "missed_pongs": stats.missed_pongs,
    }
