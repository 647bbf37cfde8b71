"""ROUTE_UPDATE entries as numpy columns decode and encode exactly as msgpack does.

:func:`decode_route_update` reads a many-entry update's entries at the positions
its layout gives them; these tests hold it to the reference decoder
(:func:`decode_message`): the same message or the same refusal for every payload,
valid, non-shortest, with an entry's leading bytes inside an id, or hostile.  The
encoder is held to msgpack's bytes, and the index's hash table to its dict.
"""

from __future__ import annotations

import random

import msgpack
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from overlay.ids import NodeId
from overlay.proto.fastpath import decode_payload
from overlay.proto.messages import (
    MAX_UPDATE_ENTRIES,
    PROTOCOL_VERSION,
    MessageType,
    RouteEntry,
    RouteUpdate,
    decode_message,
    encode_message_payload,
)
from overlay.proto.route_columns import (
    MIN_COLUMN_ENTRIES,
    WORD,
    EntryColumns,
    decode_route_update,
    encode_entries,
)
from overlay.proto.route_table import DestinationIndex
from tests.proto.test_fastpath import _outcome, mutated
from tests.proto.test_hostile_input import HOSTILE

node_ids = st.binary(min_size=16, max_size=16).map(NodeId)
# Integers around every width boundary of msgpack's shortest form, and anywhere.
seqnos = st.one_of(st.sampled_from([0, 127, 128, 255, 256, 65535]), st.integers(0, 2**16 - 1))
metrics = st.one_of(st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1]),
                    st.integers(0, 2**32 - 1))
entries = st.builds(RouteEntry, node_ids, seqnos, metrics)
many_entries = st.lists(entries, min_size=MIN_COLUMN_ENTRIES, max_size=120).map(tuple)
intervals = st.sampled_from([0, 127, 128, 255, 256, 16_000, 65_536, 2**32 - 1])


def _words(ids: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(ids), WORD).reshape(len(ids), 2)


@given(many_entries, intervals)
def test_many_entries_decode_as_columns_equal_to_the_general_decoder(
        update_entries: tuple[RouteEntry, ...], interval_ms: int) -> None:
    update = RouteUpdate(interval_ms, update_entries)
    payload = encode_message_payload(update)
    decoded = decode_payload(payload)
    assert isinstance(decoded, RouteUpdate) and type(decoded.entries) is EntryColumns
    assert decoded == decode_message(payload) == update
    assert list(decoded.entries) == list(update_entries)
    assert decoded.entries.seqno_array.tolist() == [e.seqno for e in update_entries]
    assert encode_message_payload(decoded) == payload  # re-encoded from the arrays


@given(st.lists(entries, max_size=MIN_COLUMN_ENTRIES - 1).map(tuple))
def test_few_entries_take_the_general_decoder(update_entries: tuple[RouteEntry, ...]) -> None:
    payload = encode_message_payload(RouteUpdate(16_000, update_entries))
    assert decode_route_update(payload) is None
    assert decode_payload(payload) == RouteUpdate(16_000, update_entries)


_FORMS = {"u8": (0xCC, 1, 2**8 - 1), "u16": (0xCD, 2, 2**16 - 1),
          "u32": (0xCE, 4, 2**32 - 1), "u64": (0xCF, 8, 2**64 - 1)}


def _int(value: int, form: str) -> bytes:
    """``value`` in msgpack as ``form`` says (shortest, too if ``form`` cannot hold it)."""
    if form == "shortest" or value > _FORMS[form][2]:
        return bytes(msgpack.packb(value))
    marker, size, _ = _FORMS[form]
    return bytes([marker]) + value.to_bytes(size, "big")


@given(many_entries, st.data())
def test_any_valid_encoding_decodes_alike(update_entries: tuple[RouteEntry, ...],
                                          data: st.DataObject) -> None:
    """Receivers must accept any integer width and any bin header: each field of each
    entry in a width of its own; the columns decline what they do not read themselves."""
    forms = st.sampled_from(["shortest", "u8", "u16", "u32", "u64"])
    count = len(update_entries)
    layouts = data.draw(st.lists(st.tuples(forms, forms, st.sampled_from([b"\xc4\x10",
                                                                         b"\xc5\x00\x10"])),
                                 min_size=count, max_size=count))
    body = b""
    for entry, (seqno_form, metric_form, id_header) in zip(update_entries, layouts,
                                                           strict=True):
        body += (b"\x93" + id_header + entry.destination + _int(entry.seqno, seqno_form)
                 + _int(entry.metric, metric_form))
    header = data.draw(st.sampled_from([b"\xdc" + count.to_bytes(2, "big"),
                                        b"\xdd" + count.to_bytes(4, "big")]))
    interval = _int(16_000, data.draw(forms))
    payload = bytes([0x94, PROTOCOL_VERSION, MessageType.ROUTE_UPDATE]) + interval + header + body
    assert decode_payload(payload) == decode_message(payload) == RouteUpdate(
        16_000, update_entries)


