"""A user's chat history in SQLite: what was sent and received, and how far each got.

One file per user (``chat-USER.sqlite3`` in the node's state directory), so
history survives restarts.  Outgoing messages move ``queued`` -> ``sent``
(handed to the reliable channel) -> ``delivered`` (the recipient's receipt came
back); incoming ones are ``received``.  The message id is the primary key, so
a message that arrives twice (a retransmission after a failover, a replay) is
stored and shown once.  WAL with ``synchronous=FULL``: a message the user typed
is on disk before it is sent, so a crash never loses it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from overlay.chat.envelope import ChatMessage
from overlay.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id           BLOB PRIMARY KEY,
    peer         TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('out', 'in')),
    text         TEXT NOT NULL,
    sent_at      REAL NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'delivered', 'received')),
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS messages_by_peer ON messages (peer, sent_at);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    id: bytes
    peer: str
    direction: str
    text: str
    sent_at: float
    state: str
    delivered_at: float | None


class History:
    def __init__(self, path: Path | str, username: str) -> None:
        self.username = username
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot use chat history {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def add_outgoing(self, message: ChatMessage) -> None:
        self._db.execute(
            "INSERT INTO messages (id, peer, direction, text, sent_at, state)"
            " VALUES (?, ?, 'out', ?, ?, 'queued')",
            (message.id, message.recipient, message.text, message.sent_at))

    def add_incoming(self, message: ChatMessage) -> bool:
        """Store a received message; False if it was already there (a duplicate)."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO messages (id, peer, direction, text, sent_at, state)"
            " VALUES (?, ?, 'in', ?, ?, 'received')",
            (message.id, message.sender, message.text, message.sent_at))
        return cursor.rowcount == 1

    def mark_sent(self, message_id: bytes) -> None:
        self._db.execute("UPDATE messages SET state = 'sent'"
                         " WHERE id = ? AND state = 'queued'", (message_id,))

    def mark_queued(self, message_id: bytes) -> None:
        self._db.execute("UPDATE messages SET state = 'queued'"
                         " WHERE id = ? AND state = 'sent'", (message_id,))

    def mark_delivered(self, message_id: bytes, at: float) -> Entry | None:
        """The receipt came: the entry as it is now, or None if it is not ours."""
        self._db.execute(
            "UPDATE messages SET state = 'delivered', delivered_at = ?"
            " WHERE id = ? AND direction = 'out' AND state != 'delivered'", (at, message_id))
        return self.entry(message_id)

    def entry(self, message_id: bytes) -> Entry | None:
        row = self._db.execute(
            "SELECT id, peer, direction, text, sent_at, state, delivered_at FROM messages"
            " WHERE id = ?", (message_id,)).fetchone()
        return None if row is None else Entry(*row)

    def pending(self, peer: str | None = None, *, only_queued: bool = False,
                ) -> list[ChatMessage]:
        """Outgoing messages not yet delivered, oldest first (to ``peer``, or to anyone);
        ``only_queued``: not even handed to a channel yet."""
        states = "('queued')" if only_queued else "('queued', 'sent')"
        query = ("SELECT id, peer, text, sent_at FROM messages"
                 f" WHERE direction = 'out' AND state IN {states}")
        params: tuple[str, ...] = ()
        if peer is not None:
            query += " AND peer = ?"
            params = (peer,)
        rows = self._db.execute(query + " ORDER BY sent_at", params).fetchall()
        return [ChatMessage(mid, self.username, to, sent_at, text)
                for mid, to, text, sent_at in rows]

    def conversation(self, peer: str, limit: int = 50) -> list[Entry]:
        """The last ``limit`` messages with ``peer``, oldest first."""
        rows = self._db.execute(
            "SELECT id, peer, direction, text, sent_at, state, delivered_at FROM messages"
            " WHERE peer = ? ORDER BY sent_at DESC LIMIT ?", (peer, limit)).fetchall()
        return [Entry(*row) for row in reversed(rows)]
