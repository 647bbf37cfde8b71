"""Fixtures shared by every test tier."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import settings
from trio.testing import MockClock

from overlay.ids import Identity

settings.register_profile("overlay", deadline=None, print_blob=True)
settings.load_profile("overlay")


def make_identity(name: str) -> Identity:
    """A deterministic identity per name, so failures replay."""
    return Identity.from_seed(hashlib.sha256(name.encode()).digest())


@pytest.fixture
def autojump_clock() -> MockClock:
    """Virtual time that jumps ahead whenever every task is blocked."""
    return MockClock(autojump_threshold=0)
