"""The link core, two instances wired back to back: no sockets, no clock but ``now``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from overlay.ids import Identity, NodeId
from overlay.proto.handshake import SessionKeys, derive_session_keys, ephemeral_public_key
from overlay.proto.link import (
    INITIATOR_CONTEXT,
    MIN_SEND_BUFFER,
    RESPONDER_CONTEXT,
    LinkConfig,
    LinkCore,
    LinkDown,
    LinkEstablished,
    LinkEvent,
    LinkState,
    MessageReceived,
    RttMeasured,
    handshake_transcript,
)
from overlay.proto.messages import (
    Ack,
    Close,
    CloseCode,
    Hello,
    HelloAck,
    Ping,
    Pong,
    RoutedPacket,
    decode_message,
    encode_message,
)
from overlay.proto.sealing import TAG_LEN, Opener, Sealer
from tests.conftest import make_identity

ALICE = make_identity("alice")
BOB = make_identity("bob")
MALLORY = make_identity("mallory")
NONCE_A = b"\xa1" * 32
NONCE_B = b"\xb2" * 32
EPH_A = ephemeral_public_key(NONCE_A)
EPH_B = ephemeral_public_key(NONCE_B)
CONFIG = LinkConfig(handshake_timeout=5.0, hello_interval=1.0, dead_after=3)


@dataclass
class Side:
    core: LinkCore
    events: list[LinkEvent] = field(default_factory=list)

    def drain(self) -> None:
        while (event := self.core.next_event()) is not None:
            self.events.append(event)

    def downs(self) -> list[LinkDown]:
        return [e for e in self.events if isinstance(e, LinkDown)]


def make_pair(now: float = 0.0, config: LinkConfig = CONFIG,
              expected: NodeId | None = None) -> tuple[Side, Side]:
    a = LinkCore(ALICE, initiator=True, nonce=NONCE_A, now=now, config=config,
                 expected_peer=expected)
    b = LinkCore(BOB, initiator=False, nonce=NONCE_B, now=now, config=config)
    return Side(a), Side(b)


def shuttle(a: Side, b: Side, now: float) -> None:
    """Deliver bytes both ways until both are quiet (a zero-latency wire)."""
    while True:
        moved = False
        for src, dst in ((a, b), (b, a)):
            data = src.core.data_to_send()
            if data:
                dst.core.receive_data(data, now)
                moved = True
        a.drain()
        b.drain()
        if not moved:
            return


def alice_keys(responder: Identity = BOB) -> SessionKeys:
    """Alice's session keys with ``responder`` (NONCE_A, NONCE_B as ephemeral secrets),
    derived here independently of the cores."""
    return derive_session_keys(initiator=True, own_secret=NONCE_A,
                               initiator_key=ALICE.public_key, initiator_ephemeral=EPH_A,
                               responder_key=responder.public_key, responder_ephemeral=EPH_B)


def frames(core: LinkCore, *, plain: int | None = None, opener: Opener | None = None
           ) -> list[object]:
    """Decode what ``core`` wants to send (consumes it): the first ``plain`` frames as
    they are (all of them if None), the rest opened with ``opener``."""
    from overlay.proto.codec import FrameDecoder
    from overlay.proto.sealing import MAX_SEALED_PAYLOAD

    decoder = FrameDecoder(MAX_SEALED_PAYLOAD)
    decoder.receive_data(core.data_to_send())
    out: list[object] = []
    while (payload := decoder.next_payload()) is not None:
        if plain is not None and len(out) >= plain:
            assert opener is not None
            payload = opener.open(payload)
        out.append(decode_message(payload))
    return out


def sealed(sealer: Sealer, message: object) -> bytes:
    return sealer.seal(encode_message(message)[4:])  # type: ignore[arg-type]


def test_handshake_establishes_both_sides_with_the_right_peer_ids() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    assert a.core.state is b.core.state is LinkState.ESTABLISHED
    assert a.core.peer_id == BOB.node_id and b.core.peer_id == ALICE.node_id
    assert LinkEstablished(BOB.node_id, BOB.public_key) in a.events
    assert LinkEstablished(ALICE.node_id, ALICE.public_key) in b.events


def test_handshake_is_exactly_three_messages_then_pings() -> None:
    a, b = make_pair()
    [hello] = frames(a.core)
    assert hello == Hello(ALICE.public_key, EPH_A)  # the ephemeral secret itself is never sent
    b.core.receive_data(encode_message(hello), 0.0)  # type: ignore[arg-type]
    [hello_ack] = frames(b.core)
    assert hello_ack == HelloAck(BOB.public_key, EPH_B, hello_ack.signature)  # type: ignore[union-attr]
    a.core.receive_data(encode_message(hello_ack), 0.0)  # type: ignore[arg-type]
    # ACK in clear, then the first PING sealed with the initiator-to-responder key.
    ack, first_ping = frames(a.core, plain=1, opener=Opener(alice_keys().send))
    assert isinstance(ack, Ack) and first_ping == Ping(0)
    assert a.core.session_id == alice_keys().session_id


def test_rtt_is_measured_from_ping_to_pong() -> None:
    a, b = make_pair(now=10.0)
    # A wire with 20 ms one-way delay: HELLO, HELLO_ACK, then ACK + the first PING.
    b.core.receive_data(a.core.data_to_send(), 10.020)
    a.core.receive_data(b.core.data_to_send(), 10.040)
    b.core.receive_data(a.core.data_to_send(), 10.060)
    a.core.receive_data(b.core.data_to_send(), 10.080)
    a.drain()
    [sample] = [e for e in a.events if isinstance(e, RttMeasured)]
    assert sample.sample == pytest.approx(0.040)
    assert a.core.metric_us == 20_000  # SRTT/2 in microseconds


def test_pings_every_hello_interval() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    assert a.core.get_timer() == 1.0
    for t in (1.0, 2.0, 3.0):
        a.core.handle_timer(t)
        b.core.handle_timer(t)
        shuttle(a, b, now=t)
    assert a.core.counters.pings_sent == 4 and a.core.counters.pongs_received == 4
    assert a.core.state is LinkState.ESTABLISHED


def test_silent_peer_is_dead_exactly_one_dead_interval_after_it_was_last_heard() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    a.core.handle_timer(1.0)
    shuttle(a, b, now=1.0)  # last sign of life from b at t=1
    t = 1.0
    while not a.core.is_closed:
        t = a.core.get_timer()  # type: ignore[assignment]
        a.core.handle_timer(t)
        a.core.data_to_send()  # lost on the wire
    a.drain()
    assert t == pytest.approx(1.0 + CONFIG.dead_interval)
    [down] = a.downs()
    assert down.code == CloseCode.TIMEOUT and not down.by_peer
    # PINGs sent at t=2 and t=3 were never answered (death came before the t=4 one).
    assert a.core.counters.missed_pongs == CONFIG.dead_after - 1
    assert a.core.counters.pings_sent == 4 and a.core.counters.pongs_received == 2


def test_any_frame_from_the_peer_keeps_the_link_alive() -> None:
    a = Side(LinkCore(ALICE, initiator=True, nonce=NONCE_A, now=0.0, config=CONFIG))
    patient = LinkConfig(hello_interval=1.0, dead_after=100)
    b = Side(LinkCore(BOB, initiator=False, nonce=NONCE_B, now=0.0, config=patient))
    shuttle(a, b, now=0.0)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        a.core.handle_timer(t)
        a.core.data_to_send()  # a's pings are lost, but b keeps talking
        b.core.handle_timer(t)
        a.core.receive_data(b.core.data_to_send(), t)
    assert a.core.state is LinkState.ESTABLISHED


def test_impostor_initiator_without_the_private_key_is_refused() -> None:
    """Mallory claims Alice's public key but can only sign with her own."""
    b = Side(LinkCore(BOB, initiator=False, nonce=NONCE_B, now=0.0, config=CONFIG))
    b.core.receive_data(encode_message(Hello(ALICE.public_key, EPH_A)), 0.0)
    [hello_ack] = frames(b.core)
    assert isinstance(hello_ack, HelloAck)
    forged = MALLORY.sign(handshake_transcript(
        INITIATOR_CONTEXT, ALICE.public_key, EPH_A, BOB.public_key, hello_ack.ephemeral_key))
    b.core.receive_data(encode_message(Ack(forged)), 0.0)
    b.drain()
    [down] = b.downs()
    assert down.code == CloseCode.BAD_SIGNATURE
    assert ALICE.node_id.hex() in down.reason and "private key" in down.reason
    assert b.core.state is LinkState.CLOSED and b.core.peer_id is None
    # Sealed: the responder seals everything after its HELLO_ACK.
    [close] = frames(b.core, plain=0, opener=Opener(alice_keys().receive))
    assert close == Close(CloseCode.BAD_SIGNATURE, down.reason)
    assert not any(isinstance(e, LinkEstablished) for e in b.events)


