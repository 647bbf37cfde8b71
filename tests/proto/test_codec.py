"""Framing and message codec: round trips, limits, and hostile bytes."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import FrameTooLarge, MalformedMessage, ProtocolError, UnsupportedVersion
from overlay.ids import NodeId
from overlay.proto.codec import MAX_PAYLOAD, FrameDecoder, encode_frame, unpack
from overlay.proto.messages import (
    PROTOCOL_VERSION,
    Ack,
    Close,
    Hello,
    HelloAck,
    Message,
    MessageType,
    Ping,
    Pong,
    RoutedPacket,
    RouteEntries,
    RouteUpdate,
    array_header,
    decode_message,
    encode_message,
    encode_message_payload,
)

V = PROTOCOL_VERSION
node_ids = st.binary(min_size=16, max_size=16).map(NodeId)
plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)),
    st.builds(
        HelloAck,
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=64, max_size=64),
    ),
    st.builds(Ack, st.binary(min_size=64, max_size=64)),
    st.builds(Close, st.integers(0, 65535), st.text(max_size=256)),
    st.builds(Ping, st.integers(0, 2**32 - 1)),
    st.builds(Pong, st.integers(0, 2**32 - 1)),
    st.builds(
        RoutedPacket,
        st.integers(0x20, 0x3F),
        st.integers(0, 255),
        node_ids,
        node_ids,
        st.integers(0, 2**32 - 1),
        plain_values,
    ),
)


def decode_all(data: bytes, chunk: int = 7) -> list[Message]:
    """Feed ``data`` in small chunks, as a stream would deliver it."""
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(data), chunk):
        decoder.receive_data(data[i : i + chunk])
        while (payload := decoder.next_payload()) is not None:
            out.append(decode_message(payload))
    return out


@given(st.lists(messages, min_size=1, max_size=5))
def test_messages_round_trip_through_a_chunked_stream(batch: list[Message]) -> None:
    stream = b"".join(encode_message(m) for m in batch)
    assert decode_all(stream) == batch


def test_partial_frame_waits_for_more_bytes() -> None:
    frame = encode_message(Ping(3))
    decoder = FrameDecoder()
    decoder.receive_data(frame[:-1])
    assert decoder.next_payload() is None
    decoder.receive_data(frame[-1:])
    assert decoder.next_payload() == frame[4:]
    assert decoder.buffered == 0


def test_oversized_length_prefix_is_refused_before_the_body_arrives() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">I", MAX_PAYLOAD + 1))
    with pytest.raises(FrameTooLarge):
        decoder.next_payload()
    with pytest.raises(FrameTooLarge):  # sticky: the stream cannot be resynchronised
        decoder.next_payload()


def test_largest_frame_is_accepted_and_one_more_byte_is_not() -> None:
    overhead = len(msgpack.packb(b"", use_bin_type=True)) + 2  # bin32 header grows below
    body = b"x" * (MAX_PAYLOAD - overhead - 3)
    frame = encode_frame(body)
    assert len(frame) - 4 <= MAX_PAYLOAD
    assert decode_all_raw(frame) == body
    with pytest.raises(ProtocolError):
        encode_frame(b"x" * MAX_PAYLOAD)


def decode_all_raw(frame: bytes) -> Any:
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    payload = decoder.next_payload()
    assert payload is not None
    return unpack(payload)


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        ([V + 1, 5, 1], UnsupportedVersion),
        ([V - 1, 5, 1], UnsupportedVersion),  # a version-1 peer
        ([True, 5, 1], UnsupportedVersion),
        ([V, 5], MalformedMessage),  # PING without its seq
        ([V, 5, -1], MalformedMessage),
        ([V, 5, 2**32], MalformedMessage),
        ([V, 5, "1"], MalformedMessage),
        ([V, 0x7F, 1], MalformedMessage),  # unknown type
        ([V, 0x0F], MalformedMessage),
        ([V, 0x20, 32, b"a" * 16, b"b" * 15, 1, None], MalformedMessage),
        ([V, 0x20, 256, b"a" * 16, b"b" * 16, 1, None], MalformedMessage),
        ([V, 1, b"k" * 31, b"n" * 32], MalformedMessage),
        ([V, 4, 0, "r" * 257], MalformedMessage),
        ({"v": 1}, MalformedMessage),
        (7, MalformedMessage),
    ],
)
def test_invalid_messages_raise_protocol_errors(obj: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_message(msgpack.packb(obj, use_bin_type=True))


def test_ext_types_and_timestamps_are_refused() -> None:
    with pytest.raises(MalformedMessage):
        unpack(msgpack.packb(msgpack.ExtType(5, b"data")))
    with pytest.raises(MalformedMessage):
        unpack(msgpack.packb(msgpack.Timestamp(1, 0)))


def test_trailing_bytes_after_the_object_are_refused() -> None:
    with pytest.raises(MalformedMessage):
        unpack(msgpack.packb([1, 5, 1]) + b"\x00")


def _feed_hostile(data: bytes) -> None:
    """Everything a link does with received bytes; only ProtocolError may escape."""
    decoder = FrameDecoder()
    try:
        decoder.receive_data(data)
        while (payload := decoder.next_payload()) is not None:
            decode_message(payload)
    except ProtocolError:
        pass


@settings(max_examples=10_000)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    _feed_hostile(data)


@settings(max_examples=10_000)
@given(st.data())
def test_mutated_frames_raise_only_protocol_errors(data: st.DataObject) -> None:
    frame = bytearray(encode_message(data.draw(messages)))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "prefix"]))
        position = data.draw(st.integers(0, max(len(frame) - 1, 0)))
        if action == "flip" and frame:
            frame[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "truncate":
            del frame[position:]
        elif action == "insert":
            frame[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and frame:
            del frame[position]
        elif action == "prefix":
            # Make the length prefix agree with the mutated body, so the body is decoded.
            frame[:4] = struct.pack(">I", max(len(frame) - 4, 0))
    _feed_hostile(bytes(frame))


route_columns = st.lists(
    st.tuples(node_ids, st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1)), max_size=70)


@given(route_columns, st.integers(0, 2**32 - 1))
def test_route_entries_as_columns_encode_as_msgpack_encodes_the_whole_update(
        entries: list[tuple[NodeId, int, int]], interval_ms: int) -> None:
    """The columns' encoding is packed once and kept: the bytes must be exactly
    msgpack's of the whole message (array headers of every size), each time."""
    columns = RouteEntries([d for d, _, _ in entries], [s for _, s, _ in entries],
                           [m for _, _, m in entries])
    expected = msgpack.packb(
        [V, MessageType.ROUTE_UPDATE, interval_ms, [list(entry) for entry in entries]],
        use_bin_type=True)
    for _ in range(2):  # the second time from the kept encoding
        assert encode_message_payload(RouteUpdate(interval_ms, columns)) == expected
    assert list(columns) == [tuple(entry) for entry in entries]


@pytest.mark.parametrize("length", [0, 1, 15, 16, 1000, 65535, 65536])
def test_array_headers_are_msgpacks_own(length: int) -> None:
    packed = msgpack.packb([0] * length)
    assert packed == array_header(length) + b"\x00" * length
