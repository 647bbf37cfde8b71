"""Trio driver of one :class:`~overlay.proto.link.LinkCore` over a byte stream.

Three tasks per link, all in a nursery the link owns: a reader that feeds
received bytes to the core, a writer that drains the core's outgoing buffer
(the only task that writes, so writes never interleave), and a timer that
sleeps until the core's next deadline.  Core events are handed synchronously to
a :class:`LinkHandler` (the node), which must not block.

When the core closes, the writer gets ``linger`` seconds to flush the final
CLOSE, then the stream is closed.  ``run()`` returns the :class:`LinkDown`
event that ended the link, whatever ended it, cancellation included.

Memory stays bounded whatever the peer does: the core caps its outgoing buffer
(and closes a link whose peer does not read), the writer holds at most one
chunk of ``WRITE_CHUNK`` bytes taken from it, and a write of that chunk that
makes no progress for the link's ``write_stall_timeout`` ends the link
(SLOW_READER).  :class:`HandshakeSlots` decides which inbound connections may
sit in the handshake, so that idle connections cannot lock honest peers out.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import trio

from overlay.addresses import Address, format_address
from overlay.ids import Identity, NodeId
from overlay.proto.link import (
    LinkConfig,
    LinkCore,
    LinkDown,
    LinkEstablished,
    LinkEvent,
    MessageReceived,
    RttMeasured,
)
from overlay.proto.messages import NONCE_LEN, CloseCode, Message

RECEIVE_SIZE = 65_536
WRITE_CHUNK = 65_536
"""The writer takes at most this much from the core per write, so that the stall
timeout measures progress, not the size of a backlog."""


class LinkHandler(Protocol):
    """What a link tells its owner; every method is synchronous and must not block."""

    def link_established(self, link: Link) -> None: ...

    def link_rtt(self, link: Link, event: RttMeasured) -> None: ...

    def link_message(self, link: Link, message: Message) -> None: ...

    def link_down(self, link: Link, event: LinkDown) -> None: ...


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """A point-in-time record of one link, for ``status`` and tests."""

    peer_id: NodeId | None
    address: str
    direction: str
    state: str
    srtt: float | None
    rttvar: float | None
    metric_us: int | None
    rtt_samples: int
    frames_sent: int
    frames_received: int
    bytes_sent: int
    bytes_received: int
    pings_sent: int
    pongs_received: int
    missed_pongs: int


class Link:
    """One neighbour connection: the core, its stream and the tasks that drive them."""

    def __init__(
        self,
        core: LinkCore,
        stream: trio.abc.Stream,
        address: Address,
        handler: LinkHandler,
        *,
        linger: float = 1.0,
    ) -> None:
        self.core = core
        self.address = address
        self._stream = stream
        self._handler = handler
        self._linger = linger
        self._wakeup = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._timer_scope: trio.CancelScope | None = None
        self._dispatching = False
        self.finished = trio.Event()

    @classmethod
    def over(cls, stream: trio.abc.Stream, address: Address, handler: LinkHandler,
             identity: Identity, *, initiator: bool, config: LinkConfig,
             expected_peer: NodeId | None = None, linger: float = 1.0,
             nonce_source: Callable[[int], bytes] = secrets.token_bytes) -> Link:
        """A new link over ``stream``: a fresh core (its own handshake nonce, started
        now) and this driver; the one place links are made, whoever makes them."""
        core = LinkCore(identity, initiator=initiator, nonce=nonce_source(NONCE_LEN),
                        now=trio.current_time(), config=config, expected_peer=expected_peer)
        return cls(core, stream, address, handler, linger=linger)

    def __repr__(self) -> str:
        peer = self.core.peer_id.short if self.core.peer_id else "?"
        where = format_address(self.address)
        return f"<Link {self.direction} {peer} {where} {self.core.state.value}>"

    @property
    def direction(self) -> str:
        return "out" if self.core.initiator else "in"

    @property
    def peer_id(self) -> NodeId | None:
        return self.core.peer_id

    @property
    def local_address(self) -> Address | None:
        """This end's address of a TCP link (None over other streams, as in the simulator)."""
        if not isinstance(self._stream, trio.SocketStream):
            return None
        try:
            name = self._stream.socket.getsockname()
        except OSError:
            return None
        return (str(name[0]), int(name[1]))

    # --- public API -------------------------------------------------------------

    async def run(self) -> LinkDown:
        """Drive the link until it is down; closes the stream before returning."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._read_loop)
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._timer_loop)
                self._pump()
        finally:
            if not self.core.is_closed:
                # Cancelled from outside (the node is stopping without a graceful close).
                self.core.connection_lost("link task cancelled")
                self._dispatch_events()
            await trio.aclose_forcefully(self._stream)
            self.finished.set()
        assert self.core.down is not None
        return self.core.down

    def send_nowait(self, message: Message) -> bool:
        """Queue ``message`` for the peer; False (nothing queued) if the link is down or full."""
        if not self.core.can_send:
            return False
        self.core.send(message)
        self._pump()
        return True

    def close(self, code: int = CloseCode.NORMAL, reason: str = "closed") -> None:
        """Send CLOSE and end the link; returns at once (``finished`` tells when it is over)."""
        self.core.close(code, reason)
        self._pump()

    def statistics(self) -> LinkStatistics:
        core = self.core
        return LinkStatistics(
            peer_id=core.peer_id,
            address=format_address(self.address),
            direction=self.direction,
            state=core.state.value,
            srtt=core.rtt.srtt,
            rttvar=core.rtt.rttvar,
            metric_us=core.metric_us,
            rtt_samples=core.rtt.samples,
            **asdict(core.counters),
        )

    # --- tasks ------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while not self.core.is_closed:
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.core.connection_lost(str(exc) or type(exc).__name__)
            else:
                if data:
                    self.core.receive_data(data, trio.current_time())
                else:
                    self.core.receive_eof(trio.current_time())
            self._pump()

    async def _write_loop(self) -> None:
        stall = self.core.config.write_stall_timeout
        while True:
            data = self.core.data_to_send(WRITE_CHUNK)
            if data:
                with trio.move_on_after(stall) as scope:
                    try:
                        await self._stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        self.core.connection_lost(str(exc) or type(exc).__name__)
                if scope.cancelled_caught:
                    self.core.write_stalled(stall)
                self._pump()
            elif self.core.is_closed:
                assert self._nursery is not None
                self._nursery.cancel_scope.cancel()
                return
            else:
                await self._wakeup.wait()
                self._wakeup = trio.Event()

    async def _timer_loop(self) -> None:
        while True:
            with trio.CancelScope(deadline=self._core_deadline()) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self.core.handle_timer(trio.current_time())
            self._pump()

    # --- glue -------------------------------------------------------------------

    def _core_deadline(self) -> float:
        deadline = self.core.get_timer()
        return math.inf if deadline is None else deadline

    def _pump(self) -> None:
        """After every call into the core: dispatch its events, wake the writer, re-arm timers."""
        self._dispatch_events()
        if self.core.pending_bytes or self.core.is_closed:
            self._wakeup.set()
        if self._timer_scope is not None:
            # Only ever earlier: every frame heard moves the dead-interval deadline later,
            # and the timer, woken early, finds nothing due and sleeps again (one wakeup
            # per hello interval rather than a deadline change per frame).
            bring_forward(self._timer_scope, self._core_deadline())
        if self.core.is_closed and self._nursery is not None:
            # Give the writer a bounded time to flush the CLOSE, then tear down.
            scope = self._nursery.cancel_scope
            scope.deadline = min(scope.deadline, trio.current_time() + self._linger)

    def _dispatch_events(self) -> None:
        # Not re-entrant: a handler that sends (and so pumps) while we dispatch must not
        # recurse into the next event; this loop drains it.
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while (event := self.core.next_event()) is not None:
                self._dispatch(event)
        finally:
            self._dispatching = False

    def _dispatch(self, event: LinkEvent) -> None:
        if isinstance(event, MessageReceived):
            self._handler.link_message(self, event.message)
        elif isinstance(event, RttMeasured):
            self._handler.link_rtt(self, event)
        elif isinstance(event, LinkEstablished):
            self._handler.link_established(self)
        elif isinstance(event, LinkDown):
            self._handler.link_down(self, event)


def bring_forward(scope: trio.CancelScope, deadline: float) -> None:
    """Move ``scope``'s deadline to ``deadline`` if that is earlier, else leave it.

    Setting a trio deadline re-registers the scope in the run loop's deadline
    table even when the value is the same, so the test comes first.
    """
    if deadline < scope.deadline:  # noqa: PLR1730 (min() would always call the setter)
        scope.deadline = deadline


class HandshakeSlots:
    """Which inbound connections may be in the handshake at once (a node's, a server's).

    A slot is cheap to take (connect and say nothing), so the policy makes it
    cheap to lose instead.  At most ``per_address`` inbound handshakes are
    pending per source host and ``total`` overall; a newcomer is always
    admitted: when its host is at its cap, that host's oldest pending
    connection is evicted; when the total is reached, the oldest of the host
    with the most pending connections is (of two such hosts, the one with the
    older connection).  Within a host, connections that have not sent a
    complete HELLO go first, oldest first.  An honest peer sends HELLO as soon as
    it connects and finishes in a round trip, so the victim is nearly always
    an idle connection, and one source can never hold more than
    ``per_address`` slots.  Outbound dials and established links hold no slot:
    load on the listener cannot starve the neighbours a node already has or
    the peers it dials.  Evicted links are closed with OVERLOADED.
    """

    def __init__(self, *, per_address: int, total: int) -> None:
        if per_address < 1 or total < per_address:
            raise ValueError("need 1 <= per_address <= total handshake slots")
        self.per_address = per_address
        self.total = total
        self.evicted = 0
        self._pending: list[Link] = []  # oldest first

    @property
    def pending(self) -> int:
        self._prune()
        return len(self._pending)

    def admit(self, link: Link) -> Link | None:
        """Give ``link`` (inbound, just accepted) a slot; returns the link evicted for it."""
        self._prune()
        host = link.address[0]
        victim: Link | None = None
        hosts = Counter(pending.address[0] for pending in self._pending)
        if hosts[host] >= self.per_address:
            victim = self._oldest_of(host)
        elif len(self._pending) >= self.total:
            busiest = max(hosts, key=lambda h: (hosts[h], h == host))
            victim = self._oldest_of(busiest)
        self._pending.append(link)
        if victim is not None:
            self._pending.remove(victim)
            self.evicted += 1
            victim.close(CloseCode.OVERLOADED,
                         f"handshake slot given to a newer connection (at most "
                         f"{self.per_address} per address, {self.total} in all)")
        return victim

    def _oldest_of(self, host: str) -> Link:
        links = [link for link in self._pending if link.address[0] == host]
        return next((link for link in links if link.core.awaiting_hello), links[0])

    def _prune(self) -> None:
        self._pending = [link for link in self._pending if not link.core.is_closed
                         and link.core.established_at is None]
