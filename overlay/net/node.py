"""A running overlay node: the trio driver of a :class:`~overlay.proto.node.NodeCore`.

The node owns one nursery.  In it run the listener (one task per accepted
connection), one dialer per address it keeps a link to
(:mod:`overlay.net.dialer`), the control socket, the reliable-channel manager
and the core's timer.  Each link is driven by :class:`~overlay.net.link.Link`
inside the task that accepted or dialled it, so a link's lifetime is exactly
that task's.

Every decision (which duplicate link survives, who routes, where a packet
goes, how an echo ends, what a promotion closes) is the core's;
:class:`~overlay.net.neighbours.NodeLinks` feeds it the links' events and
carries out its actions.  This class is the node's public face: lifetime,
links to keep, roles' hooks, packets, channels, status.
"""

from __future__ import annotations

import logging
import random
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from overlay.addresses import Address, format_address
from overlay.errors import ConfigError
from overlay.ids import Identity, NodeId
from overlay.net.channels import Channel, ChannelManager
from overlay.net.control import ControlConnection, serve_control
from overlay.net.dialer import Dialer, dial_forever
from overlay.net.link import Link
from overlay.net.messaging import handle_control
from overlay.net.neighbours import NodeLinks, PacketTrace
from overlay.net.node_status import NodeStatistics, RoleStatus, node_status_json
from overlay.net.transport import TcpTransport, Transport, reserve_port
from overlay.proto.echo import EchoResult
from overlay.proto.forwarding import Forwarder
from overlay.proto.link import LinkState
from overlay.proto.messages import AttachPurpose, CloseCode, MessageType, RoutedPacket
from overlay.proto.node import NodeConfig, NodeCore, keep_new_link
from overlay.proto.route_table import DestinationIndex
from overlay.proto.routing import Router

__all__ = ["EchoResult", "Node", "NodeConfig", "NodeStatistics", "keep_new_link"]

log = logging.getLogger(__name__)
packet_log = logging.getLogger("overlay.packets")

