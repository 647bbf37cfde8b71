"""Several directory servers on the client side: the list, the retry policy, trying the
first that answers, and a role's link moving to the next server when one dies."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import trio

from overlay.addresses import Address
from overlay.cli.session_file import SavedSession
from overlay.directory.client.connection import DirectoryClient
from overlay.directory.client.servers import Retry, ServerList, connect_first
from overlay.directory.server.listener import DirectoryServer
from overlay.directory.server.store import Store
from overlay.errors import DirectoryError, DirectoryUnavailable
from overlay.ids import NodeId
from overlay.roles.directory_link import DirectoryLink
from tests.conftest import make_identity

SERVER = make_identity("server")


def dead_address() -> Address:
    """A port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return ("127.0.0.1", port)


def test_server_list_order_and_rotation() -> None:
    a, b, c = ("h", 1), ("h", 2), ("h", 3)
    assert ServerList.of(a).addresses == (a,)
    assert ServerList.of([a, b, a, c]).addresses == (a, b, c)
    servers = ServerList.of(ServerList((a, b, c)))
    assert servers.after(a) == [b, c, a] and servers.after(c) == [a, b, c]
    assert servers.after(("h", 9)) == [a, b, c]
    assert servers.describe() == "h:1, h:2, h:3"
    with pytest.raises(ValueError):
        ServerList(())


def test_retry_backs_off_with_jitter_and_bounds() -> None:
    retry = Retry(1.0, 8.0, random.Random(1))
    waits = [retry.round_failed() for _ in range(6)]
    for wait, delay in zip(waits, [1, 2, 4, 8, 8, 8], strict=True):
        assert delay / 2 <= wait <= delay
    assert len(set(waits)) == len(waits)  # jitter: no two clients wait alike
    retry.reset()
    assert 0.5 <= retry.round_failed() <= 1.0
    assert all(0 <= retry.next_server() <= 0.5 for _ in range(20))
    assert all(3.0 <= retry.busy(3.0) <= 4.5 for _ in range(20))
    assert all(1.0 <= retry.busy(None) <= 1.5 for _ in range(20))
    assert retry.busy(1e9) <= 12.0  # a server's retry_after is capped by the maximum


def test_saved_session_keeps_the_failover_servers() -> None:
    session = SavedSession(server=("127.0.0.1", 1), server_key=bytes(32), username="alice",
                           node_id=NodeId(bytes(16)), token=b"t", expires_at=1, certificate=b"",
                           certificate_expires_at=1, failover=(("127.0.0.1", 2),))
    data = session.to_json()
    assert data["failover"] == ["127.0.0.1:2"]
    assert SavedSession.from_json(data) == session
    assert session.servers == (("127.0.0.1", 1), ("127.0.0.1", 2))
    assert session.on((("127.0.0.1", 2),)) and not session.on((("127.0.0.1", 3),))
    del data["failover"]  # a session saved before there were several servers
    assert SavedSession.from_json(data).servers == (("127.0.0.1", 1),)


@asynccontextmanager
async def server(path: Path, nursery: trio.Nursery,
                 ) -> AsyncIterator[tuple[Address, trio.CancelScope]]:
    store = Store(path)
    scope = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[Address]) -> None:
        with scope:
            await DirectoryServer(SERVER, store).serve(("127.0.0.1", 0),
                                                       task_status=task_status)

    try:
        yield await nursery.start(serve), scope
    finally:
        scope.cancel()
        store.close()


async def test_connect_first_skips_dead_servers(tmp_path: Path) -> None:
    dead = dead_address()

    async with trio.open_nursery() as nursery, server(tmp_path / "a.db", nursery) as (live, _):
        def dial(address: Address) -> AbstractAsyncContextManager[DirectoryClient]:
            return DirectoryClient.connect(address, make_identity("alice"),
                                           server_key=SERVER.public_key)

        async with connect_first([dead, live], dial) as (used, client):
            assert used == live and client.server_public_key == SERVER.public_key
        with pytest.raises(DirectoryUnavailable) as none:
            async with connect_first([dead, dead_address()], dial):
                raise AssertionError("connected to nothing")
        assert "no directory server answered" in str(none.value)
        nursery.cancel_scope.cancel()


async def test_a_link_moves_to_the_next_server_and_waits_out_a_busy_one(
        tmp_path: Path) -> None:
    connected: list[Address] = []
    busy_once = [True]
    moved = trio.Event()

    async def on_connect(client: DirectoryClient) -> None:
        if busy_once.pop() if busy_once else False:
            raise DirectoryError(429, "busy", retry_after=0.01)
        connected.append(client.address)
        if len(connected) == 2:
            moved.set()

    async def on_notice(notice: object) -> None:
        pass

    async with trio.open_nursery() as nursery, \
            server(tmp_path / "a.db", nursery) as (a, a_scope), \
            server(tmp_path / "b.db", nursery) as (b, _):
        link = DirectoryLink([dead_address(), a, b], make_identity("alice"), None,
                             on_connect, on_notice, retry_initial=0.01,
                             rng=random.Random(2))
        with trio.fail_after(10):
            await nursery.start(link.run)  # the dead one skipped, a busy once, then a
            assert connected == [a] and link.address == a and link.failovers == 1
            assert link.server_key == SERVER.public_key  # pinned from the first one
            a_scope.cancel()  # a dies: b, at once
            await moved.wait()
        assert connected == [a, b] and link.failovers == 2

        only_dead = DirectoryLink([dead_address(), dead_address()], make_identity("bob"),
                                  None, on_connect, on_notice, retry_initial=0.01,
                                  retry_max=0.02)
        with trio.move_on_after(1.0) as waited:
            await only_dead.run()  # a daemon started before its servers waits for them
        assert waited.cancelled_caught and only_dead.failovers >= 3  # both, several times
        nursery.cancel_scope.cancel()
