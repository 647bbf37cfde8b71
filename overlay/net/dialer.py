"""One dialer per address a node keeps a link to: dial, run the link, redial.

The dialer stays quiet while the peer it reaches is linked through some other
connection (it dialled us, or another address of it did), and redials with
:class:`~overlay.proto.backoff.Backoff` otherwise.  The first failure in a row
is a warning, the rest are debug lines: a peer that is down for an hour does
not fill the log.
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from overlay.addresses import Address, format_address
from overlay.ids import NodeId
from overlay.net.transport import Transport, describe_connect_error
from overlay.proto.backoff import Backoff
from overlay.proto.messages import AttachPurpose

if TYPE_CHECKING:
    from overlay.net.link import Link
    from overlay.net.neighbours import NodeLinks
    from overlay.proto.node import NodeConfig

log = logging.getLogger("overlay.net.node")


class DialState(enum.Enum):
    DIALLING = "dialling"
    """Connecting, or in the handshake."""
    LINKED = "linked"
    """A link to the peer is up (this one, or one the peer dialled)."""
    DOWN = "down"
    """The last attempt failed or the link dropped; waiting to redial."""


@dataclass(frozen=True, slots=True)
class DialerStatistics:
    """One configured neighbour as ``overlay status`` shows it."""

    address: str
    peer_id: NodeId | None
    state: DialState
    for_s: float
    """How long it has been in ``state`` (DOWN: since it was last linked or first dialled)."""
    failures: int
    last_error: str | None
    next_attempt_in_s: float | None


@dataclass(slots=True)
class Dialer:
    """What one dialer is doing: :func:`dial_forever` updates it in place, the node reads
    it for ``overlay status``.  Times are ``trio.current_time()``."""

    address: Address
    peer_id: NodeId | None = None
    state: DialState = DialState.DIALLING
    since: float = 0.0
    """When the peer was last linked, or (never linked) when the dialer started."""
    failures: int = 0
    """Attempts in a row that did not establish a link."""
    last_error: str | None = None
    next_attempt: float | None = None
    link: Link | None = None
    """The link being dialled or run, if any."""

    def enter(self, state: DialState, now: float) -> None:
        # ``since`` moves only when the peer becomes linked or stops being linked:
        # redials of a down peer leave it down since the same moment.
        if (state is DialState.LINKED) != (self.state is DialState.LINKED):
            self.since = now
        self.state = state
        if state is not DialState.DOWN:
            self.next_attempt = None

    def statistics(self, now: float) -> DialerStatistics:
        state, since = self.state, self.since
        link = self.link
        if link is not None and link.core.established_at is not None:
            state, since = DialState.LINKED, link.core.established_at
        return DialerStatistics(
            format_address(self.address), self.peer_id, state, max(0.0, now - since),
            self.failures, self.last_error,
            None if self.next_attempt is None else max(0.0, self.next_attempt - now))


async def dial_forever(node: NodeLinks, *, transport: Transport, config: NodeConfig,
                       rng: random.Random, address: Address, expected_peer: NodeId | None,
                       purpose: AttachPurpose | None, status: Dialer | None = None) -> None:
    """Keep a link from ``node`` to ``address`` until cancelled; ``status`` tells how."""
    backoff = Backoff(config.reconnect_initial, config.reconnect_max, rng)
    status = status or Dialer(address, expected_peer)
    status.since = trio.current_time()
    known_peer = expected_peer
    while True:
        if known_peer is not None and known_peer in node.core.neighbours:
            status.enter(DialState.LINKED, trio.current_time())
            await node.wait_unlinked(known_peer)
            status.enter(DialState.DOWN, trio.current_time())
            backoff.reset()
            continue
        status.enter(DialState.DIALLING, trio.current_time())
        established = False
        try:
            with trio.fail_after(config.connect_timeout):
                stream = await transport.connect(address)
        except (OSError, trio.TooSlowError) as exc:
            status.failures += 1
            status.last_error = describe_connect_error(exc)
            log.log(logging.WARNING if status.failures == 1 else logging.DEBUG,
                    "cannot reach %s (%s); retrying with backoff",
                    format_address(address), status.last_error)
        else:
            link = node.new_link(stream, address, initiator=True, expected_peer=expected_peer,
                                 purpose=purpose)
            status.link = link
            try:
                down = await node.run_link(link)
            finally:
                status.link = None
            if link.core.peer_id is not None:
                known_peer = status.peer_id = link.core.peer_id
            established = link.core.established_at is not None
            if established:
                status.failures = 0
                status.since = trio.current_time()  # down from now on
            else:
                status.failures += 1
            status.last_error = down.describe()
        wait = backoff.next_wait(established=established)
        status.enter(DialState.DOWN, trio.current_time())
        status.next_attempt = trio.current_time() + wait
        await trio.sleep(wait)
