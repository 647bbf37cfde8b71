"""The test vectors of docs/protocol.md, checked against the reference implementation.

Every fenced block of the document whose info string is ``vector``,
``handshake-vector``, ``exchange-vector``, ``sealed-vector`` or ``rtt-vector`` is
parsed here (the format is described in section 18 of the document).  Valid frames must decode
to the documented message and re-encode to the documented bytes; invalid
frames must raise the documented :class:`~overlay.errors.ProtocolError`
subclass and make a link close with the documented code.  Deleting the vectors
of a message type from the document makes :func:`test_every_message_type_has_a_vector`
fail.  The echo reply and error report vectors are also re-derived from the
forwarding core, so their bodies are exactly what a node sends.  The vectors
are written by ``tests/proto/regenerate_vectors.py``; a test checks that running it
would change nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest

from overlay import errors
from overlay.ids import Identity, NodeId, signature_is_valid
from overlay.proto.codec import MAX_PAYLOAD, FrameDecoder, unpack
from overlay.proto.forwarding import (
    ERROR_TYPES,
    Dropped,
    ErrorReport,
    Forward,
    Forwarder,
    UnreachableCode,
)
from overlay.proto.handshake import derive_session_keys
from overlay.proto.link import (
    INITIATOR_CONTEXT,
    RESPONDER_CONTEXT,
    LinkCore,
    LinkState,
    handshake_transcript,
)
from overlay.proto.messages import (
    DEFAULT_TTL,
    MAX_UPDATE_ENTRIES,
    METRIC_INFINITY,
    PROTOCOL_VERSION,
    U16_MAX,
    Ack,
    Attach,
    Close,
    CloseCode,
    DirectoryNotice,
    DirectoryRequest,
    DirectoryResponse,
    Hello,
    HelloAck,
    Message,
    MessageType,
    Ping,
    Pong,
    RoutedPacket,
    RouteEntry,
    RouteUpdate,
    SeqnoRequest,
    decode_message,
    encode_message,
)
from overlay.proto.sealing import MAX_SEALED_PAYLOAD, TAG_LEN, Opener, Sealer, frame_nonce

PROTOCOL_MD = Path(__file__).parents[2] / "docs" / "protocol.md"

_BLOCK = re.compile(r"^```(?P<kind>[A-Za-z][\w-]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)

VALID_KEYS = {"name", "msgpack", "message", "hex"}
INVALID_KEYS = {"name", "note", "error", "close", "hex"}

# What a ``message:`` line may refer to; no builtins.
MESSAGE_NAMESPACE: dict[str, Any] = {
    "DirectoryRequest": DirectoryRequest,
    "DirectoryResponse": DirectoryResponse,
    "DirectoryNotice": DirectoryNotice,
    "Hello": Hello,
    "HelloAck": HelloAck,
    "Ack": Ack,
    "Close": Close,
    "Ping": Ping,
    "Pong": Pong,
    "RouteUpdate": RouteUpdate,
    "RouteEntry": RouteEntry,
    "SeqnoRequest": SeqnoRequest,
    "RoutedPacket": RoutedPacket,
    "Attach": Attach,
    "NodeId": NodeId,
    "bytes": bytes,
}


# --- parsing the document ---------------------------------------------------------


def _blocks(kind: str) -> list[str]:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    return [m["body"] for m in _BLOCK.finditer(text) if m["kind"] == kind]


def _lines(body: str) -> list[tuple[str, str]]:
    """``key: value`` lines of a block, in order (blank lines skipped)."""
    pairs = []
    for line in body.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(": ")
        assert sep, f"not a 'key: value' line in a vector block: {line!r}"
        pairs.append((key.strip(), value.strip()))
    return pairs


def _fields(body: str) -> dict[str, str]:
    pairs = _lines(body)
    fields = dict(pairs)
    assert len(fields) == len(pairs), f"repeated key in vector block: {body[:80]!r}"
    return fields


@dataclass(frozen=True)
class Vector:
    fields: dict[str, str]

    @property
    def name(self) -> str:
        return self.fields["name"]

    @property
    def frame(self) -> bytes:
        return bytes.fromhex(self.fields["hex"])

    @property
    def valid(self) -> bool:
        return "error" not in self.fields

    def expected_message(self) -> Message:
        message = eval(self.fields["message"], {"__builtins__": {}}, dict(MESSAGE_NAMESPACE))
        assert isinstance(message, Message), f"{self.name}: 'message' is not a Message"
        return message


def _load_vectors() -> list[Vector]:
    return [Vector(_fields(body)) for body in _blocks("vector")]


VECTORS = _load_vectors()
VALID = [v for v in VECTORS if v.valid]
INVALID = [v for v in VECTORS if not v.valid]


def _single_block(kind: str) -> str:
    blocks = _blocks(kind)
    assert len(blocks) == 1, f"expected exactly one {kind!r} block, found {len(blocks)}"
    return blocks[0]


# --- helpers ----------------------------------------------------------------------


def diag(obj: Any) -> str:
    """The document's diagnostic notation of a decoded msgpack value."""
    if obj is None:
        return "nil"
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, int | float):
        return repr(obj)
    if isinstance(obj, str):
        return json.dumps(obj, ensure_ascii=False)
    if isinstance(obj, bytes):
        return f"h'{obj.hex()}'"
    if isinstance(obj, list):
        return "[" + ", ".join(diag(item) for item in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{diag(k)}: {diag(v)}" for k, v in obj.items()) + "}"
    raise TypeError(f"no diagnostic notation for {type(obj).__name__}")


