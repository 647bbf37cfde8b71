"""Routing bench, failure phase: links fail (and nodes crash) under traced traffic.

Split from :mod:`overlay.bench.routing` (which runs the phases) by job: data
packets flow between random pairs and every packet's path is traced; K links
(never a bridge) fail at once, and crashed nodes go silent; the phase reports
the detection and reconvergence times, where lost packets died, any packet that
visited a node twice (a loop), and, for ``--plot``, the timeline of delivery
and optimal shares around the failure.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
import trio

from overlay.bench.progress import Progress
from overlay.bench.routing_quality import (
    checked_destinations,
    expected_latencies,
    route_quality,
    wait_converged,
)
from overlay.bench.routing_timeline import delivery_series, sample_optimal
from overlay.ids import NodeId
from overlay.net.node import Node
from overlay.proto.messages import MessageType, RoutedPacket
from overlay.sim.network import EmulatedNetwork

if TYPE_CHECKING:
    from overlay.bench.routing import BenchConfig, RoutingReport

class _Tracer:
    """Follows every traced data packet hop by hop."""

    def __init__(self, index_of: dict[NodeId, int]) -> None:
        self.index_of = index_of
        self.paths: dict[tuple[NodeId, int], list[int]] = {}
        self.delivered: set[tuple[NodeId, int]] = set()
        self.dropped: dict[tuple[NodeId, int], int] = {}
        self.loops: set[tuple[NodeId, int]] = set()
        self.sent_at: dict[tuple[NodeId, int], float] = {}

    def __call__(self, event: str, node: NodeId, packet: RoutedPacket) -> None:
        if packet.type != MessageType.DATA:
            return
        key = (packet.src, packet.packet_id)
        here = self.index_of[node]
        if event == "originate":
            self.paths[key] = [here]
            self.sent_at[key] = trio.current_time()
        elif event == "receive":
            path = self.paths.get(key)
            if path is not None:
                if here in path:
                    self.loops.add(key)
                path.append(here)
        elif event == "deliver":
            self.delivered.add(key)
        elif event == "drop":
            self.dropped[key] = here


def _links_to_fail(graph: nx.Graph[int], count: int, rng: random.Random) -> list[tuple[int, int]]:
    """``count`` links whose joint removal keeps the graph connected (no bridges)."""
    remaining = graph.copy()
    chosen: list[tuple[int, int]] = []
    candidates = sorted(graph.edges)
    rng.shuffle(candidates)
    for a, b in candidates:
        if len(chosen) == count:
            break
        remaining.remove_edge(a, b)
        if nx.is_connected(remaining):
            chosen.append((a, b))
        else:
            remaining.add_edge(a, b, **graph.edges[a, b])
    return chosen


async def _wait_unlinked(node: Node, peer: Node) -> None:
    await node.wait_until(lambda: peer.node_id not in node.neighbours)


async def _wait_no_route(node: Node, dead: Node) -> None:
    await node.wait_until(lambda: node.router.next_hop(dead.node_id) is None)


def _nodes_to_crash(graph: nx.Graph[int], count: int, rng: random.Random) -> set[int]:
    """``count`` nodes whose joint removal leaves the rest connected."""
    remaining = graph.copy()
    chosen: set[int] = set()
    candidates = sorted(graph.nodes)
    rng.shuffle(candidates)
    for node in candidates:
        if len(chosen) == count:
            break
        trial = remaining.copy()
        trial.remove_node(node)
        if trial.number_of_nodes() > 1 and nx.is_connected(trial):
            remaining = trial
            chosen.add(node)
    return chosen


@dataclass
class FailureRun:
    """What the failure phase works on."""

    graph: nx.Graph[int]
    net: EmulatedNetwork
    nodes: list[Node]
    index_of: dict[NodeId, int]
    config: BenchConfig
    rng: random.Random
    report: RoutingReport
    progress: Progress


def _choose_failures(run: FailureRun) -> tuple[list[tuple[int, int]], set[int], nx.Graph[int]]:
    """The links to fail and nodes to crash, and the graph that remains."""
    graph, config, rng, report = run.graph, run.config, run.rng, run.report
    failed = _links_to_fail(graph, config.fail_links, rng)
    report.failed_links = len(failed)
    if len(failed) < config.fail_links:
        report.notes.append(f"only {len(failed)} links could fail without disconnecting")
    remaining = graph.copy()
    remaining.remove_edges_from(failed)
    crashed = _nodes_to_crash(remaining, config.crash_nodes, rng)
    report.crashed_nodes = len(crashed)
    if len(crashed) < config.crash_nodes:
        report.notes.append(f"only {len(crashed)} nodes could crash without disconnecting")
    return failed, crashed, remaining


async def failure_phase(run: FailureRun) -> None:
    graph, net, nodes, index_of = run.graph, run.net, run.nodes, run.index_of
    config, rng, report, progress = run.config, run.rng, run.report, run.progress
    tracer = _Tracer(index_of)
    for node in nodes:
        node.trace = tracer
    failed, crashed, remaining = _choose_failures(run)
    live = [node for i, node in enumerate(nodes) if i not in crashed]
    live_index = [i for i in range(len(nodes)) if i not in crashed]
    detection = config.hello_interval * config.dead_after
    interval = 1.0 / config.traffic_rate

    async def traffic(stop_at: float) -> None:
        while trio.current_time() < stop_at:
            src, dst = rng.sample(live_index, 2)  # between nodes that stay up
            nodes[src].send_packet(MessageType.DATA, nodes[dst].node_id, b"probe")
            await trio.sleep(interval)

    optimal_series: list[list[float]] = []
    async with trio.open_nursery() as nursery:
        warmup = 1.0
        fail_at = trio.current_time() + warmup
        nursery.start_soon(traffic, fail_at + config.max_virtual)
        if config.timeline:
            nursery.start_soon(sample_optimal, _optimal_share(run, remaining, crashed),
                               fail_at, optimal_series)
        await trio.sleep_until(fail_at)
        progress("failing links", 0.0)
        for a, b in failed:
            net.set_link_up(f"n{a}", f"n{b}", False)
        for i in crashed:
            net.set_host_up(f"n{i}", False)  # a power cut: silence, no goodbye

        for a, b in failed:
            await _wait_unlinked(nodes[a], nodes[b])
            await _wait_unlinked(nodes[b], nodes[a])
        for i in crashed:
            for j in graph.neighbors(i):
                if j not in crashed:
                    await _wait_unlinked(nodes[j], nodes[i])
        report.failure_detection_s = round(trio.current_time() - fail_at, 3)
        for i in crashed:
            for j in range(len(nodes)):
                if j not in crashed:
                    await _wait_no_route(nodes[j], nodes[i])
        reconverged = await wait_converged(live, start=fail_at, config=config,
                                            progress=progress, phase="reconverging")
        if reconverged is not None:
            report.reconvergence_s = round(reconverged - fail_at, 3)
            report.reconvergence_ratio = round(report.reconvergence_s / detection, 3)
        await trio.sleep(1.0)  # some traffic on the new routes
        nursery.cancel_scope.cancel()  # stop sending...
    await trio.sleep(2.0)  # ...and let every packet still in flight land before counting
    for node in nodes:
        node.trace = None
    endpoints = {n for pair in failed for n in pair} | crashed
    endpoints.update(j for i in crashed for j in graph.neighbors(i))
    _traffic_outcome(tracer, endpoints, report)
    if config.timeline:
        report.timeline = {"delivered": delivery_series(tracer.sent_at, tracer.delivered,  # type: ignore[arg-type]
                                                        fail_at),
                           "optimal": optimal_series}
    remaining = expected_latencies(remaining, config.jitter)
    remaining.remove_nodes_from(crashed)
    # Renumber the survivors 0..k-1 in the order of ``live``.
    survivors = nx.relabel_nodes(remaining, {old: new for new, old in enumerate(live_index)})
    report.optimal_share_after = route_quality(
        survivors, live, {node.node_id: i for i, node in enumerate(live)},
        destinations=checked_destinations(len(live), config.check_destinations,
                                          config.seed)).optimal_share


def _traffic_outcome(tracer: _Tracer, endpoints: set[int], report: RoutingReport) -> None:
    lost = [k for k in tracer.paths if k not in tracer.delivered and k not in tracer.dropped]
    report.packets_sent = len(tracer.paths)
    report.packets_delivered = len(tracer.delivered)
    report.delivery_ratio = round(len(tracer.delivered) / max(1, len(tracer.paths)), 6)
    report.dropped_elsewhere = len(tracer.dropped)
    # A packet neither delivered nor dropped was swallowed by a link: last seen at one
    # end of a failed link (or next to a crashed node) before the failure was detected.
    report.lost_on_failed_links = sum(1 for k in lost if tracer.paths[k][-1] in endpoints)
    report.lost_elsewhere = len(lost) - report.lost_on_failed_links
    report.looping_packets = len(tracer.loops)


def _optimal_share(run: FailureRun, remaining: nx.Graph[int], crashed: set[int]
                   ) -> Callable[[float], float]:
    """Share of pairs on a lowest-latency route at a time ``t`` from the failure: of all
    nodes on the whole graph before it, of the survivors on what remains after."""
    before_truths: dict[int, dict[int, float]] = {}
    after_truths: dict[int, dict[int, float]] = {}
    full = expected_latencies(run.graph, run.config.jitter)
    live_index = [i for i in range(len(run.nodes)) if i not in crashed]
    live = [run.nodes[i] for i in live_index]
    after = expected_latencies(remaining, run.config.jitter)
    after.remove_nodes_from(crashed)
    survivors = nx.relabel_nodes(after, {old: new for new, old in enumerate(live_index)})
    live_of = {node.node_id: i for i, node in enumerate(live)}
    wanted, seed = run.config.check_destinations, run.config.seed
    checked_before = checked_destinations(len(run.nodes), wanted, seed)
    checked_after = checked_destinations(len(live), wanted, seed)

    def share(t: float) -> float:
        if t < 0:
            return route_quality(full, run.nodes, run.index_of, truths=before_truths,
                                 destinations=checked_before).optimal_share
        return route_quality(survivors, live, live_of, truths=after_truths,
                             destinations=checked_after).optimal_share

    return share
