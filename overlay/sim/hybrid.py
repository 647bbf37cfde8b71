"""The hybrid design in the simulator: NAT-bound clients relayed by supernodes, on a latency map.

The real roles run unchanged over the emulated network, under the virtual
clock: a directory server, supernodes (:class:`~overlay.roles.supernode.Supernode`)
and edge clients (:class:`~overlay.roles.edge.EdgeClient`), each on its own
host with its own seeded ``random.Random``.

Theory of operation
-------------------
A *latency map* places every host at a seeded random point of a square
``width`` seconds wide (uniformly, or around a few random centres, like users
in cities); a link's one-way latency is the euclidean distance between its
ends, never below ``latency_floor``.  So the map is the ground
truth: the distance between two clients is the latency of the *direct path*
they would use if they could reach each other, the yardstick the relayed path
is judged against.

Links exist from every client to the directory and to every supernode, between
all supernodes, and from every supernode to the directory; never between two
clients.  Clients do not listen, so any dial towards one is refused: that is
how NAT is modelled, and it means that every conversation between two clients
is relayed by supernodes.  Nothing else is scripted: which supernodes a
supernode links to (the nearest few plus random ones), where a client attaches
(its nearest, as far as its probes tell it, with a standby), how packets are
routed among supernodes (latency routing) and how a client fails over are all
the roles' own decisions.

Users and their contacts are written straight into the directory's store (with
a password hash at Argon2id's minimum cost) instead of registering through
the protocol: setup time is not what is measured.  The directory does its
SQLite and hashing inline (``inline_blocking``), because a worker thread takes
real time, during which the autojumping clock would leap past every timeout.

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
- :func:`failover`: every pair holds a reliable conversation (both ways, at a
  fixed rate); the supernode that is home to most clients is powered off mid
  conversation (silence, no FIN).  For each client it was home to: when its
  link noticed, when it had a new home, and when an echo from its peer first
  came back, all measured from the moment the failure became detectable
  (``hello_interval x dead_after`` after the cut); for each client it was the
  standby of, when a new standby was up.  Every message is numbered and
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
import hashlib
import itertools
import math
import random
import resource
import statistics
import struct
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from overlay.addresses import Address
from overlay.directory.passwords import HashCost, hash_password
from overlay.directory.server import DirectoryServer
from overlay.directory.service import DirectoryConfig
from overlay.directory.store import Store
from overlay.errors import OverlayError, TransportError
from overlay.ids import Identity, NodeId
from overlay.net.channels import Channel
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.roles.edge import Credentials, EdgeClient, EdgeConfig
from overlay.roles.supernode import Supernode, SupernodeConfig
from overlay.runtime import EdgeRole, PeerSpec, SupernodeRole, run_peer
from overlay.sim.network import EmulatedNetwork
from overlay.stats import quantile

DIRECTORY_HOST = "dir"
PORT = 1
PASSWORD = "simulated password"
CHEAP_HASH = HashCost(iterations=1, memory=8192)
"""Argon2id at its minimum cost: the simulator verifies hundreds of logins in one process."""
WATCH_LIMIT = 60.0
"""Virtual seconds after the cut within which a failed-over client must be back."""
ECHO_EVERY = 0.05
"""Seconds between the echoes a peer sends to find out when a client is reachable again."""
MESSAGE = struct.Struct(">Id")  # sequence number, virtual send time

Progress = Callable[[str, float], None]
"""``progress(phase, fraction)`` is called as a run advances (fraction in 0..1)."""


_EDGE = EdgeConfig()
_MESH = SupernodeConfig()


class SimulationError(OverlayError):
    """A scenario could not be set up (clients that never attach, a mesh that never forms)."""


@dataclass(frozen=True)
class HybridConfig:
    """Every knob of a run; times in seconds (virtual)."""

    supernodes: int = 20
    clients: int = 500
    seed: int = 1
    width: float = 0.100
    """Side of the latency map's square: the largest distance is width x sqrt(2)."""
    clusters: int = 0
    """0: hosts spread uniformly over the square.  Otherwise hosts gather around this
    many random centres (cities), at a normal distance of ``cluster_spread``."""
    cluster_spread: float = 0.005
    latency_floor: float = 0.001
    hello_interval: float = 1.0
    dead_after: int = 3
    candidates: int = _EDGE.candidates
    """Supernodes a client probes when choosing where to attach (the role's default)."""
    edge_refresh: float = _EDGE.refresh_interval
    mesh_nearest: int = _MESH.nearest
    mesh_random: int = _MESH.random_extra
    mesh_refresh: float = _MESH.refresh_interval
    join_spread: float = 20.0
    """Clients start at random moments within this window, as users do (not all at once)."""
    attach_limit: float = 120.0
    """Every client must be attached this long after the last one started."""
    mesh_settle: float = 10.0
    """Quiet time after the supernode mesh is connected, for route metrics to settle."""
    settle: float = 60.0
    """Time after the last client attached before measuring (edge refresh rounds)."""
    echoes: int = 3
    """Echoes per pair in the relay scenario (the median round trip is kept)."""
    rate: float = 5.0
    """Messages per second each way in each conversation of the failover scenario."""
    before_cut: float = 5.0
    after_detect: float = 15.0
    """Conversations go on this long after the failure became detectable."""
    drain_limit: float = 300.0
    """After that, every message must be acknowledged within this long, or counts as lost."""
    capacity_clients: int = 1000
    capacity_echo_pairs: int = 50
    capacity_settle: float = 10.0

    def __post_init__(self) -> None:
        if self.supernodes < 1 or self.clients < 0 or self.capacity_clients < 0:
            raise ValueError("need at least one supernode and a non-negative client count")
        if not self.width > 0 or not self.latency_floor > 0 or not self.rate > 0:
            raise ValueError("width, latency floor and rate must be positive")
        if self.clusters < 0 or not self.cluster_spread > 0:
            raise ValueError("clusters cannot be negative, cluster_spread must be positive")

    @property
    def link(self) -> LinkConfig:
        """Every node's link timing: the keepalive decides how soon a failure is seen."""
        return LinkConfig(hello_interval=self.hello_interval, dead_after=self.dead_after,
                          handshake_timeout=max(5.0, 4 * self.hello_interval))

    @property
    def detection_delay(self) -> float:
        """How long after a power cut the failure is detectable (the dead interval)."""
        return self.hello_interval * self.dead_after


