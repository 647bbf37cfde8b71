"""Node identities: an Ed25519 key pair and the node id derived from it.

A node id is the first 16 bytes of SHA-256 of the node's public key, so an id
cannot be claimed without the matching private key: the link handshake makes
each side sign a transcript with it.  This module does no I/O; keys are stored
by :mod:`overlay.state`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import nacl.exceptions
import nacl.signing

NODE_ID_LEN = 16
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
SEED_LEN = 32


class NodeId(bytes):
    """A 16-byte node id; printed as 32 lowercase hex digits (short form: the first 8).

    A ``bytes`` subclass, so hashing and comparing ids (the routing table's
    inner loop) run at C speed.
    """

    __slots__ = ()

    def __new__(cls, raw: bytes) -> NodeId:
        if not isinstance(raw, bytes) or len(raw) != NODE_ID_LEN:
            raise ValueError(f"a node id is {NODE_ID_LEN} bytes")
        return super().__new__(cls, raw)

    @property
    def raw(self) -> bytes:
        """The plain 16 bytes (what goes on the wire)."""
        return bytes(self)

    @classmethod
    def interned(cls, raw: bytes) -> NodeId:
        """The same as ``NodeId(raw)``, but ids seen before are reused, not rebuilt.

        Route updates carry the same few thousand ids over and over; the cache is
        bounded so that a peer inventing ids cannot grow it without limit.
        """
        known = _INTERNED.get(raw)
        if known is not None:
            return known
        node_id = cls(raw)
        if len(_INTERNED) < MAX_INTERNED:
            _INTERNED[bytes(raw)] = node_id
        return node_id

    @classmethod
    def interned_many(cls, raws: Sequence[bytes]) -> list[NodeId]:
        """:meth:`interned` of each of ``raws``: the cache is looked up in C (one ``map``),
        and only ids not seen before take the Python path (a route update's thousands)."""
        ids: list[NodeId | None] = list(map(_INTERNED.get, raws))
        if None in ids:
            ids = [known if known is not None else cls.interned(raw)
                   for known, raw in zip(ids, raws, strict=True)]
        return ids  # type: ignore[return-value]  # no None left

    @classmethod
    def from_public_key(cls, public_key: bytes) -> NodeId:
        return cls(hashlib.sha256(public_key).digest()[:NODE_ID_LEN])

    @classmethod
    def from_hex(cls, text: str) -> NodeId:
        """Parse the 32-hex-digit form; raises ValueError with a readable message."""
        cleaned = text.strip().lower()
        if len(cleaned) != 2 * NODE_ID_LEN:
            raise ValueError(f"a node id is {2 * NODE_ID_LEN} hex digits, got {len(cleaned)}")
        try:
            return cls(bytes.fromhex(cleaned))
        except ValueError:
            raise ValueError(f"not a hex node id: {text!r}") from None

    def hex(self, *args: object) -> str:
        return bytes.hex(self)

    @property
    def short(self) -> str:
        return bytes.hex(self[:4])

    def __str__(self) -> str:
        return self.hex()

    def __repr__(self) -> str:
        return f"NodeId({self.short})"


MAX_INTERNED = 100_000
_INTERNED: dict[bytes, NodeId] = {}


@dataclass(frozen=True)
class Identity:
    """A node's key pair.  Signing is pure computation, so protocol cores may use it."""

    signing_key: nacl.signing.SigningKey = field(repr=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != SEED_LEN:
            raise ValueError(f"an Ed25519 seed is {SEED_LEN} bytes")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @cached_property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @cached_property
    def node_id(self) -> NodeId:
        return NodeId.from_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """A detached 64-byte Ed25519 signature of ``message``."""
        return self.signing_key.sign(message).signature


def signature_is_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True
