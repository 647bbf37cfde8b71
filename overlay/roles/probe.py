"""Measure the RTT to a node without becoming its routing neighbour.

A probe is a short authenticated link: handshake, ATTACH ``PROBE`` (so the
other side keeps it out of routing), a few PING/PONG rounds at a fast hello
interval, then a normal close.  The result is the smallest sample: queueing
only ever adds delay.  Never probe a node you already have a link to: the
duplicate-link rule would close one of the two links.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import trio

from overlay.addresses import Address
from overlay.ids import Identity, NodeId
from overlay.net.link import Link
from overlay.net.node import Node
from overlay.net.transport import Transport
from overlay.proto.link import LinkConfig, LinkDown, RttMeasured
from overlay.proto.messages import Attach, AttachPurpose, CloseCode, Message


class _Prober:
    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.best = math.inf

    def link_established(self, link: Link) -> None:
        link.send_nowait(Attach(AttachPurpose.PROBE))

    def link_rtt(self, link: Link, event: RttMeasured) -> None:
        self.best = min(self.best, event.sample)
        if link.core.rtt.samples >= self.samples:
            link.close(CloseCode.NORMAL, "probe done")

    def link_message(self, link: Link, message: Message) -> None:
        pass

    def link_down(self, link: Link, event: LinkDown) -> None:
        pass


async def measure_rtt(identity: Identity, transport: Transport, address: Address,
                      expected: NodeId | None, *, samples: int = 3,
                      patience: float = 2.0) -> float | None:
    """The smallest of ``samples`` RTTs to the node at ``address``, or None if it did not answer."""
    prober = _Prober(samples)
    with trio.move_on_after(patience):
        try:
            stream = await transport.connect(address)
        except OSError:
            return None
        config = LinkConfig(handshake_timeout=patience, hello_interval=0.02, dead_after=50)
        await Link.over(stream, address, prober, identity, initiator=True, config=config,
                        expected_peer=expected, linger=0.2).run()
    return None if math.isinf(prober.best) else prober.best


async def measure_candidates(node: Node, transport: Transport,
                             candidates: Mapping[NodeId, Address], *, max_probes: int,
                             parallel: int, rng: random.Random) -> dict[NodeId, float]:
    """The RTT to each candidate that answers: the link's own estimate where ``node`` is
    linked to it (twice the metric, the windowed minimum: no probe, and no duplicate
    link), a probe for up to ``max_probes`` of the others (a random sample), at most
    ``parallel`` at a time.  A linked candidate without a sample yet is left out."""
    neighbours = node.neighbours
    rtts: dict[NodeId, float] = {}
    unlinked = []
    for peer in candidates:
        link = neighbours.get(peer)
        if link is None:
            unlinked.append(peer)
        elif link.core.metric_us is not None:
            rtts[peer] = 2 * link.core.metric_us / 1e6
    if len(unlinked) > max_probes:
        unlinked = rng.sample(unlinked, max_probes)
    limiter = trio.CapacityLimiter(parallel)

    async def probe(peer: NodeId) -> None:
        async with limiter:
            rtt = await measure_rtt(node.identity, transport, candidates[peer], peer)
        if rtt is not None:
            rtts[peer] = rtt

    async with trio.open_nursery() as nursery:
        for peer in unlinked:
            nursery.start_soon(probe, peer)
    return rtts
