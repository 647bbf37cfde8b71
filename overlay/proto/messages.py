"""Every message of the wire protocol, as frozen dataclasses.

A frame's msgpack object is always an array whose first two elements are the
protocol version and the message type, like the fixed leading fields of an IP
header.  Link-local control messages (handshake, keepalive, close) follow with
their own fields; routed packets (types 0x20-0x3f) follow with the fixed
routing header ``ttl, src, dst, packet_id`` and a body.  Relays forward routed
types they do not know, as IP routers forward protocols they do not speak.

Constructors validate and raise ``ValueError``: a message built here with bad
fields is our own bug.  What only received bytes reach (the ``from_fields``
parsers) raises :class:`~overlay.errors.MalformedMessage`, and
:func:`decode_message` words every flaw in received bytes as a
:class:`~overlay.errors.MalformedMessage` (or
:class:`~overlay.errors.UnsupportedVersion`): no ``ValueError`` escapes it.
docs/protocol.md is the normative description; its test vectors are checked
against this module.  It is long because the wire has many types, but it does one
job (the catalogue of messages and their validation), so that the protocol
document maps onto one module.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, NamedTuple, overload

from overlay.errors import MalformedMessage, UnsupportedVersion
from overlay.ids import NODE_ID_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN, NodeId
from overlay.proto.codec import (
    check_payload_size,
    describe_value,
    encode_frame,
    encode_payload,
    pack,
    unpack,
)

PROTOCOL_VERSION = 2
EPHEMERAL_KEY_LEN = 32
"""An X25519 key (public or secret) of the handshake."""
NONCE_LEN = EPHEMERAL_KEY_LEN
"""The fresh random bytes a link core is given per connection: its ephemeral X25519 secret
(the name is from version 1, where they were a nonce sent in clear)."""
LEGACY_VERSIONS = frozenset({1})
"""Versions whose CLOSE layout we know: a peer speaking one is refused in its own version,
so that it can read why."""
MAX_REASON_LEN = 256
MAX_TTL = 255
DEFAULT_TTL = 32
U16_MAX = 2**16 - 1
U32_MAX = 2**32 - 1


class MessageType(IntEnum):
    """Position 1 of every frame: 0x01-0x0f link control, 0x10-0x1f routing control
    (both link-local), 0x20-0x3f routed packets, 0x40-0x4f directory (link-local,
    between a client and the login/contacts server)."""

    HELLO = 0x01
    HELLO_ACK = 0x02
    ACK = 0x03
    CLOSE = 0x04
    PING = 0x05
    PONG = 0x06
    ROUTE_UPDATE = 0x10
    SEQNO_REQUEST = 0x11
    ATTACH = 0x12
    DATA = 0x20
    ECHO_REQUEST = 0x21
    ECHO_REPLY = 0x22
    TIME_EXCEEDED = 0x23
    UNREACHABLE = 0x24
    VIA = 0x25
    PUNCH = 0x26
    DIRECTORY_REQUEST = 0x40
    DIRECTORY_RESPONSE = 0x41
    DIRECTORY_NOTICE = 0x42


LINK_CONTROL_TYPES = frozenset(range(0x01, 0x10))
"""Messages the link core itself sends and consumes (handshake, keepalive, close)."""

ROUTED_TYPES = range(0x20, 0x40)
"""Types carrying the routing header; forwarded by relays without reading the body."""


class CloseCode(IntEnum):
    """Why a link was refused or closed (field 2 of CLOSE)."""

    NORMAL = 0
    VERSION_MISMATCH = 1
    BAD_SIGNATURE = 2
    SELF_CONNECTION = 3
    DUPLICATE_LINK = 4
    PROTOCOL_ERROR = 5
    TIMEOUT = 6
    WRONG_PEER = 7
    OVERLOADED = 8
    SLOW_READER = 9
    AUTHENTICATION_FAILED = 10
    KEYS_EXHAUSTED = 11

    @classmethod
    def describe(cls, code: int) -> str:
        try:
            return cls(code).name.lower().replace("_", " ")
        except ValueError:
            return f"code {code}"


# --- field validation ---------------------------------------------------------


def _check_uint(value: object, name: str, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be an integer in 0..{maximum}, got {describe_value(value)}")
    return value


def _check_bin(value: object, name: str, length: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise ValueError(f"{name} must be {length} bytes of bin, got {type(value).__name__}")
    return value


def _check_text(value: object, name: str, max_len: int) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise ValueError(f"{name} must be a string of at most {max_len} characters")
    return value


# --- messages -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """Base class: ``header_type()`` is position 1, ``fields()`` positions 2 onwards."""

    def header_type(self) -> int:
        raise NotImplementedError

    def fields(self) -> list[Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class LinkMessage(Message):
    """A link-local control message: meaningful only between two neighbours."""

    TYPE: ClassVar[MessageType]

    def header_type(self) -> int:
        return int(self.TYPE)

    @classmethod
    def from_fields(cls, fields: list[Any]) -> LinkMessage:
        return cls(*fields)


@dataclass(frozen=True, slots=True)
class Hello(LinkMessage):
    """Handshake step 1, initiator -> responder: its identity key and ephemeral X25519 key."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    public_key: bytes
    ephemeral_key: bytes

    def __post_init__(self) -> None:
        _check_bin(self.public_key, "public_key", PUBLIC_KEY_LEN)
        _check_bin(self.ephemeral_key, "ephemeral_key", EPHEMERAL_KEY_LEN)

    def fields(self) -> list[Any]:
        return [self.public_key, self.ephemeral_key]