def test_impostor_responder_without_the_private_key_is_refused() -> None:
    a = Side(LinkCore(ALICE, initiator=True, nonce=NONCE_A, now=0.0, config=CONFIG))
    frames(a.core)
    forged = MALLORY.sign(handshake_transcript(
        RESPONDER_CONTEXT, ALICE.public_key, EPH_A, BOB.public_key, EPH_B))
    a.core.receive_data(encode_message(HelloAck(BOB.public_key, EPH_B, forged)), 0.0)
    a.drain()
    [down] = a.downs()
    assert down.code == CloseCode.BAD_SIGNATURE and BOB.node_id.hex() in down.reason
    assert [type(m) for m in frames(a.core)] == [Close]


def test_signature_from_another_session_cannot_be_replayed() -> None:
    """A HELLO_ACK signed for a different initiator ephemeral key does not verify."""
    a = Side(LinkCore(ALICE, initiator=True, nonce=NONCE_A, now=0.0, config=CONFIG))
    old = BOB.sign(handshake_transcript(
        RESPONDER_CONTEXT, ALICE.public_key, ephemeral_public_key(bytes(32)), BOB.public_key,
        EPH_B))
    a.core.receive_data(encode_message(HelloAck(BOB.public_key, EPH_B, old)), 0.0)
    a.drain()
    assert a.downs()[0].code == CloseCode.BAD_SIGNATURE


