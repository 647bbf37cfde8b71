"""A seeded wire fuzzer: frame generators and an attacker client for real processes.

Importable by any test: :func:`load_vectors` parses the ``vector`` blocks of
docs/protocol.md section 18; :class:`Generator` makes frames of every family the
issue asks for (mutated vectors, random msgpack of every shape, deep nesting,
large containers, valid messages in the wrong state); :class:`Attacker` dials a
real process, optionally completes a real handshake with its own
:class:`~overlay.ids.Identity` through :class:`~overlay.proto.link.LinkCore`,
and then writes raw bytes on the socket; :func:`run_campaign` ties them
together and checks the target between batches.

Frames come in two kinds.  *Survivable* frames are valid on an established link
(PING, routed packets with any in-profile body, ...): the target must keep the
link up through them, which a sentinel PING proves (its PONG must come back).
*Hostile* frames may close the link or not; the target only has to survive.

Issue #12 will seal post-handshake frames: :func:`write_payload` is the one
function that turns a payload into the bytes written on an established link
(and :meth:`Attacker.replies` the one place that reads them), so only those
change then.  Frames of the ``raw`` families (length-prefix edits, garbage)
fuzz the outer framing itself and bypass it on purpose.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import msgpack

from overlay.errors import RemoteProtocolError
from overlay.ids import Identity, NodeId
from overlay.proto.codec import MAX_CONTAINER_LEN, MAX_DEPTH, MAX_PAYLOAD, FrameDecoder
from overlay.proto.link import LinkCore, LinkDown, LinkState
from overlay.proto.messages import (
    NONCE_LEN,
    PROTOCOL_VERSION,
    Ack,
    Close,
    DirectoryNotice,
    DirectoryRequest,
    DirectoryResponse,
    Hello,
    HelloAck,
    Message,
    Ping,
    Pong,
    RouteEntry,
    RouteUpdate,
    SeqnoRequest,
    decode_message,
    encode_message,
)
from overlay.proto.sealing import MAX_SEALED_PAYLOAD

PROTOCOL_MD = Path(__file__).parents[1] / "docs" / "protocol.md"
MAX_NESTING = MAX_DEPTH
"""docs/protocol.md section 2: levels of arrays/maps, the frame's own array being level 1."""

DEFAULT_FRAMES = 100_000
VERSION = msgpack.packb(PROTOCOL_VERSION)
"""The current version, as it opens every frame of valid shape."""


def fuzz_seed() -> int:
    """OVERLAY_FUZZ_SEED if set (to replay a failure), else a fresh random seed."""
    text = os.environ.get("OVERLAY_FUZZ_SEED")
    return int(text) if text else secrets.randbits(32)


def fuzz_frames() -> int:
    return int(os.environ.get("OVERLAY_FUZZ_FRAMES", DEFAULT_FRAMES))


# --- the vectors of docs/protocol.md ------------------------------------------------------

_BLOCK = re.compile(r"^```vector\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class WireVector:
    """One ``vector`` block: its name, its complete frame, and whether it is valid."""

    name: str
    frame: bytes
    valid: bool
    fields: dict[str, str]


def load_vectors(path: Path = PROTOCOL_MD) -> list[WireVector]:
    vectors = []
    for match in _BLOCK.finditer(path.read_text(encoding="utf-8")):
        fields = {}
        for line in match["body"].splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                fields[key.strip()] = value.strip()
        vectors.append(WireVector(fields["name"], bytes.fromhex(fields["hex"]),
                                  "error" not in fields, fields))
    return vectors


# --- raw msgpack -----------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    """A length-prefixed frame around any payload bytes (no checks: hostile on purpose)."""
    return len(payload).to_bytes(4, "big") + payload


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def map_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x80 | n])
    if n < 1 << 16:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


def raw_array(items: Iterable[bytes]) -> bytes:
    elements = list(items)
    return array_header(len(elements)) + b"".join(elements)


def nested(depth: int, leaf: bytes = b"\xc0", *, maps: bool = False) -> bytes:
    """``depth`` levels of one-element arrays (or one-pair maps) around ``leaf``."""
    return (b"\x81\xa0" if maps else b"\x91") * depth + leaf


_ALPHABETS = ("abcdefghijklmnopqrstuvwxyz0123456789", "éàüßçñø", "жизньпривет", "中文字符测试",
              "✓☃♥€", "\U0001f600\U0001f4a9\U00010348", "\x00\x01\x7f\n\t ")


def random_text(rng: random.Random, length: int) -> str:
    alphabet = rng.choice(_ALPHABETS)
    return "".join(rng.choice(alphabet) for _ in range(length))


def _str(data: bytes, rng: random.Random) -> bytes:
    n = len(data)
    forms = [f for f, fits in (("fix", n < 32), ("8", n < 256), ("16", n < 65536), ("32", True))
             if fits]
    form = forms[0] if rng.random() < 0.8 else rng.choice(forms)  # canonical mostly
    header = {"fix": bytes([0xa0 | n]) if n < 32 else b"", "8": b"\xd9" + bytes([n % 256]),
              "16": b"\xda" + (n % 65536).to_bytes(2, "big"), "32": b"\xdb" + n.to_bytes(4, "big")}
    return header[form] + data


def _bin(data: bytes, rng: random.Random) -> bytes:
    n = len(data)
    if n < 256 and rng.random() < 0.8:
        return b"\xc4" + bytes([n]) + data
    if n < 65536 and rng.random() < 0.8:
        return b"\xc5" + n.to_bytes(2, "big") + data
    return b"\xc6" + n.to_bytes(4, "big") + data


