"""A ROUTE_UPDATE's entries read and written as numpy columns, with no object per entry.

Why: during convergence nearly every frame is a table of hundreds of entries,
received by every neighbour.  Decoded by msgpack, each entry is a list, a
16-byte ``bytes`` and two ints, and then a dict lookup of that ``bytes`` for
the destination's slot; at 10,000 simulated nodes that was a quarter of the
whole run (docs/benchmarks.md).  Here the entries stay arrays from the
payload's bytes to the routing table's columns, and back on the way out.

:func:`decode_route_update` reads the entries of a ROUTE_UPDATE at the
positions the layout gives them, when every entry has the layout the
reference encoder writes (docs/protocol.md section 2: a fixarray of 3, the id
as bin 8 of 16 bytes, each integer as a positive fixint or ``cc``/``cd`` for the
seqno, up to ``ce`` for the metric).  An entry's length depends on its
integers' widths, so the entries are found as the positions where an entry's
first three bytes (``93 c4 10``) occur, and then proved to be exactly the
chain of entries that a sequential parse from the first would visit; any
other payload (fewer than :data:`MIN_COLUMN_ENTRIES` entries, a wider
integer that receivers must still accept, three such bytes inside an id, any
flaw) returns None and takes the general decoder, which also words the
errors.  Both ways accept and refuse exactly the same payloads and decode
them to equal messages (tests/proto/test_route_columns.py checks this with
hypothesis).

:func:`encode_entries` writes entries from columns in the shortest form, the
same bytes msgpack makes of them, so that split horizon is a mask over one
encoding of an update rather than one encoding per neighbour.

No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from overlay.ids import NODE_ID_LEN
from overlay.proto.codec import MAX_PAYLOAD
from overlay.proto.messages import (
    MAX_UPDATE_ENTRIES,
    ROUTE_UPDATE_HEAD,
    RouteEntries,
    RouteUpdate,
)

Ints = npt.NDArray[np.int64]
Bytes = npt.NDArray[np.uint8]
Words = npt.NDArray[np.uint64]
"""Node ids as rows of two 8-byte words (the 16 bytes' own memory, viewed as ``<u8``)."""

WORD = np.dtype("<u8")
MIN_COLUMN_ENTRIES = 32
"""Fewer entries go the general way: numpy's fixed cost per call (a few dozen calls an
update) is more than msgpack's per entry below this."""

_FIXARRAY_3, _BIN8, _UINT8, _UINT16, _UINT32, _ARRAY16 = 0x93, 0xC4, 0xCC, 0xCD, 0xCE, 0xDC
_FIXINT_END = 0x80
_ID_AT = 3  # after 93 c4 10
_SEQNO_AT = _ID_AT + NODE_ID_LEN
_SHORTEST_ENTRY = _SEQNO_AT + 2  # two fixints
_METRIC_AT = _SEQNO_AT + 3  # in encode_entries' rows: after a cd seqno's room
_ENTRY_COLUMNS = _METRIC_AT + 5
"""Bytes of the widest entry: header, id, a ``cd`` seqno and a ``ce`` metric."""
_PADDING = bytes(_ENTRY_COLUMNS)
"""Zeros after the entries, so that reading one entry past a truncated end stays in bounds."""


def _widths(*types: int) -> Ints:
    """Encoded width (type byte included) of an integer by its type byte: 0 for a type
    this path does not read."""
    widths = np.zeros(256, np.int64)
    widths[:_FIXINT_END] = 1
    for marker in types:
        widths[marker] = 1 + (1 << (marker - _UINT8))  # cc: 1 byte, cd: 2, ce: 4
    return widths


_SEQNO_WIDTH = _widths(_UINT8, _UINT16)
_METRIC_WIDTH = _widths(_UINT8, _UINT16, _UINT32)


class EntryColumns(RouteEntries):
    """Entries held as arrays: ids as :data:`Words`, seqnos and metrics as int64.

    What the routing core reads (``words``, ``seqno_array``, ``metric_array``) and
    what it sends (with its encoding, ``body``, made from the same arrays).  The
    :class:`RouteEntries` columns of Python values are made only if someone asks
    for them (a test, a trace): equal to the same entries held any other way.
    """

    __slots__ = ("_lists", "metric_array", "seqno_array", "words")

    def __init__(self, words: Words, seqnos: Ints, metrics: Ints,
                 body: bytes | None = None) -> None:
        if not len(words) == len(seqnos) == len(metrics):
            raise ValueError("route entry columns must be of one length")
        self.words = words
        self.seqno_array = seqnos
        self.metric_array = metrics
        self._lists: tuple[list[bytes], list[int], list[int]] | None = None
        self._body = body

    def _columns(self) -> tuple[list[bytes], list[int], list[int]]:
        if self._lists is None:
            self._lists = (id_bytes(self.words), self.seqno_array.tolist(),
                           self.metric_array.tolist())
        return self._lists

    # Read-only here: the arrays are the entries.
    @property
    def destinations(self) -> Sequence[bytes]:  # type: ignore[override]
        return self._columns()[0]

    @property
    def seqnos(self) -> Sequence[int]:  # type: ignore[override]
        return self._columns()[1]

    @property
    def metrics(self) -> Sequence[int]:  # type: ignore[override]
        return self._columns()[2]

    def __len__(self) -> int:
        return len(self.seqno_array)

    def packed_body(self) -> bytes:
        if self._body is None:
            self._body = encode_entries(self.words, self.seqno_array,
                                        self.metric_array).joined()
        return self._body


def id_bytes(words: Words) -> list[bytes]:
    """Each row of ``words`` as the id's 16 bytes."""
    raw = words.tobytes()
    return [raw[i:i + NODE_ID_LEN] for i in range(0, len(raw), NODE_ID_LEN)]


def decode_route_update(payload: bytes) -> RouteUpdate | None:
    """The ROUTE_UPDATE in ``payload`` with its entries as :class:`EntryColumns`, if its
    layout is the one read here (module docstring); None otherwise, malformed included."""
    size = len(payload)
    if size > MAX_PAYLOAD or not payload.startswith(ROUTE_UPDATE_HEAD):
        return None
    at = len(ROUTE_UPDATE_HEAD)
    if size < at + 8:
        return None
    interval_ms, at = _uint(payload, at)
    if interval_ms < 0 or payload[at] != _ARRAY16:
        return None
    count = int.from_bytes(payload[at + 1:at + 3], "big")
    at += 3
    length = size - at
    if not MIN_COLUMN_ENTRIES <= count <= MAX_UPDATE_ENTRIES or length < count * _SHORTEST_ENTRY:
        return None
    padded = payload[at:] + _PADDING
    data = np.frombuffer(padded, np.uint8)
    # The same bytes seen as a big-endian u32 and a little-endian u64 starting at every
    # offset (views, no copy): one gather reads an integer or half an id at any position.
    u32 = np.ndarray((len(padded) - 3,), ">u4", padded, 0, (1,))
    u64 = np.ndarray((len(padded) - 7,), WORD, padded, 0, (1,))
    starts = np.flatnonzero(data[:length] == _FIXARRAY_3)
    starts = starts[(data[starts + 1] == _BIN8) & (data[starts + 2] == NODE_ID_LEN)]
    if len(starts) != count or starts[0] != 0:
        return None
    seqno_at = starts + _SEQNO_AT
    seqno_width = _SEQNO_WIDTH[data[seqno_at]]
    metric_at = seqno_at + seqno_width
    metric_width = _METRIC_WIDTH[data[metric_at]]
    ends = metric_at + metric_width
    # Every entry well formed, each one starting where the one before ends, the last
    # ending at the payload's end: exactly the parse that reads them one by one.
    if (not seqno_width.all() or not metric_width.all() or ends[-1] != length
            or not np.array_equal(ends[:-1], starts[1:])):
        return None
    words = np.empty((count, 2), WORD)
    words[:, 0] = u64[starts + _ID_AT]
    words[:, 1] = u64[starts + _ID_AT + 8]
    return RouteUpdate(interval_ms, EntryColumns(
        words, _uints(data, u32, seqno_at, seqno_width),
        _uints(data, u32, metric_at, metric_width)))


def _uint(payload: bytes, at: int) -> tuple[int, int]:
    """The unsigned integer at ``at`` (fixint, ``cc``, ``cd``, ``ce``) and where it ends;
    -1 for any other type.  The caller guarantees five bytes from ``at``."""
    first = payload[at]
    if first < _FIXINT_END:
        return first, at + 1
    if _UINT8 <= first <= _UINT32:
        end = at + 1 + (1 << (first - _UINT8))
        return int.from_bytes(payload[at + 1:end], "big"), end
    return -1, at


def _uints(data: Bytes, u32: npt.NDArray[np.uint32], at: Ints, widths: Ints) -> Ints:
    """The integers whose type bytes are at ``at``, ``widths`` long (1, 2, 3 or 5): a
    fixint is its type byte, any other the first ``width - 1`` of the 4 bytes after it."""
    following = u32[at + 1].astype(np.int64) >> _UNUSED_BITS[widths]
    value: Ints = np.where(widths == 1, data[at], following)
    return value


_UNUSED_BITS = np.array([0, 0, 24, 16, 0, 0], np.int64)
"""Per width, the bits of the 4 bytes after the type byte that are not the integer's."""


class _UintForm:
    """How :func:`encode_entries` writes one integer field in shortest form: a type byte
    (``types[c]``, or the value itself for a fixint), then the value big-endian in
    ``size`` bytes, of which the first ``unused[c]`` are not sent; ``c`` is the value's
    width class by ``bounds`` (0 fixint, 1 ``cc``, 2 ``cd``, 3 ``ce``)."""

    def __init__(self, dtype: str, bounds: tuple[int, ...]) -> None:
        self.dtype = np.dtype(dtype)
        self.size = self.dtype.itemsize
        self.bounds = np.array(bounds, np.int64)
        self.types = np.array([0, _UINT8, _UINT16, _UINT32][:len(bounds) + 1], np.int64)
        payload = np.array([0, 1, 2, 4][:len(bounds) + 1], np.int64)
        self.unused = self.size - payload
        self.columns = np.arange(self.size)


_SEQNO_FORM = _UintForm(">u2", (0x80, 0x100))
_METRIC_FORM = _UintForm(">u4", (0x80, 0x100, 0x10000))


class EncodedEntries:
    """Entries in msgpack, one row each (:func:`encode_entries`): ``rows[used]`` is the
    encoding of all of them, and ``rows[used & keep[:, None]]`` of those kept."""

    __slots__ = ("rows", "used")

    def __init__(self, rows: Bytes, used: npt.NDArray[np.bool_]) -> None:
        self.rows = rows
        self.used = used

    def joined(self, keep: npt.NDArray[np.bool_] | None = None) -> bytes:
        """The entries' encodings one after another (only those ``keep`` marks)."""
        used = self.used if keep is None else self.used & keep[:, None]
        return self.rows[used].tobytes()


def encode_entries(words: Words, seqnos: Ints, metrics: Ints) -> EncodedEntries:
    """The entries in msgpack, in shortest form (``[id, seqno, metric]`` each, the same
    bytes msgpack makes), one row per entry as wide as the widest entry: each field
    starts at a fixed column, an integer as its type byte and then the value big-endian
    in 2 or 4 bytes, and the leading bytes its width does not use are masked out, so
    that every step is a whole column and joining is one boolean selection."""
    count = len(seqnos)
    rows = np.empty((count, _ENTRY_COLUMNS), np.uint8)
    used = np.empty(rows.shape, np.bool_)
    rows[:, 0] = _FIXARRAY_3
    rows[:, 1] = _BIN8
    rows[:, 2] = NODE_ID_LEN
    rows[:, _ID_AT:_SEQNO_AT] = words.view(np.uint8).reshape(count, NODE_ID_LEN)
    used[:, :_SEQNO_AT] = True
    _put_uints(rows, used, _SEQNO_AT, seqnos, _SEQNO_FORM)
    _put_uints(rows, used, _METRIC_AT, metrics, _METRIC_FORM)
    return EncodedEntries(rows, used)


def _put_uints(rows: Bytes, used: npt.NDArray[np.bool_], column: int, values: Ints,
               form: _UintForm) -> None:
    """Write ``values`` from ``column`` on as ``form`` says, and mark the bytes used."""
    width_class = np.searchsorted(form.bounds, values, side="right")
    rows[:, column] = np.where(width_class == 0, values, form.types[width_class])
    rows[:, column + 1:column + 1 + form.size] = values.astype(form.dtype).view(
        np.uint8).reshape(len(values), form.size)
    used[:, column] = True
    used[:, column + 1:column + 1 + form.size] = (
        form.columns >= form.unused[width_class][:, None])
