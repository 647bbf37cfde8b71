"""VIA: packets for edge clients tunnelled to their home supernode (pure Forwarders).

The network: edge A attached to supernode HA, supernodes HA - S - HB in a line,
edge B attached to HB.  Supernodes route among themselves only; edges know
their home (default route) and what they learn.
"""

from __future__ import annotations

from typing import Any

from overlay.ids import NodeId
from overlay.proto.forwarding import (
    Action,
    Deliver,
    Dropped,
    ErrorReport,
    Forward,
    Forwarder,
    UnreachableCode,
    Via,
)
from overlay.proto.messages import MessageType, RoutedPacket

A, HA, S, HB, B = (NodeId(bytes([i]) * 16) for i in (0xA0, 1, 2, 3, 0xB0))
MESH = [HA, S, HB]


def supernode(me: NodeId, attached: set[NodeId]) -> Forwarder:
    def next_hop(dst: NodeId) -> NodeId | None:
        if dst in attached:
            return dst
        if dst not in MESH or dst == me:
            return None
        step = 1 if MESH.index(dst) > MESH.index(me) else -1
        return MESH[MESH.index(me) + step]
    return Forwarder(me, next_hop, attached=attached.__contains__)


def edge(me: NodeId, home: NodeId) -> Forwarder:
    forwarder = Forwarder(me, lambda dst: None, default_hop=lambda: home, relays=False)
    forwarder.home = home
    return forwarder


def network() -> dict[NodeId, Forwarder]:
    return {A: edge(A, HA), HA: supernode(HA, {A}), S: supernode(S, set()),
            HB: supernode(HB, {B}), B: edge(B, HB)}


def carry(net: dict[NodeId, Forwarder], start: NodeId,
          actions: list[Action]) -> list[tuple[NodeId, Action, list[NodeId]]]:
    """Run actions through the network; each outcome with the path its packet took."""
    outcomes = []
    pending = [(start, action, [start]) for action in actions]
    while pending:
        at, action, path = pending.pop(0)
        if isinstance(action, Forward):
            hop = action.next_hop
            pending += [(hop, a, [*path, hop]) for a in net[hop].receive(action.packet)]
        else:
            outcomes.append((at, action, path))
    return outcomes


def send(net: dict[NodeId, Forwarder], src: NodeId, dst: NodeId, body: Any,
         packet_type: int = MessageType.DATA) -> list[tuple[NodeId, Action, list[NodeId]]]:
    forwarder = net[src]
    return carry(net, src, forwarder.originate(forwarder.new_packet(packet_type, dst, body)))


def test_a_packet_for_an_edge_client_goes_via_its_home() -> None:
    net = network()
    net[A].set_location(B, HB)
    [(at, action, path)] = send(net, A, B, b"hello")
    assert isinstance(action, Deliver) and at == B
    assert path == [A, HA, S, HB, B]
    packet = action.packet
    assert (packet.type, packet.src, packet.dst, packet.body) == (MessageType.DATA, A, B, b"hello")
    assert net[A].counters.wrapped == 1
    # Every node the VIA packet crossed learned where A is attached.
    assert net[HB].locations[A] == HA and net[B].locations[A] == HA


def test_the_answer_finds_the_way_back_by_reverse_path_learning() -> None:
    net = network()
    net[A].set_location(B, HB)
    # B knew nothing of A: it answers where the request's src_home says A lives.
    [(at, reply, path)] = send(net, A, B, None, MessageType.ECHO_REQUEST)
    assert at == A and isinstance(reply, Deliver)
    assert reply.packet.type == MessageType.ECHO_REPLY and reply.packet.src == B
    assert path == [A, HA, S, HB, B, HB, S, HA, A]


def test_an_edge_client_does_not_relay() -> None:
    net = network()
    stray = RoutedPacket(MessageType.DATA, 10, HA, S, 1, None)
    [dropped] = net[A].receive(stray)
    assert isinstance(dropped, Dropped) and "does not relay" in dropped.reason
    via_for_other = RoutedPacket(MessageType.VIA, 10, HA, HB, 2,
                                 Via(B, None, MessageType.DATA, None).to_body())
    [dropped] = net[A].receive(via_for_other)
    assert isinstance(dropped, Dropped)


def test_a_client_not_attached_at_the_named_home_is_reported() -> None:
    net = network()
    net[A].set_location(B, S)  # stale: B is not attached to S
    outcomes = send(net, A, B, b"lost")
    reports = [(at, a) for at, a, _ in outcomes if isinstance(a, Deliver)]
    [(at, report)] = reports
    assert at == A and report.packet.type == MessageType.UNREACHABLE
    parsed = ErrorReport.from_body(report.packet.body)
    assert parsed.code == UnreachableCode.NOT_ATTACHED
    assert parsed.original_dst == B and parsed.original_type == MessageType.DATA
    assert net[S].counters.dropped_not_attached == 1


def test_ttl_runs_out_inside_the_tunnel() -> None:
    net = network()
    net[A].set_location(B, HB)
    packet = net[A].new_packet(MessageType.DATA, B, None, ttl=2)
    outcomes = carry(net, A, net[A].originate(packet))
    kinds = {type(a).__name__ for _, a, _ in outcomes}
    assert "Dropped" in kinds
    delivered = [a for at, a, _ in outcomes if isinstance(a, Deliver)]
    assert delivered and delivered[0].packet.type == MessageType.TIME_EXCEEDED


def test_malformed_via_bodies_are_dropped() -> None:
    forwarder = supernode(HB, {B})
    for body in (None, [], [B.raw], [B.raw, None, MessageType.VIA, None],
                 [B.raw, b"short", MessageType.DATA, None], [b"x", None, 0x20, None]):
        [dropped] = forwarder.receive(RoutedPacket(MessageType.VIA, 9, A, HB, 1, body))
        assert isinstance(dropped, Dropped)
    assert forwarder.counters.dropped_malformed == 6


def test_locations_are_bounded() -> None:
    forwarder = Forwarder(HA, lambda dst: None, max_locations=10)
    for i in range(100):
        forwarder.set_location(NodeId(i.to_bytes(16, "big")), HB)
    assert len(forwarder.locations) == 10
