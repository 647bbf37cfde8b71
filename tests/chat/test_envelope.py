"""Sealed envelopes: only the recipient opens them, and only the certified sender seals them."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.chat.envelope import ChatMessage, Receipt, open_envelope, seal
from overlay.directory.certificates import issue_certificate
from overlay.errors import RejectedMessage
from overlay.proto.codec import pack, unpack
from tests.conftest import make_identity
from tests.proto.test_hostile_input import nested, shaped_values

SERVER = make_identity("server")
ALICE, BOB, MALLORY = (make_identity(n) for n in ("alice", "bob", "mallory"))
NOW = 1_800_000_000.0
CERT = {name: issue_certificate(SERVER, name, ident.public_key, now=NOW, lifetime=3600)
        for name, ident in (("alice", ALICE), ("bob", BOB), ("mallory", MALLORY))}
MESSAGE = ChatMessage(b"\x01" * 16, "alice", "bob", NOW, "attack at dawn")


def open_as_bob(envelope: bytes, sender_node: object = ALICE.node_id) -> object:
    return open_envelope(envelope, BOB, username="bob", server_key=SERVER.public_key,
                         sender_node=sender_node, now=NOW)  # type: ignore[arg-type]


def test_round_trip_and_receipt() -> None:
    envelope = seal(ALICE, CERT["alice"].raw, BOB.public_key, MESSAGE)
    assert b"attack at dawn" not in envelope
    opened = open_as_bob(envelope)
    assert opened.content == MESSAGE and opened.sender.username == "alice"  # type: ignore[attr-defined]
    receipt = seal(BOB, CERT["bob"].raw, ALICE.public_key, Receipt(MESSAGE.id, NOW + 1))
    back = open_envelope(receipt, ALICE, username="alice", server_key=SERVER.public_key,
                         sender_node=BOB.node_id, now=NOW)
    assert back.content == Receipt(MESSAGE.id, NOW + 1)


def test_a_forged_sender_with_alices_certificate_is_rejected() -> None:
    """Mallory relays a message under alice's (public) certificate, sealed with its own key."""
    forged = seal(MALLORY, CERT["alice"].raw, BOB.public_key, MESSAGE)
    with pytest.raises(RejectedMessage, match="forged sender"):
        open_as_bob(forged, MALLORY.node_id)  # the channel proves who sent it
    with pytest.raises(RejectedMessage, match="does not open"):
        open_as_bob(forged, ALICE.node_id)  # even if it could pose as alice's node


def test_names_inside_must_match_the_certificate() -> None:
    lie = ChatMessage(b"\x02" * 16, "alice", "bob", NOW, "it's me, alice")
    envelope = seal(MALLORY, CERT["mallory"].raw, BOB.public_key, lie)
    with pytest.raises(RejectedMessage, match="sealed by 'mallory'"):
        open_as_bob(envelope, MALLORY.node_id)


def test_a_message_for_someone_else_does_not_open() -> None:
    envelope = seal(ALICE, CERT["alice"].raw, MALLORY.public_key, MESSAGE)
    with pytest.raises(RejectedMessage):
        open_as_bob(envelope)


def test_a_certificate_from_another_server_is_refused() -> None:
    rogue = issue_certificate(make_identity("rogue"), "alice", ALICE.public_key, now=NOW,
                              lifetime=3600)
    with pytest.raises(RejectedMessage, match="certificate refused"):
        open_as_bob(seal(ALICE, rogue.raw, BOB.public_key, MESSAGE))


@given(st.data())
def test_any_tampering_is_rejected(data: st.DataObject) -> None:
    envelope = seal(ALICE, CERT["alice"].raw, BOB.public_key, MESSAGE)
    version, kind, certificate, box = unpack(envelope)
    index = data.draw(st.integers(0, len(box) - 1))
    flipped = box[:index] + bytes([box[index] ^ data.draw(st.integers(1, 255))]) \
        + box[index + 1:]
    with pytest.raises(RejectedMessage):
        open_as_bob(pack([version, kind, certificate, flipped]))


@given(st.binary(max_size=300))
def test_garbage_is_rejected(garbage: bytes) -> None:
    with pytest.raises(RejectedMessage):
        open_as_bob(garbage)


@pytest.mark.parametrize("when", [float("nan"), float("inf"), -float("inf"), -1.0, 2.0**40,
                                  True])
def test_a_time_the_history_cannot_store_or_show_is_rejected(when: object) -> None:
    """NaN became NULL in the history (a crash), an infinity crashed the terminal's date."""
    nonsense = ChatMessage(b"\x02" * 16, "alice", "bob", when, "hi")  # type: ignore[arg-type]
    with pytest.raises(RejectedMessage, match="malformed sealed message"):
        open_as_bob(seal(ALICE, CERT["alice"].raw, BOB.public_key, nonsense))
    receipt = seal(BOB, CERT["bob"].raw, ALICE.public_key, Receipt(MESSAGE.id, when))  # type: ignore[arg-type]
    with pytest.raises(RejectedMessage, match="malformed sealed receipt"):
        open_envelope(receipt, ALICE, username="alice", server_key=SERVER.public_key,
                      sender_node=BOB.node_id, now=NOW)


def _sealed_inner(inner: object) -> bytes:
    """A box that opens (really sealed by alice for bob) around any msgpack value."""
    import nacl.public
    import nacl.signing

    private = ALICE.signing_key.to_curve25519_private_key()
    public = nacl.signing.VerifyKey(BOB.public_key).to_curve25519_public_key()
    return bytes(nacl.public.Box(private, public).encrypt(pack(inner)))


@given(st.data())
def test_any_shape_outside_or_inside_the_box_is_rejected_and_nothing_else(
        data: st.DataObject) -> None:
    """Issue #11: hostile envelopes of every shape (the outer array, or a box that opens
    to any value) end in RejectedMessage, never another exception."""
    values = shaped_values | st.integers(0, 30).map(nested)
    if data.draw(st.booleans()):
        outer = data.draw(st.lists(values, max_size=5) | values)
        envelope = pack(outer)
    else:
        kind = data.draw(st.sampled_from(["m", "r"]))
        inner = data.draw(st.lists(values, min_size=0, max_size=6) | values)
        envelope = pack([1, kind, CERT["alice"].raw, _sealed_inner(inner)])
    with contextlib.suppress(RejectedMessage):
        open_as_bob(envelope)
