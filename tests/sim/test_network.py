"""The emulated network, in virtual time: exact arrival times, failures, and real nodes over it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from overlay.addresses import Address
from overlay.net.node import Node, NodeConfig
from overlay.net.transport import StreamHandler, Transport
from overlay.proto.link import LinkConfig
from overlay.sim.network import EmulatedNetwork, LinkStats
from tests.conftest import make_identity

LATENCY = 0.05


@dataclass
class Inbox:
    """What a server end received: (virtual time, bytes) per receive, and when EOF came."""

    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    eof_at: float | None = None
    streams: list[trio.abc.Stream] = field(default_factory=list)
    remotes: list[Address] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    async def handler(self, stream: trio.abc.Stream, remote: Address) -> None:
        """Record everything; keep the stream open after EOF so the test decides when to close."""
        self.streams.append(stream)
        self.remotes.append(remote)
        try:
            while data := await stream.receive_some():
                self.chunks.append((trio.current_time(), bytes(data)))
        except trio.ClosedResourceError:
            return  # the test closed this end itself
        self.eof_at = trio.current_time()


@asynccontextmanager
async def network(
    *links: tuple[str, str, float], seed: int = 0, **kwargs: float,
) -> AsyncIterator[tuple[EmulatedNetwork, trio.Nursery]]:
    """A running network with ``links`` and a nursery for servers, cancelled at the end."""
    async with EmulatedNetwork(random.Random(seed)) as net, trio.open_nursery() as nursery:
        for a, b, latency in links:
            net.add_link(a, b, latency, **kwargs)
        yield net, nursery
        nursery.cancel_scope.cancel()


async def serve(net: EmulatedNetwork, nursery: trio.Nursery, address: Address,
                handler: StreamHandler) -> Address:
    bound: Address = await nursery.start(net.transport(address[0]).serve, address, handler)
    return bound


async def dial(net: EmulatedNetwork, host: str, address: Address) -> trio.abc.Stream:
    """Connect, then let the server's handler task start (it is spawned, as with TCP)."""
    stream = await net.transport(host).connect(address)
    await trio.testing.wait_all_tasks_blocked()
    return stream


async def test_connect_takes_one_latency_and_data_arrives_after_exactly_the_latency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("b", 1), inbox.handler)
        stream = await dial(net, "a", ("b", 1))
        assert trio.current_time() == LATENCY
        assert inbox.remotes == [("a", 49152)]
        await stream.send_all(b"hello")
        assert trio.current_time() == LATENCY  # send_all does not wait for the wire
        await trio.sleep(1)
        assert inbox.chunks == [(2 * LATENCY, b"hello")]
        # The other way too: the reply takes one latency.
        await inbox.streams[0].send_all(b"back")
        sent = trio.current_time()
        assert await stream.receive_some() == b"back"
        assert trio.current_time() == sent + LATENCY


async def test_receive_some_respects_max_bytes_and_returns_everything_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        servers: list[trio.abc.Stream] = []

        async def keep(stream: trio.abc.Stream, remote: Address) -> None:
            servers.append(stream)

        await serve(net, nursery, ("b", 1), keep)
        stream = await dial(net, "a", ("b", 1))
        for part in (b"abc", b"defg", b"h"):
            await stream.send_all(part)
        await trio.sleep(1)
        [server] = servers
        assert await server.receive_some(2) == b"ab"
        assert await server.receive_some(3) == b"cde"
        assert await server.receive_some() == b"fgh"
        with pytest.raises(ValueError):
            await server.receive_some(0)


async def test_jitter_never_reorders(autojump_clock: trio.testing.MockClock) -> None:
    jitter = 0.05
    async with network(("a", "b", 0.01), jitter=jitter) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("b", 1), inbox.handler)
        stream = await dial(net, "a", ("b", 1))
        sent_at = []
        for i in range(200):
            sent_at.append(trio.current_time())
            await stream.send_all(b"%d," % i)
            await trio.sleep(0.001)
        await trio.sleep(1)
    assert inbox.data == b"".join(b"%d," % i for i in range(200))
    times = [t for t, _ in inbox.chunks]
    assert times == sorted(times)
    # Every chunk arrives within [latency, latency + jitter] of being sent: holding a
    # chunk behind an earlier one never pushes it past its own jitter bound.
    arrival = {}
    offset = 0
    for t, chunk in inbox.chunks:
        for piece in chunk.split(b",")[:-1]:
            arrival[int(piece)] = t
            offset += 1
    for i, t0 in enumerate(sent_at):
        assert t0 + 0.01 <= arrival[i] <= t0 + 0.01 + jitter + 1e-12
    assert len(set(times)) > 20, "jitter should spread the arrivals"


