"""Identity certificates: the server's signed word that a username owns a node key.

A certificate is a msgpack array ``[body, signature]``.  ``body`` is itself the
msgpack encoding of ``[1, username, node_id, public_key, issued_at,
expires_at]`` (times in whole Unix seconds), kept as bytes so that a verifier
checks the signature over exactly the bytes the server signed, never over a
re-encoding.  The signature is Ed25519 by the server's key over
``b"overlay certificate v1\\x00" + body``; the context string keeps a
certificate signature from ever being mistaken for a link-handshake signature
made by the same key.

Pure computation (no clock reads: ``now`` is passed in), so peers verify
certificates in protocol cores and tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from overlay.errors import CertificateError, RemoteProtocolError
from overlay.ids import (
    NODE_ID_LEN,
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
    Identity,
    NodeId,
    signature_is_valid,
)
from overlay.proto.codec import describe_value, pack, unpack

CERTIFICATE_VERSION = 1
CERTIFICATE_CONTEXT = b"overlay certificate v1\x00"
MAX_CERTIFICATE_LEN = 512


@dataclass(frozen=True, slots=True)
class Certificate:
    """A verified (or freshly issued) certificate; ``raw`` is what goes on the wire."""

    username: str
    node_id: NodeId
    public_key: bytes
    issued_at: int
    expires_at: int
    raw: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "node_id": self.node_id.hex(),
            "public_key": self.public_key.hex(),
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }


def issue_certificate(
    server: Identity, username: str, public_key: bytes, *, now: float, lifetime: float,
) -> Certificate:
    """Sign a certificate binding ``username`` to ``public_key``, valid from ``now``."""
    if len(public_key) != PUBLIC_KEY_LEN:
        raise ValueError(f"a public key is {PUBLIC_KEY_LEN} bytes")
    node_id = NodeId.from_public_key(public_key)
    issued_at = int(now)
    expires_at = int(now + lifetime)
    body = pack([CERTIFICATE_VERSION, username, node_id.raw, public_key, issued_at, expires_at])
    raw = pack([body, server.sign(CERTIFICATE_CONTEXT + body)])
    return Certificate(username, node_id, public_key, issued_at, expires_at, raw)


def verify_certificate(raw: bytes, server_public_key: bytes, *, now: float) -> Certificate:
    """Parse ``raw`` and check it against the pinned server key; CertificateError if not good.

    Checks, in order: the format, the server's signature, that the node id is
    the hash of the public key, and that ``now`` lies within the validity period.
    """
    if not isinstance(raw, bytes) or len(raw) > MAX_CERTIFICATE_LEN:
        raise CertificateError(f"a certificate is at most {MAX_CERTIFICATE_LEN} bytes")
    try:
        outer = unpack(raw)
        if not isinstance(outer, list) or len(outer) != 2:
            raise CertificateError("a certificate is [body, signature]")
        body, signature = outer
        if not isinstance(body, bytes) or not isinstance(signature, bytes) \
                or len(signature) != SIGNATURE_LEN:
            raise CertificateError("a certificate is [body, signature], both bin")
        fields = unpack(body)
    except RemoteProtocolError as exc:
        raise CertificateError(f"not a certificate: {exc}") from None
    if not isinstance(fields, list) or len(fields) != 6:
        raise CertificateError("a certificate body has 6 fields")
    version, username, node_id, public_key, issued_at, expires_at = fields
    if version != CERTIFICATE_VERSION:
        raise CertificateError(f"certificate version {describe_value(version)} is not supported")
    if not signature_is_valid(server_public_key, CERTIFICATE_CONTEXT + body, signature):
        raise CertificateError("certificate is not signed by the pinned server key")
    if not (isinstance(username, str) and isinstance(node_id, bytes)
            and len(node_id) == NODE_ID_LEN and isinstance(public_key, bytes)
            and len(public_key) == PUBLIC_KEY_LEN and type(issued_at) is int
            and type(expires_at) is int):
        raise CertificateError("certificate fields have the wrong types")
    if NodeId.from_public_key(public_key) != node_id:
        raise CertificateError("certificate node id does not match its public key")
    if not issued_at - 300 <= now < expires_at:  # 5 minutes' grace for clock skew
        raise CertificateError(
            f"certificate for {username!r} is not valid now (valid {issued_at}..{expires_at})"
        )
    return Certificate(username, NodeId(node_id), public_key, issued_at, expires_at, raw)
