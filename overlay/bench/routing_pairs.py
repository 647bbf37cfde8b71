"""Per-pair route results, the stretch CDF and one example route, for ``--json`` and plots.

Why a module of its own: :mod:`overlay.bench.routing` runs the phases; this one
turns the routers' tables into the figures people draw (a stretch CDF, one route
on the map) without growing the phase code.

Bounded output: a run of N nodes has N(N-1) pairs (10^8 at 10,000 nodes), so
per-pair results are kept only when asked for (``BenchConfig.pairs``, the
``--pairs`` flag), and then every pair up to :data:`MAX_PAIRS`, beyond that a
seeded uniform sample of about that many (``pairs_sampled`` says so).  The CDF
is always there and always :data:`CDF_POINTS` points long, computed from every
pair's stretch.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from overlay.ids import NodeId
from overlay.net.node import Node

MAX_PAIRS = 100_000
CDF_POINTS = 101


@dataclass
class PairSink:
    """Collects per-pair results (all, or a seeded sample) while routes are checked."""

    keep_probability: float
    rng: random.Random
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def for_pairs(cls, pairs: int, seed: int) -> PairSink:
        """A sink for a check of ``pairs`` pairs: keeps about :data:`MAX_PAIRS` of them."""
        return cls(min(1.0, MAX_PAIRS / pairs) if pairs else 1.0, random.Random(f"pairs/{seed}"))

    @property
    def sampled(self) -> bool:
        return self.keep_probability < 1.0

    def add(self, src: int, dst: int, route: float | None, shortest: float, hops: int) -> None:
        if self.keep_probability < 1.0 and self.rng.random() >= self.keep_probability:
            return
        self.rows.append({
            "source": src, "destination": dst,
            "route_latency_s": None if route is None else round(route, 9),
            "shortest_latency_s": round(shortest, 9),
            "stretch": None if route is None else round(route / shortest, 6),
            "hops": None if route is None else hops,
        })


def stretch_cdf(stretches: list[float]) -> list[list[float]]:
    """``[stretch, share of pairs with at most that stretch]`` at evenly spaced shares
    (0%, 1%, ..., 100%), from sorted ``stretches``; empty without any."""
    if not stretches:
        return []
    n = len(stretches)
    points = []
    for i in range(CDF_POINTS):
        share = i / (CDF_POINTS - 1)
        points.append([round(stretches[min(n - 1, int(share * (n - 1)))], 6), round(share, 4)])
    return points


def route_path(nodes: list[Node], index_of: dict[NodeId, int], src: int, dst: int) -> list[int]:
    """The nodes a packet from ``src`` to ``dst`` crosses, by the routers' next hops
    (stops at a missing route or a loop)."""
    path = [src]
    target = nodes[dst].node_id
    while path[-1] != dst and len(path) <= len(nodes):
        hop = nodes[path[-1]].router.next_hop(target)
        if hop is None or hop not in index_of or index_of[hop] in path:
            break
        path.append(index_of[hop])
    return path


def example_route(graph: nx.Graph[int], nodes: list[Node],
                  index_of: dict[NodeId, int]) -> dict[str, Any]:
    """One route worth drawing: between the two nodes farthest apart by latency from
    node 0's farthest node (a cheap diameter estimate), as routed and as the shortest."""
    far = nx.single_source_dijkstra_path_length(graph, 0, weight="latency")
    src = max(far, key=lambda v: (far[v], -v))
    lengths: dict[int, float] = nx.single_source_dijkstra_path_length(graph, src,
                                                                      weight="latency")
    dst = max(lengths, key=lambda v: (lengths[v], -v))
    shortest: list[int] = nx.dijkstra_path(graph, src, dst, weight="latency")
    routed = route_path(nodes, index_of, src, dst)
    latency = sum(graph.edges[a, b]["latency"] for a, b in itertools.pairwise(routed))
    return {"source": src, "destination": dst, "path": routed,
            "route_latency_s": round(latency, 9) if routed[-1] == dst else None,
            "shortest_path": shortest, "shortest_latency_s": round(lengths[dst], 9)}
