"""The forwarding core: TTL, error reports, echo; chains of pure Forwarders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.errors import MalformedMessage
from overlay.ids import NodeId
from overlay.proto.forwarding import (
    Deliver,
    Dropped,
    ErrorReport,
    Forward,
    Forwarder,
    HopKind,
    UnreachableCode,
)
from overlay.proto.messages import MessageType, RoutedPacket


def nid(i: int) -> NodeId:
    return NodeId(bytes([i]) * 16)


def line(n: int) -> list[Forwarder]:
    """Forwarders 0..n-1 in a line; each routes towards higher or lower ids."""
    def hop_for(me: int):  # type: ignore[no-untyped-def]
        def next_hop(dst: NodeId) -> NodeId | None:
            target = dst.raw[0]
            if target >= n or target == me:
                return None
            return nid(me + 1 if target > me else me - 1)
        return next_hop
    return [Forwarder(nid(i), hop_for(i), address=f"host{i}:1") for i in range(n)]


def carry(chain: list[Forwarder], start: int, actions: list) -> list[tuple[int, object]]:  # type: ignore[type-arg]
    """Run actions through the chain until everything is delivered or dropped."""
    outcomes: list[tuple[int, object]] = []
    pending = [(start, a) for a in actions]
    while pending:
        at, action = pending.pop(0)
        if isinstance(action, Forward):
            nxt = action.next_hop.raw[0]
            pending += [(nxt, a) for a in chain[nxt].receive(action.packet)]
        else:
            outcomes.append((at, action))
    return outcomes


def test_packet_crosses_five_hops_with_ttl_decremented_at_each() -> None:
    chain = line(6)
    packet = chain[0].new_packet(MessageType.DATA, nid(5), b"payload", ttl=10)
    [(at, delivered)] = carry(chain, 0, chain[0].originate(packet))
    assert at == 5 and isinstance(delivered, Deliver)
    assert delivered.packet.ttl == 10 - 4  # decremented by hops 1..4, not by the source
    assert delivered.packet.body == b"payload"
    assert [f.counters.forwarded for f in chain] == [0, 1, 1, 1, 1, 0]


def test_ttl_3_to_a_node_five_hops_away_is_reported_by_the_third_hop() -> None:
    chain = line(6)
    packet = chain[0].new_packet(MessageType.DATA, nid(5), b"x", ttl=3)
    outcomes = carry(chain, 0, chain[0].originate(packet))
    dropped = [(at, o) for at, o in outcomes if isinstance(o, Dropped)]
    delivered = [(at, o) for at, o in outcomes if isinstance(o, Deliver)]
    assert [(at, o.reason) for at, o in dropped] == [(3, "TTL expired")]
    [(at, report)] = delivered
    assert at == 0 and report.packet.type == MessageType.TIME_EXCEEDED
    assert report.packet.src == nid(3)
    body = ErrorReport.from_body(report.packet.body)
    assert body == ErrorReport(MessageType.DATA, packet.packet_id, nid(5), "host3:1",
                               UnreachableCode.NONE)


def test_no_route_yields_unreachable_to_the_source() -> None:
    chain = line(4)
    packet = chain[0].new_packet(MessageType.DATA, nid(9), None)  # beyond the line
    outcomes = carry(chain, 0, chain[0].originate(packet))
    [(at, report)] = [(at, o) for at, o in outcomes if isinstance(o, Deliver)]
    assert at == 0 and report.packet.type == MessageType.UNREACHABLE
    assert report.packet.src == nid(0)  # the source itself had no route
    assert ErrorReport.from_body(report.packet.body).code == UnreachableCode.NO_ROUTE
    assert chain[0].counters.dropped_no_route == 1


def test_an_error_report_never_causes_another() -> None:
    chain = line(4)
    report = RoutedPacket(MessageType.TIME_EXCEEDED, 1, nid(0), nid(3), 7,
                          [0x20, 1, nid(3).raw, None, 0])
    actions = chain[1].receive(report)  # TTL 1 runs out at the first hop
    assert [type(a) for a in actions] == [Dropped]
    assert chain[1].counters.errors_sent == 0


def test_echo_request_is_answered_with_the_responders_address() -> None:
    chain = line(3)
    request = chain[0].new_packet(MessageType.ECHO_REQUEST, nid(2), [42])
    [(at, reply)] = carry(chain, 0, chain[0].originate(request))
    assert at == 0 and isinstance(reply, Deliver)
    assert reply.packet.type == MessageType.ECHO_REPLY and reply.packet.src == nid(2)
    assert reply.packet.body == [request.packet_id, [42], "host2:1"]


def test_packets_to_ourselves_are_delivered_without_routing() -> None:
    forwarder = Forwarder(nid(1), lambda dst: None)
    packet = forwarder.new_packet(MessageType.DATA, nid(1), b"loopback")
    assert forwarder.originate(packet) == [Deliver(packet)]


def test_packet_ids_increase_and_wrap() -> None:
    forwarder = Forwarder(nid(1), lambda dst: None, first_packet_id=2**32 - 1)
    ids = [forwarder.new_packet(MessageType.DATA, nid(2), None).packet_id for _ in range(2)]
    assert ids == [2**32 - 1, 0]


@pytest.mark.parametrize("body", [None, [], [1, 2, 3], [1, 2, b"short", None, 0],
                                  [1, 2, b"x" * 16, 5, 0], [True, 2, b"x" * 16, None, 0]])
def test_malformed_error_reports_are_rejected(body: object) -> None:
    with pytest.raises(MalformedMessage):
        ErrorReport.from_body(body)


IDS = [nid(i) for i in range(1, 7)]


@given(routes=st.dictionaries(st.sampled_from(IDS), st.sampled_from(IDS), max_size=6),
       locations=st.dictionaries(st.sampled_from(IDS), st.sampled_from(IDS), max_size=4),
       default=st.none() | st.sampled_from(IDS), dst=st.sampled_from([nid(0), *IDS]))
def test_where_names_the_hop_an_originated_packet_then_takes(
        routes: dict[NodeId, NodeId], locations: dict[NodeId, NodeId],
        default: NodeId | None, dst: NodeId) -> None:
    forwarder = Forwarder(nid(0), routes.get, default_hop=lambda: default)
    for node, home in locations.items():
        forwarder.set_location(node, home)
    lookup = forwarder.where(dst)
    [first, *_] = forwarder.originate(forwarder.new_packet(MessageType.DATA, dst, b"x"))
    if lookup.kind is HopKind.LOCAL:
        assert isinstance(first, Deliver)
    elif lookup.kind is HopKind.UNREACHABLE:
        assert isinstance(first, Dropped) and lookup.next_hop is None
    else:
        assert isinstance(first, Forward) and first.next_hop == lookup.next_hop
        wrapped = first.packet.type == MessageType.VIA
        assert wrapped == (lookup.kind is HopKind.VIA_HOME)
        if wrapped:
            assert first.packet.dst == lookup.home == locations[dst]
