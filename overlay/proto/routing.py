"""Latency-weighted distance-vector routing with Babel's loop-freedom (RFC 8966).

Theory of operation
-------------------
A node knows its neighbours, the cost of the link to each (in microseconds:
half the smallest of its recent RTT samples, :class:`~overlay.proto.rtt.LinkCost`,
as the link core computes it) and the routes each neighbour advertises: for every
destination, a sequence number and a metric.  It never sees the graph.  A
route's metric is the neighbour's advertised metric plus the link cost; the
node selects, per destination, the feasible route with the smallest metric and
advertises it in turn.

Loop freedom at all times comes from Babel's *feasibility condition*.  For
each destination the node keeps a feasibility distance FD = (seqno, metric):
the best it has advertised for the newest sequence number.  An advertisement
(s, m) from a neighbour is feasible when s is newer than FD's seqno, or equal
with m < FD's metric.  Selecting only feasible routes means a node only ever
picks a next hop that is strictly closer to the destination than the node
itself has claimed to be, so following next hops strictly decreases a
quantity and can never return to a node: no loop, even mid-convergence.

When every route to a destination is unfeasible (starvation), or an
unfeasible route would be better than the selected one, the node asks for a
newer sequence number with a SEQNO_REQUEST; only the destination itself may
increase its own seqno, and its new advertisement is feasible everywhere.  This
is what makes routes optimal again after a failure, not merely loop-free.
Lost routes are retracted (metric = infinity) at once, so bad news travels as
fast as good news and never counts to infinity.

Updates are triggered after a change (coalesced for ``triggered_delay``), except
that a newer seqno alone (same next hop, same metric) is news only to a node
waiting for it: it goes out at once only to answer a seqno request this node
relayed, and otherwise with the next update that carries the destination (as
babeld does; every entry a neighbour holds stays feasible and as good, so
nothing else needs it, and after a failure these seqno floods were most of the
traffic).  No
neighbour is told of the routes that go through it (split horizon, RFC 8966
3.7.4: that echo would be unfeasible for it, so it only cost bytes); links
are reliable streams, so a triggered update that was queued arrives unless the
link dies, and then every route through it goes anyway.  The periodic full
table is therefore only a safety net, and its cost is kept independent of the
network's size: it is sent every ``update_interval`` or, for a larger table,
every ``len(table) / refresh_rate`` seconds (jittered), so it averages at most
``refresh_rate`` entries per second per link.  Each update announces that
period, and a route not refreshed for 3.5 of its sender's announced periods
expires.  When the driver could not queue an update for a neighbour (its send
buffer was full) it calls :meth:`Router.resync`, and the neighbour gets the
whole state again shortly after: every selected route and a retraction for
every destination once advertised and now lost.

Hysteresis: the RTT of a link is noisy, so its cost is only changed when the
new estimate differs from the cost in use by more than the largest of
``cost_hysteresis`` (relative), ``cost_floor_us`` (absolute) and the link's own
measured jitter (``noise_us``, from :class:`~overlay.proto.rtt.LinkCost`), or
when the last few samples all lie below the cost in use by more than the first
two (a decrease they agree on, which outliers in the noise must not hold back).
Route selection itself is exact (the strictly smallest metric wins; ties keep
the current route), so with exact latencies every route in steady state is a
shortest path.

Storage and speed: routes live in numpy arrays indexed by a destination's slot
number (:mod:`overlay.proto.route_table`: 10 bytes a route, not a Python object),
and an update of many entries is decided a column at a time
(:meth:`Router._receive_bulk`): the cases that look no further than the
destination's selected route (nearly all of convergence) are applied in bulk,
and every other entry goes through the one-entry rules, in order.  Both paths
make the same decisions; the tests run networks through each and compare.

One module for one state machine: the route selection, the feasibility state and
the update scheduling change together on every event, and splitting them would
only spread the loop-freedom invariant over several files (the arrays they
share are apart, in :mod:`overlay.proto.route_table`).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from overlay.ids import NodeId
from overlay.proto.messages import (
    MAX_TTL,
    MAX_UPDATE_ENTRIES,
    METRIC_INFINITY,
    LinkMessage,
    RouteEntries,
    RouteUpdate,
    SeqnoRequest,
)
from overlay.proto.route_columns import MIN_COLUMN_ENTRIES, EntryColumns, encode_entries
from overlay.proto.route_table import (
    ABSENT,
    NO_SEQNO,
    SEQNO_MODULUS,
    Bools,
    DestinationIndex,
    Ints,
    RouteTable,
    plus_cost,
)

EXPIRY_FACTOR = 3.5
BULK_MIN_ENTRIES = 8
"""Updates with fewer entries go one entry at a time (numpy's fixed cost per call is
more than the interpreter's per entry below this)."""


def _distinct(slots: Ints) -> bool:
    """No slot twice (a sort, not ``np.unique``: that also builds what it found)."""
    ordered = np.sort(slots)
    return bool((ordered[1:] != ordered[:-1]).all())


def seqno_newer(a: int, b: int) -> bool:
    """True if ``a`` is after ``b`` in 16-bit modular order (RFC 8966 3.2.1)."""
    return a != b and (a - b) % SEQNO_MODULUS < SEQNO_MODULUS // 2


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Timers in seconds."""

    update_interval: float = 16.0
    triggered_delay: float = 0.02
    request_timeout: float = 0.5
    request_retries: int = 4
    request_hops: int = 64
    retraction_hold: float | None = None
    """How long a retraction stays in full tables; default two update intervals, so at
    least one periodic update repeats it."""
    cost_hysteresis: float = 0.1
    cost_floor_us: int = 100
    refresh_rate: float = 4.0
    """Entries per second per link the periodic full table may average: a table of more
    than ``refresh_rate * update_interval`` entries is sent less often, so the safety
    net's cost does not grow with the network."""
    resync_delay: float = 1.0
    """How long after a lost update (:meth:`Router.resync`) the neighbour gets the whole
    state again: long enough for a full send buffer to drain."""

    def __post_init__(self) -> None:
        if (self.update_interval <= 0 or self.triggered_delay < 0 or self.request_timeout <= 0
                or self.refresh_rate <= 0 or self.resync_delay < 0):
            raise ValueError("routing intervals and rates must be positive")
        if not 1 <= self.request_hops <= MAX_TTL:
            raise ValueError(f"request_hops must be in 1..{MAX_TTL}")


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One row of the routing table, for ``status`` and tests."""

    destination: NodeId
    next_hop: NodeId | None
    metric: int
    seqno: int
    routes: int
    feasible: int


@dataclass(slots=True)
class RoutingCounters:
    updates_sent: int = 0
    updates_received: int = 0
    entries_sent: int = 0
    entries_received: int = 0
    requests_sent: int = 0
    requests_received: int = 0
    requests_forwarded: int = 0
    unfeasible_ignored: int = 0
    route_changes: int = 0
    next_hop_changes: int = 0
    seqno_changes_held: int = 0
    """Seqno-only changes of a selected route not sent as a triggered update (nobody
    asked for them through us); also counted in ``route_changes``."""


@dataclass(slots=True)
class _PendingRequest:
    seqno: int
    next_at: float
    retries_left: int


@dataclass(slots=True)
class _Relayed:
    """The requests for one destination that came to us, still owed an answer."""

    oldest: int  # the oldest seqno asked for: any seqno from it on answers someone
    newest: int
    until: float
    next_hop: NodeId | None  # where we relayed them (None: nowhere yet)
    hop_count: int  # what is left of the last one's hop count


@dataclass(frozen=True, slots=True)
class _BulkPlan:
    """One update's entries as columns, and which case each entry is (boolean masks)."""

    slots: Ints
    seqno: Ints
    advertised: Ints
    metric: Ints  # advertised plus the link's cost
    held: Bools  # this neighbour already had a route to the destination
    feasible: Bools
    hard: Bools  # left to the one-entry rules
    refresh: Bools  # the same route again: only its expiry moves
    loses: Bools  # stored beside a better selected route
    keeps: Bools  # the route in use, as good or better: stays selected
    moves: Bools  # the first route, or strictly the best: selected


class _Advertisement:
    """The entries of one update as :meth:`Router._advertise` made them (columns), and
    the column each entry's route goes through (-1: our own entry, a retraction)."""

    __slots__ = ("_index", "metrics", "seqnos", "slots", "via")

    def __init__(self, index: DestinationIndex, slots: Ints, seqnos: Ints, metrics: Ints,
                 via: Ints) -> None:
        self._index = index
        self.slots = slots
        self.seqnos = seqnos
        self.metrics = metrics
        self.via = via

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, index: slice) -> _Advertisement:
        return _Advertisement(self._index, self.slots[index], self.seqnos[index],
                              self.metrics[index], self.via[index])

    def split_horizon(self, columns: list[int]) -> list[RouteEntries]:
        """For each of ``columns``, the entries whose route does not go through it, in
        the advertisement's order.

        Many entries are encoded once, as arrays (:func:`encode_entries`), and each
        neighbour's update is a mask over those bytes; a few go as lists (numpy's fixed
        cost per call is more than the interpreter's per entry below
        :data:`MIN_COLUMN_ENTRIES`)."""
        if len(self) < MIN_COLUMN_ENTRIES:
            ids = list(map(self._index.ids.__getitem__, self.slots.tolist()))
            seqnos, metrics, via = self.seqnos.tolist(), self.metrics.tolist(), self.via.tolist()
            kept = [[i for i, through in enumerate(via) if through != column]
                    for column in columns]
            return [RouteEntries([ids[i] for i in keep], [seqnos[i] for i in keep],
                                 [metrics[i] for i in keep]) for keep in kept]
        words = self._index.words[self.slots]
        encoded = encode_entries(words, self.seqnos, self.metrics)
        whole: EntryColumns | None = None
        split: list[RouteEntries] = []
        for column in columns:
            keep = self.via != column
            if keep.all():
                if whole is None:
                    whole = EntryColumns(words, self.seqnos, self.metrics, encoded.joined())
                split.append(whole)
            else:
                split.append(EntryColumns(words[keep], self.seqnos[keep], self.metrics[keep],
                                          encoded.joined(keep)))
        return split


