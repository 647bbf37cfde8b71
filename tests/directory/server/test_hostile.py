"""Directory abuse in-process (issue #11 items 6, 9, 10, 12): no lockout of owners, a
registration limit, no username enumeration, a full disk that is said and survived."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from overlay.directory.server import service
from overlay.directory.server.limits import RegistrationLimits
from overlay.directory.server.listener import DirectoryServer, ServerConfig
from overlay.directory.server.passwords import HashCost
from overlay.directory.server.service import (
    STORAGE_FULL,
    WRONG_LOGIN,
    DirectoryConfig,
    accounts,  # where the password is checked
)
from overlay.directory.server.store import Store
from overlay.errors import DirectoryError
from tests.conftest import make_identity
from tests.directory.conftest import PASSWORD, RunningServer, WallClock, registered

CHEAP = HashCost(iterations=1, memory=8 * 1024 * 1024)


def freeze(running: RunningServer) -> None:
    """Stop the server's wall clock, so that no backoff ends while a test runs."""
    frozen = running.server.wall_clock()
    running.server.wall_clock = lambda: frozen


async def answer(call: Awaitable[Any]) -> tuple[int, str]:
    """(status, reason) of a request, whether it succeeded or not."""
    try:
        result = await call
    except DirectoryError as exc:
        return exc.status, exc.reason
    return getattr(result, "status", 200), getattr(result, "reason", "")


def same_answer(a: tuple[int, str], b: tuple[int, str], names: tuple[str, str]) -> bool:
    """Equal once each name is replaced by a placeholder (a reason may echo the name asked)."""
    return (a[0], a[1].replace(names[0], "NAME")) == (b[0], b[1].replace(names[1], "NAME"))


async def test_lookup_of_a_stranger_and_of_nobody_answer_alike(
    directory: RunningServer,
) -> None:
    await registered(directory, "alice", "carol")
    async with directory.client("carol") as carol:
        await carol.login("carol", PASSWORD)
        stranger = await answer(carol.lookup("alice"))
        nobody = await answer(carol.lookup("nobody"))
    assert stranger[0] == 404
    assert same_answer(stranger, nobody, ("alice", "nobody")), (stranger, nobody)


async def test_contact_operations_do_not_tell_whether_a_name_exists(
    directory: RunningServer,
) -> None:
    await registered(directory, "alice", "carol")
    async with directory.client("carol") as carol:
        await carol.login("carol", PASSWORD)
        steps: list[Callable[[str], Awaitable[Any]]] = [
            carol.contact_accept, carol.contact_decline, carol.contact_remove,
            carol.contact_request, carol.contact_request,  # the second is "already asked"
        ]
        for step in steps:
            real = await answer(step("alice"))
            fake = await answer(step("nobody"))
            assert same_answer(real, fake, ("alice", "nobody")), (step.__name__, real, fake)
        listed = {(c.username, c.state) for c in await carol.contacts()}
        assert listed == {("alice", "outgoing"), ("nobody", "outgoing")}
        for name in ("alice", "nobody"):
            assert (await carol.contact_remove(name)).status == 200
        assert await carol.contacts() == []
        await carol.contact_request("dave")  # nobody has that name yet
    # Whoever registers the name later finds the request, as if it had been there all along.
    await registered(directory, "dave")
    async with directory.client("dave") as dave:
        await dave.login("dave", PASSWORD)
        assert [(c.username, c.state) for c in await dave.contacts()] == [("carol", "incoming")]
        assert (await dave.contact_accept("carol")).status == 200


async def test_unanswered_requests_are_capped_for_names_and_users_alike(
    directory: RunningServer,
) -> None:
    await registered(directory, "carol", "alice")
    async with directory.client("carol") as carol:
        await carol.login("carol", PASSWORD)
        for i in range(service.MAX_OUTGOING_REQUESTS):
            await carol.contact_request(f"ghost{i}")
        for name in ("alice", "ghost-more"):
            with pytest.raises(DirectoryError, match="unanswered") as capped:
                await carol.contact_request(name)
            assert capped.value.status == 403


