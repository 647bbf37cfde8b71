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

Dialers reconnect with exponential backoff and jitter (``reconnect_initial``
doubling up to ``reconnect_max``), and stay quiet while the peer they reach is
linked through some other connection.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from overlay.addresses import Address, format_address
from overlay.errors import ConfigError, ControlError
from overlay.ids import Identity, NodeId
from overlay.net.control import serve_control
from overlay.net.link import Link, LinkStatistics
from overlay.net.transport import TcpTransport, Transport
from overlay.proto.link import LinkConfig, LinkCore, LinkDown, LinkState, RttMeasured
from overlay.proto.messages import NONCE_LEN, Close, CloseCode, Message, encode_message

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
    shutdown_grace: float = 0.5


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
    links_accepted: int
    links_refused: int
    packets_received: int


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
        self._neighbours: dict[NodeId, Link] = {}
        self._changed = trio.Event()
        self._started_at = 0.0
        self._links_accepted = 0
        self._links_refused = 0
        self._packets_received = 0
        self._running_cm: Any = None
        self.packet_handler: Callable[[Link, Message], None] | None = None

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
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
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
        for link in list(self._links):
            link.close(CloseCode.NORMAL, "node shutting down")
        with trio.move_on_after(self.config.shutdown_grace, shield=True):
            for link in list(self._links):
                await link.finished.wait()

    # --- public API ---------------------------------------------------------------

    def connect(self, address: Address, *, expected_peer: NodeId | None = None) -> None:
        """Keep a link to ``address``: dial now, and redial with backoff whenever it drops."""
        if self._nursery is None:
            raise RuntimeError("the node is not running")
        self._nursery.start_soon(self._dial_loop, address, expected_peer)

    @property
    def neighbours(self) -> dict[NodeId, Link]:
        """Established links by peer id (a copy)."""
        return dict(self._neighbours)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is re-checked after every link change."""
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
            links_accepted=self._links_accepted,
            links_refused=self._links_refused,
            packets_received=self._packets_received,
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
            "links_accepted": stats.links_accepted,
            "links_refused": stats.links_refused,
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
        pending = sum(1 for link in self._links if link.core.state is LinkState.HANDSHAKE)
        if pending >= self.config.max_pending_handshakes:
            log.warning("refusing connection from %s: %d handshakes already pending",
                        format_address(address), pending)
            with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError):
                reason = f"{pending} handshakes already pending"
                await stream.send_all(encode_message(Close(CloseCode.OVERLOADED, reason)))
            await trio.aclose_forcefully(stream)
            return
        await self._run_link(self._new_link(stream, address, initiator=False))

    async def _dial_loop(self, address: Address, expected_peer: NodeId | None) -> None:
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
                        format_address(address), _describe_os_error(exc))
            else:
                failures = 0
                link = self._new_link(stream, address, initiator=True,
                                      expected_peer=expected_peer)
                await self._run_link(link)
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
        self._notify()

    def link_rtt(self, link: Link, event: RttMeasured) -> None:
        if link.core.rtt.samples == 1 and link.peer_id is not None:
            log.info("neighbour %s up via %s (%s), rtt %.3f ms", link.peer_id,
                     format_address(link.address), link.direction, event.sample * 1000)
        self._notify()

    def link_message(self, link: Link, message: Message) -> None:
        self._packets_received += 1
        if self.packet_handler is not None:
            self.packet_handler(link, message)

    def link_down(self, link: Link, event: LinkDown) -> None:
        peer = link.peer_id
        where = format_address(link.address)
        if peer is not None and self._neighbours.get(peer) is link:
            del self._neighbours[peer]
            log.info("neighbour %s down (%s): %s", peer, where, event.describe())
        elif link.core.established_at is None:
            self._links_refused += 1
            level = logging.DEBUG if event.code == CloseCode.NORMAL else logging.WARNING
            log.log(level, "link %s %s failed during handshake: %s", link.direction, where,
                    event.describe())
        else:
            log.debug("duplicate link %s %s closed: %s", link.direction, where, event.describe())
        self._notify()

    # --- helpers --------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _control(self, op: str, request: dict[str, Any]) -> Any:
        if op == "status":
            return self.status()
        raise ControlError(f"unknown control operation {op!r}")


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


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "connect timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