@dataclass(frozen=True, slots=True)
class HelloAck(LinkMessage):
    """Handshake step 2, responder -> initiator: its keys and transcript signature."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO_ACK
    public_key: bytes
    ephemeral_key: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_bin(self.public_key, "public_key", PUBLIC_KEY_LEN)
        _check_bin(self.ephemeral_key, "ephemeral_key", EPHEMERAL_KEY_LEN)
        _check_bin(self.signature, "signature", SIGNATURE_LEN)

    def fields(self) -> list[Any]:
        return [self.public_key, self.ephemeral_key, self.signature]


@dataclass(frozen=True, slots=True)
class Ack(LinkMessage):
    """Handshake step 3, initiator -> responder: the initiator's transcript signature."""

    TYPE: ClassVar[MessageType] = MessageType.ACK
    signature: bytes

    def __post_init__(self) -> None:
        _check_bin(self.signature, "signature", SIGNATURE_LEN)

    def fields(self) -> list[Any]:
        return [self.signature]


@dataclass(frozen=True, slots=True)
class Close(LinkMessage):
    """Refuses a handshake or ends a link, with a code and a human-readable reason."""

    TYPE: ClassVar[MessageType] = MessageType.CLOSE
    code: int
    reason: str

    def __post_init__(self) -> None:
        _check_uint(self.code, "code", U16_MAX)
        _check_text(self.reason, "reason", MAX_REASON_LEN)

    def fields(self) -> list[Any]:
        return [self.code, self.reason]


@dataclass(frozen=True, slots=True)
class Ping(LinkMessage):
    """Keepalive probe; the RTT is measured by the sender from its own clock."""

    TYPE: ClassVar[MessageType] = MessageType.PING
    seq: int

    def __post_init__(self) -> None:
        _check_uint(self.seq, "seq", U32_MAX)

    def fields(self) -> list[Any]:
        return [self.seq]


@dataclass(frozen=True, slots=True)
class Pong(LinkMessage):
    """Answer to a PING, echoing its sequence number."""

    TYPE: ClassVar[MessageType] = MessageType.PONG
    seq: int

    def __post_init__(self) -> None:
        _check_uint(self.seq, "seq", U32_MAX)

    def fields(self) -> list[Any]:
        return [self.seq]


U16_MAX_SEQNO = U16_MAX
METRIC_INFINITY = U32_MAX
"""A metric of 2**32 - 1 microseconds means "no route" (a retraction)."""
MAX_UPDATE_ENTRIES = 1_000