async def arrival_times(seed: int) -> list[float]:
    async with network(("a", "b", 0.01), seed=seed, jitter=0.02) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("b", 1), inbox.handler)
        stream = await dial(net, "a", ("b", 1))
        for i in range(50):
            await stream.send_all(bytes([i]))
            await trio.sleep(0.01)
        await trio.sleep(1)
    return [t for t, _ in inbox.chunks]


def test_seeded_jitter_is_reproducible() -> None:
    def run(seed: int) -> list[float]:
        return trio.run(arrival_times, seed, clock=trio.testing.MockClock(autojump_threshold=0))

    first = run(7)
    assert len(first) > 30  # 50 sends; jitter makes a few arrive together
    assert run(7) == first
    assert run(8) != first


async def test_bandwidth_adds_serialization_delay_per_direction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY), bandwidth=10_000) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("b", 1), inbox.handler)
        stream = await dial(net, "a", ("b", 1))
        start = trio.current_time()
        await stream.send_all(b"x" * 1000)  # 0.1 s on the wire, then the latency
        await stream.send_all(b"y" * 500)  # queued behind it: done at +0.15
        await trio.sleep(1)
        assert [data for _, data in inbox.chunks] == [b"x" * 1000, b"y" * 500]
        assert [t for t, _ in inbox.chunks] == pytest.approx(
            [start + 0.1 + LATENCY, start + 0.15 + LATENCY])
        # Two streams share the link's bandwidth in one direction.
        second = await dial(net, "a", ("b", 1))
        start = trio.current_time()
        await stream.send_all(b"1" * 1000)
        await second.send_all(b"2" * 1000)
        await trio.sleep(1)
        assert [data for _, data in inbox.chunks[2:]] == [b"1" * 1000, b"2" * 1000]
        assert [t for t, _ in inbox.chunks[2:]] == pytest.approx(
            [start + 0.1 + LATENCY, start + 0.2 + LATENCY])


async def test_eof_follows_the_data_and_then_the_peer_cannot_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("b", 1), inbox.handler)
        stream = await dial(net, "a", ("b", 1))
        await stream.send_all(b"last words")
        await stream.aclose()
        closed_at = trio.current_time()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"more")
        await stream.aclose()  # idempotent
        await trio.sleep(1)
        assert inbox.chunks == [(closed_at + LATENCY, b"last words")]
        assert inbox.eof_at == closed_at + LATENCY
        with pytest.raises(trio.BrokenResourceError):
            await inbox.streams[0].send_all(b"anyone there?")


async def test_data_sent_to_a_closed_end_is_discarded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("b", 1), inbox.handler)
        stream = await dial(net, "a", ("b", 1))
        await inbox.streams[0].send_all(b"into the void")
        await stream.aclose()  # before it arrives
        await trio.sleep(1)
        assert net.link_statistics()["b", "a"] == LinkStats(13, 1, 13)


async def test_a_blocked_reader_is_woken_by_closing_its_own_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        await serve(net, nursery, ("b", 1), Inbox().handler)
        stream = await dial(net, "a", ("b", 1))

        async def close_soon() -> None:
            await trio.sleep(1)
            await stream.aclose()

        nursery.start_soon(close_soon)
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()
        assert trio.current_time() == LATENCY + 1


