"""Dial-back and the supernode list, against real nodes listening on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from overlay.directory.server.listener import DirectoryServer, ServerConfig
from overlay.directory.server.store import Store
from overlay.errors import DirectoryError
from overlay.net.node import Node, NodeConfig
from tests.conftest import make_identity
from tests.directory.conftest import RunningServer


async def test_dialback_reports_a_listening_node_reachable(directory: RunningServer) -> None:
    async with Node(make_identity("alice"), NodeConfig()) as node, \
            directory.client("alice") as alice:
        assert node.listen_address is not None
        result = await alice.dialback(node.listen_address)
        assert result.reachable, result.reason
        assert result.address == node.listen_address


async def test_dialback_wildcard_host_means_the_address_seen(directory: RunningServer) -> None:
    async with Node(make_identity("alice"), NodeConfig()) as node, \
            directory.client("alice") as alice:
        assert node.listen_address is not None
        result = await alice.dialback(("0.0.0.0", node.listen_address[1]))
        assert result.reachable, result.reason
        assert result.address == ("127.0.0.1", node.listen_address[1])


async def test_dialback_of_a_node_that_does_not_listen(directory: RunningServer) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    async with directory.client("natted") as natted:
        result = await natted.dialback(("127.0.0.1", port))
        assert not result.reachable
        assert "cannot connect" in result.reason


async def test_dialback_refuses_another_nodes_address(directory: RunningServer) -> None:
    """Someone else's node answers there: the handshake proves it is not the caller."""
    async with Node(make_identity("bob"), NodeConfig()) as bob_node, \
            directory.client("mallory") as mallory:
        assert bob_node.listen_address is not None
        result = await mallory.dialback(bob_node.listen_address)
        assert not result.reachable
        assert "wrong peer" in result.reason


async def test_dialback_only_dials_the_callers_own_host(directory: RunningServer) -> None:
    async with directory.client("alice") as alice:
        result = await alice.dialback(("192.0.2.1", 9000))
        assert not result.reachable
        assert "behind a NAT" in result.reason


async def test_supernodes_are_listed_while_connected(directory: RunningServer) -> None:
    async with Node(make_identity("super"), NodeConfig()) as node:
        assert node.listen_address is not None
        async with directory.client("super") as supernode, directory.client("eve") as eve:
            await supernode.announce_supernode(node.listen_address)
            listed = await eve.supernodes()
            assert listed == [(node.node_id, node.listen_address)]
        async with directory.client("eve") as eve:
            for _ in range(500):  # the server notices the hang-up within moments
                if not await eve.supernodes():
                    break
                await trio.sleep(0.01)
            else:
                raise AssertionError("the supernode stayed listed after it left")
    async with directory.client("fake") as fake:
        with pytest.raises(DirectoryError, match="must be reachable") as refused:
            await fake.announce_supernode(("127.0.0.1", 1))
        assert refused.value.status == 403


async def test_a_connection_without_a_session_is_closed_when_idle(tmp_path: Path) -> None:
    store = Store(tmp_path / "d.sqlite3")
    server = DirectoryServer(make_identity("server"), store,
                             config=ServerConfig(idle_timeout=0.3))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, ("127.0.0.1", 0))
        from overlay.directory.client.connection import DirectoryClient

        async with DirectoryClient.connect(address, make_identity("idle"),
                                           server_key=server.identity.public_key) as idle:
            await idle.request("supernodes")
            with trio.fail_after(5):
                await idle._link.finished.wait()
            assert idle._link.core.down is not None
            assert "idle" in idle._link.core.down.reason
        nursery.cancel_scope.cancel()
    store.close()
