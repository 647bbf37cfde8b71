"""The hybrid design in the simulator: the scenarios run on a world of :mod:`overlay.sim.world`.

NAT-bound clients relayed by supernodes on a latency map (the world module
says how the map, the links and the users are built).  Scenarios (a) and (c)
and the whole run are here; (b) is in :mod:`overlay.sim.failover`.

Scenarios
---------
Clients are paired at random (each pair are contacts, each client in one pair).

- :func:`relay_latency`: once attachment has settled, each pair locates each
  other through the directory and one echoes the other; the relayed one-way
  latency is half the echo's round trip, set against the map distance of the
  pair.  Also reported: how many clients sit at their nearest supernode, the
  stretch of routes among supernodes, the *nearest relay* (through each
  client's nearest supernode, those two joined directly: the best that
  attachment by latency can earn) and the *ideal relay* (the best path through
  any two supernodes joined directly), which tell how much of the ratio the
  geometry alone imposes.
- :func:`failover` (:mod:`overlay.sim.failover`): every pair holds a reliable
  conversation (both ways, at a fixed rate); the supernode that is home to most
  clients is powered off mid conversation (silence, no FIN). For each client it
  was home to: when its link noticed, when it had a new home, and when an echo
  from its peer first came back, all measured from the moment the failure became
  detectable (``hello_interval x dead_after`` after the cut); for each client it
  was the standby of, when a new standby was up. Every message is numbered and
  stamped: the run counts the lost (not acknowledged within ``drain_limit``
  after sending stops), duplicated and reordered, and reports how late they
  arrived.
- :func:`capacity`: one supernode, many clients.  Memory is traced with
  :mod:`tracemalloc`: the whole process per client (from before the clients
  start to when all are attached), and the supernode's own share, which is
  what it releases when its clients vanish: the supernode is powered off, the
  clients' keepalive is set so slow that they do not notice within the
  window, and the difference once the supernode has dropped every link is
  what it held for them.

Runs replay from the seed up to trio's shuffling of tasks that wake at the
same instant, which this module does not control: figures of two runs with one
seed agree closely, not exactly.
"""

from __future__ import annotations

import gc
import math
import resource
import statistics
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from overlay.proto.link import LinkConfig
from overlay.sim.failover import FailoverReport, failover
from overlay.sim.world import (
    ClientHandle,
    HybridConfig,
    HybridWorld,
    LatencyMap,
    Progress,
    SimulationError,
    SupernodeHandle,
    _ms,
    _quiet,
    _r,
    open_world,
)
from overlay.stats import quantile

__all__ = ["HybridConfig", "HybridReport", "LatencyMap", "Progress", "SimulationError",
           "capacity", "failover", "open_world", "quantile", "relay_latency", "run",
           "targets"]


# --- scenario (a): relayed latency against the direct path ------------------------------------


@dataclass(frozen=True, slots=True)
class PairSample:
    a: str
    b: str
    direct: float
    relayed: float | None
    """Half the median echo round trip (None if no echo came back)."""
    ideal: float
    """The best path through at most two supernodes joined directly, on the map."""
    nearest: float
    """Through each client's nearest supernode, those two joined directly, on the map."""

    @property
    def ratio(self) -> float | None:
        return None if self.relayed is None else self.relayed / self.direct


@dataclass(frozen=True)
class RelayReport:
    pairs: int
    answered: int
    ratio_p50: float | None
    ratio_p90: float | None
    relayed_p50_ms: float | None
    relayed_p90_ms: float | None
    direct_p50_ms: float | None
    direct_p90_ms: float | None
    nearest_relay_ratio_p50: float | None
    """The median ratio if every client sat at its nearest supernode and those two were
    joined directly: what attachment by latency can earn at best."""
    ideal_ratio_p50: float | None
    """The median ratio the geometry allows a relay through at most two supernodes."""
    at_nearest_share: float
    """Clients whose home is their nearest supernode on the map."""
    home_extra_p50_ms: float | None
    """Access latency to the home beyond that to the nearest supernode, median over clients."""
    home_extra_p90_ms: float | None
    mesh_stretch_p50: float | None
    """Supernode-to-supernode route latency over their direct link's, over all pairs."""
    mesh_stretch_p90: float | None
    samples: tuple[PairSample, ...] = field(repr=False, default=())

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["samples"]
        return out


def _ideal_relay(world: HybridWorld, a: str, b: str) -> float:
    lat = world.map.latency
    best = math.inf
    for s1 in world.supernode_hosts:
        to_s1 = lat(a, s1)
        for s2 in world.supernode_hosts:
            mesh = 0.0 if s1 == s2 else lat(s1, s2)
            best = min(best, to_s1 + mesh + lat(s2, b))
    return best


def _nearest_relay(world: HybridWorld, a: str, b: str) -> float:
    lat = world.map.latency
    near_a = world.map.nearest(a, world.supernode_hosts)
    near_b = world.map.nearest(b, world.supernode_hosts)
    return lat(a, near_a) + (0.0 if near_a == near_b else lat(near_a, near_b)) + lat(near_b, b)


