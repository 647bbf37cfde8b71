"""Chat history: off the event loop, three durable writes per message, *sent* in memory."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from overlay.chat.envelope import ChatMessage
from overlay.chat.history import History
from overlay.chat.service import Chat
from tests.chat.test_chat import next_event
from tests.roles.conftest import Network

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


@dataclass
class Statements:
    """Every statement one history ran, with the thread that ran it."""

    seen: list[tuple[int, str]] = field(default_factory=list)

    def __call__(self, sql: str) -> None:
        self.seen.append((threading.get_ident(), " ".join(sql.split())))

    @property
    def threads(self) -> set[int]:
        return {thread for thread, _ in self.seen}

    def writes(self, since: int = 0) -> list[str]:
        """The statements that change the file (as run: values in place of ``?``)."""
        return [sql for _, sql in self.seen[since:] if sql.upper().startswith(WRITES)]


async def traced_chat(network: Network, name: str, tmp_path: Path,
                      ) -> tuple[Chat, Statements]:
    _node, role = await network.start_client(name)
    statements = Statements()
    chat = Chat(role, History(tmp_path / f"chat-{name}.sqlite3", name, trace=statements))
    await network.nursery.start(chat.run)
    return chat, statements


async def test_history_work_runs_off_the_event_loop(network: Network, tmp_path: Path) -> None:
    """Opening the file, writing and reading it: all in worker threads, never in trio's."""
    loop_thread = threading.get_ident()
    await network.start_supernode("sn1")
    await network.register("alice", "bob")
    alice, alice_sql = await traced_chat(network, "alice", tmp_path)
    bob, bob_sql = await traced_chat(network, "bob", tmp_path)
    message_id = await alice.send("bob", "off the loop")
    assert (await next_event(bob, "message")).id == message_id
    assert (await next_event(alice, "delivered")).id == message_id
    assert [entry.text for entry in await bob.conversation("alice")] == ["off the loop"]
    assert await alice.pending() == []
    for statements in (alice_sql, bob_sql):
        assert any(sql.startswith("PRAGMA journal_mode") for _, sql in statements.seen)
        assert statements.writes(), "the history was written"
        assert loop_thread not in statements.threads


async def test_each_message_is_one_durable_write_per_step(network: Network,
                                                         tmp_path: Path) -> None:
    """Sender: the queued INSERT and the delivered UPDATE; recipient: one INSERT; no write
    for *sent*.  Each is committed (another connection sees it) when its event comes."""
    await network.start_supernode("sn1")
    await network.register("alice", "bob")
    alice, alice_sql = await traced_chat(network, "alice", tmp_path)
    bob, bob_sql = await traced_chat(network, "bob", tmp_path)
    for text in ("first", "second"):
        alice_start, bob_start = len(alice_sql.seen), len(bob_sql.seen)
        message_id = await alice.send("bob", text)
        assert (await next_event(alice, "sent")).id == message_id
        assert (await next_event(bob, "message")).id == message_id
        assert read_state(tmp_path / "chat-bob.sqlite3", text) == "received"
        assert (await next_event(alice, "delivered")).id == message_id
        assert read_state(tmp_path / "chat-alice.sqlite3", text) == "delivered"
        queued, delivered = alice_sql.writes(alice_start)  # exactly two
        assert queued.startswith("INSERT INTO messages") and "'queued'" in queued
        assert delivered.startswith("UPDATE messages SET state = 'delivered'")
        assert "RETURNING" in delivered  # marking and reading back: one statement
        [received] = bob_sql.writes(bob_start)
        assert received.startswith("INSERT OR IGNORE INTO messages") and "'received'" in received
    for statements in (alice_sql, bob_sql):
        pragmas = [sql for _, sql in statements.seen if sql.startswith("PRAGMA")]
        assert pragmas == ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"]


def read_state(path: Path, text: str) -> str | None:
    """The state of message ``text`` as another connection (another process) sees it."""
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT state FROM messages WHERE text = ?", (text,)).fetchone()
    return None if row is None else str(row[0])


def test_sent_lives_in_memory_and_a_restart_queues_it_again(tmp_path: Path) -> None:
    path = tmp_path / "chat-alice.sqlite3"
    history = History(path, "alice")
    message = ChatMessage(b"\x01" * 16, "alice", "bob", 10.0, "in a channel")
    history.add_outgoing(message)
    history.mark_sent(message.id)
    assert history.entry(message.id).state == "sent"  # type: ignore[union-attr]
    assert history.pending("bob", only_queued=True) == []
    assert history.pending("bob") == [message]
    assert [m.id for m in history.requeue("carol")] == []
    assert history.entry(message.id).state == "sent"  # type: ignore[union-attr]
    assert history.requeue("bob") == [message]
    assert history.pending("bob", only_queued=True) == [message]
    history.mark_sent(message.id)
    history.close()
    again = History(path, "alice")
    assert again.entry(message.id).state == "queued"  # type: ignore[union-attr]
    assert again.pending(only_queued=True) == [message]
    again.close()


def test_a_receipt_marks_only_our_message_to_that_peer(tmp_path: Path) -> None:
    history = History(tmp_path / "chat-alice.sqlite3", "alice")
    ours = ChatMessage(b"\x01" * 16, "alice", "bob", 10.0, "to bob")
    theirs = ChatMessage(b"\x02" * 16, "bob", "alice", 11.0, "from bob")
    history.add_outgoing(ours)
    history.mark_sent(ours.id)
    assert history.add_incoming(theirs)
    assert history.mark_delivered(ours.id, 12.0, peer="mallory") is None
    assert history.mark_delivered(theirs.id, 12.0, peer="bob") is None
    assert history.entry(ours.id).state == "sent"  # type: ignore[union-attr]
    first = history.mark_delivered(ours.id, 12.0, peer="bob")
    assert first is not None and (first.state, first.delivered_at) == ("delivered", 12.0)
    assert history.mark_delivered(ours.id, 13.0, peer="bob") == first  # a second receipt
    assert history.pending() == []
    history.close()


def test_a_file_an_older_version_left_in_state_sent_reads_as_queued(tmp_path: Path) -> None:
    """Older versions stored *sent*; such a message was in a channel of a process that has
    exited, so it is queued."""
    path = tmp_path / "chat-alice.sqlite3"
    created = History(path, "alice")
    assert created.pending() == []  # creates the schema
    created.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO messages (id, peer, direction, text, sent_at, state)"
                   " VALUES (?, 'bob', 'out', 'old', 1.0, 'sent')", (b"\x03" * 16,))
    history = History(path, "alice")
    assert [m.text for m in history.pending("bob", only_queued=True)] == ["old"]
    assert history.entry(b"\x03" * 16).state == "queued"  # type: ignore[union-attr]
    assert history.mark_delivered(b"\x03" * 16, 2.0, peer="bob") is not None
    history.close()
