"""Every decoder of the wire layer, fed hostile bytes, raises only RemoteProtocolError.

Issue #11: one unassigned type or one deeply nested value took real processes
down because an error outside the protocol family (ValueError, RecursionError)
escaped a decoder.  These properties feed each decoder arbitrary bytes,
mutations of the documented vectors and msgpack of every shape (deep nesting
and large containers included) and allow exactly two outcomes: a value, or a
:class:`~overlay.errors.RemoteProtocolError`.  A link core fed the same frames,
in every state, may only close the link; it never raises.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay.errors import MalformedMessage, RemoteProtocolError
from overlay.proto.codec import (
    MAX_CONTAINER_LEN,
    MAX_DEPTH,
    MAX_PAYLOAD,
    FrameDecoder,
    describe_value,
    nesting_depth,
    unpack,
)
from overlay.proto.forwarding import ErrorReport, Via
from overlay.proto.link import LinkCore, LinkState
from overlay.proto.messages import PROTOCOL_VERSION, CloseCode, MessageType, decode_message
from overlay.proto.reliable import Segment
from tests.conftest import make_identity
from tests.proto.test_vectors import VECTORS

SEED_FRAMES = [v.frame for v in VECTORS]


def nested(depth: int, leaf: Any = None) -> Any:
    """``depth`` one-element arrays around ``leaf`` (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats() | st.text(max_size=12) | st.binary(max_size=24))
shaped_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=4) | st.binary(max_size=4), children, max_size=4),
    max_leaves=40,
)
deep_values = st.integers(MAX_DEPTH - 2, 500).map(nested)  # msgpack packs <= 511 levels


def deep_array_bytes(depth: int) -> bytes:
    """msgpack of ``depth`` nested one-element arrays around nil, for any depth."""
    return b"\x91" * depth + b"\xc0"


deep_payloads = st.integers(MAX_DEPTH - 2, 1_100).map(deep_array_bytes)


@st.composite
def deep_routed_payload(draw: st.DrawFn) -> bytes:
    """A well-formed DATA packet whose body is nested ``depth`` levels (issue #11 item 2)."""
    head = msgpack.packb([PROTOCOL_VERSION, MessageType.DATA, 8, b"s" * 16, b"d" * 16, 1],
                         use_bin_type=True)
    return b"\x97" + head[1:] + deep_array_bytes(draw(st.integers(MAX_DEPTH - 2, 1_100)))
wide_values = st.integers(MAX_CONTAINER_LEN - 2, MAX_CONTAINER_LEN + 2).map(lambda n: [None] * n)


def frame_of(obj: Any) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return len(payload).to_bytes(4, "big") + payload


@st.composite
def message_shaped(draw: st.DrawFn) -> Any:
    """Arrays that look like messages: a version, a type, then fields of any shape."""
    version = draw(st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION + 1, 0, True, 1.0]))
    message_type = draw(st.integers(0, 0x50) | st.sampled_from([-1, 2**32, True, "x"]))
    tail = draw(st.lists(shaped_values | deep_values, max_size=9))
    return [version, message_type, *tail]


