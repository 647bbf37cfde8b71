"""Hybrid scenario (b), failover: a home supernode dies under reliable conversations.

Every pair holds a reliable conversation (both ways, at a fixed rate); the
supernode that is home to most clients is powered off mid conversation
(silence, no FIN); see :mod:`overlay.sim.hybrid` for what is measured.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from overlay.errors import TransportError
from overlay.ids import NodeId
from overlay.net.channels import Channel
from overlay.net.node import Node
from overlay.sim.world import (
    ECHO_EVERY,
    MESSAGE,
    WATCH_LIMIT,
    ClientHandle,
    HybridWorld,
    Progress,
    SimulationError,
    SupernodeHandle,
    _quiet,
    _r,
)
from overlay.stats import quantile

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
