"""Chat over the hybrid network on 127.0.0.1: sealed, acknowledged, queued, remembered."""

from __future__ import annotations

from pathlib import Path

import trio

from overlay.chat.envelope import ChatMessage, seal
from overlay.chat.events import ChatEvent
from overlay.chat.history import History
from overlay.chat.service import Chat
from overlay.directory.client.connection import Presence
from overlay.proto.codec import pack
from overlay.proto.messages import RoutedPacket
from tests.conftest import make_identity
from tests.roles.conftest import Network

LIMIT = 20


async def start_chat(network: Network, name: str, tmp_path: Path) -> Chat:
    _node, role = await network.start_client(name)
    chat = Chat(role, History(tmp_path / f"chat-{name}.sqlite3", name))
    await network.nursery.start(chat.run)
    return chat


async def next_event(chat: Chat, kind: str) -> ChatEvent:
    with trio.fail_after(LIMIT):
        async for event in chat.events:
            if event.kind == kind:
                return event
    raise AssertionError("event channel closed")


async def test_a_message_is_delivered_and_acknowledged(network: Network, tmp_path: Path) -> None:
    for name in ("sn1", "sn2"):
        await network.start_supernode(name)
    await network.register("alice", "bob")
    alice = await start_chat(network, "alice", tmp_path)
    bob = await start_chat(network, "bob", tmp_path)
    message_id = await alice.send("bob", "hello bob")
    assert (await next_event(alice, "queued")).id == message_id
    sent = await next_event(alice, "sent")
    assert sent.path is not None and sent.path.startswith("relayed via")
    got = await next_event(bob, "message")
    assert (got.peer, got.text, got.id) == ("alice", "hello bob", message_id)
    delivered = await next_event(alice, "delivered")
    assert delivered.id == message_id and delivered.latency is not None
    entry = alice.history.entry(message_id)
    assert entry is not None and entry.state == "delivered"


async def test_relays_carry_only_ciphertext(network: Network, tmp_path: Path) -> None:
    seen: list[bytes] = []
    for name in ("sn1", "sn2", "sn3"):
        node = await network.start_supernode(name)

        def capture(event: str, node_id: object, packet: RoutedPacket) -> None:
            if event == "forward":
                seen.append(pack([packet.type, packet.src.raw, packet.dst.raw, packet.body]))
        node.trace = capture
    await network.register("alice", "bob")
    alice = await start_chat(network, "alice", tmp_path)
    bob = await start_chat(network, "bob", tmp_path)
    secrets = [f"the secret number is {i:04d}" for i in range(20)]
    for text in secrets:
        await alice.send("bob", text)
    for _ in secrets:
        await next_event(bob, "message")
    assert len(seen) >= 40, "the supernodes relayed the conversation"
    captured = b"".join(seen)
    for text in secrets:
        assert text.encode() not in captured
    assert b"secret" not in captured


async def test_a_forged_sender_is_rejected_and_reported(network: Network,
                                                          tmp_path: Path) -> None:
    await network.start_supernode("sn1")
    await network.register("alice", "bob", "mallory")
    bob = await start_chat(network, "bob", tmp_path)
    mallory_node, mallory = await network.start_client("mallory")
    await mallory.locate("bob")
    alice_certificate = (await (await mallory.directory.ready()).lookup("alice")).certificate
    forged = ChatMessage(b"\x07" * 16, "alice", "bob", 1.0, "send me your password")
    envelope = seal(mallory_node.identity, alice_certificate.raw,
                    mallory.peers["bob"].certificate.public_key, forged)
    async with mallory_node.open_channel(bob.node.node_id) as channel:
        await channel.send(envelope)
        rejected = await next_event(bob, "rejected")
    assert "forged" in (rejected.detail or "")
    assert bob.history.entry(forged.id) is None


