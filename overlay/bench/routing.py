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
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import trio

from overlay.bench.progress import Progress, no_progress
from overlay.bench.routing_pairs import PairSink, example_route, stretch_cdf
from overlay.bench.routing_timeline import delivery_series, sample_optimal
from overlay.errors import ConfigError
from overlay.ids import Identity, NodeId
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.proto.messages import MessageType, RoutedPacket
from overlay.proto.routing import RoutingConfig
from overlay.sim import topology as topologies
from overlay.sim.determinism import deterministic_scheduling
from overlay.sim.network import EmulatedNetwork

METRIC_RESOLUTION = 1e-6  # seconds: link costs are whole microseconds



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
    least one update interval), so the periodic safety net counts fairly."""
    max_virtual: float = 600.0
    traffic_rate: float = 200.0
    bandwidth: float | None = None
    digest: bool = False
    """Hash every delivery into ``RoutingReport.trace_digest`` (costs a little CPU)."""
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
    optimal_share: float = 0.0
    mean_stretch: float = 0.0
    p99_stretch: float = 0.0
    max_stretch: float = 0.0
    unreachable_pairs: int = 0
    loops_in_tables: int = 0
    control_bytes_per_node_s: float = 0.0
    steady_next_hop_changes: int = 0
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
        start = trio.current_time()
        for a, b in graph.edges:
            nodes[min(a, b)].connect((f"n{max(a, b)}", 1), expected_peer=nodes[max(a, b)].node_id)
        index_of = {node.node_id: i for i, node in enumerate(nodes)}

        converged_at = await _wait_converged(nodes, start=start, config=config,
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
        truth = _expected_latencies(graph, config.jitter)
        sink = PairSink.for_nodes(n, config.seed) if config.pairs else None
        quality = _route_quality(truth, nodes, index_of, sink=sink)
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
            await _failure_phase(_Run(graph, net, nodes, index_of, config, rng, report,
                                      report_progress))
        report.virtual_s = round(trio.current_time() - start, 3)
        report.trace_digest = net.trace_digest
        report_progress("stopping nodes", 1.0)
    return _finish(report, wall_start)


async def _start_nodes(net: EmulatedNetwork, stack: AsyncExitStack, n: int, config: BenchConfig,
                       report_progress: Progress) -> list[Node]:
    """One real Node per graph vertex, each with its own seeded generator and nonces."""
    link_config = LinkConfig(hello_interval=config.hello_interval, dead_after=config.dead_after,
                             handshake_timeout=max(5.0, 4 * config.hello_interval))
    routing = RoutingConfig(update_interval=config.update_interval)
    nodes: list[Node] = []
    for i in range(n):
        node_config = NodeConfig(listen=(f"n{i}", 1), link=link_config, routing=routing,
                                 reconnect_initial=1.0, reconnect_max=8.0)
        node_rng = random.Random(config.seed * 1_000_003 + i)
        node = Node(_identity(config.seed, i), node_config, transport=net.transport(f"n{i}"),
                    rng=node_rng, nonce_source=node_rng.randbytes)
        nodes.append(await stack.enter_async_context(node))
        if i % 50 == 0:
            report_progress("starting nodes", i / n)
    return nodes


async def _measure_steady(net: EmulatedNetwork, nodes: list[Node], start: float, *,
                          config: BenchConfig, report: RoutingReport,
                          report_progress: Progress) -> None:
    """Control bytes per node per second and next-hop changes with nothing failing."""
    report_progress("steady state", 0.0)
    window = config.measure
    if window is None:
        # Past every node's first periodic table, which sets its period by its size.
        await trio.sleep_until(start + config.update_interval)
        window = max([config.update_interval, *(x.router.refresh_interval for x in nodes)])
    bytes_before = _total_bytes(net)
    changes_before = _next_hop_changes(nodes)
    measure_start = trio.current_time()
    await trio.sleep(window)
    elapsed = trio.current_time() - measure_start
    report.control_bytes_per_node_s = round(
        (_total_bytes(net) - bytes_before) / len(nodes) / elapsed, 1)
    report.steady_next_hop_changes = _next_hop_changes(nodes) - changes_before


def _finish(report: RoutingReport, wall_start: float) -> RoutingReport:
    report.wall_s = round(time.perf_counter() - wall_start, 2)
    report.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


def _expected_latencies(graph: nx.Graph[int], jitter: float) -> nx.Graph[int]:
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


def _complete(nodes: list[Node]) -> float:
    """Share of (live node, live destination) pairs with a route, and none to the dead."""
    n = len(nodes)
    if n < 2:
        return 1.0
    have = sum(node.router.route_count for node in nodes)
    return have / (n * (n - 1))


def _last_change(nodes: list[Node]) -> float:
    """When any node last changed a route's next hop (metrics may still wobble with noise)."""
    return max(node.router.last_next_hop_change for node in nodes)


