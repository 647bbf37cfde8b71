"""The routing core's storage: the destination index, the vector rules, the arrays.

The vector helpers must agree with the one-entry rules of ``overlay.proto.routing``
on every input (the bulk path and the one-entry path decide from the same
arrays with them), and a table must keep what it holds across growth.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from overlay.ids import NodeId
from overlay.proto.messages import METRIC_INFINITY
from overlay.proto.route_table import (
    ABSENT,
    DestinationIndex,
    RouteTable,
    plus_cost,
    seqnos_newer,
)
from overlay.proto.routing import _add, seqno_newer

seqnos = st.integers(0, 65_535)
metrics = st.one_of(st.integers(0, METRIC_INFINITY), st.just(METRIC_INFINITY),
                    st.just(METRIC_INFINITY - 1))


@given(st.lists(st.tuples(seqnos, seqnos), min_size=1, max_size=50))
def test_seqnos_newer_is_seqno_newer_element_wise(pairs: list[tuple[int, int]]) -> None:
    a = np.array([x for x, _ in pairs], np.int64)
    b = np.array([y for _, y in pairs], np.int64)
    assert seqnos_newer(a, b).tolist() == [seqno_newer(x, y) for x, y in pairs]


@given(st.lists(metrics, min_size=1, max_size=50), st.integers(1, METRIC_INFINITY))
def test_plus_cost_is_the_scalar_sum_element_wise(advertised: list[int], cost: int) -> None:
    """Infinity stays infinity; a finite sum stops just below it, however large the cost."""
    assert plus_cost(np.array(advertised, np.int64), cost).tolist() == [
        _add(metric, cost) for metric in advertised]


def test_the_index_numbers_ids_in_order_of_first_sight_and_finds_them_again() -> None:
    index = DestinationIndex()
    a, b, c = (NodeId(bytes([i]) * 16) for i in (1, 2, 3))
    assert [index.slot(a), index.slot(b), index.slot(a)] == [0, 1, 0]
    assert index.slots([bytes(c), bytes(a), bytes(c)]) == [2, 0, 2]
    assert index.ids == [a, b, c] and len(index) == 3
    assert index.find(bytes(b)) == 1
    assert index.find(bytes(16)) is None


def test_a_growing_table_keeps_every_route_and_fills_new_slots_as_empty() -> None:
    table = RouteTable()
    first = table.add_column()
    table.store(5, first, seqno=7, advertised=100, expires_at=12.5)
    table.selected[5] = first
    table.fd_seqno[5], table.fd_metric[5] = 7, 110
    before = table.capacity
    table.grow(before + 1)
    assert table.capacity >= before + before // 8
    assert table.route(5, first) == (7, 100)
    assert not table.expired(first, table.capacity, 12.49).any()
    expired = table.expired(first, table.capacity, 12.5)
    assert expired.tolist() == [i == 5 for i in range(table.capacity)]
    assert (int(table.selected[5]), table.fd(5), int(table.routes[5])) == (first, (7, 110), 1)
    new = table.capacity - 1
    assert table.route(new, first) is None
    assert (int(table.selected[new]), table.fd(new), int(table.routes[new])) == (-1, None, 0)
    table.grow(10 * table.capacity)  # far past: straight to the size asked for
    assert table.capacity == 10 * (before + before // 8)


def test_a_freed_column_is_reused_and_routes_are_counted_per_destination() -> None:
    table = RouteTable()
    a, b = table.add_column(), table.add_column()
    table.store(3, a, 1, 10, 1.0)
    table.store(3, b, 1, 20, 1.0)
    table.store(3, b, 2, 15, 2.0)  # replacing a route is not a second one
    assert int(table.routes[3]) == 2
    assert table.slots_through(b, table.capacity) == [3]
    table.drop(3, b)
    table.drop(3, b)  # dropping what is gone changes nothing
    assert int(table.routes[3]) == 1 and table.route(3, b) is None
    assert table.metrics[b][3] == ABSENT
    table.free_column(b)
    assert table.add_column() == b


def test_feasibility_against_the_fd_element_wise() -> None:
    """RFC 8966 3.5.1: newer seqno, or the same seqno and a strictly smaller metric;
    no FD or a retraction is always feasible."""
    table = RouteTable()
    table.fd_seqno[1], table.fd_metric[1] = 10, 100
    slots = np.array([0, 1, 1, 1, 1, 1], np.int64)
    seqno = np.array([3, 10, 10, 11, 9, 9], np.int64)
    advertised = np.array([5, 99, 100, 500, 1, METRIC_INFINITY], np.int64)
    assert table.feasible(slots, seqno, advertised).tolist() == [
        True, True, False, True, False, True]