class RouteEntry(NamedTuple):
    """One destination in a ROUTE_UPDATE: the sender's route to ``destination``.

    A NamedTuple rather than a validating dataclass: a full table is thousands
    of entries, so they are validated in bulk when decoded (``RouteUpdate.from_fields``)
    and built only by the routing core when sent.
    """

    destination: NodeId
    seqno: int
    metric: int


class RouteEntries(Sequence[RouteEntry]):
    """A ROUTE_UPDATE's entries held as three columns, not one tuple per entry.

    A full table is thousands of entries: decoded, they stay the columns msgpack's
    arrays were split into (destinations as the raw 16 bytes, validated), and the
    routing core builds its own as columns; a :class:`RouteEntry` is made only for
    whoever iterates.  Equal to any sequence of the same entries (a tuple too).
    Holds ids (bytes) and ints only, so it is flat: its encoding skips the depth walk.
    """

    __slots__ = ("_body", "destinations", "metrics", "seqnos")

    def __init__(self, destinations: Sequence[bytes], seqnos: Sequence[int],
                 metrics: Sequence[int]) -> None:
        if not len(destinations) == len(seqnos) == len(metrics):
            raise ValueError("route entry columns must be of one length")
        self.destinations = destinations
        self.seqnos = seqnos
        self.metrics = metrics
        self._body: bytes | None = None

    def packed_body(self) -> bytes:
        """The msgpack array of :meth:`wire` without its header (made once, then kept:
        entries are immutable)."""
        if self._body is None:
            self._body = pack(self.wire())[len(array_header(len(self))):]
        return self._body

    def __len__(self) -> int:
        return len(self.destinations)

    @overload
    def __getitem__(self, index: int) -> RouteEntry: ...

    @overload
    def __getitem__(self, index: slice) -> RouteEntries: ...

    def __getitem__(self, index: int | slice) -> RouteEntry | RouteEntries:
        if isinstance(index, slice):
            return RouteEntries(self.destinations[index], self.seqnos[index],
                                self.metrics[index])
        return RouteEntry(NodeId.interned(self.destinations[index]), self.seqnos[index],
                          self.metrics[index])

    def __iter__(self) -> Iterator[RouteEntry]:
        ids = NodeId.interned_many(self.destinations)
        return map(_new_entry, zip(ids, self.seqnos, self.metrics, strict=True))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"RouteEntries({list(self)!r})"

    def wire(self) -> list[list[Any]]:
        """The entries as msgpack arrays (a NodeId or raw bytes packs as bin)."""
        return list(map(list, zip(self.destinations, self.seqnos, self.metrics, strict=True)))


@dataclass(frozen=True, slots=True)
class RouteUpdate(LinkMessage):
    """Distance-vector advertisement: the sender's routes, and when it will next refresh them.

    ``interval_ms`` is the sender's periodic update interval; a receiver expires
    a route that has not been refreshed for 3.5 intervals.  ``entries`` is a tuple
    of :class:`RouteEntry` or, from the decoder and the routing core, the same held
    as :class:`RouteEntries` columns.
    """

    TYPE: ClassVar[MessageType] = MessageType.ROUTE_UPDATE
    interval_ms: int
    entries: Sequence[RouteEntry]

    def __post_init__(self) -> None:
        _check_uint(self.interval_ms, "interval_ms", U32_MAX)
        if (not isinstance(self.entries, tuple | RouteEntries)
                or len(self.entries) > MAX_UPDATE_ENTRIES):
            raise ValueError(f"entries must be a tuple of at most {MAX_UPDATE_ENTRIES}")

    def fields(self) -> list[Any]:
        # A NodeId is a bytes subclass: msgpack packs it as bin without a copy.
        if isinstance(self.entries, RouteEntries):
            return [self.interval_ms, self.entries.wire()]
        return [self.interval_ms, [[e.destination, e.seqno, e.metric] for e in self.entries]]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> LinkMessage:
        """Validated in bulk: a full table is thousands of entries, received by every
        neighbour, so each check runs once over a whole column (``map``/``min``/``max``
        in C), not once per entry in Python.  Accepts and refuses exactly what a check of
        each entry would, and proves the entries hold no nested value (the depth
        :func:`~overlay.proto.codec.unpack` may skip for this type, :func:`decode_message`).
        The entries stay columns (:class:`RouteEntries`)."""
        interval_ms, entries = fields
        if type(entries) is not list:
            raise MalformedMessage("entries must be an array")
        if not entries:
            return cls(interval_ms, ())
        if set(map(type, entries)) != _LIST_ONLY or set(map(len, entries)) != _THREE_ONLY:
            raise MalformedMessage("each entry is [destination, seqno, metric]")
        destinations, seqnos, metrics = zip(*entries, strict=True)
        if set(map(type, destinations)) != _BYTES_ONLY or set(map(len, destinations)) != {
                NODE_ID_LEN}:
            raise MalformedMessage(f"destination must be {NODE_ID_LEN} bytes of bin")
        if (set(map(type, seqnos)) != _INT_ONLY or min(seqnos) < 0
                or max(seqnos) > U16_MAX):
            raise MalformedMessage(f"seqno must be an integer in 0..{U16_MAX}")
        if (set(map(type, metrics)) != _INT_ONLY or min(metrics) < 0
                or max(metrics) > METRIC_INFINITY):
            raise MalformedMessage(f"metric must be an integer in 0..{METRIC_INFINITY}")
        return cls(interval_ms, RouteEntries(destinations, seqnos, metrics))


