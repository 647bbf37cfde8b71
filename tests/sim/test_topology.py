"""Topology generators and loaders: connected, seeded, with positive latencies."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.sim.topology import (
    KINDS,
    PROCESSING_DELAY,
    TopologyError,
    barabasi_albert,
    generate,
    grid,
    haversine_km,
    line,
    load,
    random_geometric,
    ring,
    shortest_latencies,
    waxman,
)

LONDON = (51.5074, -0.1278)
PARIS = (48.8566, 2.3522)


def check_topology(graph: nx.Graph[int], n: int) -> None:
    assert sorted(graph.nodes) == list(range(n))
    assert nx.is_connected(graph)
    for latency in latencies(graph):
        assert isinstance(latency, float) and latency > 0


def latencies(graph: nx.Graph[int]) -> list[float]:
    return [data["latency"] for _, _, data in graph.edges(data=True)]


def same_graph(a: nx.Graph[int], b: nx.Graph[int]) -> bool:
    return (list(a.nodes(data=True)) == list(b.nodes(data=True))
            and list(a.edges(data=True)) == list(b.edges(data=True)))


def mean_degree(graph: nx.Graph[int]) -> float:
    return 2 * graph.number_of_edges() / graph.number_of_nodes()


# --- generators ----------------------------------------------------------------------


def test_simple_shapes() -> None:
    assert sorted(line(5).edges) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert ring(5).number_of_edges() == 5 and ring(5).has_edge(0, 4)
    mesh = grid(3, 4, latency=0.002)
    assert mesh.number_of_edges() == 3 * 3 + 2 * 4
    assert mesh.has_edge(0, 1) and mesh.has_edge(0, 4) and not mesh.has_edge(3, 4)
    for graph, n in ((line(5), 5), (ring(5), 5), (mesh, 12)):
        check_topology(graph, n)
    assert set(latencies(mesh)) == {0.002}


@pytest.mark.parametrize("n", [2, 3, 10, 17, 100])
def test_generated_grid_has_exactly_n_nodes(n: int) -> None:
    graph = generate("grid", n, seed=0)
    check_topology(graph, n)
    rows = math.isqrt(n)
    cols = -(-n // rows)
    assert graph.has_edge(0, 1) == (cols > 1)
    assert graph.has_edge(0, cols) == (rows > 1 and cols < n)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 5, 60])
def test_every_kind_is_connected_and_reproducible(kind: str, n: int) -> None:
    graph = generate(kind, n, seed=42)
    check_topology(graph, n)
    assert same_graph(graph, generate(kind, n, seed=42))


@pytest.mark.parametrize("kind", ["geometric", "waxman", "ba"])
def test_random_kinds_depend_on_the_seed(kind: str) -> None:
    assert not same_graph(generate(kind, 50, seed=1), generate(kind, 50, seed=2))


def test_aliases() -> None:
    assert same_graph(generate("geometric", 30, 5), generate("random-geometric", 30, 5))
    assert same_graph(generate("ba", 30, 5), generate("barabasi-albert", 30, 5))


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(TopologyError, match="unknown topology 'star'; valid kinds: line, ring"):
        generate("star", 10, 0)


@pytest.mark.parametrize("call", [lambda: line(1), lambda: ring(0), lambda: grid(0, 3),
                                  lambda: line(5, latency=0), lambda: barabasi_albert(3, 0, m=3),
                                  lambda: random_geometric(10, 0, radius=-1),
                                  lambda: waxman(10, 0, beta=2)])
def test_bad_parameters_are_refused(call: Any) -> None:
    with pytest.raises(TopologyError):
        call()


@pytest.mark.parametrize(("n", "seeds"), [(100, range(10)), (1000, range(2))])
def test_geometric_mean_degree(n: int, seeds: range) -> None:
    degrees = [mean_degree(random_geometric(n, seed)) for seed in seeds]
    assert all(4.0 <= d <= 6.0 for d in degrees), degrees
    assert abs(statistics.mean(degrees) - 5.0) < 0.3


@pytest.mark.parametrize(("n", "seeds"), [(100, range(10)), (1000, range(2))])
def test_waxman_mean_degree(n: int, seeds: range) -> None:
    degrees = [mean_degree(waxman(n, seed)) for seed in seeds]
    assert all(3.4 <= d <= 4.7 for d in degrees), degrees
    assert abs(statistics.mean(degrees) - 4.0) < 0.3


def test_geometric_latency_is_fibre_distance_plus_the_hop_floor() -> None:
    graph = random_geometric(50, seed=3)
    for u, v, data in graph.edges(data=True):
        km = math.dist(graph.nodes[u]["pos"], graph.nodes[v]["pos"])
        assert data["latency"] == pytest.approx(km / 200_000 + PROCESSING_DELAY)
    # The default radius keeps edges regional, not continental.
    assert max(latencies(graph)) < 0.01


def test_barabasi_albert_latencies() -> None:
    graph = barabasi_albert(200, seed=9, m=2)
    assert graph.number_of_edges() == 2 * (200 - 2)
    drawn = latencies(graph)
    assert all(0.001 <= lat <= 0.050 for lat in drawn)
    assert len(set(drawn)) == len(drawn)


@given(kind=st.sampled_from(["geometric", "waxman", "ba", "grid"]),
       n=st.integers(min_value=2, max_value=40),
       seed=st.integers(min_value=0, max_value=2**32))
def test_any_seed_gives_a_connected_graph_with_positive_latencies(
    kind: str, n: int, seed: int,
) -> None:
    check_topology(generate(kind, n, seed), n)


def test_shortest_latencies_prefer_the_faster_detour() -> None:
    graph: nx.Graph[int] = nx.Graph()
    graph.add_edge(0, 1, latency=0.010)
    graph.add_edge(1, 2, latency=0.010)
    graph.add_edge(0, 2, latency=0.050)
    truth = shortest_latencies(graph)
    assert truth[0][2] == pytest.approx(0.020)
    assert truth[2][0] == pytest.approx(0.020)
    assert truth[1][1] == 0


# --- files ------------------------------------------------------------------------------


def cities() -> nx.Graph[str]:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_edge("lon", "par", latency=4.5)  # ms
    graph.add_edge("par", "ams", latency=6.0)
    graph.add_edge("ams", "lon", latency=5.25)
    return graph


def write_json(graph: nx.Graph[Any], path: Path, edges: str = "edges") -> Path:
    path.write_text(json.dumps(nx.node_link_data(graph, edges=edges)))
    return path


@pytest.mark.parametrize("suffix", [".graphml", ".gml", ".json"])
def test_round_trip_with_latencies_in_ms(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cities{suffix}"
    if suffix == ".graphml":
        nx.write_graphml(cities(), path)
    elif suffix == ".gml":
        nx.write_gml(cities(), path)
    else:
        write_json(cities(), path)
    graph = load(path, latency_unit="ms")
    check_topology(graph, 3)
    labels = {graph.nodes[i]["label"]: i for i in graph}
    assert labels == {"lon": 0, "par": 1, "ams": 2}  # file order
    assert graph.edges[labels["lon"], labels["par"]]["latency"] == pytest.approx(0.0045)
    assert graph.edges[labels["ams"], labels["lon"]]["latency"] == pytest.approx(0.00525)


def test_node_link_files_with_links_instead_of_edges(tmp_path: Path) -> None:
    graph = load(write_json(cities(), tmp_path / "old.json", edges="links"), latency_unit="ms")
    assert graph.number_of_edges() == 3


def test_haversine_london_paris() -> None:
    assert haversine_km(*LONDON, *PARIS) == pytest.approx(343.5, abs=1.0)
    assert haversine_km(*LONDON, *LONDON) == 0


@pytest.mark.parametrize(("lat", "lon"), [("latitude", "longitude"), ("Latitude", "Longitude"),
                                          ("lat", "lon")])
def test_coordinates_give_the_fibre_latency(tmp_path: Path, lat: str, lon: str) -> None:
    zoo: nx.Graph[str] = nx.Graph()
    zoo.add_node("n0", label="London", **{lat: LONDON[0], lon: LONDON[1]})
    zoo.add_node("n1", label="Paris", **{lat: PARIS[0], lon: PARIS[1]})
    zoo.add_node("n2", label="Paris too", **{lat: PARIS[0], lon: PARIS[1]})
    zoo.add_edge("n0", "n1", LinkLabel="10 Gbps")
    zoo.add_edge("n1", "n2")
    path = tmp_path / "zoo.graphml"
    nx.write_graphml(zoo, path)
    graph = load(path)
    check_topology(graph, 3)
    assert graph.nodes[0]["label"] == "London"  # the file's own label is kept
    # ~343.5 km of fibre: 1.72 ms, plus the 0.1 ms per-hop floor.
    assert graph.edges[0, 1]["latency"] == pytest.approx(0.00172 + PROCESSING_DELAY, abs=1e-5)
    assert graph.edges[1, 2]["latency"] == PROCESSING_DELAY  # co-located: the floor alone
    assert graph.edges[0, 1] == {"latency": graph.edges[0, 1]["latency"]}


def test_latency_attr_none_forces_coordinates(tmp_path: Path) -> None:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_node("a", lat=LONDON[0], lon=LONDON[1])
    graph.add_node("b", lat=PARIS[0], lon=PARIS[1])
    graph.add_edge("a", "b", latency=99.0)
    loaded = load(write_json(graph, tmp_path / "g.json"), latency_attr=None)
    assert loaded.edges[0, 1]["latency"] == pytest.approx(0.00182, abs=1e-5)
    assert load(tmp_path / "g.json").edges[0, 1]["latency"] == 99.0


def test_parallel_edges_keep_the_smallest_latency_and_self_loops_go(tmp_path: Path) -> None:
    multi: nx.MultiGraph[str] = nx.MultiGraph()
    multi.add_edge("a", "b", latency=0.03)
    multi.add_edge("a", "b", latency=0.01)
    multi.add_edge("b", "a", latency=0.02)
    multi.add_edge("b", "b", latency=0.5)
    for path in (tmp_path / "m.graphml", tmp_path / "m.json"):
        if path.suffix == ".graphml":
            nx.write_graphml(multi, path)
        else:
            write_json(multi, path)
        graph = load(path)
        assert list(graph.edges(data="latency")) == [(0, 1, 0.01)]


def test_directed_files_become_undirected(tmp_path: Path) -> None:
    directed: nx.DiGraph[str] = nx.DiGraph()
    directed.add_edge("a", "b", latency=0.02)
    directed.add_edge("b", "a", latency=0.01)
    directed.add_edge("b", "c", latency=0.03)
    graph = load(write_json(directed, tmp_path / "d.json"))
    assert sorted(graph.edges(data="latency")) == [(0, 1, 0.01), (1, 2, 0.03)]


def refusal(path: Path, **kwargs: Any) -> str:
    with pytest.raises(TopologyError) as info:
        load(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_refusals(tmp_path: Path) -> None:
    assert "no such file" in refusal(tmp_path / "missing.graphml")
    bad_type = tmp_path / "topo.csv"
    bad_type.write_text("a,b\n")
    assert "unknown topology file type '.csv'" in refusal(bad_type)
    for suffix, name in ((".graphml", "GraphML"), (".gml", "GML"), (".json", "node-link JSON")):
        garbage = tmp_path / f"garbage{suffix}"
        garbage.write_text("this is <not { a graph\n")
        message = refusal(garbage)
        assert str(garbage) in message and f"cannot parse as {name}" in message
    assert "unknown latency unit 'min'" in refusal(tmp_path / "x.json", latency_unit="min")


def test_refusals_about_the_graph(tmp_path: Path) -> None:
    def json_file(name: str, graph: nx.Graph[str]) -> Path:
        return write_json(graph, tmp_path / f"{name}.json")

    no_latency: nx.Graph[str] = nx.Graph()
    no_latency.add_node("a", lat=1.0, lon=2.0)
    no_latency.add_edge("a", "b")
    message = refusal(json_file("nolat", no_latency))
    assert "nolat.json" in message
    assert "edge a-b has no 'latency' attribute and node b has no coordinates" in message

    for value in ("fast", 0, -3, float("nan"), True):
        bad: nx.Graph[str] = nx.Graph()
        bad.add_edge("a", "b", latency=value)
        path = tmp_path / "bad.graphml"
        nx.write_graphml(bad, path)
        assert "not a positive number" in refusal(path), value

    far_away: nx.Graph[str] = nx.Graph()
    far_away.add_node("a", lat=95.0, lon=0.0)
    far_away.add_node("b", lat=0.0, lon=0.0)
    far_away.add_edge("a", "b")
    assert "node a has invalid coordinates" in refusal(json_file("far", far_away))

    split: nx.Graph[str] = nx.Graph()
    split.add_edge("a", "b", latency=1.0)
    split.add_edge("c", "d", latency=1.0)
    split.add_node("e")
    assert "the graph is disconnected (3 components)" in refusal(json_file("split", split))

    lonely: nx.Graph[str] = nx.Graph()
    lonely.add_node("a")
    assert "at least 2 nodes, found 1" in refusal(json_file("lonely", lonely))
