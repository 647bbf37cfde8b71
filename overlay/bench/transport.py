"""``overlay bench transport``: reliable channels against plain trio TCP, same messages, same run.

For each relay count h, the overlay side is h + 2 real nodes in a line on
127.0.0.1 and one reliable channel from the first to the last; the baseline is
a plain trio TCP stream with the same length-prefixed messages, through h
plain trio forwarders (each copies bytes both ways, nothing else).  Goodput:
``count`` messages of ``size`` bytes one way, timed until the last arrives.
Latency: ``pings`` round trips of one message each (the far end echoes it).
Every overlay figure is reported beside its baseline, and as a ratio to it.
"""

from __future__ import annotations

import contextlib
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import trio

from overlay.ids import SEED_LEN, Identity
from overlay.net.channels import Channel
from overlay.net.node import Node, NodeConfig
from overlay.proto.codec import LENGTH_PREFIX
from overlay.stats import quantile

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Figures:
    goodput_msgs_s: float
    goodput_mb_s: float
    rtt_p50_ms: float
    rtt_p99_ms: float


@dataclass(frozen=True)
class HopResult:
    relays: int
    overlay: Figures
    baseline: Figures
    goodput_ratio: float
    rtt_p50_added_per_relay_us: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the overlay side -------------------------------------------------------------


@contextlib.asynccontextmanager
async def _line(count: int) -> AsyncIterator[list[Node]]:
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        for _ in range(count):
            identity = Identity.from_seed(secrets.token_bytes(SEED_LEN))
            node = await stack.enter_async_context(Node(identity, NodeConfig()))
            if nodes:
                assert nodes[-1].listen_address is not None
                node.connect(nodes[-1].listen_address)
            nodes.append(node)
        with trio.fail_after(30):
            for node in nodes:
                others = [n.node_id for n in nodes if n is not node]
                await node.wait_until(lambda node=node, others=others:  # type: ignore[misc]
                                      all(node.router.next_hop(o) for o in others))
        yield nodes


async def _overlay(relays: int, size: int, count: int, pings: int) -> Figures:
    async with _line(relays + 2) as nodes, trio.open_nursery() as nursery:
        far: list[Channel] = []
        ready = trio.Event()

        async def accept() -> None:
            far.append(await nodes[-1].accept_channel())
            ready.set()

        nursery.start_soon(accept)
        channel = nodes[0].open_channel(nodes[-1].node_id)
        await channel.wait_open()
        await channel.send(b"hello")
        await ready.wait()
        sink = far[0]
        await sink.receive()
        message = secrets.token_bytes(size)

        async def drain() -> None:
            for _ in range(count):
                await sink.receive()

        start = time.perf_counter()
        async with trio.open_nursery() as inner:
            inner.start_soon(drain)
            for _ in range(count):
                await channel.send(message)
        elapsed = time.perf_counter() - start
        rtts = []
        for _ in range(pings):
            t0 = time.perf_counter()
            await channel.send(message)
            await sink.send(await sink.receive())
            await channel.receive()
            rtts.append(time.perf_counter() - t0)
        channel.abort("benchmark over")
        sink.abort("benchmark over")
        nursery.cancel_scope.cancel()
    return _figures(count, size, elapsed, rtts)


# --- the baseline: plain trio -------------------------------------------------------


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


async def _serve(nursery: trio.Nursery, handler: Callable[[trio.SocketStream],
                                                          Awaitable[None]]) -> int:
    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    return int(listeners[0].socket.getsockname()[1])


async def _baseline(relays: int, size: int, count: int, pings: int) -> Figures:
    async with trio.open_nursery() as nursery:
        async def echo_server(stream: trio.SocketStream) -> None:
            buffer = bytearray()
            with contextlib.suppress(trio.BrokenResourceError):
                while True:
                    message = await _read_message(stream, buffer)
                    if message == b"echo":
                        await stream.send_all(_frame(await _read_message(stream, buffer)))

        port = await _serve(nursery, echo_server)
        for _ in range(relays):
            port = await _serve(nursery, _forwarder(port))
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        message = secrets.token_bytes(size)
        start = time.perf_counter()
        for _ in range(count):
            await stream.send_all(_frame(message))
        # The server reads in order; an echo round trip proves all of it arrived.
        await stream.send_all(_frame(b"echo") + _frame(b"done"))
        buffer = bytearray()
        await _read_message(stream, buffer)
        elapsed = time.perf_counter() - start
        rtts = []
        for _ in range(pings):
            t0 = time.perf_counter()
            await stream.send_all(_frame(b"echo") + _frame(message))
            await _read_message(stream, buffer)
            rtts.append(time.perf_counter() - t0)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return _figures(count, size, elapsed, rtts)


def _forwarder(port: int) -> Callable[[trio.SocketStream], Awaitable[None]]:
    async def forward(inbound: trio.SocketStream) -> None:
        outbound = await trio.open_tcp_stream("127.0.0.1", port)

        async def pipe(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await src.receive_some(65536):
                    await dst.send_all(data)

        async with outbound, trio.open_nursery() as nursery:
            nursery.start_soon(pipe, inbound, outbound)
            nursery.start_soon(pipe, outbound, inbound)
    return forward


def _figures(count: int, size: int, elapsed: float, rtts: list[float]) -> Figures:
    return Figures(
        goodput_msgs_s=round(count / elapsed, 1),
        goodput_mb_s=round(count * size / elapsed / 1e6, 3),
        rtt_p50_ms=round(statistics.median(rtts) * 1000, 3),
        rtt_p99_ms=round((quantile(rtts, 0.99) or 0.0) * 1000, 3),
    )


async def run(hops: list[int], size: int, count: int, pings: int,
              progress: Progress) -> list[HopResult]:
    results = []
    direct: tuple[Figures, Figures] | None = None
    for index, relays in enumerate(hops):
        progress(f"{relays} relays", index / len(hops))
        baseline = await _baseline(relays, size, count, pings)
        overlay = await _overlay(relays, size, count, pings)
        if relays == 0:
            direct = (overlay, baseline)
        added = None
        if relays and direct is not None:
            # Latency each relay adds on the overlay, beyond what a plain forwarder adds.
            overlay_added = (overlay.rtt_p50_ms - direct[0].rtt_p50_ms) / relays
            plain_added = (baseline.rtt_p50_ms - direct[1].rtt_p50_ms) / relays
            added = round((overlay_added - plain_added) * 1000, 1)
        results.append(HopResult(relays, overlay, baseline,
                                 round(overlay.goodput_msgs_s / baseline.goodput_msgs_s, 4),
                                 added))
    progress("done", 1.0)
    return results