_LIST_ONLY = {list}
_THREE_ONLY = {3}
_INT_ONLY = {int}
_BYTES_ONLY = {bytes}
_new_entry = functools.partial(tuple.__new__, RouteEntry)


@dataclass(frozen=True, slots=True)
class SeqnoRequest(LinkMessage):
    """Asks for a route to ``destination`` with a sequence number of at least ``seqno``.

    Sent when every route a node has to a destination is unfeasible (starvation);
    forwarded towards the destination at most ``hop_count`` times.
    """

    TYPE: ClassVar[MessageType] = MessageType.SEQNO_REQUEST
    destination: NodeId
    seqno: int
    hop_count: int

    def __post_init__(self) -> None:
        if not isinstance(self.destination, NodeId):
            raise ValueError("destination must be a node id")
        _check_uint(self.seqno, "seqno", U16_MAX)
        _check_uint(self.hop_count, "hop_count", MAX_TTL)

    def fields(self) -> list[Any]:
        return [self.destination.raw, self.seqno, self.hop_count]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> LinkMessage:
        destination, seqno, hop_count = fields
        return cls(NodeId(_check_bin(destination, "destination", NODE_ID_LEN)), seqno, hop_count)


class AttachPurpose(IntEnum):
    """Field 2 of ATTACH: why a node that is not a routing peer opened this link."""

    PROBE = 0
    """Only measuring the RTT; the link will be closed soon."""
    EDGE = 1
    """An edge client attaching: deliver packets addressed to it over this link."""


@dataclass(frozen=True, slots=True)
class Attach(LinkMessage):
    """Sent first on a link by a node that does not route (an edge client, or a probe).

    The receiver keeps the link out of its routing: no route updates either way,
    no routes through the sender, and the sender's own id is not advertised, so
    routing tables stay O(supernodes) however many clients attach.
    """

    TYPE: ClassVar[MessageType] = MessageType.ATTACH
    purpose: int

    def __post_init__(self) -> None:
        _check_uint(self.purpose, "purpose", 255)

    def fields(self) -> list[Any]:
        return [self.purpose]


