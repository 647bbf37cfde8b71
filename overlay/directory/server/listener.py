"""The directory server's trio glue: accept links, queue each connection's requests, reply.

Every client connection is an ordinary authenticated link (the handshake of
:mod:`overlay.proto.link`): the server proves it holds the key clients pin, and
the client proves which node key it holds, so a session can be bound to that
key without a separate challenge.  Per connection, one task answers requests in
order while the link's own tasks keep reading, so a slow password hash delays
only the connection that asked for it.

Per-connection limits: a token bucket on the request rate (429 with
``retry_after`` when empty), a bounded queue of requests in flight (429 when
full), and an idle timeout for connections that never log in.  Responses and
notices go through the link's capped send buffer; a client that lets it fill
(it sends requests and does not read the answers) is disconnected with
SLOW_READER.  Connections still in the handshake hold a slot of
:class:`~overlay.net.link.HandshakeSlots` (per source address and in all), as
on a node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from overlay.addresses import Address, format_address
from overlay.directory.protocol import Status
from overlay.directory.server.limits import TokenBucket, idle_check
from overlay.directory.server.service import Directory, DirectoryConfig, Session
from overlay.directory.server.store import SqlStore
from overlay.errors import LocalProtocolError
from overlay.ids import Identity, NodeId
from overlay.net.link import HandshakeSlots, Link
from overlay.net.transport import TcpTransport, Transport, describe_connect_error
from overlay.proto.link import LinkConfig, LinkDown, RttMeasured
from overlay.proto.messages import (
    CloseCode,
    DirectoryNotice,
    DirectoryRequest,
    DirectoryResponse,
    Message,
)

if TYPE_CHECKING:  # psycopg is imported only by servers that use PostgreSQL
    from overlay.directory.server.cluster import PostgresCluster

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Connection-level limits (seconds, requests)."""

    request_rate: float = 200.0
    request_burst: float = 400.0
    max_queued_requests: int = 64
    idle_timeout: float = 60.0
    """A connection with no session and no request for this long is closed."""
    dialback_timeout: float = 3.0
    max_pending_handshakes: int = 64
    """Connections in the handshake at once; a newcomer evicts the oldest idle one."""
    max_pending_per_address: int = 8
    """Of those, from one source host."""
    link: LinkConfig = field(default_factory=lambda: LinkConfig(
        handshake_timeout=5.0, hello_interval=10.0, dead_after=3))


class ClientConnection:
    """One client's link, its request queue and its session (the service's ``Connection``)."""

    def __init__(self, server: DirectoryServer, address: Address) -> None:
        self.server = server
        self.address = address
        self.node_id = NodeId(bytes(16))
        self.public_key = b""
        self.session_id: bytes | None = None
        self.session: Session | None = None
        self.verified_address: Address | None = None
        self.link: Link | None = None
        self.last_request = trio.current_time()
        config = server.config
        self._bucket = TokenBucket(config.request_rate, config.request_burst)
        self._send, self._receive = trio.open_memory_channel[DirectoryRequest](
            config.max_queued_requests)

    # --- LinkHandler ---------------------------------------------------------------

    def link_established(self, link: Link) -> None:
        assert link.core.peer_id is not None and link.core.peer_public_key is not None
        self.node_id = link.core.peer_id
        self.public_key = link.core.peer_public_key
        self.session_id = link.core.session_id

    def link_rtt(self, link: Link, event: RttMeasured) -> None:
        pass

    def link_message(self, link: Link, message: Message) -> None:
        if not isinstance(message, DirectoryRequest):
            kind = message.header_type()
            link.close(CloseCode.PROTOCOL_ERROR,
                       f"a directory server takes only requests, not type 0x{kind:02x}")
            return
        now = trio.current_time()
        self.last_request = now
        wait = self._bucket.take(now)
        if wait is not None:
            self._reply(message.request_id, Status.TOO_MANY_REQUESTS,
                        f"request rate above {self.server.config.request_rate:g}/s",
                        {"retry_after": round(wait, 3)})
            return
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self._reply(message.request_id, Status.TOO_MANY_REQUESTS,
                        "too many requests in flight", {"retry_after": 0.1})

    def link_down(self, link: Link, event: LinkDown) -> None:
        # Disconnecting a client that does not read is news for the operator; the rest
        # (hang-ups, idle and evicted handshakes) is routine.
        level = logging.INFO if event.code == CloseCode.SLOW_READER else logging.DEBUG
        log.log(level, "client %s at %s gone: %s", self.node_id.short,
                format_address(self.address), event.describe())
        self._send.close()

    # --- the service's Connection ------------------------------------------------------

    def notify(self, event: str, body: dict[str, Any]) -> None:
        if self.link is not None:
            self._send_message(DirectoryNotice(event, body))

    # --- tasks -------------------------------------------------------------------------

    async def answer_requests(self) -> None:
        async for request in self._receive:
            status, reason, body = await self.server.directory.handle(
                self, request.operation, request.arguments, self.server.wall_clock())
            self._reply(request.request_id, status, reason, body)

    async def close_when_idle(self) -> None:
        timeout = self.server.config.idle_timeout
        while True:
            again = idle_check(trio.current_time(), self.last_request, timeout,
                               exempt=self.session is not None)
            if again is None:
                assert self.link is not None
                self.link.close(CloseCode.TIMEOUT, f"idle for {timeout:g} s without a session")
                return
            await trio.sleep_until(again)

    def _reply(self, request_id: int, status: int, reason: str, body: dict[str, Any]) -> None:
        if self.link is None:
            return
        try:
            response = DirectoryResponse(request_id, int(status), reason[:256], body)
            self._send_message(response)
        except (LocalProtocolError, ValueError) as exc:  # e.g. a body over the frame limit
            log.error("cannot send response to %s: %s", self.node_id.short, exc)
            self._send_message(DirectoryResponse(
                request_id, Status.INTERNAL_ERROR, "response too large to send", {}))

    def _send_message(self, message: Message) -> None:
        """Send, or disconnect a client whose unread answers fill the send buffer."""
        assert self.link is not None
        if not self.link.send_nowait(message) and not self.link.core.is_closed:
            self.link.close(CloseCode.SLOW_READER,
                            "the client does not read its answers (send buffer full)")