def random_scalar(rng: random.Random, size: int = 64) -> bytes:
    """One in-profile scalar in any of msgpack's encodings, canonical or not."""
    kind = rng.randrange(12)
    if kind == 0:
        return rng.choice((b"\xc0", b"\xc2", b"\xc3"))
    if kind == 1:
        return bytes([rng.randrange(0x80)])  # positive fixint
    if kind == 2:
        return bytes([0xe0 | rng.randrange(32)])  # negative fixint
    if kind == 3:
        width = rng.choice((1, 2, 4, 8))
        tag = {1: 0xcc, 2: 0xcd, 4: 0xce, 8: 0xcf}[width]
        return bytes([tag]) + rng.randbytes(width)
    if kind == 4:
        width = rng.choice((1, 2, 4, 8))
        tag = {1: 0xd0, 2: 0xd1, 4: 0xd2, 8: 0xd3}[width]
        return bytes([tag]) + rng.randbytes(width)
    if kind == 5:
        return b"\xca" + rng.randbytes(4)  # float32, NaN and infinities included
    if kind == 6:
        return b"\xcb" + rng.randbytes(8)
    if kind in (7, 8):
        return _str(random_text(rng, rng.randrange(size)).encode(), rng)
    if kind in (9, 10):
        return _bin(rng.randbytes(rng.randrange(size)), rng)
    return rng.choice((pack(0), pack(-1), pack(2**64 - 1), pack(-(2**63)), pack(1.5), pack(""),
                       pack(b""), pack(1), pack(True)))


