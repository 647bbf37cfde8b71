"""Two directory server processes' worth of servers on one PostgreSQL database.

Each server here is a full DirectoryServer with its own store pool and its own
LISTEN/NOTIFY seat, in one test process (the real-process check with kill -9 is
in test_cluster_procs.py).  A user on one and a contact on the other must see
each other's requests, acceptances and presence, and the abuse limits must hold
whichever server an attacker talks to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio

from overlay.directory.client.connection import DirectoryClient, Notice
from overlay.directory.server.cluster import PostgresCluster
from overlay.directory.server.limits import BackoffPolicy, LoginLimits
from overlay.directory.server.listener import DirectoryServer, ServerConfig
from overlay.directory.server.service import DirectoryConfig
from overlay.directory.server.store_pg import PostgresStore
from overlay.errors import DirectoryError
from overlay.ids import Identity
from tests.conftest import make_identity
from tests.directory.conftest import PASSWORD, RunningServer, WallClock
from tests.directory.postgres import Cluster

pytestmark = pytest.mark.postgres
SERVER = make_identity("server")


@asynccontextmanager
async def cluster_server(url: str, nursery: trio.Nursery, *, silence: float = 20.0,
                         config: DirectoryConfig | None = None,
                         ) -> AsyncIterator[tuple[RunningServer, trio.CancelScope]]:
    """A server on ``url``; cancelling the scope it yields stops it without a goodbye
    (to the others it falls silent, as a killed process would)."""
    store = PostgresStore(url)
    try:
        cluster = PostgresCluster(url, heartbeat=0.2, silence=silence)
        server = DirectoryServer(SERVER, store, directory_config=config or DirectoryConfig(),
                                 config=ServerConfig(), wall_clock=WallClock(), cluster=cluster)
        scope = trio.CancelScope()

        async def serve(task_status: trio.TaskStatus[object]) -> None:
            with scope:
                await server.serve(("127.0.0.1", 0), task_status=task_status)

        address = await nursery.start(serve)
        yield RunningServer(server, address, store, WallClock()), scope
        scope.cancel()
    finally:
        store.close()


async def next_notice(client: DirectoryClient, event: str, *, status: str | None = None,
                      **expected: object) -> Notice:
    """The next notice of that kind whose body has those values, and for presence that
    status (others are skipped)."""
    with trio.fail_after(10):
        async for notice in client.notices():
            if notice.event == event and all(
                    notice.body.get(key) == value for key, value in expected.items()) \
                    and (status is None or notice.body["presence"]["status"] == status):
                return notice
    raise AssertionError("notices ended")


def client(server: RunningServer, name: str) -> AbstractAsyncContextManager[DirectoryClient]:
    return server.client(make_identity(name))


async def test_contacts_and_presence_across_two_servers(postgres_cluster: Cluster) -> None:
    url = postgres_cluster.url(postgres_cluster.fresh_schema())
    async with trio.open_nursery() as nursery:
        async with cluster_server(url, nursery) as (a, _), \
                cluster_server(url, nursery) as (b, _):
            async with client(a, "alice") as alice, client(b, "bob") as bob:
                await alice.register("alice", PASSWORD)
                await bob.register("bob", PASSWORD)
                await alice.login("alice", PASSWORD)
                await bob.login("bob", PASSWORD)
                await alice.contact_request("bob")
                await next_notice(bob, "contact_request", username="alice")
                await bob.contact_accept("alice")
                await next_notice(alice, "contact_accepted", username="bob")

                await alice.set_presence("online", home_address=("127.0.0.1", 4001))
                await next_notice(bob, "presence", username="alice", status="online")
                assert (await bob.lookup("alice")).presence.home_address == \
                    ("127.0.0.1", 4001)
                await bob.set_presence("away")
                await next_notice(alice, "presence", username="bob", status="away")
                assert {c.username: c.presence.status for c in await alice.contacts()
                        if c.presence is not None} == {"bob": "away"}

                # A third server that starts now learns who is online from the others.
                async with cluster_server(url, nursery) as (c, _), \
                        client(c, "alice") as alice_on_c:
                    await alice_on_c.login("alice", PASSWORD)
                    for _ in range(200):  # at most 10 s
                        if (await alice_on_c.lookup("bob")).presence.status == "away":
                            break
                        await trio.sleep(0.05)
                    else:
                        raise AssertionError("c never learnt bob's presence")

                await bob.contact_remove("alice")
                await next_notice(alice, "contact_removed", username="bob")
            # alice hung up on a: bob, logged in again on b, sees her offline with last seen.
            async with client(b, "bob") as bob:
                await bob.login("bob", PASSWORD)
                with pytest.raises(DirectoryError) as gone:
                    await bob.lookup("alice")  # removed: no longer a contact
                assert gone.value.status == 404
        nursery.cancel_scope.cancel()


async def test_a_silent_server_s_users_go_offline_and_move(postgres_cluster: Cluster) -> None:
    url = postgres_cluster.url(postgres_cluster.fresh_schema())
    async with trio.open_nursery() as nursery:
        async with cluster_server(url, nursery, silence=1.0) as (a, a_scope), \
                cluster_server(url, nursery, silence=1.0) as (b, _), client(b, "bob") as bob:
            async with client(a, "alice") as alice:
                await alice.register("alice", PASSWORD)
                await bob.register("bob", PASSWORD)
                login = await alice.login("alice", PASSWORD)
                await bob.login("bob", PASSWORD)
                await alice.contact_request("bob")
                await bob.contact_accept("alice")
                await alice.set_presence("online")
                await next_notice(bob, "presence", username="alice", status="online")
                a_scope.cancel()  # server a stops dead: no offline notice from it
                await next_notice(bob, "presence", username="alice", status="offline")
            # alice resumes her session on b, no password, and is online again.
            async with client(b, "alice") as alice:
                await alice.resume(login.token)
                await alice.set_presence("online")
                await next_notice(bob, "presence", username="alice", status="online")
                assert [c.username for c in await alice.contacts()] == ["bob"]
        nursery.cancel_scope.cancel()


async def test_login_throttle_holds_across_servers(postgres_cluster: Cluster) -> None:
    url = postgres_cluster.url(postgres_cluster.fresh_schema())
    quick = BackoffPolicy(free=2, base=60.0, cap=60.0, forget=3600.0)
    config = DirectoryConfig(logins=LoginLimits(per_key=quick, per_account=quick,
                                                per_address=quick))
    async with trio.open_nursery() as nursery:
        async with cluster_server(url, nursery, config=config) as (a, _), \
                cluster_server(url, nursery, config=config) as (b, _):
            async with client(a, "alice") as owner:
                await owner.register("alice", PASSWORD)
            mallory: Identity = make_identity("mallory")
            for server in (a, b):  # one wrong guess on each: the two free ones
                async with server.client(mallory) as guesser:
                    with pytest.raises(DirectoryError) as wrong:
                        await guesser.login("alice", "wrong password 1")
                    assert wrong.value.status == 401
            await trio.sleep(0.3)  # let the second failure's news reach a
            async with a.client(mallory) as guesser:
                with pytest.raises(DirectoryError) as throttled:
                    await guesser.login("alice", PASSWORD)
                assert throttled.value.status == 429
            async with client(b, "alice") as owner:  # the owner is never locked out
                await owner.login("alice", PASSWORD)
        nursery.cancel_scope.cancel()


async def test_two_directories_in_two_schemas_of_one_database_do_not_hear_each_other(
        postgres_cluster: Cluster) -> None:
    """NOTIFY channels belong to the database: each directory's is named after its schema."""
    first = postgres_cluster.url(postgres_cluster.fresh_schema())
    other = postgres_cluster.url(postgres_cluster.fresh_schema())
    heard: dict[str, list[str]] = {"same": [], "other": [], "speaker": []}
    probed = trio.Event()

    def hearer(name: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def deliver(event: dict[str, Any]) -> None:
            heard[name].append(event["t"])
            if name == "same" and event["t"] == "probe":
                probed.set()
        return deliver

    async with trio.open_nursery() as nursery:
        for name, url in (("same", first), ("other", other)):
            await nursery.start(PostgresCluster(url, heartbeat=0.2).run, hearer(name))
        speaker = PostgresCluster(first, heartbeat=0.2)
        await nursery.start(speaker.run, hearer("speaker"))
        speaker.publish({"t": "probe"})
        with trio.fail_after(10):
            await probed.wait()
        await trio.sleep(1.0)  # several heartbeats: the other schema's seat hears none
        nursery.cancel_scope.cancel()
    assert heard["other"] == [], heard["other"]