# --- the latency map ---------------------------------------------------------------------


class LatencyMap:
    """Hosts at points of a plane; a link's latency is their distance (seconds)."""

    def __init__(self, width: float, floor: float, *, centres: Sequence[tuple[float, float]] = (),
                 spread: float = 0.0) -> None:
        self.width = width
        self.floor = floor
        self.centres = list(centres)
        self.spread = spread
        self.points: dict[str, tuple[float, float]] = {}

    def place(self, host: str, rng: random.Random) -> None:
        """A random point: anywhere in the square, or near a random centre if there are any."""
        if not self.centres:
            self.points[host] = (rng.uniform(0.0, self.width), rng.uniform(0.0, self.width))
            return
        cx, cy = rng.choice(self.centres)
        self.points[host] = (min(self.width, max(0.0, rng.gauss(cx, self.spread))),
                             min(self.width, max(0.0, rng.gauss(cy, self.spread))))

    def place_at(self, host: str, x: float, y: float) -> None:
        self.points[host] = (x, y)

    def latency(self, a: str, b: str) -> float:
        (ax, ay), (bx, by) = self.points[a], self.points[b]
        return max(self.floor, math.hypot(ax - bx, ay - by))

    def nearest(self, host: str, candidates: Sequence[str]) -> str:
        return min(candidates, key=lambda other: (self.latency(host, other), other))


# --- the world: hosts, roles, pairs ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SupernodeHandle:
    """A running supernode: its host on the map, its node and its role."""

    host: str
    node: Node
    role: Supernode


@dataclass(frozen=True, slots=True)
class ClientHandle:
    """A running edge client: its host on the map, its user, its node and its role."""

    host: str
    username: str
    node: Node
    role: EdgeClient