def receive_frame(frame: bytes) -> Message:
    """Run ``frame`` through the framing and the message decoder, as a link does."""
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    payload = decoder.next_payload()
    assert payload is not None, "the vector's frame is incomplete"
    assert decoder.buffered == 0, "the vector holds bytes beyond one frame"
    return decode_message(payload)


def error_class(name: str) -> type[errors.ProtocolError]:
    cls = getattr(errors, name, None)
    assert isinstance(cls, type) and issubclass(cls, errors.ProtocolError), (
        f"{name!r} is not a ProtocolError subclass in overlay.errors"
    )
    return cls


@dataclass(frozen=True)
class HandshakeVector:
    initiator: Identity
    responder: Identity
    values: dict[str, bytes]


def handshake_vector() -> HandshakeVector:
    values = {k: bytes.fromhex(v) for k, v in _fields(_single_block("handshake-vector")).items()}
    return HandshakeVector(
        Identity.from_seed(values["initiator_seed"]),
        Identity.from_seed(values["responder_seed"]),
        values,
    )


def link_pair(hv: HandshakeVector) -> tuple[LinkCore, LinkCore]:
    initiator = LinkCore(hv.initiator, initiator=True,
                         nonce=hv.values["initiator_ephemeral_secret"], now=0.0)
    responder = LinkCore(hv.responder, initiator=False,
                         nonce=hv.values["responder_ephemeral_secret"], now=0.0)
    return initiator, responder


def established_pair(hv: HandshakeVector) -> tuple[LinkCore, LinkCore]:
    initiator, responder = link_pair(hv)
    for _ in range(4):
        responder.receive_data(initiator.data_to_send(), 0.0)
        initiator.receive_data(responder.data_to_send(), 0.0)
    assert initiator.state is LinkState.ESTABLISHED
    assert responder.state is LinkState.ESTABLISHED
    return initiator, responder


# --- the document's structure --------------------------------------------------------


def test_vector_blocks_are_well_formed() -> None:
    assert VECTORS, f"no ```vector blocks in {PROTOCOL_MD}"
    names = [v.name for v in VECTORS]
    assert len(names) == len(set(names)), "vector names must be unique"
    for vector in VECTORS:
        keys = set(vector.fields)
        if vector.valid:
            assert keys == VALID_KEYS, f"{vector.name}: keys {sorted(keys)}"
        else:
            assert keys == INVALID_KEYS, f"{vector.name}: keys {sorted(keys)}"
        frame = vector.frame
        assert len(frame) >= 4, f"{vector.name}: shorter than a length prefix"


def valid_messages() -> list[Message]:
    return [v.expected_message() for v in VALID]


def test_every_message_type_has_a_vector() -> None:
    kinds = {type(m) for m in valid_messages()}
    assert {
        Hello,
        HelloAck,
        Ack,
        Close,
        Ping,
        Pong,
        RouteUpdate,
        SeqnoRequest,
        RoutedPacket,
    } <= kinds
    covered = {m.header_type() for m in valid_messages()}
    missing = [t.name for t in MessageType if t not in covered]
    assert not missing, f"no valid vector for {missing}"
    assert any(t not in set(MessageType) for t in covered), "no vector of an unassigned routed type"
    assert len(INVALID) >= 3
    assert {"FrameTooLarge", "UnsupportedVersion", "MalformedMessage"} <= {
        v.fields["error"] for v in INVALID
    }


def test_route_update_vectors_cover_empty_and_retraction() -> None:
    updates = [m for m in valid_messages() if isinstance(m, RouteUpdate)]
    assert {len(u.entries) for u in updates} >= {0, 1, 2}
    metrics = {e.metric for u in updates for e in u.entries}
    assert METRIC_INFINITY in metrics and min(metrics) == 0