def test_responder_signature_cannot_be_reflected_as_the_initiators() -> None:
    b = Side(LinkCore(BOB, initiator=False, nonce=NONCE_B, now=0.0, config=CONFIG))
    b.core.receive_data(encode_message(Hello(ALICE.public_key, EPH_A)), 0.0)
    [hello_ack] = frames(b.core)
    assert isinstance(hello_ack, HelloAck)
    b.core.receive_data(encode_message(Ack(hello_ack.signature)), 0.0)
    b.drain()
    assert b.downs()[0].code == CloseCode.BAD_SIGNATURE


def test_connecting_to_ourselves_is_refused() -> None:
    a = Side(LinkCore(ALICE, initiator=True, nonce=NONCE_A, now=0.0, config=CONFIG))
    b = Side(LinkCore(ALICE, initiator=False, nonce=NONCE_B, now=0.0, config=CONFIG))
    shuttle(a, b, now=0.0)
    assert b.downs()[0].code == CloseCode.SELF_CONNECTION
    assert a.downs()[0] == LinkDown(CloseCode.SELF_CONNECTION, "connected to ourselves", True)


def test_wrong_peer_is_refused_when_a_node_id_was_expected() -> None:
    a, b = make_pair(expected=MALLORY.node_id)
    shuttle(a, b, now=0.0)
    [down] = a.downs()
    assert down.code == CloseCode.WRONG_PEER and MALLORY.node_id.hex() in down.reason
    assert b.downs()[0].by_peer