def identity_of(seed: int, host: str) -> Identity:
    """A host's key pair, from the seed: the same run builds the same node ids."""
    return Identity.from_seed(hashlib.sha256(f"hybrid/{seed}/{host}".encode()).digest())


class HybridWorld:
    """One built scenario: the network, the directory, the running roles, the pairs.

    Made by :func:`open_world`; roles run in the world's nursery until it closes.
    """

    def __init__(self, config: HybridConfig, net: EmulatedNetwork, latency_map: LatencyMap,
                 server: DirectoryServer, nursery: trio.Nursery, *, supernode_hosts: list[str],
                 client_hosts: list[str], pairs: list[tuple[int, int]],
                 client_link: LinkConfig) -> None:
        self.config = config
        self.net = net
        self.map = latency_map
        self.server = server
        self.server_key = server.identity.public_key
        self.supernode_hosts = supernode_hosts
        self.client_hosts = client_hosts
        self.pair_indices = pairs
        self.client_link = client_link
        self.supernodes: list[SupernodeHandle] = []
        self.clients: list[ClientHandle] = []
        self._nursery = nursery

    @property
    def directory(self) -> Address:
        return (DIRECTORY_HOST, PORT)

    def pairs(self) -> list[tuple[ClientHandle, ClientHandle]]:
        """The conversing pairs (each client is in at most one)."""
        return [(self.clients[a], self.clients[b]) for a, b in self.pair_indices]

    def supernode_by_id(self) -> dict[NodeId, SupernodeHandle]:
        """Roles speak in node ids; the map and the network in host names."""
        return {handle.node.node_id: handle for handle in self.supernodes}

    def _rng(self, host: str) -> random.Random:
        """One stream per host, so that one host's draws never shift another's."""
        return random.Random(f"hybrid/{self.config.seed}/rng/{host}")

    # --- supernodes -----------------------------------------------------------------------

    async def start_supernodes(self, progress: Progress) -> None:
        """Start every supernode, then wait for a connected mesh with settled routes."""
        for index, host in enumerate(self.supernode_hosts):
            progress("starting supernodes", index / len(self.supernode_hosts))
            handle: SupernodeHandle = await self._nursery.start(self._run_supernode, host)
            self.supernodes.append(handle)
        for handle in self.supernodes:  # the first ones started with an empty list
            handle.role.refresh_soon()
        ids = [handle.node.node_id for handle in self.supernodes]
        limit = 10 * self.config.mesh_refresh + 60.0
        with trio.move_on_after(limit):
            while True:
                routed = sum(1 for h in self.supernodes for other in ids
                             if other == h.node.node_id or h.node.router.next_hop(other))
                progress("forming the mesh", routed / len(ids) ** 2)
                if routed == len(ids) ** 2:
                    break
                await trio.sleep(0.5)
        if routed < len(ids) ** 2:
            raise SimulationError(f"the supernode mesh did not connect within {limit:g} s")
        await trio.sleep(self.config.mesh_settle)

    async def _run_supernode(self, host: str, *,
                             task_status: trio.TaskStatus[SupernodeHandle]) -> None:
        rng = self._rng(host)
        config = NodeConfig(listen=(host, PORT), link=self.config.link)
        transport = self.net.transport(host)
        role = SupernodeRole(self.directory, self.server_key, (host, PORT),
                             SupernodeConfig(nearest=self.config.mesh_nearest,
                                             random_extra=self.config.mesh_random,
                                             refresh_interval=self.config.mesh_refresh))
        spec = PeerSpec(identity_of(self.config.seed, host), config, role, transport=transport,
                        rng=rng, nonce_source=rng.randbytes)
        async with run_peer(spec) as peer:
            assert peer.supernode is not None
            task_status.started(SupernodeHandle(host, peer.node, peer.supernode))
            await trio.sleep_forever()

    # --- clients --------------------------------------------------------------------------

    async def start_clients(self, progress: Progress) -> None:
        """Start every client at a random moment of the join window; return once all are
        attached (SimulationError if some never are)."""
        rng = random.Random(f"hybrid/{self.config.seed}/join")
        delays = [rng.uniform(0.0, self.config.join_spread) for _ in self.client_hosts]
        started: dict[int, ClientHandle] = {}
        total = len(self.client_hosts)

        async def join(index: int, delay: float) -> None:
            await trio.sleep(delay)
            started[index] = await self._nursery.start(self._run_client, index)

        limit = self.config.join_spread + self.config.attach_limit
        with trio.move_on_after(limit):
            async with trio.open_nursery() as joining:
                for index, delay in enumerate(delays):
                    joining.start_soon(join, index, delay)
                while len(started) < total:
                    progress("attaching clients", len(started) / total)
                    await trio.sleep(1.0)
        if len(started) < total:
            raise SimulationError(f"{total - len(started)} of {total} clients were not attached "
                                  f"within {limit:g} s")
        self.clients = [started[index] for index in range(total)]

    async def _run_client(self, index: int, *,
                          task_status: trio.TaskStatus[ClientHandle]) -> None:
        host = self.client_hosts[index]
        rng = self._rng(host)
        config = NodeConfig(listen=None, edge=True, link=self.client_link)
        transport = self.net.transport(host)
        username = _username(index)
        role = EdgeRole(Credentials(username, password=PASSWORD), self.directory,
                        self.server_key, EdgeConfig(candidates=self.config.candidates,
                                                    refresh_interval=self.config.edge_refresh))
        spec = PeerSpec(identity_of(self.config.seed, host), config, role, transport=transport,
                        rng=rng, nonce_source=rng.randbytes)
        async with run_peer(spec) as peer:
            assert peer.edge is not None
            task_status.started(ClientHandle(host, username, peer.node, peer.edge))
            await trio.sleep_forever()


