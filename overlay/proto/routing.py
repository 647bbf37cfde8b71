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

Updates are triggered after a change (coalesced for ``triggered_delay``); links
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

One module for one state machine: the route table, the feasibility state and
the update scheduling change together on every event, and splitting them would
only spread the loop-freedom invariant over several files.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from overlay.ids import NodeId
from overlay.proto.messages import (
    MAX_TTL,
    MAX_UPDATE_ENTRIES,
    METRIC_INFINITY,
    U16_MAX,
    LinkMessage,
    RouteEntry,
    RouteUpdate,
    SeqnoRequest,
)

SEQNO_MODULUS = U16_MAX + 1
EXPIRY_FACTOR = 3.5


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


@dataclass(slots=True)
class Route:
    """A route to ``destination`` through ``neighbour``, as last advertised by it."""

    destination: NodeId
    neighbour: NodeId
    seqno: int
    advertised: int
    metric: int
    expires_at: float


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


@dataclass(slots=True)
class _PendingRequest:
    seqno: int
    next_at: float
    retries_left: int


@dataclass(slots=True)
class _Neighbour:
    cost: int


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
    ) -> None:
        self.node_id = node_id
        self.config = config or RoutingConfig()
        self.seqno = seqno % SEQNO_MODULUS
        self.counters = RoutingCounters()
        self.last_change = now
        self.last_next_hop_change = now
        self._rng = rng
        self._neighbours: dict[NodeId, _Neighbour] = {}
        # Per destination, its routes (one per neighbour that advertised it): a list,
        # not a dict by neighbour, since a destination has a handful of routes and a
        # node holds one such container per destination (memory at scale).
        self._routes: dict[NodeId, list[Route]] = {}
        self._selected: dict[NodeId, Route] = {}
        self._fd: dict[NodeId, tuple[int, int]] = {}
        self._advertised: dict[NodeId, tuple[int, int]] = {}
        self._retracted: dict[NodeId, float] = {}
        self._requests: dict[NodeId, _PendingRequest] = {}
        self._forwarded_requests: dict[tuple[NodeId, int], float] = {}
        self._dirty: set[NodeId] = set()
        self._flush_at: float | None = None
        self._outbox: deque[Outgoing] = deque()
        self._resync: dict[NodeId, float] = {}
        self.refresh_interval = self.config.update_interval
        """The period of the full table now announced in every update (seconds)."""
        self._next_periodic = now + self._jittered(self.config.update_interval)
        self._next_expiry_check = now + self.config.update_interval

    # --- queries --------------------------------------------------------------

    def next_hop(self, destination: NodeId) -> NodeId | None:
        route = self._selected.get(destination)
        return route.neighbour if route is not None else None

    def metric(self, destination: NodeId) -> int:
        if destination == self.node_id:
            return 0
        route = self._selected.get(destination)
        return route.metric if route is not None else METRIC_INFINITY

    def destinations(self) -> list[NodeId]:
        return list(self._selected)

    @property
    def route_count(self) -> int:
        """How many destinations have a selected route."""
        return len(self._selected)

    def table(self) -> list[RouteInfo]:
        rows = []
        for destination in sorted(self._routes.keys() | self._selected.keys()):
            routes = self._routes.get(destination, [])
            selected = self._selected.get(destination)
            fd_seqno = self._fd.get(destination, (0, 0))[0]
            rows.append(RouteInfo(
                destination=destination,
                next_hop=selected.neighbour if selected else None,
                metric=selected.metric if selected else METRIC_INFINITY,
                seqno=selected.seqno if selected else fd_seqno,
                routes=len(routes),
                feasible=sum(1 for r in routes if self._usable(r)),
            ))
        return rows

    def neighbour_cost(self, neighbour: NodeId) -> int | None:
        state = self._neighbours.get(neighbour)
        return state.cost if state is not None else None

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
        for destination, request in list(self._requests.items()):
            if now >= request.next_at:
                self._resend_request(destination, request, now)
        for neighbour, at in list(self._resync.items()):
            if now >= at:
                del self._resync[neighbour]
                if neighbour in self._neighbours:
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
        if neighbour in self._neighbours and neighbour not in self._resync:
            self._resync[neighbour] = now + self.config.resync_delay

    def add_neighbour(self, neighbour: NodeId, cost_us: int, now: float) -> None:
        """A link came up and has its first RTT sample: start routing through it."""
        if neighbour in self._neighbours:
            self.update_cost(neighbour, cost_us, now)
            return
        self._neighbours[neighbour] = _Neighbour(cost=max(1, cost_us))
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
        state = self._neighbours.get(neighbour)
        if state is None:
            return
        cost_us = max(1, cost_us)
        fixed = max(state.cost * self.config.cost_hysteresis, self.config.cost_floor_us)
        agreed_lower = (recent_high_us is not None and cost_us < state.cost
                        and state.cost - recent_high_us > fixed)
        if abs(cost_us - state.cost) <= max(fixed, noise_us) and not agreed_lower:
            return
        state.cost = cost_us
        for destination, routes in list(self._routes.items()):
            route = _through(routes, neighbour)
            if route is not None:
                route.metric = _add(route.advertised, cost_us)
                self._reselect(destination, now)

    def remove_neighbour(self, neighbour: NodeId, now: float) -> None:
        """The link is gone: every route through it goes with it."""
        self._resync.pop(neighbour, None)
        state = self._neighbours.pop(neighbour, None)
        if state is None:
            return
        for destination, routes in list(self._routes.items()):
            route = _through(routes, neighbour)
            if route is not None:
                self._drop_route(route)
                self._reselect(destination, now)

    def receive(self, neighbour: NodeId, message: LinkMessage, now: float) -> None:
        if neighbour not in self._neighbours:
            return  # not (yet) a routing neighbour: its advertisements cannot be costed
        if isinstance(message, RouteUpdate):
            self.counters.updates_received += 1
            self.counters.entries_received += len(message.entries)
            expires_at = now + EXPIRY_FACTOR * max(message.interval_ms / 1000, 0.001)
            for entry in message.entries:
                self._receive_entry(neighbour, entry, expires_at, now)
        elif isinstance(message, SeqnoRequest):
            self._receive_request(neighbour, message, now)

    # --- updates ----------------------------------------------------------------

    def _receive_entry(self, neighbour: NodeId, entry: RouteEntry, expires_at: float,
                       now: float) -> None:
        # The inner loop of convergence (every entry of every table from every
        # neighbour): the lookups of _through, _feasible and _add are written out here.
        destination, seqno, metric = entry
        known = self._routes.get(destination)
        route = None
        if known is not None:
            for held in known:
                if held.neighbour == neighbour:
                    route = held
                    break
        if route is not None and route.seqno == seqno and route.advertised == metric:
            # A periodic refresh of what we already hold: nothing can change but the expiry,
            # except that a route that would still win but is still unfeasible asks again
            # (the last request may have run out of retries, or asked for too old a seqno).
            route.expires_at = expires_at
            selected = self._selected.get(destination)
            if (selected is not None and selected is not route
                    and route.metric < selected.metric and not self._usable(route)):
                self._start_request(destination, now)
            return
        if destination == self.node_id:
            if seqno_newer(seqno, self.seqno):
                # Someone remembers a newer seqno of ours (we restarted): overtake it.
                self.seqno = (seqno + 1) % SEQNO_MODULUS
                self._mark_dirty(self.node_id, now)
            return
        if metric == METRIC_INFINITY:
            feasible = True
        else:
            fd = self._fd.get(destination)
            feasible = fd is None or (
                seqno_newer(seqno, fd[0]) if seqno != fd[0] else metric < fd[1])
        selected = self._selected.get(destination)
        if route is None:
            if metric == METRIC_INFINITY:
                return
            if not feasible:
                self.counters.unfeasible_ignored += 1
            route = Route(destination, neighbour, seqno, metric, 0, 0.0)
            if known is None:
                self._routes[destination] = [route]
            else:
                known.append(route)
        elif not feasible and selected is route:
            # RFC 8966 3.5.4: an unfeasible update for the selected route is a retraction.
            self.counters.unfeasible_ignored += 1
        old_metric = route.metric
        route.seqno = seqno
        route.advertised = metric
        route.metric = _add(metric, self._neighbours[neighbour].cost)
        route.expires_at = expires_at
        if metric == METRIC_INFINITY:
            self._drop_route(route)
        elif selected is not None and selected is not route and (
                route.metric >= selected.metric or not feasible):
            # The fast path of a full table refresh: an alternative that cannot win.
            # Only an unfeasible route that would win needs action (a seqno request).
            if not feasible and route.metric < selected.metric:
                self._start_request(destination, now)
            return
        elif selected is route and feasible and route.metric <= old_metric:
            # The route in use stayed as good or got better: it still wins.
            if self._advertised_differs(destination, route):
                self._changed(destination, now)
            return
        self._reselect(destination, now)

    def _drop_route(self, route: Route) -> None:
        routes = self._routes.get(route.destination)
        if routes is not None:
            for i, held in enumerate(routes):
                if held is route:
                    del routes[i]
                    break
            if not routes:
                del self._routes[route.destination]

    def _feasible(self, destination: NodeId, seqno: int, advertised: int) -> bool:
        if advertised == METRIC_INFINITY:
            return True
        fd = self._fd.get(destination)
        if fd is None:
            return True
        fd_seqno, fd_metric = fd
        return seqno_newer(seqno, fd_seqno) or (seqno == fd_seqno and advertised < fd_metric)

    def _usable(self, route: Route) -> bool:
        return route.metric < METRIC_INFINITY and self._feasible(
            route.destination, route.seqno, route.advertised)

    def _reselect(self, destination: NodeId, now: float) -> None:
        """Choose the best feasible route; advertise any change; ask for help if starved."""
        current = self._selected.get(destination)
        routes = self._routes.get(destination, [])
        best: Route | None = None
        # _usable written out, with the destination's feasibility distance looked up once.
        fd = self._fd.get(destination)
        for route in routes:
            if route.metric >= METRIC_INFINITY:
                continue
            if fd is not None and route.advertised != METRIC_INFINITY and not (
                    seqno_newer(route.seqno, fd[0]) if route.seqno != fd[0]
                    else route.advertised < fd[1]):
                continue
            if (best is None
                    or route.metric < best.metric
                    or (route.metric == best.metric and route.neighbour < best.neighbour)):
                best = route
        if current is not None and current is not best and best is not None:
            current_ok = any(r is current for r in routes) and self._usable(current)
            if current_ok and current.metric <= best.metric:
                best = current  # ties keep the route in use: no gratuitous changes
        if best is None:
            if current is not None:
                del self._selected[destination]
                self.counters.next_hop_changes += 1
                self.last_next_hop_change = now
                hold = self.config.retraction_hold
                if hold is None:
                    hold = 2 * self.config.update_interval
                self._retracted[destination] = now + hold
                self._changed(destination, now)
            if any(r.metric < METRIC_INFINITY for r in routes):
                self._start_request(destination, now)
            return
        self._retracted.pop(destination, None)
        # An unfeasible route that would be better stays unusable until the
        # destination issues a newer seqno (RFC 8966 3.8.2.2): ask for one.
        chosen = best
        if any(r.metric < chosen.metric and not self._usable(r) for r in routes):
            self._start_request(destination, now)
        else:
            self._requests.pop(destination, None)
        if best is not current:
            self._selected[destination] = best
            if current is None or current.neighbour != best.neighbour:
                self.counters.next_hop_changes += 1
                self.last_next_hop_change = now
            self._changed(destination, now)
        elif self._advertised_differs(destination, best):
            self._changed(destination, now)

    def _advertised_differs(self, destination: NodeId, route: Route) -> bool:
        return self._advertised.get(destination) != (route.seqno, route.metric)

    def _changed(self, destination: NodeId, now: float) -> None:
        self.counters.route_changes += 1
        self.last_change = now
        self._mark_dirty(destination, now)

    def _mark_dirty(self, destination: NodeId, now: float) -> None:
        self._dirty.add(destination)
        if self._flush_at is None:
            self._flush_at = now + self.config.triggered_delay

    def _entry_for(self, destination: NodeId) -> RouteEntry | None:
        """What we advertise for ``destination`` now, updating its feasibility distance."""
        if destination == self.node_id:
            return RouteEntry(destination, self.seqno, 0)
        route = self._selected.get(destination)
        if route is None:
            fd = self._fd.get(destination)
            if fd is None:
                return None
            return RouteEntry(destination, fd[0], METRIC_INFINITY)
        fd = self._fd.get(destination)
        advertised = (route.seqno, route.metric)  # one tuple for both tables: memory at scale
        if (fd is None or seqno_newer(route.seqno, fd[0])
                or (route.seqno == fd[0] and route.metric < fd[1])):
            self._fd[destination] = advertised
        self._advertised[destination] = advertised
        return RouteEntry(destination, route.seqno, route.metric)

    def _flush(self, now: float) -> None:
        dirty, self._dirty, self._flush_at = self._dirty, set(), None
        entries = [e for d in sorted(dirty) if (e := self._entry_for(d)) is not None]
        self._emit(None, entries)

    def _send_full_table(self, target: NodeId | None, now: float, *,
                         resync: bool = False) -> None:
        """The full table to ``target`` (None: everyone, the periodic one).

        A resync adds a retraction for every destination ever advertised (it has an
        FD) that has no route now, however long ago it was lost: the neighbour may
        have missed that retraction.
        """
        for destination, until in list(self._retracted.items()):
            if now >= until:
                del self._retracted[destination]
        selected = self._selected
        lost = [d for d in self._fd if d not in selected] if resync else list(self._retracted)
        destinations = [self.node_id, *self._selected, *lost]
        entries = [e for d in destinations if (e := self._entry_for(d)) is not None]
        if target is None:
            self._dirty.clear()
            self._flush_at = None
            self.refresh_interval = max(self.config.update_interval,
                                        len(entries) / self.config.refresh_rate)
        self._emit(target, entries)

    def _emit(self, target: NodeId | None, entries: list[RouteEntry]) -> None:
        if not self._neighbours:
            return
        interval_ms = round(self.refresh_interval * 1000)
        for start in range(0, len(entries), MAX_UPDATE_ENTRIES):
            chunk = tuple(entries[start:start + MAX_UPDATE_ENTRIES])
            self._outbox.append((target, RouteUpdate(interval_ms, chunk)))
            self.counters.updates_sent += 1
            self.counters.entries_sent += len(chunk)

    def _expire(self, now: float) -> None:
        for destination, routes in list(self._routes.items()):
            expired = [r for r in routes if r.expires_at <= now]
            for route in expired:
                self._drop_route(route)
            if expired:
                self._reselect(destination, now)
        for key, until in list(self._forwarded_requests.items()):
            if now >= until:
                del self._forwarded_requests[key]

    # --- seqno requests -------------------------------------------------------------

    def _start_request(self, destination: NodeId, now: float) -> None:
        fd_seqno = self._fd.get(destination, (self._newest_seqno(destination), 0))[0]
        wanted = (fd_seqno + 1) % SEQNO_MODULUS
        pending = self._requests.get(destination)
        if pending is not None and not seqno_newer(wanted, pending.seqno):
            return  # already asking for that seqno: its retries are under way
        # A pending request for an older seqno is stale (the feasibility distance has
        # moved on since, so its answer would not lift it): ask for the one needed now.
        self._requests[destination] = _PendingRequest(
            wanted, now + self.config.request_timeout, self.config.request_retries)
        self._send_request(destination, wanted)

    def _newest_seqno(self, destination: NodeId) -> int:
        newest: int | None = None
        for route in self._routes.get(destination, []):
            if newest is None or seqno_newer(route.seqno, newest):
                newest = route.seqno
        return 0 if newest is None else newest

    def _send_request(self, destination: NodeId, seqno: int) -> None:
        if self._neighbours:
            self.counters.requests_sent += 1
            self._outbox.append(
                (None, SeqnoRequest(destination, seqno, self.config.request_hops)))

    def _request_needed(self, destination: NodeId) -> bool:
        """Starved (finite routes, none usable), or an unusable route would be better."""
        routes = self._routes.get(destination, [])
        selected = self._selected.get(destination)
        if selected is None:
            return any(r.metric < METRIC_INFINITY for r in routes)
        return any(r.metric < selected.metric and not self._usable(r) for r in routes)

    def _resend_request(self, destination: NodeId, request: _PendingRequest, now: float) -> None:
        if request.retries_left <= 0 or not self._request_needed(destination):
            del self._requests[destination]
            return
        request.retries_left -= 1
        request.next_at = now + self.config.request_timeout * 2 ** (
            self.config.request_retries - request.retries_left)
        self._send_request(destination, request.seqno)

    def _receive_request(self, neighbour: NodeId, request: SeqnoRequest, now: float) -> None:
        self.counters.requests_received += 1
        destination = request.destination
        if destination == self.node_id:
            if seqno_newer(request.seqno, self.seqno):
                self.seqno = request.seqno
            elif request.seqno != self.seqno:
                return
            self._mark_dirty(self.node_id, now)
            return
        route = self._selected.get(destination)
        if route is None:
            return
        if not seqno_newer(request.seqno, route.seqno):
            self._mark_dirty(destination, now)  # what we have is new enough: say it
            return
        key = (destination, request.seqno)
        recently = self._forwarded_requests.get(key)
        if (request.hop_count > 1 and route.neighbour != neighbour
                and (recently is None or now >= recently)):
            # Suppress duplicates of one request, but let its retries through.
            self._forwarded_requests[key] = now + self.config.request_timeout / 2
            self.counters.requests_forwarded += 1
            self._outbox.append((route.neighbour, SeqnoRequest(
                destination, request.seqno, request.hop_count - 1)))

    def _jittered(self, interval: float) -> float:
        return interval * self._rng.uniform(0.75, 1.0)


def _add(metric: int, cost: int) -> int:
    return METRIC_INFINITY if metric >= METRIC_INFINITY else min(metric + cost,
                                                                  METRIC_INFINITY - 1)


def _through(routes: list[Route], neighbour: NodeId) -> Route | None:
    """The route of ``routes`` through ``neighbour``, if any (a handful to scan)."""
    for route in routes:
        if route.neighbour == neighbour:
            return route
    return None
