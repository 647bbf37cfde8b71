"""Recompute the test vectors of docs/protocol.md section 18 from the reference code.

Run from the repository root::

    .venv/bin/python -m tests.proto.regenerate_vectors          # rewrite the document
    .venv/bin/python -m tests.proto.regenerate_vectors --check  # exit 1 if it is stale

Inputs are what the blocks already say (seeds, ephemeral secrets, keys,
counters, ``message`` expressions, invalid frames); everything derived from
them is recomputed, so a protocol change (a version bump, a new field) is one
run away from a consistent document.  What each kind of block gets:

- ``handshake-vector``: public keys, node ids, ephemeral public keys,
  transcripts, signatures, shared secret, session keys and session id, from
  the two seeds and the two ephemeral secrets;
- ``exchange-vector``: the bytes two link cores built from those inputs write,
  side by side, until both are quiet;
- ``vector`` (valid): ``msgpack`` and ``hex`` from ``message``; the HELLO,
  HELLO_ACK and ACK vectors also get their ``message`` from the handshake;
- ``vector`` (invalid): hand-written bytes, so only the version element is
  rewritten: to the current version, or, in vectors whose error is
  UnsupportedVersion, to the previous one;
- ``sealed-vector``: ``nonce`` and ``hex`` from ``key``, ``counter`` and
  ``plaintext``;
- ``rtt-vector``: left as it is (it depends on no byte of the wire).

Blocks keep their order, names and notes; only values change.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from overlay.ids import Identity
from overlay.proto.codec import unpack
from overlay.proto.handshake import (
    INITIATOR_CONTEXT,
    RESPONDER_CONTEXT,
    derive_session_keys,
    ephemeral_public_key,
    handshake_transcript,
    shared_secret,
)
from overlay.proto.link import LinkCore
from overlay.proto.messages import PROTOCOL_VERSION, Ack, Hello, HelloAck, Message, encode_message
from overlay.proto.sealing import Sealer, frame_nonce
from tests.proto.test_vectors import _BLOCK, MESSAGE_NAMESPACE, PROTOCOL_MD, _lines, diag

Lines = list[tuple[str, str]]


def handshake_values(inputs: dict[str, str]) -> Lines:
    seeds = {side: bytes.fromhex(inputs[f"{side}_seed"]) for side in ("initiator", "responder")}
    secrets = {side: bytes.fromhex(inputs[f"{side}_ephemeral_secret"])
               for side in ("initiator", "responder")}
    ids = {side: Identity.from_seed(seed) for side, seed in seeds.items()}
    eph = {side: ephemeral_public_key(secret) for side, secret in secrets.items()}
    keys = (ids["initiator"].public_key, eph["initiator"], ids["responder"].public_key,
            eph["responder"])
    out: Lines = []
    for side in ("initiator", "responder"):
        out += [
            (f"{side}_seed", seeds[side].hex()),
            (f"{side}_public_key", ids[side].public_key.hex()),
            (f"{side}_node_id", ids[side].node_id.hex()),
            (f"{side}_ephemeral_secret", secrets[side].hex()),
            (f"{side}_ephemeral_key", eph[side].hex()),
        ]
    for side, context in (("responder", RESPONDER_CONTEXT), ("initiator", INITIATOR_CONTEXT)):
        transcript = handshake_transcript(context, *keys)
        out += [(f"{side}_transcript", transcript.hex()),
                (f"{side}_signature", ids[side].sign(transcript).hex())]
    session = derive_session_keys(initiator=True, own_secret=secrets["initiator"],
                                  initiator_key=keys[0], initiator_ephemeral=keys[1],
                                  responder_key=keys[2], responder_ephemeral=keys[3])
    out += [
        ("shared_secret", shared_secret(secrets["initiator"], eph["responder"]).hex()),
        ("initiator_to_responder_key", session.send.hex()),
        ("responder_to_initiator_key", session.receive.hex()),
        ("session_id", session.session_id.hex()),
    ]
    return out


def exchange_lines(values: dict[str, bytes]) -> Lines:
    initiator = LinkCore(Identity.from_seed(values["initiator_seed"]), initiator=True,
                         nonce=values["initiator_ephemeral_secret"], now=0.0)
    responder = LinkCore(Identity.from_seed(values["responder_seed"]), initiator=False,
                         nonce=values["responder_ephemeral_secret"], now=0.0)
    out: Lines = []
    sender, receiver, name = initiator, responder, "initiator"
    while True:
        data = sender.data_to_send()
        if not data:
            break
        out.append((name, data.hex()))
        receiver.receive_data(data, 0.0)
        sender, receiver = receiver, sender
        name = "responder" if name == "initiator" else "initiator"
    return out


def handshake_messages(values: dict[str, bytes]) -> dict[str, Message]:
    return {
        "HELLO": Hello(values["initiator_public_key"], values["initiator_ephemeral_key"]),
        "HELLO_ACK": HelloAck(values["responder_public_key"], values["responder_ephemeral_key"],
                              values["responder_signature"]),
        "ACK": Ack(values["initiator_signature"]),
    }


def message_expression(message: Message) -> str:
    """The ``message`` line of a handshake vector (keyword arguments, bytes as hex)."""
    names = {Hello: ("public_key", "ephemeral_key"),
             HelloAck: ("public_key", "ephemeral_key", "signature"), Ack: ("signature",)}
    fields = ", ".join(f'{name}=bytes.fromhex("{value.hex()}")'
                       for name, value in zip(names[type(message)], message.fields(), strict=True))
    return f"{type(message).__name__}({fields})"


def valid_vector(fields: dict[str, str], handshake: dict[str, Message]) -> Lines:
    if fields["name"] in handshake:
        fields["message"] = message_expression(handshake[fields["name"]])
    message = eval(fields["message"], {"__builtins__": {}}, dict(MESSAGE_NAMESPACE))
    frame = encode_message(message)
    fields["msgpack"] = diag(unpack(frame[4:]))
    fields["hex"] = frame.hex()
    return list(fields.items())


def _version_offset(payload: bytes) -> int | None:
    """Where the version element of a payload that is an array starts, if it is one."""
    if not payload:
        return None
    first = payload[0]
    if 0x91 <= first <= 0x9F:
        return 1
    return {0xDC: 3, 0xDD: 5}.get(first)


def invalid_vector(fields: dict[str, str]) -> Lines:
    frame = bytearray(bytes.fromhex(fields["hex"]))
    offset = _version_offset(bytes(frame[4:]))
    if offset is not None and 4 + offset < len(frame) and frame[4 + offset] < 0x80:
        # A version vector shows the realistic case, a peer one release behind.
        unsupported = fields["error"] == "UnsupportedVersion"
        frame[4 + offset] = PROTOCOL_VERSION - 1 if unsupported else PROTOCOL_VERSION
    fields["hex"] = frame.hex()
    return list(fields.items())


def sealed_vector(fields: dict[str, str]) -> Lines:
    counter = int(fields["counter"])
    sealer = Sealer(bytes.fromhex(fields["key"]))
    sealer.counter = counter
    plaintext = bytes.fromhex(fields["plaintext"])
    fields["nonce"] = frame_nonce(counter).hex()
    fields["hex"] = sealer.seal(plaintext[4:]).hex()
    return list(fields.items())


def regenerate(text: str) -> str:
    blocks = list(_BLOCK.finditer(text))
    [hv_block] = [m for m in blocks if m["kind"] == "handshake-vector"]
    hv_lines = handshake_values(dict(_lines(hv_block["body"])))
    values = {k: bytes.fromhex(v) for k, v in hv_lines}
    handshake = handshake_messages(values)

    def rebuild(kind: str, body: str) -> Lines | None:
        fields = dict(_lines(body))
        builders: dict[str, Callable[[], Lines]] = {
            "handshake-vector": lambda: hv_lines,
            "exchange-vector": lambda: exchange_lines(values),
            "sealed-vector": lambda: sealed_vector(fields),
            "vector": lambda: (invalid_vector(fields) if "error" in fields
                               else valid_vector(fields, handshake)),
        }
        builder = builders.get(kind)
        return builder() if builder else None

    out, last = [], 0
    for match in blocks:
        lines = rebuild(match["kind"], match["body"])
        if lines is None:
            continue
        out.append(text[last:match.start("body")])
        out.append("".join(f"{key}: {value}\n" for key, value in lines))
        last = match.end("body")
    out.append(text[last:])
    return "".join(out)


def main(argv: list[str]) -> int:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    new = regenerate(text)
    if "--check" in argv:
        if new != text:
            print(f"{PROTOCOL_MD}: test vectors are stale; run "
                  "python -m tests.proto.regenerate_vectors", file=sys.stderr)
            return 1
        return 0
    if new != text:
        PROTOCOL_MD.write_text(new, encoding="utf-8")
        print(f"{PROTOCOL_MD}: vectors rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
