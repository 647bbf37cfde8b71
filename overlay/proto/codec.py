"""Framing: a u32 big-endian length, then exactly one msgpack object.

The decoder is fed arbitrary chunks of a byte stream and hands out complete
payloads.  It rejects an oversized length prefix as soon as the four header
bytes arrive, so a hostile peer cannot make us buffer more than one maximal
frame.  :func:`unpack` decodes a payload with every msgpack limit set to what
a single frame can hold, with extension types (timestamps included) refused,
and with nesting capped at :data:`MAX_DEPTH`, so that decoding hostile bytes
yields plain Python values or a :class:`~overlay.errors.MalformedMessage`, and
nothing else.  The depth cap is what makes every later step safe: code that
walks, prints or re-encodes a decoded value (``repr`` included) recurses once
per level, and a value a thousand levels deep would exhaust Python's stack.
"""

from __future__ import annotations

from typing import Any

import msgpack

from overlay.errors import FrameTooLarge, LocalProtocolError, MalformedMessage

LENGTH_PREFIX = 4
MAX_PAYLOAD = 65_535
"""Largest msgpack object (in bytes) one frame may carry, as the length prefix counts it."""

MAX_CONTAINER_LEN = 4_096
"""Most elements an array or map in a frame may have."""

MAX_DEPTH = 32
"""Most levels of nested arrays/maps in a frame, the frame's own top-level array being level 1.

No honest message nests deeper than a handful of levels; 32 leaves room for
application bodies while keeping every recursive walk of a decoded value far
from Python's recursion limit.
"""


def pack(obj: Any) -> bytes:
    """Encode ``obj`` as msgpack (bin for bytes, str for text)."""
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {type(obj).__name__}: {exc}") from exc


def encode_frame(obj: Any) -> bytes:
    """Length-prefixed frame of ``obj``: :func:`encode_payload` behind its prefix."""
    payload = encode_payload(obj)
    return len(payload).to_bytes(LENGTH_PREFIX, "big") + payload


def encode_payload(obj: Any) -> bytes:
    """The msgpack payload of one frame carrying ``obj``, within the limits :func:`unpack`
    enforces.

    A payload over :data:`MAX_PAYLOAD` or nested past :data:`MAX_DEPTH` raises
    :class:`~overlay.errors.LocalProtocolError`: we never send what an honest
    receiver must refuse.  Packets built from a peer's bytes (an echo reply
    around a request's body, a relayed packet re-encoded) can hit this, so the
    glue that sends them drops and counts them.
    """
    if nesting_depth(obj) > MAX_DEPTH:
        raise LocalProtocolError(f"message nested more than {MAX_DEPTH} levels deep")
    return check_payload_size(pack(obj))


def check_payload_size(payload: bytes) -> bytes:
    """``payload``, if one frame may carry it; else LocalProtocolError."""
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError(
            f"message of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte frame limit"
        )
    return payload


def unpack(payload: bytes, max_depth: int = MAX_DEPTH, *, check_depth: bool = True) -> Any:
    """Decode one msgpack object under strict limits; hostile input -> MalformedMessage.

    ``max_depth`` is :data:`MAX_DEPTH` for a whole frame; a routed packet's body,
    decoded apart from its header (one level), gets one level less.  A caller that
    proves a flat shape itself, touching no nested value on the way (a ROUTE_UPDATE,
    :func:`~overlay.proto.messages.decode_message`), may skip the walk:
    ``check_depth=False``.
    """
    if len(payload) > MAX_PAYLOAD:
        raise FrameTooLarge(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_PAYLOAD,
            max_bin_len=MAX_PAYLOAD,
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
            max_ext_len=0,
        )
    except (ValueError, OverflowError, RecursionError) as exc:
        # msgpack's own exceptions (ExtraData, FormatError, StackError, OutOfData)
        # and UnicodeDecodeError are all ValueError subclasses.
        raise MalformedMessage(f"undecodable msgpack: {str(exc) or type(exc).__name__}") from None
    if check_depth and type(obj) in _CONTAINERS and _depth(obj, 1, max_depth) > max_depth:
        raise MalformedMessage(f"values nested more than {MAX_DEPTH} levels deep")
    return obj


def describe_value(value: object, limit: int = 40) -> str:
    """A short, bounded description of a decoded value for error messages.

    Containers are named by kind and size, never ``repr``'d: a hostile value
    must not cost a deep walk just to be reported.
    """
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return f"a map of {len(value)}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_CONTAINERS = (list, tuple, dict)


def nesting_depth(obj: Any, limit: int = MAX_DEPTH) -> int:
    """Levels of nested arrays/maps in ``obj`` (a scalar is 0), counted at most to
    ``limit + 1``: the caller only needs to know whether the value is too deep.

    Recursive, because that is the fastest walk in Python and it runs on every
    frame; safe, because it never goes more than ``limit + 1`` levels down
    however deep the value is.
    """
    if type(obj) not in _CONTAINERS:
        return 0
    return _depth(obj, 1, limit)


def _depth(value: Any, level: int, limit: int) -> int:
    if level > limit:
        return level
    deepest = level
    for child in (value.values() if type(value) is dict else value):
        # An empty container adds its level without a call: frames are full of them
        # (a segment's empty SACK list).
        if type(child) in _CONTAINERS:
            depth = _depth(child, level + 1, limit) if child else level + 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
    return deepest


class FrameDecoder:
    """Turns a byte stream into frame payloads.

    ``receive_data`` buffers; ``next_payload`` returns one complete payload or
    ``None`` when more bytes are needed.  Errors are sticky: after a
    :class:`FrameTooLarge` the stream cannot be resynchronised, so every later
    call raises again.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._max_payload = max_payload
        self._buffer = bytearray()
        self._error: FrameTooLarge | None = None

    @property
    def max_payload(self) -> int:
        """The largest length prefix accepted; a link raises it once frames are sealed
        (the prefix then counts the ciphertext, tag included)."""
        return self._max_payload

    @max_payload.setter
    def max_payload(self, value: int) -> None:
        self._max_payload = value

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out (at most one partial frame plus a chunk)."""
        return len(self._buffer)

    def receive_data(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def next_payload(self) -> bytes | None:
        if self._error is not None:
            raise self._error
        if len(self._buffer) < LENGTH_PREFIX:
            return None
        length = int.from_bytes(self._buffer[:LENGTH_PREFIX], "big")
        if length > self._max_payload:
            self._error = FrameTooLarge(
                f"length prefix announces {length} bytes, the limit is {self._max_payload}"
            )
            raise self._error
        end = LENGTH_PREFIX + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[LENGTH_PREFIX:end])
        del self._buffer[:end]
        return payload