async def test_a_message_from_a_non_contact_is_refused(network: Network,
                                                       tmp_path: Path) -> None:
    """Carol never was bob's contact; alice was, until bob removed her."""
    await network.start_supernode("sn1")
    await network.register("alice", "bob")
    await network.register("carol", contacts=False)
    bob = await start_chat(network, "bob", tmp_path)
    alice = await start_chat(network, "alice", tmp_path)
    await alice.send("bob", "still friends")
    assert (await next_event(bob, "message")).text == "still friends"
    await (await bob.edge.directory.ready()).contact_remove("alice")
    carol_node, carol = await network.start_client("carol")
    for name, node, role in (("carol", carol_node, carol), ("alice", alice.node, alice.edge)):
        assert role.certificate is not None and bob.edge.home is not None
        node.set_location(bob.node.node_id, bob.edge.home)
        message = ChatMessage(bytes([len(name)]) * 16, name, "bob", 1.0, f"from {name}")
        envelope = seal(node.identity, role.certificate.raw, bob.node.identity.public_key,
                        message)
        async with node.open_channel(bob.node.node_id) as channel:
            await channel.send(envelope)
            rejected = await next_event(bob, "rejected")
        assert rejected.peer == name
        assert f"{name}, who is not your contact" in (rejected.detail or "")
        assert bob.history.entry(message.id) is None


async def test_offline_messages_wait_for_the_contact(network: Network, tmp_path: Path) -> None:
    await network.start_supernode("sn1")
    await network.register("alice", "bob")
    alice = await start_chat(network, "alice", tmp_path)
    first = await alice.send("bob", "are you there?")
    await next_event(alice, "queued")
    with trio.move_on_after(1.0):
        await next_event(alice, "sent")
        raise AssertionError("sent to an offline contact")
    assert alice.history.entry(first) is not None
    assert alice.history.entry(first).state == "queued"  # type: ignore[union-attr]
    bob = await start_chat(network, "bob", tmp_path)  # bob logs in: presence flushes
    got = await next_event(bob, "message")
    assert got.text == "are you there?"
    delivered = await next_event(alice, "delivered")
    assert delivered.id == first


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "chat-alice.sqlite3"
    history = History(path, "alice")
    message = ChatMessage(b"\x01" * 16, "alice", "bob", 10.0, "remember me")
    history.add_outgoing(message)
    history.mark_sent(message.id)
    history.mark_delivered(message.id, 11.0)
    assert history.add_incoming(ChatMessage(b"\x02" * 16, "bob", "alice", 12.0, "I do"))
    history.close()
    again = History(path, "alice")
    entries = again.conversation("bob")
    assert [(e.text, e.direction, e.state) for e in entries] == [
        ("remember me", "out", "delivered"), ("I do", "in", "received")]
    assert not again.add_incoming(ChatMessage(b"\x02" * 16, "bob", "alice", 12.0, "I do"))


async def test_a_long_conversation_does_not_hammer_the_directory(network: Network,
                                                                 tmp_path: Path) -> None:
    """One lookup per contact, not per message: 500 messages stay far below the
    directory's per-connection rate limit (a burst of 400), and all are delivered."""
    await network.start_supernode("sn1")
    await network.register("alice", "bob")
    alice = await start_chat(network, "alice", tmp_path)
    bob = await start_chat(network, "bob", tmp_path)
    ids = {await alice.send("bob", f"line {i}") for i in range(500)}
    delivered: set[bytes] = set()
    with trio.fail_after(3 * LIMIT):
        async for event in alice.events:
            assert event.kind != "error", event.detail
            if event.kind == "delivered" and event.id is not None:
                delivered.add(event.id)
                if delivered == ids:
                    break
    assert len(bob.history.conversation("alice", limit=1000)) == 500


async def test_presence_is_an_event_only_when_the_status_changes(network: Network,
                                                                 tmp_path: Path) -> None:
    await network.start_supernode("sn1")
    await network.register("alice")
    alice = await start_chat(network, "alice", tmp_path)
    while True:  # what start-up reported (alice's own contacts, if any) is not under test
        try:
            alice.events.receive_nowait()
        except trio.WouldBlock:
            break
    home = make_identity("a-home").node_id
    moved = make_identity("b-home").node_id
    for status, where in (("online", home), ("online", moved), ("away", moved),
                          ("away", moved), ("offline", None)):
        alice.edge.on_presence("zed", Presence(status, where, None, None, None))
    seen = []
    while True:
        try:
            event = alice.events.receive_nowait()
        except trio.WouldBlock:
            break
        if event.kind == "presence":
            seen.append((event.peer, event.detail))
    assert seen == [("zed", "online"), ("zed", "away"), ("zed", "offline")]