@pytest.mark.parametrize(("version", "close_version"), [(1, 1), (3, 2)])
def test_version_mismatch_is_refused_with_the_versions_in_the_reason(
        version: int, close_version: int) -> None:
    """A version-1 HELLO is refused with a version-1 CLOSE, which a v1 node can read."""
    import msgpack

    b = Side(LinkCore(BOB, initiator=False, nonce=NONCE_B, now=0.0, config=CONFIG))
    payload = msgpack.packb([version, 1, ALICE.public_key, NONCE_A])
    b.core.receive_data(len(payload).to_bytes(4, "big") + payload, 0.0)
    b.drain()
    [down] = b.downs()
    assert down.code == CloseCode.VERSION_MISMATCH
    assert f"version {version}, we speak 2" in down.reason
    assert f"upgrade the node that speaks version {min(version, 2)}" in down.reason
    sent = b.core.data_to_send()
    assert msgpack.unpackb(sent[4:]) == [close_version, 4, 1, down.reason]


@pytest.mark.parametrize("step", ["hello", "ack"])
def test_each_handshake_step_has_its_own_timeout(step: str) -> None:
    b = Side(LinkCore(BOB, initiator=False, nonce=NONCE_B, now=0.0, config=CONFIG))
    # The first HELLO gets only hello_timeout; after it, the ACK gets handshake_timeout.
    start, limit, missing = 0.0, CONFIG.hello_timeout, "no complete HELLO"
    if step == "ack":
        start, limit, missing = 1.5, CONFIG.handshake_timeout, "no ACK"
        b.core.receive_data(encode_message(Hello(ALICE.public_key, EPH_A)), start)
    assert b.core.awaiting_hello == (step == "hello")
    assert b.core.get_timer() == start + limit
    b.core.handle_timer(start + limit - 0.001)
    assert not b.core.is_closed
    b.core.handle_timer(start + limit)
    b.drain()
    [down] = b.downs()
    assert down.code == CloseCode.TIMEOUT and missing in down.reason
    assert b.core.get_timer() is None
    assert not b.core.awaiting_hello


def test_hello_timeout_is_capped_by_the_handshake_timeout() -> None:
    config = LinkConfig(handshake_timeout=0.5, hello_timeout=2.0)
    b = LinkCore(BOB, initiator=False, nonce=NONCE_B, now=10.0, config=config)
    assert b.get_timer() == 10.5
    a = LinkCore(ALICE, initiator=True, nonce=NONCE_A, now=10.0, config=CONFIG)
    assert a.get_timer() == 10.0 + CONFIG.handshake_timeout  # the initiator: no HELLO wait
    assert not a.awaiting_hello


@pytest.mark.parametrize(
    "message",
    [
        Ping(1),
        Ack(b"s" * 64),
        RoutedPacket(0x20, 5, ALICE.node_id, BOB.node_id, 1, b"early"),
    ],
)
def test_valid_message_at_the_wrong_moment_closes_the_link(message: object) -> None:
    b = Side(LinkCore(BOB, initiator=False, nonce=NONCE_B, now=0.0, config=CONFIG))
    b.core.receive_data(encode_message(message), 0.0)  # type: ignore[arg-type]
    b.drain()
    [down] = b.downs()
    assert down.code == CloseCode.PROTOCOL_ERROR and "unexpected" in down.reason


def test_hello_on_an_established_link_closes_it() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    assert a.core.sealer is not None
    b.core.receive_data(sealed(a.core.sealer, Hello(ALICE.public_key, EPH_A)), 0.0)
    b.drain()
    assert b.downs()[0].code == CloseCode.PROTOCOL_ERROR


def test_a_plaintext_frame_on_an_established_link_fails_authentication() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    b.core.receive_data(encode_message(Ping(5)), 0.0)
    b.drain()
    [down] = b.downs()
    assert down.code == CloseCode.AUTHENTICATION_FAILED and "authentication" in down.reason