@dataclass(frozen=True, slots=True)
class RoutedPacket(Message):
    """``[version, type, ttl, src, dst, packet_id, body]``: a packet relayed hop by hop.

    The body is any msgpack value; its meaning depends on ``type`` and only the
    destination interprets it.
    """

    type: int
    ttl: int
    src: NodeId
    dst: NodeId
    packet_id: int
    body: Any
    wire_body: bytes | None = field(default=None, compare=False, repr=False)
    """The body's msgpack bytes as received, already checked against the profile
    (:mod:`overlay.proto.fastpath` sets it): a relay sends them on as they came
    instead of encoding ``body`` again.  None for packets built here."""

    def __post_init__(self) -> None:
        # Every packet a node sends or relays is built here: the plain-int case is
        # tested first, in one expression, and the checks that word errors run only
        # when it fails (an IntEnum type or an id of the wrong class included).
        if not (type(self.ttl) is int and 0 <= self.ttl <= MAX_TTL
                and type(self.packet_id) is int and 0 <= self.packet_id <= U32_MAX
                and type(self.src) is NodeId and type(self.dst) is NodeId
                and 0x20 <= self.type <= 0x3F):
            self._check_fields()

    def _check_fields(self) -> None:
        if not isinstance(self.type, int) or self.type not in ROUTED_TYPES:
            raise ValueError(f"type {describe_value(self.type)} is not a routed packet type")
        _check_uint(self.ttl, "ttl", MAX_TTL)
        if not isinstance(self.src, NodeId) or not isinstance(self.dst, NodeId):
            raise ValueError("src and dst must be node ids")
        _check_uint(self.packet_id, "packet_id", U32_MAX)

    def header_type(self) -> int:
        return self.type

    def fields(self) -> list[Any]:
        return [self.ttl, self.src.raw, self.dst.raw, self.packet_id, self.body]

    def with_ttl(self, ttl: int) -> RoutedPacket:
        """This packet with another TTL (what a relay sends on), body bytes kept."""
        return RoutedPacket(self.type, ttl, self.src, self.dst, self.packet_id, self.body,
                            self.wire_body)

    @classmethod
    def from_fields(cls, packet_type: int, fields: list[Any]) -> RoutedPacket:
        ttl, src, dst, packet_id, body = fields
        src_id = NodeId(_check_bin(src, "src", NODE_ID_LEN))
        dst_id = NodeId(_check_bin(dst, "dst", NODE_ID_LEN))
        return cls(packet_type, ttl, src_id, dst_id, packet_id, body)


# --- directory (client <-> login/contacts server) -----------------------------------

MAX_OPERATION_LEN = 32


def _check_map(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"{name} must be a map with string keys")
    return value


@dataclass(frozen=True, slots=True)
class DirectoryRequest(LinkMessage):
    """Client -> server: run ``operation`` with named ``arguments``.

    ``request_id`` is chosen by the client and echoed in the response, so
    requests may be pipelined; the server answers each connection's requests
    in order.  The arguments of each operation are in docs/directory.md.
    """

    TYPE: ClassVar[MessageType] = MessageType.DIRECTORY_REQUEST
    request_id: int
    operation: str
    arguments: dict[str, Any]

    def __post_init__(self) -> None:
        _check_uint(self.request_id, "request_id", U32_MAX)
        _check_text(self.operation, "operation", MAX_OPERATION_LEN)
        _check_map(self.arguments, "arguments")

    def fields(self) -> list[Any]:
        return [self.request_id, self.operation, self.arguments]


@dataclass(frozen=True, slots=True)
class DirectoryResponse(LinkMessage):
    """Server -> client: an HTTP-like ``status`` (200, 201, 4xx, 500), a reason, a body."""

    TYPE: ClassVar[MessageType] = MessageType.DIRECTORY_RESPONSE
    request_id: int
    status: int
    reason: str
    body: dict[str, Any]

    def __post_init__(self) -> None:
        _check_uint(self.request_id, "request_id", U32_MAX)
        if not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise ValueError(
                f"status must be an integer in 100..599, got {describe_value(self.status)}")
        _check_text(self.reason, "reason", MAX_REASON_LEN)
        _check_map(self.body, "body")

    def fields(self) -> list[Any]:
        return [self.request_id, self.status, self.reason, self.body]


@dataclass(frozen=True, slots=True)
class DirectoryNotice(LinkMessage):
    """Server -> client, unasked: something changed (a contact's presence, a request)."""

    TYPE: ClassVar[MessageType] = MessageType.DIRECTORY_NOTICE
    event: str
    body: dict[str, Any]

    def __post_init__(self) -> None:
        _check_text(self.event, "event", MAX_OPERATION_LEN)
        _check_map(self.body, "body")

    def fields(self) -> list[Any]:
        return [self.event, self.body]


