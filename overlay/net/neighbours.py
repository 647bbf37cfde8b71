"""A node's links, and the node core's decisions carried out over them.

:class:`NodeLinks` is the :class:`~overlay.net.link.LinkHandler` of every link
of a node: it turns link events into :class:`~overlay.proto.node.NodeCore`
events (passing ``trio.current_time()``), then carries out the actions the
core queued, in order.  What only I/O can tell (a send queue that is full, a
packet that does not encode, a connection that never finished its handshake)
is counted here.  It also runs the core's one timer and wakes the tasks
waiting in :meth:`NodeLinks.wait_until` or for an echo.

Inbound connections in the handshake hold a slot of :class:`HandshakeSlots`
(per source address and in all; a newcomer evicts the oldest idle one, never
an established neighbour or a link this node dialled).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from overlay.addresses import Address, format_address
from overlay.errors import LocalProtocolError
from overlay.ids import Identity, NodeId
from overlay.net.link import HandshakeSlots, Link
from overlay.proto.echo import EchoResult
from overlay.proto.link import LinkDown, RttMeasured
from overlay.proto.messages import AttachPurpose, CloseCode, Message, RoutedPacket
from overlay.proto.node import (
    CloseLink,
    DeliverLocal,
    DeliveryFailed,
    EchoDone,
    LinkFacts,
    NodeConfig,
    NodeCore,
    SendMessage,
    Trace,
    Transmit,
)

log = logging.getLogger("overlay.net.node")

PacketTrace = Callable[[str, NodeId, RoutedPacket], None]


class NodeLinks:
    """The links of one node and the driver of its core (see the module docstring)."""

    def __init__(self, identity: Identity, core: NodeCore[Link], config: NodeConfig, *,
                 nonce_source: Callable[[int], bytes],
                 deliver: Callable[[RoutedPacket], None],
                 delivery_failed: Callable[[DeliveryFailed], None] = lambda failure: None,
                 ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.core = core
        self._config = config
        self._nonce_source = nonce_source
        self._deliver = deliver
        self._delivery_failed = delivery_failed
        self.links: set[Link] = set()
        """Every link of the node, in the handshake or up."""
        self._purposes: dict[Link, AttachPurpose] = {}
        """Links this node dialled as an edge client or a probe: ATTACH goes first on them."""
        self._handshake_slots = HandshakeSlots(per_address=config.max_pending_per_address,
                                               total=config.max_pending_handshakes)
        self._changed = trio.Event()
        self._generation_seen = 0
        self._timer_scope: trio.CancelScope | None = None
        self.links_refused = 0
        self.dropped_queue_full = 0
        self.dropped_unencodable = 0
        self._echo_waiters: dict[int, trio.Event] = {}
        self._echo_results: dict[int, EchoResult] = {}
        self.trace: PacketTrace | None = None

    def send_packet(self, packet_type: int, dst: NodeId, body: object,
                    ttl: int | None = None) -> RoutedPacket:
        packet = self.core.send_packet(packet_type, dst, body, trio.current_time(), ttl)
        self.pump()
        return packet

    async def echo(self, dst: NodeId, *, ttl: int | None = None,
                   patience: float = 2.0) -> EchoResult:
        """Send one ECHO_REQUEST; the reply, an error report, or a timeout after ``patience``."""
        echo_id = self.core.send_echo(dst, trio.current_time(), ttl=ttl, patience=patience)
        done = self._echo_waiters[echo_id] = trio.Event()
        try:
            self.pump()
            await done.wait()
            return self._echo_results.pop(echo_id)
        finally:
            del self._echo_waiters[echo_id]
            self._echo_results.pop(echo_id, None)
            self.core.cancel_echo(echo_id)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; re-checked after every link or route change."""
        while not predicate():
            await self._changed.wait()

    async def wait_unlinked(self, peer: NodeId) -> None:
        await self.wait_until(lambda: peer not in self.core.neighbours)

    async def close_all(self) -> None:
        self.core.stop()
        for link in list(self.links):
            link.close(CloseCode.NORMAL, "node shutting down")
        with trio.move_on_after(self._config.shutdown_grace, shield=True):
            for link in list(self.links):
                await link.finished.wait()

    def pump(self) -> None:
        core = self.core
        for action in core.take_actions():
            if isinstance(action, Transmit):
                self._transmit(action.link, action.packet)
            elif isinstance(action, SendMessage):
                if not action.link.send_nowait(action.message):
                    self.dropped_queue_full += 1
                    if action.link.peer_id is not None:
                        core.message_lost(action.link.peer_id, action.message,
                                          trio.current_time())
            elif isinstance(action, CloseLink):
                action.link.close(action.code, action.reason)
            elif isinstance(action, DeliverLocal):
                self._deliver(action.packet)
            elif isinstance(action, EchoDone):
                if (waiter := self._echo_waiters.get(action.echo_id)) is not None:
                    self._echo_results[action.echo_id] = action.result
                    waiter.set()
            elif isinstance(action, DeliveryFailed):
                self._delivery_failed(action)
            elif isinstance(action, Trace) and self.trace is not None:
                self.trace(action.event, self.node_id, action.packet)
        if core.timer_moved and self._timer_scope is not None:
            core.timer_moved = False
            self._timer_scope.deadline = core.get_timer()
        if core.generation != self._generation_seen:
            self._generation_seen = core.generation
            self._notify()

    def _transmit(self, link: Link, packet: RoutedPacket) -> None:
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
            self.dropped_unencodable += 1
            log.debug("dropped %s: %s", packet, exc)
            sent = None
        else:
            if not sent:
                self.dropped_queue_full += 1
        if self.trace is not None:
            self.trace("forward" if sent else "drop", self.node_id, packet)

    async def run_timer(self) -> None:
        """Sleep until the core's next deadline, hand it the time, repeat (until cancelled)."""
        while True:
            with trio.CancelScope(deadline=self.core.get_timer()) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self.core.handle_timer(trio.current_time())
            self.pump()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- LinkHandler ----------------------------------------------------------------

    def link_established(self, link: Link) -> None:
        assert link.peer_id is not None
        facts = LinkFacts(link.core.initiator, format_address(link.address),
                          self._purposes.get(link))
        self.core.link_established(link, link.peer_id, facts)
        self.pump()

    def link_rtt(self, link: Link, event: RttMeasured) -> None:
        peer, core = link.peer_id, link.core
        if peer is None or core.metric_us is None:
            return
        self.core.link_rtt(link, peer, cost_us=core.metric_us, noise_us=core.metric_noise_us,
                           recent_high_us=core.metric_recent_high_us,
                           samples=core.rtt.samples, sample=event.sample,
                           now=trio.current_time())
        self.pump()

    def link_message(self, link: Link, message: Message) -> None:
        if link.peer_id is not None:
            self.core.link_message(link, link.peer_id, message, trio.current_time())
            self.pump()

    def link_down(self, link: Link, event: LinkDown) -> None:
        if link.peer_id is not None and link.core.established_at is not None:
            self.core.link_down(link, link.peer_id, event.describe(), trio.current_time())
            self.pump()
            return
        self.links_refused += 1
        # A connection that never said who it is (no HELLO), or that we evicted for a
        # newer one, is load, not news: only handshakes that got somewhere and failed
        # are worth a warning (no log flood under attack).
        quiet = event.code in (CloseCode.NORMAL, CloseCode.OVERLOADED) or (
            not link.core.initiator and link.core.peer_public_key is None)
        log.log(logging.DEBUG if quiet else logging.WARNING,
                "link %s %s failed during handshake: %s", link.direction,
                format_address(link.address), event.describe())
        self._notify()

    # --- link tasks ---------------------------------------------------------------

    def new_link(self, stream: trio.abc.Stream, address: Address, *, initiator: bool,
                 expected_peer: NodeId | None = None,
                 purpose: AttachPurpose | None = None) -> Link:
        """A link of this node over ``stream``; ``purpose``: why we dialled it, if to attach."""
        link = Link.over(stream, address, self, self.identity, initiator=initiator,
                         config=self._config.link, expected_peer=expected_peer,
                         nonce_source=self._nonce_source)
        self.links.add(link)
        if purpose is not None:
            self._purposes[link] = purpose
        return link

    async def run_link(self, link: Link) -> LinkDown:
        """Drive ``link`` until it is down (in the caller's task: its lifetime is the link's)."""
        try:
            return await link.run()
        finally:
            self.links.discard(link)
            self._purposes.pop(link, None)
            self._notify()

    async def accept(self, stream: trio.abc.Stream, address: Address) -> None:
        link = self.new_link(stream, address, initiator=False)
        victim = self._handshake_slots.admit(link)
        if victim is not None:
            log.debug("evicted pending connection from %s for one from %s",
                      format_address(victim.address), format_address(address))
        await self.run_link(link)