def test_routed_packets_are_delivered_as_events_once_up() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    packet = RoutedPacket(0x20, 32, ALICE.node_id, BOB.node_id, 9, b"hello")
    a.core.send(packet)
    shuttle(a, b, now=0.0)
    assert MessageReceived(packet) in b.events


def test_garbage_closes_with_a_reason_and_later_input_is_ignored() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    assert a.core.sealer is not None
    b.core.receive_data(a.core.sealer.seal(b"\xc1\xc1"), 0.0)  # authentic, not msgpack
    b.drain()
    [down] = b.downs()
    assert down.code == CloseCode.PROTOCOL_ERROR and "msgpack" in down.reason
    b.core.receive_data(encode_message(Ping(5)), 0.0)
    b.core.receive_eof(0.0)
    b.drain()
    assert len(b.downs()) == 1  # CLOSED is sticky; LinkDown is reported once


def test_close_reaches_the_peer_with_its_reason() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    a.core.close(CloseCode.NORMAL, "maintenance")
    a.core.close(CloseCode.NORMAL, "twice")  # idempotent
    shuttle(a, b, now=0.0)
    assert b.downs() == [LinkDown(CloseCode.NORMAL, "maintenance", True)]
    assert a.downs() == [LinkDown(CloseCode.NORMAL, "maintenance", False)]


def test_eof_mid_frame_is_reported() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    b.core.receive_data(encode_message(Ping(1))[:3], 0.0)
    b.core.receive_eof(0.0)
    b.drain()
    assert "middle of a frame" in b.downs()[0].reason


def test_sending_before_establishment_or_control_messages_is_our_bug() -> None:
    from overlay.errors import LocalProtocolError

    a, _ = make_pair()
    packet = RoutedPacket(0x20, 1, ALICE.node_id, BOB.node_id, 1, None)
    with pytest.raises(LocalProtocolError):
        a.core.send(packet)
    with pytest.raises(LocalProtocolError):
        LinkCore(ALICE, initiator=True, nonce=b"short", now=0.0)


def test_identity_helpers() -> None:
    assert Identity.from_seed(ALICE.seed).node_id == ALICE.node_id
    assert NodeId.from_hex(ALICE.node_id.hex()) == ALICE.node_id
    assert ALICE.node_id.short == ALICE.node_id.hex()[:8]
    with pytest.raises(ValueError, match="32 hex digits"):
        NodeId.from_hex("abc")


# --- the bounded send buffer ----------------------------------------------------------

SMALL = LinkConfig(handshake_timeout=5.0, hello_interval=1.0, dead_after=3,
                   max_send_buffer=MIN_SEND_BUFFER)


def ping_flood(sender: Side, count: int, first_seq: int = 0) -> bytes:
    """``count`` PINGs sealed by ``sender`` (bypassing its core, as a flooding peer would)."""
    sealer = sender.core.sealer
    assert sealer is not None
    return b"".join(sealer.seal(encode_message(Ping(first_seq + i))[4:]) for i in range(count))


def test_a_peer_that_pings_and_never_reads_is_closed_when_the_buffer_is_full() -> None:
    a, b = make_pair(config=SMALL)
    shuttle(a, b, now=0.0)
    pong_size = len(encode_message(Pong(70_000)))
    needed = SMALL.max_send_buffer // pong_size + 1
    # The PONGs pile up in B's buffer: the driver takes nothing (the peer does not read).
    b.core.receive_data(ping_flood(a, needed + 1_000, first_seq=70_000), 0.5)
    b.drain()
    [down] = b.downs()
    assert down == LinkDown(CloseCode.SLOW_READER, down.reason, by_peer=False)
    assert "does not read" in down.reason and str(SMALL.max_send_buffer) in down.reason
    # The backlog (sealed PONGs) stays, the CLOSE after it, and nothing more is queued.
    *pongs, close = frames(b.core, plain=0, opener=a.core.opener)
    assert close == Close(CloseCode.SLOW_READER, down.reason)
    assert pongs and all(isinstance(pong, Pong) for pong in pongs)
    b.core.receive_data(ping_flood(a, 100), 0.6)
    b.core.handle_timer(5.0)
    assert b.core.pending_bytes == 0 and b.core.get_timer() is None


