"""A discrete-event network of pure Router cores, for exhaustive routing tests.

Messages take the link's latency to cross it; timers fire in order; after every
event the harness can check invariants (such as loop freedom) on the whole
network's next-hop graph.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx

from overlay.ids import NodeId
from overlay.proto.messages import LinkMessage
from overlay.proto.routing import BULK_MIN_ENTRIES, Router, RoutingConfig


def node_id(i: int) -> NodeId:
    return NodeId(i.to_bytes(16, "big"))


@dataclass(order=True)
class _Delivery:
    at: float
    seq: int
    to: int = field(compare=False)
    frm: int = field(compare=False)
    message: LinkMessage = field(compare=False)
    epoch: int = field(compare=False)


class RouterNet:
    """Routers on the nodes of ``graph``; edge attribute ``latency`` in seconds."""

    def __init__(self, graph: nx.Graph, *, seed: int = 0,
                 config: RoutingConfig | None = None, bulk_min: int = BULK_MIN_ENTRIES) -> None:
        self.graph = graph
        self.now = 0.0
        self.rng = random.Random(seed)
        self.config = config or RoutingConfig()
        self.routers = {
            n: Router(node_id(n), now=0.0, rng=random.Random(seed * 1000 + n), config=self.config,
                      bulk_min=bulk_min)
            for n in graph.nodes
        }
        self.ids = {node_id(n): n for n in graph.nodes}
        self._queue: list[_Delivery] = []
        self._seq = itertools.count()
        self._epoch: dict[frozenset[int], int] = {}
        self.up: set[frozenset[int]] = set()
        self.checks: list[Callable[[RouterNet], None]] = []
        self.advertised: list[tuple[float, int, LinkMessage]] = []
        self.sent: list[tuple[float, int, int, LinkMessage]] = []
        """Every message put on a link that is up: (time, sender, receiver, message)."""
        self.checked_changes = -1
        for a, b in graph.edges:
            self.link_up(a, b)

    def cost_us(self, a: int, b: int) -> int:
        return max(1, round(self.graph.edges[a, b]["latency"] * 1_000_000))

    def link_up(self, a: int, b: int) -> None:
        key = frozenset((a, b))
        self.up.add(key)
        self._epoch[key] = self._epoch.get(key, 0) + 1
        self.routers[a].add_neighbour(node_id(b), self.cost_us(a, b), self.now)
        self.routers[b].add_neighbour(node_id(a), self.cost_us(a, b), self.now)
        self._collect(a)
        self._collect(b)

    def link_down(self, a: int, b: int) -> None:
        key = frozenset((a, b))
        self.up.discard(key)
        self._epoch[key] = self._epoch.get(key, 0) + 1  # messages in flight are lost
        self.routers[a].remove_neighbour(node_id(b), self.now)
        self.routers[b].remove_neighbour(node_id(a), self.now)
        self._collect(a)
        self._collect(b)
        self._check()

    def set_cost(self, a: int, b: int, latency: float) -> None:
        self.graph.edges[a, b]["latency"] = latency
        for x, y in ((a, b), (b, a)):
            self.routers[x].update_cost(node_id(y), self.cost_us(x, y), self.now)
            self._collect(x)
        self._check()

    def _collect(self, n: int) -> None:
        router = self.routers[n]
        while (out := router.next_outgoing()) is not None:
            target, message = out
            self.advertised.append((self.now, n, message))
            targets = [self.ids[target]] if target is not None else list(self.graph.neighbors(n))
            for m in targets:
                key = frozenset((n, m))
                if key not in self.up:
                    continue
                self.sent.append((self.now, n, m, message))
                delay = self.graph.edges[n, m]["latency"]
                heapq.heappush(self._queue, _Delivery(
                    self.now + delay, next(self._seq), m, n, message, self._epoch[key]))

    def _check(self) -> None:
        for check in self.checks:
            check(self)

    def run_until(self, end: float) -> None:
        while True:
            timer_node, timer_at = min(
                ((n, r.get_timer()) for n, r in self.routers.items()), key=lambda x: x[1])
            message_at = self._queue[0].at if self._queue else float("inf")
            at = min(timer_at, message_at)
            if at > end:
                self.now = end
                return
            self.now = at
            if message_at <= timer_at:
                d = heapq.heappop(self._queue)
                if self._epoch.get(frozenset((d.to, d.frm))) != d.epoch:
                    continue
                self.routers[d.to].receive(node_id(d.frm), d.message, self.now)
                self._collect(d.to)
            else:
                self.routers[timer_node].handle_timer(self.now)
                self._collect(timer_node)
            self._check()

    # --- views ------------------------------------------------------------------

    def next_hop(self, src: int, dst: int) -> int | None:
        hop = self.routers[src].next_hop(node_id(dst))
        return None if hop is None else self.ids[hop]

    def path(self, src: int, dst: int) -> list[int] | None:
        """Follow next hops; None if a hop has no route; raises on a loop."""
        path = [src]
        while path[-1] != dst:
            hop = self.next_hop(path[-1], dst)
            if hop is None:
                return None
            if hop in path:
                raise AssertionError(f"routing loop to {dst}: {[*path, hop]}")
            path.append(hop)
        return path

    def path_latency(self, path: list[int]) -> float:
        return sum(self.graph.edges[a, b]["latency"] for a, b in itertools.pairwise(path))


def assert_loop_free(net: RouterNet) -> None:
    """No destination's next-hop graph has a cycle (re-checked only after a next-hop change)."""
    changes = sum(r.counters.next_hop_changes for r in net.routers.values())
    if changes == net.checked_changes:
        return
    net.checked_changes = changes
    for dst in net.graph.nodes:
        state: dict[int, int] = {}  # 1 = on stack, 2 = done
        for start in net.graph.nodes:
            walk = []
            n: int | None = start
            while n is not None and n != dst and state.get(n) is None:
                state[n] = 1
                walk.append(n)
                n = net.next_hop(n, dst)
            if n is not None and state.get(n) == 1:
                raise AssertionError(f"t={net.now:.3f}: loop towards {dst} through {n}: {walk}")
            for w in walk:
                state[w] = 2


