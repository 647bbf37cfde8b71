"""A directory server on 127.0.0.1 with a real SQLite file, and clients to talk to it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

from overlay.addresses import Address
from overlay.directory.client import DirectoryClient
from overlay.directory.server import DirectoryServer, ServerConfig
from overlay.directory.service import DirectoryConfig
from overlay.directory.store import Store
from overlay.ids import Identity
from tests.conftest import make_identity

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
    def __init__(self, server: DirectoryServer, address: Address, store: Store,
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


@pytest.fixture
async def directory(tmp_path: Path) -> AsyncIterator[RunningServer]:
    store = Store(tmp_path / "directory.sqlite3")
    clock = WallClock()
    server = DirectoryServer(make_identity("server"), store,
                             directory_config=DirectoryConfig(), config=ServerConfig(),
                             wall_clock=clock)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, ("127.0.0.1", 0))
        yield RunningServer(server, address, store, clock)
        nursery.cancel_scope.cancel()
    store.close()


async def registered(running: RunningServer, *names: str) -> None:
    for name in names:
        async with running.client(name) as client:
            await client.register(name, PASSWORD)
