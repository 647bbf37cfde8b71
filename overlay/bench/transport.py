"""``overlay bench transport``: reliable channels against plain trio TCP, same messages, same run.

For each relay count h, the overlay side is h + 2 real nodes in a line on
127.0.0.1 and one reliable channel from the first to the last; the baseline is
a plain trio TCP stream with the same length-prefixed messages, through h
plain trio forwarders (each copies bytes both ways, nothing else).  Goodput:
``count`` messages of ``size`` bytes one way, timed until the far end says it
has them all.  Latency: ``pings`` round trips of one message each (the far end
echoes it).  Every overlay figure is reported beside its baseline, and as a
ratio to it.  Handshake time: a fresh node dials a running one, timed from the
TCP connect until its link is established, beside a bare TCP connect.

This module holds the pieces both modes share (sinks, sources, forwarders,
the handshake probe), the report and :func:`run`, which hands the run to one of
the two modes: :mod:`overlay.bench.transport_inprocess` runs them all in one
process, so on one core; :mod:`overlay.bench.transport_processes` (with
``processes``) runs every node and forwarder in its own process.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import trio

from overlay.addresses import Address
from overlay.bench.progress import Progress
from overlay.errors import ChannelClosed, OverlayError, PeerUnreachable
from overlay.ids import SEED_LEN, Identity, NodeId
from overlay.net.channels import Channel
from overlay.net.node import Node, NodeConfig
from overlay.proto.codec import LENGTH_PREFIX
from overlay.stats import quantile

ECHO_MARKER = b"echo"
"""On a plain stream: the next message is to be echoed (anything else is only read)."""
DONE = b"done"


class TransportBenchError(OverlayError):
    """The benchmark could not run (a process did not start, a phase took too long)."""


@dataclass(frozen=True)
class TransportConfig:
    hops: tuple[int, ...] = (0, 1, 3)
    size: int = 1024
    count: int = 5000
    """Messages for goodput."""
    pings: int = 300
    """Round trips for latency."""
    handshakes: int = 100
    time_limit: float = 600.0
    """Wall-time bound on the whole run, in seconds."""
    processes: bool = False
    """Every node and forwarder in its own OS process, instead of all in this one."""


@dataclass(frozen=True)
class Figures:
    goodput_msgs_s: float
    goodput_mb_s: float
    rtt_p50_ms: float
    rtt_p99_ms: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figures:
        return cls(**{name: float(data[name]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class HopResult:
    relays: int
    overlay: Figures
    baseline: Figures
    goodput_ratio: float
    rtt_p50_per_hop_us: float
    """The overlay's median round trip divided by the links it crosses (relays + 1)."""
    baseline_rtt_p50_per_hop_us: float
    rtt_p50_added_per_relay_us: float | None
    """Round trip each relay adds on the overlay, beyond what a plain forwarder adds."""
    relay_cpu_us_per_msg: float | None = None
    """With --processes: CPU time (user + system) of each relay process per goodput message,
    averaged over the relays; whatever else crossed it meanwhile (ACKs, pings) included."""
    baseline_relay_cpu_us_per_msg: float | None = None


@dataclass(frozen=True)
class Handshakes:
    """Link set-up on 127.0.0.1: TCP connect until the dialer's link is established."""

    count: int
    p50_ms: float
    p95_ms: float
    tcp_connect_p50_ms: float
    """A bare TCP connect to a plain trio listener, measured the same way, same run."""
    tcp_connect_p95_ms: float


@dataclass(frozen=True)
class TransportReport:
    mode: str  # "in-process" or "processes"
    size: int
    count: int
    pings: int
    hops: list[HopResult]
    handshake: Handshakes

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the plain trio side ------------------------------------------------------------


async def _read_message(stream: trio.abc.Stream, buffer: bytearray) -> bytes:
    while True:
        if len(buffer) >= LENGTH_PREFIX:
            length = int.from_bytes(buffer[:LENGTH_PREFIX], "big")
            if len(buffer) >= LENGTH_PREFIX + length:
                message = bytes(buffer[LENGTH_PREFIX:LENGTH_PREFIX + length])
                del buffer[:LENGTH_PREFIX + length]
                return message
        data = await stream.receive_some(65536)
        if not data:
            raise trio.BrokenResourceError("closed")
        buffer += data


