"""Routing bench: when routes have converged, and how good they are against Dijkstra.

Split from :mod:`overlay.bench.routing` (which runs the phases) by job: this
module judges the routers' tables (every node's next hops followed to every
destination, compared with networkx's shortest paths on the true or expected
latencies), for the convergence, steady-state and failure phases alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import networkx as nx
import trio

from overlay.bench.progress import Progress
from overlay.bench.routing_pairs import PairSink
from overlay.ids import NodeId
from overlay.net.node import Node
from overlay.proto.link import LinkConfig

if TYPE_CHECKING:
    from overlay.bench.routing import BenchConfig

METRIC_RESOLUTION = 1e-6  # seconds: link costs are whole microseconds
FULL_CHECK_NODES = 2_000
"""Up to this many nodes, routes to every destination are checked by default..."""
SAMPLED_DESTINATIONS = 250
"""...beyond, to a seeded sample of this many (from every source: each destination
costs one Dijkstra and one walk of every node's next hops, so checking all 10,000
of a 10,000-node run would take longer than converging)."""


def checked_destinations(n: int, wanted: int | None, seed: int) -> list[int] | None:
    """The destinations whose routes a check follows: None for all of them.

    ``wanted``: how many (0: all; None: all up to :data:`FULL_CHECK_NODES` nodes,
    :data:`SAMPLED_DESTINATIONS` beyond); a seeded uniform sample when fewer than ``n``.
    """
    if wanted is None:
        wanted = 0 if n <= FULL_CHECK_NODES else SAMPLED_DESTINATIONS
    if wanted == 0 or wanted >= n:
        return None
    return sorted(random.Random(f"check/{seed}").sample(range(n), wanted))


def expected_latencies(graph: nx.Graph[int], jitter: float) -> nx.Graph[int]:
    """The graph with each link's *expected* one-way delay: latency plus mean jitter.

    Jitter is uniform in [0, jitter] per message, so a hop costs jitter/2 more on
    average; the lowest-latency route under noise is the shortest path by this.
    """
    if jitter <= 0:
        return graph
    expected = graph.copy()
    for a, b in expected.edges:
        expected.edges[a, b]["latency"] += jitter / 2
    return expected


def complete_share(nodes: list[Node]) -> float:
    """Share of (live node, live destination) pairs with a route, and none to the dead."""
    n = len(nodes)
    if n < 2:
        return 1.0
    have = sum(node.router.route_count for node in nodes)
    return have / (n * (n - 1))


def last_change(nodes: list[Node]) -> float:
    """When any node last changed a route's next hop (metrics may still wobble with noise)."""
    return max(node.router.last_next_hop_change for node in nodes)


def next_hop_changes(nodes: list[Node]) -> int:
    return sum(node.router.counters.next_hop_changes for node in nodes)


async def wait_converged(nodes: list[Node], *, start: float, config: BenchConfig,
                          progress: Progress, phase: str) -> float | None:
    """Poll until every route exists and none changed for ``quiet`` s; the last change time."""
    # With RTT noise, link costs settle only once each link's window of RTT samples
    # has filled, so routes are judged stable only after that long without change.
    quiet = config.quiet
    if config.jitter > 0:
        quiet = max(quiet, (LinkConfig().cost_window + 2) * config.hello_interval)
    step = min(0.1, quiet / 4)
    while trio.current_time() - start < config.max_virtual:
        await trio.sleep(step)
        share = complete_share(nodes)
        progress(phase, share)
        now = trio.current_time()
        if share >= 1.0 and now - last_change(nodes) >= quiet:
            return last_change(nodes)
    return None


@dataclass
class Quality:
    pairs: int = 0
    optimal_share: float = 0.0
    mean_stretch: float = 0.0
    p99_stretch: float = 0.0
    max_stretch: float = 0.0
    unreachable: int = 0
    loops: int = 0
    stretches: list[float] = field(default_factory=list)


def route_quality(graph: nx.Graph[int], nodes: list[Node], index_of: dict[NodeId, int], *,
                   sink: PairSink | None = None,
                   truths: dict[int, dict[int, float]] | None = None,
                   destinations: list[int] | None = None) -> Quality:
    """Follow every node's next hops to every destination (or to ``destinations``, from
    every source); compare with Dijkstra (or the distances ``truths`` caches, by
    destination)."""
    n = len(nodes)
    stretches: list[float] = []
    optimal = unreachable = loops = 0
    checked = range(n) if destinations is None else destinations
    for dst in checked:
        if truths is not None and dst in truths:
            truth = truths[dst]
        else:
            truth = nx.single_source_dijkstra_path_length(graph, dst, weight="latency")
            if truths is not None:
                truths[dst] = truth
        dst_id = nodes[dst].node_id
        route_latency: dict[int, float | None] = {dst: 0.0}
        route_hops: dict[int, int] = {dst: 0}
        for src in range(n):
            walk: list[int] = []
            here = src
            while here not in route_latency:
                if here in walk:
                    loops += 1
                    for w in walk:
                        route_latency[w] = None
                    break
                walk.append(here)
                hop = nodes[here].router.next_hop(dst_id)
                if hop is None or hop not in index_of:
                    route_latency[here] = None
                    walk.pop()
                    for w in walk:
                        route_latency[w] = None
                    walk = []
                    break
                here = index_of[hop]
            tail = route_latency.get(here)
            for w in reversed(walk):
                nxt = index_of[nodes[w].router.next_hop(dst_id)]  # type: ignore[index]
                # A next hop over a link the graph no longer has (failed, not yet
                # detected) is a broken route, not a route.
                tail = (None if tail is None or not graph.has_edge(w, nxt)
                        else tail + graph.edges[w, nxt]["latency"])
                route_latency[w] = tail
                route_hops[w] = route_hops.get(nxt, 0) + 1
                here = w
        for src in range(n):
            if src == dst:
                continue
            got = route_latency.get(src)
            if sink is not None:
                sink.add(src, dst, got, truth[src], route_hops.get(src, 0))
            if got is None:
                unreachable += 1
                continue
            stretch = got / truth[src]
            stretches.append(stretch)
            # Metrics are whole microseconds: a route within 1 us per hop of the
            # shortest is as short as the routers can tell.
            if got - truth[src] <= METRIC_RESOLUTION * route_hops.get(src, 1) + 1e-12:
                optimal += 1
    pairs = len(checked) * (n - 1)
    stretches.sort()
    return Quality(
        pairs=pairs,
        optimal_share=round(optimal / pairs, 6) if pairs else 1.0,
        mean_stretch=round(sum(stretches) / len(stretches), 6) if stretches else 0.0,
        p99_stretch=round(stretches[int(0.99 * (len(stretches) - 1))], 6) if stretches else 0.0,
        max_stretch=round(stretches[-1], 6) if stretches else 0.0,
        unreachable=unreachable,
        loops=loops,
        stretches=stretches,
    )
