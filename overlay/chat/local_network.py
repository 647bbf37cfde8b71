"""A whole hybrid network in one process on 127.0.0.1: for the demo and the chat bench.

A directory server (its database in a temporary directory), supernodes, and
chat users, each an edge client with its own node key.  Users that do not
listen model clients behind NAT: nobody can dial them, so their conversations
are relayed by supernodes; users that listen pass the server's dial-back and
get direct links.  Everything lives in one nursery, so leaving the ``async
with`` (or Ctrl-C) stops it all: there is no process to leave behind.
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
from overlay.chat.history import History
from overlay.chat.service import Chat
from overlay.directory.client import DirectoryClient
from overlay.directory.server import DirectoryServer
from overlay.directory.store import Store
from overlay.ids import SEED_LEN, Identity, NodeId
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.roles.edge import Credentials, EdgeClient, EdgeConfig
from overlay.roles.supernode import Supernode, SupernodeConfig

LINKS = LinkConfig(hello_interval=0.5, dead_after=3)


@dataclass(slots=True)
class User:
    name: str
    node: Node
    edge: EdgeClient
    chat: Chat
    password: str


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

    async def _spawn_node(self, config: NodeConfig) -> Node:
        """A node running in this network's nursery until the network stops."""
        ready: list[Node] = []
        started = trio.Event()

        async def run() -> None:
            identity = Identity.from_seed(secrets.token_bytes(SEED_LEN))
            async with Node(identity, config) as node:
                ready.append(node)
                started.set()
                await trio.sleep_forever()

        self.nursery.start_soon(run)
        await started.wait()
        return ready[0]

    async def add_supernode(self, name: str) -> Node:
        node = await self._spawn_node(NodeConfig(listen=("127.0.0.1", 0), link=LINKS))
        assert node.listen_address is not None
        role = Supernode(node, node.listen_address, server=self.address, server_key=self.key,
                         config=SupernodeConfig(refresh_interval=2.0))
        node.role_status = role.status
        await self.nursery.start(role.run)
        self.supernodes[name] = node
        return node

    async def add_user(self, name: str, *, listen: bool,
                       only_supernodes: frozenset[NodeId] = frozenset()) -> User:
        """Register ``name``, start its edge client and its chat; returns once attached."""
        password = secrets.token_urlsafe(16)
        config = NodeConfig(listen=("127.0.0.1", 0) if listen else None, link=LINKS, edge=True)
        node = await self._spawn_node(config)
        async with DirectoryClient.connect(self.address, node.identity,
                                           server_key=self.key) as client:
            await client.register(name, password)
        edge = EdgeClient(node, Credentials(name, password=password), server=self.address,
                          server_key=self.key,
                          config=EdgeConfig(only_supernodes=only_supernodes))
        node.role_status = edge.status
        node.name_resolver = edge.locate
        await self.nursery.start(edge.run)
        chat = Chat(edge, History(self.workdir / f"chat-{name}.sqlite3", name))
        await self.nursery.start(chat.run)
        user = User(name, node, edge, chat, password)
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
        network: LocalNetwork | None = None
        try:
            async with trio.open_nursery() as nursery:
                address = await nursery.start(server.serve, ("127.0.0.1", 0))
                network = LocalNetwork(nursery, server, address, Path(workdir))
                yield network
                nursery.cancel_scope.cancel()
        finally:
            for user in network.users.values() if network is not None else ():
                user.chat.history.close()
            store.close()
