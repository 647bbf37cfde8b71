"""Directory abuse against a real ``overlay server`` process on 127.0.0.1 (issue #11 items
6, 9, 10): attackers' failures lock out no owner and no bystander, and nothing tells
which usernames exist.  Every client here connects from 127.0.0.1, the owners' address."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from overlay.addresses import Address
from overlay.directory.client.connection import DirectoryClient
from overlay.errors import DirectoryError
from tests.conftest import make_identity
from tests.directory.conftest import PASSWORD
from tests.directory.server.test_crash import server_process
from tests.procs import short_tempdir


@pytest.fixture
def server() -> Any:
    state = short_tempdir()
    try:
        with server_process(state) as (proc, address, key):
            yield proc, address, key
            assert proc.poll() is None, "the server died"
            proc.terminate()
            _, stderr = proc.communicate(timeout=20)
            assert "Traceback" not in stderr, stderr
    finally:
        shutil.rmtree(state, ignore_errors=True)


@asynccontextmanager
async def client(server: tuple[Any, Address, bytes], name: str) -> AsyncIterator[DirectoryClient]:
    _proc, address, key = server
    async with DirectoryClient.connect(address, make_identity(name), server_key=key) as c:
        yield c


async def answer(call: Awaitable[Any]) -> tuple[int, str]:
    try:
        result = await call
    except DirectoryError as exc:
        return exc.status, exc.reason
    return getattr(result, "status", 200), getattr(result, "reason", "")


async def test_attackers_lock_out_neither_the_owner_nor_bystanders(
    server: tuple[Any, Address, bytes],
) -> None:
    for name in ("alice", "bob"):
        async with client(server, name) as c:
            await c.register(name, PASSWORD)
    statuses: list[int] = []
    # Wrong passwords for alice from five other keys (each one's budget spent), then
    # guesses at names nobody has, until the attackers' address is throttled.
    for k in range(5):
        async with client(server, f"attacker{k}") as attacker:
            for i in range(6):
                statuses.append((await answer(attacker.login("alice", f"guess {k} {i}")))[0])
    async with client(server, "attacker-names") as attacker:
        for i in range(60):
            statuses.append((await answer(attacker.login(f"nobody{i}", "some guess")))[0])
    assert statuses.count(401) >= 20 and statuses[-1] == 429  # throttled, not locked
    # The owners, from their own keys at the very same address, are not touched.
    for name in ("alice", "bob"):
        async with client(server, name) as owner:
            assert (await owner.login(name, PASSWORD)).username == name


async def test_nothing_tells_which_usernames_exist(
    server: tuple[Any, Address, bytes],
) -> None:
    for name in ("alice", "carol"):
        async with client(server, name) as c:
            await c.register(name, PASSWORD)

    def masked(result: tuple[int, str], name: str) -> tuple[int, str]:
        return result[0], result[1].replace(name, "NAME")

    async with client(server, "carol") as carol:
        await carol.login("carol", PASSWORD)
        for name, other in (("alice", "nobody"),):
            for call in (carol.lookup, carol.contact_accept, carol.contact_decline,
                         carol.contact_remove, carol.contact_request, carol.contact_request,
                         carol.lookup):
                real = masked(await answer(call(name)), name)
                fake = masked(await answer(call(other)), other)
                assert real == fake, (call.__name__, real, fake)
        assert {(c.username, c.state) for c in await carol.contacts()} == \
            {("alice", "outgoing"), ("nobody", "outgoing")}
    async with client(server, "mallory") as mallory:
        real_logins = [masked(await answer(mallory.login("alice", f"guess {i}")), "alice")
                       for i in range(7)]
    async with client(server, "eve") as eve:
        fake_logins = [masked(await answer(eve.login("nobody", f"guess {i}")), "nobody")
                       for i in range(7)]
    assert real_logins == fake_logins
    assert [s for s, _ in real_logins] == [401] * 5 + [429] * 2


async def test_one_key_opens_three_accounts_then_waits(
    server: tuple[Any, Address, bytes],
) -> None:
    async with client(server, "farmer") as farmer:
        statuses = [(await answer(farmer.register(f"farm{i}", PASSWORD)))[0] for i in range(5)]
        assert statuses == [201, 201, 201, 429, 429]
        with pytest.raises(DirectoryError) as limited:
            await farmer.register("farm9", PASSWORD)
        assert limited.value.retry_after is not None and limited.value.retry_after > 0
        assert "too many new accounts" in limited.value.reason