def _next_hop_changes(nodes: list[Node]) -> int:
    return sum(node.router.counters.next_hop_changes for node in nodes)


def _total_bytes(net: EmulatedNetwork) -> int:
    return sum(stats.bytes_carried for stats in net.link_statistics().values())


async def _wait_converged(nodes: list[Node], *, start: float, config: BenchConfig,
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
        share = _complete(nodes)
        progress(phase, share)
        now = trio.current_time()
        if share >= 1.0 and now - _last_change(nodes) >= quiet:
            return _last_change(nodes)
    return None


@dataclass
class _Quality:
    pairs: int = 0
    optimal_share: float = 0.0
    mean_stretch: float = 0.0
    p99_stretch: float = 0.0
    max_stretch: float = 0.0
    unreachable: int = 0
    loops: int = 0
    stretches: list[float] = field(default_factory=list)


def _route_quality(graph: nx.Graph[int], nodes: list[Node], index_of: dict[NodeId, int], *,
                   sink: PairSink | None = None,
                   truths: dict[int, dict[int, float]] | None = None) -> _Quality:
    """Follow every node's next hops to every destination; compare with Dijkstra (or the
    distances ``truths`` caches, by destination)."""
    n = len(nodes)
    stretches: list[float] = []
    optimal = unreachable = loops = 0
    for dst in range(n):
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
    pairs = n * (n - 1)
    stretches.sort()
    return _Quality(
        pairs=pairs,
        optimal_share=round(optimal / pairs, 6) if pairs else 1.0,
        mean_stretch=round(sum(stretches) / len(stretches), 6) if stretches else 0.0,
        p99_stretch=round(stretches[int(0.99 * (len(stretches) - 1))], 6) if stretches else 0.0,
        max_stretch=round(stretches[-1], 6) if stretches else 0.0,
        unreachable=unreachable,
        loops=loops,
        stretches=stretches,
    )


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
class _Run:
    """What the failure phase works on."""

    graph: nx.Graph[int]
    net: EmulatedNetwork
    nodes: list[Node]
    index_of: dict[NodeId, int]
    config: BenchConfig
    rng: random.Random
    report: RoutingReport
    progress: Progress


def _choose_failures(run: _Run) -> tuple[list[tuple[int, int]], set[int], nx.Graph[int]]:
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


async def _failure_phase(run: _Run) -> None:
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
        reconverged = await _wait_converged(live, start=fail_at, config=config,
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
    remaining = _expected_latencies(remaining, config.jitter)
    remaining.remove_nodes_from(crashed)
    # Renumber the survivors 0..k-1 in the order of ``live``.
    survivors = nx.relabel_nodes(remaining, {old: new for new, old in enumerate(live_index)})
    report.optimal_share_after = _route_quality(
        survivors, live, {node.node_id: i for i, node in enumerate(live)}).optimal_share


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


def _optimal_share(run: _Run, remaining: nx.Graph[int], crashed: set[int]
                   ) -> Callable[[float], float]:
    """Share of pairs on a lowest-latency route at a time ``t`` from the failure: of all
    nodes on the whole graph before it, of the survivors on what remains after."""
    before_truths: dict[int, dict[int, float]] = {}
    after_truths: dict[int, dict[int, float]] = {}
    full = _expected_latencies(run.graph, run.config.jitter)
    live_index = [i for i in range(len(run.nodes)) if i not in crashed]
    live = [run.nodes[i] for i in live_index]
    after = _expected_latencies(remaining, run.config.jitter)
    after.remove_nodes_from(crashed)
    survivors = nx.relabel_nodes(after, {old: new for new, old in enumerate(live_index)})
    live_of = {node.node_id: i for i, node in enumerate(live)}

    def share(t: float) -> float:
        if t < 0:
            return _route_quality(full, run.nodes, run.index_of,
                                  truths=before_truths).optimal_share
        return _route_quality(survivors, live, live_of, truths=after_truths).optimal_share

    return share
