"""Key schedule of the link handshake: ephemeral X25519, signed transcripts, session keys.

Theory of operation
-------------------
Each side of a connection brings two key pairs: its long-term Ed25519
*identity* key (``pk``, whose hash is its node id) and a fresh X25519
*ephemeral* key pair made for this connection only (secret ``e``, public
``E``).  HELLO carries ``pk_I, E_I``; HELLO_ACK carries ``pk_R, E_R`` and the
responder's signature; ACK carries the initiator's signature.  Both signatures
cover the same four public values in a fixed order under a role-specific
context (SIGMA's "sign both ephemerals and both identities"), so

- each side proves it holds the identity key it claims, *and* that it chose
  this very ephemeral key: an on-path attacker cannot swap in its own ``E``
  (it would need an identity key to re-sign) and cannot bind a session to a
  third party's identity (both identities are signed);
- the shared secret ``dh = X25519(e_I, E_R) = X25519(e_R, E_I)`` needs one of
  the ephemeral *secrets*, which are never sent and are forgotten with the
  link: a stolen identity key signs new handshakes but opens no recorded one
  (forward secrecy).

The session keys are keyed BLAKE2b-256 of ``dh`` over the same transcript
layout, one per direction (``overlay link v2 initiator to responder`` and
``... responder to initiator``), so a frame sealed in one direction never
opens in the other.  Everything here is pure computation over bytes: the
randomness (the ephemeral secret) is an argument, so a recorded handshake
replays byte for byte.  Primitives come from libsodium via PyNaCl only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions

from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.proto.messages import EPHEMERAL_KEY_LEN, PROTOCOL_VERSION

INITIATOR_CONTEXT = b"overlay link v2 initiator"
"""What the initiator signs (in ACK) is the transcript under this context."""
RESPONDER_CONTEXT = b"overlay link v2 responder"
"""What the responder signs (in HELLO_ACK) is the transcript under this context."""
INITIATOR_TO_RESPONDER_LABEL = b"overlay link v2 initiator to responder"
RESPONDER_TO_INITIATOR_LABEL = b"overlay link v2 responder to initiator"
SESSION_ID_LABEL = b"overlay session"
SESSION_KEY_LEN = 32
TRANSCRIPT_CORE_LEN = 2 + 4 * 32
"""Separator, version and the four 32-byte keys that follow the context."""


def handshake_transcript(
    context: bytes, initiator_key: bytes, initiator_ephemeral: bytes, responder_key: bytes,
    responder_ephemeral: bytes,
) -> bytes:
    """``context || 0x00 || version || pk_I || E_I || pk_R || E_R``: what each side signs,
    and (under a direction label) what each session key is derived from."""
    return b"".join(
        (context, b"\x00", bytes([PROTOCOL_VERSION]), initiator_key, initiator_ephemeral,
         responder_key, responder_ephemeral)
    )


def ephemeral_public_key(secret: bytes) -> bytes:
    """The X25519 public key of an ephemeral secret (any 32 bytes; libsodium clamps)."""
    if len(secret) != EPHEMERAL_KEY_LEN:
        raise LocalProtocolError(f"an ephemeral secret is {EPHEMERAL_KEY_LEN} bytes")
    return nacl.bindings.crypto_scalarmult_base(secret)


class BadEphemeralKey(RemoteProtocolError):
    """The peer's ephemeral key is a low-order point: no shared secret can come of it."""


def shared_secret(own_secret: bytes, peer_ephemeral: bytes) -> bytes:
    """X25519(own_secret, peer_ephemeral); refuses the all-zero result of a low-order point.

    A peer that sends such a point would make the session keys depend on nothing
    secret; libsodium detects it and we close the link instead.
    """
    try:
        dh = nacl.bindings.crypto_scalarmult(own_secret, peer_ephemeral)
    except nacl.exceptions.RuntimeError:
        dh = bytes(32)
    if dh == bytes(32):
        raise BadEphemeralKey("the peer's ephemeral key is a low-order point (X25519 gives zero)")
    return dh


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The outcome of one handshake at one end."""

    send: bytes = field(repr=False)
    receive: bytes = field(repr=False)
    session_id: bytes


TranscriptKeys = tuple[bytes, bytes, bytes, bytes]
"""``(pk_I, E_I, pk_R, E_R)``, the order of every transcript."""


def direction_key(dh: bytes, label: bytes, keys: TranscriptKeys) -> bytes:
    """BLAKE2b-256 keyed with ``dh`` over the transcript under a direction ``label``."""
    message = handshake_transcript(label, *keys)
    return nacl.bindings.crypto_generichash_blake2b_salt_personal(
        message, digest_size=SESSION_KEY_LEN, key=dh
    )


def session_id(initiator_ephemeral: bytes, responder_ephemeral: bytes) -> bytes:
    """SHA-256(``"overlay session" 0x00`` || E_I || E_R): public, the same at both ends,
    fresh for every connection; upper layers bind what they seal to it."""
    return hashlib.sha256(
        SESSION_ID_LABEL + b"\x00" + initiator_ephemeral + responder_ephemeral
    ).digest()


def derive_session_keys(
    *, initiator: bool, own_secret: bytes, initiator_key: bytes, initiator_ephemeral: bytes,
    responder_key: bytes, responder_ephemeral: bytes,
) -> SessionKeys:
    """Both directions' keys for the end that holds ``own_secret`` (its ephemeral secret)."""
    peer_ephemeral = responder_ephemeral if initiator else initiator_ephemeral
    dh = shared_secret(own_secret, peer_ephemeral)
    keys = (initiator_key, initiator_ephemeral, responder_key, responder_ephemeral)
    to_responder = direction_key(dh, INITIATOR_TO_RESPONDER_LABEL, keys)
    to_initiator = direction_key(dh, RESPONDER_TO_INITIATOR_LABEL, keys)
    send, receive = (to_responder, to_initiator) if initiator else (to_initiator, to_responder)
    return SessionKeys(send, receive, session_id(initiator_ephemeral, responder_ephemeral))
