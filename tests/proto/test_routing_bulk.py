"""The routing core's bulk path decides exactly what its one-entry rules decide.

An update of many entries is split (``Router._receive_bulk``): the common cases
are applied a column at a time in numpy, the rest go through the one-entry
rules.  These tests run the same events through a router that takes every
update in bulk (``bulk_min=1``) and one that never does, and compare
everything either sends and every row of their tables.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.ids import NodeId
from overlay.proto.fastpath import decode_payload
from overlay.proto.messages import (
    METRIC_INFINITY,
    LinkMessage,
    Message,
    RouteEntries,
    RouteEntry,
    RouteUpdate,
    SeqnoRequest,
    decode_message,
    encode_message_payload,
)
from overlay.proto.route_columns import EntryColumns
from overlay.proto.route_table import DestinationIndex
from overlay.proto.routing import Router, RoutingConfig
from tests.proto.routing_harness import RouterNet, assert_loop_free, node_id

NEVER = 10**9


def _connected(n: int, p: float, seed: int) -> nx.Graph:
    rng = random.Random(seed)
    for attempt in range(100):
        graph = nx.gnp_random_graph(n, p, seed=seed * 31 + attempt)
        if nx.is_connected(graph):
            for a, b in graph.edges:
                graph.edges[a, b]["latency"] = round(rng.uniform(0.001, 0.03), 6)
            return graph
    raise AssertionError("no connected graph")


def _tables(net: RouterNet) -> dict[int, object]:
    return {n: router.table() for n, router in net.routers.items()}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000),
       events=st.lists(st.tuples(st.sampled_from(["down", "up", "cost"]), st.integers(0, 999)),
                       max_size=12))
def test_networks_run_in_bulk_and_one_entry_at_a_time_send_the_same(
        seed: int, events: list[tuple[str, int]]) -> None:
    graph = _connected(14, 0.3, seed)
    nets = [RouterNet(graph.copy(), seed=seed, bulk_min=bulk_min) for bulk_min in (1, NEVER)]
    nets[0].checks.append(assert_loop_free)
    rng = random.Random(seed)
    edges = list(graph.edges)
    steps = [("run", 0)] + [event for e in events for event in (e, ("run", 0))]
    for kind, pick in steps:
        a, b = edges[pick % len(edges)]
        pause = rng.uniform(0.0, 0.4)
        latency = rng.uniform(0.001, 0.05)
        for net in nets:
            if kind == "down" and frozenset((a, b)) in net.up:
                net.link_down(a, b)
            elif kind == "up" and frozenset((a, b)) not in net.up:
                net.link_up(a, b)
            elif kind == "cost" and frozenset((a, b)) in net.up:
                net.set_cost(a, b, latency)
            net.run_until(net.now + (3.0 if kind == "run" else pause))
        bulk, single = nets
        assert bulk.advertised == single.advertised
        assert _tables(bulk) == _tables(single)
    for net in nets:
        net.run_until(net.now + 40.0)
    assert nets[0].advertised == nets[1].advertised
    assert _tables(nets[0]) == _tables(nets[1])
    assert nets[0].advertised, "the routers said something"


ME, N1, N2, N3 = (NodeId(bytes([i]) * 16) for i in (1, 2, 3, 4))
DESTINATIONS = [ME, N1, N2, N3, *(NodeId(bytes([0xA0 + i]) * 16) for i in range(6))]

entry = st.builds(
    RouteEntry,
    st.sampled_from(DESTINATIONS),
    st.sampled_from([0, 1, 2, 3, 32_768, 65_535]),
    st.one_of(st.integers(0, 200), st.just(METRIC_INFINITY), st.just(METRIC_INFINITY - 1)),
)
event = st.one_of(
    st.tuples(st.just("update"), st.sampled_from([N1, N2, N3]),
              st.one_of(st.lists(entry, max_size=10, unique_by=lambda e: e.destination),
                        st.lists(entry, max_size=12)),  # duplicates: one entry at a time
              st.sampled_from([1, 500, 40_000])),
    st.tuples(st.just("request"), st.sampled_from([N1, N2, N3]), st.sampled_from(DESTINATIONS),
              st.integers(0, 65_535)),
    st.tuples(st.just("cost"), st.sampled_from([N1, N2, N3]), st.integers(1, 300)),
    st.tuples(st.just("down"), st.sampled_from([N1, N2, N3])),
    st.tuples(st.just("up"), st.sampled_from([N1, N2, N3]), st.integers(1, 300)),
    st.tuples(st.just("time"), st.floats(0.0, 30.0)),
)


def _drain(router: Router) -> list[tuple[NodeId | None, LinkMessage]]:
    out = []
    while (item := router.next_outgoing()) is not None:
        out.append(item)
    return out


def _run_both(events: list[tuple[object, ...]]) -> list[tuple[NodeId | None, LinkMessage]]:
    """The events through a router taking every update in bulk and one that never does;
    both must send the same and hold the same after every event.  Returns what was sent."""
    config = RoutingConfig(update_interval=10.0, request_timeout=0.5)
    routers = [Router(ME, now=0.0, rng=random.Random(7), config=config, bulk_min=bulk_min)
               for bulk_min in (1, NEVER)]
    now = 0.0
    sent: list[tuple[NodeId | None, LinkMessage]] = []
    for router in routers:
        for neighbour, cost in ((N1, 10), (N2, 20), (N3, 30)):
            router.add_neighbour(neighbour, cost, now)
    for item in events:
        kind = item[0]
        if kind == "time":
            now += float(item[1])  # type: ignore[arg-type]
        for router in routers:
            if kind == "update":
                _, neighbour, entries, interval = item
                message: LinkMessage = RouteUpdate(interval, tuple(entries))  # type: ignore[arg-type]
                router.receive(neighbour, message, now)  # type: ignore[arg-type]
            elif kind == "request":
                _, neighbour, destination, seqno = item
                router.receive(neighbour, SeqnoRequest(destination, seqno, 8), now)  # type: ignore[arg-type]
            elif kind == "cost":
                router.update_cost(item[1], item[2], now)  # type: ignore[arg-type]
            elif kind == "down":
                router.remove_neighbour(item[1], now)  # type: ignore[arg-type]
            elif kind == "up":
                router.add_neighbour(item[1], item[2], now)  # type: ignore[arg-type]
            while router.get_timer() <= now:
                router.handle_timer(now)
        bulk, single = routers
        out = _drain(bulk)
        assert out == _drain(single)
        assert bulk.table() == single.table()
        assert bulk.counters == single.counters
        assert (bulk.seqno, bulk.last_change, bulk.last_next_hop_change) == (
            single.seqno, single.last_change, single.last_next_hop_change)
        sent.extend(out)
    return sent


@settings(max_examples=500, deadline=None)
@given(events=st.lists(event, max_size=30))
def test_any_updates_from_neighbours_get_the_same_decisions_in_bulk(
        events: list[tuple[object, ...]]) -> None:
    """Hostile and odd updates too: our own id, retractions, duplicates in one update,
    unfeasible and far newer seqnos, requests, cost changes, links going and coming."""
    _run_both(events)


D, FILLER = DESTINATIONS[4], DESTINATIONS[5]
LONG = 40_000  # centiseconds: routes that outlive every scenario


def _requests_for(sent: list[tuple[NodeId | None, LinkMessage]], destination: NodeId) -> int:
    return sum(isinstance(m, SeqnoRequest) and m.destination == destination for _, m in sent)


RETRACTED_CHEAPER = [
    ("update", N1, [RouteEntry(D, 5, 100), RouteEntry(FILLER, 1, 1)], LONG),
    ("time", 1.0),  # the triggered update: the feasibility distance is (5, 110)
    ("update", N1, [RouteEntry(D, 4, 5), RouteEntry(FILLER, 1, 2)], LONG),
    ("time", 1.0),
]


def test_an_older_seqno_on_the_route_in_use_is_a_retraction_even_when_cheaper() -> None:
    """RFC 8966 3.5.4 in bulk: the route in use comes back with an older seqno and a lower
    metric; unfeasible, so it is dropped from use and the destination asked for a newer seqno."""
    sent = _run_both(RETRACTED_CHEAPER)
    assert _requests_for(sent, D) >= 1
    assert any(isinstance(m, RouteUpdate) and RouteEntry(D, 5, METRIC_INFINITY) in m.entries
               for _, m in sent)


def test_a_first_feasible_route_beside_a_better_unfeasible_one_asks_for_a_newer_seqno() -> None:
    """No route in use, but one held that is better and unfeasible: the feasible newcomer is
    selected and the destination is asked for a seqno that would lift the better one."""
    # past the retraction hold and every retry of the request (the clock steps, as a
    # driver's would, so that each retry fires at its own time)
    quiet: list[tuple[object, ...]] = [*RETRACTED_CHEAPER, *[("time", 1.0)] * 30]
    before = _requests_for(_run_both(quiet), D)
    sent = _run_both([*quiet, ("update", N2, [RouteEntry(D, 6, 300),
                                              RouteEntry(FILLER, 1, 3)], LONG)])
    assert _requests_for(sent, D) == before + 1
    sent = _run_both([*quiet, ("update", N2, [RouteEntry(D, 6, 300),
                                              RouteEntry(FILLER, 1, 3)], LONG), ("time", 1.0)])
    assert any(isinstance(m, RouteUpdate) and RouteEntry(D, 6, 320) in m.entries
               for _, m in sent)


def test_a_newer_seqno_alone_is_sent_in_bulk_only_where_it_answers_a_relayed_request() -> None:
    """Two seqno-only changes in one update: D's answers the request N2 made through us and
    goes out at once; FILLER's was asked for by nobody and waits for the full table."""
    sent = _run_both([
        ("update", N1, [RouteEntry(D, 5, 100), RouteEntry(FILLER, 1, 1)], LONG),
        ("time", 1.0),
        ("request", N2, D, 6),
        ("update", N1, [RouteEntry(D, 6, 100), RouteEntry(FILLER, 2, 1)], LONG),
        ("time", 1.0),
    ])
    assert (N1, SeqnoRequest(D, 6, 7)) in sent
    entries = [entry for _, m in sent if isinstance(m, RouteUpdate) for entry in m.entries]
    assert RouteEntry(D, 6, 110) in entries
    assert RouteEntry(FILLER, 2, 11) not in entries


