"""The directory's durable state: accounts, sessions, contacts.

:class:`SqlStore` holds every query once; :class:`Store` runs them on SQLite
(the embedded default) and :class:`overlay.directory.server.store_pg.PostgresStore` on
PostgreSQL (several server processes on one database).  :func:`open_store`
picks one from ``--db``.

SQLite settings and why:

- WAL journal: readers never block the writer, and a commit is one append.
- ``synchronous=FULL``: a commit returns only once the WAL is on disk, so every
  write the server acknowledged survives a crash (kill -9, power loss).
- ``foreign_keys=ON``: sessions and contacts cannot outlive their account.
- ``PRAGMA user_version`` records the schema version; :data:`MIGRATIONS` brings
  any older file up to date, each step in its own transaction.

Every query is parameterised.  The store is synchronous:
:class:`overlay.directory.server.service.Directory` calls it from worker threads, off
the event loop, at most :attr:`SqlStore.concurrency` at a time (one for SQLite,
whose single connection is not thread-safe by itself).  Presence is not stored
here: it lives as long as the client's connection, in memory.

A write that fails for want of space (a full disk, or the database at its size
limit) raises :class:`StorageFull` after rolling back, and the store goes on:
the next write that fits succeeds.

One module for one job, the schema and its queries (:class:`SqlStore`); the
SQLite engine around them (:class:`Store`: the connection, its settings, the
transactions) is small enough to sit beside them, and PostgreSQL's is in
:mod:`~overlay.directory.server.store_pg`.
"""

from __future__ import annotations

import errno
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from overlay.errors import ConfigError, OverlayError
from overlay.ids import NodeId