class DirectoryServer:
    """Serves the directory on one address until cancelled."""

    def __init__(self, identity: Identity, store: SqlStore, *,
                 directory_config: DirectoryConfig | None = None,
                 config: ServerConfig | None = None,
                 transport: Transport | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 cluster: PostgresCluster | None = None) -> None:
        self.identity = identity
        self.wall_clock = wall_clock
        """Unix time for certificates, sessions and login limits (tests pass their own)."""
        self.cluster = cluster
        """The other server processes on the same PostgreSQL database, if any."""
        self.directory = Directory(identity, store, self.dial_back, directory_config,
                                   cluster=cluster)
        self.config = config or ServerConfig()
        self._transport = transport or TcpTransport()
        self.connections: set[ClientConnection] = set()
        self._handshake_slots = HandshakeSlots(per_address=self.config.max_pending_per_address,
                                               total=self.config.max_pending_handshakes)

    def status(self, listen: Address, database: str) -> dict[str, Any]:
        """The ``status`` answer of a running server's control socket: what it is, where,
        and its load (``overlay status --state DIR`` on a server's state directory)."""
        return {"kind": "directory-server", "node_id": self.identity.node_id.hex(),
                "key": self.identity.public_key.hex(), "listen": format_address(listen),
                "database": database, "cluster": self.cluster is not None,
                "connections": len(self.connections), **self.directory.load()}

    async def serve(self, listen: Address, *,
                    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; with a cluster, listen to the other processes first.
        A listening error (OSError: the port is taken) is raised as it is, not in a group,
        so that the command can say it in one line."""
        if self.cluster is None:
            await self._transport.serve(listen, self._serve_connection,
                                        task_status=task_status)
            return
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.cluster.run, self.directory.peers.handle)
                await self._transport.serve(listen, self._serve_connection,
                                            task_status=task_status)
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], OSError):
                raise group.exceptions[0] from None
            raise

    async def _serve_connection(self, stream: trio.abc.Stream, address: Address) -> None:
        conn = ClientConnection(self, address)
        conn.link = link = Link.over(stream, address, conn, self.identity, initiator=False,
                                     config=self.config.link)
        self._handshake_slots.admit(link)
        self.connections.add(conn)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.answer_requests)
                nursery.start_soon(conn.close_when_idle)
                await link.run()
                nursery.cancel_scope.cancel()
        finally:
            self.connections.discard(conn)
            with trio.move_on_after(5) as cleanup:
                cleanup.shield = True
                await self.directory.connection_closed(conn, int(self.wall_clock()))

    async def dial_back(self, address: Address, expected: NodeId) -> str | None:
        """The service's dialer: None if ``expected`` completed a handshake at ``address``."""
        timeout = self.config.dialback_timeout
        with trio.move_on_after(timeout):
            try:
                stream = await self._transport.connect(address)
            except OSError as exc:
                return (f"cannot connect to {format_address(address)}: "
                        f"{describe_connect_error(exc)}")
            probe = _DialBackProbe()
            down = await Link.over(stream, address, probe, self.identity, initiator=True,
                                   config=LinkConfig(handshake_timeout=timeout),
                                   expected_peer=expected, linger=0.5).run()
            if probe.established:
                return None
            return f"handshake with {format_address(address)} failed: {down.describe()}"
        return f"no answer from {format_address(address)} within {timeout:g} s"


class _DialBackProbe:
    """Closes the probing link as soon as the handshake proves who answered."""

    established = False

    def link_established(self, link: Link) -> None:
        self.established = True
        link.close(CloseCode.NORMAL, "reachability check done")

    def link_rtt(self, link: Link, event: RttMeasured) -> None:
        pass

    def link_message(self, link: Link, message: Message) -> None:
        pass

    def link_down(self, link: Link, event: LinkDown) -> None:
        pass
