"""A user's chat history in SQLite: what was sent and received, and how far each got.

One file per user (``chat-USER.sqlite3`` in the node's state directory), so
history survives restarts.  Outgoing messages move ``queued`` -> ``sent``
(handed to the reliable channel) -> ``delivered`` (the recipient's receipt came
back); incoming ones are ``received``.  The message id is the primary key, so
a message that arrives twice (a retransmission after a failover, a replay) is
stored and shown once.

:class:`History` is blocking, like the directory's store: the chat engine
calls it from a worker thread (:class:`overlay.blocking.WorkerThreads`, one
call at a time), never on the event loop.  The connection is opened by the
first call, so in that thread too, and is used by one thread at a time.

Durability (docs/chat.md, "History on disk"): WAL with ``synchronous=FULL``, every
write one statement in its own transaction, so each is on disk before the
call returns.  Three writes per message, each because something is
acknowledged on the strength of it:

* the sender's ``INSERT`` (*queued*): the user's words, on disk before
  anything is sent, so a crash never loses a message the user was told is
  queued;
* the recipient's ``INSERT`` (*received*): on disk before the receipt goes
  back, because the receipt says "stored";
* the sender's ``UPDATE`` to *delivered*, which returns the row it changed
  (``RETURNING``), so marking and reading back are one statement.

*sent* is not written: it means "in a reliable channel of this process", and
a channel dies with its process; a restarted client queues every undelivered
message again anyway.  So it lives in memory (:meth:`History.mark_sent`) and
only shows in what :meth:`History.entry` and :meth:`History.conversation`
return.  Rows an older version stored as ``sent`` read as queued.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
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
UNDELIVERED = "('queued', 'sent')"
"""Outgoing states on disk that are not delivered yet (``sent`` only in older files)."""
COLUMNS = "id, peer, direction, text, sent_at, state, delivered_at"


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
    """One user's history file; blocking: call it from one worker thread at a time."""

    def __init__(self, path: Path | str, username: str, *,
                 trace: Callable[[str], None] | None = None) -> None:
        """``trace``, if given, sees every SQL statement as it runs (in the thread that
        runs it): for tests and debugging."""
        self.username = username
        self.path = path
        self._trace = trace
        self._db: sqlite3.Connection | None = None
        self._in_channel: set[bytes] = set()
        """Messages handed to a reliable channel of this process and not delivered yet:
        the *sent* state (see the module docstring)."""

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                if self._trace is not None:
                    db.set_trace_callback(self._trace)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise ConfigError(f"cannot use chat history {self.path}: {exc}") from None
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- writes (each one durable transaction) ---------------------------------------------

    def add_outgoing(self, message: ChatMessage) -> None:
        self._connection().execute(
            "INSERT INTO messages (id, peer, direction, text, sent_at, state)"
            " VALUES (?, ?, 'out', ?, ?, 'queued')",
            (message.id, message.recipient, message.text, message.sent_at))

    def add_incoming(self, message: ChatMessage) -> bool:
        """Store a received message; False if it was already there (a duplicate)."""
        cursor = self._connection().execute(
            "INSERT OR IGNORE INTO messages (id, peer, direction, text, sent_at, state)"
            " VALUES (?, ?, 'in', ?, ?, 'received')",
            (message.id, message.sender, message.text, message.sent_at))
        return cursor.rowcount == 1

    def mark_delivered(self, message_id: bytes, at: float, *, peer: str | None = None,
                       ) -> Entry | None:
        """The receipt came: the entry as it is now, or None if it is not an outgoing
        message of ours (to ``peer``, when given).  A second receipt changes nothing and
        returns the entry as the first left it."""
        match = "id = ? AND direction = 'out'"
        params: tuple[bytes | str, ...] = (message_id,)
        if peer is not None:
            match += " AND peer = ?"
            params += (peer,)
        db = self._connection()
        # fetchall, not fetchone: the statement must run to its end to commit.
        rows = db.execute(f"UPDATE messages SET state = 'delivered', delivered_at = ?"
                          f" WHERE {match} AND state != 'delivered' RETURNING {COLUMNS}",
                          (at, *params)).fetchall()
        if not rows:
            rows = db.execute(f"SELECT {COLUMNS} FROM messages WHERE {match}",
                              params).fetchall()
        if not rows:
            return None
        self._in_channel.discard(message_id)
        return self._entry(rows[0])

    # --- in a channel, or back in the queue (memory only) ---------------------------------

    def mark_sent(self, message_id: bytes) -> None:
        """Handed to a reliable channel: not sent again unless queued again."""
        self._in_channel.add(message_id)

    def mark_queued(self, message_id: bytes) -> None:
        self._in_channel.discard(message_id)

    def requeue(self, peer: str | None = None) -> list[ChatMessage]:
        """The channels (to ``peer``, or all) died: every undelivered message to them is
        queued again; returns them, oldest first."""
        messages = self.pending(peer)
        if peer is None:
            self._in_channel.clear()
        self._in_channel.difference_update(message.id for message in messages)
        return messages

    # --- reads -------------------------------------------------------------------------------

    def entry(self, message_id: bytes) -> Entry | None:
        row = self._connection().execute(
            f"SELECT {COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
        return None if row is None else self._entry(row)

    def pending(self, peer: str | None = None, *, only_queued: bool = False,
                ) -> list[ChatMessage]:
        """Outgoing messages not yet delivered, oldest first (to ``peer``, or to anyone);
        ``only_queued``: not even handed to a channel yet."""
        query = ("SELECT id, peer, text, sent_at FROM messages"
                 f" WHERE direction = 'out' AND state IN {UNDELIVERED}")
        params: tuple[str, ...] = ()
        if peer is not None:
            query += " AND peer = ?"
            params = (peer,)
        rows = self._connection().execute(query + " ORDER BY sent_at", params).fetchall()
        return [ChatMessage(mid, self.username, to, sent_at, text)
                for mid, to, text, sent_at in rows
                if not (only_queued and mid in self._in_channel)]

    def conversation(self, peer: str, limit: int = 50) -> list[Entry]:
        """The last ``limit`` messages with ``peer``, oldest first."""
        rows = self._connection().execute(
            f"SELECT {COLUMNS} FROM messages"
            " WHERE peer = ? ORDER BY sent_at DESC LIMIT ?", (peer, limit)).fetchall()
        return [self._entry(row) for row in reversed(rows)]

    def _entry(self, row: tuple[bytes, str, str, str, float, str, float | None]) -> Entry:
        entry = Entry(*row)
        if entry.state in ("queued", "sent"):
            return replace(entry, state="sent" if entry.id in self._in_channel else "queued")
        return entry