MIGRATIONS: tuple[str, ...] = (
    # version 1
    """
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        username      TEXT    NOT NULL UNIQUE,
        password_hash TEXT    NOT NULL,
        public_key    BLOB    NOT NULL,
        node_id       BLOB    NOT NULL,
        created_at    INTEGER NOT NULL,
        last_seen     INTEGER
    );
    CREATE TABLE sessions (
        token_hash BLOB    PRIMARY KEY,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        node_id    BLOB    NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_user ON sessions(user_id);
    -- (a, b, 'requested'): a asked b.  Accepted contacts are two rows, both 'accepted'.
    CREATE TABLE contacts (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        peer_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        state   TEXT    NOT NULL CHECK (state IN ('requested', 'accepted')),
        since   INTEGER NOT NULL,
        PRIMARY KEY (user_id, peer_id)
    );
    CREATE INDEX contacts_by_peer ON contacts(peer_id);
    """,
    # version 2: contact requests to names nobody has registered (yet), kept so that
    # asking for an unknown name looks exactly like asking an existing user
    """
    CREATE TABLE name_requests (
        user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        username TEXT    NOT NULL,
        since    INTEGER NOT NULL,
        PRIMARY KEY (user_id, username)
    );
    CREATE INDEX name_requests_by_name ON name_requests(username);
    """,
    # version 3: repair what a race left before version 3's locking (see _serialise):
    # a request to a name registered meanwhile (kept as a name request for a name
    # that now exists, seen by nobody) becomes that user's incoming request, and two
    # users who asked each other at once are contacts
    """
    INSERT INTO contacts (user_id, peer_id, state, since)
        SELECT n.user_id, u.id, 'requested', n.since
        FROM name_requests n JOIN users u ON u.username = n.username
        WHERE n.user_id <> u.id AND NOT EXISTS (
            SELECT 1 FROM contacts r WHERE r.user_id = u.id AND r.peer_id = n.user_id)
        ON CONFLICT (user_id, peer_id) DO NOTHING;
    DELETE FROM name_requests WHERE username IN (SELECT username FROM users);
    UPDATE contacts SET state = 'accepted' WHERE state = 'requested' AND EXISTS (
        SELECT 1 FROM contacts r
        WHERE r.user_id = contacts.peer_id AND r.peer_id = contacts.user_id)
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StoreError(OverlayError):
    """Family of the store's refusals that its caller answers (not bugs, not I/O faults)."""


class UsernameTaken(StoreError):
    """Another account has this username (the UNIQUE constraint said so)."""


class StorageFull(StoreError):
    """A write failed for want of space (SQLITE_FULL, ENOSPC): nothing of it was kept.

    The store stays usable: reads go on, and writes succeed again once there is
    room (``storage_full`` says whether the latest write failed this way).
    """


def is_storage_full(exc: BaseException) -> bool:
    """SQLITE_FULL, ENOSPC, or PostgreSQL's disk_full (SQLSTATE 53100)."""
    if getattr(exc, "sqlstate", None) == "53100":
        return True
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def is_unique_violation(exc: BaseException) -> bool:
    """A UNIQUE constraint refused the row, in either engine (SQLSTATE 23505)."""
    return isinstance(exc, sqlite3.IntegrityError) or getattr(exc, "sqlstate", None) == "23505"


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    password_hash: str
    public_key: bytes
    node_id: NodeId
    last_seen: int | None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    user: UserRecord
    node_id: NodeId
    expires_at: int


@dataclass(frozen=True, slots=True)
class ContactRecord:
    username: str
    state: str
    """'accepted', 'outgoing' (we asked) or 'incoming' (they asked)."""
    user_id: int | None
    """None for a request to a name nobody has registered."""


class Cursor(Protocol):
    """What both engines' cursors offer (sqlite3.Cursor, psycopg.Cursor)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


Execute = Callable[[str, tuple[object, ...]], Cursor]
"""Runs one parameterised statement (``?`` placeholders) inside the current transaction."""


class SqlStore(ABC):
    """The directory's queries, once, for any engine; subclasses say how to run them.

    Queries use ``?`` placeholders and SQL that SQLite and PostgreSQL both take
    (``RETURNING``, ``ON CONFLICT``), so there is one copy of the logic and the
    engines differ only in their schema scripts and connection handling.
    """

    engine: str
    """``sqlite`` or ``postgresql`` (for logs and ``--help``)."""
    concurrency: int = 1
    """How many worker threads may call the store at once."""
    storage_full: bool = False

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the data lives, without secrets (no password of a URL)."""

    @property
    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Execute]:
        """A durable read-write transaction: committed on exit, rolled back on error."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Execute]:
        """Reads outside any write transaction (each statement sees committed data)."""

    @abstractmethod
    def _serialise(self, execute: Execute, key: str) -> None:
        """Hold ``key`` until the current transaction ends: a transaction that looks
        and then writes (does the name exist? did they ask us already?) must not
        interleave with another writing the same thing, or a request is lost between
        them (two server processes, or two worker threads, at once)."""

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        """One statement in its own (durable) transaction; returns its row count."""
        with self._transaction() as execute:
            return execute(sql, params).rowcount

    def _one(self, sql: str, params: tuple[object, ...]) -> Any:
        with self._reading() as execute:
            return execute(sql, params).fetchone()

    # --- users -----------------------------------------------------------------------

    def create_user(self, username: str, password_hash: str, public_key: bytes,
                    now: int) -> UserRecord:
        """The new account; requests made to its name before it existed become its
        incoming requests, in the same transaction."""
        node_id = NodeId.from_public_key(public_key)
        try:
            with self._transaction() as execute:
                self._serialise(execute, _name_key(username))  # vs add_name_request
                row = execute(
                    "INSERT INTO users (username, password_hash, public_key, node_id,"
                    " created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (username, password_hash, public_key, node_id.raw, now),
                ).fetchone()
                user_id = int(row[0])
                execute(
                    "INSERT INTO contacts (user_id, peer_id, state, since)"
                    " SELECT user_id, ?, 'requested', since FROM name_requests"
                    " WHERE username = ?", (user_id, username),
                )
                execute("DELETE FROM name_requests WHERE username = ?", (username,))
        except Exception as exc:
            if is_unique_violation(exc):
                raise UsernameTaken(username) from None
            raise
        return UserRecord(user_id, username, password_hash, public_key, node_id, None)

    def user(self, username: str) -> UserRecord | None:
        row = self._one(
            "SELECT id, username, password_hash, public_key, node_id, last_seen"
            " FROM users WHERE username = ?", (username,),
        )
        return None if row is None else _user(row)

    def set_public_key(self, user_id: int, public_key: bytes) -> None:
        """A new device: rebind the account and end the sessions of the old key."""
        node_id = NodeId.from_public_key(public_key).raw
        with self._transaction() as execute:
            execute("UPDATE users SET public_key = ?, node_id = ? WHERE id = ?",
                    (public_key, node_id, user_id))
            execute("DELETE FROM sessions WHERE user_id = ? AND node_id != ?",
                    (user_id, node_id))

    def set_last_seen(self, user_id: int, now: int) -> None:
        self._write("UPDATE users SET last_seen = ? WHERE id = ?", (now, user_id))

    # --- sessions --------------------------------------------------------------------

    def create_session(self, token_hash: bytes, user_id: int, node_id: NodeId,
                       expires_at: int, now: int) -> None:
        with self._transaction() as execute:
            execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            execute(
                "INSERT INTO sessions (token_hash, user_id, node_id, expires_at)"
                " VALUES (?, ?, ?, ?)", (token_hash, user_id, node_id.raw, expires_at),
            )

    def session(self, token_hash: bytes) -> SessionRecord | None:
        row = self._one(
            "SELECT u.id, u.username, u.password_hash, u.public_key, u.node_id, u.last_seen,"
            " s.node_id, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.token_hash = ?", (token_hash,),
        )
        if row is None:
            return None
        return SessionRecord(_user(tuple(row[:6])), NodeId(bytes(row[6])), int(row[7]))

    def delete_session(self, token_hash: bytes) -> None:
        self._write("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    # --- contacts --------------------------------------------------------------------

    def contact_state(self, user_id: int, peer_id: int) -> str | None:
        """The row (user -> peer): 'requested', 'accepted' or None."""
        row = self._one("SELECT state FROM contacts WHERE user_id = ? AND peer_id = ?",
                        (user_id, peer_id))
        return None if row is None else str(row[0])

    def add_request(self, user_id: int, peer_id: int, now: int) -> bool:
        """``user_id`` asks ``peer_id``; True if that made them contacts instead, because
        ``peer_id`` had asked first (perhaps a moment ago, on another server process)."""
        with self._transaction() as execute:
            self._serialise(execute, _pair_key(user_id, peer_id))
            row = execute("SELECT state FROM contacts WHERE user_id = ? AND peer_id = ?",
                          (peer_id, user_id)).fetchone()
            if row is not None:
                self._accept_rows(execute, peer_id, user_id, now)
                return True
            execute("INSERT INTO contacts (user_id, peer_id, state, since)"
                    " VALUES (?, ?, 'requested', ?) ON CONFLICT (user_id, peer_id) DO NOTHING",
                    (user_id, peer_id, now))
            return False

    def accept(self, requester_id: int, acceptor_id: int, now: int) -> None:
        """Turn requester's request into a contact in both directions, atomically."""
        with self._transaction() as execute:
            self._serialise(execute, _pair_key(requester_id, acceptor_id))
            self._accept_rows(execute, requester_id, acceptor_id, now)

    @staticmethod
    def _accept_rows(execute: Execute, requester_id: int, acceptor_id: int,
                     now: int) -> None:
        execute("UPDATE contacts SET state = 'accepted', since = ?"
                " WHERE user_id = ? AND peer_id = ?", (now, requester_id, acceptor_id))
        execute("INSERT INTO contacts (user_id, peer_id, state, since)"
                " VALUES (?, ?, 'accepted', ?)"
                " ON CONFLICT (user_id, peer_id) DO UPDATE SET state = 'accepted', since = ?",
                (acceptor_id, requester_id, now, now))

    def name_requested(self, user_id: int, username: str) -> bool:
        """Whether ``user_id`` asked for ``username`` while nobody had that name."""
        row = self._one("SELECT 1 FROM name_requests WHERE user_id = ? AND username = ?",
                        (user_id, username))
        return row is not None

    def add_name_request(self, user_id: int, username: str, now: int) -> bool:
        """Keep a request to a name nobody has; False (nothing kept) if somebody
        registered it since the caller looked: then it is a request to that user."""
        with self._transaction() as execute:
            self._serialise(execute, _name_key(username))  # vs create_user
            if execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                return False
            execute("INSERT INTO name_requests (user_id, username, since) VALUES (?, ?, ?)"
                    " ON CONFLICT (user_id, username) DO NOTHING", (user_id, username, now))
            return True

    def remove_name_request(self, user_id: int, username: str) -> int:
        return self._write("DELETE FROM name_requests WHERE user_id = ? AND username = ?",
                           (user_id, username))

    def outgoing_requests(self, user_id: int) -> int:
        """Unanswered requests ``user_id`` made, to users and to unregistered names."""
        row = self._one(
            "SELECT (SELECT count(*) FROM contacts WHERE user_id = ? AND state = 'requested')"
            " + (SELECT count(*) FROM name_requests WHERE user_id = ?)", (user_id, user_id),
        )
        return int(row[0])

    def remove_pair(self, user_id: int, peer_id: int) -> int:
        """Delete whatever links the two users; returns how many rows there were."""
        return self._write(
            "DELETE FROM contacts WHERE (user_id = ? AND peer_id = ?)"
            " OR (user_id = ? AND peer_id = ?)", (user_id, peer_id, peer_id, user_id),
        )

    def contacts(self, user_id: int) -> list[ContactRecord]:
        with self._reading() as execute:
            rows = execute(
                "SELECT u.username, c.state, u.id FROM contacts c"
                " JOIN users u ON u.id = c.peer_id WHERE c.user_id = ?"
                " UNION ALL"
                " SELECT u.username, 'incoming', u.id FROM contacts c"
                " JOIN users u ON u.id = c.user_id WHERE c.peer_id = ? AND c.state = 'requested'"
                " UNION ALL"
                " SELECT username, 'requested', NULL FROM name_requests WHERE user_id = ?"
                " ORDER BY 1", (user_id, user_id, user_id),
            ).fetchall()
        return [ContactRecord(name, "outgoing" if state == "requested" else state,
                              None if uid is None else int(uid))
                for name, state, uid in rows]


