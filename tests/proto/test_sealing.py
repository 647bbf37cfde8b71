"""Frame sealing: the Sealer/Opener pair alone, then inside two established link cores."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import (
    AuthenticationFailed,
    KeysExhausted,
    LocalProtocolError,
    RemoteProtocolError,
)
from overlay.proto.codec import MAX_PAYLOAD
from overlay.proto.link import LinkConfig, LinkCore, LinkDown, LinkState, MessageReceived
from overlay.proto.messages import CloseCode, Ping, RoutedPacket, encode_message
from overlay.proto.sealing import (
    FRAME_LIMIT,
    MAX_SEALED_PAYLOAD,
    TAG_LEN,
    Opener,
    Sealer,
    frame_nonce,
)
from tests.conftest import make_identity

KEY = bytes(range(32))
ALICE = make_identity("alice")
BOB = make_identity("bob")
PAYLOAD = encode_message(Ping(7))[4:]


def test_nonce_layout_is_four_zero_bytes_then_the_counter_big_endian() -> None:
    assert frame_nonce(0) == bytes(12)
    assert frame_nonce(1) == bytes(11) + b"\x01"
    assert frame_nonce(FRAME_LIMIT - 1) == bytes(4) + b"\xff" * 8


def test_a_sealed_frame_counts_its_ciphertext_and_opens_in_order() -> None:
    sealer, opener = Sealer(KEY), Opener(KEY)
    frames = [sealer.seal(PAYLOAD) for _ in range(3)]
    for frame in frames:
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4 == len(PAYLOAD) + TAG_LEN
        assert PAYLOAD not in frame
    assert len(set(frames)) == 3  # one nonce per frame: the same plaintext never repeats
    assert [opener.open(f[4:]) for f in frames] == [PAYLOAD] * 3
    assert sealer.counter == opener.counter == 3


def test_the_largest_plaintext_fits_and_one_more_byte_is_our_bug() -> None:
    frame = Sealer(KEY).seal(bytes(MAX_PAYLOAD))
    assert len(frame) - 4 == MAX_SEALED_PAYLOAD
    assert Opener(KEY).open(frame[4:]) == bytes(MAX_PAYLOAD)
    with pytest.raises(LocalProtocolError):
        Sealer(KEY).seal(bytes(MAX_PAYLOAD + 1))


@pytest.mark.parametrize("case", ["replay", "reorder", "drop", "other key", "short", "long"])
def test_frames_out_of_place_fail_authentication_and_stay_failed(case: str) -> None:
    sealer, opener = Sealer(KEY), Opener(KEY)
    first, second = sealer.seal(PAYLOAD)[4:], sealer.seal(b"\x93\x02\x05\x08")[4:]
    feed = {
        "replay": [first, first],
        "reorder": [second, first],
        "drop": [second],
        "other key": [Sealer(bytes(32)).seal(PAYLOAD)[4:]],
        "short": [first[:TAG_LEN - 1]],
        "long": [first + b"\x00"],
    }[case]
    with pytest.raises(AuthenticationFailed):
        for body in feed:
            opener.open(body)
    with pytest.raises(AuthenticationFailed):  # sticky: even the right frame is refused now
        opener.open(first)


def test_a_key_refuses_to_seal_or_open_past_its_limit() -> None:
    sealer, opener = Sealer(KEY, limit=2), Opener(KEY, limit=2)
    frames = [sealer.seal(PAYLOAD), sealer.seal(PAYLOAD)]
    assert sealer.remaining == 0
    with pytest.raises(LocalProtocolError):
        sealer.seal(PAYLOAD)
    for frame in frames:
        opener.open(frame[4:])
    with pytest.raises(KeysExhausted):
        opener.open(Sealer(KEY).seal(PAYLOAD)[4:])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_opener_on_any_bytes_raises_only_remote_protocol_errors(data: bytes) -> None:
    opener = Opener(KEY)
    with pytest.raises(RemoteProtocolError):
        opener.open(data)


# --- inside two link cores ----------------------------------------------------------


def established(config: LinkConfig | None = None) -> tuple[LinkCore, LinkCore]:
    a = LinkCore(ALICE, initiator=True, nonce=b"\xa1" * 32, now=0.0, config=config)
    b = LinkCore(BOB, initiator=False, nonce=b"\xb2" * 32, now=0.0, config=config)
    for _ in range(4):
        b.receive_data(a.data_to_send(), 0.0)
        a.receive_data(b.data_to_send(), 0.0)
    assert a.state is b.state is LinkState.ESTABLISHED
    return a, b


def events(core: LinkCore) -> list[object]:
    out = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


PACKET = RoutedPacket(0x20, 32, ALICE.node_id, BOB.node_id, 1, b"attack at dawn")


def sent_packet_frame(a: LinkCore, b: LinkCore) -> bytes:
    events(b)
    a.send(PACKET)
    frame = a.data_to_send()
    assert b"attack at dawn" not in frame
    return frame


def test_every_bit_flip_of_a_sealed_frame_closes_the_link() -> None:
    a, b = established()
    size = len(sent_packet_frame(a, b))
    for position in range(size):
        for bit in range(8):
            a, b = established()
            frame = bytearray(sent_packet_frame(a, b))
            frame[position] ^= 1 << bit
            # What follows on the wire: enough bytes for any length prefix to complete.
            b.receive_data(bytes(frame) + bytes(MAX_SEALED_PAYLOAD + 4), 1.0)
            got = events(b)
            assert not any(isinstance(e, MessageReceived) for e in got)
            [down] = [e for e in got if isinstance(e, LinkDown)]
            assert not down.by_peer
            if position < 4 and int.from_bytes(frame[:4], "big") > MAX_SEALED_PAYLOAD:
                assert down.code == CloseCode.PROTOCOL_ERROR  # refused on the prefix alone
            else:
                assert down.code == CloseCode.AUTHENTICATION_FAILED, (position, bit)


@pytest.mark.parametrize("case", ["replay", "reorder", "truncate"])
def test_replayed_reordered_or_truncated_frames_close_the_link(case: str) -> None:
    a, b = established()
    first = sent_packet_frame(a, b)
    second = sent_packet_frame(a, b)
    wire = {"replay": first + first, "reorder": second + first,
            "truncate": first[:-1] + second}[case]
    b.receive_data(wire, 1.0)
    got = events(b)
    delivered = [e for e in got if isinstance(e, MessageReceived)]
    assert len(delivered) == (1 if case == "replay" else 0)
    [down] = [e for e in got if isinstance(e, LinkDown)]
    assert down.code == CloseCode.AUTHENTICATION_FAILED
    # The refusal reaches the sender, sealed in the other direction.
    a.receive_data(b.data_to_send(), 1.0)
    assert a.down is not None and a.down.code == CloseCode.AUTHENTICATION_FAILED
    assert a.down.by_peer


def test_a_frame_reflected_to_its_sender_fails() -> None:
    a, b = established()
    a.receive_data(sent_packet_frame(a, b), 1.0)
    assert a.down is not None and a.down.code == CloseCode.AUTHENTICATION_FAILED


def test_the_link_closes_before_its_counter_could_wrap() -> None:
    limit = 12
    a, b = established(LinkConfig(sealed_frame_limit=limit))
    assert a.sealer is not None
    start = sent_frames = a.sealer.counter  # its first PING and a PONG
    while not a.is_closed:
        a.send(PACKET)
        b.receive_data(a.data_to_send(), 1.0)
        sent_frames += 1
        assert sent_frames <= limit
    assert a.sealer.counter == limit  # every counter used once, none twice
    assert a.down is not None and a.down.code == CloseCode.KEYS_EXHAUSTED
    assert b.down is not None and b.down.code == CloseCode.KEYS_EXHAUSTED and b.down.by_peer
    delivered = [e for e in events(b) if isinstance(e, MessageReceived)]
    assert len(delivered) == limit - start - 1  # the last counter carried the CLOSE


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_an_established_link_fed_any_bytes_never_raises(data: bytes) -> None:
    a, b = established()
    b.receive_data(data, 1.0)
    b.receive_eof(2.0)
    assert b.is_closed
    assert b.down is not None
    assert not any(isinstance(e, MessageReceived) for e in events(b))
    if data:
        # Whatever it was, the peer's CLOSE (if any) opens at a: it is sealed, not raw.
        a.receive_data(b.data_to_send(), 2.0)



@given(st.binary(max_size=2048), st.binary(max_size=8), st.binary(min_size=12, max_size=12),
       st.binary(min_size=32, max_size=32))
def test_the_direct_libsodium_calls_match_pynacls_wrappers(message: bytes, aad: bytes,
                                                           nonce: bytes, key: bytes) -> None:
    """sealing.py calls libsodium through PyNaCl's CFFI binding, skipping the wrappers'
    argument checks: the bytes must be exactly the wrappers', and so must the refusals."""
    import nacl.bindings
    import nacl.exceptions

    from overlay.proto import sealing

    sealed = sealing._encrypt(message, aad, nonce, key)
    assert sealed == nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        message, aad, nonce, key)
    assert sealing._decrypt(sealed, aad, nonce, key) == message
    for damaged in (sealed[:-1], bytes([sealed[0] ^ 1]) + sealed[1:], sealed[:15]):
        with pytest.raises(nacl.exceptions.CryptoError):
            sealing._decrypt(damaged, aad, nonce, key)
