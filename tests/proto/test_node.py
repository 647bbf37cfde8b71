"""The node core without a network: links are strings, time is a number."""

from __future__ import annotations

import random

import pytest

from overlay.errors import ControlError
from overlay.ids import NodeId
from overlay.proto.echo import EchoKind, EchoResult
from overlay.proto.forwarding import ErrorReport, UnreachableCode, echo_reply_body
from overlay.proto.messages import (
    DEFAULT_TTL,
    Attach,
    AttachPurpose,
    CloseCode,
    MessageType,
    RoutedPacket,
    RouteEntry,
    RouteUpdate,
)
from overlay.proto.node import (
    CloseLink,
    DeliverLocal,
    DeliveryFailed,
    EchoDone,
    LinkFacts,
    NodeAction,
    NodeConfig,
    NodeCore,
    SendMessage,
    Transmit,
)
from tests.conftest import make_identity

ME = make_identity("core-me").node_id
PEER = make_identity("core-peer").node_id
OTHER = make_identity("core-other").node_id
OUT = LinkFacts(initiator=True, address="10.0.0.2:4000", purpose=None)
IN = LinkFacts(initiator=False, address="10.0.0.2:51000", purpose=None)
EDGE_OUT = LinkFacts(initiator=True, address="10.0.0.9:4000", purpose=AttachPurpose.EDGE)


def core(*, edge: bool = False, node_id: NodeId = ME, now: float = 0.0) -> NodeCore[str]:
    node = NodeCore[str](node_id, NodeConfig(edge=edge), rng=random.Random(7))
    node.start(now)
    return node


def up(node: NodeCore[str], link: str, peer: NodeId, facts: LinkFacts,
       now: float = 1.0) -> list[NodeAction[str]]:
    """Establish ``link`` and give it its first RTT sample (10 ms)."""
    node.link_established(link, peer, facts)
    node.link_rtt(link, peer, cost_us=5000, noise_us=0, samples=1, sample=0.010, now=now)
    return node.take_actions()


def advertise(node: NodeCore[str], link: str, peer: NodeId, now: float = 1.0) -> None:
    """``peer`` advertises a route to itself over ``link``."""
    node.link_message(link, peer, RouteUpdate(1000, (RouteEntry(peer, 1, 0),)), now)
    node.take_actions()


def closes(actions: list[NodeAction[str]]) -> list[tuple[str, CloseCode]]:
    return [(a.link, a.code) for a in actions if isinstance(a, CloseLink)]


def test_the_duplicate_rule_keeps_the_smaller_ids_outgoing_link() -> None:
    low, high = sorted([ME, PEER])
    node = core(node_id=low)
    node.link_established("first-in", high, IN)
    node.link_established("second-out", high, OUT)
    assert closes(node.take_actions()) == [("first-in", CloseCode.DUPLICATE_LINK)]
    assert node.neighbours == {high: "second-out"}
    # The loser's late messages and its end change nothing.
    node.link_down("first-in", high, "duplicate", now=2.0)
    assert node.neighbours == {high: "second-out"}


def test_the_duplicate_rule_keeps_the_older_of_two_links_dialled_the_same_way() -> None:
    node = core()
    node.link_established("old", PEER, OUT)
    node.link_established("new", PEER, OUT)
    assert closes(node.take_actions()) == [("new", CloseCode.DUPLICATE_LINK)]
    assert node.neighbours == {PEER: "old"}


def test_a_neighbour_joins_routing_with_its_first_rtt_and_hears_updates() -> None:
    node = core()
    up(node, "l1", PEER, OUT)
    advertise(node, "l1", PEER)
    assert node.router.next_hop(PEER) == PEER
    sent: list[NodeAction[str]] = []
    while not sent:
        node.handle_timer(node.get_timer())
        sent = [a for a in node.take_actions()
                if isinstance(a, SendMessage) and isinstance(a.message, RouteUpdate)]
    assert {a.link for a in sent} == {"l1"}