async def test_a_link_that_is_down_holds_data_and_delivers_it_when_back_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("b", 1), inbox.handler)
        stream = await dial(net, "a", ("b", 1))
        net.set_link_up("a", "b", False)
        await stream.send_all(b"one ")
        await trio.sleep(2)
        await stream.send_all(b"two")
        await stream.aclose()
        await trio.sleep(3)
        assert inbox.chunks == [] and inbox.eof_at is None  # nothing crosses, EOF neither
        net.set_link_up("a", "b", True)
        up_at = trio.current_time()
        await trio.sleep(1)
        assert inbox.data == b"one two"
        assert {t for t, _ in inbox.chunks} == {up_at + LATENCY}
        assert inbox.eof_at == up_at + LATENCY


async def test_data_in_flight_when_the_link_fails_is_held_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("b", 1), inbox.handler)
        stream = await dial(net, "a", ("b", 1))
        await stream.send_all(b"in flight")
        await trio.sleep(LATENCY / 2)
        net.set_link_up("a", "b", False)
        await trio.sleep(10)
        assert inbox.chunks == []
        net.set_link_up("a", "b", True)
        await trio.sleep(1)
        [(arrived, data)] = inbox.chunks
        assert data == b"in flight"
        assert arrived == pytest.approx(LATENCY * 1.5 + 10 + LATENCY)  # one latency after up


async def test_held_data_is_discarded_once_both_ends_have_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("b", 1), inbox.handler)
        stream = await dial(net, "a", ("b", 1))
        net.set_link_up("a", "b", False)
        await stream.send_all(b"x" * 100)
        await trio.sleep(1)
        await stream.aclose()
        await inbox.streams[0].aclose()
        net.set_link_up("a", "b", True)
        await trio.sleep(1)
        assert inbox.chunks == []
        stats = net.link_statistics()
        assert stats["a", "b"] == LinkStats(bytes_carried=0, chunks_carried=0,
                                            bytes_discarded=100)


async def test_a_host_that_is_down_is_silent(autojump_clock: trio.testing.MockClock) -> None:
    async with network(("a", "b", LATENCY), ("a", "c", LATENCY)) as (net, nursery):
        inbox_b, inbox_c = Inbox(), Inbox()
        await serve(net, nursery, ("b", 1), inbox_b.handler)
        await serve(net, nursery, ("c", 1), inbox_c.handler)
        to_b = await dial(net, "a", ("b", 1))
        to_c = await dial(net, "a", ("c", 1))
        net.set_host_up("b", False)
        await to_b.send_all(b"hello b")
        await to_c.send_all(b"hello c")
        await inbox_b.streams[0].send_all(b"from the dead")
        with trio.move_on_after(5):
            await to_b.receive_some()
            pytest.fail("a powered-off host sent something")
        assert inbox_b.chunks == [] and inbox_b.eof_at is None  # no FIN: a power cut
        assert inbox_c.data == b"hello c"
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            await dial(net, "a", ("b", 1))
        assert trio.current_time() == start + net.connect_timeout
        net.set_host_up("b", True)
        up_at = trio.current_time()
        assert await to_b.receive_some() == b"from the dead"
        assert trio.current_time() == up_at + LATENCY
        await trio.sleep(1)
        assert inbox_b.data == b"hello b"


async def test_connect_refusals(autojump_clock: trio.testing.MockClock) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        with pytest.raises(ConnectionRefusedError, match="no link between a and c"):
            await dial(net, "a", ("c", 1))
        assert trio.current_time() == 0  # no route: at once
        with pytest.raises(ConnectionRefusedError, match="nothing listens on b:1"):
            await dial(net, "a", ("b", 1))
        assert trio.current_time() == LATENCY  # the SYN had to get there first
        with pytest.raises(ConnectionRefusedError):
            await net.transport("a").connect(("a", 1))  # no loopback
        net.set_link_up("a", "b", False)
        await serve(net, nursery, ("b", 1), Inbox().handler)
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            await dial(net, "a", ("b", 1))
        assert trio.current_time() == start + 1.0


async def test_a_link_failing_under_the_syn_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        await serve(net, nursery, ("b", 1), Inbox().handler)

        async def cut() -> None:
            await trio.sleep(LATENCY / 2)
            net.set_link_up("a", "b", False)

        nursery.start_soon(cut)
        with pytest.raises(TimeoutError):
            await dial(net, "a", ("b", 1))
        assert trio.current_time() == 1.0


