"""The SQLite store: settings, migrations, contact bookkeeping."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from overlay.directory.store import SCHEMA_VERSION, Store, UsernameTaken
from overlay.errors import ConfigError
from tests.conftest import make_identity


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


def test_contacts_bookkeeping() -> None:
    store = Store(":memory:")
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


def test_a_new_key_ends_the_old_keys_sessions() -> None:
    store = Store(":memory:")
    old, new = make_identity("old"), make_identity("new")
    alice = store.create_user("alice", "h", old.public_key, 1)
    store.create_session(b"t" * 32, alice.id, old.node_id, 100, 1)
    store.set_public_key(alice.id, new.public_key)
    assert store.session(b"t" * 32) is None
    user = store.user("alice")
    assert user is not None and user.node_id == new.node_id