def _username(index: int) -> str:
    return f"user{index}"


def _pairs(count: int, rng: random.Random) -> list[tuple[int, int]]:
    """A random matching of ``count`` clients (one left over when the count is odd)."""
    order = list(range(count))
    rng.shuffle(order)
    return [(order[i], order[i + 1]) for i in range(0, count - 1, 2)]


def _populate(store: Store, seed: int, clients: int, pairs: list[tuple[int, int]]) -> None:
    """Accounts and accepted contacts, straight into the store (setup is not measured)."""
    now = int(time.time())
    password_hash = hash_password(PASSWORD, CHEAP_HASH)  # one salt for all: verifies the same
    ids = []
    for index in range(clients):
        key = identity_of(seed, f"c{index}").public_key
        ids.append(store.create_user(_username(index), password_hash, key, now).id)
    for a, b in pairs:
        store.add_request(ids[a], ids[b], now)
        store.accept(ids[a], ids[b], now)


@asynccontextmanager
async def open_world(config: HybridConfig, *, supernodes: int, clients: int,
                     client_link: LinkConfig | None = None,
                     progress: Progress | None = None) -> AsyncIterator[HybridWorld]:
    """Build the map, the network and the directory, start the supernodes (mesh settled);
    the clients are started by :meth:`HybridWorld.start_clients`.  Call under a MockClock."""
    report = progress or _quiet
    rng = random.Random(config.seed)
    centres = [(rng.uniform(0.0, config.width), rng.uniform(0.0, config.width))
               for _ in range(config.clusters)]
    latency_map = LatencyMap(config.width, config.latency_floor, centres=centres,
                             spread=config.cluster_spread)
    latency_map.place_at(DIRECTORY_HOST, config.width / 2, config.width / 2)
    supernode_hosts = [f"s{i}" for i in range(supernodes)]
    client_hosts = [f"c{i}" for i in range(clients)]
    for host in supernode_hosts + client_hosts:
        latency_map.place(host, rng)
    pairs = _pairs(clients, random.Random(f"hybrid/{config.seed}/pairs"))
    store = Store(":memory:")
    try:
        _populate(store, config.seed, clients, pairs)
        async with EmulatedNetwork(random.Random(config.seed + 1)) as net:
            for host in supernode_hosts + client_hosts:
                net.add_link(host, DIRECTORY_HOST, latency_map.latency(host, DIRECTORY_HOST))
            for i, a in enumerate(supernode_hosts):
                for b in supernode_hosts[i + 1:]:
                    net.add_link(a, b, latency_map.latency(a, b))
            for client in client_hosts:
                for supernode in supernode_hosts:
                    net.add_link(client, supernode, latency_map.latency(client, supernode))
            server = DirectoryServer(
                identity_of(config.seed, DIRECTORY_HOST), store,
                directory_config=DirectoryConfig(inline_blocking=True,
                                                 hash_cost=HashCost(iterations=1,
                                                                    memory=8 * 1024 * 1024)),
                transport=net.transport(DIRECTORY_HOST))
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve, (DIRECTORY_HOST, PORT))
                world = HybridWorld(config, net, latency_map, server, nursery,
                                    supernode_hosts=supernode_hosts, client_hosts=client_hosts,
                                    pairs=pairs, client_link=client_link or config.link)
                await world.start_supernodes(report)
                yield world
                nursery.cancel_scope.cancel()
    finally:
        store.close()


