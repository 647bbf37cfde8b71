"""overlay.runtime: what a supernode advertises when it listens on a wildcard."""

from __future__ import annotations

from overlay.runtime import advertised_address


def test_a_wildcard_listen_advertises_the_address_that_reaches_the_server() -> None:
    assert advertised_address(("0.0.0.0", 7101), ("127.0.0.1", 7000)) == ("127.0.0.1", 7101)
    assert advertised_address(("0.0.0.0", 7101), ("127.0.0.5", 7000)) == ("127.0.0.1", 7101)


def test_a_concrete_listen_address_is_advertised_as_it_is() -> None:
    assert advertised_address(("127.0.0.2", 7101), ("127.0.0.1", 7000)) == ("127.0.0.2", 7101)