def test_a_route_update_that_did_not_fit_its_queue_is_repaired_by_a_full_table() -> None:
    node = core()
    up(node, "l1", PEER, OUT)
    advertise(node, "l1", PEER)
    now = 1.0
    while node.get_timer() < 30.0:  # let the first updates go out
        now = node.get_timer()
        node.handle_timer(now)
        node.take_actions()
    quiet_until = node.get_timer()  # nothing to send before then
    lost_at = now + 0.5
    resync_at = lost_at + node.router.config.resync_delay
    assert resync_at < quiet_until
    update = RouteUpdate(1000, (RouteEntry(ME, 1, 0),))
    node.message_lost(PEER, Attach(AttachPurpose.EDGE), lost_at)  # best-effort: no resync
    node.message_lost(OTHER, update, lost_at)  # not a routing neighbour: nothing either
    assert node.get_timer() == quiet_until
    node.message_lost(PEER, update, lost_at)
    node.message_lost(PEER, update, lost_at + 0.1)  # the second loss joins the first resync
    assert node.get_timer() == pytest.approx(resync_at)
    node.handle_timer(node.get_timer())
    sent = [a for a in node.take_actions()
            if isinstance(a, SendMessage) and isinstance(a.message, RouteUpdate)]
    assert [a.link for a in sent] == ["l1"]
    assert ME in {entry.destination for entry in sent[0].message.entries}
    assert node.get_timer() == quiet_until  # one resync, not two


def test_links_dialled_to_attach_carry_attach_first_and_no_routing() -> None:
    node = core(edge=True)
    actions = up(node, "home", OTHER, EDGE_OUT)
    assert [a for a in actions if isinstance(a, SendMessage)] == [
        SendMessage("home", Attach(AttachPurpose.EDGE))]
    assert node.router.next_hop(OTHER) is None
    # With no home set, any supernode it attached to is its default route.
    packet = node.send_packet(MessageType.DATA, PEER, b"x", now=2.0)
    assert node.take_actions() == [Transmit("home", packet)]


def test_a_peer_that_attaches_leaves_routing_and_is_relayed_for() -> None:
    node = core()
    up(node, "l1", PEER, IN)
    advertise(node, "l1", PEER)
    assert node.router.next_hop(PEER) == PEER
    node.link_message("l1", PEER, Attach(AttachPurpose.EDGE), now=2.0)
    node.take_actions()
    assert node.attached_clients == [PEER]
    assert node.router.next_hop(PEER) is None
    packet = node.send_packet(MessageType.DATA, PEER, b"x", now=2.0)
    assert node.take_actions() == [Transmit("l1", packet)]
    node.link_down("l1", PEER, "gone", now=3.0)
    assert node.attached_clients == [] and node.neighbours == {}


def test_an_edge_client_refuses_attachments() -> None:
    node = core(edge=True)
    up(node, "l1", PEER, IN)
    node.link_message("l1", PEER, Attach(AttachPurpose.EDGE), now=2.0)
    assert closes(node.take_actions()) == [("l1", CloseCode.PROTOCOL_ERROR)]


def test_promotion_closes_attachments_once_and_starts_relaying() -> None:
    node = core(edge=True)
    up(node, "home", OTHER, EDGE_OUT)
    up(node, "direct", PEER, OUT)
    node.set_home(OTHER)
    assert node.promote()
    assert closes(node.take_actions()) == [("home", CloseCode.NORMAL)]
    assert not node.edge and node.forwarder.relays and node.home is None
    assert not node.promote() and node.take_actions() == []


def test_an_echo_times_out_exactly_when_its_patience_runs_out() -> None:
    node = core(now=0.0)
    up(node, "l1", PEER, OUT)
    advertise(node, "l1", PEER)
    echo_id = node.send_echo(PEER, 10.0, ttl=3, patience=1.5)
    assert [type(a) for a in node.take_actions()] == [Transmit]  # and no answer comes
    while node.get_timer() < 11.5:  # routing work first
        node.handle_timer(node.get_timer())
        assert not any(isinstance(a, EchoDone) for a in node.take_actions())
    assert node.get_timer() == 11.5
    node.handle_timer(11.25)
    assert node.take_actions() == []
    node.handle_timer(11.5)
    assert node.take_actions() == [
        EchoDone(echo_id, EchoResult(EchoKind.TIMEOUT, None, None, None, 3))]
    assert node.get_timer() > 11.5


