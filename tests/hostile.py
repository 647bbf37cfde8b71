"""Hostile and honest peers for real-process load tests (issue #11 items 4 and 5).

Everything here talks to a real node or directory server process over real
sockets on loopback: an honest peer runs the real link core and driver, an
attacker completes the handshake the same way and then misbehaves.  Every loop
is bounded in count and in time.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field

import trio

from overlay.addresses import Address
from overlay.ids import Identity
from overlay.net.link import Link
from overlay.proto.codec import LENGTH_PREFIX
from overlay.proto.link import LinkConfig, LinkCore, LinkDown, LinkState, RttMeasured
from overlay.proto.messages import NONCE_LEN, Message, Ping, encode_message
from tests.procs import WAIT


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set size (or ``VmHWM``, its peak), from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


async def open_stream(address: Address, *, source_host: str | None = None,
                      rcvbuf: int | None = None) -> trio.SocketStream:
    """A TCP stream from ``source_host`` (any of 127.0.0.0/8 on loopback), maybe with a
    tiny receive buffer (set before connecting, so the window stays small)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source_host is not None:
            await sock.bind((source_host, 0))
        await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def handshake(stream: trio.SocketStream, identity: Identity) -> LinkCore:
    """Complete the link handshake by hand (no driver): the core, established or closed."""
    core = LinkCore(identity, initiator=True, nonce=secrets.token_bytes(NONCE_LEN),
                    now=trio.current_time())
    with trio.fail_after(WAIT):
        await stream.send_all(core.data_to_send())
        while core.state is LinkState.HANDSHAKE:
            data = await stream.receive_some(65_536)
            if data:
                core.receive_data(data, trio.current_time())
            else:
                core.receive_eof(trio.current_time())
            if out := core.data_to_send():
                await stream.send_all(out)
    return core


class _FirstRtt:
    """A LinkHandler that waits for the link's first PING/PONG round trip."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.rtt: float | None = None
        self.down: LinkDown | None = None

    def link_established(self, link: Link) -> None:
        pass

    def link_rtt(self, link: Link, event: RttMeasured) -> None:
        self.rtt = event.sample
        self.done.set()

    def link_message(self, link: Link, message: Message) -> None:
        pass

    def link_down(self, link: Link, event: LinkDown) -> None:
        self.down = event
        self.done.set()


async def honest_link(address: Address, identity: Identity, *,
                      source_host: str | None = None, patience: float = WAIT) -> str | None:
    """Link to ``address`` like a neighbour and measure one RTT: None, or why it failed."""
    try:
        with trio.fail_after(patience):
            stream = await open_stream(address, source_host=source_host)
    except (OSError, trio.TooSlowError) as exc:
        return f"cannot connect: {exc}"
    handler = _FirstRtt()
    core = LinkCore(identity, initiator=True, nonce=secrets.token_bytes(NONCE_LEN),
                    now=trio.current_time(), config=LinkConfig())
    link = Link(core, stream, address, handler)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        with trio.move_on_after(patience):
            await handler.done.wait()
        link.close()
    if handler.rtt is not None:
        return None
    return handler.down.describe() if handler.down else f"no RTT within {patience:g} s"


async def honest_link_retrying(address: Address, identity: Identity, *, source_host: str,
                               tries: int = 3) -> tuple[str | None, int]:
    """:func:`honest_link`, tried again after an OVERLOADED refusal, as a real node's
    dialler does: (None or why the last try failed, tries used).

    An honest peer that shares its address with an idle crowd can lose its slot in
    the instant before the target has read its HELLO (until then the target cannot
    tell it from the crowd), so one refusal is not starvation; ``tries`` refusals
    in a row would be.
    """
    for attempt in range(1, tries + 1):
        outcome = await honest_link(address, identity, source_host=source_host)
        if outcome is None or "overloaded" not in outcome:
            return outcome, attempt
    return outcome, tries


@dataclass
class FloodResult:
    sent_bytes: int = 0
    frames: int = 0
    disconnected: str | None = None
    """How the target ended the connection, None if it never did."""


def ping_batch(count: int = 10_000) -> list[Message]:
    return [Ping(seq) for seq in range(count)]


async def flood_never_reading(address: Address, identity: Identity, *,
                              max_frames: int, time_limit: float,
                              batch: list[Message] | None = None) -> FloodResult:
    """Handshake as an honest peer, then send ``batch`` (PINGs) again and again and read
    nothing, ever, through a 4 KiB receive buffer."""
    result = FloodResult()
    frames = batch or ping_batch()
    batch_size = len(frames)
    payloads = [encode_message(frame)[LENGTH_PREFIX:] for frame in frames]
    stream = await open_stream(address, rcvbuf=4_096)
    async with stream:
        core = await handshake(stream, identity)
        assert core.state is LinkState.ESTABLISHED, core.down
        assert core.sealer is not None
        with trio.move_on_after(time_limit):
            while result.frames < max_frames:
                # Sealed afresh each time: a repeated sealed frame is a replay, refused.
                data = b"".join(core.sealer.seal(payload) for payload in payloads)
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    result.disconnected = str(exc.__cause__ or exc) or type(exc).__name__
                    break
                result.frames += batch_size
                result.sent_bytes += len(data)
    return result


@dataclass
class IdleCrowd:
    """Connections that say nothing and are re-opened as soon as the target drops them."""

    address: Address
    sources: list[str]
    per_source: int
    max_opens: int
    opens: int = 0
    failures: int = 0
    closed_by_target: int = 0
    errors: list[str] = field(default_factory=list)
    churned: trio.Event = field(default_factory=trio.Event)
    """Set once twice as many connections were opened as the crowd holds: it re-opens."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Hold the crowd until cancelled or ``max_opens`` connections were opened."""
        async with trio.open_nursery() as nursery:
            for source in self.sources:
                for _ in range(self.per_source):
                    nursery.start_soon(self._one, source)
            task_status.started()

    async def _one(self, source: str) -> None:
        while self.opens < self.max_opens:
            try:
                stream = await open_stream(self.address, source_host=source)
            except OSError as exc:
                self.failures += 1
                if len(self.errors) < 5:
                    self.errors.append(str(exc))
                await trio.sleep(0.05)
                continue
            self.opens += 1
            if self.opens >= 2 * len(self.sources) * self.per_source:
                self.churned.set()
            async with stream:
                try:
                    while await stream.receive_some(4_096):
                        pass  # the CLOSE that evicts us, then EOF
                except trio.BrokenResourceError:
                    pass
            self.closed_by_target += 1
            await trio.sleep(0.005)
