"""The routing benchmark: real nodes on an emulated network, judged against networkx.

Every node is an ordinary :class:`~overlay.net.node.Node` whose transport is
the :class:`~overlay.sim.network.EmulatedNetwork`; links have the graph's
latencies and everything runs in virtual time, so minutes of protocol time
take seconds.  A run is reproducible from its seed.

Phases
------
1. *Convergence*: all nodes start together and dial their graph neighbours.
   Converged means every node has a route to every other and no next hop has
   changed for ``quiet`` seconds; the convergence time is that of the last
   next-hop change.  (With RTT noise, advertised metrics keep wobbling a
   little; what must settle is the choice of routes.)
2. *Quality*: every node's next hops are followed to every destination (one
   tree per destination, so n^2 work, not n^3) and compared with Dijkstra on
   the true latencies: share of pairs on an optimal route (within the metric's
   resolution of 1 us per hop), stretch, loops.
3. *Steady state*: control bytes per node per second over ``measure`` seconds,
   and next-hop changes (with jitter on, any change is noise getting through).
4. *Failure* (``fail_links`` > 0): data packets flow between random pairs and
   every packet's path is traced; K links (never a bridge) fail at once; the
   run reports reconvergence time, delivery ratio, where the lost packets died,
   and any packet that visited a node twice (a loop).

The graph is generated or loaded from the config (:func:`load_graph`), or given
directly to :func:`run_on_graph` (tests that build their own).

Where the code is, by job: this module runs the phases; route checks against
Dijkstra and the convergence wait are :mod:`overlay.bench.routing_quality`, the
failure phase :mod:`overlay.bench.routing_failure`, per-pair results, the
stretch CDF and the example route :mod:`overlay.bench.routing_pairs`, the
reconvergence timeline :mod:`overlay.bench.routing_timeline`.
"""

from __future__ import annotations

import gc
import random
import resource
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import trio

from overlay.bench.progress import Progress, no_progress
from overlay.bench.routing_failure import FailureRun, failure_phase
from overlay.bench.routing_pairs import PairSink, example_route, stretch_cdf
from overlay.bench.routing_quality import (
    checked_destinations,
    expected_latencies,
    next_hop_changes,
    route_quality,
    wait_converged,
)
from overlay.errors import ConfigError
from overlay.ids import Identity
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.proto.route_table import DestinationIndex
from overlay.proto.routing import RoutingConfig
from overlay.sim import topology as topologies
from overlay.sim.determinism import deterministic_scheduling
from overlay.sim.network import EmulatedNetwork


@dataclass(frozen=True)
class BenchConfig:
    topology: str = "waxman"
    """A generator of :mod:`overlay.sim.topology` (see ``KINDS``) or a topology file."""
    nodes: int = 100
    """Nodes of a generated topology (a file says its own)."""
    latency_attr: str = "latency"
    """For topology files: the edge attribute holding latency..."""
    latency_unit: str = "s"
    """...and its unit (a key of ``topology.LATENCY_UNITS``)."""
    seed: int = 1
    fail_links: int = 0
    crash_nodes: int = 0
    jitter: float = 0.0
    hello_interval: float = 1.0
    dead_after: int = 3
    update_interval: float = 16.0
    quiet: float = 2.0
    measure: float | None = None
    """Steady-state window; default the longest full-table period any node announces (at
    least one update interval), so the periodic safety net counts fairly; 0 skips the
    steady state (its figures stay None)."""
    max_virtual: float = 600.0
    traffic_rate: float = 200.0
    bandwidth: float | None = None
    digest: bool = False
    """Hash every delivery into ``RoutingReport.trace_digest`` (costs a little CPU)."""
    check_destinations: int | None = None
    """Destinations whose routes from every node are checked against Dijkstra: None,
    all up to ``routing_quality.FULL_CHECK_NODES`` nodes and a seeded sample beyond;
    0, all of them; else a seeded sample of that many."""
    pairs: bool = False
    """Report every pair's route (a seeded sample beyond ``routing_pairs.MAX_PAIRS``)."""
    timeline: bool = False
    """Sample the delivery and optimal shares around the failure (for the plot; costs a
    route check every ``TIMELINE_STEP`` virtual seconds)."""


