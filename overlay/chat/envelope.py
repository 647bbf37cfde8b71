"""Sealed chat messages and receipts: what relays carry and cannot read.

Each user's node has an Ed25519 key, and the directory certifies which
username owns it (:mod:`overlay.directory.certificates`).  The same key,
converted to X25519 (libsodium's ``crypto_sign_ed25519_pk_to_curve25519``),
is the user's encryption key, so the certificate that names the user also
names the key a message to them is sealed for.  A message is sealed with
PyNaCl's ``Box`` (X25519 key agreement, XSalsa20-Poly1305, a random 24-byte
nonce): only the recipient can open it, and opening it proves it was sealed
with the sender's certified private key.

Envelope on the wire (msgpack): ``[1, kind, certificate, box]`` where kind is
``"m"`` (message) or ``"r"`` (receipt), ``certificate`` is the sender's raw
certificate and ``box`` the sealed msgpack of
``[id, sender, recipient, sent_at, text]`` (message) or ``[id, received_at]``
(receipt).  The recipient checks, in order: the certificate against the
pinned server key, that it names the node the envelope came from (the
reliable channel's authenticated peer), that the box opens with the
certified key, and that the names inside match the certificate and itself.
Any failure raises :class:`~overlay.errors.RejectedMessage`.  Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.signing

from overlay.directory.certificates import Certificate, verify_certificate
from overlay.errors import CertificateError, ChatError, RejectedMessage, RemoteProtocolError
from overlay.ids import Identity, NodeId
from overlay.proto.codec import pack, unpack

ENVELOPE_VERSION = 1
MESSAGE_ID_LEN = 16
MAX_TEXT_LEN = 16_000
"""Characters of one message: well inside a frame once sealed, with a certificate."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    id: bytes
    sender: str
    recipient: str
    sent_at: float
    text: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """The recipient's word that message ``id`` arrived (the "delivered" of the UI)."""

    id: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class Opened:
    """A verified envelope: its content and the certificate it was sealed under."""

    content: ChatMessage | Receipt
    sender: Certificate


def check_text_length(text: str) -> None:
    """The one text-length rule (the receiver's check in :func:`_content` is the same)."""
    if len(text) > MAX_TEXT_LEN:
        raise ChatError(f"a message is at most {MAX_TEXT_LEN} characters, not {len(text)}")


def _box(identity: Identity, peer_public_key: bytes) -> nacl.public.Box:
    private = identity.signing_key.to_curve25519_private_key()
    public = nacl.signing.VerifyKey(peer_public_key).to_curve25519_public_key()
    return nacl.public.Box(private, public)


def seal(identity: Identity, certificate: bytes, recipient_key: bytes,
         content: ChatMessage | Receipt) -> bytes:
    """The envelope carrying ``content`` from ``identity`` to the holder of ``recipient_key``."""
    if isinstance(content, ChatMessage):
        check_text_length(content.text)
        kind = "m"
        inner = pack([content.id, content.sender, content.recipient, content.sent_at,
                      content.text])
    else:
        kind = "r"
        inner = pack([content.id, content.received_at])
    box = bytes(_box(identity, recipient_key).encrypt(inner))
    return pack([ENVELOPE_VERSION, kind, certificate, box])


def open_envelope(data: bytes, identity: Identity, *, username: str, server_key: bytes,
                  sender_node: NodeId, now: float) -> Opened:
    """Verify and open an envelope that ``sender_node`` sent to ``username`` (us)."""
    try:
        outer = unpack(data)
    except RemoteProtocolError as exc:
        raise RejectedMessage(f"not a chat envelope: {exc}") from None
    if not (isinstance(outer, list) and len(outer) == 4 and outer[0] == ENVELOPE_VERSION
            and outer[1] in ("m", "r") and isinstance(outer[2], bytes)
            and isinstance(outer[3], bytes)):
        raise RejectedMessage("not a version 1 chat envelope")
    _version, kind, raw_certificate, box = outer
    try:
        certificate = verify_certificate(raw_certificate, server_key, now=now)
    except CertificateError as exc:
        raise RejectedMessage(f"sender's certificate refused: {exc}") from None
    if certificate.node_id != sender_node:
        raise RejectedMessage(
            f"certificate of {certificate.username!r} (node {certificate.node_id.short}) "
            f"sent by another node ({sender_node.short}): forged sender")
    try:
        inner = unpack(_box(identity, certificate.public_key).decrypt(box))
    except (nacl.exceptions.CryptoError, RemoteProtocolError, ValueError):
        raise RejectedMessage(
            f"message claiming to be from {certificate.username!r} does not open with "
            "that user's certified key: forged or damaged") from None
    content = _content(kind, inner)
    if isinstance(content, ChatMessage) and (content.sender != certificate.username
                                             or content.recipient != username):
        raise RejectedMessage(
            f"message names {content.sender!r} -> {content.recipient!r} but was sealed by "
            f"{certificate.username!r} for {username!r}")
    return Opened(content, certificate)


def _content(kind: str, inner: Any) -> ChatMessage | Receipt:
    if kind == "m":
        if not (isinstance(inner, list) and len(inner) == 5 and isinstance(inner[0], bytes)
                and len(inner[0]) == MESSAGE_ID_LEN and isinstance(inner[1], str)
                and isinstance(inner[2], str) and _is_time(inner[3])
                and isinstance(inner[4], str) and len(inner[4]) <= MAX_TEXT_LEN):
            raise RejectedMessage("malformed sealed message")
        return ChatMessage(inner[0], inner[1], inner[2], float(inner[3]), inner[4])
    if not (isinstance(inner, list) and len(inner) == 2 and isinstance(inner[0], bytes)
            and len(inner[0]) == MESSAGE_ID_LEN and _is_time(inner[1])):
        raise RejectedMessage("malformed sealed receipt")
    return Receipt(inner[0], float(inner[1]))


MAX_TIME = 2.0**35
"""Latest accepted timestamp (the year 3058): later ones are a sender's nonsense."""


def _is_time(value: Any) -> bool:
    """A Unix time the history can store and a terminal can show: NaN is stored as NULL
    by SQLite and infinities do not convert to a date, so a sender must not pick them."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value < MAX_TIME)
