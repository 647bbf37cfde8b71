"""Storage of the routing core: numpy arrays indexed by a destination's slot number.

Why arrays: a node holds one route per (destination, neighbour), so at 10,000
nodes of mean degree 4 it holds 40,000 routes, and a simulated network of them
400 million.  As one Python object each (about 160 bytes with its list cell and
ints) that is 100 GB; as cells of a few arrays it is 10 bytes a route.  And
most of convergence is whole tables (a thousand entries a message) compared
with what is held: column by column in numpy, that is a few dozen C loops per
message instead of a thousand trips through the interpreter.

Layout.  A :class:`DestinationIndex` numbers node ids densely (slot 0, 1, ...);
one index can serve every router of a process (the simulator runs thousands of
routers over the same destinations, and a per-router dict of 10,000 ids would
cost more than the routes).  Per destination slot the table holds the selected
neighbour (-1: none) and the selected route's seqno and metric, the
feasibility distance (FD) and what was last advertised (seqno -1: none), and
how many routes the destination has.  Per neighbour (a small column number,
reused after the neighbour goes) it holds each route's advertised metric
(:data:`ABSENT`: no route), seqno and expiry time (float32 seconds since the
table's epoch, the router's start: exact to a millisecond for two hours, to
about a second after a hundred days, and 4 bytes a route fewer than float64).
A held route's advertised metric is always finite (a retraction drops the
route), so the one sentinel marks absence.  Metrics are stored as uint32
(METRIC_INFINITY is 2**32 - 1) and computed in int64.

This module does no routing: :class:`overlay.proto.routing.Router` decides, the
table stores.  No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from overlay.ids import NodeId
from overlay.proto.messages import METRIC_INFINITY, U16_MAX
from overlay.proto.route_columns import WORD, Words

ABSENT = METRIC_INFINITY
"""The advertised metric of a route that is not held."""
NO_SEQNO = -1
"""The seqno of an FD or an advertisement that does not exist."""
SEQNO_MODULUS = U16_MAX + 1
_HALF = SEQNO_MODULUS // 2
_FIRST_CAPACITY = 64

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


class DestinationIndex:
    """Dense slot numbers for node ids, shared by the routers of one process.

    Slots are given in order of first sight and never taken back; a router's arrays
    are as long as the largest slot it has seen.  Besides the dict, each id is kept
    as two 8-byte words by slot, and in a hash table of slot numbers held in numpy
    (buckets of :data:`_BUCKET_SIZE` places): a whole update's ids (as
    :data:`~overlay.proto.route_columns.Words`) are found a place at a time over all
    of them (:meth:`slots_of`), not one dict lookup of a fresh ``bytes`` each.
    """

    def __init__(self) -> None:
        self._slot_of: dict[bytes, int] = {}
        self.ids: list[NodeId] = []
        """The node id of each slot."""
        self.words: Words = np.zeros((_FIRST_CAPACITY, 2), WORD)
        """Row ``slot``: that slot's id as two words (rows past ``len(self)`` unused)."""
        self._bits = 0
        self._buckets: npt.NDArray[np.int64] = np.zeros((_BUCKET_SIZE, 0), np.int64)
        """Place ``i`` of bucket ``b`` is ``[i, b]``: a slot number, or -1."""
        self._rehash(_FIRST_CAPACITY)

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, node_id: bytes) -> int | None:
        """The slot of ``node_id``, or None if it never had one."""
        return self._slot_of.get(node_id)

    def slot(self, node_id: NodeId) -> int:
        """The slot of ``node_id``, given now if it had none."""
        slot = self._slot_of.get(node_id)
        if slot is None:
            slot = len(self.ids)
            self._slot_of[node_id] = slot
            self.ids.append(node_id)
            if slot == len(self.words):
                self.words = np.concatenate((self.words, np.zeros_like(self.words)))
            self.words[slot] = np.frombuffer(node_id, WORD)
            if 2 * len(self.ids) > self._buckets.shape[1]:  # keep two buckets per id or more
                self._rehash(4 * len(self.ids))
            else:
                self._insert(slot)
        return slot

    def slots(self, raws: Sequence[bytes]) -> list[int]:
        """:meth:`slot` of each of ``raws`` (16-byte ids, already checked): looked up in
        C by one ``map``; only ids never seen take the Python path."""
        found: list[int | None] = list(map(self._slot_of.get, raws))
        if None in found:
            found = [slot if slot is not None else self.slot(NodeId.interned(raw))
                     for slot, raw in zip(found, raws, strict=True)]
        return found  # type: ignore[return-value]  # no None left

    def slots_of(self, words: Words) -> Ints:
        """:meth:`slot` of each id in ``words``: each id's bucket of the hash table read
        and compared for all of them at once, a place at a time; an id not found so
        (never seen, or left out of a full bucket: ids made to collide) takes
        :meth:`slot`."""
        first = np.ascontiguousarray(words[:, 0])
        second = np.ascontiguousarray(words[:, 1])
        flat = self.words.reshape(-1)  # slot s's words at 2s and 2s + 1
        bucket = ((first ^ second) * _MULTIPLIER >> np.uint64(64 - self._bits)).astype(np.int64)
        # A bucket's places fill in order, so nearly every id is in place 0 of its bucket:
        # all are compared there, and only those not found go on to the next place.
        found: Ints = self._buckets[0][bucket]
        missed = ((found < 0) | (flat[2 * found] != first)
                  | (flat[2 * found + 1] != second))
        if missed.any():
            found[missed] = -1
            pending = np.flatnonzero(missed)
            for place in self._buckets[1:]:
                candidate = place[bucket[pending]]
                hit = ((candidate >= 0) & (flat[2 * candidate] == first[pending])
                       & (flat[2 * candidate + 1] == second[pending]))
                found[pending[hit]] = candidate[hit]
                pending = pending[~hit & (candidate >= 0)]  # an empty place: no further
                if not len(pending):
                    break
        for i in np.flatnonzero(found < 0).tolist():
            found[i] = self.slot(NodeId.interned(words[i].tobytes()))
        return found

    def _bucket(self, slot: int) -> int:
        first, second = map(int, self.words[slot])
        return ((first ^ second) * _MULTIPLIER_INT & _WORD_MASK) >> (64 - self._bits)

    def _insert(self, slot: int) -> None:
        """Put ``slot`` in its bucket, if the bucket has room (if not, it is in the dict
        only: about one id in 5,000 when the table is as full as it gets)."""
        bucket = self._buckets[:, self._bucket(slot)]
        free = np.flatnonzero(bucket < 0)
        if len(free):
            bucket[free[0]] = slot

    def _rehash(self, size: int) -> None:
        """A table of at least ``size`` buckets (a power of two) holding every slot."""
        self._bits = max(size - 1, 1).bit_length()
        self._buckets = np.full((_BUCKET_SIZE, 1 << self._bits), -1, np.int64)
        for slot in range(len(self.ids)):
            self._insert(slot)