async def test_serve_allocates_ports_and_refuses_conflicts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        assert await serve(net, nursery, ("b", 0), Inbox().handler) == ("b", 1)
        assert await serve(net, nursery, ("b", 0), Inbox().handler) == ("b", 2)
        with pytest.raises(OSError, match="already in use"):
            await serve(net, nursery, ("b", 1), Inbox().handler)
        with pytest.raises(OSError, match="cannot listen"):
            await nursery.start(net.transport("a").serve, ("b", 7), Inbox().handler)


async def test_a_stopped_server_refuses_new_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, _):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                await serve(net, inner, ("b", 1), Inbox().handler)
                await dial(net, "a", ("b", 1))
                scope.cancel()
        with pytest.raises(ConnectionRefusedError):
            await dial(net, "a", ("b", 1))


async def test_partition_cuts_only_links_across_it_and_heal_restores(
    autojump_clock: trio.testing.MockClock,
) -> None:
    links = [("a", "b", LATENCY), ("b", "c", LATENCY), ("a", "c", LATENCY)]
    async with network(*links) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("c", 1), inbox.handler)
        from_a = await dial(net, "a", ("c", 1))
        from_b = await dial(net, "b", ("c", 1))
        net.set_link_up("b", "c", False)  # down by hand: heal() must not bring it back
        net.partition(["a", "b"])
        await from_a.send_all(b"a")
        await from_b.send_all(b"b")
        await trio.sleep(1)
        assert inbox.chunks == []
        net.heal()
        await trio.sleep(1)
        assert inbox.data == b"a"
        net.set_link_up("b", "c", True)
        await trio.sleep(1)
        assert inbox.data == b"ab"


async def test_send_all_blocks_only_when_the_window_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with EmulatedNetwork(random.Random(0), max_in_flight=100) as net, \
            trio.open_nursery() as nursery:
        net.add_link("a", "b", LATENCY)
        servers: list[trio.abc.Stream] = []

        async def keep(stream: trio.abc.Stream, remote: Address) -> None:
            servers.append(stream)

        await serve(net, nursery, ("b", 1), keep)
        stream = await dial(net, "a", ("b", 1))
        await stream.send_all(b"x" * 100)  # fills the window, does not block
        start = trio.current_time()
        with trio.move_on_after(5):
            await stream.send_all(b"y")
            pytest.fail("the window is full: send_all must wait")

        async def read_later() -> None:
            await trio.sleep(2)
            await servers[0].receive_some(50)

        nursery.start_soon(read_later)
        await stream.send_all(b"y")
        assert trio.current_time() == start + 5 + 2
        nursery.cancel_scope.cancel()


async def test_link_statistics_count_each_direction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(("a", "b", LATENCY)) as (net, nursery):
        inbox = Inbox()
        await serve(net, nursery, ("b", 1), inbox.handler)
        stream = await dial(net, "a", ("b", 1))
        await stream.send_all(b"12345")
        await stream.send_all(b"678")
        await inbox.streams[0].send_all(b"ok")
        await trio.sleep(1)
        stats = net.link_statistics()
        assert stats["a", "b"] == LinkStats(bytes_carried=8, chunks_carried=2, bytes_discarded=0)
        assert stats["b", "a"].bytes_carried == 2


async def test_every_task_ends_with_the_network(autojump_clock: trio.testing.MockClock) -> None:
    errors: list[BaseException] = []

    async def read(stream: trio.abc.Stream) -> None:
        try:
            await stream.receive_some()
        except trio.BrokenResourceError as exc:
            errors.append(exc)

    before = list(trio.lowlevel.current_task().child_nurseries)
    async with trio.open_nursery() as outer:
        async with EmulatedNetwork(random.Random(0)) as net, trio.open_nursery() as servers:
            net.add_link("a", "b", LATENCY)
            await serve(net, servers, ("b", 1), Inbox().handler)
            stream = await dial(net, "a", ("b", 1))
            outer.start_soon(read, stream)
            await stream.send_all(b"never delivered")
            await trio.sleep(LATENCY / 2)
            servers.cancel_scope.cancel()
        # The network's nursery (its scheduler) is gone, and the reader was woken.
        await trio.testing.wait_all_tasks_blocked()
        assert trio.lowlevel.current_task().child_nurseries == [*before, outer]
        assert outer.child_tasks == frozenset(), "the blocked reader was woken and has ended"
    assert len(errors) == 1
    with pytest.raises(RuntimeError, match="not running"):
        await dial(net, "a", ("b", 1))