async def test_login_answers_alike_and_checks_a_hash_for_unknown_users(
    directory: RunningServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same status, same reason, same work: an unknown name is checked against a dummy
    hash (counted here, not timed), so response time does not tell either."""
    checked: list[str] = []
    real = accounts.password_matches

    def counting(encoded: str, password: str) -> bool:
        checked.append(encoded)
        return real(encoded, password)

    monkeypatch.setattr(accounts, "password_matches", counting)
    freeze(directory)
    await registered(directory, "alice")
    async with directory.client("mallory") as mallory, directory.client("eve") as eve:
        wrong = [await answer(mallory.login("alice", f"guess number {i}")) for i in range(7)]
        unknown = [await answer(eve.login("nobody", f"guess number {i}")) for i in range(7)]
    assert wrong[0] == (401, WRONG_LOGIN)
    assert [status for status, _ in wrong] == [401] * 5 + [429] * 2
    for a, b in zip(wrong, unknown, strict=True):
        assert same_answer(a, b, ("alice", "nobody")), (a, b)
    assert len(checked) == 10  # five hashes each; the throttled ones cost nothing
    assert len(set(checked)) == 2 and all(e.startswith("$argon2id$") for e in checked)


async def test_failures_against_unknown_names_do_not_lock_bystanders(
    directory: RunningServer,
) -> None:
    freeze(directory)
    await registered(directory, "alice", "bob")
    async with directory.client("mallory") as mallory:
        statuses = [(await answer(mallory.login(f"nobody{i}", "some guess 123")))[0]
                    for i in range(60)]
    assert statuses.count(401) == 50 and statuses[-1] == 429  # the address budget
    # Everybody else at that address, with the key their account is bound to, logs in.
    for name in ("alice", "bob"):
        async with directory.client(name) as owner:
            assert (await owner.login(name, PASSWORD)).username == name


async def test_each_key_opens_at_most_three_accounts_an_hour(directory: RunningServer) -> None:
    async with directory.client("farmer") as farmer:
        for i in range(3):
            assert (await farmer.register(f"farm{i}", PASSWORD)).status == 201
        with pytest.raises(DirectoryError, match="too many new accounts") as limited:
            await farmer.register("farm3", PASSWORD)
        assert limited.value.status == 429
        assert limited.value.retry_after is not None
        assert 0 < limited.value.retry_after <= 1200  # one more every 20 minutes
        directory.clock.advance(limited.value.retry_after)
        assert (await farmer.register("farm3", PASSWORD)).status == 201


@asynccontextmanager
async def directory_with(tmp_path: Path,
                         registrations: RegistrationLimits) -> AsyncIterator[RunningServer]:
    """A server with cheap hashes and the given registration limits."""
    store = Store(tmp_path / "directory.sqlite3")
    clock = WallClock()
    config = DirectoryConfig(hash_cost=CHEAP, registrations=registrations)
    server = DirectoryServer(make_identity("server"), store, directory_config=config,
                             config=ServerConfig(), wall_clock=clock)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, ("127.0.0.1", 0))
        yield RunningServer(server, address, store, clock)
        nursery.cancel_scope.cancel()
    store.close()


async def test_an_address_opens_a_limited_number_of_accounts(tmp_path: Path) -> None:
    statuses = []
    async with directory_with(tmp_path, RegistrationLimits(per_address=4)) as running:
        for i in range(6):
            async with running.client(f"key{i}") as client:
                statuses.append((await answer(client.register(f"user{i}", PASSWORD)))[0])
    assert statuses == [201] * 4 + [429] * 2


async def test_a_full_disk_answers_507_logs_one_line_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="overlay.directory")
    async with directory_with(tmp_path, RegistrationLimits(per_address=1000,
                                                           per_key=1000)) as running:
        await fill_and_recover(running, caplog)


async def fill_and_recover(running: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    store = running.store
    await registered(running, "alice", "bob")
    async with running.client("alice") as alice:
        await alice.login("alice", PASSWORD)
        async with running.client("bob") as bob:
            await bob.login("bob", PASSWORD)
            pages = store._db.execute("PRAGMA page_count").fetchone()[0]
            store._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL: next page
            refused: DirectoryError | None = None
            for i in range(300):  # rows fit in the last page until it is full
                try:
                    await alice.register(f"user{i:03d}", PASSWORD)
                except DirectoryError as exc:
                    refused = exc
                    break
            assert refused is not None, "the database never filled up"
            assert (refused.status, refused.reason) == (507, STORAGE_FULL)
            for _ in range(3):  # every further change is refused alike
                with pytest.raises(DirectoryError) as again:
                    await alice.register("one-more", PASSWORD)
                assert again.value.status == 507
            # Reads go on, and so does the connection.
            assert (await alice.request("supernodes")).status == 200
        # bob's session ended while full (writing its last_seen may fail): no crash.
        for _ in range(1_000):  # at most 10 s
            if "bob" not in running.server.directory._sessions:
                break
            await trio.sleep(0.01)
        assert "bob" not in running.server.directory._sessions
        assert (await alice.request("supernodes")).status == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "storage is full" in errors[0].getMessage() and errors[0].exc_info is None

    store._db.execute(f"PRAGMA max_page_count = {pages + 1000}")  # space is back
    async with running.client("alice") as alice:
        await alice.login("alice", PASSWORD)
        assert (await alice.register("one-more", PASSWORD)).status == 201
        assert (await alice.contact_request("one-more")).status == 201
    assert any("succeed again" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info is not None]
