"""Topologies for the simulator: undirected networkx graphs whose edges carry a ``latency``.

Every graph this module returns has nodes ``0 .. n-1``, every edge an attribute
``latency`` (one-way, seconds, > 0), and is connected.  Generators are seeded:
the same arguments give the same graph, node for node and edge for edge (edges
are inserted in sorted order, so even iteration order is reproducible).

Geometry
--------
The geometric generators place nodes uniformly in a square 4,000 km across (a
continent) and give each edge the time light takes through fibre over the
straight distance (200,000 km/s) plus a 0.1 ms per-hop floor for the routers
at its ends; node attribute ``pos`` holds the ``(x, y)`` position in km.
Graphs loaded from files with coordinates get the same formula over the
great-circle distance.

Random geometric and Waxman graphs at a mean degree of 4 to 6 are seldom
connected (isolated nodes are common below degree ~ln n).  Rather than retry
until luck strikes, which would bias the sample towards denser graphs, the
components are joined by the fewest and shortest extra edges: a minimum
spanning tree over the components, where two components are as far apart as
their closest pair of nodes (k components: k-1 extra edges, each between the
nearest nodes).  This raises the mean degree by 2(k-1)/n, a few hundredths.

Measured mean degrees, joining edges included (seeds 0-19; mean, min-max;
joining edges added on average)::

    random_geometric (target 5)   n=100: 5.03 (4.60-5.50), 3.4    n=1000: 5.03 (4.82-5.28), 21
    waxman, alpha 0.1 (target 4)  n=100: 4.04 (3.58-4.48), 2.6    n=1000: 4.06 (3.93-4.16), 30

Both take about 0.35 s at n=1000 (pure Python, O(n^2) pair loops).

One job, graphs with latencies on their edges: generated or read from a file,
they end as the same ``nx.Graph[int]`` through the same checks; that is why the
loaders live beside the generators.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from overlay.errors import OverlayError

AREA_KM = 4000.0  # side of the square the geometric generators place nodes in
FIBRE_KM_PER_S = 200_000.0  # light in glass, about 2/3 c
PROCESSING_DELAY = 0.0001  # per hop, seconds: keeps co-located nodes at a positive latency
EARTH_RADIUS_KM = 6371.0

GEOMETRIC_MEAN_DEGREE = 5.0
WAXMAN_MEAN_DEGREE = 4.0
WAXMAN_ALPHA = 0.1

LATENCY_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
COORDINATE_KEYS = (("latitude", "longitude"), ("Latitude", "Longitude"), ("lat", "lon"))


class TopologyError(OverlayError):
    """A topology cannot be generated or loaded; the message is one line fit for a user."""


# --- simple shapes ---------------------------------------------------------------


def line(n: int, latency: float = 0.01) -> nx.Graph[int]:
    """0 - 1 - ... - n-1, every hop ``latency``: the worst case for convergence time."""
    _check_size(n)
    return _with_latency(nx.path_graph(n), _constant(latency))


def ring(n: int, latency: float = 0.01) -> nx.Graph[int]:
    """A line closed into a cycle: two disjoint paths between any pair, for failover."""
    _check_size(n)
    return _with_latency(nx.cycle_graph(n), _constant(latency))


def grid(rows: int, cols: int, latency: float = 0.01) -> nx.Graph[int]:
    """A rows x cols mesh, node ``r * cols + c`` at row r, column c: many equal-cost paths."""
    if rows < 1 or cols < 1:
        raise TopologyError(f"a grid needs at least one row and one column, got {rows}x{cols}")
    _check_size(rows * cols)
    mesh: nx.Graph[int] = nx.Graph()
    mesh.add_nodes_from(range(rows * cols))
    for r in range(rows):
        for c in range(cols):
            if c + 1 < cols:
                mesh.add_edge(r * cols + c, r * cols + c + 1)
            if r + 1 < rows:
                mesh.add_edge(r * cols + c, (r + 1) * cols + c)
    return _with_latency(mesh, _constant(latency))


# --- random graphs -----------------------------------------------------------------


def random_geometric(n: int, seed: int, radius: float | None = None) -> nx.Graph[int]:
    """Nodes uniform in the continental square, joined when at most ``radius`` km apart.

    ``radius=None`` picks the radius whose expected mean degree is 5, allowing
    for the square's edges (where a node's disc sticks out of the square).
    """
    _check_size(n)
    if radius is None:
        radius = AREA_KM * _geometric_radius(n, GEOMETRIC_MEAN_DEGREE)
    elif not radius > 0:
        raise TopologyError(f"the radius must be positive, got {radius}")
    rng = random.Random(seed)
    pos = {v: (rng.uniform(0, AREA_KM), rng.uniform(0, AREA_KM)) for v in range(n)}
    edges = nx.random_geometric_graph(n, radius, pos=pos).edges()
    return _geometric(pos, edges)


def waxman(n: int, seed: int, *, alpha: float = WAXMAN_ALPHA, beta: float | None = None,
           mean_degree: float = WAXMAN_MEAN_DEGREE) -> nx.Graph[int]:
    """Waxman's model: nodes at distance d are joined with probability beta * exp(-d / (alpha L)).

    L is the largest distance between two nodes (the Waxman-1 model of
    ``networkx.waxman_graph``).  ``alpha`` sets how local edges are (0.1: mostly
    near neighbours, a few long hauls); ``beta`` sets the density.  By default
    beta is fitted to the drawn positions so that the expected mean degree is
    exactly ``mean_degree`` whatever n (capped at 1, so below ~50 nodes the
    graph is sparser and leans on the joining edges).  That fit needs the
    positions before the edges, which ``networkx.waxman_graph`` does not
    allow, hence the edge rule is applied here: with L fixed at its limit
    sqrt(2) x side, small graphs (whose L is shorter) came out a fifth too sparse.
    """
    _check_size(n)
    if not alpha > 0:
        raise TopologyError(f"alpha must be positive, got {alpha}")
    if beta is not None and not 0 < beta <= 1:
        raise TopologyError(f"beta must be in (0, 1], got {beta}")
    if not mean_degree > 0:
        raise TopologyError(f"the mean degree must be positive, got {mean_degree}")
    rng = random.Random(seed)
    pos = {v: (rng.uniform(0, AREA_KM), rng.uniform(0, AREA_KM)) for v in range(n)}

    def pairs() -> Iterator[tuple[int, int]]:  # three passes, not n^2 / 2 tuples in memory
        return itertools.combinations(range(n), 2)

    largest = max(math.dist(pos[u], pos[v]) for u, v in pairs()) or 1.0
    scale = alpha * largest
    if beta is None:
        expected_edges = math.fsum(math.exp(-math.dist(pos[u], pos[v]) / scale) for u, v in pairs())
        beta = min(1.0, mean_degree * n / (2 * expected_edges))
    edges = [(u, v) for u, v in pairs()
             if rng.random() < beta * math.exp(-math.dist(pos[u], pos[v]) / scale)]
    return _geometric(pos, edges)


def barabasi_albert(n: int, seed: int, m: int = 2) -> nx.Graph[int]:
    """Preferential attachment (hubs, heavy-tailed degrees), latencies uniform in 1-50 ms.

    The model has no geometry, so latencies are drawn per edge (in sorted edge
    order) from the same seeded generator; triangle inequality need not hold.
    """
    if not 1 <= m < n:
        raise TopologyError(f"Barabasi-Albert needs 1 <= m < n, got m={m}, n={n}")
    rng = random.Random(seed)
    raw = nx.barabasi_albert_graph(n, m, seed=rng)
    return _with_latency(raw, lambda u, v: rng.uniform(0.001, 0.050))


# --- dispatch -----------------------------------------------------------------------


def _grid_of(n: int, seed: int) -> nx.Graph[int]:
    """The first n nodes (row-major) of a grid, rows = floor(sqrt n), cols = ceil(n / rows).

    The partial last row hangs off the row above, so the mesh stays connected.
    """
    _check_size(n)
    rows = math.isqrt(n)
    cols = -(-n // rows)
    mesh = grid(rows, cols)
    mesh.remove_nodes_from(range(n, rows * cols))
    return mesh


def _barabasi_albert_of(n: int, seed: int) -> nx.Graph[int]:
    """m = 2, or 1 for two nodes (where m = 2 is impossible)."""
    return barabasi_albert(n, seed, m=min(2, n - 1))


GENERATORS: dict[str, Callable[[int, int], nx.Graph[int]]] = {
    "line": lambda n, seed: line(n),
    "ring": lambda n, seed: ring(n),
    "grid": _grid_of,
    "geometric": random_geometric,
    "random-geometric": random_geometric,
    "waxman": waxman,
    "ba": _barabasi_albert_of,
    "barabasi-albert": _barabasi_albert_of,
}
KINDS = tuple(GENERATORS)


def generate(kind: str, n: int, seed: int) -> nx.Graph[int]:
    """The topology ``kind`` (one of :data:`KINDS`) with ``n`` nodes.

    line, ring and grid have a constant 10 ms per hop and ignore the seed.
    """
    generator = GENERATORS.get(kind)
    if generator is None:
        raise TopologyError(f"unknown topology {kind!r}; valid kinds: {', '.join(KINDS)}")
    return generator(n, seed)


# --- files ----------------------------------------------------------------------------


def load(path: Path, *, latency_attr: str | None = "latency",
         latency_unit: str = "s") -> nx.Graph[int]:
    """Read GraphML, GML or node-link JSON; edge latency from ``latency_attr`` or from coordinates.

    An edge without the attribute (or every edge, when ``latency_attr`` is None)
    gets the fibre latency of the great-circle distance between its ends, from
    node attributes latitude/longitude, Latitude/Longitude (Internet Topology
    Zoo) or lat/lon, in degrees.  Nodes become ``0 .. n-1`` in file order; the
    original name is kept in node attribute ``label`` unless the file already
    has one (GML and Topology Zoo files do).  Self-loops are dropped, parallel
    or opposite directed edges collapse to the smallest latency, and only
    ``latency`` is kept on edges.
    """
    scale = LATENCY_UNITS.get(latency_unit)
    if scale is None:
        raise TopologyError(
            f"unknown latency unit {latency_unit!r}; valid units: {', '.join(LATENCY_UNITS)}")
    raw = _read(path)
    index = {node: i for i, node in enumerate(raw.nodes)}
    graph: nx.Graph[int] = nx.Graph()
    for node, i in index.items():
        data = dict(raw.nodes[node])
        data.setdefault("label", node)
        graph.add_node(i, **data)
    if graph.number_of_nodes() < 2:
        raise TopologyError(f"{path}: a topology needs at least 2 nodes, "
                            f"found {graph.number_of_nodes()}")
    for u, v, data in raw.edges(data=True):
        if u == v:
            continue
        latency = _edge_latency(path, raw, (u, v), data, latency_attr=latency_attr, scale=scale)
        a, b = index[u], index[v]
        if not graph.has_edge(a, b) or latency < graph.edges[a, b]["latency"]:
            graph.add_edge(a, b, latency=latency)
    components = nx.number_connected_components(graph)
    if components > 1:
        raise TopologyError(f"{path}: the graph is disconnected ({components} components)")
    return graph


def _read(path: Path) -> nx.Graph[Any]:
    readers: dict[str, tuple[str, Callable[[Path], nx.Graph[Any]]]] = {
        ".graphml": ("GraphML", nx.read_graphml),
        # label=None: name nodes by their GML id; labels need not be unique in the wild.
        ".gml": ("GML", lambda p: nx.read_gml(p, label=None)),  # type: ignore[call-overload]
        ".json": ("node-link JSON", _read_node_link),
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise TopologyError(f"{path}: unknown topology file type {path.suffix!r}; "
                            f"expected {', '.join(readers)}")
    if not path.is_file():
        raise TopologyError(f"{path}: no such file")
    name, read = reader
    try:
        return read(path)
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            SyntaxError, nx.NetworkXException) as exc:  # ElementTree.ParseError is a SyntaxError
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise TopologyError(f"{path}: cannot parse as {name}: {detail}") from None


def _read_node_link(path: Path) -> nx.Graph[Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "nodes" not in data:
        raise ValueError("expected an object with 'nodes' and 'edges' (or 'links')")
    edges = "edges" if "edges" in data else "links"
    return nx.node_link_graph(data, edges=edges)


def _edge_latency(path: Path, raw: nx.Graph[Any], edge: tuple[Hashable, Hashable],
                  data: Mapping[str, Any], *, latency_attr: str | None, scale: float) -> float:
    u, v = edge
    if latency_attr is not None and latency_attr in data:
        value = data[latency_attr]
        try:
            if isinstance(value, bool):
                raise ValueError
            latency = float(value) * scale
        except (TypeError, ValueError):
            latency = math.nan
        if not (math.isfinite(latency) and latency > 0):
            raise TopologyError(f"{path}: edge {u}-{v} has {latency_attr}={value!r}, "
                                "not a positive number")
        return latency
    ends = []
    for node in (u, v):
        where = _coordinates(path, node, raw.nodes[node])
        if where is None:
            missing = f"no {latency_attr!r} attribute and " if latency_attr is not None else ""
            raise TopologyError(f"{path}: edge {u}-{v} has {missing}node {node} has no "
                                "coordinates (latitude/longitude) to derive a latency from")
        ends.append(where)
    (lat1, lon1), (lat2, lon2) = ends
    return fibre_latency(haversine_km(lat1, lon1, lat2, lon2))


def _coordinates(path: Path, node: Hashable,
                 data: Mapping[str, Any]) -> tuple[float, float] | None:
    for lat_key, lon_key in COORDINATE_KEYS:
        if lat_key in data and lon_key in data:
            try:
                lat, lon = float(data[lat_key]), float(data[lon_key])
            except (TypeError, ValueError):
                lat = lon = math.nan
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise TopologyError(f"{path}: node {node} has invalid coordinates "
                                    f"{lat_key}={data[lat_key]!r}, {lon_key}={data[lon_key]!r}")
            return lat, lon
    return None


# --- latency and ground truth -----------------------------------------------------------


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def fibre_latency(distance_km: float) -> float:
    """One-way latency in seconds over ``distance_km`` of fibre, plus the per-hop floor."""
    return distance_km / FIBRE_KM_PER_S + PROCESSING_DELAY


def shortest_latencies(graph: nx.Graph[int]) -> dict[int, dict[int, float]]:
    """All-pairs lowest total latency (Dijkstra): the ground truth routing is measured against."""
    return dict(nx.all_pairs_dijkstra_path_length(graph, weight="latency"))


# --- internals -------------------------------------------------------------------------


def _check_size(n: int) -> None:
    if n < 2:
        raise TopologyError(f"a topology needs at least 2 nodes, got {n}")


def _constant(latency: float) -> Callable[[int, int], float]:
    if not (math.isfinite(latency) and latency > 0):
        raise TopologyError(f"latency must be a positive number of seconds, got {latency}")
    return lambda u, v: latency


def _with_latency(raw: nx.Graph[Any], latency: Callable[[int, int], float]) -> nx.Graph[int]:
    """A fresh graph on 0..n-1 with sorted edges, each given ``latency(u, v)``."""
    graph: nx.Graph[int] = nx.Graph()
    graph.add_nodes_from(range(raw.number_of_nodes()))
    for u, v in sorted((min(u, v), max(u, v)) for u, v in raw.edges()):
        graph.add_edge(u, v, latency=latency(u, v))
    return graph


def _geometric(pos: dict[int, tuple[float, float]],
               edges: Iterable[tuple[int, int]]) -> nx.Graph[int]:
    raw: nx.Graph[int] = nx.Graph()
    raw.add_nodes_from(pos)
    raw.add_edges_from(edges)
    raw.add_edges_from(_joining_edges(raw, pos))
    graph = _with_latency(raw, lambda u, v: fibre_latency(math.dist(pos[u], pos[v])))
    nx.set_node_attributes(graph, pos, "pos")
    return graph


def _joining_edges(graph: nx.Graph[int],
                   pos: dict[int, tuple[float, float]]) -> list[tuple[int, int]]:
    """The fewest, shortest edges that connect ``graph`` (see the module docstring).

    Kruskal over candidate pairs between each non-largest component and every
    node outside it: O((n - giant) * n) distances, cheap when one component
    holds most nodes, as it does at these densities.
    """
    components = sorted(nx.connected_components(graph), key=lambda c: (-len(c), min(c)))
    if len(components) <= 1:
        return []
    owner = {v: i for i, comp in enumerate(components) for v in comp}
    candidates = []
    for i, comp in enumerate(components[1:], start=1):
        members = sorted(comp)
        for u in members:
            for v in range(len(pos)):
                if owner[v] != i:
                    candidates.append((math.dist(pos[u], pos[v]), min(u, v), max(u, v)))
    candidates.sort()
    parent = list(range(len(components)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    added: list[tuple[int, int]] = []
    for _, u, v in candidates:
        ru, rv = root(owner[u]), root(owner[v])
        if ru != rv:
            parent[ru] = rv
            added.append((u, v))
            if len(added) == len(components) - 1:
                break
    return added


def _geometric_radius(n: int, mean_degree: float) -> float:
    """Radius (unit square) at which n uniform nodes expect ``mean_degree`` neighbours.

    Two uniform points in the unit square are within r <= 1 with probability
    pi r^2 - 8 r^3 / 3 + r^4 / 2 (the disc clipped by the square's edges).
    """
    def expected(r: float) -> float:
        return (n - 1) * (math.pi * r * r - 8 * r**3 / 3 + r**4 / 2)

    if expected(1.0) <= mean_degree:
        return math.sqrt(2)  # too few nodes: everyone reaches everyone
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if expected(mid) < mean_degree:
            low = mid
        else:
            high = mid
    return high