_BUCKET_SIZE = 4
"""Slots per bucket of the hash table, all compared at once.  There are at least twice as
many buckets as ids, so a bucket holds half an id on average and overflows (more than
four) for about one id in 5,000."""
_MULTIPLIER_INT = 0x9E3779B97F4A7C15
"""Fibonacci hashing: the top bits of the product mix every bit of the id's words."""
_MULTIPLIER = np.uint64(_MULTIPLIER_INT)
_WORD_MASK = 2**64 - 1


def seqnos_newer(a: Ints, b: Ints) -> Bools:
    """Element-wise ``seqno_newer`` (RFC 8966 3.2.1) over int64 arrays."""
    result: Bools = (a != b) & (((a - b) % SEQNO_MODULUS) < _HALF)
    return result


def plus_cost(advertised: Ints, cost: int) -> Ints:
    """Element-wise route metric: ``advertised + cost``, infinity stays infinity, and a
    finite sum stops just below it."""
    summed: Ints = np.minimum(advertised + cost, METRIC_INFINITY - 1)
    result: Ints = np.where(advertised >= METRIC_INFINITY, METRIC_INFINITY, summed)
    return result


class RouteTable:
    """The arrays of one router (module docstring); grows with the slots it sees."""

    def __init__(self, epoch: float = 0.0) -> None:
        self.epoch = epoch
        """The time expiries count from."""
        self.capacity = 0
        self.selected = np.empty(0, np.int32)
        self.selected_seqno = np.empty(0, np.int32)
        self.selected_metric = np.empty(0, np.uint32)
        self.fd_seqno = np.empty(0, np.int32)
        self.fd_metric = np.empty(0, np.uint32)
        self.advertised_seqno = np.empty(0, np.int32)
        self.advertised_metric = np.empty(0, np.uint32)
        self.routes = np.empty(0, np.int16)
        """How many routes each destination has."""
        self.dirty = np.empty(0, np.bool_)
        """Changed since the last update sent (a mask, not a set of ints: during
        convergence a third of a table is marked at once in every router)."""
        self.metrics: list[npt.NDArray[np.uint32]] = []
        """Per neighbour column: each destination's advertised metric, ABSENT if none."""
        self.seqnos: list[npt.NDArray[np.uint16]] = []
        self.expiry: list[npt.NDArray[np.float32]] = []
        """Per neighbour column: when each route expires, in seconds after ``epoch``."""
        self._free: list[int] = []
        self.grow(_FIRST_CAPACITY)

    def grow(self, size: int) -> None:
        """Make room for slots below ``size``, growing by at least an eighth (amortised).

        Not doubling: routers sharing an index first grow straight to its whole size,
        and doubling a table that is just short of it would leave most of a
        10,000-destination table empty in each of thousands of routers."""
        if size <= self.capacity:
            return
        capacity = max(size, self.capacity + self.capacity // 8, _FIRST_CAPACITY)
        self.selected = _grown(self.selected, capacity, -1)
        self.selected_seqno = _grown(self.selected_seqno, capacity, 0)
        self.selected_metric = _grown(self.selected_metric, capacity, METRIC_INFINITY)
        self.fd_seqno = _grown(self.fd_seqno, capacity, NO_SEQNO)
        self.fd_metric = _grown(self.fd_metric, capacity, 0)
        self.advertised_seqno = _grown(self.advertised_seqno, capacity, NO_SEQNO)
        self.advertised_metric = _grown(self.advertised_metric, capacity, 0)
        self.routes = _grown(self.routes, capacity, 0)
        self.dirty = _grown(self.dirty, capacity, 0)
        self.metrics = [_grown(column, capacity, ABSENT) for column in self.metrics]
        self.seqnos = [_grown(column, capacity, 0) for column in self.seqnos]
        self.expiry = [_grown(column, capacity, 0.0) for column in self.expiry]
        self.capacity = capacity

    def add_column(self) -> int:
        """A column for a new neighbour: every route absent."""
        if self._free:
            return self._free.pop()
        self.metrics.append(np.full(self.capacity, ABSENT, np.uint32))
        self.seqnos.append(np.zeros(self.capacity, np.uint16))
        self.expiry.append(np.zeros(self.capacity, np.float32))
        return len(self.metrics) - 1

    def free_column(self, column: int) -> None:
        """The neighbour is gone and its routes were dropped: the column may be reused."""
        self._free.append(column)

    def route(self, slot: int, column: int) -> tuple[int, int] | None:
        """(seqno, advertised metric) of the route to ``slot`` through ``column``."""
        advertised = int(self.metrics[column][slot])
        if advertised == ABSENT:
            return None
        return int(self.seqnos[column][slot]), advertised

    def store(self, slot: int, column: int, seqno: int, advertised: int,
              expires_at: float) -> None:
        if int(self.metrics[column][slot]) == ABSENT:
            self.routes[slot] += 1
        self.metrics[column][slot] = advertised
        self.seqnos[column][slot] = seqno
        self.expiry[column][slot] = expires_at - self.epoch

    def set_expiry(self, column: int, slots: Ints | int, expires_at: float) -> None:
        """The routes to ``slots`` through ``column`` expire at ``expires_at``."""
        self.expiry[column][slots] = expires_at - self.epoch

    def expired(self, column: int, size: int, now: float) -> Bools:
        """Which of the first ``size`` slots have a route through ``column`` that expired."""
        result: Bools = ((self.metrics[column][:size] != ABSENT)
                         & (self.expiry[column][:size] <= np.float32(now - self.epoch)))
        return result

    def drop(self, slot: int, column: int) -> None:
        if int(self.metrics[column][slot]) != ABSENT:
            self.metrics[column][slot] = ABSENT
            self.routes[slot] -= 1

    def slots_through(self, column: int, size: int) -> list[int]:
        """Every slot below ``size`` with a route through ``column``, in slot order."""
        held: list[int] = np.flatnonzero(self.metrics[column][:size] != ABSENT).tolist()
        return held

    def fd(self, slot: int) -> tuple[int, int] | None:
        seqno = int(self.fd_seqno[slot])
        return None if seqno == NO_SEQNO else (seqno, int(self.fd_metric[slot]))

    def feasible(self, slots: Ints, seqnos: Ints, advertised: Ints) -> Bools:
        """Element-wise feasibility of advertisements against each slot's FD."""
        fd_seqno = self.fd_seqno[slots].astype(np.int64)
        fd_metric = self.fd_metric[slots].astype(np.int64)
        same = seqnos == fd_seqno
        result: Bools = ((advertised >= METRIC_INFINITY) | (fd_seqno == NO_SEQNO)
                         | np.where(same, advertised < fd_metric,
                                    seqnos_newer(seqnos, fd_seqno)))
        return result


_G = TypeVar("_G", bound=np.generic)


def _grown(array: npt.NDArray[_G], capacity: int, fill: float) -> npt.NDArray[_G]:
    grown = np.full(capacity, fill, array.dtype)
    grown[:len(array)] = array
    return grown
