"""An emulated network: hosts joined by links with latency, bandwidth, jitter and failures.

The simulator runs the real :class:`~overlay.net.node.Node` over this network
instead of TCP: ``net.transport(host)`` is the :class:`~overlay.net.transport.Transport`
of a node on ``host``, and addresses are ``(host, port)`` tuples such as
``("n17", 1)``.  Everything happens in trio's clock (virtual under
``MockClock``); nothing touches a socket or the wall clock.  Randomness (jitter)
comes from the ``random.Random`` handed to the network, so a run replays from
its seed.

Theory of operation
-------------------
A stream has two *flows*, one per direction.  A flow is a FIFO of
``(deliver_at, chunk)``: ``send_all`` appends the chunk with
``deliver_at = serialized + latency + jitter``, where ``serialized`` is when the
link direction has finished clocking out this chunk and every earlier one
(``len / bandwidth`` each, shared by all streams over that link direction), and
never earlier than the flow's previous chunk, so jitter never reorders
(TCP semantics: nothing is reordered, lost or duplicated).  ``send_all`` does
not wait for the latency; it blocks only while more than ``max_in_flight``
bytes of the flow are sent but not yet read by the peer (a TCP window).

One scheduler task, owned by the network, keeps a heap with one entry per
non-empty flow, keyed by the delivery time of the flow's head.  It sleeps until
the earliest, moves every chunk now due into the receiving end's buffer and
wakes its reader.  So a chunk costs a deque append and, per burst, one heap
push and pop: no task per chunk or per flow, and no scan over flows.

Failures
--------
A link *carries* when it is up, not cut by :meth:`EmulatedNetwork.partition`,
and both its hosts are up.  Whether it carries is decided when a flow's head
falls due: if it does not, the flow is *stalled* (parked on its link, off the
heap) and nothing crosses in either direction, EOF included.  When the link
carries again, its stalled flows are rescheduled to arrive one latency later
(TCP retransmitting after the outage), still in order; serialization delay is
not charged again.  Data still in flight when an outage begins and due after
it ends is delivered normally: the outage only holds what falls due during
it.  A stream closed at both ends discards whatever it still holds.  A host
going down is a power cut: silence, never a FIN; its streams stay open until
the nodes' keepalive gives up on them.

Connecting
----------
``connect`` to a host with no link raises :class:`ConnectionRefusedError`
at once (there is no route).  Over a link that does not carry, it is silence:
``connect`` waits ``connect_timeout`` seconds (1 s by default) and raises
:class:`TimeoutError` (an :class:`OSError`).  Otherwise it takes exactly one
latency (the SYN's trip; the handshake's return is not modelled), then
succeeds if something serves the address or raises
:class:`ConnectionRefusedError`.  A host cannot connect to itself (there is no
loopback link).

Closing
-------
``aclose`` is a full close: the local end raises
:class:`trio.ClosedResourceError` from then on, unread data is dropped, and a
FIN follows the data already sent, reaching the peer one latency later
(``receive_some`` there returns ``b""`` once the data before it is read).
Once the FIN has arrived, ``send_all`` on the peer raises
:class:`trio.BrokenResourceError` (the RST a real peer would answer with);
data sent before that is discarded on arrival.  When the network's context
exits, every open end turns broken and every task blocked on one wakes with
:class:`trio.BrokenResourceError`.

One module for one job, the emulated wire: the scheduler's heap, the flows on
it, the links whose state stalls them, and the stream ends and transport that
front them read and write each other's private state on every chunk (a flow is
queued, parked, revived or killed by the stream, the link and the scheduler
alike).  Split, that state would become an interface with one user, and the
invariant above (one heap entry per non-empty, carrying flow) would span files.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import math
import random
from collections import deque
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType

import trio

from overlay.addresses import Address, format_address
from overlay.net.transport import StreamHandler

DEFAULT_MAX_IN_FLIGHT = 4 * 1024 * 1024
EPHEMERAL_PORT_BASE = 49152

# Flow states.
_IDLE = 0  # empty queue, not on the heap
_SCHEDULED = 1  # exactly one heap entry, keyed by the head's delivery time
_STALLED = 2  # head fell due while the link did not carry; parked on the link
_DEAD = 3  # both ends closed (or the network stopped); holds nothing


@dataclass(frozen=True, slots=True)
class LinkStats:
    """What one direction of a link carried, for overhead measurements.

    ``chunks_carried`` counts ``send_all`` calls that crossed (FINs excluded);
    ``bytes_discarded`` counts bytes that never reached a reader because an end
    had closed.
    """

    bytes_carried: int
    chunks_carried: int
    bytes_discarded: int


class _Path:
    """One direction of a link: its serialization clock, jitter source and counters."""

    __slots__ = ("busy_until", "bytes_carried", "bytes_discarded", "chunks_carried", "rng")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.busy_until = -math.inf
        self.bytes_carried = 0
        self.chunks_carried = 0
        self.bytes_discarded = 0


class _Link:
    __slots__ = ("a", "b", "backward", "bandwidth", "carrying", "cut", "forward", "jitter",
                 "latency", "stalled", "up")

    def __init__(self, a: str, b: str, latency: float, *, bandwidth: float | None,
                 jitter: float, rng: random.Random) -> None:
        self.a = a
        self.b = b
        self.latency = latency
        self.bandwidth = bandwidth
        self.jitter = jitter
        self.up = True
        self.cut = False  # by partition()
        self.carrying = True  # up, not cut, both hosts up: kept current by the network
        # One jitter stream per direction, so draws on one link never shift another's.
        self.forward = _Path(random.Random(rng.getrandbits(64)))  # a -> b
        self.backward = _Path(random.Random(rng.getrandbits(64)))  # b -> a
        # A dict, not a set: releasing in insertion order keeps runs reproducible.
        self.stalled: dict[_Flow, None] = {}

    def path_from(self, host: str) -> _Path:
        return self.forward if host == self.a else self.backward

    def other(self, host: str) -> str:
        return self.b if host == self.a else self.a


class _Flow:
    """One direction of one stream: the chunks on the wire, oldest first."""

    __slots__ = ("last_at", "link", "path", "queue", "receiver", "send_lot", "state", "unread")

    def __init__(self, link: _Link, path: _Path, receiver: EmulatedStream) -> None:
        self.link = link
        self.path = path
        self.receiver = receiver
        self.queue: deque[tuple[float, bytes | None]] = deque()  # None is the FIN
        self.last_at = -math.inf
        self.state = _IDLE
        self.unread = 0  # sent but not yet read (or dropped) by the receiver
        self.send_lot = trio.lowlevel.ParkingLot()  # senders waiting for unread to fall

    def consumed(self, count: int, limit: int) -> None:
        self.unread -= count
        if self.send_lot and self.unread < limit:
            self.send_lot.unpark_all()


@dataclass(slots=True)
class _Listener:
    handler: StreamHandler
    nursery: trio.Nursery


def _link_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class EmulatedNetwork:
    """Hosts, links and the streams between them; ``async with EmulatedNetwork(rng) as net:``.

    The context owns the single scheduler task that delivers every chunk, so it
    must enclose every node that uses the network.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        connect_timeout: float = 1.0,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        digest: bool = False,
    ) -> None:
        if connect_timeout <= 0 or max_in_flight <= 0:
            raise ValueError("connect_timeout and max_in_flight must be positive")
        self.connect_timeout = connect_timeout
        self.max_in_flight = max_in_flight
        self._rng = rng
        self._links: dict[tuple[str, str], _Link] = {}
        self._host_links: dict[str, list[_Link]] = {}
        self._hosts_down: set[str] = set()
        self._cut: dict[_Link, None] = {}
        self._transports: dict[str, EmulatedTransport] = {}
        self._listeners: dict[Address, _Listener] = {}
        self._next_port: dict[str, int] = {}
        self._next_ephemeral: dict[str, int] = {}
        self._ends: dict[EmulatedStream, None] = {}  # open ends, to break them on exit
        self._heap: list[tuple[float, int, _Flow]] = []
        self._seq = 0  # heap tie-breaker: equal times deliver in scheduling order
        self._sleep_scope: trio.CancelScope | None = None
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._running = False
        self._digest = hashlib.blake2b(digest_size=16) if digest else None
        self._digest_chunks = 0

    @property
    def trace_digest(self) -> str | None:
        """A hash of every delivery so far (time, link direction, bytes), if asked for:
        two runs with equal digests carried the same bytes at the same instants in the
        same order."""
        if self._digest is None:
            return None
        return f"{self._digest.hexdigest()}/{self._digest_chunks}"

    # --- lifetime ---------------------------------------------------------------

    async def __aenter__(self) -> EmulatedNetwork:
        if self._nursery_manager is not None:
            raise RuntimeError("an EmulatedNetwork can be entered only once")
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._nursery.start_soon(self._run_scheduler)
        self._running = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery_manager is not None and self._nursery is not None
        self._running = False
        for end in list(self._ends):
            end._break()
        self._ends.clear()
        self._heap.clear()
        self._nursery.cancel_scope.cancel()
        return await self._nursery_manager.__aexit__(exc_type, exc, tb)

    # --- topology and failures ------------------------------------------------------

    def transport(self, host: str) -> EmulatedTransport:
        """The transport of a node on ``host`` (one per host, created on first use)."""
        transport = self._transports.get(host)
        if transport is None:
            transport = self._transports[host] = EmulatedTransport(self, host)
        return transport

    def add_link(self, a: str, b: str, latency: float, *, bandwidth: float | None = None,
                 jitter: float = 0.0) -> None:
        """Join hosts ``a`` and ``b``: one-way ``latency`` and ``jitter`` in seconds,
        ``bandwidth`` in bytes per second (None: infinite); the same both ways."""
        if a == b:
            raise ValueError(f"a link needs two hosts, got {a!r} twice")
        if _link_key(a, b) in self._links:
            raise ValueError(f"there is already a link between {a} and {b}")
        if not latency >= 0 or not jitter >= 0 or not math.isfinite(latency + jitter):
            raise ValueError("latency and jitter must be finite and non-negative")
        if bandwidth is not None and not bandwidth > 0:
            raise ValueError("bandwidth must be positive (or None for infinite)")
        link = _Link(a, b, latency, bandwidth=bandwidth, jitter=jitter, rng=self._rng)
        self._links[_link_key(a, b)] = link
        self._host_links.setdefault(a, []).append(link)
        self._host_links.setdefault(b, []).append(link)
        link.carrying = a not in self._hosts_down and b not in self._hosts_down

    def has_link(self, a: str, b: str) -> bool:
        return _link_key(a, b) in self._links

    def set_link_up(self, a: str, b: str, up: bool) -> None:
        """Cut or restore the link; held data flows again one latency after it is restored."""
        link = self._link(a, b)
        link.up = up
        self._refresh(link)

    def set_host_up(self, host: str, up: bool) -> None:
        """Power a host off (all its links fall silent, no FIN) or back on."""
        if up:
            self._hosts_down.discard(host)
        else:
            self._hosts_down.add(host)
        for link in self._host_links.get(host, ()):
            self._refresh(link)

    def partition(self, group: Iterable[str]) -> None:
        """Cut every link between ``group`` and the other hosts, until :meth:`heal`.

        Independent of :meth:`set_link_up`: healing does not restore a link that
        was set down by hand.
        """
        inside = set(group)
        for host in sorted(inside):
            for link in self._host_links.get(host, ()):
                if link.other(host) not in inside and not link.cut:
                    link.cut = True
                    self._cut[link] = None
                    self._refresh(link)

    def heal(self) -> None:
        """Undo every :meth:`partition`."""
        cut, self._cut = self._cut, {}
        for link in cut:
            link.cut = False
            self._refresh(link)

    def link_statistics(self) -> dict[tuple[str, str], LinkStats]:
        """Per direction ``(source, destination)``: what each link has carried so far."""
        out: dict[tuple[str, str], LinkStats] = {}
        for link in self._links.values():
            for src, dst, path in ((link.a, link.b, link.forward), (link.b, link.a, link.backward)):
                out[src, dst] = LinkStats(path.bytes_carried, path.chunks_carried,
                                          path.bytes_discarded)
        return out

    # --- internals: links -----------------------------------------------------------

    def _link(self, a: str, b: str) -> _Link:
        link = self._links.get(_link_key(a, b))
        if link is None:
            raise ValueError(f"there is no link between {a} and {b}")
        return link

    def _refresh(self, link: _Link) -> None:
        carrying = (link.up and not link.cut and link.a not in self._hosts_down
                    and link.b not in self._hosts_down)
        if carrying == link.carrying:
            return
        link.carrying = carrying
        if carrying and link.stalled:
            resume_at = trio.current_time() + link.latency
            stalled, link.stalled = link.stalled, {}
            for flow in stalled:
                flow.queue = deque((max(at, resume_at), chunk) for at, chunk in flow.queue)
                flow.last_at = max(flow.last_at, resume_at)
                flow.state = _SCHEDULED
                self._push(flow.queue[0][0], flow)

    # --- internals: streams ---------------------------------------------------------

    def _open_stream(self, link: _Link, client: Address,
                     server: Address) -> tuple[EmulatedStream, EmulatedStream]:
        client_end = EmulatedStream(self, client, server)
        server_end = EmulatedStream(self, server, client)
        to_server = _Flow(link, link.path_from(client[0]), server_end)
        to_client = _Flow(link, link.path_from(server[0]), client_end)
        client_end._wire(server_end, to_server, to_client)
        server_end._wire(client_end, to_client, to_server)
        self._ends[client_end] = None
        self._ends[server_end] = None
        return client_end, server_end

    def _enqueue(self, flow: _Flow, chunk: bytes | None) -> None:
        """Put ``chunk`` (None: FIN) on the wire; it arrives in order, never before the last."""
        now = trio.current_time()
        link = flow.link
        at = now
        if chunk is not None:
            flow.unread += len(chunk)
            if link.bandwidth is not None:
                path = flow.path
                at = max(now, path.busy_until) + len(chunk) / link.bandwidth
                path.busy_until = at
        at += link.latency
        if link.jitter:
            at += flow.path.rng.uniform(0.0, link.jitter)
        at = max(at, flow.last_at)  # never overtake the previous chunk
        flow.last_at = at
        flow.queue.append((at, chunk))
        if flow.state == _IDLE:
            flow.state = _SCHEDULED
            self._push(at, flow)

    def _push(self, at: float, flow: _Flow) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, flow))
        scope = self._sleep_scope
        if scope is not None and at < scope.deadline:
            scope.deadline = at

    def _end_closed(self, end: EmulatedStream) -> None:
        self._ends.pop(end, None)
        if end._peer._closed:
            self._kill(end._out)
            self._kill(end._in)
        elif self._running:
            self._enqueue(end._out, None)

    def _kill(self, flow: _Flow) -> None:
        if flow.state == _STALLED:
            del flow.link.stalled[flow]
        flow.path.bytes_discarded += sum(len(c) for _, c in flow.queue if c is not None)
        flow.queue.clear()
        flow.state = _DEAD
        flow.unread = 0

    # --- the scheduler ----------------------------------------------------------------

    async def _run_scheduler(self) -> None:
        while True:
            self._deliver_due(trio.current_time())
            deadline = self._heap[0][0] if self._heap else math.inf
            with trio.CancelScope(deadline=deadline) as scope:
                self._sleep_scope = scope
                await trio.sleep_forever()
            self._sleep_scope = None

    def _deliver_due(self, now: float) -> None:
        heap = self._heap
        limit = self.max_in_flight
        while heap and heap[0][0] <= now:
            flow = heapq.heappop(heap)[2]
            if flow.state != _SCHEDULED:
                continue  # killed while waiting
            link = flow.link
            if not link.carrying:
                flow.state = _STALLED
                link.stalled[flow] = None
                continue
            queue, receiver, path = flow.queue, flow.receiver, flow.path
            digest = self._digest
            while queue and queue[0][0] <= now:
                chunk = queue.popleft()[1]
                if digest is not None:
                    self._digest_chunks += 1
                    digest.update(f"{now!r} {receiver.local_address} {receiver.remote_address} "
                                  f"{-1 if chunk is None else len(chunk)}\n".encode())
                    if chunk is not None:
                        digest.update(chunk)
                if chunk is None:
                    receiver._receive_eof()
                    continue
                path.bytes_carried += len(chunk)
                path.chunks_carried += 1
                if receiver._closed or receiver._broken:
                    path.bytes_discarded += len(chunk)
                    flow.consumed(len(chunk), limit)
                else:
                    receiver._receive(chunk)
            if queue:
                self._push(queue[0][0], flow)
            else:
                flow.state = _IDLE

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError("the emulated network is not running (use 'async with')")


