"""One dialer per address a node keeps a link to: dial, run the link, redial.

The dialer stays quiet while the peer it reaches is linked through some other
connection (it dialled us, or another address of it did), and redials with
:class:`~overlay.proto.backoff.Backoff` otherwise.  The first failure in a row
is a warning, the rest are debug lines: a peer that is down for an hour does
not fill the log.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import trio

from overlay.addresses import Address, format_address
from overlay.ids import NodeId
from overlay.net.transport import Transport, describe_connect_error
from overlay.proto.backoff import Backoff
from overlay.proto.messages import AttachPurpose

if TYPE_CHECKING:
    from overlay.net.neighbours import NodeLinks
    from overlay.proto.node import NodeConfig

log = logging.getLogger("overlay.net.node")


async def dial_forever(node: NodeLinks, *, transport: Transport, config: NodeConfig,
                       rng: random.Random, address: Address, expected_peer: NodeId | None,
                       purpose: AttachPurpose | None) -> None:
    """Keep a link from ``node`` to ``address`` until cancelled."""
    backoff = Backoff(config.reconnect_initial, config.reconnect_max, rng)
    known_peer = expected_peer
    failures = 0
    while True:
        if known_peer is not None and known_peer in node.core.neighbours:
            await node.wait_unlinked(known_peer)
            backoff.reset()
            continue
        established = False
        try:
            with trio.fail_after(config.connect_timeout):
                stream = await transport.connect(address)
        except (OSError, trio.TooSlowError) as exc:
            failures += 1
            log.log(logging.WARNING if failures == 1 else logging.DEBUG,
                    "cannot reach %s (%s); retrying with backoff",
                    format_address(address), describe_connect_error(exc))
        else:
            failures = 0
            link = node.new_link(stream, address, initiator=True, expected_peer=expected_peer,
                                 purpose=purpose)
            await node.run_link(link)
            if link.core.peer_id is not None:
                known_peer = link.core.peer_id
            established = link.core.established_at is not None
        await trio.sleep(backoff.next_wait(established=established))
