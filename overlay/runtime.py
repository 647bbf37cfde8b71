"""One peer: a node, its role (plain, supernode or edge client) and optionally chat.

Every program that runs a peer builds it here (``overlay supernode``,
``overlay client`` and ``overlay chat``, the demo's local network, the hybrid
simulator, the tests), so that a node and its role are wired the same way
everywhere:

* the node is an edge node exactly when the role is an edge client;
* the role is bound to its node through :meth:`Node.attach_role`: its part
  of ``overlay status``, and for an edge client how a contact's name becomes
  a node id for ``overlay send``;
* the chat engine subscribes to the edge client before the client logs in,
  so that no presence notice is missed, and its history is closed after
  everything that could write to it has stopped.

``run_peer(spec)`` is an async context manager that owns one nursery: the
node, then the role's and chat's tasks in it.  ``start=False`` leaves the
role and chat to :meth:`Peer.start` (``overlay chat --to`` bounds the start
with its timeout).
"""

from __future__ import annotations

import logging
import random
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from overlay.addresses import Address, format_address
from overlay.chat.history import History
from overlay.chat.service import Chat
from overlay.directory.client.servers import ServerList
from overlay.errors import ConfigError
from overlay.ids import Identity
from overlay.net.node import Node, NodeConfig
from overlay.net.transport import Transport
from overlay.roles.edge import Credentials, EdgeClient, EdgeConfig
from overlay.roles.supernode import Supernode, SupernodeConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SupernodeRole:
    server: Address | ServerList
    server_key: bytes | None
    advertise: Address | None = None
    """The address others dial (default: the node's listen address)."""
    config: SupernodeConfig = field(default_factory=SupernodeConfig)


@dataclass(frozen=True, slots=True)
class EdgeRole:
    credentials: Credentials
    server: Address | ServerList
    server_key: bytes | None
    config: EdgeConfig = field(default_factory=EdgeConfig)
    on_promote: Callable[[], Awaitable[None]] | None = None
    chat_history: Path | None = None
    """Run chat too, with its history in this SQLite file."""


@dataclass(frozen=True)
class PeerSpec:
    """Everything a peer is made of; ``role=None`` is a plain node (pure P2P)."""

    identity: Identity
    node: NodeConfig = field(default_factory=NodeConfig)
    role: SupernodeRole | EdgeRole | None = None
    control_path: Path | None = None
    transport: Transport | None = None
    """Shared by the node and its role (the simulator's emulated network)."""
    rng: random.Random | None = None
    """Shared by the node and its role, so that a simulated run replays from its seed."""
    nonce_source: Callable[[int], bytes] = secrets.token_bytes
    """Link nonces (the simulator seeds them, for replay)."""


@dataclass(eq=False)
class Peer:
    """A running peer: its node, its role, its chat; see :func:`run_peer`."""

    node: Node
    supernode: Supernode | None
    edge: EdgeClient | None
    chat: Chat | None
    _nursery: trio.Nursery
    _started: bool = False

    async def start(self) -> None:
        """Start the role (returns once an edge client is attached), then chat; idempotent."""
        if self._started:
            return
        self._started = True
        role = self.edge or self.supernode
        if role is not None:
            await self._nursery.start(role.run)
        if self.chat is not None:
            await self._nursery.start(self.chat.run)


def advertised_address(listen: Address, server: Address) -> Address:
    """The address others should dial for a node listening on ``listen``.

    A wildcard (``0.0.0.0``, ``::``) is no address to give anyone: then the local
    address this host uses towards the directory server stands in, with the
    listening port (what the kernel would choose; a UDP ``connect`` sends
    nothing).  ``--advertise`` overrides this, e.g. behind port forwarding.
    """
    host, port = listen
    if host not in ("0.0.0.0", "::", ""):
        return listen
    family = socket.AF_INET6 if ":" in host or ":" in server[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(server)
            chosen: str = probe.getsockname()[0]
    except OSError as exc:
        raise ConfigError(f"listening on {format_address(listen)}, and no local address "
                          f"reaches the directory server {format_address(server)} "
                          f"({exc.strerror or exc}): give --advertise HOST:PORT") from None
    log.info("listening on %s: advertising %s, the address that reaches the directory "
             "server (--advertise to choose another)", format_address(listen),
             format_address((chosen, port)))
    return (chosen, port)


@asynccontextmanager
async def run_peer(spec: PeerSpec, *, start: bool = True) -> AsyncIterator[Peer]:
    """Run the peer ``spec`` describes until the block exits (see the module docstring)."""
    role = spec.role
    config = replace(spec.node, edge=isinstance(role, EdgeRole))
    history: History | None = None
    try:
        async with Node(spec.identity, config, transport=spec.transport,
                        control_path=spec.control_path, rng=spec.rng,
                        nonce_source=spec.nonce_source) as node, \
                trio.open_nursery() as nursery:
            supernode = edge = chat = None
            if isinstance(role, SupernodeRole):
                advertise = role.advertise or node.listen_address
                if advertise is None:
                    raise ConfigError("a supernode must listen (or be told what to advertise)")
                if role.advertise is None:
                    advertise = advertised_address(advertise, ServerList.of(role.server).primary)
                supernode = Supernode(node, advertise, server=role.server,
                                      server_key=role.server_key, config=role.config,
                                      transport=spec.transport, rng=spec.rng)
                node.attach_role(supernode.status)
            elif isinstance(role, EdgeRole):
                edge = EdgeClient(node, role.credentials, server=role.server,
                                  server_key=role.server_key, config=role.config,
                                  transport=spec.transport, rng=spec.rng,
                                  on_promote=role.on_promote)
                node.attach_role(edge.status, locate=edge.locate)
                if role.chat_history is not None:
                    history = History(role.chat_history, role.credentials.username)
                    chat = Chat(edge, history)
            peer = Peer(node, supernode, edge, chat, nursery)
            if start:
                await peer.start()
            yield peer
            nursery.cancel_scope.cancel()
    finally:
        if history is not None:
            history.close()
