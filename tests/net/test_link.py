"""The trio link driver over in-memory streams, in virtual time."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from overlay.net.link import Link
from overlay.proto.link import LinkConfig, LinkCore, LinkDown, RttMeasured
from overlay.proto.messages import CloseCode, Message, RoutedPacket
from tests.conftest import make_identity

ALICE = make_identity("alice")
BOB = make_identity("bob")
CONFIG = LinkConfig(handshake_timeout=5.0, hello_interval=1.0, dead_after=3)


@dataclass
class Recorder:
    """A LinkHandler that writes down what happened and when (virtual time)."""

    established: list[float] = field(default_factory=list)
    rtts: list[tuple[float, RttMeasured]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    downs: list[tuple[float, LinkDown]] = field(default_factory=list)

    def link_established(self, link: Link) -> None:
        self.established.append(trio.current_time())

    def link_rtt(self, link: Link, event: RttMeasured) -> None:
        self.rtts.append((trio.current_time(), event))

    def link_message(self, link: Link, message: Message) -> None:
        self.messages.append(message)

    def link_down(self, link: Link, event: LinkDown) -> None:
        self.downs.append((trio.current_time(), event))


class FreezableStream(trio.abc.Stream):
    """Wraps a stream; once frozen it swallows writes and never delivers: a hung peer."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.frozen = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self.frozen:
            await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while self.frozen:
            await trio.sleep_forever()
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        if not self.frozen:
            await self.inner.aclose()


def make_links(config: LinkConfig = CONFIG) -> tuple[Link, Recorder, Link, Recorder,
                                                      FreezableStream]:
    left, right = trio.testing.memory_stream_pair()
    frozen_right = FreezableStream(right)
    rec_a, rec_b = Recorder(), Recorder()
    now = trio.current_time()
    a = Link(LinkCore(ALICE, initiator=True, nonce=b"\x01" * 32, now=now, config=config),
             left, ("test", 1), rec_a)
    b = Link(LinkCore(BOB, initiator=False, nonce=b"\x02" * 32, now=now, config=config),
             frozen_right, ("test", 2), rec_b)
    return a, rec_a, b, rec_b, frozen_right


async def test_links_come_up_and_ping_on_schedule(autojump_clock: trio.testing.MockClock) -> None:
    a, rec_a, b, rec_b, _ = make_links()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await trio.sleep(5.5)
        assert rec_a.established == [0.0] and rec_b.established == [0.0]
        # One PING at establishment, then one per hello interval: t = 0, 1, 2, 3, 4, 5.
        assert [t for t, _ in rec_a.rtts] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert a.statistics().state == "up" and a.statistics().peer_id == BOB.node_id
        a.close(CloseCode.NORMAL, "done")
    [(t_a, down_a)] = rec_a.downs
    [(t_b, down_b)] = rec_b.downs
    assert t_a == t_b == 5.5
    assert down_a == LinkDown(CloseCode.NORMAL, "done", by_peer=False)
    assert down_b == LinkDown(CloseCode.NORMAL, "done", by_peer=True)
    assert a.finished.is_set() and b.finished.is_set()


async def test_hung_peer_is_dead_after_exactly_the_dead_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, rec_a, b, _, wire = make_links()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.run)
        nursery.start_soon(a.run)
        await trio.sleep(10.5)  # last PONG arrived at t=10
        wire.frozen = True
        await a.finished.wait()
        nursery.cancel_scope.cancel()
    [(t, event)] = rec_a.downs
    assert t == 10.0 + CONFIG.dead_interval
    assert event.code == CloseCode.TIMEOUT and "nothing heard" in event.reason


async def test_data_flows_both_ways_once_up(autojump_clock: trio.testing.MockClock) -> None:
    a, _, b, rec_b, _ = make_links()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        packet = RoutedPacket(0x20, 32, ALICE.node_id, BOB.node_id, 1, b"payload")
        assert not a.send_nowait(packet)  # not up yet: refused, not queued
        await trio.sleep(0.1)
        assert a.send_nowait(packet)
        await trio.sleep(0.1)
        assert rec_b.messages == [packet]
        nursery.cancel_scope.cancel()


async def test_cancelling_the_run_reports_the_link_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, rec_a, b, _, _ = make_links()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    [(_, event)] = rec_a.downs
    assert "cancelled" in event.reason


@pytest.mark.parametrize("limit", [0.5, 2.0])
async def test_handshake_times_out_against_a_silent_peer(
    autojump_clock: trio.testing.MockClock, limit: float,
) -> None:
    left, _right = trio.testing.memory_stream_pair()
    rec = Recorder()
    config = LinkConfig(handshake_timeout=limit)
    link = Link(LinkCore(ALICE, initiator=True, nonce=b"\x01" * 32, now=trio.current_time(),
                         config=config), left, ("test", 1), rec)
    down = await link.run()
    assert down.code == CloseCode.TIMEOUT
    assert rec.downs[0][0] == limit