def test_an_echo_reply_settles_the_echo_once_with_the_rtt() -> None:
    node = core()
    up(node, "l1", PEER, OUT, now=1.0)
    advertise(node, "l1", PEER)
    echo_id = node.send_echo(PEER, 10.0, patience=2.0)
    [request] = [a.packet for a in node.take_actions() if isinstance(a, Transmit)]
    reply = RoutedPacket(MessageType.ECHO_REPLY, 60, PEER, ME, 99,
                         echo_reply_body(request, None))
    node.link_message("l1", PEER, reply, now=10.25)
    expected = EchoResult(EchoKind.REPLY, PEER, OUT.address, 0.25, request.ttl)
    assert node.take_actions() == [EchoDone(echo_id, expected)]
    node.link_message("l1", PEER, reply, now=10.5)  # a duplicate answers nothing
    assert node.take_actions() == []


def test_an_error_report_names_the_hop_that_dropped_the_echo() -> None:
    node = core()
    up(node, "l1", PEER, OUT)
    node.link_message("l1", PEER, RouteUpdate(1000, (RouteEntry(OTHER, 1, 100),)), 1.0)
    echo_id = node.send_echo(OTHER, 10.0, patience=2.0)
    node.take_actions()
    report = ErrorReport(MessageType.ECHO_REQUEST, echo_id, OTHER, "10.0.0.7:1",
                         UnreachableCode.NONE)
    node.link_message("l1", PEER, RoutedPacket(MessageType.TIME_EXCEEDED, 60, PEER, ME, 5,
                                               report.to_body()), now=10.125)
    [done] = node.take_actions()
    assert done == EchoDone(echo_id, EchoResult(EchoKind.TIME_EXCEEDED, PEER, "10.0.0.7:1",
                                                0.125, DEFAULT_TTL))


def test_an_echo_with_no_route_is_answered_by_this_node_at_once() -> None:
    node = core()
    echo_id = node.send_echo(PEER, 10.0, ttl=3, patience=1.5)
    assert node.take_actions() == [
        EchoDone(echo_id, EchoResult(EchoKind.UNREACHABLE, ME, None, 0.0, 3))]


def test_a_report_about_our_data_says_which_destination_failed_and_who_said_so() -> None:
    node = core()
    up(node, "l1", PEER, OUT)
    report = ErrorReport(MessageType.DATA, 77, OTHER, "10.0.0.7:1", UnreachableCode.NO_ROUTE)
    node.link_message("l1", PEER, RoutedPacket(MessageType.UNREACHABLE, 60, PEER, ME, 5,
                                               report.to_body()), now=3.0)
    assert node.take_actions() == [
        DeliveryFailed(OTHER, MessageType.DATA, MessageType.UNREACHABLE, PEER)]


def test_data_with_no_route_fails_here_at_once_but_a_stale_echo_report_is_ignored() -> None:
    node = core()
    node.send_packet(MessageType.DATA, OTHER, b"hi", 1.0)
    assert DeliveryFailed(OTHER, MessageType.DATA, MessageType.UNREACHABLE, ME) \
        in node.take_actions()
    up(node, "l1", PEER, OUT)
    late = ErrorReport(MessageType.ECHO_REQUEST, 99, OTHER, None, UnreachableCode.NONE)
    node.link_message("l1", PEER, RoutedPacket(MessageType.TIME_EXCEEDED, 60, PEER, ME, 6,
                                               late.to_body()), now=3.0)
    assert node.take_actions() == []


def test_packets_for_this_node_go_to_the_application() -> None:
    node = core()
    up(node, "l1", PEER, OUT)
    packet = RoutedPacket(MessageType.DATA, 60, PEER, ME, 5, b"hi")
    node.link_message("l1", PEER, packet, now=2.0)
    assert node.take_actions() == [DeliverLocal(packet)]


def test_a_prefix_resolves_to_the_one_known_id_it_starts() -> None:
    node = core()
    up(node, "l1", PEER, OUT)
    assert node.resolve_node_id(PEER.hex()[:6].upper()) == PEER
    assert node.resolve_node_id(OTHER.hex()) == OTHER
    with pytest.raises(ControlError, match="at least 4 hex digits"):
        node.resolve_node_id("ab")
    with pytest.raises(ControlError, match="no known node id"):
        node.resolve_node_id(next(p for p in ("0000", "ffff", "1234")
                                  if not PEER.hex().startswith(p)
                                  and not ME.hex().startswith(p)))
