"""An async client of the directory server, for the CLI and for the roles and chat layers.

    async with DirectoryClient.connect(address, identity, server_key=pinned) as client:
        login = await client.login("alice", password)
        found = await client.lookup("bob")      # certificate verified against the pin

The connection is an authenticated link: the handshake fails unless the server
proves the pinned key (``server_key``; None trusts the first key seen and
``client.server_public_key`` tells which it was).  Requests may be issued from
several tasks at once; each waits for its own response.  A 4xx/5xx answer
raises :class:`~overlay.errors.DirectoryError` carrying the status and the
server's reason; a lost connection raises :class:`~overlay.errors.DirectoryUnavailable`.
Unasked notices (a contact's presence, a contact request) arrive on
:meth:`DirectoryClient.notices`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from overlay.addresses import Address, format_address, parse_address
from overlay.directory.certificates import Certificate, verify_certificate
from overlay.directory.protocol import seal_password
from overlay.errors import DirectoryError, DirectoryUnavailable
from overlay.ids import Identity, NodeId
from overlay.net.link import Link
from overlay.net.transport import TcpTransport, Transport, describe_connect_error
from overlay.proto.link import LinkConfig, LinkDown, RttMeasured
from overlay.proto.messages import (
    U32_MAX,
    CloseCode,
    DirectoryNotice,
    DirectoryRequest,
    DirectoryResponse,
    Message,
)

log = logging.getLogger(__name__)

CLIENT_LINK = LinkConfig(handshake_timeout=5.0, hello_interval=5.0, dead_after=4)
MAX_NOTICES = 1_000


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notice:
    event: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LoginResult:
    username: str
    token: bytes
    expires_at: int
    certificate: Certificate
    observed: Address | None = None
    """The source address:port the server saw for this connection (a NAT's public side);
    None from a server that does not report it."""


@dataclass(frozen=True, slots=True)
class Presence:
    status: str
    """'online', 'away' or 'offline'."""
    home_node: NodeId | None
    home_address: Address | None
    direct_address: Address | None
    last_seen: int | None

    @classmethod
    def from_wire(cls, body: Any) -> Presence:
        if not isinstance(body, dict):
            raise DirectoryError(500, "server sent a malformed presence")
        home = body.get("home_node")
        return cls(
            status=str(body.get("status", "offline")),
            home_node=NodeId(home) if isinstance(home, bytes) and len(home) == 16 else None,
            home_address=_address_or_none(body.get("home_address")),
            direct_address=_address_or_none(body.get("direct_address")),
            last_seen=body.get("last_seen") if isinstance(body.get("last_seen"), int) else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "home_node": None if self.home_node is None else self.home_node.hex(),
            "home_address": None if self.home_address is None
            else format_address(self.home_address),
            "direct_address": None if self.direct_address is None
            else format_address(self.direct_address),
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True, slots=True)
class LookupResult:
    certificate: Certificate
    presence: Presence


@dataclass(frozen=True, slots=True)
class Contact:
    username: str
    state: str
    """'accepted', 'outgoing' (we asked) or 'incoming' (they asked)."""
    presence: Presence | None


@dataclass(frozen=True, slots=True)
class DialBack:
    reachable: bool
    address: Address
    reason: str


def _address_or_none(value: object) -> Address | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_address(value)
    except ValueError:
        return None


class DirectoryClient:
    """One authenticated connection to the directory server."""

    def __init__(self, link: Link, address: Address) -> None:
        self._link = link
        self.address = address
        self._next_id = secrets.randbelow(U32_MAX)
        self._waiting: dict[int, trio.MemorySendChannel[DirectoryResponse]] = {}
        self._notice_send, self._notice_receive = trio.open_memory_channel[Notice](MAX_NOTICES)
        self._established = trio.Event()
        self._down: LinkDown | None = None
        self._down_before_use = False

    @classmethod
    @asynccontextmanager
    async def connect(cls, address: Address, identity: Identity, *,
                      server_key: bytes | None, connect_timeout: float = 5.0,
                      transport: Transport | None = None) -> AsyncIterator[DirectoryClient]:
        """Open and authenticate a connection; DirectoryUnavailable if that fails."""
        where = format_address(address)
        transport = transport or TcpTransport()
        try:
            with trio.fail_after(connect_timeout):
                stream = await transport.connect(address)
        except (OSError, trio.TooSlowError) as exc:
            why = describe_connect_error(exc)
            raise DirectoryUnavailable(
                f"cannot reach the directory server at {where}: {why}") from None
        expected = None if server_key is None else NodeId.from_public_key(server_key)
        handler = _ClientHandler()
        client = cls(Link.over(stream, address, handler, identity, initiator=True,
                               config=CLIENT_LINK, expected_peer=expected), address)
        handler.client = client
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client._run_link)
                await client._established.wait()
                if client._down is None:
                    try:
                        yield client
                    finally:
                        client.close()
        except BaseExceptionGroup as group:
            # The link task never raises: a lone exception is the caller's own, so
            # give it back as it was raised rather than wrapped in a group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        if client._down is not None and client._down_before_use:
            down = client._down
            if down.code == CloseCode.WRONG_PEER:
                raise DirectoryUnavailable(
                    f"the server at {where} did not prove the pinned server key")
            raise DirectoryUnavailable(
                f"cannot log in to the directory server at {where}: {down.describe()}")

    async def _run_link(self) -> None:
        self._down = await self._link.run()
        self._down_before_use = not self._established.is_set()
        self._established.set()
        for channel in self._waiting.values():
            channel.close()
        self._notice_send.close()

    def close(self) -> None:
        self._link.close(CloseCode.NORMAL, "client done")

    @property
    def server_public_key(self) -> bytes:
        key = self._link.core.peer_public_key
        assert key is not None
        return key

    @property
    def node_id(self) -> NodeId:
        return self._link.core.identity.node_id

    @property
    def local_address(self) -> Address | None:
        """This end of the connection (what the server reports as ``observed``, before NAT)."""
        return self._link.local_address

    def notices(self) -> trio.MemoryReceiveChannel[Notice]:
        """Unasked messages from the server, in arrival order (closed when the link is)."""
        return self._notice_receive

    # --- requests ---------------------------------------------------------------------

    async def request(self, operation: str, **arguments: Any) -> Response:
        """Send one request and wait for its response; raises DirectoryError for 4xx/5xx."""
        self._next_id = (self._next_id + 1) & U32_MAX
        request_id = self._next_id
        send, receive = trio.open_memory_channel[DirectoryResponse](1)
        self._waiting[request_id] = send
        try:
            args = {name: value for name, value in arguments.items() if value is not None}
            if not self._link.send_nowait(DirectoryRequest(request_id, operation, args)):
                raise DirectoryUnavailable("the connection to the directory server is closed")
            try:
                response = await receive.receive()
            except trio.EndOfChannel:
                reason = self._down.describe() if self._down else "closed"
                raise DirectoryUnavailable(
                    f"lost the connection to the directory server ({reason})") from None
        finally:
            del self._waiting[request_id]
        if response.status >= 400:
            retry = response.body.get("retry_after")
            raise DirectoryError(response.status, response.reason,
                                 retry_after=float(retry) if isinstance(retry, int | float)
                                 else None)
        return Response(response.status, response.reason, response.body)

    def _verify(self, raw: object) -> Certificate:
        if not isinstance(raw, bytes):
            raise DirectoryError(500, "server sent no certificate")
        return verify_certificate(raw, self.server_public_key, now=time.time())

    def _sealed(self, password: str) -> bytes:
        session_id = self._link.core.session_id
        assert session_id is not None  # connect() returns only established links
        return seal_password(self.server_public_key, session_id, password)

    async def register(self, username: str, password: str) -> Response:
        return await self.request("register", username=username,
                                  sealed_password=self._sealed(password))

    async def login(self, username: str, password: str) -> LoginResult:
        body = (await self.request("login", username=username,
                                   sealed_password=self._sealed(password))).body
        return LoginResult(username, body["token"], body["expires_at"],
                           self._verify(body.get("certificate")),
                           _address_or_none(body.get("observed")))

    async def resume(self, token: bytes) -> LoginResult:
        body = (await self.request("resume", token=token)).body
        return LoginResult(body["username"], token, body["expires_at"],
                           self._verify(body.get("certificate")),
                           _address_or_none(body.get("observed")))

    async def logout(self) -> None:
        await self.request("logout")

    async def change_key(self, username: str, password: str) -> Response:
        return await self.request("change_key", username=username,
                                  sealed_password=self._sealed(password))

    async def contact_request(self, username: str) -> Response:
        return await self.request("contact_request", username=username)

    async def contact_accept(self, username: str) -> Response:
        return await self.request("contact_accept", username=username)

    async def contact_decline(self, username: str) -> Response:
        return await self.request("contact_decline", username=username)

    async def contact_remove(self, username: str) -> Response:
        return await self.request("contact_remove", username=username)

    async def contacts(self) -> list[Contact]:
        body = (await self.request("contacts")).body
        return [Contact(c["username"], c["state"],
                        None if c.get("presence") is None else Presence.from_wire(c["presence"]))
                for c in body.get("contacts", [])]

    async def set_presence(self, status: str, *, home_node: NodeId | None = None,
                           home_address: Address | None = None,
                           direct_address: Address | None = None) -> None:
        await self.request(
            "presence", status=status,
            home_node=None if home_node is None else home_node.raw,
            home_address=None if home_address is None else format_address(home_address),
            direct_address=None if direct_address is None else format_address(direct_address),
        )

    async def lookup(self, username: str) -> LookupResult:
        body = (await self.request("lookup", username=username)).body
        certificate = self._verify(body.get("certificate"))
        if certificate.username != username:
            raise DirectoryError(500, f"server answered a lookup of {username!r} with "
                                      f"{certificate.username!r}'s certificate")
        return LookupResult(certificate, Presence.from_wire(body.get("presence")))

    async def supernodes(self) -> list[tuple[NodeId, Address]]:
        body = (await self.request("supernodes")).body
        listed = []
        for entry in body.get("supernodes", []):
            address = _address_or_none(entry.get("address"))
            node = entry.get("node_id")
            if address is not None and isinstance(node, bytes) and len(node) == 16:
                listed.append((NodeId(node), address))
        return listed

    async def dialback(self, address: Address) -> DialBack:
        body = (await self.request("dialback", address=format_address(address))).body
        dialled = _address_or_none(body.get("address")) or address
        return DialBack(bool(body.get("reachable")), dialled, str(body.get("reason", "")))

    async def announce_supernode(self, address: Address) -> Response:
        return await self.request("announce_supernode", address=format_address(address))

    # --- from the link ---------------------------------------------------------------

    def _message(self, message: Message) -> None:
        if isinstance(message, DirectoryResponse):
            channel = self._waiting.get(message.request_id)
            if channel is not None:
                channel.send_nowait(message)
        elif isinstance(message, DirectoryNotice):
            try:
                self._notice_send.send_nowait(Notice(message.event, message.body))
            except trio.WouldBlock:
                log.warning("dropping directory notice %r: nobody is reading notices",
                            message.event)
        else:
            self._link.close(CloseCode.PROTOCOL_ERROR,
                             f"unexpected message type 0x{message.header_type():02x}")


class _ClientHandler:
    client: DirectoryClient | None = None

    def link_established(self, link: Link) -> None:
        assert self.client is not None
        self.client._established.set()

    def link_rtt(self, link: Link, event: RttMeasured) -> None:
        pass

    def link_message(self, link: Link, message: Message) -> None:
        assert self.client is not None
        self.client._message(message)

    def link_down(self, link: Link, event: LinkDown) -> None:
        pass