@dataclass
class RoutingReport:
    topology: str
    nodes: int
    links: int
    mean_degree: float
    seed: int
    converged: bool
    convergence_s: float | None
    convergence_wall_s: float | None = None
    pairs: int = 0
    """Pairs checked: every source to each checked destination."""
    destinations_checked: int = 0
    optimal_share: float = 0.0
    mean_stretch: float = 0.0
    p99_stretch: float = 0.0
    max_stretch: float = 0.0
    unreachable_pairs: int = 0
    loops_in_tables: int = 0
    control_bytes_per_node_s: float | None = None
    """None when the steady state was skipped (``measure=0``)."""
    steady_next_hop_changes: int | None = None
    failed_links: int = 0
    crashed_nodes: int = 0
    failure_detection_s: float | None = None
    reconvergence_s: float | None = None
    reconvergence_ratio: float | None = None
    packets_sent: int = 0
    packets_delivered: int = 0
    delivery_ratio: float | None = None
    lost_on_failed_links: int = 0
    lost_elsewhere: int = 0
    dropped_elsewhere: int = 0
    looping_packets: int = 0
    optimal_share_after: float | None = None
    virtual_s: float = 0.0
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    trace_digest: str | None = None
    stretch_cdf: list[list[float]] = field(default_factory=list)
    """``[stretch, share of pairs at most that stretch]`` at 0%, 1%, ..., 100%."""
    example_route: dict[str, Any] | None = None
    """One long route as routed and as the shortest path (what the topology plot shows)."""
    pairs_sampled: bool = False
    pair_results: list[dict[str, Any]] | None = None
    """Per pair: source, destination, route and shortest latency, stretch, hops."""
    timeline: dict[str, list[list[float]]] | None = None
    """Around the failure, ``[seconds from the failure, share]`` series: ``delivered``
    (by send time) and ``optimal`` (pairs on a lowest-latency route)."""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _identity(seed: int, index: int) -> Identity:
    rng = random.Random(f"identity/{seed}/{index}")
    return Identity.from_seed(rng.randbytes(32))


def load_graph(config: BenchConfig) -> tuple[nx.Graph[int], str]:
    """The graph ``config`` names, and the name the report gives it."""
    if config.topology in topologies.KINDS:
        return topologies.generate(config.topology, config.nodes, config.seed), config.topology
    path = Path(config.topology)
    if not path.suffix and not path.exists():
        raise ConfigError(f"unknown topology {config.topology!r}: not one of "
                          f"{', '.join(topologies.KINDS)}, and no such file")
    graph = topologies.load(path, latency_attr=config.latency_attr,
                            latency_unit=config.latency_unit)
    return graph, path.name


async def run(config: BenchConfig, progress: Progress = no_progress) -> RoutingReport:
    """The topology of ``config``, every phase on it, the report (call under a MockClock)."""
    graph, name = load_graph(config)
    if config.fail_links < 0 or config.crash_nodes < 0:
        raise ConfigError("--fail-links and --crash-nodes cannot be negative")
    if config.measure is not None and not 0 <= config.measure < float("inf"):
        raise ConfigError("the steady-state window (--steady) must be 0 or more seconds")
    return await run_on_graph(graph, name, config, progress)


async def run_on_graph(graph: nx.Graph[int], topology: str, config: BenchConfig,
                       progress: Progress | None = None) -> RoutingReport:
    """Build the network on ``graph``, run every phase, and report (under a MockClock).

    The run replays exactly from ``config.seed``: every random choice is seeded,
    and so is trio's order among tasks ready at the same instant.
    """
    with deterministic_scheduling(config.seed):
        return await _run(graph, topology, config, progress)


async def _run(graph: nx.Graph[int], topology: str, config: BenchConfig,
               progress: Progress | None) -> RoutingReport:
    report_progress = progress or (lambda phase, fraction: None)
    wall_start = time.perf_counter()
    n = graph.number_of_nodes()
    report = RoutingReport(
        topology=topology, nodes=n, links=graph.number_of_edges(),
        mean_degree=round(2 * graph.number_of_edges() / n, 3), seed=config.seed,
        converged=False, convergence_s=None,
    )
    rng = random.Random(config.seed)
    async with EmulatedNetwork(random.Random(config.seed + 1), digest=config.digest) as net, \
            AsyncExitStack() as stack:
        for a, b in graph.edges:
            net.add_link(f"n{a}", f"n{b}", graph.edges[a, b]["latency"],
                         jitter=config.jitter, bandwidth=config.bandwidth)
        nodes = await _start_nodes(net, stack, n, config, report_progress)
        stack.enter_context(_frozen_heap())
        start = trio.current_time()
        for a, b in graph.edges:
            nodes[min(a, b)].connect((f"n{max(a, b)}", 1), expected_peer=nodes[max(a, b)].node_id)
        index_of = {node.node_id: i for i, node in enumerate(nodes)}

        converged_at = await wait_converged(nodes, start=start, config=config,
                                             progress=report_progress, phase="converging")
        report.converged = converged_at is not None
        if converged_at is None:
            report.notes.append(f"not converged within {config.max_virtual:g} virtual seconds")
            report.virtual_s = trio.current_time() - start
            report.trace_digest = net.trace_digest
            return _finish(report, wall_start)
        report.convergence_s = round(converged_at - start, 3)
        report.convergence_wall_s = round(time.perf_counter() - wall_start, 2)

        report_progress("checking routes", 0.0)
        truth = expected_latencies(graph, config.jitter)
        destinations = checked_destinations(n, config.check_destinations, config.seed)
        report.destinations_checked = n if destinations is None else len(destinations)
        sink = (PairSink.for_pairs(report.destinations_checked * (n - 1), config.seed)
                if config.pairs else None)
        if destinations is not None:
            report.notes.append(f"routes checked to a seeded sample of {len(destinations):,} "
                                f"of the {n:,} destinations, from every node")
        quality = route_quality(truth, nodes, index_of, sink=sink, destinations=destinations)
        report.stretch_cdf = stretch_cdf(quality.stretches)
        report.example_route = example_route(truth, nodes, index_of)
        if sink is not None:
            report.pair_results, report.pairs_sampled = sink.rows, sink.sampled
        report.pairs, report.optimal_share = quality.pairs, quality.optimal_share
        report.mean_stretch, report.p99_stretch = quality.mean_stretch, quality.p99_stretch
        report.max_stretch = quality.max_stretch
        report.unreachable_pairs, report.loops_in_tables = quality.unreachable, quality.loops

        await _measure_steady(net, nodes, start, config=config, report=report,
                              report_progress=report_progress)

        if config.fail_links > 0 or config.crash_nodes > 0:
            await failure_phase(FailureRun(graph, net, nodes, index_of, config, rng, report,
                                      report_progress))
        report.virtual_s = round(trio.current_time() - start, 3)
        report.trace_digest = net.trace_digest
        report_progress("stopping nodes", 1.0)
    return _finish(report, wall_start)