Outgoing = tuple[NodeId | None, LinkMessage]
"""A message for one neighbour, or for every neighbour when the target is None."""


class Router:
    """Sans-IO routing core of one node (see the module docstring)."""

    def __init__(
        self,
        node_id: NodeId,
        *,
        now: float,
        rng: random.Random,
        config: RoutingConfig | None = None,
        seqno: int = 0,
        index: DestinationIndex | None = None,
        bulk_min: int = BULK_MIN_ENTRIES,
    ) -> None:
        self.node_id = node_id
        self.config = config or RoutingConfig()
        self.seqno = seqno % SEQNO_MODULUS
        self.counters = RoutingCounters()
        self.last_change = now
        self.last_next_hop_change = now
        self._rng = rng
        self._index = index if index is not None else DestinationIndex()
        self._ids = self._index.ids
        self._own = self._index.slot(node_id)
        self._table = RouteTable(epoch=now)
        self._table.grow(len(self._index))  # a shared index may already be far past slot 0
        self._bulk_min = bulk_min
        self._columns: dict[NodeId, int] = {}
        """Each routing neighbour's column in the table."""
        self._neighbour_of: list[NodeId | None] = []
        self._costs: list[int] = []
        """Per column, the link cost in use (microseconds)."""
        # Sparse per-destination state, by slot: a few entries at a time.
        self._retracted: dict[int, float] = {}
        self._requests: dict[int, _PendingRequest] = {}
        self._forwarded_requests: dict[tuple[int, int], float] = {}
        self._relayed: dict[int, _Relayed] = {}
        """Per slot, the requests we relayed: their answer is passed on at once
        (:meth:`_route_updated`), and they follow our route if it moves first."""
        self._flush_at: float | None = None
        self._outbox: deque[Outgoing] = deque()
        self._resync: dict[NodeId, float] = {}
        self.refresh_interval = self.config.update_interval
        """The period of the full table now announced in every update (seconds)."""
        self._next_periodic = now + self._jittered(self.config.update_interval)
        self._next_expiry_check = now + self.config.update_interval

    # --- queries --------------------------------------------------------------

    def next_hop(self, destination: NodeId) -> NodeId | None:
        slot = self._index.find(destination)
        if slot is None or slot >= self._table.capacity:
            return None
        column = int(self._table.selected[slot])
        return self._neighbour_of[column] if column >= 0 else None

    def metric(self, destination: NodeId) -> int:
        if destination == self.node_id:
            return 0
        slot = self._index.find(destination)
        if slot is None or slot >= self._table.capacity or self._table.selected[slot] < 0:
            return METRIC_INFINITY
        return int(self._table.selected_metric[slot])

    def destinations(self) -> list[NodeId]:
        return [self._ids[slot] for slot in self._selected_slots()]

    @property
    def route_count(self) -> int:
        """How many destinations have a selected route."""
        size = self._size()
        return int(np.count_nonzero(self._table.selected[:size] >= 0))

    def table(self) -> list[RouteInfo]:
        table = self._table
        size = self._size()
        held = np.flatnonzero((table.routes[:size] > 0) | (table.selected[:size] >= 0)).tolist()
        rows = []
        for slot in sorted(held, key=self._ids.__getitem__):
            column = int(table.selected[slot])
            candidates = self._candidates(slot)
            fd = table.fd(slot)
            rows.append(RouteInfo(
                destination=self._ids[slot],
                next_hop=self._neighbour_of[column] if column >= 0 else None,
                metric=int(table.selected_metric[slot]) if column >= 0 else METRIC_INFINITY,
                seqno=(int(table.selected_seqno[slot]) if column >= 0
                       else fd[0] if fd is not None else 0),
                routes=len(candidates),
                feasible=sum(1 for _, _, _, usable in candidates if usable),
            ))
        return rows

    def neighbour_cost(self, neighbour: NodeId) -> int | None:
        column = self._columns.get(neighbour)
        return self._costs[column] if column is not None else None

    # --- driver interface -------------------------------------------------------

    def next_outgoing(self) -> Outgoing | None:
        return self._outbox.popleft() if self._outbox else None

    def get_timer(self) -> float:
        deadlines = [self._next_periodic, self._next_expiry_check]
        if self._flush_at is not None:
            deadlines.append(self._flush_at)
        if self._resync:
            deadlines.append(min(self._resync.values()))
        deadlines.extend(request.next_at for request in self._requests.values())
        return min(deadlines)

    def handle_timer(self, now: float) -> None:
        if self._flush_at is not None and now >= self._flush_at:
            self._flush(now)
        if now >= self._next_expiry_check:
            self._expire(now)
            self._next_expiry_check = now + self.config.update_interval
        for slot, request in list(self._requests.items()):
            if now >= request.next_at:
                self._resend_request(slot, request, now)
        for neighbour, at in list(self._resync.items()):
            if now >= at:
                del self._resync[neighbour]
                if neighbour in self._columns:
                    self._send_full_table(neighbour, now, resync=True)
        if now >= self._next_periodic:
            self._send_full_table(None, now)
            self._next_periodic = now + self._jittered(self.refresh_interval)

    def resync(self, neighbour: NodeId, now: float) -> None:
        """An update for ``neighbour`` was lost (not queued): send it everything again.

        Links are reliable, so the only update a neighbour can miss is one its driver
        could not queue; this replaces the frequent periodic tables that would
        otherwise have repaired the loss.  Repeated calls before the resync is sent
        coalesce into one.
        """
        if neighbour in self._columns and neighbour not in self._resync:
            self._resync[neighbour] = now + self.config.resync_delay

    def add_neighbour(self, neighbour: NodeId, cost_us: int, now: float) -> None:
        """A link came up and has its first RTT sample: start routing through it."""
        if neighbour in self._columns:
            self.update_cost(neighbour, cost_us, now)
            return
        column = self._table.add_column()
        if column == len(self._costs):
            self._neighbour_of.append(neighbour)
            self._costs.append(max(1, cost_us))
        else:
            self._neighbour_of[column] = neighbour
            self._costs[column] = max(1, cost_us)
        self._columns[neighbour] = column
        self._send_full_table(neighbour, now)

    def update_cost(self, neighbour: NodeId, cost_us: int, now: float, *,
                    noise_us: int = 0, recent_high_us: int | None = None) -> None:
        """A new estimate of a link's cost; applied only beyond the hysteresis band.

        The band is the larger of ``cost_hysteresis`` (relative), ``cost_floor_us``
        and ``noise_us``, the link's own measured jitter: a link's cost moves only
        when it moves by more than its noise.  But a *decrease* is also believed when
        the last few samples all agree on it (``recent_high_us``, the largest of them,
        lies below the cost in use by more than the fixed band): jitter cannot put
        several samples in a row under the floor it was measured at, while outliers
        that widened the noise (a slow start) would otherwise hold a stale, high cost
        until they leave the window.
        """
        column = self._columns.get(neighbour)
        if column is None:
            return
        cost = self._costs[column]
        cost_us = max(1, cost_us)
        fixed = max(cost * self.config.cost_hysteresis, self.config.cost_floor_us)
        agreed_lower = (recent_high_us is not None and cost_us < cost
                        and cost - recent_high_us > fixed)
        if abs(cost_us - cost) <= max(fixed, noise_us) and not agreed_lower:
            return
        self._costs[column] = cost_us
        for slot in self._table.slots_through(column, self._size()):
            self._reselect(slot, now)

    def remove_neighbour(self, neighbour: NodeId, now: float) -> None:
        """The link is gone: every route through it goes with it."""
        self._resync.pop(neighbour, None)
        column = self._columns.pop(neighbour, None)
        if column is None:
            return
        for slot in self._table.slots_through(column, self._size()):
            self._table.drop(slot, column)
            self._reselect(slot, now)
        self._neighbour_of[column] = None
        self._table.free_column(column)

    def receive(self, neighbour: NodeId, message: LinkMessage, now: float) -> None:
        column = self._columns.get(neighbour)
        if column is None:
            return  # not (yet) a routing neighbour: its advertisements cannot be costed
        if isinstance(message, RouteUpdate):
            self.counters.updates_received += 1
            self.counters.entries_received += len(message.entries)
            if not message.entries:
                return
            expires_at = now + EXPIRY_FACTOR * max(message.interval_ms / 1000, 0.001)
            entries = message.entries
            slots: Sequence[int]
            seqnos: Sequence[int]
            metrics: Sequence[int]
            if type(entries) is EntryColumns:  # decoded as arrays: kept so
                found = self._index.slots_of(entries.words)
                self._table.grow(len(self._index))
                if len(found) >= self._bulk_min and _distinct(found):
                    self._receive_bulk(column, found, entries.seqno_array,
                                       entries.metric_array, expires_at=expires_at, now=now)
                    return
                slots, seqnos, metrics = found.tolist(), entries.seqnos, entries.metrics
            else:
                destinations: Sequence[bytes]
                if isinstance(entries, RouteEntries):
                    destinations, seqnos, metrics = (entries.destinations, entries.seqnos,
                                                     entries.metrics)
                else:
                    destinations, seqnos, metrics = zip(*entries, strict=True)
                slots = self._index.slots(destinations)
                self._table.grow(len(self._index))
            if len(slots) >= self._bulk_min and len(set(slots)) == len(slots):
                self._receive_bulk(column, slots, seqnos, metrics,
                                   expires_at=expires_at, now=now)
            else:
                for slot, seqno, metric in zip(slots, seqnos, metrics, strict=True):
                    self._receive_entry(column, slot, seqno, metric,
                                        expires_at=expires_at, now=now)
        elif isinstance(message, SeqnoRequest):
            self._receive_request(neighbour, message, now)

    # --- updates, one entry at a time -------------------------------------------------

    def _receive_entry(self, column: int, slot: int, seqno: int, metric: int, *,
                       expires_at: float, now: float) -> None:
        """One entry of an update: the rules of RFC 8966 3.5.3-3.5.4 and 3.8.2."""
        table = self._table
        cost = self._costs[column]
        held = table.route(slot, column)
        selected = int(table.selected[slot])
        if held is not None and held == (seqno, metric):
            # A periodic refresh of what we already hold: nothing can change but the expiry,
            # except that a route that would still win but is still unfeasible asks again
            # (the last request may have run out of retries, or asked for too old a seqno).
            table.set_expiry(column, slot, expires_at)
            if (selected >= 0 and selected != column
                    and _add(metric, cost) < int(table.selected_metric[slot])
                    and not self._feasible(slot, seqno, metric)):
                self._start_request(slot, now)
            return
        if slot == self._own:
            if seqno_newer(seqno, self.seqno):
                # Someone remembers a newer seqno of ours (we restarted): overtake it.
                self.seqno = (seqno + 1) % SEQNO_MODULUS
                self._mark_dirty(self._own, now)
            return
        feasible = self._feasible(slot, seqno, metric)
        if held is None:
            if metric == METRIC_INFINITY:
                return
            if not feasible:
                self.counters.unfeasible_ignored += 1
            old_metric = 0
        else:
            if not feasible and selected == column:
                # RFC 8966 3.5.4: an unfeasible update for the selected route is a retraction.
                self.counters.unfeasible_ignored += 1
            old_metric = _add(held[1], cost)
        new_metric = _add(metric, cost)
        if metric == METRIC_INFINITY:
            table.drop(slot, column)
        else:
            table.store(slot, column, seqno, metric, expires_at)
            if selected >= 0 and selected != column:
                selected_metric = int(table.selected_metric[slot])
                if new_metric >= selected_metric or not feasible:
                    # The fast path of a full table refresh: an alternative that cannot
                    # win.  Only an unfeasible route that would win needs action.
                    if not feasible and new_metric < selected_metric:
                        self._start_request(slot, now)
                    return
            elif selected == column:
                table.selected_seqno[slot] = seqno
                table.selected_metric[slot] = new_metric
                if feasible and new_metric <= old_metric:
                    # The route in use stayed as good or got better: it still wins.
                    self._route_updated(slot, seqno, new_metric, now)
                    return
        self._reselect(slot, now)

    def _feasible(self, slot: int, seqno: int, advertised: int) -> bool:
        return advertised == METRIC_INFINITY or _beats_fd(self._table.fd(slot), seqno, advertised)

    def _candidates(self, slot: int) -> list[tuple[int, int, int, bool]]:
        """Every route to ``slot``: (column, seqno, metric, usable), in column order."""
        table = self._table
        fd = table.fd(slot)
        found = []
        for column in self._columns.values():
            held = table.route(slot, column)
            if held is None:
                continue
            seqno, advertised = held
            metric = _add(advertised, self._costs[column])
            usable = metric < METRIC_INFINITY and _beats_fd(fd, seqno, advertised)
            found.append((column, seqno, metric, usable))
        return found

    def _reselect(self, slot: int, now: float) -> None:
        """Choose the best feasible route; advertise any change; ask for help if starved."""
        table = self._table
        current = int(table.selected[slot])
        candidates = self._candidates(slot)
        best = -1
        best_seqno = best_metric = 0
        for column, seqno, metric, usable in candidates:
            if usable and (best < 0 or metric < best_metric or (
                    metric == best_metric
                    and _id(self._neighbour_of[column]) < _id(self._neighbour_of[best]))):
                best, best_seqno, best_metric = column, seqno, metric
        if current >= 0 and current != best and best >= 0:
            for column, seqno, metric, usable in candidates:
                if column == current and usable and metric <= best_metric:
                    # ties keep the route in use: no gratuitous changes
                    best, best_seqno, best_metric = column, seqno, metric
        if best < 0:
            if current >= 0:
                table.selected[slot] = -1
                table.selected_metric[slot] = METRIC_INFINITY
                self.counters.next_hop_changes += 1
                self.last_next_hop_change = now
                hold = self.config.retraction_hold
                if hold is None:
                    hold = 2 * self.config.update_interval
                self._retracted[slot] = now + hold
                self._changed(slot, now)
            if candidates:  # finite routes, none usable: starved
                self._start_request(slot, now)
            return
        self._retracted.pop(slot, None)
        # An unfeasible route that would be better stays unusable until the
        # destination issues a newer seqno (RFC 8966 3.8.2.2): ask for one.
        if any(metric < best_metric and not usable for _, _, metric, usable in candidates):
            self._start_request(slot, now)
        else:
            self._requests.pop(slot, None)
        table.selected_seqno[slot] = best_seqno
        table.selected_metric[slot] = best_metric
        if best != current:
            table.selected[slot] = best
            self.counters.next_hop_changes += 1
            self.last_next_hop_change = now
            self._changed(slot, now)
        else:
            self._route_updated(slot, best_seqno, best_metric, now)

    def _route_updated(self, slot: int, seqno: int, metric: int, now: float) -> None:
        """The selected route, next hop unchanged, is now (seqno, metric): news or not.

        A new metric always goes out.  A newer seqno alone is news only to the nodes
        whose request for it we relayed; to every other neighbour the entry it holds
        from us stays feasible and just as good, and the next full table brings the
        new seqno.  Our FD keeps the seqno last advertised, as RFC 8966 3.7.3 has it.
        """
        table = self._table
        if int(table.advertised_metric[slot]) != metric:
            self._changed(slot, now)
        elif int(table.advertised_seqno[slot]) != seqno:
            if self._answers_relayed(slot, seqno):
                self._changed(slot, now)
            else:
                self._held(1, now)

    def _held(self, count: int, now: float) -> None:
        """``count`` seqno-only changes kept for the next update that carries them."""
        self.counters.route_changes += count
        self.counters.seqno_changes_held += count
        self.last_change = now

    def _answers_relayed(self, slot: int, seqno: int) -> bool:
        """Whether ``seqno`` answers a request we relayed for ``slot`` (forgets it if so)."""
        relayed = self._relayed.get(slot)
        if relayed is None or seqno_newer(relayed.oldest, seqno):
            return False
        if seqno_newer(relayed.newest, seqno):
            relayed.oldest = relayed.newest
        else:
            del self._relayed[slot]
        return True

    def _changed(self, slot: int, now: float) -> None:
        self.counters.route_changes += 1
        self.last_change = now
        self._mark_dirty(slot, now)

    def _mark_dirty(self, slot: int, now: float) -> None:
        self._table.dirty[slot] = True
        if self._flush_at is None:
            self._flush_at = now + self.config.triggered_delay

    # --- updates, a whole table at a time ------------------------------------------------

    def _receive_bulk(self, column: int, slots: Sequence[int] | Ints,
                      seqnos: Sequence[int] | Ints, metrics: Sequence[int] | Ints, *,
                      expires_at: float, now: float) -> None:
        """The entries of one update (distinct destinations), decided column by column.

        Exactly what :meth:`_receive_entry` of each entry in turn would do: the entries
        whose outcome needs no look beyond their own destination's selected route (a
        refresh, an alternative that cannot win, the route in use improving, a first
        route, a strictly better route with no unfeasible one below it: nearly all of
        convergence) are applied here a column at a time; every other entry (its own
        destination, a retraction, a starved destination, anything that may send a
        seqno request) goes through :meth:`_receive_entry`, in the update's order.
        Destinations are independent of each other, so the split changes nothing.
        """
        plan = self._bulk_plan(column, np.asarray(slots, np.int64),
                               np.asarray(seqnos, np.int64), np.asarray(metrics, np.int64))
        self._bulk_apply(column, plan, expires_at=expires_at, now=now)
        hard = np.flatnonzero(plan.hard)
        for slot, seqno, metric in zip(plan.slots[hard].tolist(), plan.seqno[hard].tolist(),
                                       plan.advertised[hard].tolist(), strict=True):
            self._receive_entry(column, slot, seqno, metric, expires_at=expires_at, now=now)

    def _bulk_plan(self, column: int, s: Ints, seqno: Ints, advertised: Ints) -> _BulkPlan:
        """Which entries of an update are which case; ``hard`` ones are left to the rules."""
        table = self._table
        cost = self._costs[column]
        held_advertised = table.metrics[column][s].astype(np.int64)
        held = held_advertised != ABSENT
        refresh = held & (held_advertised == advertised) & (
            table.seqnos[column][s].astype(np.int64) == seqno)
        selected = table.selected[s].astype(np.int64)
        metric = plus_cost(advertised, cost)
        feasible = table.feasible(s, seqno, advertised)
        finite = advertised < METRIC_INFINITY
        other = (selected >= 0) & (selected != column)
        wins = metric < table.selected_metric[s].astype(np.int64)

        hard = (s == self._own) | (refresh & other & wins & ~feasible)
        if self._requests or self._retracted:
            hard |= np.isin(s, [*self._requests, *self._retracted])
        change = ~refresh & ~hard
        hard |= change & held & ~finite  # a retraction of a held route
        change &= finite
        loses = change & other & ~wins  # an alternative that cannot win
        hard |= change & other & wins & ~feasible  # would win, unfeasible: a request
        in_use = change & (selected == column)
        keeps = in_use & feasible & (metric <= plus_cost(held_advertised, cost))
        hard |= in_use & ~keeps
        first = change & (selected < 0)
        # With other routes held (all unusable, or one would be selected), a request may
        # be due: only a destination's very first route is easy.
        first_easy = first & ~held & (table.routes[s] == 0) & feasible
        hard |= first & ~first_easy
        better = change & other & wins & feasible
        better_easy = better
        if better.any():
            # Strictly below every other route: it wins outright, and no unfeasible route
            # is better.  A tie goes through the full reselection (its tie-break), though
            # a usable route as good as this one would already be the one selected.
            # Only these entries' other routes are read.
            candidates = np.flatnonzero(better)
            their_slots = s[candidates]
            below = np.full(len(candidates), METRIC_INFINITY, np.int64)
            for other_column in self._columns.values():
                if other_column != column:
                    below = np.minimum(below, plus_cost(
                        table.metrics[other_column][their_slots].astype(np.int64),
                        self._costs[other_column]))
            beaten = candidates[below <= metric[candidates]]
            if len(beaten):
                hard[beaten] = True
                better_easy = better.copy()
                better_easy[beaten] = False
        return _BulkPlan(s, seqno, advertised, metric, held, feasible, hard,
                         refresh & ~hard, loses, keeps, first_easy | better_easy)

    def _bulk_apply(self, column: int, plan: _BulkPlan, *, expires_at: float,
                    now: float) -> None:
        """Store what the plan's easy cases decided, a column at a time."""
        table = self._table
        s = plan.slots
        table.set_expiry(column, s[plan.refresh], expires_at)
        store = plan.loses | plan.keeps | plan.moves
        new = store & ~plan.held
        self.counters.unfeasible_ignored += int(np.count_nonzero(new & ~plan.feasible))
        table.routes[s[new]] += 1
        stored = s[store]
        table.metrics[column][stored] = plan.advertised[store]
        table.seqnos[column][stored] = plan.seqno[store]
        table.set_expiry(column, stored, expires_at)
        keeps = plan.keeps
        kept = s[keeps]
        table.selected_seqno[kept] = plan.seqno[keeps]
        table.selected_metric[kept] = plan.metric[keeps]
        # A changed metric is news; a newer seqno alone only if it answers a relayed
        # request (:meth:`_route_updated`).
        new_metric = keeps & (table.advertised_metric[s] != plan.metric)
        new_seqno = keeps & ~new_metric & (table.advertised_seqno[s] != plan.seqno)
        news = new_metric
        if new_seqno.any():
            answers = np.zeros(len(s), np.bool_)
            if self._relayed:
                for i in np.flatnonzero(new_seqno & np.isin(s, list(self._relayed))).tolist():
                    answers[i] = self._answers_relayed(int(s[i]), int(plan.seqno[i]))
            news = new_metric | answers
            if held := int(np.count_nonzero(new_seqno & ~answers)):
                self._held(held, now)
        moves = plan.moves
        if moves.any():
            moved_slots = s[moves]
            table.selected[moved_slots] = column
            table.selected_seqno[moved_slots] = plan.seqno[moves]
            table.selected_metric[moved_slots] = plan.metric[moves]
            self.counters.next_hop_changes += len(moved_slots)
            self.last_next_hop_change = now
        changed = s[news | moves]
        if len(changed):
            self.counters.route_changes += len(changed)
            self.last_change = now
            table.dirty[changed] = True
            if self._flush_at is None:
                self._flush_at = now + self.config.triggered_delay

    # --- sending ------------------------------------------------------------------------

    def _advertise(self, slots: list[int]) -> _Advertisement:
        """What we advertise for each of ``slots`` now, updating their feasibility distances.

        Our own slot: our seqno and metric 0; a selected route: its seqno and metric;
        no route but a feasibility distance (it was advertised): a retraction at the FD's
        seqno; neither: nothing.  Each entry keeps the column its route goes through
        (-1 for our own entry and a retraction), for split horizon (:meth:`_emit`).
        """
        table = self._table
        s = np.array(slots, np.int64)
        own = s == self._own
        selected = (table.selected[s] >= 0) & ~own
        seqno = table.selected_seqno[s].astype(np.int64)
        metric = table.selected_metric[s].astype(np.int64)
        fd_seqno = table.fd_seqno[s].astype(np.int64)
        # RFC 8966 3.7.3: advertising a (seqno, metric) the FD admits lowers the FD to it.
        lowers = selected & table.feasible(s, seqno, metric)
        table.fd_seqno[s[lowers]] = seqno[lowers]
        table.fd_metric[s[lowers]] = metric[lowers]
        table.advertised_seqno[s[selected]] = seqno[selected]
        table.advertised_metric[s[selected]] = metric[selected]
        out_seqno = np.where(selected, seqno, fd_seqno)
        out_metric = np.where(selected, metric, METRIC_INFINITY)
        out_seqno[own] = self.seqno
        out_metric[own] = 0
        via = np.where(selected, table.selected[s], -1)
        keep = selected | own | (fd_seqno != NO_SEQNO)
        return _Advertisement(self._index, s[keep], out_seqno[keep], out_metric[keep], via[keep])

    def _flush(self, now: float) -> None:
        """The triggered update: every slot marked since the last, in slot order (a flush
        is due only when something was marked: ``_flush_at`` is set with every mark)."""
        self._flush_at = None
        dirty = self._table.dirty
        slots: list[int] = np.flatnonzero(dirty[:self._size()]).tolist()
        dirty[slots] = False
        if self._relayed:
            self._follow_moved_routes(slots, now)
        self._emit(None, self._advertise(slots))

    def _send_full_table(self, target: NodeId | None, now: float, *,
                         resync: bool = False) -> None:
        """The full table to ``target`` (None: everyone, the periodic one).

        A resync adds a retraction for every destination ever advertised (it has an
        FD) that has no route now, however long ago it was lost: the neighbour may
        have missed that retraction.
        """
        for slot, until in list(self._retracted.items()):
            if now >= until:
                del self._retracted[slot]
        if resync:
            size = self._size()
            table = self._table
            lost = np.flatnonzero((table.fd_seqno[:size] != NO_SEQNO)
                                  & (table.selected[:size] < 0)).tolist()
        else:
            lost = list(self._retracted)
        advert = self._advertise([self._own, *self._selected_slots(), *lost])
        if target is None:
            if self._relayed:
                self._follow_moved_routes(np.flatnonzero(self._table.dirty).tolist(), now)
            self._table.dirty[:] = False
            self._flush_at = None
            self.refresh_interval = max(self.config.update_interval,
                                        len(advert) / self.config.refresh_rate)
        self._emit(target, advert)

    def _emit(self, target: NodeId | None, advert: _Advertisement) -> None:
        """Queue ``advert`` for ``target`` (None: every routing neighbour), with split
        horizon (RFC 8966 3.7.4): a neighbour is not told the routes that go through it.

        Such an echo could never serve it (its metric is the neighbour's own plus a
        link, so it fails the neighbour's feasibility condition), and during
        convergence it is one entry in every few received.  The neighbour keeps the
        last route it heard from us, which is harmless for the same reason, until it
        expires.  An update left empty is not sent.
        """
        if target is None:
            targets = list(self._columns.items())
        elif (column := self._columns.get(target)) is not None:
            targets = [(target, column)]
        else:
            return
        interval_ms = round(self.refresh_interval * 1000)
        columns = [column for _, column in targets]
        for start in range(0, len(advert), MAX_UPDATE_ENTRIES):
            split = advert[start:start + MAX_UPDATE_ENTRIES].split_horizon(columns)
            for (neighbour, _), entries in zip(targets, split, strict=True):
                if not entries:
                    continue
                self._outbox.append((neighbour, RouteUpdate(interval_ms, entries)))
                self.counters.updates_sent += 1
                self.counters.entries_sent += len(entries)

    def _expire(self, now: float) -> None:
        table = self._table
        size = self._size()
        expired: dict[int, list[int]] = {}
        for column in self._columns.values():
            gone = table.expired(column, size, now)
            for slot in np.flatnonzero(gone).tolist():
                expired.setdefault(slot, []).append(column)
        for slot in sorted(expired):
            for column in expired[slot]:
                table.drop(slot, column)
            self._reselect(slot, now)
        for key, until in list(self._forwarded_requests.items()):
            if now >= until:
                del self._forwarded_requests[key]
        for slot, relayed in list(self._relayed.items()):
            if now >= relayed.until:
                del self._relayed[slot]

    def _size(self) -> int:
        return min(len(self._index), self._table.capacity)

    def _selected_slots(self) -> list[int]:
        selected: list[int] = np.flatnonzero(self._table.selected[:self._size()] >= 0).tolist()
        return selected

    # --- seqno requests -------------------------------------------------------------

    def _start_request(self, slot: int, now: float) -> None:
        fd = self._table.fd(slot)
        fd_seqno = fd[0] if fd is not None else self._newest_seqno(slot)
        wanted = (fd_seqno + 1) % SEQNO_MODULUS
        pending = self._requests.get(slot)
        if pending is not None and not seqno_newer(wanted, pending.seqno):
            return  # already asking for that seqno: its retries are under way
        # A pending request for an older seqno is stale (the feasibility distance has
        # moved on since, so its answer would not lift it): ask for the one needed now.
        self._requests[slot] = _PendingRequest(
            wanted, now + self.config.request_timeout, self.config.request_retries)
        self._send_request(slot, wanted)

    def _newest_seqno(self, slot: int) -> int:
        newest: int | None = None
        for _, seqno, _, _ in self._candidates(slot):
            if newest is None or seqno_newer(seqno, newest):
                newest = seqno
        return 0 if newest is None else newest

    def _send_request(self, slot: int, seqno: int) -> None:
        if self._columns:
            self.counters.requests_sent += 1
            self._outbox.append(
                (None, SeqnoRequest(self._ids[slot], seqno, self.config.request_hops)))

    def _request_needed(self, slot: int) -> bool:
        """Starved (finite routes, none usable), or an unusable route would be better."""
        candidates = self._candidates(slot)
        if self._table.selected[slot] < 0:
            return bool(candidates)
        selected_metric = int(self._table.selected_metric[slot])
        return any(metric < selected_metric and not usable
                   for _, _, metric, usable in candidates)

    def _resend_request(self, slot: int, request: _PendingRequest, now: float) -> None:
        if request.retries_left <= 0 or not self._request_needed(slot):
            del self._requests[slot]
            return
        request.retries_left -= 1
        request.next_at = now + self.config.request_timeout * 2 ** (
            self.config.request_retries - request.retries_left)
        self._send_request(slot, request.seqno)

    def _receive_request(self, neighbour: NodeId, request: SeqnoRequest, now: float) -> None:
        self.counters.requests_received += 1
        destination = request.destination
        if destination == self.node_id:
            if seqno_newer(request.seqno, self.seqno):
                self.seqno = request.seqno
            # Ours is now new enough: say it.  An older request too: a newer seqno of ours
            # need not have reached the requester (seqno-only news is not flooded).
            self._mark_dirty(self._own, now)
            return
        slot = self._index.find(destination)
        if slot is None or slot >= self._table.capacity:
            return
        column = int(self._table.selected[slot])
        if column >= 0 and not seqno_newer(request.seqno, int(self._table.selected_seqno[slot])):
            self._mark_dirty(slot, now)  # what we have is new enough: say it
            return
        if request.hop_count <= 1:
            return
        next_hop = self._neighbour_of[column] if column >= 0 else None
        if next_hop is None or next_hop == neighbour:
            # Nowhere to relay it now (no route, or the route goes back to the asker);
            # held, it follows the route we find next (:meth:`_follow_moved_routes`).
            self._await_answer(slot, request.seqno, None, request.hop_count - 1, now)
            return
        key = (slot, request.seqno)
        recently = self._forwarded_requests.get(key)
        if recently is not None and now < recently:
            # A duplicate of one just relayed (another asker's): it goes once, but a
            # retry comes after the window and goes again.
            self._await_answer(slot, request.seqno, None, request.hop_count - 1, now)
            return
        self._await_answer(slot, request.seqno, next_hop, request.hop_count - 1, now)
        self._relay(slot, next_hop, request.seqno, request.hop_count - 1, now)

    def _relay(self, slot: int, next_hop: NodeId, seqno: int, hop_count: int,
               now: float) -> None:
        """Send the request on, remembering (slot, seqno) to suppress its duplicates."""
        self._forwarded_requests[(slot, seqno)] = now + self.config.request_timeout / 2
        self.counters.requests_forwarded += 1
        self._outbox.append((next_hop, SeqnoRequest(self._ids[slot], seqno, hop_count)))

    def _await_answer(self, slot: int, seqno: int, next_hop: NodeId | None, hop_count: int,
                      now: float) -> None:
        """Remember that a request for ``seqno`` came to us (and went on to ``next_hop``;
        None: not yet), so that its answer, a seqno-only change here, is passed on at
        once.  Kept for the longest gap between a requester's retries, which come
        through again and renew this."""
        until = now + self.config.request_timeout * 2 ** self.config.request_retries
        relayed = self._relayed.get(slot)
        if relayed is None:
            self._relayed[slot] = _Relayed(seqno, seqno, until, next_hop, hop_count)
            return
        if seqno_newer(relayed.oldest, seqno):
            relayed.oldest = seqno
        if seqno_newer(seqno, relayed.newest):
            relayed.newest = seqno
        relayed.until, relayed.hop_count = until, hop_count
        if next_hop is not None:
            relayed.next_hop = next_hop

    def _follow_moved_routes(self, slots: list[int], now: float) -> None:
        """Relay again the requests still owed an answer whose route here has moved.

        The answer comes back the way the request went; if our next hop changed in
        between, it arrives on a route we no longer use and goes no further, while the
        new next hop, which nobody asked, keeps its newer seqno to itself.  Asking it
        too gets the answer at once if it has one (called for the slots of an update
        being sent, which include every slot whose next hop changed)."""
        for slot in slots:
            relayed = self._relayed.get(slot)
            if relayed is None:
                continue
            column = int(self._table.selected[slot])
            next_hop = self._neighbour_of[column] if column >= 0 else None
            if next_hop is None or next_hop == relayed.next_hop or now >= relayed.until:
                continue
            relayed.next_hop = next_hop
            self._relay(slot, next_hop, relayed.newest, relayed.hop_count, now)

    def _jittered(self, interval: float) -> float:
        return interval * self._rng.uniform(0.75, 1.0)


def _beats_fd(fd: tuple[int, int] | None, seqno: int, advertised: int) -> bool:
    """RFC 8966 3.5.1: (seqno, advertised) is feasible against the FD ``fd`` (none: yes).
    :meth:`RouteTable.feasible` is the same rule over arrays."""
    if fd is None:
        return True
    fd_seqno, fd_metric = fd
    return seqno_newer(seqno, fd_seqno) if seqno != fd_seqno else advertised < fd_metric


def _add(metric: int, cost: int) -> int:
    return METRIC_INFINITY if metric >= METRIC_INFINITY else min(metric + cost,
                                                                  METRIC_INFINITY - 1)


def _id(neighbour: NodeId | None) -> bytes:
    """A column's neighbour id (columns in the candidates are always in use)."""
    assert neighbour is not None
    return neighbour