# --- valid frames -------------------------------------------------------------------


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v.name)
def test_valid_vector_decodes(vector: Vector) -> None:
    expected = vector.expected_message()
    decoded = receive_frame(vector.frame)
    assert type(decoded) is type(expected)
    assert decoded == expected
    obj = unpack(vector.frame[4:])
    assert obj[0] == PROTOCOL_VERSION
    assert obj[1] == expected.header_type()
    assert diag(obj) == vector.fields["msgpack"]


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v.name)
def test_valid_vector_encodes_exactly(vector: Vector) -> None:
    assert encode_message(vector.expected_message()).hex() == vector.fields["hex"]


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v.name)
def test_valid_vector_byte_by_byte(vector: Vector) -> None:
    decoder = FrameDecoder()
    frame = vector.frame
    payloads = []
    for i in range(len(frame)):
        decoder.receive_data(frame[i : i + 1])
        if (payload := decoder.next_payload()) is not None:
            payloads.append((i, payload))
    assert payloads == [(len(frame) - 1, frame[4:])]


# --- invalid frames ------------------------------------------------------------------


@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v.name)
def test_invalid_vector_raises(vector: Vector) -> None:
    cls = error_class(vector.fields["error"])
    with pytest.raises(errors.ProtocolError) as info:
        receive_frame(vector.frame)
    assert type(info.value) is cls, f"raised {type(info.value).__name__}: {info.value}"
    assert isinstance(info.value, errors.RemoteProtocolError)
    assert info.value.close_code == CloseCode[vector.fields["close"]]


@pytest.mark.parametrize("established", [False, True], ids=["handshake", "established"])
@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v.name)
def test_invalid_vector_closes_link(vector: Vector, established: bool) -> None:
    hv = handshake_vector()
    code = CloseCode[vector.fields["close"]]
    if not established:
        _, link = link_pair(hv)
        link.receive_data(vector.frame, 1.0)
        assert link.down is not None and link.down.code == code and not link.down.by_peer
        # A CLOSE; to a version-1 peer, in version 1, which it can read (section 3).
        obj = unpack(link.data_to_send()[4:])
        assert obj[1:3] == [MessageType.CLOSE, code]
        assert obj[0] == (1 if vector.fields["error"] == "UnsupportedVersion" else PROTOCOL_VERSION)
        return
    # On an established link the same payload arrives sealed, as the peer would send it
    # (an oversized prefix stays oversized: above the sealed limit).
    peer, link = established_pair(hv)
    assert peer.sealer is not None
    if int.from_bytes(vector.frame[:4], "big") > MAX_PAYLOAD:
        data = (MAX_SEALED_PAYLOAD + 1).to_bytes(4, "big") + vector.frame[4:]
    else:
        data = peer.sealer.seal(vector.frame[4:])
    link.receive_data(data, 1.0)
    assert link.down is not None and link.down.code == code and not link.down.by_peer
    peer.receive_data(link.data_to_send(), 1.0)  # the CLOSE is sealed, and opens
    assert peer.down is not None and peer.down.code == code and peer.down.by_peer


def test_a_full_route_update_fits_in_a_frame() -> None:
    """The largest entries (u16 seqno, u32 metric) in the largest update stay under the limit."""
    entry = RouteEntry(NodeId(bytes(16)), U16_MAX, METRIC_INFINITY)
    frame = encode_message(RouteUpdate(2**32 - 1, (entry,) * MAX_UPDATE_ENTRIES))
    assert len(frame) - 4 <= MAX_PAYLOAD


# --- forwarding: the routed vectors are what the forwarding core sends ------------------


def _routed(packet_type: int) -> list[RoutedPacket]:
    return [m for m in valid_messages() if isinstance(m, RoutedPacket) and m.type == packet_type]


def test_echo_reply_vector_is_the_responders_answer() -> None:
    replies = _routed(MessageType.ECHO_REPLY)
    assert replies
    for reply in replies:
        request_id, _, address = reply.body
        [request] = [
            r
            for r in _routed(MessageType.ECHO_REQUEST)
            if r.packet_id == request_id and r.src == reply.dst and r.dst == reply.src
        ]
        responder = Forwarder(
            reply.src, lambda dst: dst, address=address, first_packet_id=reply.packet_id
        )
        assert responder.receive(request) == [Forward(reply.dst, reply)]
        assert reply.ttl == DEFAULT_TTL