class Store(SqlStore):
    """One SQLite database file (``:memory:`` works for tests of the logic)."""

    engine = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.storage_full = False
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, explicitly.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot use database {path}: {exc}") from None

    @property
    def description(self) -> str:
        return f"SQLite {self.path}"

    def close(self) -> None:
        self._db.close()

    @property
    def schema_version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        return version

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"database {self.path} has schema version {version}, newer than this "
                f"program's {SCHEMA_VERSION}: upgrade overlay"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction() as execute:
                for statement in script.split(";"):
                    if statement.strip():
                        execute(statement, ())
                execute(f"PRAGMA user_version = {int(number)}", ())

    @contextmanager
    def _transaction(self) -> Iterator[Execute]:
        """BEGIN IMMEDIATE ... COMMIT (durable: synchronous=FULL), or ROLLBACK on error.

        A full disk (or a database at its size limit) fails the statement or the
        COMMIT with SQLITE_FULL; SQLite may already have rolled back by then, so
        ROLLBACK runs only if a transaction is still open, and the error becomes
        :class:`StorageFull`.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db.execute
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if is_storage_full(exc):
                self.storage_full = True
                raise StorageFull(str(exc)) from None
            raise
        self.storage_full = False

    @contextmanager
    def _reading(self) -> Iterator[Execute]:
        yield self._db.execute

    def _serialise(self, execute: Execute, key: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already makes every write transaction of the
        file wait for the one before it, whatever it touches."""


def _name_key(username: str) -> str:
    return f"name:{username}"


def _pair_key(a: int, b: int) -> str:
    return f"pair:{min(a, b)}:{max(a, b)}"


def _user(row: tuple[object, ...]) -> UserRecord:
    user_id, username, password_hash, public_key, node_id, last_seen = row
    assert isinstance(user_id, int) and isinstance(username, str)
    assert isinstance(password_hash, str) and isinstance(public_key, bytes | memoryview)
    assert isinstance(node_id, bytes | memoryview)
    assert last_seen is None or isinstance(last_seen, int)
    return UserRecord(user_id, username, password_hash, bytes(public_key),
                      NodeId(bytes(node_id)), last_seen)


def open_store(where: Path | str) -> SqlStore:
    """The store ``--db`` names: a ``postgresql://`` URL, or else a SQLite file path."""
    text = str(where)
    if text.startswith(POSTGRES_SCHEMES):
        from overlay.directory.server.store_pg import PostgresStore  # psycopg only when used
        return PostgresStore(text)
    return Store(where)