def costs_in_use(net: RouterNet) -> nx.DiGraph:
    """Each link weighted by the cost its sending router currently uses (after hysteresis)."""
    used = nx.DiGraph()
    used.add_nodes_from(net.graph.nodes)
    for a, b in net.graph.edges:
        for x, y in ((a, b), (b, a)):
            cost = net.routers[x].neighbour_cost(node_id(y))
            if cost is not None:
                used.add_edge(x, y, latency=cost / 1_000_000)
    return used


def assert_optimal(net: RouterNet) -> None:
    """Every route is a shortest path by the link costs the routers use, and within the
    hysteresis band of a shortest path by the true latencies."""
    used = costs_in_use(net)
    by_cost = dict(nx.all_pairs_dijkstra_path_length(used, weight="latency"))
    truth = dict(nx.all_pairs_dijkstra_path_length(net.graph, weight="latency"))
    band = net.config.cost_hysteresis
    floor = net.config.cost_floor_us / 1_000_000
    for src in net.graph.nodes:
        for dst in net.graph.nodes:
            if src == dst or dst not in truth[src]:
                continue
            path = net.path(src, dst)
            assert path is not None, f"{src} has no route to {dst}"
            cost = sum(used.edges[a, b]["latency"] for a, b in itertools.pairwise(path))
            assert abs(cost - by_cost[src][dst]) <= 1e-6 * len(path), (
                f"{src}->{dst}: {path} costs {cost}, shortest by cost {by_cost[src][dst]}")
            true = net.path_latency(path)
            slack = (len(path) - 1) * floor + band * true + 1e-6 * len(path)
            assert true <= truth[src][dst] * (1 + band) + slack, (
                f"{src}->{dst}: {path} takes {true}, shortest {truth[src][dst]}")
