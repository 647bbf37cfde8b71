"""The key schedule: both ends agree, attackers in the middle fail, and forward secrecy."""

from __future__ import annotations

import nacl.bindings
import pytest

from overlay.errors import AuthenticationFailed
from overlay.proto.codec import FrameDecoder
from overlay.proto.handshake import (
    INITIATOR_CONTEXT,
    INITIATOR_TO_RESPONDER_LABEL,
    RESPONDER_CONTEXT,
    BadEphemeralKey,
    derive_session_keys,
    direction_key,
    ephemeral_public_key,
    handshake_transcript,
)
from overlay.proto.link import LinkCore, LinkState
from overlay.proto.messages import (
    Close,
    CloseCode,
    Hello,
    HelloAck,
    RoutedPacket,
    decode_message,
    encode_message,
)
from overlay.proto.sealing import MAX_SEALED_PAYLOAD, Opener
from tests.conftest import make_identity

ALICE = make_identity("alice")
BOB = make_identity("bob")
MALLORY = make_identity("mallory")
SECRET_A, SECRET_B, SECRET_M = b"\xa1" * 32, b"\xb2" * 32, b"\x3c" * 32
EPH_A, EPH_B, EPH_M = (ephemeral_public_key(s) for s in (SECRET_A, SECRET_B, SECRET_M))


def keys(initiator: bool, secret: bytes) -> tuple[bytes, bytes]:
    k = derive_session_keys(initiator=initiator, own_secret=secret, initiator_key=ALICE.public_key,
                            initiator_ephemeral=EPH_A, responder_key=BOB.public_key,
                            responder_ephemeral=EPH_B)
    return k.send, k.receive


def test_both_ends_derive_crossed_keys_one_per_direction() -> None:
    a_send, a_receive = keys(True, SECRET_A)
    b_send, b_receive = keys(False, SECRET_B)
    assert (a_send, a_receive) == (b_receive, b_send)
    assert a_send != a_receive and len(a_send) == 32


def test_transcript_layout() -> None:
    t = handshake_transcript(RESPONDER_CONTEXT, ALICE.public_key, EPH_A, BOB.public_key, EPH_B)
    assert t == (b"overlay link v2 responder\x00\x02" + ALICE.public_key + EPH_A
                 + BOB.public_key + EPH_B)
    assert len(t) == 155
    assert t != handshake_transcript(INITIATOR_CONTEXT, ALICE.public_key, EPH_A, BOB.public_key,
                                     EPH_B)


@pytest.mark.parametrize("point", [bytes(32), b"\x01" + bytes(31)])
def test_a_low_order_ephemeral_key_is_refused_before_signing(point: bytes) -> None:
    with pytest.raises(BadEphemeralKey):
        derive_session_keys(initiator=False, own_secret=SECRET_B, initiator_key=ALICE.public_key,
                            initiator_ephemeral=point, responder_key=BOB.public_key,
                            responder_ephemeral=EPH_B)
    b = LinkCore(BOB, initiator=False, nonce=SECRET_B, now=0.0)
    b.receive_data(encode_message(Hello(ALICE.public_key, point)), 0.0)
    assert b.down is not None and b.down.code == CloseCode.PROTOCOL_ERROR
    assert "low-order" in b.down.reason
    sent = b.data_to_send()  # one CLOSE, no HELLO_ACK: nothing was signed
    assert decode_message(sent[4:]) == Close(CloseCode.PROTOCOL_ERROR, b.down.reason)


def test_a_man_in_the_middle_swapping_an_ephemeral_key_is_caught() -> None:
    # Mallory replaces Bob's ephemeral key in HELLO_ACK with hers: Bob's signature no
    # longer covers the transcript Alice computes.
    a = LinkCore(ALICE, initiator=True, nonce=SECRET_A, now=0.0)
    b = LinkCore(BOB, initiator=False, nonce=SECRET_B, now=0.0)
    b.receive_data(a.data_to_send(), 0.0)
    decoder = FrameDecoder()
    decoder.receive_data(b.data_to_send())
    hello_ack = decode_message(decoder.next_payload() or b"")
    assert isinstance(hello_ack, HelloAck)
    a.receive_data(encode_message(HelloAck(BOB.public_key, EPH_M, hello_ack.signature)), 0.0)
    assert a.down is not None and a.down.code == CloseCode.BAD_SIGNATURE
    # Mallory replaces Alice's ephemeral key in HELLO: Bob signs a transcript Alice refuses.
    a = LinkCore(ALICE, initiator=True, nonce=SECRET_A, now=0.0)
    b = LinkCore(BOB, initiator=False, nonce=SECRET_B, now=0.0)
    a.data_to_send()
    b.receive_data(encode_message(Hello(ALICE.public_key, EPH_M)), 0.0)
    a.receive_data(b.data_to_send(), 0.0)
    assert a.down is not None and a.down.code == CloseCode.BAD_SIGNATURE