def _quiet(phase: str, fraction: float) -> None:
    pass


# --- statistics ------------------------------------------------------------------------------


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


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


# --- scenario (b): failover under reliable conversations ---------------------------------------


class _Direction:
    """One direction of a conversation: what was sent, what arrived and when."""

    def __init__(self, sender: Channel, receiver: Channel) -> None:
        self.sender = sender
        self.receiver = receiver
        self.sent = 0
        self.received: list[int] = []
        self.arrivals: list[float] = []
        self.delays: list[float] = []
        self.acknowledged = False
        self.acknowledged_at: float | None = None
        self.error: str | None = None

    async def send(self, rate: float, stop_at: float, phase: float, drain_limit: float) -> None:
        try:
            await trio.sleep(phase)
            while trio.current_time() < stop_at:
                await self.sender.send(MESSAGE.pack(self.sent, trio.current_time()))
                self.sent += 1
                await trio.sleep(1 / rate)
            with trio.move_on_after(drain_limit):
                await self.sender.wait_acknowledged()
                self.acknowledged = True
                self.acknowledged_at = trio.current_time()
        except TransportError as exc:
            self.error = str(exc)

    async def receive(self) -> None:
        try:
            while True:
                seq, sent_at = MESSAGE.unpack(await self.receiver.receive())
                now = trio.current_time()
                self.received.append(seq)
                self.arrivals.append(now)
                self.delays.append(now - sent_at)
        except TransportError:
            pass

    def counts(self) -> tuple[int, int, int]:
        """(lost, duplicated, reordered): reordered counts arrivals below their predecessor."""
        unique = set(self.received)
        lost = sum(1 for seq in range(self.sent) if seq not in unique)
        duplicated = len(self.received) - len(unique)
        reordered = sum(1 for prev, seq in itertools.pairwise(self.received) if seq < prev)
        return lost, duplicated, reordered

    def longest_pause(self, start: float, end: float) -> float:
        """The longest time without an arrival within [start, end]."""
        times = [start, *(t for t in self.arrivals if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(times))


@dataclass(frozen=True, slots=True)
class FailoverSample:
    client: str
    peer: str
    detected: float | None
    """When the client's home link went down, from the moment it became detectable."""
    reattached: float | None
    reachable: float | None
    """When an echo from the peer first came back, from the moment it became detectable."""
    standby_up: bool
    """Whether the client had a standby attachment up when its home died."""


@dataclass(frozen=True)
class FailoverReport:
    victim: str
    detection_delay_s: float
    affected: int
    """Clients whose home the victim was."""
    standby_lost: int
    """Clients whose standby the victim was."""
    standby_replaced: int
    """Of those, how many had a new standby up within WATCH_LIMIT s."""
    standby_replaced_max_s: float | None
    """The last of them, after the failure became detectable."""
    without_standby: int
    """Affected clients that had no standby attachment up when their home died."""
    reattached: int
    reachable: int
    detected_p50_s: float | None
    reattach_p50_s: float | None
    reattach_max_s: float | None
    reachable_p50_s: float | None
    reachable_max_s: float | None
    within_3s: int
    """Affected clients reattached and reachable within 3 s of detectability."""
    conversations: int
    messages_sent: int
    messages_delivered: int
    lost: int
    duplicated: int
    reordered: int
    unacknowledged: int
    """Directions whose last messages were still unacknowledged ``drain_limit`` s after
    the end (their missing messages count as lost)."""
    broken_channels: int
    retransmissions: int
    pause_p50_s: float | None
    """Longest pause in delivery per direction of the affected conversations (median)."""
    pause_max_s: float | None
    delay_p50_s: float | None
    """Send-to-delivery time of every message of every conversation."""
    delay_p99_s: float | None
    delay_max_s: float | None
    drained_s: float | None
    """When the last conversation had every message acknowledged, after sending stopped."""
    samples: tuple[FailoverSample, ...] = field(repr=False, default=())
    problems: tuple[str, ...] = ()
    """A line per conversation direction that did not deliver everything exactly once."""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["samples"]
        return out


async def _first_echo(src: Node, dst: NodeId, until: float) -> float | None:
    """When an echo from ``src`` to ``dst`` first comes back (one sent every ECHO_EVERY s)."""
    first: list[float] = []
    done = trio.Event()

    async def one() -> None:
        result = await src.echo(dst, patience=2.0)
        if result.kind == "reply" and not first:
            first.append(trio.current_time())
            done.set()

    async with trio.open_nursery() as nursery:
        while not done.is_set() and trio.current_time() < until:
            nursery.start_soon(one)
            with trio.move_on_after(ECHO_EVERY):
                await done.wait()
        nursery.cancel_scope.cancel()
    return first[0] if first else None


async def _watch(client: ClientHandle, peer: ClientHandle, victim: NodeId, detectable: float,
                 out: list[FailoverSample]) -> None:
    node, role = client.node, client.role
    detected = reattached = reachable = None
    standby = role.attachment.standby if role.attachment is not None else None
    standby_up = standby is not None and standby in node.neighbours

    async def watch_link() -> None:
        nonlocal detected, reattached
        await node.wait_until(lambda: victim not in node.neighbours)
        detected = trio.current_time() - detectable
        await node.wait_until(lambda: role.home is not None and role.home != victim
                              and role.home in node.neighbours)
        reattached = trio.current_time() - detectable

    async def watch_reach() -> None:
        nonlocal reachable
        at = await _first_echo(peer.node, node.node_id, trio.current_time() + WATCH_LIMIT)
        reachable = None if at is None else at - detectable

    with trio.move_on_after(WATCH_LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_link)
            nursery.start_soon(watch_reach)
    out.append(FailoverSample(client.host, peer.host, _r(detected), _r(reattached),
                              _r(reachable), standby_up))


async def _watch_standby(client: ClientHandle, victim: NodeId, detectable: float,
                         out: list[float]) -> None:
    """When a client whose standby died has a new standby up (from the moment the failure
    became detectable), so that it can fail over again."""
    node, role = client.node, client.role

    def replaced() -> bool:
        attachment = role.attachment
        return (attachment is not None and attachment.home != victim
                and attachment.standby not in (None, victim)
                and attachment.standby in node.neighbours)

    with trio.move_on_after(WATCH_LIMIT):
        await node.wait_until(replaced)
        out.append(trio.current_time() - detectable)


async def _open_conversations(
        pairs: list[tuple[ClientHandle, ClientHandle]]) -> list[tuple[Channel, Channel]]:
    """A reliable channel per pair, in the order of the pairs: (opened by a, accepted by b)."""
    opened: dict[int, tuple[Channel, Channel]] = {}

    async def open_pair(index: int, a: ClientHandle, b: ClientHandle) -> None:
        await a.role.locate(b.username)  # where the other is attached, as a chat would
        await b.role.locate(a.username)
        channel = a.node.open_channel(b.node.node_id)
        accepted = await b.node.accept_channel()  # each client talks to one peer only
        await channel.wait_open()
        opened[index] = (channel, accepted)

    async with trio.open_nursery() as nursery:
        for index, (a, b) in enumerate(pairs):
            nursery.start_soon(open_pair, index, a, b)
    return [opened[index] for index in range(len(pairs))]


async def failover(world: HybridWorld, progress: Progress | None = None) -> FailoverReport:
    """Power off the busiest home supernode under conversations (module docstring)."""
    report = progress or _quiet
    config = world.config
    rng = random.Random(f"hybrid/{config.seed}/failover")
    pairs = world.pairs()
    report("opening conversations", 0.0)
    ordered = await _open_conversations(pairs)
    directions = [(_Direction(ab, ba), _Direction(ba, ab)) for ab, ba in ordered]

    start = trio.current_time()
    cut_at = start + config.before_cut
    detectable = cut_at + config.detection_delay
    stop_at = detectable + config.after_detect
    by_id = world.supernode_by_id()
    samples: list[FailoverSample] = []
    standby_times: list[float] = []
    chosen: dict[str, Any] = {}

    async def cut_and_watch() -> None:
        await trio.sleep_until(cut_at)
        homes = Counter(c.role.home for c in world.clients if c.role.home is not None)
        if not homes:
            raise SimulationError("no client is attached: nothing to fail over")
        victim_id, _count = max(homes.items(), key=lambda item: (item[1], by_id[item[0]].host))
        victim = by_id[victim_id]
        partner = {}
        for a, b in pairs:
            partner[a.host], partner[b.host] = b, a
        affected = [c for c in world.clients if c.role.home == victim_id and c.host in partner]
        standby_lost = [c for c in world.clients if c.role.attachment is not None
                        and c.role.attachment.standby == victim_id]
        chosen.update(victim=victim.host, affected={c.host for c in affected},
                      peers={partner[c.host].host for c in affected},
                      standby_lost=len(standby_lost))
        world.net.set_host_up(victim.host, False)
        async with trio.open_nursery() as nursery:
            for client in affected:
                nursery.start_soon(_watch, client, partner[client.host], victim_id, detectable,
                                   samples)
            for client in standby_lost:
                nursery.start_soon(_watch_standby, client, victim_id, detectable,
                                   standby_times)

    async def show_progress() -> None:
        while trio.current_time() < stop_at:
            report("failover", (trio.current_time() - start) / (stop_at - start))
            await trio.sleep(1.0)

    async with trio.open_nursery() as receivers:
        for pair in directions:
            for direction in pair:
                receivers.start_soon(direction.receive)
        async with trio.open_nursery() as work:
            work.start_soon(show_progress)
            work.start_soon(cut_and_watch)
            for pair in directions:
                for direction in pair:
                    work.start_soon(direction.send, config.rate, stop_at,
                                    rng.uniform(0.0, 1 / config.rate), config.drain_limit)
        await trio.sleep(1.0)  # acknowledged means received: let the readers take it
        receivers.cancel_scope.cancel()
    chosen["standby_times"] = standby_times
    result = _failover_report(world, chosen, samples=samples, directions=directions,
                              channels=ordered, cut_at=cut_at, stop_at=stop_at)
    for ab, ba in ordered:
        ab.abort("scenario over")
        ba.abort("scenario over")
    return result


def _describe(world: HybridWorld, direction: _Direction, counts: tuple[int, int, int]) -> str:
    """One line on a conversation direction that did not deliver everything exactly once."""
    by_node = {c.node.node_id: c for c in world.clients}
    homes = world.supernode_by_id()
    receiver = by_node[direction.sender.peer]
    sender = by_node[direction.receiver.peer]
    stats = direction.sender.statistics()
    location = sender.node.forwarder.locations.get(receiver.node.node_id)
    route = "-"
    if sender.role.home in homes and location in homes:
        route = _mesh_trace(world, homes[sender.role.home], homes[location])
    return (f"{sender.host}->{receiver.host}: sent {direction.sent}, delivered "
            f"{len(direction.received)}, lost/duplicated/reordered {counts}, acknowledged "
            f"{direction.acknowledged}, error {direction.error}; {stats.retransmissions} "
            f"retransmissions, {stats.timeouts} timeouts, rto {stats.rto:.2f} s, "
            f"{stats.buffered_bytes} bytes unacknowledged; route {route}")


def _mesh_trace(world: HybridWorld, src: SupernodeHandle, dst: SupernodeHandle) -> str:
    """The supernodes a packet from ``src`` to ``dst`` crosses, as ``s1 > s4 > s2``."""
    by_id = world.supernode_by_id()
    hosts, here = [src.host], src
    for _ in range(len(world.supernodes)):
        if here is dst:
            return " > ".join(hosts)
        hop = here.node.router.next_hop(dst.node.node_id)
        if hop is None:
            return " > ".join([*hosts, "(no route)"])
        here = by_id[hop]
        hosts.append(here.host)
    return " > ".join([*hosts, "(loop)"])


def _failover_report(world: HybridWorld, chosen: dict[str, Any], *,
                     samples: list[FailoverSample],
                     directions: list[tuple[_Direction, _Direction]],
                     channels: list[tuple[Channel, Channel]], cut_at: float,
                     stop_at: float) -> FailoverReport:
    config = world.config
    samples.sort(key=lambda s: s.client)
    lost = duplicated = reordered = sent = delivered = unacked = broken = 0
    pauses, delays, drained = [], [], []
    problems: list[str] = []
    hosts_of = {c.node.node_id: c.host for c in world.clients}
    involved = chosen["affected"] | chosen["peers"]
    for (ab, ba), (ch_a, ch_b) in zip(directions, channels, strict=True):
        touched = hosts_of[ch_a.peer] in involved or hosts_of[ch_b.peer] in involved
        for direction in (ab, ba):
            counts = direction.counts()
            lost, duplicated, reordered = (lost + counts[0], duplicated + counts[1],
                                           reordered + counts[2])
            sent += direction.sent
            delivered += len(direction.received)
            unacked += not direction.acknowledged and direction.error is None
            broken += direction.error is not None
            delays.extend(direction.delays)
            if direction.acknowledged_at is not None:
                drained.append(direction.acknowledged_at - stop_at)
            if touched:
                pauses.append(direction.longest_pause(cut_at, stop_at))
            if any(counts) or not direction.acknowledged:
                problems.append(_describe(world, direction, counts))
    retransmissions = sum(ch.statistics().retransmissions for pair in channels for ch in pair)
    reattach = [s.reattached for s in samples if s.reattached is not None]
    reach = [s.reachable for s in samples if s.reachable is not None]
    detected = [s.detected for s in samples if s.detected is not None]
    within = sum(1 for s in samples if s.reattached is not None and s.reachable is not None
                 and max(s.reattached, s.reachable) <= 3.0)
    return FailoverReport(
        victim=chosen["victim"], detection_delay_s=config.detection_delay,
        affected=len(samples), standby_lost=chosen["standby_lost"],
        standby_replaced=len(chosen["standby_times"]),
        standby_replaced_max_s=_r(max(chosen["standby_times"], default=None)),
        without_standby=sum(1 for s in samples if not s.standby_up),
        reattached=len(reattach), reachable=len(reach),
        detected_p50_s=_r(quantile(detected, 0.5)),
        reattach_p50_s=_r(quantile(reattach, 0.5)), reattach_max_s=_r(max(reattach, default=None)),
        reachable_p50_s=_r(quantile(reach, 0.5)), reachable_max_s=_r(max(reach, default=None)),
        within_3s=within, conversations=len(channels), messages_sent=sent,
        messages_delivered=delivered, lost=lost, duplicated=duplicated, reordered=reordered,
        unacknowledged=unacked, broken_channels=broken, retransmissions=retransmissions,
        pause_p50_s=_r(quantile(pauses, 0.5)), pause_max_s=_r(max(pauses, default=None)),
        delay_p50_s=_r(quantile(delays, 0.5)), delay_p99_s=_r(quantile(delays, 0.99)),
        delay_max_s=_r(max(delays, default=None)),
        drained_s=_r(max(drained, default=None)),
        samples=tuple(samples), problems=tuple(problems),
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