def _mesh_path_latency(world: HybridWorld, src: SupernodeHandle,
                       dst: SupernodeHandle) -> float | None:
    """Follow next hops from ``src`` to ``dst``, adding up the map latencies."""
    by_id = world.supernode_by_id()
    here, total = src, 0.0
    for _ in range(len(world.supernodes)):
        if here is dst:
            return total
        hop = here.node.router.next_hop(dst.node.node_id)
        nxt = by_id.get(hop) if hop is not None else None
        if nxt is None:
            return None
        total += world.map.latency(here.host, nxt.host)
        here = nxt
    return total if here is dst else None


async def relay_latency(world: HybridWorld, progress: Progress | None = None) -> RelayReport:
    """Each pair locates each other, then one echoes the other (see the module docstring)."""
    report = progress or _quiet
    pairs = world.pairs()
    samples: list[PairSample] = []

    async def measure(a: ClientHandle, b: ClientHandle) -> None:
        await a.role.locate(b.username)
        await b.role.locate(a.username)
        await a.node.echo(b.node.node_id)  # the first one teaches the relays the way back
        rtts = []
        for _ in range(world.config.echoes):
            result = await a.node.echo(b.node.node_id)
            if result.kind == "reply" and result.rtt is not None:
                rtts.append(result.rtt)
        samples.append(PairSample(
            a.host, b.host, world.map.latency(a.host, b.host),
            statistics.median(rtts) / 2 if rtts else None, _ideal_relay(world, a.host, b.host),
            _nearest_relay(world, a.host, b.host)))
        report("relay latency", len(samples) / len(pairs))

    async with trio.open_nursery() as nursery:
        for a, b in pairs:
            nursery.start_soon(measure, a, b)
    samples.sort(key=lambda s: (s.a, s.b))

    answered = [s for s in samples if s.relayed is not None]
    ratios = [s.ratio for s in answered if s.ratio is not None]
    relayed = [s.relayed for s in answered if s.relayed is not None]
    direct = [s.direct for s in samples]
    ideal = [s.ideal / s.direct for s in samples]
    nearest_relay = [s.nearest / s.direct for s in samples]
    by_id = world.supernode_by_id()
    extra, at_nearest = [], 0
    for client in world.clients:
        home = by_id.get(client.role.home) if client.role.home is not None else None
        if home is None:
            continue
        nearest = world.map.nearest(client.host, world.supernode_hosts)
        at_nearest += home.host == nearest
        extra.append(world.map.latency(client.host, home.host)
                     - world.map.latency(client.host, nearest))
    stretches = []
    for src in world.supernodes:
        for dst in world.supernodes:
            if src is not dst:
                path = _mesh_path_latency(world, src, dst)
                if path is not None:
                    stretches.append(path / world.map.latency(src.host, dst.host))
    return RelayReport(
        pairs=len(samples), answered=len(answered),
        ratio_p50=_r(quantile(ratios, 0.5)), ratio_p90=_r(quantile(ratios, 0.9)),
        relayed_p50_ms=_ms(quantile(relayed, 0.5)), relayed_p90_ms=_ms(quantile(relayed, 0.9)),
        direct_p50_ms=_ms(quantile(direct, 0.5)), direct_p90_ms=_ms(quantile(direct, 0.9)),
        nearest_relay_ratio_p50=_r(quantile(nearest_relay, 0.5)),
        ideal_ratio_p50=_r(quantile(ideal, 0.5)),
        at_nearest_share=round(at_nearest / len(world.clients), 4) if world.clients else 0.0,
        home_extra_p50_ms=_ms(quantile(extra, 0.5)), home_extra_p90_ms=_ms(quantile(extra, 0.9)),
        mesh_stretch_p50=_r(quantile(stretches, 0.5)),
        mesh_stretch_p90=_r(quantile(stretches, 0.9)),
        samples=tuple(samples),
    )


# --- scenario (c): one supernode, many clients --------------------------------------------------


