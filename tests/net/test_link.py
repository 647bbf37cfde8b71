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


# --- peers that do not read, and handshake slots ---------------------------------------


class StuckWrites(trio.abc.Stream):
    """Wraps a stream; once ``stuck``, writes block forever (a peer that never reads)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.stuck = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.stuck:
            await trio.sleep_forever()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_write_that_makes_no_progress_ends_the_link_after_the_stall_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = LinkConfig(hello_interval=1.0, dead_after=30, write_stall_timeout=4.0)
    left, right = trio.testing.memory_stream_pair()
    stuck = StuckWrites(right)
    rec_a, rec_b = Recorder(), Recorder()
    a = Link(LinkCore(ALICE, initiator=True, nonce=b"\x01" * 32, now=0.0, config=config),
             left, ("test", 1), rec_a)
    b = Link(LinkCore(BOB, initiator=False, nonce=b"\x02" * 32, now=0.0, config=config),
             stuck, ("test", 2), rec_b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await trio.sleep(2.5)
        stuck.stuck = True  # B's next write (PONG and PING at t=3) never completes
        await b.finished.wait()
        nursery.cancel_scope.cancel()
    [(t, down)] = rec_b.downs
    assert t == 3.0 + 4.0
    assert down == LinkDown(CloseCode.SLOW_READER, "the peer read nothing for 4 s",
                            by_peer=False)


async def test_a_ping_flood_that_is_never_read_closes_the_link_at_the_buffer_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from overlay.proto.link import MIN_SEND_BUFFER
    from overlay.proto.messages import Ping, encode_message

    config = LinkConfig(max_send_buffer=MIN_SEND_BUFFER, write_stall_timeout=1000.0,
                        dead_after=1000)
    ours, theirs = trio.testing.memory_stream_pair()
    stuck = StuckWrites(ours)
    rec = Recorder()
    link = Link(LinkCore(BOB, initiator=False, nonce=b"\x02" * 32, now=0.0, config=config),
                stuck, ("test", 2), rec)
    attacker = LinkCore(ALICE, initiator=True, nonce=b"\x01" * 32, now=0.0, config=config)
    pings = [encode_message(Ping(i))[4:] for i in range(2_000)]
    high = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        await theirs.send_all(attacker.data_to_send())
        while attacker.state.value == "handshake":
            attacker.receive_data(await theirs.receive_some(), trio.current_time())
        await theirs.send_all(attacker.data_to_send())
        stuck.stuck = True  # from now on nothing we send is read
        for _ in range(200):  # 400,000 PINGs at most; the cap is reached long before
            if link.core.is_closed:
                break
            assert attacker.sealer is not None  # sealed afresh: a repeat would be a replay
            await theirs.send_all(b"".join(attacker.sealer.seal(ping) for ping in pings))
            await trio.sleep(0.001)
            high = max(high, link.core.pending_bytes)
        await link.finished.wait()
        nursery.cancel_scope.cancel()
    [(_, down)] = rec.downs
    assert down.code == CloseCode.SLOW_READER and "does not read" in down.reason
    assert high <= config.max_send_buffer + 300  # the cap, plus one final CLOSE at most


def pending_link(address: tuple[str, int], *, hello: bool = False) -> Link:
    """An inbound link in the handshake (not running); ``hello``: it has sent its HELLO."""
    from overlay.proto.messages import Hello, encode_message

    core = LinkCore(BOB, initiator=False, nonce=b"\x02" * 32, now=0.0, config=CONFIG)
    if hello:
        core.receive_data(encode_message(Hello(ALICE.public_key, b"\x01" * 32)), 0.0)
    left, _ = trio.testing.memory_stream_pair()
    return Link(core, left, address, Recorder())


async def test_handshake_slots_evict_the_oldest_idle_connection_of_a_full_address() -> None:
    from overlay.net.link import HandshakeSlots

    slots = HandshakeSlots(per_address=3, total=5)
    busy = pending_link(("10.0.0.1", 1), hello=True)
    idle = [pending_link(("10.0.0.1", 2 + i)) for i in range(2)]
    for link in (busy, *idle):
        assert slots.admit(link) is None
    # The address is full: the newcomer gets in, the oldest that sent no HELLO goes out.
    newcomer = pending_link(("10.0.0.1", 9))
    assert slots.admit(newcomer) is idle[0]
    assert idle[0].core.down is not None and idle[0].core.down.code == CloseCode.OVERLOADED
    assert not busy.core.is_closed and slots.pending == 3 and slots.evicted == 1
    # Once every pending connection of the address has sent HELLO, the oldest goes.
    for link in (idle[1], newcomer):
        link.core.receive_data(b"\x00\x00\x00\x01\xc0", 0.0)  # garbage: closed, slot freed
    assert slots.pending == 1
    hellos = [pending_link(("10.0.0.1", 20 + i), hello=True) for i in range(3)]
    assert [slots.admit(link) for link in hellos] == [None, None, busy]


async def test_handshake_slots_at_the_total_cap_evict_from_the_busiest_address() -> None:
    from overlay.net.link import HandshakeSlots

    slots = HandshakeSlots(per_address=4, total=6)
    crowd = [pending_link(("10.0.0.1", i)) for i in range(4)]
    other = [pending_link(("10.0.0.2", i)) for i in range(2)]
    for link in (*crowd, *other):
        assert slots.admit(link) is None
    assert slots.admit(pending_link(("10.0.0.3", 1))) is crowd[0]
    assert slots.admit(pending_link(("10.0.0.4", 1))) is crowd[1]
    # 10.0.0.1 and 10.0.0.2 have two each: a tie goes against the older connection.
    assert slots.admit(pending_link(("10.0.0.5", 1))) is crowd[2]
    assert slots.pending == 6 and slots.evicted == 3
    # Established links and links that are over hold no slot.
    for link in crowd[2:] + other:
        link.core.close()
    assert slots.pending == 3


def test_handshake_slots_need_sane_sizes() -> None:
    from overlay.net.link import HandshakeSlots

    with pytest.raises(ValueError):
        HandshakeSlots(per_address=0, total=4)
    with pytest.raises(ValueError):
        HandshakeSlots(per_address=8, total=4)