@pytest.mark.parametrize("report_type", sorted(ERROR_TYPES), ids=lambda t: t.name)
def test_error_report_vector_is_what_the_reporter_sends(report_type: MessageType) -> None:
    reports = _routed(report_type)
    assert reports
    for report in reports:
        body = ErrorReport.from_body(report.body)
        expired = report_type == MessageType.TIME_EXCEEDED
        assert body.code == (UnreachableCode.NONE if expired else UnreachableCode.NO_ROUTE)
        # The dropped packet: from the report's destination, with TTL 1 (it expires at the
        # reporter) or with no route at the reporter.
        original = RoutedPacket(
            body.original_type,
            1 if expired else DEFAULT_TTL,
            report.dst,
            body.original_dst,
            body.original_packet_id,
            None,
        )
        reporter = Forwarder(
            report.src,
            lambda dst, back=report.dst: back if dst == back else None,
            address=body.reporter_address,
            first_packet_id=report.packet_id,
        )
        dropped, sent = reporter.receive(original)
        assert isinstance(dropped, Dropped)
        assert sent == Forward(report.dst, report)
        # A relay that cannot forward the report drops it without reporting it.
        relay = Forwarder(NodeId(bytes(16)), lambda dst: None)
        for ttl in (1, DEFAULT_TTL):  # expired; no route
            assert [type(a) for a in relay.receive(replace(report, ttl=ttl))] == [Dropped]
        assert relay.counters.errors_sent == 0


# --- handshake -------------------------------------------------------------------------


def test_handshake_identities() -> None:
    hv = handshake_vector()
    v = hv.values
    assert hv.initiator.public_key == v["initiator_public_key"]
    assert hv.responder.public_key == v["responder_public_key"]
    assert hv.initiator.node_id == NodeId(v["initiator_node_id"])
    assert hv.responder.node_id == NodeId(v["responder_node_id"])
    for side in ("initiator", "responder"):
        secret = v[f"{side}_ephemeral_secret"]
        assert len(secret) == 32
        assert nacl.bindings.crypto_scalarmult_base(secret) == v[f"{side}_ephemeral_key"]


def test_handshake_key_schedule() -> None:
    """The shared secret, both session keys and the session id, computed here from the
    document's formulas with libsodium and hashlib directly, and by the reference."""
    v = handshake_vector().values
    e_i, e_r = v["initiator_ephemeral_key"], v["responder_ephemeral_key"]
    dh = nacl.bindings.crypto_scalarmult(v["initiator_ephemeral_secret"], e_r)
    assert dh == nacl.bindings.crypto_scalarmult(v["responder_ephemeral_secret"], e_i)
    assert dh == v["shared_secret"]
    body = (b"\x00" + bytes([PROTOCOL_VERSION]) + v["initiator_public_key"] + e_i
            + v["responder_public_key"] + e_r)
    for label, name in ((b"initiator to responder", "initiator_to_responder_key"),
                        (b"responder to initiator", "responder_to_initiator_key")):
        message = b"overlay link v2 " + label + body
        assert hashlib.blake2b(message, key=dh, digest_size=32).digest() == v[name]
    assert hashlib.sha256(b"overlay session\x00" + e_i + e_r).digest() == v["session_id"]
    for initiator, side in ((True, "initiator"), (False, "responder")):
        keys = derive_session_keys(
            initiator=initiator, own_secret=v[f"{side}_ephemeral_secret"],
            initiator_key=v["initiator_public_key"], initiator_ephemeral=e_i,
            responder_key=v["responder_public_key"], responder_ephemeral=e_r)
        to_responder, to_initiator = ((keys.send, keys.receive) if initiator
                                      else (keys.receive, keys.send))
        assert to_responder == v["initiator_to_responder_key"]
        assert to_initiator == v["responder_to_initiator_key"]
        assert keys.session_id == v["session_id"]
    initiator, responder = established_pair(handshake_vector())
    assert initiator.session_id == responder.session_id == v["session_id"]


@pytest.mark.parametrize(
    ("role", "context", "signer"),
    [
        ("responder", RESPONDER_CONTEXT, "responder"),
        ("initiator", INITIATOR_CONTEXT, "initiator"),
    ],
)
def test_handshake_transcript_and_signature(role: str, context: bytes, signer: str) -> None:
    hv = handshake_vector()
    v = hv.values
    parts = (
        v["initiator_public_key"],
        v["initiator_ephemeral_key"],
        v["responder_public_key"],
        v["responder_ephemeral_key"],
    )
    transcript = v[f"{role}_transcript"]
    # The layout the document describes, independently of handshake_transcript().
    assert transcript == context + b"\x00" + bytes([PROTOCOL_VERSION]) + b"".join(parts)
    assert len(transcript) == 155
    assert handshake_transcript(context, *parts) == transcript
    identity = hv.responder if signer == "responder" else hv.initiator
    signature = v[f"{role}_signature"]
    assert identity.sign(transcript) == signature
    assert signature_is_valid(identity.public_key, transcript, signature)
    tampered = bytearray(transcript)
    tampered[-1] ^= 1
    assert not signature_is_valid(identity.public_key, bytes(tampered), signature)
    other = hv.initiator if signer == "responder" else hv.responder
    assert not signature_is_valid(other.public_key, transcript, signature)


