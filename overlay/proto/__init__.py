"""Sans-IO protocol cores: bytes and events in, bytes and events out.

Nothing in this package may import trio, socket, sqlite3, time or any other
source of I/O or nondeterminism; time arrives as a ``now`` argument and
randomness as injected bytes.  ``tests/test_purity.py`` enforces it, here and
over the pure modules of the other layers.
"""
