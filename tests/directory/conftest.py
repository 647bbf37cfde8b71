"""A directory server on 127.0.0.1 on a real store, and clients to talk to it.

The ``store`` fixture is parametrised over both engines: a real SQLite file, and a
fresh schema in the session's throwaway PostgreSQL cluster (tests/directory/postgres.py;
the ``postgres_cluster`` fixture is in tests/conftest.py, so that tests/bench has it too),
so every test that uses ``directory`` runs on each.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

from overlay.addresses import Address
from overlay.directory.client.connection import DirectoryClient
from overlay.directory.server.listener import DirectoryServer, ServerConfig
from overlay.directory.server.service import DirectoryConfig
from overlay.directory.server.store import SqlStore, open_store
from overlay.ids import Identity
from tests.conftest import make_identity
from tests.directory.postgres import Cluster

PASSWORD = "correct horse battery"


class WallClock:
    """Unix time that tests can move forward (login windows, session expiry)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class RunningServer:
    def __init__(self, server: DirectoryServer, address: Address, store: SqlStore,
                 clock: WallClock) -> None:
        self.clock = clock
        self.server = server
        self.address = address
        self.store = store
        self.identity = server.identity

    def client(self, identity: Identity | str) -> AbstractAsyncContextManager[DirectoryClient]:
        if isinstance(identity, str):
            identity = make_identity(identity)
        return DirectoryClient.connect(self.address, identity,
                                       server_key=self.identity.public_key)


ServerFactory = Callable[..., AbstractAsyncContextManager[RunningServer]]


ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What ``overlay server --db`` takes: a SQLite path, or a URL to an empty schema."""
    if request.param == "sqlite":
        return str(tmp_path / "directory.sqlite3")
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    return cluster.url(cluster.fresh_schema())


@pytest.fixture
def store(db: str) -> Iterator[SqlStore]:
    opened = open_store(db)
    yield opened
    opened.close()


@pytest.fixture
async def directory(store: SqlStore) -> AsyncIterator[RunningServer]:
    clock = WallClock()
    server = DirectoryServer(make_identity("server"), store,
                             directory_config=DirectoryConfig(), config=ServerConfig(),
                             wall_clock=clock)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, ("127.0.0.1", 0))
        yield RunningServer(server, address, store, clock)
        nursery.cancel_scope.cancel()


async def registered(running: RunningServer, *names: str) -> None:
    for name in names:
        async with running.client(name) as client:
            await client.register(name, PASSWORD)