def test_handshake_message_vectors_match_the_handshake() -> None:
    v = handshake_vector().values
    messages = [vector.expected_message() for vector in VALID]
    assert Hello(v["initiator_public_key"], v["initiator_ephemeral_key"]) in messages
    assert (
        HelloAck(v["responder_public_key"], v["responder_ephemeral_key"],
                 v["responder_signature"])
        in messages
    )
    assert Ack(v["initiator_signature"]) in messages


def test_exchange_vector() -> None:
    hv = handshake_vector()
    initiator, responder = link_pair(hv)
    cores = {"initiator": initiator, "responder": responder}
    steps = _lines(_single_block("exchange-vector"))
    assert steps and steps[0][0] == "initiator"
    for number, (side, hex_data) in enumerate(steps, 1):
        assert side in cores, f"line {number}: unknown side {side!r}"
        sender = cores[side]
        receiver = responder if sender is initiator else initiator
        assert sender.data_to_send().hex() == hex_data, f"line {number} ({side})"
        receiver.receive_data(bytes.fromhex(hex_data), 0.0)
    assert initiator.data_to_send() == responder.data_to_send() == b""
    assert initiator.state is responder.state is LinkState.ESTABLISHED
    assert initiator.peer_id == hv.responder.node_id
    assert responder.peer_id == hv.initiator.node_id
    assert initiator.rtt.samples == responder.rtt.samples == 1


def test_sealed_vectors() -> None:
    blocks = [_fields(body) for body in _blocks("sealed-vector")]
    assert len(blocks) >= 2
    v = handshake_vector().values
    assert any(bytes.fromhex(b["key"]) == v["initiator_to_responder_key"] for b in blocks)
    exchange = "".join(hex_data for _, hex_data in _lines(_single_block("exchange-vector")))
    for block in blocks:
        key, counter = bytes.fromhex(block["key"]), int(block["counter"])
        plaintext, sealed = bytes.fromhex(block["plaintext"]), bytes.fromhex(block["hex"])
        assert bytes.fromhex(block["nonce"]) == bytes(4) + counter.to_bytes(8, "big")
        assert frame_nonce(counter) == bytes.fromhex(block["nonce"])
        prefix = sealed[:4]
        assert int.from_bytes(prefix, "big") == len(plaintext) - 4 + TAG_LEN == len(sealed) - 4
        # libsodium directly, then the reference sealer and opener.
        assert nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext[4:], prefix, frame_nonce(counter), key) == sealed[4:]
        sealer, opener = Sealer(key), Opener(key)
        sealer.counter = opener.counter = counter
        assert sealer.seal(plaintext[4:]) == sealed
        assert opener.open(sealed[4:]) == plaintext[4:]
        receive_frame(plaintext)  # the plaintext is a valid frame
        if key == v["initiator_to_responder_key"] and counter == 0:
            assert block["hex"] in exchange  # the initiator's first sealed frame


def test_the_document_is_what_regenerate_vectors_writes() -> None:
    from tests.proto.regenerate_vectors import regenerate

    text = PROTOCOL_MD.read_text(encoding="utf-8")
    assert regenerate(text) == text, "run: python -m tests.proto.regenerate_vectors"


# --- RTT ---------------------------------------------------------------------------------


def test_rtt_vector() -> None:
    hv = handshake_vector()
    core = LinkCore(hv.initiator, initiator=True, nonce=bytes(32), now=0.0)
    rows = _single_block("rtt-vector").strip().splitlines()
    assert len(rows) >= 2
    for row in rows:
        values = dict(re.findall(r"(\w+): (\S+)", row))
        assert set(values) == {"sample_s", "srtt_s", "rttvar_s", "metric_us"}, row
        core.record_rtt(float(values["sample_s"]))
        assert core.rtt.srtt == pytest.approx(float(values["srtt_s"]), rel=1e-9, abs=1e-12)
        assert core.rtt.rttvar == pytest.approx(float(values["rttvar_s"]), rel=1e-9, abs=1e-12)
        assert core.metric_us == int(values["metric_us"])
