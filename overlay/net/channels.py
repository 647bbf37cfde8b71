"""Trio driver of the reliable channels of one node (see ``overlay.proto.reliable``).

Segments travel in routed DATA packets; the manager demultiplexes them by
(peer, channel id).  Channel ids are split by node id so that two nodes
opening channels to each other at once can never pick the same one: the node
with the smaller id uses even ids, the other odd ids.  Each channel has one
timer task, in the manager's nursery (owned by the node).  A SYN for an unknown
channel becomes a new channel in the accept queue; if that queue is full the
SYN is answered with RST, so the opener learns at once.

Error reports (UNREACHABLE, TIME_EXCEEDED) about our DATA packets are soft
errors, as ICMP is to TCP (RFC 1122 4.2.3.9): routes come and go while the
overlay converges, and retransmission rides that out.  A channel opened with
``fail_fast`` (``overlay send``: a user waiting at a prompt) that has not heard
from its peer yet gives up at the first report instead, with PeerUnreachable.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import trio

from overlay.errors import ChannelClosed, MalformedMessage, PeerUnreachable
from overlay.ids import NodeId
from overlay.net.link import bring_forward
from overlay.proto.messages import MessageType, RoutedPacket
from overlay.proto.reliable import (
    ChannelConfig,
    ChannelState,
    Closed,
    Opened,
    PeerFinished,
    ReliableChannel,
    Segment,
    SegmentKind,
)

log = logging.getLogger(__name__)

ACCEPT_BACKLOG = 64
CLOSE_LINGER = 10.0

SendPacket = Callable[[int, NodeId, Any], object]


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    peer: NodeId
    channel_id: int
    state: str
    srtt: float | None
    rto: float
    buffered_bytes: int
    peer_window: int
    receive_window: int
    segments_sent: int
    segments_received: int
    retransmissions: int
    fast_retransmissions: int
    timeouts: int
    duplicates_received: int
    messages_sent: int
    messages_received: int


class Channel:
    """One reliable channel: ``await send(msg)``, ``await receive()``, ``async with``."""

    def __init__(self, manager: ChannelManager, peer: NodeId, core: ReliableChannel,
                 *, fail_fast: bool = False) -> None:
        self.peer = peer
        self.core = core
        self.fail_fast = fail_fast
        """Give up at the first error report while the peer has not answered yet."""
        self._unreachable: str | None = None
        self._manager = manager
        self._changed = trio.Event()
        self._waiters = 0
        self._peer_finished = False
        self._timer_scope: trio.CancelScope | None = None
        self.done = trio.Event()

    def __repr__(self) -> str:
        return f"<Channel {self.peer.short}/{self.core.channel_id} {self.core.state.value}>"

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None:
            await self.aclose()
        else:
            self.abort("the application failed")

    async def wait_open(self) -> None:
        while self.core.state is not ChannelState.ESTABLISHED:
            self._raise_if_over()
            await self._wait()

    async def send(self, message: bytes) -> None:
        """Queue ``message``; waits while the send buffer is full (memory stays bounded)."""
        while not self.core.can_send:
            self._raise_if_over()
            await self._wait()
        self.core.send(bytes(message), trio.current_time())
        self._manager.pump(self)

    async def receive(self) -> bytes:
        """The next message, in order; ``ChannelClosed`` once the peer has finished."""
        while True:
            message = self.core.next_message()
            if message is not None:
                self._manager.pump(self)  # reading may reopen our window
                return message
            if self._peer_finished:
                raise ChannelClosed("the peer closed the channel")
            self._raise_if_over()
            await self._wait()

    async def wait_acknowledged(self) -> None:
        """Return once the peer has acknowledged every message sent so far."""
        while self.core.buffered_bytes > 0 or self.core.state is not ChannelState.ESTABLISHED:
            self._raise_if_over()
            await self._wait()

    async def aclose(self) -> None:
        """Orderly close: queued messages are delivered first; bounded wait, then abort."""
        self.core.close(trio.current_time())
        self._manager.pump(self)
        with trio.move_on_after(CLOSE_LINGER):
            await self.wait_acknowledged_or_closed()
            return
        self.abort("close timed out")

    async def wait_acknowledged_or_closed(self) -> None:
        """Until the peer has acknowledged our FIN (and so every message before it).

        Not merely the data: a process that leaves once its data is acknowledged, with
        its FIN still queued, takes the FIN with it, and the peer is left waiting for an
        end that never comes (until its keepalive gives up).
        """
        while self.core.state is not ChannelState.CLOSED and not self.core.fin_acknowledged:
            await self._wait()

    def abort(self, reason: str = "aborted") -> None:
        self.core.abort(reason)
        self._manager.pump(self)

    def statistics(self) -> ChannelStatistics:
        c = self.core
        return ChannelStatistics(peer=self.peer, channel_id=c.channel_id, state=c.state.value,
                                 srtt=c.rtt.srtt, rto=c.rtt.rto, buffered_bytes=c.buffered_bytes,
                                 peer_window=c.peer_window, receive_window=c.receive_window,
                                 **asdict(c.counters))

    # --- internals -------------------------------------------------------------------

    def _raise_if_over(self) -> None:
        if self._unreachable is not None:
            raise PeerUnreachable(f"node {self.peer}: {self._unreachable}")
        if self.core.state is ChannelState.CLOSED:
            error = self.core.error
            if error is not None and "unreachable" in error:
                raise PeerUnreachable(f"node {self.peer}: {error}")
            raise ChannelClosed(error or "the channel is closed")

    async def _wait(self) -> None:
        self._waiters += 1
        try:
            await self._changed.wait()
        finally:
            self._waiters -= 1

    def _notify(self) -> None:
        """Wake every task waiting for a change (each re-checks what it waits for).

        Called after every segment; with nobody waiting (the usual case while data
        flows) it costs nothing."""
        if self._waiters:
            self._changed.set()
            self._changed = trio.Event()


class ChannelManager:
    """Every channel of one node; created and run by :class:`~overlay.net.node.Node`."""

    def __init__(self, node_id: NodeId, send_packet: SendPacket,
                 config: ChannelConfig | None = None) -> None:
        self.node_id = node_id
        self.config = config or ChannelConfig()
        self._send_packet = send_packet
        self._channels: dict[tuple[NodeId, int], Channel] = {}
        self._nursery: trio.Nursery | None = None
        self._accept_send, self._accept_receive = trio.open_memory_channel[Channel](
            ACCEPT_BACKLOG)
        self._dirty: dict[Channel, None] = {}
        self._flush_wakeup = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._flush_forever()

    async def _flush_forever(self) -> None:
        """Pump the channels that received segments, once per batch of arrivals.

        Every packet a link reads in one go is handled before this task runs, so
        a burst of data segments is answered by one cumulative ACK, not one each.
        """
        while True:
            await self._flush_wakeup.wait()
            self._flush_wakeup = trio.Event()
            dirty, self._dirty = self._dirty, {}
            for channel in dirty:
                self.pump(channel)

    def open(self, peer: NodeId, *, fail_fast: bool = False) -> Channel:
        """Start opening a channel to ``peer`` (the SYN goes out now); ``fail_fast``:
        see the module docstring."""
        if self._nursery is None:
            raise ChannelClosed("the node is not running")
        parity = 0 if self.node_id < peer else 1
        while True:
            channel_id = (secrets.randbits(31) << 1) | parity
            if (peer, channel_id) not in self._channels:
                break
        core = ReliableChannel(channel_id, isn=secrets.randbits(32), now=trio.current_time(),
                               config=self.config)
        return self._start(peer, core, fail_fast=fail_fast)

    async def accept(self) -> Channel:
        """The next channel another node opened to us."""
        return await self._accept_receive.receive()

    def channels(self) -> list[Channel]:
        return list(self._channels.values())

    def delivery_failed(self, destination: NodeId, original_type: int,
                        kind: MessageType) -> None:
        """A router dropped a packet we sent to ``destination`` and said so (``kind``:
        UNREACHABLE or TIME_EXCEEDED).  Only fail-fast channels still waiting for
        their peer's first answer act on it (see the module docstring)."""
        if original_type != MessageType.DATA:
            return
        why = ("peer unreachable: the overlay has no route to it" if kind is MessageType.UNREACHABLE
               else "peer unreachable: the packets ran out of hops (a routing loop?)")
        for channel in list(self._channels.values()):
            if (channel.peer == destination and channel.fail_fast
                    and channel.core.state is ChannelState.SYN_SENT
                    and channel._unreachable is None):
                channel._unreachable = why
                channel.abort(why)

    def handle_packet(self, packet: RoutedPacket) -> None:
        """A DATA packet for this node: a segment of some channel."""
        try:
            segment = Segment.from_body(packet.body)
        except MalformedMessage as exc:
            log.debug("bad segment from %s: %s", packet.src, exc)
            return
        key = (packet.src, segment.channel)
        channel = self._channels.get(key)
        if channel is not None:
            channel.core.receive_segment(segment, trio.current_time())
            self._dirty[channel] = None
            self._flush_wakeup.set()
        elif segment.kind is SegmentKind.SYN and self._nursery is not None:
            core = ReliableChannel.accept(segment, isn=secrets.randbits(32),
                                          now=trio.current_time(), config=self.config)
            channel = self._start(packet.src, core)
            try:
                self._accept_send.send_nowait(channel)
            except trio.WouldBlock:
                channel.abort("too many channels waiting to be accepted")
        elif segment.kind is not SegmentKind.RST:
            # A segment for a channel we do not know (we restarted?): reset it.
            reset = Segment(SegmentKind.RST, segment.channel, 0, 0, 0)
            self._send_packet(MessageType.DATA, packet.src, reset.to_body())

    def pump(self, channel: Channel) -> None:
        """After every call into a core: send its segments, pass on events, wake waiters."""
        core = channel.core
        for segment in core.segments_to_send():
            self._send_packet(MessageType.DATA, channel.peer, segment.to_body())
        while (event := core.next_event()) is not None:
            if isinstance(event, PeerFinished):
                channel._peer_finished = True
            elif isinstance(event, Closed):
                if event.error:
                    log.info("channel to %s closed: %s", channel.peer.short, event.error)
            elif isinstance(event, Opened):
                log.debug("channel to %s open", channel.peer.short)
        channel._notify()
        _arm_timer(channel)

    def _start(self, peer: NodeId, core: ReliableChannel, *,
               fail_fast: bool = False) -> Channel:
        channel = Channel(self, peer, core, fail_fast=fail_fast)
        self._channels[(peer, core.channel_id)] = channel
        assert self._nursery is not None
        self._nursery.start_soon(self._drive, channel)
        self.pump(channel)
        return channel

    async def _drive(self, channel: Channel) -> None:
        """The channel's timer; after it closes, linger to answer a repeated FIN.

        The timer sleeps until the core's deadline; :func:`_arm_timer` brings it
        forward when the core needs an earlier one (and wakes it when the channel
        closes).  A deadline that moved later is not followed at once: the timer
        wakes at the old one, finds nothing due and sleeps again, which costs one
        wakeup per retransmission timeout instead of one per segment.
        """
        core = channel.core
        try:
            while core.state is not ChannelState.CLOSED:
                with trio.CancelScope(deadline=_core_deadline(core)) as scope:
                    channel._timer_scope = scope
                    await trio.sleep_forever()
                channel._timer_scope = None
                deadline = core.get_timer()
                now = trio.current_time()
                if deadline is not None and now >= deadline:
                    core.handle_timer(now)
                    self.pump(channel)
            channel.done.set()
            if core.error is None:
                await trio.sleep(CLOSE_LINGER)
        finally:
            channel.done.set()
            del self._channels[(channel.peer, core.channel_id)]


def _core_deadline(core: ReliableChannel) -> float:
    deadline = core.get_timer()
    return math.inf if deadline is None else deadline


def _arm_timer(channel: Channel) -> None:
    """Bring the channel's timer forward to the core's deadline, if that is earlier; end
    its sleep once the channel is closed."""
    scope = channel._timer_scope
    if scope is None:
        return
    if channel.core.state is ChannelState.CLOSED:
        scope.cancel()
    else:
        bring_forward(scope, _core_deadline(channel.core))
