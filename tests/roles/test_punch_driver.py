"""The hole-punching driver (overlay.roles.punch) over a fake relayed path, in virtual time.

Two :class:`PunchService` objects on stand-in nodes whose PUNCH packets take
DELAY seconds each way (the relayed path) and who have no candidates, so every
dial fails at once: what is left to see is the driver's wiring of the
coordinator, at exact times: who starts, the CONNECT / CONNECT_REPLY / SYNC
exchange, three attempts, the give-up and its log line, no rounds once the
conversation is over, and no answer to a peer that is not an edge client.
(The real dials and NATs are tested in the lab: tests/lab/test_nat_punch.py.)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from overlay.ids import NodeId
from overlay.proto.messages import MessageType, RoutedPacket
from overlay.proto.punch import PunchConfig, PunchMessage
from overlay.roles.punch import PunchService

DELAY = 0.05
A_ID = NodeId(bytes([1] * 16))
B_ID = NodeId(bytes([2] * 16))
CONFIG = PunchConfig(attempts=3, answer_timeout=3.0, dial_timeout=5.0, retry_after=60.0)


@dataclass
class FakeNode:
    """What PunchService uses of a node; PUNCH packets go to ``peer`` after DELAY."""

    node_id: NodeId
    nursery: trio.Nursery
    peer: FakeNode | None = None
    is_edge: bool = True
    outgoing_port: int = 40000
    neighbours: dict[NodeId, Any] = field(default_factory=dict)
    talking: list[NodeId] = field(default_factory=list)
    locations: dict[NodeId, NodeId] = field(default_factory=dict)
    sent: list[tuple[float, str, int]] = field(default_factory=list)
    handler: Callable[[RoutedPacket], None] | None = None

    @property
    def channels(self) -> SimpleNamespace:
        return SimpleNamespace(channels=lambda: [SimpleNamespace(peer=p) for p in self.talking])

    @property
    def forwarder(self) -> SimpleNamespace:
        return SimpleNamespace(locations=self.locations)

    def register_handler(self, packet_type: int, handler: Callable[[RoutedPacket], None]) -> None:
        assert packet_type == MessageType.PUNCH
        self.handler = handler

    def send_packet(self, packet_type: int, dst: NodeId, body: Any) -> None:
        message = PunchMessage.from_body(body)
        self.sent.append((round(trio.current_time(), 6), message.kind.name, message.attempt))
        packet = RoutedPacket(packet_type, 32, self.node_id, dst, len(self.sent), body)
        self.nursery.start_soon(self._arrive, packet)

    async def _arrive(self, packet: RoutedPacket) -> None:
        await trio.sleep(DELAY)
        assert self.peer is not None and self.peer.handler is not None
        self.peer.handler(packet)


async def pair(nursery: trio.Nursery, *, b_knows_a: bool = True,
               ) -> tuple[FakeNode, FakeNode, PunchService, PunchService]:
    a, b = FakeNode(A_ID, nursery), FakeNode(B_ID, nursery)
    a.peer, b.peer = b, a
    a.talking, b.talking = [B_ID], [A_ID]
    a.locations[B_ID] = NodeId(bytes([9] * 16))  # B's home supernode: B is an edge client
    if b_knows_a:
        b.locations[A_ID] = NodeId(bytes([8] * 16))
    services = []
    for node in (a, b):
        service = PunchService(node, home=lambda: None, config=CONFIG,  # type: ignore[arg-type]
                               rng=random.Random(7))
        await nursery.start(service.run)
        services.append(service)
    return a, b, services[0], services[1]


async def test_three_attempts_at_exact_times_then_a_logged_give_up(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="overlay.roles.punch")
    async with trio.open_nursery() as nursery:
        a, b, service_a, service_b = await pair(nursery)
        await trio.sleep(1.0)
        # The smaller id starts at once; each attempt takes one relayed round trip and
        # the SYNC's half, and every dial fails at once (nothing to dial).
        assert a.sent == [(0.0, "CONNECT", 1), (0.1, "SYNC", 1), (0.15, "CONNECT", 2),
                          (0.25, "SYNC", 2), (0.3, "CONNECT", 3), (0.4, "SYNC", 3)]
        assert b.sent == [(0.05, "CONNECT_REPLY", 1), (0.2, "CONNECT_REPLY", 2),
                          (0.35, "CONNECT_REPLY", 3)]
        for service in (service_a, service_b):
            status = service.peer_status(B_ID if service is service_a else A_ID)
            assert status is not None
            assert (status.state, status.attempts) == ("relayed", 3)
        gave_up = [r.getMessage() for r in caplog.records if "attempts failed" in r.getMessage()]
        retry_in = 60.0 * (0.5 + random.Random(7).random())
        assert gave_up == [f"punching to {B_ID.short}: 3 attempts failed (no candidate to "
                           f"dial); staying relayed, next round in {retry_in:.0f} s"]
        # The next round comes at 0.45 + retry_in: one CONNECT, exactly then.
        await trio.sleep(0.45 + retry_in - trio.current_time() - 0.001)
        assert len(a.sent) == 6
        await trio.sleep(0.002)
        assert a.sent[6][1:] == ("CONNECT", 1)
        assert a.sent[6][0] == pytest.approx(0.45 + retry_in, abs=1e-6)
        nursery.cancel_scope.cancel()


async def test_no_rounds_once_the_conversation_is_over(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        a, b, service_a, _ = await pair(nursery)
        await trio.sleep(1.0)
        a.talking.clear()
        b.talking.clear()
        await trio.sleep(1.0)  # a scan
        assert service_a.peers == {}
        await trio.sleep(3600.0)
        assert len(a.sent) == 6  # the first round only
        nursery.cancel_scope.cancel()


async def test_a_connect_from_a_peer_that_is_no_edge_client_is_not_answered(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        a, b, _, service_b = await pair(nursery, b_knows_a=False)
        await trio.sleep(10.0)
        assert b.sent == [] and service_b.peers == {}
        # Unanswered, each attempt times out after answer_timeout.
        assert a.sent == [(0.0, "CONNECT", 1), (3.0, "CONNECT", 2), (6.0, "CONNECT", 3)]
        nursery.cancel_scope.cancel()


async def test_a_connect_from_a_node_we_have_no_conversation_with_is_not_answered(
        autojump_clock: trio.testing.MockClock) -> None:
    # A's claim to be an edge client (B knows a home for it) is not enough: without a
    # channel of B's to A, a CONNECT could aim B's dials at anyone's addresses.
    async with trio.open_nursery() as nursery:
        a, b, _, service_b = await pair(nursery)
        b.talking.clear()
        await trio.sleep(10.0)
        assert b.sent == [] and service_b.peers == {}
        assert a.sent == [(0.0, "CONNECT", 1), (3.0, "CONNECT", 2), (6.0, "CONNECT", 3)]
        nursery.cancel_scope.cancel()


async def test_a_direct_link_stops_punching_and_its_loss_is_noticed(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        a, _b, service_a, _ = await pair(nursery)
        a.neighbours[B_ID] = object()  # a direct link came up (whoever made it)
        await trio.sleep(1.0)
        status = service_a.peer_status(B_ID)
        assert status is not None and status.state == "direct"
        since = service_a.path_since(B_ID)
        del a.neighbours[B_ID]
        await trio.sleep(1.0)
        status = service_a.peer_status(B_ID)
        assert status is not None and status.state == "relayed"
        assert service_a.path_since(B_ID) != since  # relayed again, since the loss
        nursery.cancel_scope.cancel()
