"""A small hybrid network on 127.0.0.1: a directory, supernodes and edge clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from overlay.addresses import Address
from overlay.directory.client import DirectoryClient
from overlay.directory.server import DirectoryServer
from overlay.directory.service import DirectoryConfig
from overlay.directory.store import Store
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.roles.edge import Credentials, EdgeClient, EdgeConfig
from overlay.roles.supernode import Supernode, SupernodeConfig
from tests.conftest import make_identity

PASSWORD = "correct horse battery"
Role = Supernode | EdgeClient
LINKS = LinkConfig(handshake_timeout=2.0, hello_interval=0.2, dead_after=3)


class Network:
    """Owns every node and role of one test; roles start and stop on demand."""

    def __init__(self, nursery: trio.Nursery, server: DirectoryServer,
                 address: Address) -> None:
        self.nursery = nursery
        self.server = server
        self.address = address
        self.key = server.identity.public_key
        self.supernodes: dict[str, tuple[Node, Supernode, trio.CancelScope]] = {}
        self.clients: dict[str, tuple[Node, EdgeClient]] = {}

    async def register(self, *names: str, contacts: bool = True) -> None:
        for name in names:
            async with DirectoryClient.connect(self.address, make_identity(name),
                                               server_key=self.key) as client:
                await client.register(name, PASSWORD)
        if contacts:
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    async with DirectoryClient.connect(self.address, make_identity(a),
                                                       server_key=self.key) as ca, \
                            DirectoryClient.connect(self.address, make_identity(b),
                                                    server_key=self.key) as cb:
                        await ca.login(a, PASSWORD)
                        await cb.login(b, PASSWORD)
                        await ca.contact_request(b)
                        await cb.contact_accept(a)

    async def _run_node(self, name: str, config: NodeConfig,
                        make_role: Callable[[Node], Role]) -> tuple[Node, Role, trio.CancelScope]:
        """A node and its role running in the network's nursery until the scope is cancelled."""
        scope = trio.CancelScope()
        started: list[tuple[Node, Role]] = []
        ready = trio.Event()

        async def run() -> None:
            with scope:
                async with Node(make_identity(name), config) as node:
                    role = make_role(node)
                    async with trio.open_nursery() as inner:
                        await inner.start(role.run)
                        started.append((node, role))
                        ready.set()
                        await trio.sleep_forever()

        self.nursery.start_soon(run)
        await ready.wait()
        node, role = started[0]
        return node, role, scope

    async def start_supernode(self, name: str, **config: object) -> Node:
        def make(node: Node) -> Supernode:
            assert node.listen_address is not None
            return Supernode(node, node.listen_address, server=self.address,
                             server_key=self.key,
                             config=SupernodeConfig(refresh_interval=1.0,
                                                    **config))  # type: ignore[arg-type]

        node, role, scope = await self._run_node(name, NodeConfig(link=LINKS), make)
        assert isinstance(role, Supernode)
        self.supernodes[name] = (node, role, scope)
        return node

    def kill_supernode(self, name: str) -> None:
        """Stop a supernode at once, without a goodbye (its links just drop)."""
        _node, _role, scope = self.supernodes.pop(name)
        scope.cancel()

    async def start_client(self, name: str, *, listen: bool = False,
                           **config: object) -> tuple[Node, EdgeClient]:
        def make(node: Node) -> EdgeClient:
            role = EdgeClient(node, Credentials(name, password=PASSWORD),
                              server=self.address, server_key=self.key,
                              config=EdgeConfig(refresh_interval=2.0,
                                                **config))  # type: ignore[arg-type]
            node.name_resolver = role.locate
            return role

        node_config = NodeConfig(link=LINKS, edge=True,
                                 listen=("127.0.0.1", 0) if listen else None)
        node, role, _scope = await self._run_node(name, node_config, make)
        assert isinstance(role, EdgeClient)
        self.clients[name] = (node, role)
        return node, role


@asynccontextmanager
async def hybrid_network(tmp_path: Path,
                         config: DirectoryConfig | None = None) -> AsyncIterator[Network]:
    store = Store(tmp_path / "directory.sqlite3")
    server = DirectoryServer(make_identity("server"), store, directory_config=config)
    try:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(server.serve, ("127.0.0.1", 0))
            yield Network(nursery, server, address)
            nursery.cancel_scope.cancel()
    finally:
        store.close()


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    async with hybrid_network(tmp_path) as net:
        yield net