PacketHandler = Callable[[RoutedPacket], None]


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
        route_index: DestinationIndex | None = None,
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.config = config or NodeConfig()
        """The configuration the node was started with (promotion leaves it as given)."""
        self.listen_address: Address | None = None
        self._transport: Transport = transport or TcpTransport(
            None if self.config.outgoing_port is None else self.config.outgoing_port or None)
        self._port_reservation: socket.socket | None = None
        self._control_path = control_path
        self._rng = rng or random.Random()
        self.core: NodeCore[Link] = NodeCore(self.node_id, self.config, rng=self._rng,
                                                route_index=route_index)
        self.links = NodeLinks(identity, self.core, self.config, nonce_source=nonce_source,
                               deliver=self._deliver,
                               delivery_failed=lambda failure: self.channels.delivery_failed(
                                   failure.destination, failure.original_type, failure.kind))
        self._nursery: trio.Nursery | None = None
        self._dialers: list[Dialer] = []
        self._exit_stack: AsyncExitStack | None = None
        self._started_at = 0.0
        self._handlers: dict[int, PacketHandler] = {}
        self.channels = ChannelManager(self.node_id, self.send_packet, self.config.channel)
        self._handlers[MessageType.DATA] = self.channels.handle_packet
        self._role_status: Callable[[], RoleStatus] | None = None
        self._locate: Callable[[str], Awaitable[NodeId]] | None = None

    def __repr__(self) -> str:
        return f"<Node {self.node_id.short}>"

    # --- lifetime ---------------------------------------------------------------

    async def __aenter__(self) -> Node:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._running())
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        assert self._exit_stack is not None
        return await self._exit_stack.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        self._started_at = trio.current_time()
        self.core.start(self._started_at)
        transport = self._transport
        if (self.config.outgoing_port == 0 and isinstance(transport, TcpTransport)
                and transport.local_port is None):
            self._port_reservation = reserve_port()
            transport.local_port = int(self._port_reservation.getsockname()[1])
            log.debug("outgoing connections from port %d", transport.local_port)
        if self.trace is None and packet_log.isEnabledFor(logging.DEBUG):  # overlay -vv
            self.trace = _log_packet
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.links.run_timer)
            await nursery.start(self.channels.run)
            if self.config.listen is not None:
                try:
                    self.listen_address = await nursery.start(
                        self._transport.serve, self.config.listen, self.links.accept)
                except OSError as exc:
                    raise ConfigError(f"cannot listen on {format_address(self.config.listen)}: "
                                      f"{exc.strerror or exc}") from None
                log.info("node %s listening on %s", self.node_id,
                         format_address(self.listen_address))
                self.core.forwarder.address = format_address(self.listen_address)
            if self._control_path is not None:
                await nursery.start(serve_control, self._control_path, self._control)
            for address in self.config.connect:
                self.connect(address)
            try:
                yield
            finally:
                await self.links.close_all()
                nursery.cancel_scope.cancel()
                if self._port_reservation is not None:
                    self._port_reservation.close()

    # --- links --------------------------------------------------------------------

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
        self._nursery.start_soon(self._dial, address, expected_peer, purpose, scope)
        return scope

    async def _dial(self, address: Address, expected_peer: NodeId | None,
                    purpose: AttachPurpose | None, scope: trio.CancelScope) -> None:
        dialer = Dialer(address, expected_peer)
        self._dialers.append(dialer)
        try:
            with scope:
                await dial_forever(self.links, transport=self._transport, config=self.config,
                                   rng=self._rng, address=address, expected_peer=expected_peer,
                                   purpose=purpose, status=dialer)
        finally:
            self._dialers.remove(dialer)

    @property
    def transport(self) -> Transport:
        """How this node dials (outgoing connections share one port if configured)."""
        return self._transport

    @property
    def outgoing_port(self) -> int | None:
        """The local port every outgoing connection uses, if there is one."""
        transport = self._transport
        return transport.local_port if isinstance(transport, TcpTransport) else None

    def disconnect(self, peer: NodeId, reason: str = "no longer wanted") -> None:
        """Close the link to ``peer`` if there is one (its dialer, if any, must be cancelled)."""
        link = self.core.neighbours.get(peer)
        if link is not None:
            link.close(CloseCode.NORMAL, reason)

    @property
    def neighbours(self) -> dict[NodeId, Link]:
        """Established links by peer id (a copy)."""
        return dict(self.core.neighbours)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; re-checked after every link or route change."""
        await self.links.wait_until(predicate)

    # --- roles --------------------------------------------------------------------

    def attach_role(self, status: Callable[[], RoleStatus], *,
                    locate: Callable[[str], Awaitable[NodeId]] | None = None) -> None:
        """Bind the role running on this node (:mod:`overlay.runtime` does it).

        ``status`` is the role's part of ``overlay status``; ``locate`` turns a
        contact's username into a node id for ``overlay send`` (edge clients).
        """
        self._role_status = status
        self._locate = locate

    @property
    def is_edge(self) -> bool:
        """An edge client (not routing, not relaying) until promoted."""
        return self.core.edge

    @property
    def home(self) -> NodeId | None:
        """An edge client's home supernode: where packets without a direct link go."""
        return self.core.home

    def set_home(self, supernode: NodeId | None) -> None:
        self.core.set_home(supernode)
        self.links.pump()

    def set_location(self, node: NodeId, home: NodeId) -> None:
        """``node`` is an edge client attached to ``home`` (from the directory's presence)."""
        self.core.set_location(node, home)

    def promote(self) -> None:
        """An edge client becomes a routing node (a supernode), keeping its channels.

        Its attachments are closed (their far ends treat them as edge links); the
        caller then joins the mesh like any supernode (:mod:`overlay.roles.supernode`).
        """
        self.core.promote()
        self.links.pump()

    @property
    def attached_clients(self) -> list[NodeId]:
        return self.core.attached_clients

    @property
    def router(self) -> Router:
        return self.core.router

    @property
    def forwarder(self) -> Forwarder:
        return self.core.forwarder

    # --- packets and channels -------------------------------------------------------

    @property
    def trace(self) -> PacketTrace | None:
        """Called as ``trace(event, node_id, packet)`` for every packet this node
        originates, forwards, delivers or drops (the simulator checks paths with it)."""
        return self.links.trace

    @trace.setter
    def trace(self, trace: PacketTrace | None) -> None:
        self.links.trace = trace
        self.core.tracing = trace is not None

    def open_channel(self, peer: NodeId, *, fail_fast: bool = False) -> Channel:
        """A reliable, ordered channel to ``peer``: ``async with node.open_channel(p) as ch``.

        ``fail_fast``: give up with PeerUnreachable at the first error report while
        the peer has not answered (see :mod:`overlay.net.channels`)."""
        return self.channels.open(peer, fail_fast=fail_fast)

    async def accept_channel(self) -> Channel:
        """The next reliable channel another node opened to this one."""
        return await self.channels.accept()

    def register_handler(self, packet_type: int, handler: PacketHandler) -> None:
        """Deliver routed packets of ``packet_type`` addressed to this node to ``handler``."""
        self._handlers[packet_type] = handler

    def send_packet(self, packet_type: int, dst: NodeId, body: Any,
                    ttl: int | None = None) -> RoutedPacket:
        """Originate a routed packet (best effort: it may be dropped on the way)."""
        return self.links.send_packet(packet_type, dst, body, ttl)

    async def echo(self, dst: NodeId, *, ttl: int | None = None,
                   patience: float = 2.0) -> EchoResult:
        """Send one ECHO_REQUEST; the reply, an error report, or a timeout after ``patience``."""
        return await self.links.echo(dst, ttl=ttl, patience=patience)

    def _deliver(self, packet: RoutedPacket) -> None:
        if (handler := self._handlers.get(packet.type)) is not None:
            handler(packet)
        else:
            log.debug("no handler for packet type 0x%02x from %s", packet.type, packet.src)

    # --- status and control -------------------------------------------------------

    def statistics(self) -> NodeStatistics:
        links = self.links
        return NodeStatistics(
            node_id=self.node_id,
            listen=format_address(self.listen_address) if self.listen_address else None,
            uptime=trio.current_time() - self._started_at,
            neighbours=tuple(link.statistics() for link in self.core.neighbours.values()),
            dialers=tuple(d.statistics(trio.current_time()) for d in self._dialers),
            pending=tuple(link.statistics() for link in links.links
                          if link.core.state is LinkState.HANDSHAKE),
            core=self.core.statistics(),
            links_refused=links.links_refused,
            dropped_queue_full=links.dropped_queue_full,
            dropped_unencodable=links.dropped_unencodable,
        )

    def status(self) -> dict[str, Any]:
        """The JSON-able answer to ``overlay status``."""
        role = self._role_status().to_json() if self._role_status is not None else None
        return node_status_json(self.statistics(), role)

    async def _control(self, op: str, request: dict[str, Any],
                       connection: ControlConnection) -> Any:
        return await handle_control(self, op, request, connection)

    @property
    def locate(self) -> Callable[[str], Awaitable[NodeId]] | None:
        """The role's contact-name lookup, if it has one (see :meth:`attach_role`)."""
        return self._locate

    def resolve_node_id(self, text: str) -> NodeId:
        """A full hex id, or a unique prefix of a known destination or neighbour."""
        return self.core.resolve_node_id(text)


def _log_packet(event: str, _node: NodeId, packet: RoutedPacket) -> None:
    kind = (MessageType(packet.type).name if packet.type in MessageType._value2member_map_
            else f"0x{packet.type:02x}")
    packet_log.debug("%-9s %s %s -> %s ttl %d id %d", event, kind, packet.src.short,
                     packet.dst.short, packet.ttl, packet.packet_id)