async def _start_nodes(net: EmulatedNetwork, stack: AsyncExitStack, n: int, config: BenchConfig,
                       report_progress: Progress) -> list[Node]:
    """One real Node per graph vertex, each with its own seeded generator and nonces, each
    running in a task of its own (:func:`_run_node`) until ``stack`` closes."""
    link_config = LinkConfig(hello_interval=config.hello_interval, dead_after=config.dead_after,
                             handshake_timeout=max(5.0, 4 * config.hello_interval))
    routing = RoutingConfig(update_interval=config.update_interval)
    index = DestinationIndex()  # every router's table over one copy of the node ids
    nodes: list[Node] = []
    nursery = await stack.enter_async_context(trio.open_nursery())
    stop = trio.Event()
    stack.callback(stop.set)  # on the way out, before the nursery waits for the nodes
    for i in range(n):
        node_config = NodeConfig(listen=(f"n{i}", 1), link=link_config, routing=routing,
                                 reconnect_initial=1.0, reconnect_max=8.0)
        node_rng = random.Random(config.seed * 1_000_003 + i)
        node = Node(_identity(config.seed, i), node_config, transport=net.transport(f"n{i}"),
                    rng=node_rng, nonce_source=node_rng.randbytes, route_index=index)
        await nursery.start(_run_node, node, stop)
        nodes.append(node)
        if i % 50 == 0:
            report_progress("starting nodes", i / n)
    return nodes


async def _run_node(node: Node, stop: trio.Event, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """``node`` runs from its start until ``stop``.

    A task per node, not one exit stack of every node: unwinding thousands of nodes
    from one stack hands each node's exit the exceptions of all the exits before it,
    and on Ctrl-C (each exit adding its cancelled tasks) those groups nested past
    Python's recursion limit at 400 nodes, corrupting trio's nursery stack.  Here each
    node unwinds on its own, and their exceptions are siblings in one group.
    """
    async with node:
        task_status.started()
        await stop.wait()


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the cyclic garbage collector off what exists now (every node and task), and
    let it run less often.

    Convergence allocates short-lived containers by the million (decoded tables), and
    each of Python's collections walks the objects of its generations: at 1,000 nodes
    they took a sixth of the wall time (9.4 of 61.7 s), and full ones grow with the
    heap.  Frozen objects are still freed by reference counting; only cycles among them
    wait for the unfreeze.  The young generation's threshold goes from 700 net
    allocations to 50,000 (a collection per few thousand messages, not per one).
    """
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _measure_steady(net: EmulatedNetwork, nodes: list[Node], start: float, *,
                          config: BenchConfig, report: RoutingReport,
                          report_progress: Progress) -> None:
    """Control bytes per node per second and next-hop changes with nothing failing."""
    if config.measure == 0:
        report.notes.append("steady state not measured (a window of 0 s)")
        return
    report_progress("steady state", 0.0)
    window = config.measure
    if window is None:
        # Past every node's first periodic table, which sets its period by its size.
        await trio.sleep_until(start + config.update_interval)
        window = max([config.update_interval, *(x.router.refresh_interval for x in nodes)])
    bytes_before = _total_bytes(net)
    changes_before = next_hop_changes(nodes)
    measure_start = trio.current_time()
    await trio.sleep(window)
    elapsed = trio.current_time() - measure_start
    report.control_bytes_per_node_s = round(
        (_total_bytes(net) - bytes_before) / len(nodes) / elapsed, 1)
    report.steady_next_hop_changes = next_hop_changes(nodes) - changes_before


def _finish(report: RoutingReport, wall_start: float) -> RoutingReport:
    report.wall_s = round(time.perf_counter() - wall_start, 2)
    report.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


def _total_bytes(net: EmulatedNetwork) -> int:
    return sum(stats.bytes_carried for stats in net.link_statistics().values())
