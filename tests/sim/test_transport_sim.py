"""Reliable channels in the simulator, across routes that break and reconverge."""

from __future__ import annotations

import random
from contextlib import AsyncExitStack

import networkx as nx
import trio
import trio.testing

from overlay.errors import ChannelClosed
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.sim.network import EmulatedNetwork
from tests.conftest import make_identity

MESSAGES = 10_000


def ladder(length: int) -> nx.Graph[int]:
    """Two parallel lines of ``length`` nodes (0..length-1 on top), joined by rungs.

    The top line is the fast path (5 ms a hop); the bottom one is slower (8 ms).
    """
    graph: nx.Graph[int] = nx.Graph()
    for i in range(length - 1):
        graph.add_edge(i, i + 1, latency=0.005)
        graph.add_edge(length + i, length + i + 1, latency=0.008)
    for i in range(length):
        graph.add_edge(i, length + i, latency=0.003)
    return graph


async def test_ten_thousand_messages_six_hops_apart_survive_failing_links(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seed = 5
    print(f"seed={seed}")
    graph = ladder(7)  # node 0 to node 6: six hops along the top
    async with EmulatedNetwork(random.Random(seed)) as net, AsyncExitStack() as stack:
        for a, b in graph.edges:
            net.add_link(f"n{a}", f"n{b}", graph.edges[a, b]["latency"])
        nodes: list[Node] = []
        for i in sorted(graph.nodes):
            rng = random.Random(seed * 100 + i)
            config = NodeConfig(listen=(f"n{i}", 1), link=LinkConfig(hello_interval=0.5,
                                                                      dead_after=3))
            nodes.append(await stack.enter_async_context(Node(
                make_identity(f"sim{i}"), config, transport=net.transport(f"n{i}"),
                rng=rng, nonce_source=rng.randbytes)))
        for a, b in graph.edges:
            nodes[min(a, b)].connect((f"n{max(a, b)}", 1))
        source, sink = nodes[0], nodes[6]
        await source.wait_until(lambda: source.router.next_hop(sink.node_id) is not None)
        await sink.wait_until(lambda: sink.router.next_hop(source.node_id) is not None)
        received: list[bytes] = []

        async def receive_all() -> None:
            async with await sink.accept_channel() as channel:
                try:
                    while True:
                        received.append(await channel.receive())
                except ChannelClosed:
                    pass

        async def break_links() -> None:
            for a, b in ((2, 3), (4, 5), (0, 1)):  # on the path, one after another
                await trio.sleep(4.0)
                net.set_link_up(f"n{a}", f"n{b}", False)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_all)
            nursery.start_soon(break_links)
            started = trio.current_time()
            async with source.open_channel(sink.node_id) as channel:
                for i in range(MESSAGES):
                    await channel.send(i.to_bytes(4, "big") * 8)
                    if i % 5 == 0:
                        await trio.sleep(0.01)  # 20 s of traffic, across all three failures
                last_sent = trio.current_time() - started
                await channel.wait_acknowledged()
                stats = channel.statistics()
        assert last_sent > 13.0, "sending must go on past the last failure (t=12 s)"
        assert received == [i.to_bytes(4, "big") * 8 for i in range(MESSAGES)]
        assert stats.retransmissions > 0, "the failures must actually have cost packets"