def record_session() -> tuple[bytes, bytes]:
    """A whole session between Alice and Bob as a tap sees it: (a->b bytes, b->a bytes)."""
    a = LinkCore(ALICE, initiator=True, nonce=SECRET_A, now=0.0)
    b = LinkCore(BOB, initiator=False, nonce=SECRET_B, now=0.0)
    to_b, to_a = bytearray(), bytearray()
    for step in range(5):
        if step == 3:
            a.send(RoutedPacket(0x20, 32, ALICE.node_id, BOB.node_id, 1, b"the secret plan"))
        data = a.data_to_send()
        to_b += data
        b.receive_data(data, 0.0)
        data = b.data_to_send()
        to_a += data
        a.receive_data(data, 0.0)
    assert a.state is b.state is LinkState.ESTABLISHED
    assert b"the secret plan" not in to_b
    return bytes(to_b), bytes(to_a)


def sealed_bodies(stream: bytes, plain: int) -> list[bytes]:
    decoder = FrameDecoder(MAX_SEALED_PAYLOAD)
    decoder.receive_data(stream)
    bodies = []
    while (payload := decoder.next_payload()) is not None:
        bodies.append(payload)
    return bodies[plain:]


def opens(key: bytes, bodies: list[bytes]) -> bool:
    opener = Opener(key)
    try:
        return all(opener.open(body) is not None for body in bodies)
    except AuthenticationFailed:
        return False


def test_forward_secrecy_identity_keys_do_not_open_a_recorded_session() -> None:
    """An attacker holding both identity keys and the whole recording cannot open it;
    the same computation with an ephemeral secret does (so the test can fail)."""
    to_b, to_a = record_session()
    bodies = sealed_bodies(to_b, plain=2)  # HELLO and ACK are in clear
    assert bodies
    # What the attacker can compute: every X25519 product of a secret it has (the identity
    # keys converted to X25519, and a stand-in ephemeral secret) with every public key it
    # saw (both ephemeral keys, both identity keys converted), through the documented KDF.
    secrets = [bytes(i.signing_key.to_curve25519_private_key()) for i in (ALICE, BOB)]
    secrets.append(b"\x00" * 31 + b"\x01")
    publics = [EPH_A, EPH_B] + [bytes(i.signing_key.verify_key.to_curve25519_public_key())
                                for i in (ALICE, BOB)]
    transcript_keys = (ALICE.public_key, EPH_A, BOB.public_key, EPH_B)

    candidates = [direction_key(nacl.bindings.crypto_scalarmult(s, p),
                                INITIATOR_TO_RESPONDER_LABEL, transcript_keys)
                  for s in secrets for p in publics]
    assert not any(opens(key, bodies) for key in candidates)
    # A responder with Bob's identity key but a new ephemeral secret, fed the recorded
    # initiator bytes, answers the recorded HELLO and refuses the recorded sealed frames.
    replayed = LinkCore(BOB, initiator=False, nonce=b"\x55" * 32, now=0.0)
    replayed.receive_data(to_b, 0.0)
    assert replayed.down is not None
    assert replayed.down.code in (CloseCode.BAD_SIGNATURE, CloseCode.AUTHENTICATION_FAILED)
    # With Bob's ephemeral secret (gone with the link in real life) it opens: the only
    # missing ingredient above was an ephemeral secret.
    key = direction_key(nacl.bindings.crypto_scalarmult(SECRET_B, EPH_A),
                        INITIATOR_TO_RESPONDER_LABEL, transcript_keys)
    assert opens(key, bodies)
    assert keys(False, SECRET_B)[1] == key
    assert to_a  # the other direction was recorded too (and is sealed under its own key)
    assert not opens(key, sealed_bodies(to_a, plain=1))
