"""``overlay bench transport`` in one process: every node and forwarder shares one core.

The default mode: quick to start and steady, but a line of h + 2 nodes runs
all of their work on one core (the GIL), and so does the baseline's line of
forwarders; see :mod:`overlay.bench.transport_processes` for one process each.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio

from overlay.bench.progress import Progress
from overlay.bench.transport import (
    Figures,
    Handshakes,
    TransportConfig,
    TransportReport,
    bounded,
    handshake_times,
    handshakes,
    hop_result,
    new_identity,
    node_source,
    plain_source,
    report,
    serve_forwarder,
    serve_node_sink,
    serve_plain_sink,
    tcp_connect_times,
)
from overlay.net.node import Node, NodeConfig


@contextlib.asynccontextmanager
async def _line(count: int) -> AsyncIterator[list[Node]]:
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        for _ in range(count):
            node = await stack.enter_async_context(Node(new_identity(), NodeConfig()))
            if nodes:
                assert nodes[-1].listen_address is not None
                node.connect(nodes[-1].listen_address)
            nodes.append(node)
        for node in nodes:
            others = [n.node_id for n in nodes if n is not node]
            await node.wait_until(lambda node=node, others=others:  # type: ignore[misc]
                                  all(node.router.next_hop(o) for o in others))
        yield nodes


async def _overlay(relays: int, config: TransportConfig) -> Figures:
    async with _line(relays + 2) as nodes, trio.open_nursery() as nursery:
        nursery.start_soon(serve_node_sink, nodes[-1])
        figures = await node_source(nodes[0], nodes[-1].node_id, config.size, config.count,
                                    config.pings)
        nursery.cancel_scope.cancel()
    return figures


async def _baseline(relays: int, config: TransportConfig) -> Figures:
    async with trio.open_nursery() as nursery:
        port = await serve_plain_sink(nursery)
        for _ in range(relays):
            port = await serve_forwarder(nursery, port)
        figures = await plain_source(port, config.size, config.count, config.pings)
        nursery.cancel_scope.cancel()
    return figures


async def _handshakes(count: int, progress: Progress) -> Handshakes:
    async with Node(new_identity(), NodeConfig()) as target, trio.open_nursery() as nursery:
        assert target.listen_address is not None
        links = await handshake_times(target.listen_address, count, progress, "handshakes")
        connects = await tcp_connect_times(await serve_plain_sink(nursery), count)
        nursery.cancel_scope.cancel()
    return handshakes(links, connects)


async def _run(config: TransportConfig, progress: Progress) -> TransportReport:
    results = []
    direct: tuple[Figures, Figures] | None = None
    for index, relays in enumerate(config.hops):
        progress(f"{relays} relays", index / len(config.hops))
        baseline = await _baseline(relays, config)
        overlay = await _overlay(relays, config)
        if relays == 0:
            direct = (overlay, baseline)
        results.append(hop_result(relays, overlay, baseline, direct))
    shakes = await _handshakes(config.handshakes, progress)
    progress("done", 1.0)
    return report(config, "in-process", results, shakes)


async def run(config: TransportConfig, progress: Progress) -> TransportReport:
    """Every node and forwarder in this process; the whole run within the time limit."""
    result: TransportReport = await bounded(_run(config, progress), config.time_limit)
    return result
