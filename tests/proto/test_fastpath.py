"""The relay fast path decodes and re-encodes exactly as the general codec does.

:func:`decode_payload` reads a routed frame's header at its fixed positions and
keeps the body's bytes; these tests hold it to the reference decoder
(:func:`decode_message`): the same message or the same error class for every
payload, valid, non-shortest or hostile, and bytes on the wire that a relay
sends on unchanged but for the TTL.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from overlay.errors import LocalProtocolError, MalformedMessage, RemoteProtocolError
from overlay.ids import NodeId
from overlay.proto.codec import MAX_DEPTH, MAX_PAYLOAD
from overlay.proto.fastpath import decode_payload, encode_payload
from overlay.proto.messages import (
    PROTOCOL_VERSION,
    MessageType,
    RoutedPacket,
    decode_message,
    encode_message_payload,
)
from tests.proto.test_codec import plain_values
from tests.proto.test_hostile_input import HOSTILE, nested, payloads

node_ids = st.binary(min_size=16, max_size=16).map(NodeId)
routed_packets = st.builds(
    RoutedPacket, st.integers(0x20, 0x3F), st.integers(0, 255), node_ids, node_ids,
    st.integers(0, 2**32 - 1), plain_values)


def _outcome(decode: Any, payload: bytes) -> Any:
    """What a decoder makes of ``payload``: the message (as its repr, so that a NaN
    equals itself), or the class of its refusal."""
    try:
        return repr(decode(payload))
    except RemoteProtocolError as exc:
        return type(exc)


@given(routed_packets)
def test_routed_packets_take_the_fast_path_and_round_trip(packet: RoutedPacket) -> None:
    payload = encode_message_payload(packet)
    decoded = decode_payload(payload)
    assert decoded == decode_message(payload) == packet
    assert isinstance(decoded, RoutedPacket) and decoded.wire_body is not None
    assert payload.endswith(decoded.wire_body)
    assert encode_payload(decoded) == payload


@given(routed_packets, st.integers(0, 255))
def test_a_relayed_packet_is_its_bytes_with_a_new_ttl(packet: RoutedPacket, ttl: int) -> None:
    received = decode_payload(encode_message_payload(packet))
    assert isinstance(received, RoutedPacket)
    relayed = received.with_ttl(ttl)
    assert relayed.wire_body is received.wire_body
    assert encode_payload(relayed) == encode_message_payload(packet.with_ttl(ttl))


_LIMITS = {"shortest": 2**64, "u8": 2**8 - 1, "u16": 2**16 - 1, "u32": 2**32 - 1,
           "u64": 2**64 - 1}


def _header_field(value: int, encoding: str) -> bytes:
    """``value`` as msgpack in a chosen (possibly longer than shortest) integer encoding."""
    if encoding == "shortest":
        return bytes(msgpack.packb(value))
    marker, size = {"u8": (0xCC, 1), "u16": (0xCD, 2), "u32": (0xCE, 4), "u64": (0xCF, 8)}[
        encoding]
    return bytes([marker]) + value.to_bytes(size, "big")


@given(routed_packets, st.sampled_from(["shortest", "u8", "u16", "u32", "u64"]),
       st.sampled_from(["shortest", "u8", "u16", "u32", "u64"]),
       st.sampled_from(["bin8", "bin16", "bin32"]))
def test_longer_encodings_decode_alike(packet: RoutedPacket, ttl_encoding: str,
                                       id_encoding: str, bin_encoding: str) -> None:
    """Receivers must accept any valid encoding; the fast path declines what it does not
    read itself and the general decoder takes it."""
    assume(packet.ttl <= _LIMITS[ttl_encoding] and packet.packet_id <= _LIMITS[id_encoding])
    bin_header = {"bin8": b"\xc4\x10", "bin16": b"\xc5\x00\x10", "bin32": b"\xc6\x00\x00\x00\x10"}
    payload = (b"\x97" + bytes(msgpack.packb(PROTOCOL_VERSION)) + bytes([packet.type])
               + _header_field(packet.ttl, ttl_encoding)
               + bin_header[bin_encoding] + packet.src
               + bin_header[bin_encoding] + packet.dst
               + _header_field(packet.packet_id, id_encoding)
               + msgpack.packb(packet.body, use_bin_type=True))
    assert decode_payload(payload) == decode_message(payload) == packet


@HOSTILE
@given(payloads)
def test_hostile_payloads_get_the_same_verdict(payload: bytes) -> None:
    assert _outcome(decode_payload, payload) == _outcome(decode_message, payload)


@HOSTILE
@given(routed_packets, st.data())
def test_mutated_routed_frames_get_the_same_verdict(packet: RoutedPacket,
                                                    data: st.DataObject) -> None:
    payload = mutated(encode_message_payload(packet), data)
    assert _outcome(decode_payload, payload) == _outcome(decode_message, payload)


def mutated(payload: bytes, data: st.DataObject) -> bytes:
    """``payload`` with one to three bytes flipped, replaced or inserted, or cut short."""
    changed = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(changed) - 1))
        how = data.draw(st.sampled_from(["flip", "cut", "byte", "insert"]))
        if how == "flip":
            changed[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "cut":
            del changed[at:]
            if not changed:
                break
        elif how == "insert":
            changed[at:at] = bytes([data.draw(st.integers(0, 255))])
        else:
            changed[at] = data.draw(st.integers(0, 255))
    return bytes(changed)


def _routed_payload(body: Any) -> bytes:
    head = msgpack.packb([PROTOCOL_VERSION, MessageType.DATA, 8, b"s" * 16, b"d" * 16, 1],
                         use_bin_type=True)
    return b"\x97" + head[1:] + msgpack.packb(body, use_bin_type=True)


def test_the_body_gets_the_frame_depth_limit_less_one_level() -> None:
    within = decode_payload(_routed_payload(nested(MAX_DEPTH - 1)))
    assert isinstance(within, RoutedPacket) and within.wire_body is not None
    with pytest.raises(MalformedMessage, match="nested more than"):
        decode_payload(_routed_payload(nested(MAX_DEPTH)))


def test_a_body_that_is_not_one_value_is_malformed() -> None:
    payload = _routed_payload(1) + b"\x01"  # an eighth element after the body
    with pytest.raises(MalformedMessage):
        decode_payload(payload)
    with pytest.raises(MalformedMessage):
        decode_payload(_routed_payload(1)[:-1] + b"\xc1")  # the reserved byte


def test_kept_bytes_are_sent_as_received() -> None:
    """A float32 in a body crosses our relays as float32 (the general encoder would
    widen it); docs/protocol.md section 2 still promises no byte-exact hops."""
    payload = _routed_payload(None)[:-1] + b"\xca\x3f\xc0\x00\x00"  # 1.5 as float32
    received = decode_payload(payload)
    assert isinstance(received, RoutedPacket) and received.body == 1.5
    assert encode_payload(received) == payload
    assert encode_message_payload(received) != payload


def test_a_relayed_packet_may_not_outgrow_a_frame() -> None:
    packet = RoutedPacket(MessageType.DATA, 200, NodeId(b"s" * 16), NodeId(b"d" * 16), 1,
                          None, wire_body=b"\xc0" * (MAX_PAYLOAD - 40))
    with pytest.raises(LocalProtocolError, match="frame limit"):
        encode_payload(packet)
