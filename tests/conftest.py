"""Fixtures shared by every test tier."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import settings
from trio.testing import MockClock

from overlay.ids import Identity
from tests.directory.postgres import Cluster, running_cluster
from tests.procs import Processes, short_tempdir

settings.register_profile("overlay", deadline=None, print_blob=True)
settings.load_profile("overlay")


def make_identity(name: str) -> Identity:
    """A deterministic identity per name, so failures replay."""
    return Identity.from_seed(hashlib.sha256(name.encode()).digest())


@pytest.fixture
def autojump_clock() -> MockClock:
    """Virtual time that jumps ahead whenever every task is blocked."""
    return MockClock(autojump_threshold=0)


@pytest.fixture
def procs() -> Iterator[Processes]:
    """Start ``overlay`` processes in a short temporary root; all stopped at the end."""
    root = short_tempdir()
    running = Processes(root)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster (tests/directory/postgres.py), started on first use,
    once per session (about a second), stopped at the end.  Here rather than in
    tests/directory, since the directory bench's tests use it too."""
    with running_cluster() as cluster:
        yield cluster