@given(many_entries, st.integers(0, MIN_COLUMN_ENTRIES - 1), st.sampled_from(range(14)))
def test_an_entry_head_inside_an_id_is_no_entry(update_entries: tuple[RouteEntry, ...],
                                                which: int, at: int) -> None:
    """``93 c4 10`` inside an id looks like an entry's start: the columns decline (there
    are more starts than entries) and the general decoder reads it."""
    entry = update_entries[which]
    raw = bytearray(entry.destination)
    raw[at:at + 3] = b"\x93\xc4\x10"
    changed = list(update_entries)
    changed[which] = RouteEntry(NodeId(bytes(raw)), entry.seqno, entry.metric)
    payload = encode_message_payload(RouteUpdate(16_000, tuple(changed)))
    assert decode_route_update(payload) is None
    assert decode_payload(payload) == RouteUpdate(16_000, tuple(changed))


@HOSTILE
@given(many_entries, st.data())
def test_mutated_updates_get_the_same_verdict(update_entries: tuple[RouteEntry, ...],
                                              data: st.DataObject) -> None:
    payload = mutated(encode_message_payload(RouteUpdate(16_000, update_entries)), data)
    assert _outcome(decode_payload, payload) == _outcome(decode_message, payload)


def test_too_many_entries_are_refused_alike() -> None:
    update_entries = [RouteEntry(NodeId(i.to_bytes(16, "big")), 1, 2)
                      for i in range(MAX_UPDATE_ENTRIES + 1)]
    payload = msgpack.packb([PROTOCOL_VERSION, MessageType.ROUTE_UPDATE, 16_000,
                             [list(e) for e in update_entries]], use_bin_type=True)
    assert decode_route_update(payload) is None
    assert _outcome(decode_payload, payload) == _outcome(decode_message, payload)


@given(st.lists(entries, min_size=1, max_size=80), st.data())
def test_encoded_columns_are_msgpacks_bytes_and_a_mask_keeps_a_subset(
        update_entries: list[RouteEntry], data: st.DataObject) -> None:
    words = _words([e.destination for e in update_entries])
    encoded = encode_entries(words, np.array([e.seqno for e in update_entries], np.int64),
                             np.array([e.metric for e in update_entries], np.int64))
    assert encoded.joined() == b"".join(msgpack.packb(list(e), use_bin_type=True)
                                        for e in update_entries)
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=len(update_entries),
                                       max_size=len(update_entries))), np.bool_)
    assert encoded.joined(keep) == b"".join(
        msgpack.packb(list(e), use_bin_type=True)
        for e, kept in zip(update_entries, keep.tolist(), strict=True) if kept)


def test_the_index_finds_by_hash_table_what_its_dict_finds() -> None:
    """Random ids, ids that differ only in their last byte (the simulator's), ids never
    seen, and ids made to share one bucket (more than it holds: the dict takes them)."""
    rng = random.Random(7)
    index = DestinationIndex()
    known = [NodeId(rng.randbytes(16)) for _ in range(3000)]
    known += [NodeId(i.to_bytes(16, "big")) for i in range(500)]
    # first ^ second equal for all: one bucket, far more than its four places.
    colliding = [NodeId(i.to_bytes(8, "little") * 2) for i in range(1, 40)]
    for node_id in known + colliding:
        index.slot(node_id)
    unknown = [NodeId(rng.randbytes(16)) for _ in range(50)]
    asked = [rng.choice(known + colliding) for _ in range(2000)] + unknown + colliding
    rng.shuffle(asked)
    found = index.slots_of(_words(asked)).tolist()
    assert found == index.slots(asked)
    assert [index.ids[slot] for slot in found] == asked
    assert len(index) == len(known) + len(colliding) + len(unknown)  # unknown ones added
    assert index.slots_of(_words(unknown)).tolist() == index.slots(unknown)
    # Ids in the table are found there, not in the dict: only the ids a full bucket
    # left out take the dict.
    from_dict: list[NodeId] = []
    slot = index.slot
    index.slot = lambda node_id: from_dict.append(node_id) or slot(node_id)  # type: ignore[method-assign]
    assert index.ids[index.slots_of(_words(known + unknown))[-1]] == unknown[-1]
    assert from_dict == []
    index.slots_of(_words(colliding))
    assert len(colliding) - 4 <= len(from_dict) < len(colliding)
