"""A throwaway PostgreSQL cluster for the tests: one per session, a fresh schema per test.

The server binaries come from Debian's ``postgresql`` package (``bin/_postgres.sh``
installs it under ``.ci/run``).  The cluster lives in a temporary directory,
listens only on a Unix socket there (no TCP port to collide with anything), runs
as an unprivileged user (``nobody`` when the tests run as root: PostgreSQL
refuses to run as root) and is stopped, and its directory removed, at the end.
Without the binaries the tests that need it skip, saying why, except under
``OVERLAY_REQUIRE_POSTGRES=1`` (CI), where they fail.

``fsync=off``: the cluster's own crash safety is not under test (nothing kills
it) and it makes each commit cheap; the overlay server's durability (a commit
acknowledged before the answer leaves, ``synchronous_commit=on``) still holds.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

REQUIRED = os.environ.get("OVERLAY_REQUIRE_POSTGRES") == "1"
PORT = 5432  # only names the socket file, inside the cluster's own directory


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[3]) if Path(p).parts[3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return None if initdb is None else Path(initdb).parent


def unavailable(reason: str) -> None:
    """Skip, or fail when PostgreSQL is required (CI)."""
    if REQUIRED:
        pytest.fail(f"OVERLAY_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(f"{reason} (bin/_postgres.sh installs it as root: OVERLAY_REQUIRE_POSTGRES=1"
                " bin/test)")


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket_dir = root
        self._schemas = itertools.count(1)

    def url(self, schema: str | None = None) -> str:
        url = f"postgresql://overlay@/overlay?host={quote(str(self.socket_dir))}&port={PORT}"
        if schema is not None:
            url += "&options=" + quote(f"-csearch_path={schema}")
        return url

    def fresh_schema(self) -> str:
        """A new, empty schema: a test's own database, at the cost of one statement."""
        name = f"t{os.getpid()}_{next(self._schemas)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}".encode())
        return name


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    bindir = _bindir()
    if bindir is None:
        unavailable("PostgreSQL's server (initdb, pg_ctl) is not installed")
        raise AssertionError  # unreachable: skip/fail raise
    root = Path(tempfile.mkdtemp(prefix="ovpg"))
    user: str | None = None
    if os.geteuid() == 0:  # PostgreSQL will not run as root
        user = "nobody"
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data = root / "data"

    def run(*argv: str) -> None:
        done = subprocess.run(argv, user=user, capture_output=True, text=True, cwd=root,
                              timeout=60, check=False)
        if done.returncode != 0:
            unavailable(f"{Path(argv[0]).name} failed: {(done.stderr or done.stdout).strip()}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "overlay", "--auth=trust",
            "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "30",
            "-o", f"-k {root} -c listen_addresses='' -p {PORT} -c fsync=off"
            " -c full_page_writes=off -c max_connections=200", "start")
        try:
            cluster = Cluster(root)
            with psycopg.connect(cluster.url().replace("/overlay?", "/postgres?"),
                                 autocommit=True) as conn:
                conn.execute("CREATE DATABASE overlay")
            yield cluster
        finally:
            subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "stop"], user=user, capture_output=True, timeout=60,
                           check=False, cwd=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