@pytest.mark.parametrize("decode", [decode_message, decode_payload])
def test_a_decoded_full_table_is_taken_in_bulk_like_the_same_entries_one_by_one(
        decode: Callable[[bytes], Message]) -> None:
    """The wire's columns (raw destination bytes as RouteEntries from the general decoder,
    arrays as EntryColumns from the link's) into routers that share one destination
    index, the simulator's set-up."""
    index = DestinationIndex()
    routers = [Router(node_id(0), now=0.0, rng=random.Random(1), index=index, bulk_min=b)
               for b in (1, NEVER)]
    entries = tuple(RouteEntry(node_id(i), i % 7, 1000 + 13 * i) for i in range(2, 2502))
    for router in routers:
        router.add_neighbour(node_id(1), 50, 0.0)
        _drain(router)
        for start in range(0, len(entries), 1000):
            wire = encode_message_payload(RouteUpdate(4000, entries[start:start + 1000]))
            decoded = decode(wire)
            assert isinstance(decoded, RouteUpdate) and isinstance(decoded.entries, RouteEntries)
            assert (type(decoded.entries) is EntryColumns) == (decode is decode_payload)
            assert encode_message_payload(decoded) == wire  # columns encode as the tuple did
            router.receive(node_id(1), decoded, 0.0)
        router.handle_timer(router.get_timer())
    bulk, single = routers
    assert bulk.route_count == single.route_count == 2500
    assert bulk.metric(node_id(2501)) == 1000 + 13 * 2501 + 50
    assert bulk.next_hop(node_id(77)) == node_id(1)
    assert _drain(bulk) == _drain(single)
    assert bulk.table() == single.table()


