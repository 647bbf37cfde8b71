"""The stores: settings, migrations, contact bookkeeping (on SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from overlay.directory.server.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SqlStore,
    Store,
    UsernameTaken,
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