def _frame(message: bytes) -> bytes:
    return len(message).to_bytes(LENGTH_PREFIX, "big") + message


async def _serve(nursery: trio.Nursery,
                 handler: Callable[[trio.SocketStream], Awaitable[None]]) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0,
                                                      host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def _plain_sink(stream: trio.SocketStream) -> None:
    buffer = bytearray()
    with contextlib.suppress(trio.BrokenResourceError):
        while True:
            if await _read_message(stream, buffer) == ECHO_MARKER:
                await stream.send_all(_frame(await _read_message(stream, buffer)))


async def serve_plain_sink(nursery: trio.Nursery) -> int:
    """The plain far end, in ``nursery``: reads every message, echoes those after ECHO_MARKER."""
    return await _serve(nursery, _plain_sink)


async def serve_forwarder(nursery: trio.Nursery, port: int) -> int:
    """A plain trio forwarder to 127.0.0.1:``port`` in ``nursery``; its own port."""
    async def forward(inbound: trio.SocketStream) -> None:
        outbound = await trio.open_tcp_stream("127.0.0.1", port)

        async def pipe(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await src.receive_some(65536):
                    await dst.send_all(data)

        async with outbound, trio.open_nursery() as pipes:
            pipes.start_soon(pipe, inbound, outbound)
            pipes.start_soon(pipe, outbound, inbound)
    return await _serve(nursery, forward)


async def plain_source(port: int, size: int, count: int, pings: int) -> Figures:
    """Goodput and round trips over a plain stream to 127.0.0.1:``port``."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        message = secrets.token_bytes(size)
        buffer = bytearray()
        start = time.perf_counter()
        for _ in range(count):
            await stream.send_all(_frame(message))
        # The sink reads in order; an echo round trip proves all of it arrived.
        await stream.send_all(_frame(ECHO_MARKER) + _frame(DONE))
        await _read_message(stream, buffer)
        elapsed = time.perf_counter() - start
        rtts = []
        for _ in range(pings):
            t0 = time.perf_counter()
            await stream.send_all(_frame(ECHO_MARKER) + _frame(message))
            await _read_message(stream, buffer)
            rtts.append(time.perf_counter() - t0)
    return _figures(count, size, elapsed, rtts)


async def tcp_connect_times(port: int, count: int) -> list[float]:
    """Seconds for each of ``count`` bare TCP connects to 127.0.0.1:``port``."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        times.append(time.perf_counter() - start)
        await stream.aclose()
    return times


# --- the overlay side ---------------------------------------------------------------


async def _serve_channel(channel: Channel) -> None:
    """The first message says how many follow; after them, "done"; then echo everything."""
    with contextlib.suppress(ChannelClosed, PeerUnreachable):
        header = await channel.receive()
        if not header.isdigit() or len(header) > 12:
            channel.abort("not a benchmark channel")
            return
        for _ in range(int(header)):
            await channel.receive()
        await channel.send(DONE)
        while True:
            await channel.send(await channel.receive())


async def serve_node_sink(node: Node) -> None:
    """The overlay far end: serves every channel opened to ``node`` until cancelled."""
    async with trio.open_nursery() as nursery:
        while True:
            nursery.start_soon(_serve_channel, await node.accept_channel())


async def wait_reachable(node: Node, peer: NodeId) -> None:
    """Until an echo to ``peer`` comes back: routes both ways, not only ours."""
    while True:
        await node.wait_until(lambda: node.router.next_hop(peer) is not None)
        if (await node.echo(peer, patience=1.0)).kind == "reply":
            return


async def node_source(node: Node, peer: NodeId, size: int, count: int, pings: int) -> Figures:
    """Goodput and round trips over one reliable channel from ``node`` to a sink at ``peer``."""
    await wait_reachable(node, peer)
    channel = node.open_channel(peer)
    try:
        await channel.wait_open()
        message = secrets.token_bytes(size)
        start = time.perf_counter()
        await channel.send(str(count).encode())
        for _ in range(count):
            await channel.send(message)
        await channel.receive()  # DONE: the sink has every message
        elapsed = time.perf_counter() - start
        rtts = []
        for _ in range(pings):
            t0 = time.perf_counter()
            await channel.send(message)
            await channel.receive()
            rtts.append(time.perf_counter() - t0)
    finally:
        channel.abort("benchmark over")
    return _figures(count, size, elapsed, rtts)


def new_identity() -> Identity:
    return Identity.from_seed(secrets.token_bytes(SEED_LEN))


async def handshake_times(address: Address, count: int, progress: Progress,
                          label: str) -> list[float]:
    """Seconds from TCP connect to an established link, for ``count`` fresh nodes dialling.

    A new identity each time, so no link is a duplicate of the one before.
    """
    times = []
    for index in range(count):
        progress(label, index / count)
        async with Node(new_identity(), NodeConfig(listen=None)) as node:
            start = time.perf_counter()
            node.connect(address)
            await node.wait_until(lambda node=node: bool(node.neighbours))  # type: ignore[misc]
            times.append(time.perf_counter() - start)
    return times


# --- figures ------------------------------------------------------------------------


def _ms(seconds: float | None) -> float:
    return round((seconds or 0.0) * 1000, 3)


def _figures(count: int, size: int, elapsed: float, rtts: list[float]) -> Figures:
    return Figures(
        goodput_msgs_s=round(count / elapsed, 1),
        goodput_mb_s=round(count * size / elapsed / 1e6, 3),
        rtt_p50_ms=_ms(statistics.median(rtts)),
        rtt_p99_ms=_ms(quantile(rtts, 0.99)),
    )


def hop_result(relays: int, overlay: Figures, baseline: Figures,
               direct: tuple[Figures, Figures] | None,
               relay_cpu_us: tuple[float, float] | None = None) -> HopResult:
    """One row; ``direct`` is the (overlay, baseline) pair at 0 relays, if measured;
    ``relay_cpu_us`` the (overlay, baseline) CPU per message and relay, if measured."""
    added = None
    if relays and direct is not None:
        overlay_added = (overlay.rtt_p50_ms - direct[0].rtt_p50_ms) / relays
        plain_added = (baseline.rtt_p50_ms - direct[1].rtt_p50_ms) / relays
        added = round((overlay_added - plain_added) * 1000, 1)
    return HopResult(relays, overlay, baseline,
                     round(overlay.goodput_msgs_s / baseline.goodput_msgs_s, 4),
                     round(overlay.rtt_p50_ms * 1000 / (relays + 1), 1),
                     round(baseline.rtt_p50_ms * 1000 / (relays + 1), 1),
                     added, *(relay_cpu_us or (None, None)))


def handshakes(links: list[float], connects: list[float]) -> Handshakes:
    return Handshakes(len(links), _ms(statistics.median(links)), _ms(quantile(links, 0.95)),
                      _ms(statistics.median(connects)), _ms(quantile(connects, 0.95)))


async def bounded(work: Awaitable[Any], seconds: float) -> Any:
    """``work``, or TransportBenchError (one clear line) after ``seconds`` of wall time."""
    try:
        with trio.fail_after(seconds):
            return await work
    except trio.TooSlowError:
        raise TransportBenchError(
            f"the benchmark did not finish within {seconds:g} s (see --time-limit)") from None


def report(config: TransportConfig, mode: str, hops: list[HopResult],
           shakes: Handshakes) -> TransportReport:
    return TransportReport(mode, config.size, config.count, config.pings, hops, shakes)


async def run(config: TransportConfig, progress: Progress) -> TransportReport:
    """The whole bench in the mode ``config.processes`` chooses, within its time limit."""
    # Imported here: both modes build on this module.
    if config.processes:
        from overlay.bench import transport_processes
        return await transport_processes.run(config, progress)
    from overlay.bench import transport_inprocess
    return await transport_inprocess.run(config, progress)