def test_bad_links_are_refused() -> None:
    net = EmulatedNetwork(random.Random(0))
    net.add_link("a", "b", 0.01)
    with pytest.raises(ValueError, match="already"):
        net.add_link("b", "a", 0.01)
    with pytest.raises(ValueError):
        net.add_link("a", "a", 0.01)
    with pytest.raises(ValueError):
        net.add_link("a", "c", -1)
    with pytest.raises(ValueError):
        net.add_link("a", "c", 0.01, bandwidth=0)
    with pytest.raises(ValueError, match="no link between a and c"):
        net.set_link_up("a", "c", False)


# --- real nodes over the emulated network ----------------------------------------------


class Tap(trio.abc.Stream):
    """A stream that notes when it last received anything: the node's 'last heard'."""

    def __init__(self, inner: trio.abc.Stream, heard: list[float]) -> None:
        self.inner = inner
        self.heard = heard

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if data:
            self.heard.append(trio.current_time())
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class TappedTransport:
    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.heard: list[float] = []

    async def connect(self, address: Address) -> trio.abc.Stream:
        return Tap(await self.inner.connect(address), self.heard)

    async def serve(self, address: Address, handler: StreamHandler, *,
                    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
        async def tapped(stream: trio.abc.Stream, remote: Address) -> None:
            await handler(Tap(stream, self.heard), remote)

        await self.inner.serve(address, tapped, task_status=task_status)


async def test_real_nodes_measure_the_link_rtt_and_detect_its_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = LinkConfig(handshake_timeout=5.0, hello_interval=1.0, dead_after=3)
    async with EmulatedNetwork(random.Random(1)) as net:
        net.add_link("a", "b", LATENCY)
        tap_a, tap_b = TappedTransport(net.transport("a")), TappedTransport(net.transport("b"))
        config_a = NodeConfig(listen=("a", 1), link=link)
        config_b = NodeConfig(listen=("b", 1), link=link, connect=(("a", 1),))
        async with Node(make_identity("a"), config_a, transport=tap_a,
                        rng=random.Random(2)) as a, \
                Node(make_identity("b"), config_b, transport=tap_b,
                     rng=random.Random(3)) as b:
            await b.wait_until(lambda: a.node_id in b.neighbours)
            # b dialled at 0: connected at 0.05, HELLO at a 0.10, HELLO_ACK at b 0.15,
            # when b is up and pings; a is up at 0.20 when the ACK arrives.
            assert trio.current_time() == pytest.approx(3 * LATENCY)
            await trio.sleep(10.27 - trio.current_time())
            # b pings at 0.15 + k (PONG back 0.1 later), a at 0.20 + k: by 10.27 b has
            # 11 samples and a 10, every one 2 x latency up to float rounding.
            for node, peer, samples in ((a, b, 10), (b, a, 11)):
                stats = node.neighbours[peer.node_id].statistics()
                assert stats.rtt_samples == samples
                assert stats.srtt == pytest.approx(2 * LATENCY, abs=1e-12)

            net.set_link_up("a", "b", False)
            lost: dict[str, float] = {}

            async def watch(name: str, node: Node, peer: Node) -> None:
                await node.wait_until(lambda: peer.node_id not in node.neighbours)
                lost[name] = trio.current_time()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, "a", a, b)
                nursery.start_soon(watch, "b", b, a)
            # Each side last heard the other just before the cut (a: b's PING sent at
            # 10.15; b: a's PONG and PING at 10.25), then nothing for the dead interval.
            assert tap_a.heard[-1] == pytest.approx(10.20)
            assert tap_b.heard[-1] == pytest.approx(10.25)
            assert lost["a"] == tap_a.heard[-1] + link.dead_interval
            assert lost["b"] == tap_b.heard[-1] + link.dead_interval
