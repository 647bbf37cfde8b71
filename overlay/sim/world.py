"""The hybrid simulator's world: a latency map, and on it a directory, supernodes and clients.

The real roles run unchanged over the emulated network, under the virtual
clock: a directory server, supernodes (:class:`~overlay.roles.supernode.Supernode`)
and edge clients (:class:`~overlay.roles.edge.EdgeClient`), each on its own
host with its own seeded ``random.Random``, each assembled by
:mod:`overlay.runtime` like any peer.  The scenarios run on it are in
:mod:`overlay.sim.hybrid`.

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

A little over 400 lines for one job, building the world: the map, the hosts
and links on it and the roles on the hosts are made in an order each step
depends on, and every scenario starts from all of it.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from overlay.addresses import Address
from overlay.directory.server.listener import DirectoryServer
from overlay.directory.server.passwords import HashCost, hash_password
from overlay.directory.server.service import DirectoryConfig
from overlay.directory.server.store import Store
from overlay.errors import OverlayError
from overlay.ids import Identity, NodeId
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.roles.edge import Credentials, EdgeClient, EdgeConfig
from overlay.roles.supernode import Supernode, SupernodeConfig
from overlay.runtime import EdgeRole, PeerSpec, SupernodeRole, run_peer
from overlay.sim.network import EmulatedNetwork

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
