"""The relay fast path: routed frames read and written at their fixed positions.

A routed packet's header (docs/protocol.md section 5) has a fixed layout, like
an IP header, so that a relay need not treat it as a general msgpack value.
:func:`decode_payload` reads the header of a shortest-form routed frame
straight from its bytes (version, type, TTL, the two 16-byte ids, the packet
id) and decodes only the body, as the one value that follows; the body is
still checked against every rule of the msgpack profile (section 2: a relay
lets no malformed or too-deep packet past it), but its bytes are kept on the
packet (:attr:`RoutedPacket.wire_body`).  :func:`encode_payload` then writes
a relayed packet as a fresh header (the TTL one lower) followed by those same
bytes, without encoding the body again or walking it a second time.

A ROUTE_UPDATE of many entries is read the same way, its entries as arrays
(:mod:`overlay.proto.route_columns`).

Anything that is not the shortest-form layout (a TTL sent as u16, say, which
receivers must accept) and every other message type goes the general way,
:func:`~overlay.proto.messages.decode_message`, which also words the errors:
both ways accept and refuse exactly the same payloads, and decode them to
equal messages (tests/proto/test_fastpath.py checks this with hypothesis).
"""

from __future__ import annotations

from typing import Any

from overlay.errors import MalformedMessage
from overlay.ids import NODE_ID_LEN, NodeId
from overlay.proto.codec import MAX_DEPTH, check_payload_size, pack, unpack
from overlay.proto.messages import (
    PROTOCOL_VERSION,
    ROUTE_UPDATE_HEAD,
    Message,
    RoutedPacket,
    decode_message,
    encode_message_payload,
)
from overlay.proto.route_columns import decode_route_update

_ROUTED_ARRAY = 0x97
"""msgpack fixarray of 7: a routed packet's header fields and its body."""
_HEADER_ARRAY = 0x96
_VERSION = PROTOCOL_VERSION  # a positive fixint is the byte itself
_FIRST_ROUTED, _LAST_ROUTED = 0x20, 0x3F
_BIN8, _UINT8, _UINT16, _UINT32 = 0xC4, 0xCC, 0xCD, 0xCE
_FIXINT_END = 0x80
_BODY_DEPTH = MAX_DEPTH - 1
"""The body sits inside the frame's top-level array, one level down."""
_SHORTEST_ROUTED = 3 + 1 + 2 * (2 + NODE_ID_LEN) + 1 + 1
"""Array, version and type bytes, a fixint TTL, two bin ids, a fixint packet id, a body."""


def decode_payload(payload: bytes) -> Message:
    """Parse one frame payload, as :func:`~overlay.proto.messages.decode_message` does."""
    fast: Message | None = (decode_route_update(payload)
                            if payload.startswith(ROUTE_UPDATE_HEAD) else _decode_routed(payload))
    return fast if fast is not None else decode_message(payload)


def encode_payload(message: Message) -> bytes:
    """The payload of the frame carrying ``message``; a packet that kept its body's bytes
    is written around them."""
    if type(message) is RoutedPacket and message.wire_body is not None:
        header = pack([_VERSION, message.type, message.ttl, message.src, message.dst,
                       message.packet_id])
        return check_payload_size(bytes((_ROUTED_ARRAY,)) + header[1:] + message.wire_body)
    return encode_message_payload(message)


def _decode_routed(payload: bytes) -> RoutedPacket | None:
    """The packet, if ``payload`` is a routed frame in shortest form; None otherwise
    (including when it is malformed: the general decoder says why).

    Written out flat, without helper calls: it runs once per frame a node receives.
    """
    size = len(payload)
    if size < _SHORTEST_ROUTED or payload[0] != _ROUTED_ARRAY or payload[1] != _VERSION:
        return None
    packet_type = payload[2]
    if not _FIRST_ROUTED <= packet_type <= _LAST_ROUTED:
        return None
    ttl = payload[3]
    at = 4
    if ttl >= _FIXINT_END:
        if ttl != _UINT8:
            return None
        ttl = payload[4]
        at = 5
    # Both ids: c4 10 and 16 bytes each; ``size`` covers them (_SHORTEST_ROUTED).
    if payload[at] != _BIN8 or payload[at + 1] != NODE_ID_LEN:
        return None
    src = payload[at + 2:at + 18]
    at += 18
    if payload[at] != _BIN8 or payload[at + 1] != NODE_ID_LEN:
        return None
    dst = payload[at + 2:at + 18]
    at += 18
    if at >= size:
        return None
    first = payload[at]
    if first < _FIXINT_END:
        packet_id = first
        at += 1
    elif _UINT8 <= first <= _UINT32:
        end = at + 1 + (1 << (first - _UINT8))  # cc: 1 byte, cd: 2, ce: 4
        packet_id = int.from_bytes(payload[at + 1:end], "big")
        at = end
    else:
        return None
    if at >= size:
        return None
    wire_body = payload[at:]
    body = _body(wire_body)
    if body is _UNDECODABLE:
        return None
    return RoutedPacket(packet_type, ttl, NodeId.interned(src), NodeId.interned(dst), packet_id,
                        body, wire_body)


_UNDECODABLE = object()


def _body(wire_body: bytes) -> Any:
    try:
        return unpack(wire_body, max_depth=_BODY_DEPTH)
    except MalformedMessage:
        return _UNDECODABLE
