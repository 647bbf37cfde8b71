"""``overlay bench directory``'s database: a fresh SQLite file, or a fresh PostgreSQL schema.

The bench registers fixed user names (``bench00000``...), so it needs an empty
database every run.  SQLite: a new file in the run's temporary directory, as
always.  PostgreSQL: the URL may name a database that is not empty (an
operator's staging database, the test cluster's shared one), so the run
creates a schema of its own (``overlay_bench_<random>``), points the servers
at it with libpq's ``options=-csearch_path=...`` (the store's tables are
unqualified, so they land there) and drops it, with everything in it, after
the servers have stopped.

The servers' connections also carry ``application_name=<the schema>``, so
that the bench can find their backends in ``pg_stat_activity`` and, when the
database runs on this machine, charge the CPU those backends use to the
database column rather than to "everything else".  (PostgreSQL's shared
background processes, the WAL writer and the checkpointer, are not counted:
they serve every database of the cluster.)

The servers' LISTEN/NOTIFY channel is per schema too
(:func:`overlay.directory.server.cluster.channel_for`), so a run on a database where
real servers run neither hears their events nor is heard by them.

psycopg is imported only when a PostgreSQL URL is given.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import trio

from overlay.bench.directory_report import DirectoryBenchError
from overlay.directory.server.store import POSTGRES_SCHEMES

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT = 10


def is_postgres(db: str | None) -> bool:
    return db is not None and db.startswith(POSTGRES_SCHEMES)


def _redact(url: str) -> str:
    from overlay.directory.server.store_pg import redact

    return redact(url)


def with_params(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (first on the search path) and are named
    after it; options already in the URL are kept, the schema's appended to them."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k != "application_name"]
    options = " ".join([v for k, v in query if k == "options"] + [f"-csearch_path={schema}"])
    query = [(k, v) for k, v in query if k != "options"]
    query += [("options", options), ("application_name", schema)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@dataclass(frozen=True)
class Database:
    """What the servers get as ``--db``, and how the report names it."""

    engine: str
    """'sqlite' or 'postgresql'."""
    arg: str
    label: str
    """For the report: the SQLite file's name, or the URL without its password, and the
    schema the run used."""
    backends: Callable[[], list[int]] | None
    """The pids of the database backends serving the servers, if those are processes of
    this machine; None for SQLite (it runs inside the server) or a remote database."""


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DirectoryBenchError(f"cannot use database {_redact(url)}: {detail}") from None


def _create_schema(url: str, schema: str) -> None:
    with _connect(url) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"'.encode())


def _drop_schema(url: str, schema: str) -> None:
    with _connect(url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def _local_backends(url: str, schema: str) -> Callable[[], list[int]]:
    """Backends named after the schema that are processes here (readable in /proc)."""
    def backends() -> list[int]:
        import psycopg

        try:
            with _connect(url) as conn:
                rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name "
                                    "= %s", (schema,)).fetchall()
        except (DirectoryBenchError, psycopg.Error):
            return []
        pids = [int(str(row[0])) for row in rows]
        return [pid for pid in pids if Path(f"/proc/{pid}/stat").exists()]
    return backends


@contextlib.asynccontextmanager
async def database(root: Path, db: str | None) -> AsyncIterator[Database]:
    """A fresh database for one run; a PostgreSQL schema is dropped on the way out."""
    if not is_postgres(db):
        path = Path(db) if db is not None else root / "directory.sqlite3"
        if db is not None and path.exists():
            raise DirectoryBenchError(f"{path} exists: the bench needs a new SQLite file "
                                      "(it registers fixed user names), or no --db")
        try:
            yield Database("sqlite", str(path), f"SQLite {path.name}", None)
        finally:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
        return
    assert db is not None
    schema = f"overlay_bench_{secrets.token_hex(4)}"
    await trio.to_thread.run_sync(_create_schema, db, schema)
    try:
        yield Database("postgresql", with_params(db, schema),
                       f"{_redact(db)} schema {schema}", _local_backends(db, schema))
    finally:
        with trio.CancelScope(shield=True):  # Ctrl-C too: the schema must not stay
            await trio.to_thread.run_sync(_drop_schema, db, schema)
