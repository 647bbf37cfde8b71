"""Routing at scale in the simulator: real nodes, emulated links, networkx ground truth.

Each test prints its seed; a failure replays exactly from it.
"""

from __future__ import annotations

import gc
import json
import re
import subprocess
from pathlib import Path

import pytest
import trio
import trio.testing

from overlay.bench.routing import BenchConfig, RoutingReport, run, run_on_graph
from overlay.bench.routing_quality import (
    FULL_CHECK_NODES,
    SAMPLED_DESTINATIONS,
    checked_destinations,
)
from overlay.cli.bench_render import render_routing
from overlay.errors import ConfigError
from overlay.sim import topology
from tests.bench.test_transport_bench import png_size
from tests.procs import overlay_command


def simulate(kind: str, nodes: int, config: BenchConfig) -> RoutingReport:
    print(f"topology={kind} nodes={nodes} seed={config.seed}")
    graph = topology.generate(kind, nodes, config.seed)
    return trio.run(run_on_graph, graph, kind, config,
                    clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("kind", ["waxman", "geometric"])
def test_100_nodes_reach_everyone_on_optimal_loop_free_routes(kind: str, seed: int) -> None:
    report = simulate(kind, 100, BenchConfig(seed=seed, measure=2.0))
    assert report.converged, report.notes
    assert report.unreachable_pairs == 0
    assert report.optimal_share >= 0.99
    assert report.mean_stretch <= 1.01
    assert report.loops_in_tables == 0
    assert report.steady_next_hop_changes == 0


def test_link_failures_and_crashes_under_traffic_never_loop_and_reconverge_in_time() -> None:
    config = BenchConfig(seed=7, fail_links=4, crash_nodes=2, measure=1.0)
    report = simulate("waxman", 80, config)
    assert report.failed_links == 4 and report.crashed_nodes == 2
    assert report.looping_packets == 0, "every traced packet's path must be loop-free"
    assert report.loops_in_tables == 0
    assert report.packets_sent > 1000 and report.packets_delivered > 0.8 * report.packets_sent
    dead_interval = config.hello_interval * config.dead_after
    assert report.reconvergence_s is not None
    assert report.reconvergence_s <= dead_interval + 2 * config.update_interval
    assert report.optimal_share_after is not None and report.optimal_share_after >= 0.99


def test_runs_replay_exactly_from_their_seed() -> None:
    # Same figures and the same trace: every byte delivered at the same instant in the
    # same order (without seeded scheduling the figures agree but the traces do not).
    config = BenchConfig(seed=11, fail_links=2, measure=1.0, digest=True)
    first, second = simulate("ba", 40, config), simulate("ba", 40, config)
    for report in (first, second):
        report.wall_s = report.peak_rss_mb = 0.0
        report.convergence_wall_s = None
    assert first.trace_digest is not None
    assert first == second


def test_the_command_writes_pairs_and_pictures_and_shows_both_clocks(tmp_path: Path) -> None:
    # `overlay bench routing` as a user runs it, small: per-pair JSON, three PNGs, and
    # progress lines on stderr with virtual and real time.
    pictures = tmp_path / "pictures"
    result = subprocess.run(
        overlay_command("bench", "routing", "--nodes", "20", "--seed", "2", "--fail-links", "1",
                        "--pairs", "--json", "--plot", str(pictures)),
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["pair_results"]) == 20 * 19 and len(report["stretch_cdf"]) == 101
    assert set(report["pair_results"][0]) == {"source", "destination", "route_latency_s",
                                              "shortest_latency_s", "stretch", "hops"}
    for name in ("routing-topology.png", "routing-stretch.png", "routing-reconvergence.png"):
        assert f"wrote {pictures / name}" in result.stderr
        width, height = png_size(pictures / name)
        assert width == 1000 and height in (450, 700)
    assert re.search(r"converging: \d+% \(virtual +[\d.]+ s, real +\d+ s\)", result.stderr)
    assert "Traceback" not in result.stderr


def test_large_runs_check_routes_to_a_seeded_sample_of_destinations() -> None:
    assert checked_destinations(FULL_CHECK_NODES, None, seed=1) is None
    sample = checked_destinations(FULL_CHECK_NODES + 1, None, seed=1)
    assert sample is not None and len(sample) == SAMPLED_DESTINATIONS
    assert sample == sorted(set(sample)) and sample[0] >= 0 and sample[-1] <= FULL_CHECK_NODES
    assert sample == checked_destinations(FULL_CHECK_NODES + 1, None, seed=1)
    assert sample != checked_destinations(FULL_CHECK_NODES + 1, None, seed=2)
    assert checked_destinations(10_000, 0, seed=1) is None  # 0: every destination
    assert checked_destinations(50, 50, seed=1) is None


def test_a_sampled_check_follows_every_source_to_each_sampled_destination() -> None:
    report = simulate("waxman", 60, BenchConfig(seed=3, measure=1.0, check_destinations=7,
                                                fail_links=1))
    assert report.destinations_checked == 7 and report.pairs == 7 * 59
    assert report.optimal_share == 1.0 and report.unreachable_pairs == 0
    assert report.optimal_share_after is not None and report.optimal_share_after >= 0.99
    assert any("seeded sample of 7 of the 60 destinations" in note for note in report.notes)


def test_a_run_gives_the_garbage_collector_back_as_it_found_it() -> None:
    """The bench freezes the heap and collects less often while nodes run (a sixth of
    the wall time at 1,000 nodes went to collections), and undoes both afterwards."""
    thresholds = gc.get_threshold()
    frozen = gc.get_freeze_count()
    seen: list[tuple[int, tuple[int, int, int]]] = []

    def watch(phase: str, fraction: float) -> None:
        seen.append((gc.get_freeze_count(), gc.get_threshold()))

    graph = topology.generate("waxman", 12, 1)
    config = BenchConfig(seed=1, measure=1.0)
    trio.run(run_on_graph, graph, "waxman", config, watch,
             clock=trio.testing.MockClock(autojump_threshold=0))
    assert any(count > frozen and limits != thresholds for count, limits in seen)
    assert (gc.get_freeze_count(), gc.get_threshold()) == (frozen, thresholds)


def test_a_run_without_a_steady_state_says_so_instead_of_reporting_zero() -> None:
    report = simulate("waxman", 30, BenchConfig(seed=2, measure=0.0))
    assert report.converged and report.optimal_share == 1.0
    assert report.control_bytes_per_node_s is None and report.steady_next_hop_changes is None
    assert "steady state not measured (a window of 0 s)" in report.notes
    shown = render_routing(report)
    assert "control traffic not measured" in shown and "route flaps     not measured" in shown
    with pytest.raises(ConfigError, match="--steady"):
        trio.run(run, BenchConfig(nodes=10, measure=-1.0),
                 clock=trio.testing.MockClock(autojump_threshold=0))
