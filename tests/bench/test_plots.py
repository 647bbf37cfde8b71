"""Benchmark pictures: real PNGs of the expected size, and one clear error without matplotlib."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from overlay.bench import plots
from overlay.errors import ConfigError
from tests.bench.test_transport_bench import png_size


def transport_report() -> dict[str, object]:
    def figures(rate: float, rtt: float) -> dict[str, float]:
        return {"goodput_msgs_s": rate, "goodput_mb_s": rate / 1000, "rtt_p50_ms": rtt,
                "rtt_p99_ms": 2 * rtt}

    hops = [{"relays": relays, "overlay": figures(5000 / (relays + 1), 0.3 * (relays + 1)),
             "baseline": figures(10000 / (relays + 1), 0.1 * (relays + 1)),
             "goodput_ratio": 0.5} for relays in (0, 1, 3)]
    return {"mode": "in-process", "size": 1024, "count": 10, "pings": 1, "hops": hops}


def test_transport_picture_is_a_png_of_the_stated_size(tmp_path: Path) -> None:
    [path] = plots.transport(transport_report(), tmp_path / "new")
    assert path == tmp_path / "new" / "transport.png"
    assert png_size(path) == (int(plots.SIZE_INCHES[0] * plots.DPI),
                              int(plots.SIZE_INCHES[1] * plots.DPI))


def test_an_unwritable_directory_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot create"):
        plots.transport(transport_report(), blocker / "sub")


def test_without_matplotlib_the_error_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'matplotlib>=3.8'"):
        plots.check_available()


# --- the routing bench's pictures --------------------------------------------------------

def small_routing_run(**overrides: object) -> tuple[dict[str, object], object]:
    """A 20-node run with one failed link (one that carries traffic, with this seed) and the
    timeline, as ``--plot`` runs it."""
    import trio
    import trio.testing

    from overlay.bench import routing
    from overlay.sim import topology

    settings: dict[str, object] = {"nodes": 20, "seed": 2, "fail_links": 1, "measure": 1.0,
                                   "timeline": True, "pairs": True, **overrides}
    config = routing.BenchConfig(**settings)  # type: ignore[arg-type]
    graph = topology.generate("waxman", 20, config.seed)
    report = trio.run(routing.run_on_graph, graph, "waxman", config,
                      clock=trio.testing.MockClock(autojump_threshold=0))
    return report.to_json(), graph


def test_routing_pictures_are_pngs_of_the_stated_sizes(tmp_path: Path) -> None:
    report, graph = small_routing_run()
    paths = plots.routing(report, graph, tmp_path)
    assert [p.name for p in paths] == ["routing-topology.png", "routing-stretch.png",
                                       "routing-reconvergence.png"]
    width = int(plots.SIZE_INCHES[0] * plots.DPI)
    assert png_size(paths[0]) == (width, int(plots.SIZE_INCHES[0] * 0.7 * plots.DPI))
    for path in paths[1:]:
        assert png_size(path) == (width, int(plots.SIZE_INCHES[1] * plots.DPI))


def test_the_routing_report_holds_what_the_pictures_draw() -> None:
    report, graph = small_routing_run()
    # Every pair (20 x 19 is far below the sampling limit), each with its figures.
    pairs = report["pair_results"]
    assert isinstance(pairs, list) and len(pairs) == 20 * 19 and not report["pairs_sampled"]
    assert {(p["source"], p["destination"]) for p in pairs} == {
        (s, d) for s in range(20) for d in range(20) if s != d}
    assert all(p["stretch"] >= 1.0 - 1e-9 and p["hops"] >= 1 for p in pairs)
    cdf = report["stretch_cdf"]
    assert isinstance(cdf, list) and len(cdf) == 101
    assert cdf[0][1] == 0.0 and cdf[-1] == [report["max_stretch"], 1.0]
    example = report["example_route"]
    assert isinstance(example, dict)
    assert example["path"][0] == example["source"] and example["path"][-1] == example["destination"]
    assert all(graph.has_edge(a, b) for a, b in itertools.pairwise(example["path"]))  # type: ignore[attr-defined]
    timeline = report["timeline"]
    assert isinstance(timeline, dict)
    optimal = dict(map(tuple, timeline["optimal"]))
    assert optimal[-1.0] == 1.0 and timeline["optimal"][-1][1] == 1.0  # before and after
    # The failure shows in both: packets lost in the failed link, routes broken by it.
    assert report["packets_delivered"] < report["packets_sent"]  # type: ignore[operator]
    assert min(share for _, share in timeline["delivered"]) < 1.0
    assert min(share for _, share in timeline["optimal"]) < 1.0


def test_without_a_failure_there_is_no_timeline_picture(tmp_path: Path) -> None:
    report, graph = small_routing_run(fail_links=0)
    assert report["timeline"] is None
    assert [p.name for p in plots.routing(report, graph, tmp_path)] == [
        "routing-topology.png", "routing-stretch.png"]


def test_a_graph_without_positions_is_drawn_with_a_seeded_layout(tmp_path: Path) -> None:
    import networkx as nx

    report, graph = small_routing_run(fail_links=0)
    bare = nx.Graph()
    bare.add_edges_from((a, b, d) for a, b, d in graph.edges(data=True))  # type: ignore[attr-defined]
    first = plots.routing(report, bare, tmp_path / "one")[0].read_bytes()
    second = plots.routing(report, bare, tmp_path / "two")[0].read_bytes()
    assert first == second  # the same layout each time


def test_per_pair_results_beyond_the_limit_are_a_seeded_sample() -> None:
    from overlay.bench.routing_pairs import MAX_PAIRS, PairSink

    def fill(n: int) -> PairSink:
        sink = PairSink.for_pairs(n * (n - 1), seed=1)
        for src in range(n):
            for dst in range(n):
                if src != dst:
                    sink.add(src, dst, 0.002, 0.001, 2)
        return sink

    small = fill(300)  # 89,700 pairs: all of them
    assert not small.sampled and len(small.rows) == 300 * 299
    large, again = fill(400), fill(400)  # 159,600 pairs: about MAX_PAIRS of them
    assert large.sampled and abs(len(large.rows) - MAX_PAIRS) < 0.01 * MAX_PAIRS
    assert large.rows == again.rows  # the same sample from the same seed
    assert large.rows[0]["stretch"] == 2.0


def test_a_run_with_crashed_nodes_has_a_timeline_over_the_survivors() -> None:
    report, _ = small_routing_run(fail_links=0, crash_nodes=1)
    timeline = report["timeline"]
    assert isinstance(timeline, dict)
    assert timeline["optimal"][0][1] == 1.0 and timeline["optimal"][-1][1] == 1.0