def test_an_update_of_arrays_naming_a_destination_twice_goes_one_entry_at_a_time() -> None:
    """Only distinct destinations are decided in bulk; the arrays' path checks it too."""
    entries = [RouteEntry(node_id(i), 1, 1000 + i) for i in range(2, 60)]
    entries += [RouteEntry(node_id(5), 2, 10), RouteEntry(node_id(7), 1, 5000)]
    wire = encode_message_payload(RouteUpdate(4000, tuple(entries)))
    routers = [Router(node_id(0), now=0.0, rng=random.Random(1), bulk_min=b)
               for b in (1, NEVER)]
    for router, message in zip(routers, (decode_payload(wire), decode_message(wire)),
                               strict=True):
        assert isinstance(message, RouteUpdate)
        router.add_neighbour(node_id(1), 50, 0.0)
        _drain(router)
        router.receive(node_id(1), message, 0.0)
        router.handle_timer(router.get_timer())
    arrays, single = routers
    assert arrays.metric(node_id(5)) == 10 + 50  # the later entry, a newer seqno
    assert arrays.metric(node_id(7)) == 5000 + 50
    assert _drain(arrays) == _drain(single)
    assert arrays.table() == single.table()


def test_a_router_joining_a_shared_index_late_has_room_for_its_own_slot() -> None:
    """In the simulator the 427th router's own id is slot 426 of the shared index before
    it has received anything: its first advertisement must still say it."""
    index = DestinationIndex()
    for i in range(2, 500):
        index.slot(node_id(i))
    router = Router(node_id(1), now=0.0, rng=random.Random(1), index=index)
    router.add_neighbour(node_id(0), 50, 0.0)
    assert _drain(router) == [(node_id(0), RouteUpdate(16_000, (RouteEntry(node_id(1), 0, 0),)))]
    assert router.next_hop(node_id(400)) is None
    assert router.metric(node_id(400)) == METRIC_INFINITY
