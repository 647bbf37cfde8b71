"""Admission control: the password-hash queue is bounded, and what does not fit is shed
with 429 and a retry_after, before any throttle budget is spent."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

from overlay.directory.client.connection import DirectoryClient
from overlay.directory.server.listener import DirectoryServer
from overlay.directory.server.service import (
    DirectoryConfig,
    accounts,  # where the password is checked
)
from overlay.directory.server.store import Store
from overlay.errors import DirectoryError
from tests.conftest import make_identity
from tests.directory.conftest import PASSWORD

SERVER = make_identity("server")


async def test_a_full_hash_queue_sheds_logins_with_retry_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = accounts.password_matches

    def held(encoded: str, password: str) -> bool:
        release.wait(10)  # the hash threads stay busy until the test lets them go
        return real(encoded, password)

    store = Store(tmp_path / "dir.sqlite3")
    server = DirectoryServer(SERVER, store, directory_config=DirectoryConfig(
        hash_threads=1, max_queued_hashes=2))
    directory = server.directory
    names = [f"user{i}" for i in range(4)]
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, ("127.0.0.1", 0))
        for name in names:
            async with DirectoryClient.connect(address, make_identity(name),
                                               server_key=SERVER.public_key) as client:
                await client.register(name, PASSWORD)
        monkeypatch.setattr(accounts, "password_matches", held)
        outcomes: dict[str, DirectoryError | None] = {}
        two_shed = trio.Event()

        async def login(name: str) -> None:
            async with DirectoryClient.connect(address, make_identity(name),
                                               server_key=SERVER.public_key) as client:
                try:
                    await client.login(name, PASSWORD)
                    outcomes[name] = None
                except DirectoryError as exc:
                    outcomes[name] = exc
                    if sum(exc is not None for exc in outcomes.values()) == 2:
                        two_shed.set()

        with trio.fail_after(10):
            async with trio.open_nursery() as logins:
                for name in names:
                    logins.start_soon(login, name)
                await two_shed.wait()  # the two that do not fit are answered at once
                assert directory.hashes_waiting == 2 and directory.hashes_shed == 2
                release.set()
        shed = [exc for exc in outcomes.values() if exc is not None]
        assert len(shed) == 2 and len(outcomes) == 4
        assert all(exc.status == 429 and exc.retry_after is not None
                   and exc.retry_after >= 0.5 for exc in shed)
        assert directory.hashes_peak == 2 and directory.hashes_waiting == 0
        # Shed attempts were never tried: no throttle budget spent, they log in now.
        for name in [name for name, exc in outcomes.items() if exc is not None]:
            async with DirectoryClient.connect(address, make_identity(name),
                                               server_key=SERVER.public_key) as client:
                await client.login(name, PASSWORD)
        nursery.cancel_scope.cancel()
    store.close()
