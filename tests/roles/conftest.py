"""A small hybrid network on 127.0.0.1: a directory, supernodes and edge clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from overlay.addresses import Address
from overlay.directory.client.connection import DirectoryClient
from overlay.directory.server.listener import DirectoryServer
from overlay.directory.server.service import DirectoryConfig
from overlay.directory.server.store import Store
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.roles.edge import Credentials, EdgeClient, EdgeConfig
from overlay.roles.supernode import Supernode, SupernodeConfig
from overlay.runtime import EdgeRole, Peer, PeerSpec, SupernodeRole, run_peer
from tests.conftest import make_identity

PASSWORD = "correct horse battery"
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

    async def _run_peer(self, name: str, config: NodeConfig,
                        role: SupernodeRole | EdgeRole) -> tuple[Peer, trio.CancelScope]:
        """Run one peer (overlay.runtime builds it) until its scope is cancelled."""
        scope = trio.CancelScope()
        started: list[Peer] = []
        ready = trio.Event()

        async def run() -> None:
            with scope:
                async with run_peer(PeerSpec(make_identity(name), config, role)) as peer:
                    started.append(peer)
                    ready.set()
                    await trio.sleep_forever()

        self.nursery.start_soon(run)
        await ready.wait()
        return started[0], scope

    async def start_supernode(self, name: str, **config: object) -> Node:
        role = SupernodeRole(self.address, self.key,
                             config=SupernodeConfig(refresh_interval=1.0,
                                                    **config))  # type: ignore[arg-type]
        peer, scope = await self._run_peer(name, NodeConfig(link=LINKS), role)
        assert peer.supernode is not None
        self.supernodes[name] = (peer.node, peer.supernode, scope)
        return peer.node

    def kill_supernode(self, name: str) -> None:
        """Stop a supernode at once, without a goodbye (its links just drop)."""
        _node, _role, scope = self.supernodes.pop(name)
        scope.cancel()

    async def start_client(self, name: str, *, listen: bool = False,
                           outgoing_port: int | None = None,
                           **config: object) -> tuple[Node, EdgeClient]:
        role = EdgeRole(Credentials(name, password=PASSWORD), self.address, self.key,
                        EdgeConfig(refresh_interval=2.0, **config))  # type: ignore[arg-type]
        node_config = NodeConfig(link=LINKS, listen=("127.0.0.1", 0) if listen else None,
                                 outgoing_port=outgoing_port)
        peer, _scope = await self._run_peer(name, node_config, role)
        assert peer.edge is not None
        self.clients[name] = (peer.node, peer.edge)
        return peer.node, peer.edge


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
