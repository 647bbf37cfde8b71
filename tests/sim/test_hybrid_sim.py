"""The hybrid scenarios at small scale: correctness properties, never timings.

Each test prints its seed; a failure replays from it (up to trio's shuffling
of tasks that wake at the same instant).
"""

from __future__ import annotations

import trio
import trio.testing

from overlay.sim import hybrid
from overlay.sim.hybrid import HybridConfig, open_world

SMALL = HybridConfig(supernodes=5, clients=30, seed=3, join_spread=5.0, settle=10.0,
                     mesh_settle=5.0, rate=5.0, before_cut=3.0, after_detect=8.0,
                     capacity_clients=40, capacity_echo_pairs=10, capacity_settle=3.0)


async def test_nat_bound_clients_attach_and_are_relayed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    print(f"seed={SMALL.seed}")
    async with open_world(SMALL, supernodes=SMALL.supernodes, clients=SMALL.clients) as world:
        await world.start_clients(hybrid._quiet)
        await trio.sleep(SMALL.settle)
        supernode_ids = {h.node.node_id for h in world.supernodes}
        for client in world.clients:
            assert client.node.listen_address is None  # nobody can dial it: NAT
            assert client.role.home in supernode_ids
            assert client.role.home in client.node.neighbours
        for handle in world.supernodes:
            # Routing tables hold supernodes only: edge clients are never destinations.
            assert set(handle.node.router.destinations()) <= supernode_ids
            assert set(handle.node.router.destinations()) == supernode_ids - {
                handle.node.node_id}
        attached = sum(len(h.node.attached_clients) for h in world.supernodes)
        assert attached >= len(world.clients)  # each at its home, most at a standby too
        report = await hybrid.relay_latency(world)
    assert report.pairs == SMALL.clients // 2
    assert report.answered == report.pairs
    for sample in report.samples:
        assert sample.relayed is not None and sample.ratio is not None
        # No path between two clients beats the straight line between them on the map.
        assert sample.relayed >= sample.direct - 1e-6
        assert sample.ideal <= sample.nearest + 1e-9
    assert report.ratio_p50 is not None and report.ratio_p90 is not None
    assert 1.0 <= report.ratio_p50 <= report.ratio_p90
    assert report.mesh_stretch_p50 is not None and report.mesh_stretch_p50 >= 1.0 - 1e-6


async def test_a_supernode_power_cut_loses_no_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    print(f"seed={SMALL.seed}")
    async with open_world(SMALL, supernodes=SMALL.supernodes, clients=SMALL.clients) as world:
        await world.start_clients(hybrid._quiet)
        await trio.sleep(SMALL.settle)
        report = await hybrid.failover(world)
        victim = next(h for h in world.supernodes if h.host == report.victim)
        for sample in report.samples:
            client = next(c for c in world.clients if c.host == sample.client)
            assert client.role.home not in (None, victim.node.node_id)
            assert client.role.failovers >= 1
    assert report.affected >= 1
    assert report.reattached == report.affected
    assert report.reachable == report.affected
    assert report.messages_sent > 0
    assert report.problems == ()
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, 0)
    assert report.unacknowledged == 0 and report.broken_channels == 0
    assert report.messages_delivered == report.messages_sent
    assert report.retransmissions > 0, "the power cut must actually have cost packets"
    # A client that lost only its standby gets a new one without waiting for its next
    # refresh, so that a second failure is again a switch, not a search.
    assert report.standby_replaced == report.standby_lost
    if report.standby_replaced_max_s is not None:
        assert report.standby_replaced_max_s < SMALL.edge_refresh
    print(report)


async def test_one_supernode_serves_every_client_and_memory_is_measured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    print(f"seed={SMALL.seed}")
    report = await hybrid.capacity(SMALL)
    assert report.attached == SMALL.capacity_clients
    assert report.echo_replies == report.echo_pairs == SMALL.capacity_echo_pairs
    assert report.supernode_released_links == SMALL.capacity_clients
    assert 0 < report.supernode_bytes_per_client < report.process_bytes_per_client


def test_targets_are_reported_beside_the_figures() -> None:
    relay = hybrid.RelayReport(
        pairs=2, answered=2, ratio_p50=1.2, ratio_p90=2.0, relayed_p50_ms=1.0,
        relayed_p90_ms=2.0, direct_p50_ms=1.0, direct_p90_ms=1.0, nearest_relay_ratio_p50=1.1,
        ideal_ratio_p50=1.0, at_nearest_share=1.0, home_extra_p50_ms=0.0,
        home_extra_p90_ms=0.0, mesh_stretch_p50=1.0, mesh_stretch_p90=1.0)
    (target,) = hybrid.targets(relay, None, None)
    assert target.measured == 1.2 and target.met is True
    assert hybrid.quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert hybrid.quantile([], 0.9) is None
