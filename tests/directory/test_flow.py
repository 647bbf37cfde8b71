"""The whole directory flow against a real server on 127.0.0.1 and a real SQLite file."""

from __future__ import annotations

import time

import pytest
import trio

from overlay.directory.certificates import verify_certificate
from overlay.errors import CertificateError, DirectoryError, DirectoryUnavailable
from tests.conftest import make_identity
from tests.directory.conftest import PASSWORD, RunningServer, registered


async def test_register_login_contacts_presence_lookup(directory: RunningServer) -> None:
    await registered(directory, "alice", "bob", "carol")
    async with directory.client("alice") as alice, directory.client("bob") as bob, \
            directory.client("carol") as carol:
        login = await alice.login("alice", PASSWORD)
        assert login.certificate.node_id == make_identity("alice").node_id
        await bob.login("bob", PASSWORD)
        await carol.login("carol", PASSWORD)

        assert (await alice.contact_request("bob")).status == 201
        notice = await bob.notices().receive()
        assert (notice.event, notice.body) == ("contact_request", {"username": "alice"})
        assert [(c.username, c.state) for c in await bob.contacts()] == [("alice", "incoming")]
        assert (await bob.contact_accept("bob" if False else "alice")).status == 200
        assert [(c.username, c.state) for c in await alice.contacts()] == [("bob", "accepted")]

        await alice.set_presence("away", home_address=("127.0.0.1", 9999))
        seen = await bob.lookup("alice")
        assert seen.presence.status == "away"
        assert seen.presence.home_address == ("127.0.0.1", 9999)
        # The certificate verifies against the pinned server key, and only against it.
        cert = verify_certificate(seen.certificate.raw, directory.identity.public_key,
                                  now=time.time())
        assert cert.username == "alice"
        assert cert.public_key == make_identity("alice").public_key
        with pytest.raises(CertificateError):
            verify_certificate(seen.certificate.raw, make_identity("mallory").public_key,
                               now=time.time())

        # A stranger sees neither presence nor certificate, nor whether the name exists.
        with pytest.raises(DirectoryError) as refused:
            await carol.lookup("alice")
        assert refused.value.status == 404
        with pytest.raises(DirectoryError) as missing:
            await carol.lookup("nobody")
        assert missing.value.status == 404


async def test_presence_notices_reach_contacts_only(directory: RunningServer) -> None:
    await registered(directory, "alice", "bob", "carol")
    async with directory.client("alice") as alice, directory.client("bob") as bob, \
            directory.client("carol") as carol:
        for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            await client.login(name, PASSWORD)
        await alice.contact_request("bob")
        await bob.contact_accept("alice")
        async with directory.client("alice2") as _:
            pass
        await alice.set_presence("online")
        events = []
        with trio.move_on_after(5):
            async for notice in bob.notices():
                events.append(notice)
                if notice.event == "presence" and notice.body["presence"]["status"] == "online":
                    break
        assert events[-1].body["username"] == "alice"
        carol_notices = carol.notices()
        with pytest.raises(trio.WouldBlock):
            carol_notices.receive_nowait()
    # alice hung up: bob's lookup of her (on a new connection) says offline, with last seen.
    async with directory.client("bob") as bob:
        await bob.login("bob", PASSWORD)
        presence = (await bob.lookup("alice")).presence
        assert presence.status == "offline"
        assert presence.last_seen is not None


async def test_login_errors_are_clear(directory: RunningServer) -> None:
    await registered(directory, "alice")
    async with directory.client("alice") as alice:
        with pytest.raises(DirectoryError, match="wrong username or password") as wrong:
            await alice.login("alice", "not the password")
        assert wrong.value.status == 401
        with pytest.raises(DirectoryError, match="wrong username or password") as unknown:
            await alice.login("nobody", PASSWORD)
        assert unknown.value.status == 401
        with pytest.raises(DirectoryError) as taken:
            await alice.register("alice", PASSWORD)
        assert taken.value.status == 409
        with pytest.raises(DirectoryError, match="log in first") as anonymous:
            await alice.contacts()
        assert anonymous.value.status == 401
    async with directory.client("other-device") as other:
        with pytest.raises(DirectoryError, match="another node key") as foreign:
            await other.login("alice", PASSWORD)
        assert foreign.value.status == 403


async def test_change_key_moves_the_account(directory: RunningServer) -> None:
    await registered(directory, "alice")
    async with directory.client("alice-laptop") as laptop:
        await laptop.change_key("alice", PASSWORD)
        login = await laptop.login("alice", PASSWORD)
        assert login.certificate.public_key == make_identity("alice-laptop").public_key
    async with directory.client("alice") as old:
        with pytest.raises(DirectoryError) as refused:
            await old.login("alice", PASSWORD)
        assert refused.value.status == 403


async def test_resume_is_bound_to_the_node_key(directory: RunningServer) -> None:
    await registered(directory, "alice")
    async with directory.client("alice") as alice:
        token = (await alice.login("alice", PASSWORD)).token
    async with directory.client("alice") as again:
        assert (await again.resume(token)).username == "alice"
        await again.contacts()
    async with directory.client("thief") as thief:
        with pytest.raises(DirectoryError, match="another node key") as stolen:
            await thief.resume(token)
        assert stolen.value.status == 401
    async with directory.client("alice") as alice:
        await alice.resume(token)
        await alice.logout()
    async with directory.client("alice") as alice:
        with pytest.raises(DirectoryError) as ended:
            await alice.resume(token)
        assert ended.value.status == 401


async def test_wrong_server_key_is_refused(directory: RunningServer) -> None:
    from overlay.directory.client.connection import DirectoryClient

    with pytest.raises(DirectoryUnavailable, match="pinned server key"):
        async with DirectoryClient.connect(directory.address, make_identity("alice"),
                                           server_key=make_identity("fake").public_key):
            pass


async def test_unreachable_server_is_one_clear_error() -> None:
    from overlay.directory.client.connection import DirectoryClient

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(DirectoryUnavailable, match="cannot reach the directory server"):
        async with DirectoryClient.connect(("127.0.0.1", port), make_identity("alice"),
                                           server_key=None):
            pass


async def test_login_and_resume_report_the_address_the_server_sees(
        directory: RunningServer) -> None:
    """The optional ``observed`` field (issue #14): the connection's source, as the server
    sees it; behind a NAT that is the NAT's public side, a hole-punching candidate."""
    await registered(directory, "alice")
    async with directory.client("alice") as alice:
        login = await alice.login("alice", PASSWORD)
        assert login.observed == alice.local_address
    async with directory.client("alice") as again:
        resumed = await again.resume(login.token)
        assert resumed.observed == again.local_address
        assert resumed.observed != login.observed  # another connection, another port