@dataclass(frozen=True)
class CapacityReport:
    clients: int
    attached: int
    """Clients attached to the supernode once all had started."""
    echo_pairs: int
    echo_replies: int
    echo_rtt_p50_ms: float | None
    process_bytes_per_client: int
    """Traced memory growth of the whole process (clients, directory, network included)."""
    supernode_bytes_per_client: int
    """What the supernode released when its clients vanished, per client."""
    supernode_released_links: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def capacity(config: HybridConfig, progress: Progress | None = None) -> CapacityReport:
    """One supernode and ``capacity_clients`` clients; memory per attached client."""
    report = progress or _quiet
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    # The clients' keepalive is slow enough that they do not notice the supernode's power
    # cut within the measurement window, so what is released is the supernode's alone.
    blind = LinkConfig(hello_interval=30.0, dead_after=1000, handshake_timeout=5.0)
    try:
        async with open_world(config, supernodes=1, clients=config.capacity_clients,
                              client_link=blind, progress=report) as world:
            supernode = world.supernodes[0]
            before = _traced()
            await world.start_clients(report)
            await trio.sleep(config.capacity_settle)
            attached = len(supernode.node.attached_clients)
            replies, rtts = 0, []
            sample = world.pairs()[:config.capacity_echo_pairs]
            report("capacity echoes", 0.0)

            async def echo(a: ClientHandle, b: ClientHandle) -> None:
                nonlocal replies
                await a.role.locate(b.username)
                await b.role.locate(a.username)
                result = await a.node.echo(b.node.node_id)
                if result.kind == "reply" and result.rtt is not None:
                    replies += 1
                    rtts.append(result.rtt)

            async with trio.open_nursery() as nursery:
                for a, b in sample:
                    nursery.start_soon(echo, a, b)
            await trio.sleep(config.capacity_settle)
            loaded = _traced()
            links = len(supernode.node.neighbours)
            report("capacity: supernode off", 0.0)
            world.net.set_host_up(supernode.host, False)
            with trio.move_on_after(10 * config.detection_delay + 10.0):
                await supernode.node.wait_until(lambda: not supernode.node.neighbours
                                                and not supernode.node.attached_clients)
            await trio.sleep(1.0)
            released = _traced()
            count = max(1, config.capacity_clients)
            return CapacityReport(
                clients=config.capacity_clients, attached=attached, echo_pairs=len(sample),
                echo_replies=replies, echo_rtt_p50_ms=_ms(quantile(rtts, 0.5)),
                process_bytes_per_client=round((loaded - before) / count),
                supernode_bytes_per_client=round((loaded - released) / count),
                supernode_released_links=links - len(supernode.node.neighbours),
            )
    finally:
        if started_tracing:
            tracemalloc.stop()


# --- the whole run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    figure: str
    target: str
    measured: float | None
    met: bool | None


@dataclass(frozen=True)
class HybridReport:
    supernodes: int
    clients: int
    seed: int
    relay: RelayReport | None
    failover: FailoverReport | None
    capacity: CapacityReport | None
    targets: tuple[Target, ...]
    virtual_s: float
    wall_s: float
    peak_rss_mb: float
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "supernodes": self.supernodes, "clients": self.clients, "seed": self.seed,
            "relay": None if self.relay is None else self.relay.to_json(),
            "failover": None if self.failover is None else self.failover.to_json(),
            "capacity": None if self.capacity is None else self.capacity.to_json(),
            "targets": [asdict(t) for t in self.targets],
            "virtual_s": self.virtual_s, "wall_s": self.wall_s,
            "peak_rss_mb": self.peak_rss_mb, "notes": list(self.notes),
        }


def targets(relay: RelayReport | None, fail: FailoverReport | None,
            cap: CapacityReport | None) -> tuple[Target, ...]:
    """The issue's targets beside the figures (measured and reported, never asserted)."""
    out = []
    if relay is not None:
        out.append(Target("relayed/direct latency, median", "<= 1.3", relay.ratio_p50,
                          None if relay.ratio_p50 is None else relay.ratio_p50 <= 1.3))
    if fail is not None:
        worst = None
        if fail.reattach_max_s is not None and fail.reachable_max_s is not None:
            worst = max(fail.reattach_max_s, fail.reachable_max_s)
        out.append(Target("failover: reattached+reachable, worst s after detectable", "<= 3",
                          worst,
                          None if worst is None else
                          worst <= 3.0 and fail.within_3s == fail.affected))
        out.append(Target("messages lost on reliable channels", "0", float(fail.lost),
                          fail.lost == 0 and fail.unacknowledged == 0
                          and fail.broken_channels == 0))
    if cap is not None:
        out.append(Target("clients attached to one supernode", ">= 1000", float(cap.attached),
                          cap.attached >= 1000))
        out.append(Target("supernode memory per attached client, bytes", "reported",
                          float(cap.supernode_bytes_per_client), None))
    return tuple(out)


async def run(config: HybridConfig, progress: Progress | None = None, *,
              scenarios: frozenset[str] = frozenset({"relay", "failover", "capacity"}),
              ) -> HybridReport:
    """Every requested scenario, in one process, under the caller's MockClock."""
    report = progress or _quiet
    wall_start = time.perf_counter()
    virtual_start = trio.current_time()
    relay = fail = cap = None
    notes = []
    if scenarios & {"relay", "failover"}:
        async with open_world(config, supernodes=config.supernodes, clients=config.clients,
                              progress=report) as world:
            await world.start_clients(report)
            await trio.sleep(config.settle)
            if "relay" in scenarios:
                relay = await relay_latency(world, report)
            if "failover" in scenarios:
                fail = await failover(world, report)
    if "capacity" in scenarios:
        cap = await capacity(config, report)
        notes.append("capacity: supernode memory is what it released when its clients "
                     "vanished (tracemalloc, Python heap only); emulated socket buffers are "
                     "not counted on either side")
    report("done", 1.0)
    return HybridReport(
        supernodes=config.supernodes, clients=config.clients, seed=config.seed, relay=relay,
        failover=fail, capacity=cap, targets=targets(relay, fail, cap),
        virtual_s=round(trio.current_time() - virtual_start, 3),
        wall_s=round(time.perf_counter() - wall_start, 2),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        notes=tuple(notes),
    )