def test_the_buffer_never_grows_past_its_cap() -> None:
    a, b = make_pair(config=SMALL)
    shuttle(a, b, now=0.0)
    high = 0
    for batch in range(200):
        b.core.receive_data(ping_flood(a, 500, first_seq=batch * 500), 0.5)
        high = max(high, b.core.pending_bytes)
        if b.core.is_closed:
            break
    assert b.core.is_closed
    assert high <= SMALL.max_send_buffer + len(encode_message(Close(9, "x" * 256))) + TAG_LEN


def test_a_peer_that_reads_is_never_closed_however_fast_it_pings() -> None:
    a, b = make_pair(config=SMALL)
    shuttle(a, b, now=0.0)
    answers = 0
    for _ in range(20):  # 100,000 PINGs: three times the cap in PONGs
        b.core.receive_data(ping_flood(a, 5_000), 0.5)
        answers += len(b.core.data_to_send())  # the driver writes after every read
    assert answers > 2 * SMALL.max_send_buffer
    b.drain()
    assert not b.downs() and b.core.state is LinkState.ESTABLISHED


def test_data_fills_only_three_quarters_and_leaves_room_for_control_frames() -> None:
    a, b = make_pair(config=SMALL)
    shuttle(a, b, now=0.0)
    packet = RoutedPacket(0x20, 5, ALICE.node_id, BOB.node_id, 1, b"x" * 60_000)
    sent = 0
    while a.core.can_send:
        a.core.send(packet)
        sent += 1
    assert SMALL.data_send_limit <= a.core.pending_bytes < SMALL.max_send_buffer
    assert sent == -(-SMALL.data_send_limit // len(encode_message(packet)))
    from overlay.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError, match="send buffer is full"):
        a.core.send(packet)
    # A full data buffer is the caller's problem (it drops), not a reason to close; the
    # link still answers PINGs and sends its own from the reserve.
    a.core.receive_data(ping_flood(b, 100), 0.5)
    a.core.handle_timer(1.0)
    a.drain()
    assert a.core.state is LinkState.ESTABLISHED and not a.downs()
    assert a.core.counters.pings_sent == 2


def test_a_stalled_write_ends_the_link_without_a_close() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    a.core.receive_data(ping_flood(b, 10), 0.5)
    a.core.write_stalled(10.0)
    a.drain()
    [down] = a.downs()
    assert down == LinkDown(CloseCode.SLOW_READER, "the peer read nothing for 10 s",
                            by_peer=False)
    assert a.core.data_to_send() == b""  # the stream is unusable: not even a CLOSE
    a.core.write_stalled(10.0)
    a.drain()
    assert len(a.downs()) == 1


def test_data_to_send_in_chunks_keeps_the_byte_order() -> None:
    a, b = make_pair()
    shuttle(a, b, now=0.0)
    a.core.receive_data(ping_flood(b, 1_000), 0.5)
    chunks = []
    while chunk := a.core.data_to_send(777):
        assert len(chunk) <= 777
        chunks.append(chunk)
    assert len(chunks) > 1
    b.core.receive_data(b"".join(chunks), 0.6)  # opens only if every byte is in order
    b.drain()
    assert not b.downs() and b.core.state is LinkState.ESTABLISHED
    assert b.core.counters.frames_received >= 1_000


def test_a_send_buffer_too_small_for_a_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="max_send_buffer"):
        LinkConfig(max_send_buffer=MIN_SEND_BUFFER - 1)
    with pytest.raises(ValueError, match="positive"):
        LinkConfig(write_stall_timeout=0)