class EmulatedStream(trio.abc.Stream):
    """One end of an emulated connection (see the module docstring for its semantics)."""

    __slots__ = ("_broken", "_buffered", "_chunks", "_closed", "_eof", "_in", "_net", "_out",
                 "_peer", "_readable", "_receiving", "_sending", "local_address",
                 "remote_address")

    def __init__(self, net: EmulatedNetwork, local: Address, remote: Address) -> None:
        self.local_address = local
        self.remote_address = remote
        self._net = net
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False  # the peer's FIN has arrived
        self._closed = False  # we closed
        self._broken = False  # the network stopped
        self._readable = trio.lowlevel.ParkingLot()
        self._receiving = False
        self._sending = False

    def _wire(self, peer: EmulatedStream, out: _Flow, inbound: _Flow) -> None:
        self._peer = peer
        self._out = out
        self._in = inbound

    def __repr__(self) -> str:
        return (f"<EmulatedStream {format_address(self.local_address)} -> "
                f"{format_address(self.remote_address)}>")

    # --- trio.abc.Stream ---------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            await self._wait_window()
            if data:
                self._net._enqueue(self._out, bytes(data))
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            await self._wait_window()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            if self._ready():
                await trio.lowlevel.checkpoint()
            while not self._ready():
                await self._readable.park()
            if self._closed:
                raise trio.ClosedResourceError("this end of the stream is closed")
            if self._chunks:
                return self._take(max_bytes)
            if self._broken:
                raise trio.BrokenResourceError("the emulated network has stopped")
            return b""
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close at once (FIN to the peer), then checkpoint: safe under cancellation."""
        self._close()
        await trio.lowlevel.checkpoint()

    # --- internals ------------------------------------------------------------------

    def _ready(self) -> bool:
        return bool(self._chunks) or self._eof or self._closed or self._broken

    async def _wait_window(self) -> None:
        flow = self._out
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this end of the stream is closed")
            if self._broken:
                raise trio.BrokenResourceError("the emulated network has stopped")
            if self._eof:
                raise trio.BrokenResourceError("the peer has closed the stream")
            if flow.unread < self._net.max_in_flight:
                return
            await flow.send_lot.park()

    def _take(self, max_bytes: int | None) -> bytes:
        chunks = self._chunks
        if max_bytes is None or max_bytes >= self._buffered:
            data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        else:
            parts: list[bytes] = []
            want = max_bytes
            while want:
                head = chunks[0]
                if len(head) <= want:
                    parts.append(chunks.popleft())
                    want -= len(head)
                else:
                    parts.append(head[:want])
                    chunks[0] = head[want:]
                    want = 0
            data = b"".join(parts)
        self._buffered -= len(data)
        self._in.consumed(len(data), self._net.max_in_flight)
        return data

    def _receive(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._readable:
            self._readable.unpark_all()

    def _receive_eof(self) -> None:
        if self._closed or self._broken:
            return
        self._eof = True
        self._readable.unpark_all()
        self._out.send_lot.unpark_all()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._readable.unpark_all()
        self._out.send_lot.unpark_all()
        if self._buffered:
            dropped, self._buffered = self._buffered, 0
            self._chunks.clear()
            self._in.path.bytes_discarded += dropped
            self._in.consumed(dropped, self._net.max_in_flight)
        self._net._end_closed(self)

    def _break(self) -> None:
        """The network stopped: wake everyone blocked on this end with BrokenResourceError."""
        self._broken = True
        self._out.state = _DEAD
        self._readable.unpark_all()
        self._out.send_lot.unpark_all()


class EmulatedTransport:
    """The :class:`~overlay.net.transport.Transport` of one host of an :class:`EmulatedNetwork`.

    Handler tasks run in the nursery of the :meth:`serve` call that accepted
    them, as with TCP; the network's scheduler only moves bytes.
    """

    def __init__(self, net: EmulatedNetwork, host: str) -> None:
        self._net = net
        self.host = host

    def __repr__(self) -> str:
        return f"<EmulatedTransport {self.host}>"

    async def connect(self, address: Address) -> trio.abc.Stream:
        """Reach ``address`` over the direct link; see the module docstring for failures."""
        net = self._net
        net._check_running()
        host, port = address
        link = net._links.get(_link_key(self.host, host)) if host != self.host else None
        if link is None:
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"no link between {self.host} and {host}")
        start = trio.current_time()
        if link.carrying:
            await trio.sleep(link.latency)
        if not link.carrying:  # down from the start, or went down under the SYN
            await trio.sleep_until(start + net.connect_timeout)
            raise TimeoutError(
                errno.ETIMEDOUT,
                f"no answer from {format_address(address)}: link {link.a}-{link.b} is silent")
        listener = net._listeners.get((host, port))
        if listener is None:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"nothing listens on {format_address(address)}")
        local = (self.host, self._ephemeral_port())
        client, server = net._open_stream(link, local, (host, port))
        listener.nursery.start_soon(listener.handler, server, local)
        return client

    async def serve(
        self,
        address: Address,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections to ``address`` until cancelled; port 0 picks 1, 2, ..."""
        net = self._net
        net._check_running()
        host, port = address
        if host != self.host:
            raise OSError(errno.EADDRNOTAVAIL,
                          f"host {self.host} cannot listen on {format_address(address)}")
        if not 0 <= port <= 65535:
            raise OSError(errno.EINVAL, f"port {port} is out of range")
        if port == 0:
            port = self._free_port()
        elif (host, port) in net._listeners:
            raise OSError(errno.EADDRINUSE, f"{format_address(address)} is already in use")
        bound = (host, port)
        async with trio.open_nursery() as nursery:
            net._listeners[bound] = _Listener(handler, nursery)
            try:
                task_status.started(bound)
                await trio.sleep_forever()
            finally:
                del net._listeners[bound]

    def _free_port(self) -> int:
        net = self._net
        port = net._next_port.get(self.host, 1)
        while (self.host, port) in net._listeners:
            port += 1
        net._next_port[self.host] = port + 1
        return port

    def _ephemeral_port(self) -> int:
        net = self._net
        port = net._next_ephemeral.get(self.host, EPHEMERAL_PORT_BASE)
        net._next_ephemeral[self.host] = EPHEMERAL_PORT_BASE + (port + 1 - EPHEMERAL_PORT_BASE) % (
            65536 - EPHEMERAL_PORT_BASE)
        return port