@st.composite
def mutated_vector(draw: st.DrawFn) -> bytes:
    """A documented vector with bytes flipped, cut, inserted or its length prefix edited."""
    frame = bytearray(draw(st.sampled_from(SEED_FRAMES)))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "prefix"]))
        if how == "flip" and frame:
            i = draw(st.integers(0, len(frame) - 1))
            frame[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut" and frame:
            del frame[draw(st.integers(0, len(frame) - 1)):]
        elif how == "insert":
            i = draw(st.integers(0, len(frame)))
            frame[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif how == "prefix" and len(frame) >= 4:
            frame[:4] = (max(0, len(frame) - 4 + draw(st.integers(-3, 3)))).to_bytes(4, "big")
    return bytes(frame)


payloads = st.one_of(
    st.binary(max_size=200),
    mutated_vector().map(lambda f: f[4:]),
    deep_payloads,
    deep_routed_payload(),
    st.one_of(shaped_values, deep_values, wide_values, message_shaped()).map(
        lambda o: msgpack.packb(o, use_bin_type=True)),
)
streams = st.one_of(
    st.binary(max_size=300),
    mutated_vector(),
    st.lists(mutated_vector(), min_size=1, max_size=4).map(b"".join),
    st.one_of(message_shaped(), deep_values, wide_values).map(frame_of),
    st.one_of(deep_payloads, deep_routed_payload()).map(
        lambda p: len(p).to_bytes(4, "big") + p),
)
bodies = st.one_of(shaped_values, deep_values, message_shaped())

HOSTILE = settings(max_examples=300, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@HOSTILE
@given(payloads)
def test_unpack_yields_a_value_or_malformed(payload: bytes) -> None:
    try:
        value = unpack(payload)
    except RemoteProtocolError:
        return
    assert nesting_depth(value) <= MAX_DEPTH
    describe_value(value)
    repr(value)  # anything that decodes is safe to print


@HOSTILE
@given(payloads)
def test_decode_message_raises_only_protocol_errors(payload: bytes) -> None:
    try:
        message = decode_message(payload)
    except RemoteProtocolError:
        return
    repr(message)


@HOSTILE
@given(streams, st.integers(1, 64))
def test_frame_decoder_raises_only_protocol_errors(stream: bytes, chunk: int) -> None:
    decoder = FrameDecoder()
    try:
        for i in range(0, len(stream), chunk):
            decoder.receive_data(stream[i:i + chunk])
            while (payload := decoder.next_payload()) is not None:
                assert len(payload) <= MAX_PAYLOAD
    except RemoteProtocolError:
        pass


@HOSTILE
@given(bodies)
def test_body_decoders_raise_only_malformed(body: Any) -> None:
    for decoder in (Segment.from_body, ErrorReport.from_body, Via.from_body):
        with contextlib.suppress(MalformedMessage):
            decoder(body)


def _established_pair() -> tuple[LinkCore, LinkCore]:
    """(core, peer): an initiator and the responder it completed the handshake with."""
    initiator = LinkCore(make_identity("target"), initiator=True, nonce=b"\x02" * 32, now=0.0)
    responder = LinkCore(make_identity("peer"), initiator=False, nonce=b"\x03" * 32, now=0.0)
    for _ in range(3):
        responder.receive_data(initiator.data_to_send(), now=0.0)
        initiator.receive_data(responder.data_to_send(), now=0.0)
    assert initiator.state is LinkState.ESTABLISHED
    while initiator.next_event() is not None:
        pass
    return initiator, responder


def _core_in(state: str) -> LinkCore:
    """A link core in ``state``: a fresh responder, an initiator mid-handshake, or established."""
    if state == "responder":
        return LinkCore(make_identity("target"), initiator=False, nonce=b"\x01" * 32, now=0.0)
    if state == "initiator":
        return LinkCore(make_identity("target"), initiator=True, nonce=b"\x02" * 32, now=0.0)
    return _established_pair()[0]


@HOSTILE
@given(st.sampled_from(["responder", "initiator", "established"]), streams)
def test_link_core_only_closes_on_hostile_frames(state: str, stream: bytes) -> None:
    core = _core_in(state)
    core.receive_data(stream, now=1.0)  # any exception fails the test
    core.data_to_send()
    while core.next_event() is not None:
        pass
    assert core.state in (LinkState.HANDSHAKE, LinkState.ESTABLISHED, LinkState.CLOSED)


@HOSTILE
@given(st.lists(payloads, min_size=1, max_size=4))
def test_established_link_core_only_closes_on_sealed_hostile_payloads(
        batch: list[bytes]) -> None:
    """The same payloads sealed by the real peer: they open, so the decoder sees them."""
    core, peer = _established_pair()
    assert peer.sealer is not None
    for payload in batch:
        if len(payload) <= MAX_PAYLOAD:
            core.receive_data(peer.sealer.seal(payload), now=1.0)  # never raises
    while core.next_event() is not None:
        pass
    if core.is_closed:
        assert core.down is not None and core.down.code != CloseCode.AUTHENTICATION_FAILED


def test_nesting_limit_is_exact() -> None:
    payload = msgpack.packb(nested(MAX_DEPTH))
    assert nesting_depth(unpack(payload)) == MAX_DEPTH
    with pytest.raises(MalformedMessage, match="nested more than"):
        unpack(msgpack.packb(nested(MAX_DEPTH + 1)))
    with pytest.raises(MalformedMessage):
        unpack(deep_array_bytes(1_023))  # within msgpack's own stack, past ours
    with pytest.raises(MalformedMessage):
        unpack(deep_array_bytes(60_000))  # past msgpack's own stack
    with pytest.raises(MalformedMessage):
        unpack(msgpack.packb({"k": nested(MAX_DEPTH)}))  # a map counts as a level


def test_describe_value_never_walks_containers() -> None:
    assert describe_value(nested(1_100)) == "an array of 1"
    assert describe_value({"a": 1}) == "a map of 1"
    assert describe_value("x" * 100).endswith("...")
    assert len(describe_value(b"y" * 1000)) == 40


def test_unassigned_type_during_handshake_closes_instead_of_raising() -> None:
    """Issue #11 item 1: the documented 0x3f vector as a stranger's first frame."""
    frame = next(v.frame for v in VECTORS if "0x3f" in v.name)
    core = _core_in("responder")
    core.receive_data(frame, now=0.0)
    assert core.state is LinkState.CLOSED
    assert MessageType.DATA in MessageType  # the enum itself is untouched


def _per_entry_reference(entries: Any) -> bool:
    """Whether a check of each entry on its own (the rule, protocol.md) accepts ``entries``."""
    if type(entries) is not list:
        return False
    for entry in entries:
        if type(entry) is not list or len(entry) != 3:
            return False
        destination, seqno, metric = entry
        if type(destination) is not bytes or len(destination) != 16:
            return False
        if type(seqno) is not int or not 0 <= seqno <= 0xFFFF:
            return False
        if type(metric) is not int or not 0 <= metric <= 2**32 - 1:
            return False
    return True


route_entries = st.lists(
    st.lists(st.binary(min_size=15, max_size=17) | st.integers(0, 2**32) | deep_values
             | st.booleans() | st.text(max_size=2), min_size=2, max_size=4)
    | st.tuples(st.binary(min_size=16, max_size=16), st.integers(0, 0xFFFF),
                st.integers(0, 2**32 - 1)).map(list),
    max_size=6,
) | deep_values


@given(route_entries, st.integers(0, 2**32) | deep_values)
def test_route_update_bulk_decoding_refuses_exactly_what_each_entry_check_would(
        entries: Any, interval: Any) -> None:
    """A ROUTE_UPDATE skips the generic depth walk and is checked column by column
    (#16): it must accept and refuse the same payloads as a check of each entry, and
    refuse a deep value anywhere (as MalformedMessage, without recursing into it)."""
    payload = msgpack.packb([PROTOCOL_VERSION, MessageType.ROUTE_UPDATE, interval, entries],
                            use_bin_type=True)
    ok = _per_entry_reference(entries) and type(interval) is int and interval < 2**32
    if ok:
        message = decode_message(payload)
        assert nesting_depth(message.fields()) == (3 if entries else 2)
    else:
        with pytest.raises(MalformedMessage):
            decode_message(payload)
