"""Frame sealing after the handshake: ChaCha20-Poly1305 (IETF), one key per direction.

Theory of operation
-------------------
Once a direction's handshake messages are sent, every frame in that direction
is sealed.  A sealed frame keeps the framing of the plaintext one, a 4-byte
big-endian length and a body, but the body is the AEAD ciphertext of the
msgpack payload followed by its 16-byte Poly1305 tag, and the length counts
that ciphertext (payload + 16).  The length prefix itself is the associated
data, so it cannot be altered without the frame failing to open.

The nonce is never sent: it is the frame's position in its direction,
``0x00000000 || u64be(counter)``, the counter starting at 0 and growing by one
per frame.  So a frame that was altered, replayed, reordered, dropped before
another, cut short or injected fails authentication at the receiver, which
closes the link (:class:`~overlay.errors.AuthenticationFailed`): on a reliable
ordered stream none of these happen by accident.

A key never seals two frames with one nonce: a :class:`Sealer` refuses to
seal past its ``limit`` (2**64 frames, which no link reaches; a smaller
limit exists for tests), and the link core sends its last permitted frame as
a CLOSE (KEYS_EXHAUSTED) rather than wrap.  There is no in-place rekey: the
node redials, which makes new ephemeral keys.

The plaintext limit of a frame stays 65,535 bytes, so a sealed frame's
length is at most 65,551 (:data:`MAX_SEALED_PAYLOAD`).
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
from nacl._sodium import ffi as _ffi  # type: ignore[import-not-found]
from nacl._sodium import lib as _lib

from overlay.errors import (
    AuthenticationFailed,
    FrameTooLarge,
    KeysExhausted,
    LocalProtocolError,
    RemoteProtocolError,
)
from overlay.proto.codec import LENGTH_PREFIX, MAX_PAYLOAD

KEY_LEN = nacl.bindings.crypto_aead_chacha20poly1305_ietf_KEYBYTES
TAG_LEN = nacl.bindings.crypto_aead_chacha20poly1305_ietf_ABYTES
NONCE_LEN = nacl.bindings.crypto_aead_chacha20poly1305_ietf_NPUBBYTES
MAX_SEALED_PAYLOAD = MAX_PAYLOAD + TAG_LEN
"""Largest length prefix of a sealed frame: a maximal plaintext plus the tag."""
FRAME_LIMIT = 2**64
"""Frames one direction's key may seal: every 64-bit counter value, once."""

# libsodium's ChaCha20-Poly1305 IETF, called through PyNaCl's own CFFI binding
# (the same two C functions nacl.bindings wraps).  The public wrappers re-check
# every argument and format five error strings per call, about a third of the
# cost of a 1 KiB frame; here the key and nonce lengths are fixed by this
# module (_check_key, frame_nonce), so the calls go straight to libsodium.
# tests/proto/test_sealing.py checks both paths give the same bytes.


def _encrypt(message: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
    """``crypto_aead_chacha20poly1305_ietf_encrypt``: ciphertext || tag.

    The ciphertext is always ``len(message) + TAG_LEN`` bytes, so libsodium is not
    asked to report its length (a NULL length pointer is documented as allowed).
    """
    size = len(message) + TAG_LEN
    out = _ffi.new("unsigned char[]", size)
    if _lib.crypto_aead_chacha20poly1305_ietf_encrypt(
            out, _ffi.NULL, message, len(message), aad, len(aad), _ffi.NULL, nonce, key) != 0:
        raise nacl.exceptions.CryptoError("Encryption failed.")
    return bytes(_ffi.buffer(out, size))


def _decrypt(ciphertext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
    """``crypto_aead_chacha20poly1305_ietf_decrypt``; CryptoError if it does not open."""
    size = len(ciphertext) - TAG_LEN
    if size < 0:
        raise nacl.exceptions.CryptoError("shorter than a tag")
    out = _ffi.new("unsigned char[]", max(size, 1))
    if _lib.crypto_aead_chacha20poly1305_ietf_decrypt(
            out, _ffi.NULL, _ffi.NULL, ciphertext, len(ciphertext), aad, len(aad), nonce,
            key) != 0:
        raise nacl.exceptions.CryptoError("Decryption failed.")
    return bytes(_ffi.buffer(out, size))
_NONCE_PAD = bytes(NONCE_LEN - 8)


def frame_nonce(counter: int) -> bytes:
    """The 12-byte AEAD nonce of the ``counter``-th frame of a direction."""
    return _NONCE_PAD + counter.to_bytes(8, "big")


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != KEY_LEN:
        raise LocalProtocolError(f"a frame key is {KEY_LEN} bytes")
    return key


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= FRAME_LIMIT:
        raise LocalProtocolError(f"a frame limit is in 1..{FRAME_LIMIT}")
    return limit


class Sealer:
    """Seals the outgoing frames of one direction, in order."""

    def __init__(self, key: bytes, *, limit: int = FRAME_LIMIT) -> None:
        self._key = _check_key(key)
        self.limit = _check_limit(limit)
        self.counter = 0
        """The counter (nonce) of the next frame to seal."""

    @property
    def remaining(self) -> int:
        """How many more frames this key may seal."""
        return self.limit - self.counter

    def seal(self, payload: bytes) -> bytes:
        """The complete sealed frame (length prefix included) carrying ``payload``."""
        if self.counter >= self.limit:
            raise LocalProtocolError("this link's key has sealed all the frames it may")
        if len(payload) > MAX_PAYLOAD:
            raise LocalProtocolError(f"a frame carries at most {MAX_PAYLOAD} bytes")
        prefix = (len(payload) + TAG_LEN).to_bytes(LENGTH_PREFIX, "big")
        sealed = _encrypt(payload, prefix, frame_nonce(self.counter), self._key)
        self.counter += 1
        return prefix + sealed


class Opener:
    """Opens the incoming frames of one direction, in order; any failure is sticky."""

    def __init__(self, key: bytes, *, limit: int = FRAME_LIMIT) -> None:
        self._key = _check_key(key)
        self.limit = _check_limit(limit)
        self.counter = 0
        """The counter (nonce) the next frame must have been sealed with."""
        self._error: RemoteProtocolError | None = None

    def open(self, sealed: bytes) -> bytes:
        """The plaintext payload of one sealed frame body (what follows its length prefix).

        Raises only :class:`~overlay.errors.RemoteProtocolError` subclasses, and
        keeps raising the same error afterwards: the stream cannot be trusted again.
        """
        if self._error is not None:
            raise self._error
        if self.counter >= self.limit:
            self._error = KeysExhausted(
                f"the peer sent more than {self.limit} frames under one key"
            )
            raise self._error
        if len(sealed) > MAX_SEALED_PAYLOAD:
            self._error = FrameTooLarge(
                f"sealed frame of {len(sealed)} bytes exceeds {MAX_SEALED_PAYLOAD}"
            )
            raise self._error
        prefix = len(sealed).to_bytes(LENGTH_PREFIX, "big")
        try:
            if len(sealed) < TAG_LEN:
                raise nacl.exceptions.CryptoError("shorter than a tag")
            payload = _decrypt(bytes(sealed), prefix, frame_nonce(self.counter), self._key)
        except nacl.exceptions.CryptoError:
            self._error = AuthenticationFailed(
                f"frame {self.counter} failed authentication: altered, replayed, reordered, "
                "truncated or not sealed by the peer"
            )
            raise self._error from None
        self.counter += 1
        return payload
