"""Contact requests that race a registration or the other side's request.

The service looks (does the name exist? did they ask us?) and then writes, with
awaits between; another connection, or another server process on the same
PostgreSQL database, may write in that gap.  Each test makes the gap happen
for certain, by doing the other side's write at the moment the store is called,
and checks that no request is lost or doubled (the NAT lab once saw two peers
wait for each other for a minute: a request kept for a name registered a moment
before, which nobody could see).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import make_identity
from tests.directory.conftest import PASSWORD, RunningServer, registered


async def test_a_request_to_a_name_registered_in_the_gap_reaches_the_new_user(
        directory: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    store = directory.store
    keep_name_request = store.add_name_request

    def bob_registers_first(user_id: int, username: str, now: int) -> bool:
        store.create_user("bob", "h", make_identity("bob").public_key, now)
        return keep_name_request(user_id, username, now)

    await registered(directory, "alice")
    async with directory.client("alice") as alice:
        await alice.login("alice", PASSWORD)
        monkeypatch.setattr(store, "add_name_request", bob_registers_first)
        asked = await alice.contact_request("bob")  # nobody is bob when the server looks
        assert (asked.status, asked.body["state"]) == (201, "outgoing")
        assert [(c.username, c.state) for c in await alice.contacts()] == [("bob", "outgoing")]
    bob = store.user("bob")
    assert bob is not None
    assert [(c.username, c.state) for c in store.contacts(bob.id)] == [("alice", "incoming")]


async def test_asking_someone_whose_request_lands_in_the_gap_makes_contacts(
        directory: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    store = directory.store
    add_request = store.add_request

    def bob_asks_first(user_id: int, peer_id: int, now: int) -> Any:
        add_request(peer_id, user_id, now)  # bob's request, from another server process
        return add_request(user_id, peer_id, now)

    await registered(directory, "alice", "bob")
    async with directory.client("alice") as alice:
        await alice.login("alice", PASSWORD)
        monkeypatch.setattr(store, "add_request", bob_asks_first)
        asked = await alice.contact_request("bob")
        assert (asked.status, asked.body["state"]) == (200, "accepted")
        assert [(c.username, c.state) for c in await alice.contacts()] == [("bob", "accepted")]
    async with directory.client("bob") as bob:
        await bob.login("bob", PASSWORD)
        assert [(c.username, c.state) for c in await bob.contacts()] == [("alice", "accepted")]