def random_value(rng: random.Random, depth: int, budget: int) -> bytes:
    """An in-profile msgpack value at most ``depth`` container levels deep, about
    ``budget`` bytes or less: every shape, from scalars to near-limit containers."""
    roll = rng.random()
    if depth <= 0 or budget < 8 or roll < 0.5:
        return random_scalar(rng, min(64, max(budget // 2, 1)))
    if roll < 0.7:
        n = rng.randrange(8) if rng.random() < 0.9 else rng.randrange(64)
        return raw_array(random_value(rng, depth - 1, budget // max(n, 1)) for _ in range(n))
    if roll < 0.85:
        n = rng.randrange(6)
        pairs = b"".join((_str(random_text(rng, rng.randrange(8)).encode(), rng)
                          if rng.random() < 0.8 else _bin(rng.randbytes(rng.randrange(8)), rng))
                         + random_value(rng, depth - 1, budget // max(n, 1) // 2)
                         for _ in range(n))
        return map_header(n) + pairs
    if roll < 0.95:
        levels = rng.randint(1, depth)
        return nested(levels, random_scalar(rng, 8), maps=rng.random() < 0.3)
    return large_value(rng, budget)


def large_value(rng: random.Random, budget: int) -> bytes:
    """A container or string as large as the frame allows, ``budget`` bytes at most."""
    kind = rng.randrange(4)
    if kind == 0:  # the most elements an array may have
        n = min(MAX_CONTAINER_LEN, budget - 3)
        return array_header(n) + b"\xc0" * n
    if kind == 1:  # the most pairs a map may have, distinct keys
        n = min(MAX_CONTAINER_LEN, (budget - 3) // 5)
        return map_header(n) + b"".join(b"\xc4\x02" + i.to_bytes(2, "big") + b"\xc0"
                                        for i in range(n))
    if kind == 2:
        return _bin(rng.randbytes(max(budget - 5, 0)), rng)
    return _str(b"x" * max(budget - 5, 0), rng)


def hostile_value(rng: random.Random, budget: int = 4096) -> bytes:
    """A value outside the msgpack profile (section 2), or a malformed encoding."""
    kind = rng.randrange(12)
    if kind == 0:  # fixext 1/2/4/8/16, the timestamp type included
        size = rng.choice((1, 2, 4, 8, 16))
        tag = {1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8}[size]
        return bytes([tag, rng.choice((0xff, 0, 1, 0x7f))]) + rng.randbytes(size)
    if kind == 1:  # ext 8/16/32
        n = rng.randrange(40)
        return rng.choice((b"\xc7" + bytes([n]), b"\xc8" + n.to_bytes(2, "big"),
                           b"\xc9" + n.to_bytes(4, "big"))) + b"\x01" + rng.randbytes(n)
    if kind == 2:  # invalid UTF-8: stray bytes, overlong forms, surrogates
        bad = rng.choice((b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                          b"abc\x80", b"\xf4\x90\x80\x80"))
        return _str(bad, rng)
    if kind == 3:
        return b"\xc1"  # never used in msgpack
    if kind == 4:  # a header promising more than follows
        return rng.choice((b"\x95\x01", b"\xdc\xff\xff", b"\xdb\x00\x01\x00\x00ab",
                           b"\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
                           b"\xdf\x7f\xff\xff\xff",
                           b"\xcf\x01", b"\xa5ab"))
    if kind == 5:  # one element more than a container may hold
        n = MAX_CONTAINER_LEN + rng.choice((1, 2, 100))
        return array_header(n) + b"\xc0" * n
    if kind == 6:
        n = MAX_CONTAINER_LEN + 1
        return map_header(n) + b"\xa0\xc0" * n  # also a repeated key
    if kind == 7:  # deeper than the limit
        return nested(MAX_NESTING + rng.choice((1, 2, 958, 991)), maps=rng.random() < 0.3)
    if kind == 8:  # map keys that are not str or bin
        key = rng.choice((b"\x01", b"\xc0", b"\xc3", b"\xcb" + bytes(8), b"\x90", b"\x80", b"\xff"))
        return b"\x81" + key + b"\xc0"
    if kind == 9:  # a string or array longer than any frame
        return rng.choice((b"\xdb\xff\xff\xff\xff", b"\xdd\x00\x01\x00\x00"))
    if kind == 10:  # an in-profile container hiding one bad element
        inner = hostile_value(rng, budget // 2)
        return raw_array([random_scalar(rng), inner, random_scalar(rng)])
    return rng.randbytes(rng.randrange(1, 32))


# --- frames -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """Bytes for the wire.  ``payload`` frames go through :func:`write_payload` once a
    handshake is done; ``raw`` frames are written as they are (framing-level fuzz)."""

    family: str
    data: bytes
    raw: bool = False


def write_payload(link: LinkCore | None, payload: bytes) -> bytes:
    """THE way one raw payload is written on a connection.

    Before the handshake (``link`` None) it is a length prefix and the bytes.  On
    an established link every frame is sealed (protocol v2): the payload is sealed
    with the link core's own sealer, so its counter continues where the core's
    ACK and PINGs left it and the target opens the frame and really decodes the
    payload.  A payload too large to seal goes out in clear (refused either way).
    """
    if link is None or link.sealer is None or len(payload) > MAX_PAYLOAD:
        return frame(payload)
    return link.sealer.seal(payload)


def wire(link: LinkCore | None, item: Frame) -> bytes:
    return item.data if item.raw else write_payload(link, item.data)


def random_id(rng: random.Random) -> bytes:
    return rng.randbytes(16)


def _u32(rng: random.Random) -> int:
    return rng.randrange(1 << 32)


@dataclass
class Target:
    """What the generator knows about the process under attack."""

    node_id: bytes
    directory_server: bool = False
    relay_to: list[bytes] = field(default_factory=list)
    """Node ids the target has routes to (its legitimate neighbour): routed packets for
    them are relayed, so the fuzz reaches the neighbour too."""


class Generator:
    """Every frame family of the issue, drawn from one seeded :class:`random.Random`.

    ``exclude`` names families never drawn (known crashes the lead will flip once
    fixed); unknown names are an error so a typo cannot silently weaken a run.
    """

    def __init__(self, rng: random.Random, target: Target, *,
                 exclude: frozenset[str] = frozenset(),
                 vectors: list[WireVector] | None = None) -> None:
        self.rng = rng
        self.target = target
        self.vectors = vectors if vectors is not None else load_vectors()
        self.exclude = exclude
        self.sources: list[bytes] = []
        """Node ids routed packets may claim as source (the attacker's own, so that echo
        replies and error reports come back to it)."""
        self.survivable: dict[str, Callable[[], bytes]] = (
            {"ping": self._ping, "pong": self._pong, "directory-request": self._request}
            if target.directory_server else
            {"ping": self._ping, "pong": self._pong, "routed-random": self._routed_random,
             "routed-to-target": self._routed_to_target, "routed-deep-body": self._routed_deep,
             "routed-deep-reachable": lambda: self._routed_deep(reachable=True),
             "routed-large-reachable": lambda: self._routed_large(reachable=True),
             "routed-large-body": self._routed_large, "route-update": self._route_update,
             "seqno-request": self._seqno_request, "directory-ignored": self._directory_ignored})
        self.hostile: dict[str, Callable[[], Frame]] = {
            "vector-asis": self._vector_asis, "vector-bitflip": self._vector_bitflip,
            "vector-truncate": self._vector_truncate, "vector-extend": self._vector_extend,
            "vector-prefix": self._vector_prefix, "vector-swap": self._vector_swap,
            "random-msgpack": self._random_msgpack, "message-shaped": self._message_shaped,
            "deep-nesting": self._deep, "deep-field": self._deep_field,
            "large-container": self._large,
            "out-of-profile": self._out_of_profile, "raw-garbage": self._garbage,
            "wrong-state": self._wrong_state_established,
        }
        self.pre_handshake: dict[str, Callable[[], list[Frame]]] = {
            "pre-hostile": lambda: [self.hostile_frame()],
            "pre-wrong-state": self._wrong_state_before,
            "pre-hello-then": self._hello_then,
        }
        known = {*self.survivable, *self.hostile, *self.pre_handshake}
        unknown = exclude - known
        if unknown:
            raise ValueError(f"unknown fuzz families to exclude: {sorted(unknown)}")
        for table in (self.survivable, self.hostile, self.pre_handshake):
            for name in exclude & set(table):
                del table[name]

    # --- drawing -----------------------------------------------------------------------------

    WEIGHTS: ClassVar[dict[str, int]] = {
        "ping": 8, "pong": 8, "routed-random": 25, "routed-to-target": 25,
        "routed-deep-body": 3, "routed-deep-reachable": 1, "routed-large-body": 1,
        "routed-large-reachable": 1,        "route-update": 8, "seqno-request": 8,
        "directory-ignored": 6, "directory-request": 80}
    """Relative frequency of the survivable families (big frames are rare: they are slow)."""

    def survivable_frame(self) -> Frame:
        names = list(self.survivable)
        name = self.rng.choices(names, [self.WEIGHTS[n] for n in names])[0]
        return Frame(name, self.survivable[name]())

    def hostile_frame(self) -> Frame:
        return self.hostile[self.rng.choice(list(self.hostile))]()

    def pre_handshake_batch(self) -> list[Frame]:
        return self.pre_handshake[self.rng.choice(list(self.pre_handshake))]()

    # --- survivable: valid on an established link, the link must stay up ----------------------

    def _ping(self) -> bytes:
        return pack([PROTOCOL_VERSION, 5, _u32(self.rng)])

    def _pong(self) -> bytes:
        return pack([PROTOCOL_VERSION, 6, _u32(self.rng)])

    def _routed(self, packet_type: int, body: bytes, *, dst: bytes | None = None,
                src: bytes | None = None) -> bytes:
        rng = self.rng
        ttl = rng.choice((0, 1, 2, 32, 255, rng.randrange(256)))
        header = [VERSION, pack(packet_type), pack(ttl),
                  pack(src if src is not None else self._source()),
                  pack(dst if dst is not None else self._destination()), pack(_u32(rng))]
        return raw_array([*header, body])

    def _destination(self) -> bytes:
        """Mostly nowhere (UNREACHABLE); sometimes a node the target relays to."""
        rng, relay = self.rng, self.target.relay_to
        return rng.choice(relay) if relay and rng.random() < 0.4 else random_id(rng)

    def _source(self) -> bytes:
        rng = self.rng
        sources = [*self.sources, *self.target.relay_to]
        return rng.choice(sources) if sources and rng.random() < 0.4 else random_id(rng)

    def _body_budget(self) -> int:
        return self.rng.choice((64, 256, 2048, 16_000, MAX_PAYLOAD - 64))

    def _routed_random(self) -> bytes:
        rng = self.rng
        dst = self.target.node_id if rng.random() < 0.5 else None
        budget = self._body_budget() if rng.random() < 0.05 else 256
        body = random_value(rng, MAX_NESTING - 1, budget)
        return self._routed(rng.randrange(0x20, 0x40), body, dst=dst)

    def _routed_to_target(self) -> bytes:
        """Bodies shaped like what each routed type carries, with random fields."""
        rng, me = self.rng, self.target.node_id
        value = lambda: random_value(rng, 3, 64)  # noqa: E731
        packet_type = rng.choice((0x20, 0x21, 0x22, 0x23, 0x24, 0x25))
        if packet_type == 0x20:  # a segment [kind, channel, seq, ack, window, sack, last, payload]
            fields = [pack(rng.randrange(9)), pack(rng.randrange(1 << 32)), pack(_u32(rng)),
                      pack(_u32(rng)), pack(rng.randrange(1 << 17)),
                      raw_array(raw_array([pack(_u32(rng)), pack(_u32(rng))])
                                for _ in range(rng.randrange(4))),
                      rng.choice((b"\xc2", b"\xc3")), value()]
            if rng.random() < 0.3:
                fields[rng.randrange(len(fields))] = value()
            body = raw_array(fields)
        elif packet_type == 0x22:  # echo reply
            address = rng.choice((b"\xc0", pack("1.2.3.4:5")))
            body = raw_array([pack(_u32(rng)), value(), address])
        elif packet_type in (0x23, 0x24):  # error report
            body = raw_array([pack(rng.randrange(0x20, 0x40)), pack(_u32(rng)),
                              pack(random_id(rng)), rng.choice((b"\xc0", pack("127.0.0.1:1"))),
                              pack(rng.randrange(4))])
        elif packet_type == 0x25:  # VIA
            final = me if rng.random() < 0.5 else random_id(rng)
            body = raw_array([pack(final), rng.choice((b"\xc0", pack(random_id(rng)))),
                              pack(rng.choice((0x20, 0x21, 0x22, 0x24, 0x25, 0x3f, 7))), value()])
        else:
            body = value()
        return self._routed(packet_type, body, dst=me if rng.random() < 0.8 else None)

    def _routed_deep(self, *, reachable: bool = False) -> bytes:
        """The deepest bodies the profile allows (the frame array is level 1), from a
        source the target cannot reach, or (``reachable``) from its neighbour, so that
        echo replies are actually sent."""
        rng = self.rng
        depth = rng.choice((MAX_NESTING - 2, MAX_NESTING - 1, rng.randint(1, MAX_NESTING - 1)))
        dst = self.target.node_id if rng.random() < 0.7 else None
        src = (rng.choice(self.target.relay_to) if reachable and self.target.relay_to
               else random_id(rng))
        return self._routed(rng.choice((0x20, 0x21, 0x22, 0x25, 0x3f)),
                            nested(depth, random_scalar(rng, 8), maps=rng.random() < 0.3),
                            dst=dst, src=src)

    def _routed_large(self, *, reachable: bool = False) -> bytes:
        """Bodies as large as a frame allows, from an unreachable source or (``reachable``)
        from the neighbour, so that replies to them are actually sent."""
        rng = self.rng
        dst = self.target.node_id if rng.random() < 0.5 else None
        src = (rng.choice(self.target.relay_to) if reachable and self.target.relay_to
               else random_id(rng))
        return self._routed(rng.choice((0x20, 0x21, 0x3f)), large_value(rng, MAX_PAYLOAD - 64),
                            dst=dst, src=src)

    def _route_update(self) -> bytes:
        rng = self.rng
        n = rng.choice((0, 1, 3, 10, rng.randrange(50), 1000 if rng.random() < 0.05 else 5))
        entries = tuple(RouteEntry(NodeId(random_id(rng)), rng.randrange(1 << 16),
                                   rng.choice((0, 1, 2**32 - 1, rng.randrange(1 << 32))))
                        for _ in range(n))
        return encode_message(RouteUpdate(rng.choice((0, 1, 4000, _u32(rng))), entries))[4:]

    def _seqno_request(self) -> bytes:
        rng = self.rng
        dst = rng.choice((random_id(rng), self.target.node_id))
        message = SeqnoRequest(NodeId(dst), rng.randrange(1 << 16), rng.randrange(256))
        return encode_message(message)[4:]

    def _random_map(self) -> dict[str, object]:
        rng = self.rng
        return {random_text(rng, rng.randrange(12)): msgpack.unpackb(random_value(rng, 3, 128),
                                                                     strict_map_key=False)
                for _ in range(rng.randrange(5))}

    def _directory_ignored(self) -> bytes:
        rng = self.rng
        message: Message = rng.choice((
            DirectoryRequest(_u32(rng), random_text(rng, rng.randrange(33)), {}),
            DirectoryResponse(_u32(rng), rng.randrange(100, 600), random_text(rng, 20), {}),
            DirectoryNotice(random_text(rng, rng.randrange(33)), {})))
        return encode_message(message)[4:]

    OPERATIONS = ("register", "login", "resume", "logout", "change_key", "contact_request",
                  "contact_accept", "contact_decline", "contact_remove", "contacts", "presence",
                  "lookup", "supernodes", "dialback", "announce_supernode", "", "x" * 32)

    def _request(self) -> bytes:
        rng = self.rng
        operation = (rng.choice(self.OPERATIONS) if rng.random() < 0.8
                     else random_text(rng, rng.randrange(33)))
        arguments: dict[str, object] = self._random_map()
        if rng.random() < 0.5:  # the argument names operations use, with random values
            for name in rng.sample(("username", "sealed_password", "token", "status", "address",
                                    "home", "home_address", "direct_address", "node_id"),
                                   rng.randrange(4)):
                arguments[name] = msgpack.unpackb(random_value(rng, 2, 64), strict_map_key=False)
        try:
            return encode_message(DirectoryRequest(_u32(rng), operation, arguments))[4:]
        except Exception:  # a random map over the frame limit: a small request instead
            return encode_message(DirectoryRequest(_u32(rng), operation, {}))[4:]

    # --- hostile: may close the link, must not hurt the process ---------------------------------

    def _vector(self) -> WireVector:
        return self.rng.choice(self.vectors)

    def _vector_asis(self) -> Frame:
        return Frame("vector-asis", self._vector().frame[4:])

    def _vector_bitflip(self) -> Frame:
        rng = self.rng
        vector = self._vector().frame
        raw = rng.random() < 0.1 or len(vector) == 4  # sometimes the length prefix too
        data = bytearray(vector if raw else vector[4:])
        for _ in range(rng.choice((1, 1, 2, 3, 8))):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return Frame("vector-bitflip", bytes(data), raw=raw)

    def _vector_truncate(self) -> Frame:
        rng, payload = self.rng, self._vector().frame[4:]
        cut = payload[:rng.randrange(max(len(payload), 1))]
        if rng.random() < 0.7:
            return Frame("vector-truncate", cut)
        return Frame("vector-truncate", frame(payload)[:4 + len(cut)], raw=True)  # short frame

    def _vector_extend(self) -> Frame:
        rng, payload = self.rng, self._vector().frame[4:]
        extra = rng.choice((rng.randbytes(rng.randint(1, 64)), random_value(rng, 3, 64),
                            b"\x00", b"\xc0"))
        if rng.random() < 0.7:
            return Frame("vector-extend", payload + extra)
        return Frame("vector-extend", frame(payload) + extra, raw=True)  # stray bytes after it

    def _vector_prefix(self) -> Frame:
        rng, payload = self.rng, self._vector().frame[4:]
        n = len(payload)
        length = rng.choice((0, 1, n - 1, n + 1, n + 5, MAX_PAYLOAD, MAX_PAYLOAD + 1, 2**32 - 1,
                             2**31, 2**24, rng.randrange(1 << 32)))
        return Frame("vector-prefix", max(length, 0).to_bytes(4, "big") + payload, raw=True)

    def _vector_swap(self) -> Frame:
        """Edit the top-level fields of a vector: swap, drop, repeat, replace, borrow."""
        rng, payload = self.rng, self._vector().frame[4:]
        elements = split_array(payload)
        if elements is None or len(elements) < 2:
            return self._vector_bitflip()
        edit = rng.randrange(5)
        i, j = rng.randrange(len(elements)), rng.randrange(len(elements))
        if edit == 0:
            elements[i], elements[j] = elements[j], elements[i]
        elif edit == 1:
            del elements[i]
        elif edit == 2:
            elements.insert(i, elements[j])
        elif edit == 3:
            elements[i] = random_value(rng, 3, 64) if rng.random() < 0.7 else hostile_value(rng)
        else:
            other = split_array(self._vector().frame[4:]) or [b"\xc0"]
            elements[i] = rng.choice(other)
        return Frame("vector-swap", raw_array(elements))

    def _random_msgpack(self) -> Frame:
        rng = self.rng
        return Frame("random-msgpack", random_value(rng, rng.choice((1, 4, 40)), 512))

    INTERESTING_TYPES = (*range(0x00, 0x48), -1, -128, 0x7f, 0x80, 0xff, 0x100, 2**32, 2**63,
                         2**64 - 1)

    def _message_shaped(self) -> Frame:
        """[version, type, fields...] with any type and any number of random fields."""
        rng = self.rng
        version = VERSION if rng.random() < 0.85 else rng.choice(
            (pack(0), pack(1), pack(3), pack(True), pack(2.0), pack("2"), pack(None), pack(255),
             b"\xcd\x00\x01", nested(10)))
        type_ = rng.choice(self.INTERESTING_TYPES)
        kind = (pack(type_) if rng.random() < 0.9
                else rng.choice((pack(float(type_ % 100)), pack(str(type_)), b"\xc3", b"\xc0")))
        fields = [random_value(rng, 4, 128) if rng.random() < 0.85 else hostile_value(rng, 512)
                  for _ in range(rng.randrange(9))]
        return Frame("message-shaped", raw_array([version, kind, *fields]))

    def _depth(self) -> int:
        return self.rng.choice((MAX_NESTING - 2, MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1,
                                1100, 2000, 10_000, self.rng.randint(900, 1200)))

    def _deep(self) -> Frame:
        """Nesting up to and beyond the limit: the whole frame, or a routed body."""
        rng = self.rng
        depth = self._depth()
        if rng.random() < 0.5:
            payload = nested(depth, maps=rng.random() < 0.3)  # the whole frame
        else:  # as a routed body, one level in
            payload = self._routed(rng.randrange(0x20, 0x40), nested(depth - 1),
                                   dst=self.target.node_id)
        return Frame("deep-nesting", payload)

    def _deep_field(self) -> Frame:
        """Nesting up to and beyond the limit in a checked field: version, type, a field."""
        rng = self.rng
        depth = self._depth()
        chain = nested(depth - 1, maps=rng.random() < 0.3)  # the frame's array is level 1
        where = rng.randrange(3)
        if where == 0:
            payload = raw_array([chain, pack(1), pack(0)])
        elif where == 1:
            payload = raw_array([VERSION, chain, pack(0)])
        else:
            fields = [VERSION, pack(rng.choice((1, 2, 3, 4, 5, 6, 0x10, 0x11, 0x12, 0x20, 0x40)))]
            fields += [pack(0)] * rng.randrange(6)
            fields.insert(rng.randrange(2, len(fields) + 1), chain)
            payload = raw_array(fields)
        return Frame("deep-field", payload)

    def _large(self) -> Frame:
        """Containers up to and beyond 4,096 elements; payloads near and over 65,535 bytes."""
        rng = self.rng
        n = rng.choice((MAX_CONTAINER_LEN, MAX_CONTAINER_LEN + 1, 16_000, MAX_PAYLOAD - 8))
        kind = rng.randrange(4)
        if kind == 0:
            payload = raw_array([VERSION, pack(0x20), pack(1), pack(bytes(16)), pack(bytes(16)),
                                 pack(0), array_header(n) + b"\xc0" * n])
        elif kind == 1:
            payload = array_header(n) + b"\x01" * n
        elif kind == 2:  # a routed header with a bin body sized to the limit, or one over
            body = _bin(bytes(rng.choice((MAX_PAYLOAD - 60, MAX_PAYLOAD - 40, MAX_PAYLOAD))), rng)
            payload = self._routed(0x20, body, dst=self.target.node_id)
        else:
            entries = rng.choice((1000, 1001, 4096, 4097))
            entry = raw_array([pack(bytes(16)), pack(0), pack(0)])
            payload = raw_array([VERSION, pack(0x10), pack(1000),
                                 array_header(entries) + entry * entries])
        return Frame("large-container", payload[:MAX_PAYLOAD + 16])

    def _out_of_profile(self) -> Frame:
        rng = self.rng
        bad = hostile_value(rng)
        payload = rng.choice((
            bad,
            self._routed(rng.randrange(0x20, 0x40), bad, dst=self.target.node_id),
            raw_array([VERSION, pack(rng.choice((1, 2, 3, 4, 5, 6, 0x10, 0x11, 0x12, 0x40))), bad]),
            raw_array([VERSION, bad]),
        ))
        return Frame("out-of-profile", payload)

    def _garbage(self) -> Frame:
        rng = self.rng
        data = rng.randbytes(rng.randrange(1, 300))
        if rng.random() < 0.5:
            data = frame(data)
        return Frame("raw-garbage", data, raw=True)

    def _valid_link_message(self) -> Message:
        rng = self.rng
        return rng.choice((
            Hello(rng.randbytes(32), rng.randbytes(NONCE_LEN)),
            HelloAck(rng.randbytes(32), rng.randbytes(NONCE_LEN), rng.randbytes(64)),
            Ack(rng.randbytes(64)),
            Close(rng.choice((0, 1, 4, 5, 8, 65535)), random_text(rng, rng.randrange(40))),
        ))

    def _wrong_state_established(self) -> Frame:
        """Handshake messages (and CLOSE) on an established link."""
        return Frame("wrong-state", encode_message(self._valid_link_message())[4:])

    def _wrong_state_before(self) -> list[Frame]:
        """ACK before HELLO, DATA/PING/routing before the handshake, HELLO_ACK to a responder."""
        rng = self.rng
        message = rng.choice((
            Ack(rng.randbytes(64)),
            HelloAck(rng.randbytes(32), rng.randbytes(NONCE_LEN), rng.randbytes(64)),
            Ping(_u32(rng)), Pong(_u32(rng)),
            SeqnoRequest(NodeId(random_id(rng)), 1, 1),
            RouteUpdate(4000, (RouteEntry(NodeId(random_id(rng)), 1, 1),)),
            DirectoryRequest(1, "supernodes", {}),
        ))
        first = Frame("pre-wrong-state", encode_message(message), raw=True)
        if rng.random() < 0.5:
            payload = self.survivable_frame().data  # any other frame valid only later
            first = Frame("pre-wrong-state", frame(payload), raw=True)
        return [first]

    def _hello_then(self) -> list[Frame]:
        """A real-looking HELLO, then HELLO again, ACK with a bad signature, DATA, or anything."""
        rng = self.rng
        key = Identity.from_seed(rng.randbytes(32)).public_key
        hello = encode_message(Hello(key, rng.randbytes(NONCE_LEN)))
        then = rng.choice((
            lambda: Frame("pre-hello-then", hello, raw=True),  # HELLO twice
            lambda: Frame("pre-hello-then", encode_message(Ack(rng.randbytes(64))), raw=True),
            lambda: Frame("pre-hello-then", frame(self.survivable_frame().data), raw=True),
            self.hostile_frame,
        ))()
        return [Frame("pre-hello-then", hello, raw=True), then]


def split_array(payload: bytes) -> list[bytes] | None:
    """The raw bytes of each element of a top-level msgpack array, or None if not one."""
    unpacker = msgpack.Unpacker(max_buffer_size=2 * MAX_PAYLOAD, strict_map_key=False,
                                raw=True)
    unpacker.feed(payload)
    try:
        n = unpacker.read_array_header()
        elements, start = [], unpacker.tell()
        for _ in range(n):
            unpacker.skip()
            end = unpacker.tell()
            elements.append(payload[start:end])
            start = end
    except Exception:
        return None
    return elements


# --- the attacker ----------------------------------------------------------------------------


class TargetGone(AssertionError):
    """The target stopped answering in a way no peer behaviour excuses."""


class Connection:
    """One non-blocking TCP connection: write while reading, so neither side stalls."""

    def __init__(self, address: tuple[str, int], timeout: float) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.received = bytearray()
        self.eof = False
        self.reset = False

    def close(self) -> None:
        self.selector.close()
        self.sock.close()

    def _read_some(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except (ConnectionResetError, BrokenPipeError):
            self.eof = self.reset = True
            return
        if data:
            self.received += data
        else:
            self.eof = True

    def send(self, data: bytes) -> bool:
        """Write everything (reading meanwhile); False if the peer closed first."""
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        while view:
            if self.eof:
                return False
            self.selector.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            for _, mask in self.selector.select(max(deadline - time.monotonic(), 0)):
                if mask & selectors.EVENT_READ:
                    self._read_some()
                if mask & selectors.EVENT_WRITE and not self.eof:
                    try:
                        view = view[self.sock.send(view):]
                    except BlockingIOError:
                        pass
                    except (ConnectionResetError, BrokenPipeError):
                        self.eof = self.reset = True
            if time.monotonic() > deadline:
                raise TargetGone(f"could not write {len(data)} bytes in {self.timeout:g} s")
        self.selector.modify(self.sock, selectors.EVENT_READ)
        return True

    def read_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not done() and not self.eof:
            if time.monotonic() > deadline:
                raise TargetGone(f"timed out after {self.timeout:g} s waiting for {what}")
            if self.selector.select(max(deadline - time.monotonic(), 0)):
                self._read_some()

    def finish(self) -> None:
        """Half-close and read until the target closes its side."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.eof = True
        self.read_until(lambda: False, "the target to close the connection")


class Attacker:
    """Dials the target; can complete a real handshake with one of its own identities."""

    def __init__(self, address: tuple[str, int], rng: random.Random, *, identities: int = 16,
                 timeout: float = 20.0) -> None:
        self.address = address
        self.rng = rng
        self.timeout = timeout
        self.identities = [Identity.from_seed(rng.randbytes(32)) for _ in range(identities)]
        self._next_identity = 0
        self.last_down: LinkDown | None = None

    def connect(self) -> Connection:
        return Connection(self.address, self.timeout)

    def handshake(self, conn: Connection) -> LinkCore | None:
        """A real handshake as initiator; None if the target refused or closed."""
        identity = self.identities[self._next_identity % len(self.identities)]
        self._next_identity += 1
        core = LinkCore(identity, initiator=True, nonce=self.rng.randbytes(NONCE_LEN),
                        now=time.monotonic())
        conn.send(core.data_to_send())
        conn.read_until(lambda: bool(conn.received), "HELLO_ACK")
        while core.state is LinkState.HANDSHAKE:
            if not conn.received:
                if conn.eof:
                    core.receive_eof(time.monotonic())
                    break
                conn.read_until(lambda: bool(conn.received), "HELLO_ACK")
                continue
            data = bytes(conn.received)
            conn.received.clear()
            core.receive_data(data, time.monotonic())
        conn.send(core.data_to_send())  # ACK and the first PING, or a CLOSE
        self.last_down = core.down
        return core if core.state is LinkState.ESTABLISHED else None

    @staticmethod
    def replies(link: LinkCore | None) -> Replies:
        """A reader of what the target writes on ``link`` (the #12 seam for reading, as
        :func:`write_payload` is for writing)."""
        return Replies(link)


class Replies:
    """Decodes the target's frames as they arrive: PONG sequence numbers, the CLOSE
    code, and how many frames we could not decode."""

    def __init__(self, link: LinkCore | None) -> None:
        self.link = link
        self.pongs: set[int] = set()
        self.close_code: int | None = None
        self.undecodable = 0
        self.frames = 0
        sealed = link is not None and link.opener is not None
        self._decoder = FrameDecoder(MAX_SEALED_PAYLOAD if sealed else MAX_PAYLOAD)
        self._broken = False

    def feed(self, conn: Connection) -> Replies:
        """Consume everything ``conn`` has received so far."""
        self._decoder.receive_data(conn.received)
        conn.received.clear()
        while not self._broken:
            try:
                payload = self._decoder.next_payload()
            except RemoteProtocolError:
                self._broken = True
                self.undecodable += 1
                break
            if payload is None:
                break
            self.frames += 1
            try:
                if self.link is not None and self.link.opener is not None:
                    payload = self.link.opener.open(payload)  # continues the core's counter
                message = decode_message(payload)
            except RemoteProtocolError:
                self.undecodable += 1
                continue
            if isinstance(message, Pong):
                self.pongs.add(message.seq)
            elif isinstance(message, Close):
                self.close_code = message.code
        return self


# --- a campaign against one process ------------------------------------------------------------


@dataclass
class Stats:
    frames: int = 0
    connections: int = 0
    established: int = 0
    sentinels_confirmed: int = 0
    duplicate_links: int = 0
    undecodable_replies: int = 0
    families: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        top = ", ".join(f"{name} {count}" for name, count in sorted(self.families.items()))
        return (f"{self.frames} frames on {self.connections} connections "
                f"({self.established} after a handshake, {self.sentinels_confirmed} sentinels "
                f"answered, {self.duplicate_links} duplicate-link refusals, "
                f"{self.undecodable_replies} undecodable replies); per family: {top}")


DUPLICATE_LINK = 4


def _count(stats: Stats, last: list[Frame], frames: list[Frame]) -> None:
    last.extend(frames)
    stats.frames += len(frames)
    stats.families.update(f.family for f in frames)


MAX_ROUNDS = 50
"""Hostile rounds on one established link before we hang up ourselves."""


def _wait_for_pong(conn: Connection, replies: Replies, seq: int) -> None:
    conn.read_until(lambda: seq in replies.feed(conn).pongs,
                    "the PONG of the sentinel PING, or the link to close")
    replies.feed(conn)


def run_batch(attacker: Attacker, generator: Generator, stats: Stats,
              last: list[Frame]) -> None:
    """One connection, until the target closes it.

    A quarter of the connections get a pre-handshake batch.  The others complete a
    real handshake, send survivable frames and a sentinel PING whose PONG must come
    back (the link must survive valid frames), then rounds of one hostile frame and
    another sentinel until the target closes the link.  A frame that may leave the
    framing out of step (``raw``) ends the connection: after it we only send EOF.
    """
    rng = generator.rng
    conn = attacker.connect()
    stats.connections += 1
    last.clear()
    try:
        if rng.random() < 0.25:
            frames = generator.pre_handshake_batch()
            _count(stats, last, frames)
            conn.send(b"".join(wire(None, f) for f in frames))
            conn.finish()
            return
        link = attacker.handshake(conn)
        if link is None:
            link_state = attacker.last_down
            replies = attacker.replies(None).feed(conn)
            raise TargetGone(f"handshake refused (CLOSE code {replies.close_code}, "
                             f"{replies.frames} frames received, eof {conn.eof}, "
                             f"reset {conn.reset}, link {link_state})")
        stats.established += 1
        conn.received.clear()
        replies = attacker.replies(link)
        count = rng.choice((5, 20, 50, 100, rng.randrange(1, 200)))
        frames = [generator.survivable_frame() for _ in range(count)]
        for round_ in range(MAX_ROUNDS + 1):
            sentinel = rng.randrange(1 << 32)
            frames.append(Frame("sentinel", pack([PROTOCOL_VERSION, 5, sentinel])))
            _count(stats, last, frames)
            if not conn.send(b"".join(wire(link, f) for f in frames)):
                break
            _wait_for_pong(conn, replies, sentinel)
            if sentinel not in replies.pongs:
                if round_ > 0:
                    break  # the hostile frame closed the link: as it should
                if replies.close_code == DUPLICATE_LINK:
                    stats.duplicate_links += 1
                    break
                families = Counter(f.family for f in frames)
                raise AssertionError(
                    f"the target closed an established link (CLOSE code {replies.close_code}) "
                    f"during valid frames ({dict(families)}) instead of answering the sentinel")
            if round_ == 0:
                stats.sentinels_confirmed += 1
            frames = [generator.hostile_frame()]
            if frames[0].raw or round_ == MAX_ROUNDS:
                _count(stats, last, frames)
                conn.send(b"".join(wire(link, f) for f in frames))
                break
        stats.undecodable_replies += replies.undecodable
        conn.finish()
    finally:
        conn.close()


def vm_rss(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


RSS_ALLOWANCE = 64 << 20


def describe_frames(frames: list[Frame], limit: int = 4_000) -> str:
    lines = [f"{f.family}{' raw' if f.raw else ''}: {f.data.hex()}" for f in frames]
    text = "\n".join(lines)
    return text if len(text) < limit else "..." + text[-limit:]


def run_campaign(*, address: tuple[str, int], target: Target, pid: int, alive: Callable[[], bool],
                 log: Callable[[], str], check_neighbour: Callable[[], None], seed: int,
                 frames: int, exclude: frozenset[str] = frozenset(),
                 max_seconds: float = 600.0, check_every: float = 5.0) -> Stats:
    """Fuzz one process until ``frames`` frames are sent; between connections check it is
    alive, its RSS is bounded, and (every ``check_every`` s) that ``check_neighbour`` passes."""
    rng = random.Random(seed)
    generator = Generator(rng, target, exclude=exclude)
    attacker = Attacker(address, rng)
    generator.sources = [identity.node_id.raw for identity in attacker.identities]
    stats = Stats()
    last: list[Frame] = []
    rss_limit = vm_rss(pid) + RSS_ALLOWANCE
    started = time.monotonic()
    next_check = started + check_every
    replay = f"(replay with OVERLAY_FUZZ_SEED={seed})"

    def post_mortem(what: str) -> str:
        deadline = time.monotonic() + 3  # a dying process may take a moment to exit
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log()
        crash = text.find("Traceback")
        excerpt = text[crash:crash + 6000] if crash >= 0 else text[-3000:]
        return (f"{what} {replay}; target {'alive' if alive() else 'dead'} after "
                f"{stats.summary()}\nlast connection's frames:\n{describe_frames(last)}\n"
                f"log:\n{excerpt}")

    while stats.frames < frames:
        if time.monotonic() - started > max_seconds:
            raise AssertionError(f"only {stats.summary()} in {max_seconds:g} s {replay}")
        try:
            run_batch(attacker, generator, stats, last)
        except (AssertionError, OSError) as exc:
            raise AssertionError(post_mortem(f"target misbehaved: {exc}")) from None
        if not alive():
            raise AssertionError(post_mortem("target process died"))
        rss = vm_rss(pid)
        if rss > rss_limit:
            raise AssertionError(post_mortem(f"RSS {rss >> 20} MiB above {rss_limit >> 20} MiB"))
        if time.monotonic() >= next_check:
            check_neighbour()
            next_check = time.monotonic() + check_every
    check_neighbour()
    assert alive(), post_mortem("target process died")
    assert "Traceback" not in log(), post_mortem("a traceback in the target's log")
    assert vm_rss(pid) <= rss_limit, post_mortem("RSS above the bound at the end")
    return stats


class Watchdog:
    """Runs ``probe`` (a legitimate client's request) again and again in a thread while
    the fuzzer runs, so the target is checked under load; ``check()`` raises the first
    failure, ``stop()`` also requires at least one success."""

    def __init__(self, probe: Callable[[], None], pause: float = 1.0) -> None:
        self._probe = probe
        self._pause = pause
        self._stop = threading.Event()
        self.successes = 0
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, name="fuzz-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._probe()
            except Exception as exc:  # reported by check(), in the test's thread
                self.failures.append(f"{type(exc).__name__}: {exc}")
                return
            self.successes += 1
            self._stop.wait(self._pause)

    def check(self) -> None:
        if self.failures:
            raise AssertionError(f"the legitimate client was not served: {self.failures[0]}")

    def stop(self) -> None:
        """Let the probe in progress finish; then demand one success and no failure."""
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the legitimate client's probe hung"
        self.check()
        assert self.successes >= 1, "the legitimate client never completed a probe"


# --- single cases, for regression tests ----------------------------------------------------


def send_before_handshake(address: tuple[str, int], data: bytes, timeout: float = 20.0) -> None:
    """Write ``data`` as the first bytes of a connection, then EOF; wait for the close."""
    conn = Connection(address, timeout)
    try:
        conn.send(data)
        conn.finish()
    finally:
        conn.close()


def send_established(address: tuple[str, int], payloads: list[bytes],
                     timeout: float = 20.0) -> Replies:
    """Complete a real handshake, write each payload (:func:`write_payload`), then EOF;
    returns what the target answered once it closed the connection."""
    attacker = Attacker(address, random.Random(0), identities=1, timeout=timeout)
    conn = attacker.connect()
    try:
        link = attacker.handshake(conn)
        assert link is not None, f"handshake refused: {attacker.last_down}"
        conn.received.clear()
        conn.send(b"".join(write_payload(link, p) for p in payloads))
        conn.finish()
        return attacker.replies(link).feed(conn)
    finally:
        conn.close()
