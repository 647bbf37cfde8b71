"""Password hashing: Argon2id at OWASP's recommended strength, through libsodium (PyNaCl).

OWASP's Password Storage Cheat Sheet recommends Argon2id with 19 MiB of
memory, 2 iterations and 1 degree of parallelism; libsodium's encoded form
(``$argon2id$v=19$m=19456,t=2,p=1$salt$hash``) records the parameters with
each hash, so raising them later leaves old hashes verifiable.  Hashing costs
tens of milliseconds on purpose: callers run it in a worker thread (libsodium
releases the GIL), never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.exceptions
from nacl.pwhash import argon2id


@dataclass(frozen=True, slots=True)
class HashCost:
    """Argon2id's work factors: iterations (opslimit) and memory in bytes (memlimit)."""

    iterations: int
    memory: int

    @classmethod
    def owasp(cls) -> HashCost:
        return cls(iterations=2, memory=19 * 1024 * 1024)


def hash_password(password: str, cost: HashCost) -> str:
    """The encoded Argon2id hash of ``password`` with a fresh random salt."""
    encoded: bytes = argon2id.str(password.encode(), opslimit=cost.iterations,
                                  memlimit=cost.memory)
    return encoded.decode("ascii")


def password_matches(encoded: str, password: str) -> bool:
    try:
        return bool(argon2id.verify(encoded.encode("ascii"), password.encode()))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False

