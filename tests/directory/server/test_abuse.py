"""Hostile and careless clients: each gets a 4xx with a reason, and the server serves on."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import trio

from overlay.directory.client.connection import DirectoryClient
from overlay.errors import DirectoryError
from overlay.net.link import Link
from overlay.proto.messages import DirectoryResponse
from tests.directory.conftest import PASSWORD, RunningServer, registered

SEALED = "<sealed>"  # replaced by the test with PASSWORD sealed for its own connection


def sealed(text: str) -> str:
    return SEALED + text


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("no_such_op", {}, "unknown operation"),
    ("register", {"username": "alice"}, "missing argument 'sealed_password'"),
    ("register", {"username": 7, "sealed_password": SEALED}, "invalid username"),
    ("register", {"username": ["a"], "sealed_password": SEALED}, "invalid username"),
    ("register", {"username": "x" * 5000, "sealed_password": SEALED}, "invalid username"),
    ("register", {"username": "bob'; DROP TABLE users; --", "sealed_password": SEALED},
     "invalid username"),
    ("register", {"username": "a' OR '1'='1", "sealed_password": SEALED}, "invalid username"),
    ("register", {"username": "carol", "password": PASSWORD}, "unknown argument"),
    ("register", {"username": "carol", "sealed_password": "text"}, "must be bin"),
    ("register", {"username": "carol", "sealed_password": b"\x00" * 80}, "does not open"),
    ("register", {"username": "carol", "sealed_password": b"\x00" * 5000}, "must be bin"),
    ("register", {"username": "carol", "sealed_password": sealed("p" * 2000)},
     "password must be"),
    ("register", {"username": "carol", "sealed_password": sealed("short")}, "too short"),
    ("register", {"username": "carol", "sealed_password": sealed("aaaaaaaaaaaaaa")},
     "too repetitive"),
    ("register", {"username": "carol", "sealed_password": sealed("carol-is-great")},
     "username"),
    ("register", {"username": "carol", "sealed_password": SEALED, "admin": True},
     "unknown argument"),
    ("login", {"username": "alice", "sealed_password": None}, "missing argument"),
    ("resume", {"token": "not bytes"}, "token must be"),
    ("dialback", {"address": "nonsense"}, "bad address"),
    ("dialback", {"address": 12}, "address must be"),
    ("presence", {"status": "online"}, "log in first"),
    ("lookup", {"username": "alice"}, "log in first"),
]


def fill_in(client: DirectoryClient, arguments: dict[str, Any]) -> dict[str, Any]:
    return {key: client._sealed(value[len(SEALED):] or PASSWORD)
            if isinstance(value, str) and value.startswith(SEALED) else value
            for key, value in arguments.items()}


@pytest.mark.parametrize(("operation", "arguments", "reason"), BAD_REQUESTS)
async def test_bad_requests_get_4xx_with_a_reason(
    directory: RunningServer, operation: str, arguments: dict[str, Any], reason: str,
) -> None:
    await registered(directory, "alice")
    async with directory.client("mallory") as mallory:
        with pytest.raises(DirectoryError) as refused:
            await mallory.request(operation, **fill_in(mallory, arguments))
        assert 400 <= refused.value.status < 500
        assert reason in refused.value.reason
        # The same connection, and the server, keep working.
        assert (await mallory.request("supernodes")).status == 200
    async with directory.client("alice") as alice:
        assert (await alice.login("alice", PASSWORD)).username == "alice"


async def test_a_sealed_password_replayed_on_another_connection_is_refused(
    directory: RunningServer,
) -> None:
    """An eavesdropper's capture is worthless: it is bound to the link it was sent on."""
    await registered(directory, "alice")
    async with directory.client("alice") as alice:
        captured = alice._sealed(PASSWORD)
        await alice.request("login", username="alice", sealed_password=captured)
    async with directory.client("alice") as again, directory.client("thief") as thief:
        for client in (again, thief):
            with pytest.raises(DirectoryError, match="another connection") as refused:
                await client.request("change_key", username="alice", sealed_password=captured)
            assert refused.value.status == 400


async def test_sql_metacharacters_change_nothing(directory: RunningServer) -> None:
    await registered(directory, "alice", "bob")
    async with directory.client("alice") as alice:
        await alice.login("alice", PASSWORD)
        for name in ("bob' --", "bob\" OR 1=1", "%", "_ob", "b%"):
            with pytest.raises(DirectoryError) as refused:
                await alice.lookup(name)
            assert refused.value.status in (400, 404)
    assert directory.store.user("bob") is not None


async def test_wrong_passwords_back_off_per_key_and_the_owner_is_never_locked_out(
    directory: RunningServer,
) -> None:
    await registered(directory, "alice")
    async with directory.client("mallory") as mallory, directory.client("alice") as alice:
        for _ in range(5):
            with pytest.raises(DirectoryError) as wrong:
                await mallory.login("alice", "guess-" + secrets.token_hex(4))
            assert wrong.value.status == 401
        with pytest.raises(DirectoryError) as limited:
            await mallory.login("alice", "guess-again-123")
        assert limited.value.status == 429
        assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 1
        assert "from this node key" in limited.value.reason
        # While blocked even the right password waits: guessing must not pay off.
        with pytest.raises(DirectoryError) as still:
            await mallory.login("alice", PASSWORD)
        assert still.value.status == 429
        # The owner, from the key the account is bound to, is not affected at all.
        assert (await alice.login("alice", PASSWORD)).username == "alice"
        directory.clock.advance(limited.value.retry_after)
        with pytest.raises(DirectoryError) as again:  # waited: one more try, which fails
            await mallory.login("alice", "guess-once-more")
        assert again.value.status == 401
        with pytest.raises(DirectoryError) as longer:  # and the wait doubles
            await mallory.login("alice", "guess-once-more")
        assert longer.value.status == 429
        assert longer.value.retry_after is not None and 1 < longer.value.retry_after <= 2


async def test_request_rate_cap_answers_429(directory: RunningServer) -> None:
    async with directory.client("flooder") as flooder:
        statuses: list[int] = []

        async def one() -> None:
            try:
                statuses.append((await flooder.request("supernodes")).status)
            except DirectoryError as exc:
                statuses.append(exc.status)

        async with trio.open_nursery() as nursery:
            for _ in range(1_000):  # far above the burst of 400, all at once
                nursery.start_soon(one)
        assert 429 in statuses
        assert statuses.count(200) >= 64
    async with directory.client("polite") as polite:
        assert (await polite.request("supernodes")).status == 200


async def test_a_non_request_message_closes_only_that_connection(
    directory: RunningServer,
) -> None:
    async with directory.client("odd") as odd, directory.client("fine") as fine:
        link: Link = odd._link
        link.send_nowait(DirectoryResponse(1, 200, "I am not a server", {}))
        with trio.fail_after(5):
            await link.finished.wait()
        assert link.core.down is not None and "only requests" in link.core.down.reason
        assert (await fine.request("supernodes")).status == 200


async def test_garbage_bytes_close_the_connection_and_the_server_goes_on(
    directory: RunningServer,
) -> None:
    for garbage in (b"\xff" * 64, (70_000).to_bytes(4, "big"), b"\x00\x00\x00\x05" + b"\xc1" * 5):
        stream = await trio.open_tcp_stream(*directory.address)
        await stream.send_all(garbage)
        with trio.fail_after(5):
            while await stream.receive_some(1024):
                pass  # the server answers with CLOSE, then hangs up
        await stream.aclose()
    async with directory.client("after") as after:
        assert (await after.request("supernodes")).status == 200

