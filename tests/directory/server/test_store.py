"""The stores: settings, migrations, contact bookkeeping (on SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import psycopg
import pytest

from overlay.directory.server.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SqlStore,
    Store,
    UsernameTaken,
    UserRecord,
    open_store,
)
from overlay.directory.server.store_pg import MIGRATIONS_PG, PostgresStore, redact
from overlay.errors import ConfigError
from tests.conftest import make_identity
from tests.directory.postgres import Cluster


def test_settings_and_schema(tmp_path: Path) -> None:
    store = Store(tmp_path / "d.sqlite3")
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.schema_version == SCHEMA_VERSION
    store.close()
    reopened = Store(tmp_path / "d.sqlite3")  # migrating again is a no-op
    assert reopened.schema_version == SCHEMA_VERSION
    reopened.close()


def test_a_newer_schema_is_refused_not_damaged(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="newer than this program"):
        Store(path)


def test_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="cannot use database"):
        Store(path)


def test_contacts_bookkeeping(store: SqlStore) -> None:
    alice = store.create_user("alice", "h", make_identity("alice").public_key, 1)
    bob = store.create_user("bob", "h", make_identity("bob").public_key, 1)
    with pytest.raises(UsernameTaken):
        store.create_user("alice", "h", make_identity("x").public_key, 1)
    store.add_request(alice.id, bob.id, 2)
    assert [(c.username, c.state) for c in store.contacts(bob.id)] == [("alice", "incoming")]
    assert [(c.username, c.state) for c in store.contacts(alice.id)] == [("bob", "outgoing")]
    store.accept(alice.id, bob.id, 3)
    assert store.contact_state(alice.id, bob.id) == store.contact_state(bob.id, alice.id) \
        == "accepted"
    assert store.remove_pair(bob.id, alice.id) == 2
    assert store.contacts(alice.id) == store.contacts(bob.id) == []


def test_a_new_key_ends_the_old_keys_sessions(store: SqlStore) -> None:
    old, new = make_identity("old"), make_identity("new")
    alice = store.create_user("alice", "h", old.public_key, 1)
    store.create_session(b"t" * 32, alice.id, old.node_id, 100, 1)
    store.set_public_key(alice.id, new.public_key)
    assert store.session(b"t" * 32) is None
    user = store.user("alice")
    assert user is not None and user.node_id == new.node_id


def test_name_requests_become_the_new_users_requests(store: SqlStore) -> None:
    alice = store.create_user("alice", "h", make_identity("alice").public_key, 1)
    store.add_name_request(alice.id, "bob", 2)
    assert store.name_requested(alice.id, "bob") and store.outgoing_requests(alice.id) == 1
    bob = store.create_user("bob", "h", make_identity("bob").public_key, 3)
    assert [(c.username, c.state, c.user_id) for c in store.contacts(bob.id)] == \
        [("alice", "incoming", alice.id)]
    assert not store.name_requested(alice.id, "bob")
    assert store.contact_state(alice.id, bob.id) == "requested"


def test_a_name_registered_since_the_caller_looked_is_not_kept_as_a_name_request(
        store: SqlStore) -> None:
    # The service looked up "bob" (nobody), then bob registered, then it stores the
    # request: kept as a name request it would never reach bob (registration converted
    # the requests it found, and this one was not there yet).
    alice = store.create_user("alice", "h", make_identity("alice").public_key, 1)
    bob = store.create_user("bob", "h", make_identity("bob").public_key, 2)
    assert store.add_name_request(alice.id, "bob", 3) is False
    assert not store.name_requested(alice.id, "bob")
    assert store.contacts(alice.id) == store.contacts(bob.id) == []
    assert store.add_name_request(alice.id, "carol", 3) is True


def test_asking_someone_who_asked_us_makes_contacts(store: SqlStore) -> None:
    alice = store.create_user("alice", "h", make_identity("alice").public_key, 1)
    bob = store.create_user("bob", "h", make_identity("bob").public_key, 1)
    assert store.add_request(alice.id, bob.id, 2) is False
    assert store.add_request(bob.id, alice.id, 3) is True  # both asked: a yes, not two asks
    assert [(c.username, c.state) for c in store.contacts(alice.id)] == [("bob", "accepted")]
    assert [(c.username, c.state) for c in store.contacts(bob.id)] == [("alice", "accepted")]


@pytest.mark.postgres
def test_concurrent_asks_and_registrations_on_postgres_lose_no_request(
        postgres_cluster: Cluster) -> None:
    """Two server processes' transactions at once (threads on the pool, a barrier to
    line them up): each round ends with one contact, or one request the new user sees."""
    store = PostgresStore(postgres_cluster.url(postgres_cluster.fresh_schema()))

    def at_once(*calls: Callable[[], object]) -> list[object]:
        barrier = threading.Barrier(len(calls))

        def lined_up(call: Callable[[], object]) -> object:
            barrier.wait(timeout=10)
            return call()

        with ThreadPoolExecutor(len(calls)) as pool:
            futures = [pool.submit(lined_up, call) for call in calls]
            return [future.result(timeout=30) for future in futures]

    try:
        for i in range(15):
            a = store.create_user(f"a{i}", "h", make_identity(f"a{i}").public_key, 1)
            b = store.create_user(f"b{i}", "h", make_identity(f"b{i}").public_key, 1)
            outcomes = at_once(partial(store.add_request, a.id, b.id, 2),
                               partial(store.add_request, b.id, a.id, 2))
            assert sorted(outcomes) == [False, True]  # one asked, the other's ask was a yes
            assert store.contact_state(a.id, b.id) == store.contact_state(b.id, a.id) \
                == "accepted"
            name = f"new{i}"
            kept, new = at_once(
                partial(store.add_name_request, a.id, name, 2),
                partial(store.create_user, name, "h", make_identity(name).public_key, 2))
            assert isinstance(new, UserRecord)
            # Kept first: the registration converted it.  Registered first: nothing kept
            # (the service then asks the user).  Never a name request nobody sees.
            assert store.contact_state(a.id, new.id) == ("requested" if kept else None)
            assert not store.name_requested(a.id, name)
    finally:
        store.close()


def test_version_3_repairs_what_the_race_left_in_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    with sqlite3.connect(path) as db:  # a version 2 file, as the race left it
        for script in MIGRATIONS[:2]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 2")
        for uid, name in ((1, "alice"), (2, "bob"), (3, "carol"), (4, "dave")):
            db.execute("INSERT INTO users VALUES (?, ?, 'h', x'00', x'00', 1, NULL)",
                       (uid, name))
        db.execute("INSERT INTO name_requests VALUES (1, 'bob', 5)")  # bob never saw it
        db.execute("INSERT INTO name_requests VALUES (1, 'erin', 5)")  # still nobody
        db.execute("INSERT INTO contacts VALUES (3, 4, 'requested', 6)")  # asked at once
        db.execute("INSERT INTO contacts VALUES (4, 3, 'requested', 6)")
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    assert [(c.username, c.state) for c in store.contacts(2)] == [("alice", "incoming")]
    assert [(c.username, c.state) for c in store.contacts(1)] == \
        [("bob", "outgoing"), ("erin", "outgoing")]
    assert store.name_requested(1, "erin") and not store.name_requested(1, "bob")
    assert [(c.username, c.state) for c in store.contacts(3)] == [("dave", "accepted")]
    assert [(c.username, c.state) for c in store.contacts(4)] == [("carol", "accepted")]
    store.close()


def test_both_engines_have_every_schema_version() -> None:
    assert len(MIGRATIONS_PG) == len(MIGRATIONS) == SCHEMA_VERSION


def test_postgres_settings_and_schema(postgres_cluster: Cluster) -> None:
    url = postgres_cluster.url(postgres_cluster.fresh_schema())
    with psycopg.connect(url, autocommit=True) as admin:  # a careless role default
        admin.execute("ALTER ROLE overlay SET synchronous_commit = off")
    try:
        store = open_store(url)
        assert isinstance(store, PostgresStore) and store.schema_version == SCHEMA_VERSION
        with store._reading() as execute:
            assert execute("SHOW synchronous_commit", ()).fetchone()[0] == "on"
        store.close()
        reopened = PostgresStore(url)  # migrating again is a no-op
        assert reopened.schema_version == SCHEMA_VERSION
        reopened.close()
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("ALTER ROLE overlay RESET synchronous_commit")


def test_postgres_newer_schema_is_refused(postgres_cluster: Cluster) -> None:
    url = postgres_cluster.url(postgres_cluster.fresh_schema())
    PostgresStore(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE overlay_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="newer than this program"):
        PostgresStore(url)


def test_unreachable_postgres_is_a_config_error_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://me:s3cret@/db?host={tmp_path}&connect_timeout=2"
    with pytest.raises(ConfigError, match="cannot use database") as raised:
        PostgresStore(url, pool_size=1)
    assert "s3cret" not in str(raised.value)
    assert redact("postgresql://me:s3cret@db.example:5432/x") == \
        "postgresql://me:***@db.example:5432/x"
