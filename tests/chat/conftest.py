"""The hybrid network of tests/roles, for chat tests."""

from tests.roles.conftest import network

__all__ = ["network"]