LINK_MESSAGES: dict[int, type[LinkMessage]] = {
    cls.TYPE: cls
    for cls in (Hello, HelloAck, Ack, Close, Ping, Pong, RouteUpdate, SeqnoRequest, Attach,
                DirectoryRequest, DirectoryResponse, DirectoryNotice)
}
ROUTED_FIELD_COUNT = 5
ROUTE_UPDATE_HEAD = bytes((0x94, PROTOCOL_VERSION, MessageType.ROUTE_UPDATE))
"""A ROUTE_UPDATE frame's payload begins so: fixarray of 4, the version, the type."""


def encode_message(message: Message) -> bytes:
    """The complete frame (length prefix included) carrying ``message``."""
    return encode_frame([PROTOCOL_VERSION, message.header_type(), *message.fields()])


def encode_message_payload(message: Message) -> bytes:
    """The payload (no length prefix) of the frame carrying ``message``.

    A ROUTE_UPDATE's entries held as columns are flat by construction (no depth walk)
    and encode once however many links carry them (:meth:`RouteEntries.packed_body`);
    the payload is the same bytes msgpack makes of the whole message.
    """
    if type(message) is RouteUpdate and isinstance(message.entries, RouteEntries):
        entries = message.entries
        return check_payload_size(b"".join((
            ROUTE_UPDATE_HEAD, pack(message.interval_ms), array_header(len(entries)),
            entries.packed_body())))
    return encode_payload([PROTOCOL_VERSION, message.header_type(), *message.fields()])


def array_header(length: int) -> bytes:
    """The msgpack header of an array of ``length`` items (fixarray, array 16, array 32)."""
    if length < 16:
        return bytes((0x90 | length,))
    if length <= 0xFFFF:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def encode_close(close: Close, version: int = PROTOCOL_VERSION) -> bytes:
    """A CLOSE frame in ``version`` (ours, or one of :data:`LEGACY_VERSIONS`): every
    version so far has the same CLOSE layout, so an old peer can read why it is refused."""
    if version != PROTOCOL_VERSION and version not in LEGACY_VERSIONS:
        raise ValueError(f"no CLOSE layout known for version {version}")
    return encode_frame([version, close.header_type(), *close.fields()])


def decode_message(payload: bytes) -> Message:
    """Parse one frame payload; any flaw raises a RemoteProtocolError subclass.

    A ROUTE_UPDATE (by its first three bytes) skips the generic depth walk: its
    ``from_fields`` refuses anything but flat entries without walking into any
    value (a full table is thousands of entries, received by every neighbour).
    """
    obj = unpack(payload, check_depth=not payload.startswith(ROUTE_UPDATE_HEAD))
    if not isinstance(obj, list) or len(obj) < 2:
        raise MalformedMessage("a message is an array starting with version and type")
    version, message_type, *fields = obj
    if type(version) is not int or version != PROTOCOL_VERSION:  # not 1.0, not True
        raise UnsupportedVersion(version, PROTOCOL_VERSION)
    if not isinstance(message_type, int) or isinstance(message_type, bool):
        raise MalformedMessage(
            f"message type must be an integer, got {describe_value(message_type)}")
    cls = None if message_type in ROUTED_TYPES else LINK_MESSAGES.get(message_type)
    if cls is None and message_type not in ROUTED_TYPES:
        raise MalformedMessage(f"unknown message type 0x{message_type:02x}")
    try:
        if cls is None:
            if len(fields) != ROUTED_FIELD_COUNT:
                raise MalformedMessage(f"expected {ROUTED_FIELD_COUNT} fields, got {len(fields)}")
            return RoutedPacket.from_fields(message_type, fields)
        return cls.from_fields(fields)
    except (TypeError, ValueError, MalformedMessage) as exc:
        # TypeError: a wrong number of fields for the class; ValueError: a constructor's
        # validation (the same checks guard messages built here).
        name = type_name(message_type)
        raise MalformedMessage(f"bad {name} message: {exc}") from None


def type_name(message_type: int) -> str:
    try:
        return MessageType(message_type).name
    except ValueError:
        return f"0x{message_type:02x}"
