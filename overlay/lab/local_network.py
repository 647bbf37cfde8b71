"""A whole hybrid network in one process on 127.0.0.1: for the demo and the chat bench.

A directory server (its database in a temporary directory), supernodes, and
chat users, each an edge client with its own node key.  Users that do not
listen model clients behind NAT: nobody can dial them, so their conversations
are relayed by supernodes; users that listen pass the server's dial-back and
get direct links.  A user that does not listen but punches (``punch=True``:
one outgoing port, docs/roles.md, Hole punching) accepts a punch on that
port, so two of them start relayed and then move to a direct link.
Everything lives in one nursery, so leaving the ``async with`` (or Ctrl-C)
stops it all: there is no process to leave behind.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from overlay.addresses import Address
from overlay.chat.service import Chat
from overlay.directory.client.connection import DirectoryClient
from overlay.directory.protocol import password_weakness
from overlay.directory.server.listener import DirectoryServer
from overlay.directory.server.store import Store
from overlay.ids import SEED_LEN, Identity, NodeId
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.roles.edge import Credentials, EdgeClient, EdgeConfig
from overlay.roles.supernode import SupernodeConfig
from overlay.runtime import EdgeRole, Peer, PeerSpec, SupernodeRole, run_peer

LINKS = LinkConfig(hello_interval=0.5, dead_after=3)


@dataclass(slots=True)
class User:
    name: str
    peer: Peer
    password: str

    @property
    def node(self) -> Node:
        return self.peer.node

    @property
    def edge(self) -> EdgeClient:
        assert self.peer.edge is not None
        return self.peer.edge

    @property
    def chat(self) -> Chat:
        assert self.peer.chat is not None
        return self.peer.chat


class LocalNetwork:
    """Handles to everything running; built by :func:`local_network`."""

    def __init__(self, nursery: trio.Nursery, server: DirectoryServer, address: Address,
                 workdir: Path) -> None:
        self.nursery = nursery
        self.server = server
        self.address = address
        self.key = server.identity.public_key
        self.workdir = workdir
        self.supernodes: dict[str, Node] = {}
        self.users: dict[str, User] = {}

    def name_of(self, node: NodeId | str) -> str:
        """"sn2" for a supernode's id (hex or prefix), else the id's short form."""
        text = node if isinstance(node, str) else node.hex()
        for name, supernode in self.supernodes.items():
            if supernode.node_id.hex().startswith(text):
                return name
        return text[:8]

    async def _spawn(self, config: NodeConfig, role: SupernodeRole | EdgeRole) -> Peer:
        """A peer running in this network's nursery until the network stops (not started)."""
        spec = PeerSpec(Identity.from_seed(secrets.token_bytes(SEED_LEN)), config, role)

        async def run(*, task_status: trio.TaskStatus[Peer]) -> None:
            async with run_peer(spec, start=False) as peer:
                task_status.started(peer)
                await trio.sleep_forever()

        peer: Peer = await self.nursery.start(run)
        return peer

    async def add_supernode(self, name: str) -> Node:
        role = SupernodeRole(self.address, self.key, config=SupernodeConfig(refresh_interval=2.0))
        peer = await self._spawn(NodeConfig(listen=("127.0.0.1", 0), link=LINKS), role)
        await peer.start()
        self.supernodes[name] = peer.node
        return peer.node

    async def add_user(self, name: str, *, listen: bool, punch: bool = False,
                       only_supernodes: frozenset[NodeId] = frozenset()) -> User:
        """Register ``name``, start its edge client and its chat; returns once attached.

        ``punch``: dial out from one port and punch holes with other punching users."""
        password = secrets.token_urlsafe(16)
        while password_weakness(name, password) is not None:  # e.g. "bob" inside it, by chance
            password = secrets.token_urlsafe(16)
        role = EdgeRole(Credentials(name, password=password), self.address, self.key,
                        EdgeConfig(only_supernodes=only_supernodes),
                        chat_history=self.workdir / f"chat-{name}.sqlite3")
        config = NodeConfig(listen=("127.0.0.1", 0) if listen else None, link=LINKS,
                            outgoing_port=0 if punch else None)
        peer = await self._spawn(config, role)
        async with DirectoryClient.connect(self.address, peer.node.identity,
                                           server_key=self.key) as client:
            await client.register(name, password)
        await peer.start()
        user = User(name, peer, password)
        self.users[name] = user
        return user

    async def befriend(self, a: str, b: str) -> None:
        """Make ``a`` and ``b`` accepted contacts (a asks, b accepts)."""
        first, second = self.users[a], self.users[b]
        client_a = await first.edge.directory.ready()
        client_b = await second.edge.directory.ready()
        await client_a.contact_request(b)
        await client_b.contact_accept(a)


@asynccontextmanager
async def local_network() -> AsyncIterator[LocalNetwork]:
    with tempfile.TemporaryDirectory(prefix="overlay-demo-") as workdir:
        store = Store(Path(workdir) / "directory.sqlite3")
        identity = Identity.from_seed(secrets.token_bytes(SEED_LEN))
        server = DirectoryServer(identity, store)
        try:
            async with trio.open_nursery() as nursery:
                address = await nursery.start(server.serve, ("127.0.0.1", 0))
                yield LocalNetwork(nursery, server, address, Path(workdir))
                nursery.cancel_scope.cancel()
        finally:
            store.close()  # each user's chat history was closed by its peer
