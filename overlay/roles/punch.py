"""Hole punching for an edge client: the trio driver of :mod:`overlay.proto.punch`.

Why
---
Two edge clients behind NAT start every conversation relayed by supernodes
(docs/roles.md).  When both NATs map a local port to one public port whatever
the destination, the two can reach each other directly if they dial each
other's public address at the same moment (TCP simultaneous open).  This
module learns this client's public candidates, runs one
:class:`~overlay.proto.punch.PunchCoordinator` per relayed conversation, dials
when the coordinator says so, and hands a connection that came up to the node
as an ordinary link.  From then on the forwarder sends the peer's packets over
that link (an edge client's first choice is a direct neighbour), so the
reliable channel simply continues on the new path; when the link dies the
packets go back through the home supernode and the channel retransmits what
was lost on the way.  Nothing here touches the channel itself.

Observed addresses
------------------
Every outgoing connection of the node leaves from one local port
(``NodeConfig.outgoing_port``).  The directory server reports the source
address it sees in its login and resume answers; the home supernode answers a
PUNCH ``OBSERVE`` with the address it sees (docs/protocol.md, PUNCH).  Those
observed addresses are the candidates sent to the peer, and comparing them
classifies the NAT (:func:`~overlay.proto.punch.classify_mapping`).

The exchange runs in PUNCH packets (type 0x26) end to end over the relayed
path; relays forward them without reading them (an unassigned routed type to
an older node), so a peer that does not punch simply never answers and the
conversation stays relayed.

Listening on the outgoing port
------------------------------
A SYN of the peer's that reaches us while no dial of ours is in flight (on a
network without NAT such as 127.0.0.1, or through a NAT mapping that our
earlier, timed-out try left open) would be answered with a RST.  So the
service also listens on the outgoing port (SO_REUSEADDR and SO_REUSEPORT, as
libp2p does for hole punching).  What it accepts there is only ever a punch:
a connection from an address the coordinator of a conversation being punched
accepts (one of that peer's candidates), at most one at a time per peer,
run as the same link a dial would have made (the punch's initiator is the
handshake's initiator, the peer's id is expected).  Anything else is closed
at once, unread; so a stranger gets nothing from the port and costs one
accept.  The link is an edge client's ordinary direct link: the node core
runs no routing over it, relays nothing for others and refuses an attachment
(ATTACH EDGE) on it (docs/roles.md).
"""

from __future__ import annotations

import errno
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from overlay.addresses import Address, format_address
from overlay.errors import MalformedMessage
from overlay.ids import NodeId
from overlay.net.link import Link
from overlay.net.node import Node
from overlay.net.transport import connect_from_port, reusable_socket
from overlay.proto.messages import MessageType, RoutedPacket
from overlay.proto.punch import (
    Candidate,
    Dial,
    GaveUp,
    NatMapping,
    PunchConfig,
    PunchCoordinator,
    PunchKind,
    PunchMessage,
    PunchState,
    SendPunch,
    classify_mapping,
)
from overlay.roles.status import PunchProgress, PunchStatus

log = logging.getLogger(__name__)

TRY_TIMEOUT = 0.5
"""One connect() of a punch; whether a failed one is tried again is the coordinator's call."""
LISTEN_BACKLOG = 8
"""Connections the kernel queues on the outgoing port before we accept: a punch needs one."""
OBSERVE_INTERVAL = 2.0
"""How often an unanswered OBSERVE is sent again to the home supernode."""
SCAN_INTERVAL = 1.0
"""How often conversations are looked at for ones to punch (and direct links lost)."""


def answer_observe(node: Node, packet: RoutedPacket) -> None:
    """A supernode's side: tell a neighbour which address its link comes from.

    Only a packet from the neighbour itself is answered (``src`` is linked here):
    the answer is the link's remote address, the NAT's public side.
    """
    try:
        message = PunchMessage.from_body(packet.body)
    except MalformedMessage:
        return
    link = node.neighbours.get(packet.src)
    if message.kind is not PunchKind.OBSERVE or link is None:
        return
    answer = PunchMessage(PunchKind.OBSERVED, message.attempt, (link.address,))
    node.send_packet(MessageType.PUNCH, packet.src, answer.to_body())


@dataclass(slots=True)
class PeerPunch:
    """One conversation's punching: its coordinator and what status shows of it."""

    coordinator: PunchCoordinator
    direct: bool = False
    since: float = 0.0
    """When the path last changed (trio time), or when the conversation was first seen."""
    attempts: int = 0
    """Attempts dialled for this peer in all (a try again within one is not another)."""
    connects: int = 0
    """connect() calls made for this peer in all."""
    successes: int = 0
    """Direct links punched, dialled or accepted on the outgoing port."""
    inbound: int = 0
    """Of those, how many were accepted."""
    last_error: str | None = None
    connection: bool = False
    """A connection of this punch is in its link handshake: no second one is taken."""
    tries: set[trio.CancelScope] = field(default_factory=set)
    """The connects in flight, cancelled when a direct link is up."""

    def stop_tries(self) -> None:
        for scope in self.tries:
            scope.cancel()


class PunchService:
    """Runs hole punching for every relayed conversation of one edge client."""

    def __init__(self, node: Node, *, home: Callable[[], NodeId | None],
                 config: PunchConfig | None = None, rng: random.Random | None = None) -> None:
        self.node = node
        self._home = home
        self.config = config or PunchConfig()
        self._rng = rng or random.Random()
        self.peers: dict[NodeId, PeerPunch] = {}
        self.observed: dict[str, Address] = {}
        """Who saw our outgoing port as what: ``directory``, ``supernode``."""
        self._observed_home: NodeId | None = None
        self._observe_sent = -OBSERVE_INTERVAL
        self._wake = trio.Event()
        self._observed_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.listening: Address | None = None
        """Where punches are accepted (the outgoing port), once listening."""
        self.refused_inbound = 0
        """Connections on the outgoing port closed unread: not from a peer being punched."""

    # --- what the edge client and status use ---------------------------------------------

    def set_observed(self, who: str, address: Address | None) -> None:
        if address is None or self.observed.get(who) == address:
            return
        self.observed[who] = address
        self._observed_changed.set()
        self._observed_changed = trio.Event()
        log.info("%s sees our outgoing port as %s (NAT mapping: %s)", who,
                 format_address(address), self.mapping().value)
        for peer in self.peers.values():
            peer.coordinator.set_candidates(self.candidates())

    async def wait_observed(self, who: str) -> Address:
        """What ``who`` (``directory``, ``supernode``) reports, once it has."""
        while who not in self.observed:
            await self._observed_changed.wait()
        return self.observed[who]

    def local_address(self) -> Address | None:
        home = self._home()
        link = self.node.neighbours.get(home) if home is not None else None
        return link.local_address if link is not None else None

    def mapping(self) -> NatMapping:
        local = self.local_address()
        if local is None:
            return NatMapping.UNKNOWN
        return classify_mapping(local, list(self.observed.values()))

    def candidates(self) -> list[Candidate]:
        """Where the peer should dial us: what the observers saw, then our own address."""
        out: list[Candidate] = []
        local = self.local_address()
        port = self.node.outgoing_port
        own = [] if local is None or port is None else [(local[0], port)]
        for address in [*self.observed.values(), *own]:
            if address not in out and address[0] not in ("0.0.0.0", "::"):
                out.append(address)
        return out

    def path_since(self, peer: NodeId) -> float | None:
        state = self.peers.get(peer)
        return None if state is None else state.since

    def peer_status(self, peer: NodeId) -> PunchProgress | None:
        state = self.peers.get(peer)
        if state is None:
            return None
        return PunchProgress(state.coordinator.state.value, state.attempts, state.successes,
                             state.last_error,
                             round(max(0.0, trio.current_time() - state.since), 3))

    def status(self) -> PunchStatus:
        return PunchStatus(True, self.node.outgoing_port, dict(self.observed), self.mapping())

    # --- running ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.node.register_handler(MessageType.PUNCH, self._packet)
            listener = await self._listen()
            if listener is not None:
                nursery.start_soon(self._accept_punches, listener)
            task_status.started()
            while self.node.is_edge:  # a promoted client is dialled: it punches no more
                self._wake = trio.Event()  # before the work: what happens during it counts
                now = trio.current_time()
                self._observe(now)
                self._scan(now)
                for peer, state in list(self.peers.items()):
                    state.coordinator.handle_timer(now)
                    self._act(peer, state, wake=False)  # the deadline is computed next
                deadline = now + SCAN_INTERVAL
                for state in self.peers.values():
                    timer = state.coordinator.get_timer()
                    if timer is not None:
                        deadline = min(deadline, timer)
                with trio.move_on_at(deadline):
                    await self._wake.wait()
            nursery.cancel_scope.cancel()  # the listener too: a supernode listens elsewhere

    async def _listen(self) -> trio.SocketListener | None:
        """A listening socket on the outgoing port (module docstring), or None if the
        port cannot be listened on (punching then works only when SYNs cross)."""
        port = self.node.outgoing_port
        if port is None:
            return None
        sock = reusable_socket(socket.AF_INET)
        try:
            await sock.bind(("0.0.0.0", port))
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            log.warning("cannot listen on outgoing port %d (%s): a punch then needs the "
                        "two SYNs to cross", port, exc.strerror or exc)
            return None
        self.listening = ("0.0.0.0", port)
        log.debug("accepting punches on port %d", port)
        return trio.SocketListener(sock)

    async def _accept_punches(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # e.g. EMFILE: wait rather than spin
                    if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
                                         errno.ENOMEM, errno.ECONNABORTED):
                        raise
                    await trio.sleep(0.1)
                    continue
                try:
                    remote = stream.socket.getpeername()
                except OSError:
                    await trio.aclose_forcefully(stream)
                    continue
                address: Address = (str(remote[0]), int(remote[1]))
                peer = self._punching_from(address)
                if peer is None:
                    self.refused_inbound += 1
                    log.debug("closed a connection on the outgoing port from %s: no punch "
                              "expects it", format_address(address))
                    await trio.aclose_forcefully(stream)
                    continue
                state = self.peers[peer]
                state.connection = True
                assert self._nursery is not None
                self._nursery.start_soon(self._adopt, peer, state, stream, address, None)

    def _punching_from(self, address: Address) -> NodeId | None:
        """The peer whose punch ``address`` may be: its coordinator accepts it, no direct
        link is up, and no connection of that punch is in its handshake already."""
        for peer, state in self.peers.items():
            if (not state.connection and peer not in self.node.neighbours
                    and state.coordinator.accepts(address)):
                return peer
        return None

    def _observe(self, now: float) -> None:
        """Ask the home supernode what it sees, once per home (again until it answers)."""
        home = self._home()
        if home is None or home not in self.node.neighbours:
            return
        if home == self._observed_home and "supernode" in self.observed:
            return
        local = self.local_address()
        if local is None or local[1] != self.node.outgoing_port:
            return  # that link left from another port: its observation would mislead
        if now - self._observe_sent < OBSERVE_INTERVAL:
            return
        if home != self._observed_home:
            self.observed.pop("supernode", None)
            self._observed_home = home
        self._observe_sent = now
        self.node.send_packet(MessageType.PUNCH, home,
                              PunchMessage(PunchKind.OBSERVE, 1).to_body())

    def _scan(self, now: float) -> None:
        """Start punching for new relayed conversations; notice direct links come and go."""
        locations = self.node.forwarder.locations
        talking = {channel.peer for channel in self.node.channels.channels()}
        for peer in talking - self.peers.keys():
            if peer in locations and peer not in self.node.neighbours:
                self._coordinator(peer, now).coordinator.start(now)  # a responder waits
        for peer, state in list(self.peers.items()):
            if (peer not in talking and not state.direct
                    and state.coordinator.state is PunchState.RELAYED):
                del self.peers[peer]  # the conversation is over: no more rounds for it
        for peer, state in self.peers.items():
            linked = peer in self.node.neighbours
            if linked == state.direct:
                continue
            state.direct, state.since = linked, now
            if linked:
                log.info("conversation with %s is direct now", peer.short)
                state.coordinator.direct_up()
            else:
                log.info("direct link to %s lost: relayed again", peer.short)
                state.coordinator.direct_down(now)

    def _coordinator(self, peer: NodeId, now: float) -> PeerPunch:
        state = self.peers.get(peer)
        if state is None:
            coordinator = PunchCoordinator(initiator=self.node.node_id < peer,
                                           candidates=self.candidates(),
                                           random=self._rng.random, config=self.config)
            state = self.peers[peer] = PeerPunch(coordinator, since=now)
        return state

    def _packet(self, packet: RoutedPacket) -> None:
        try:
            message = PunchMessage.from_body(packet.body)
        except MalformedMessage as exc:
            log.debug("malformed PUNCH from %s: %s", packet.src.short, exc)
            return
        now = trio.current_time()
        if message.kind is PunchKind.OBSERVED:
            local = self.local_address()
            # Only what the supernode saw of a link from our outgoing port means anything
            # (the attachment may have fallen back to an ephemeral port).
            if (packet.src == self._home() and message.candidates and local is not None
                    and local[1] == self.node.outgoing_port):
                self.set_observed("supernode", message.candidates[0])
            return
        if message.kind is PunchKind.OBSERVE:
            return  # we observe for nobody: only supernodes answer
        if message.kind is PunchKind.CONNECT and not self._may_punch_with(packet.src):
            return
        state = self.peers.get(packet.src)
        if state is None and message.kind is PunchKind.CONNECT:
            state = self._coordinator(packet.src, now)
        if state is None:
            return
        state.coordinator.receive(message, now)
        self._act(packet.src, state)

    def _may_punch_with(self, peer: NodeId) -> bool:
        """Answer a CONNECT only from an edge client (we must know its home to answer)
        we have a conversation with.  A packet's source is only claimed, so anyone
        could otherwise have us dial the addresses of their choice, a round per CONNECT:
        only the peer of one of our own channels can (and it is bounded per round)."""
        return (peer in self.node.forwarder.locations
                and any(channel.peer == peer for channel in self.node.channels.channels()))

    def _act(self, peer: NodeId, state: PeerPunch, *, wake: bool = True) -> None:
        """Carry out the coordinator's actions; ``wake``: the run loop must look at its
        timer again (called from outside the loop)."""
        for action in state.coordinator.actions():
            if isinstance(action, SendPunch):
                self.node.send_packet(MessageType.PUNCH, peer, action.message.to_body())
            elif isinstance(action, Dial):
                if action.redial == 0:
                    state.attempts += 1
                    log.info("punching to %s: attempt %d, dialling %s", peer.short,
                             action.attempt, ", ".join(format_address(c)
                                                       for c in action.candidates)
                             or "nothing")
                assert self._nursery is not None
                self._nursery.start_soon(self._dial, peer, state, action)
            elif isinstance(action, GaveUp):
                log.info("punching to %s: %d attempts failed (%s); staying relayed, next "
                         "round in %.0f s", peer.short, action.attempts, state.last_error,
                         max(0.0, action.retry_at - trio.current_time()))
        if wake:
            self._wake.set()

    async def _dial(self, peer: NodeId, state: PeerPunch, action: Dial) -> None:
        """One connect() from our outgoing port per candidate of ``action``; each failure
        goes to the coordinator (which may have it tried again), the first connection to
        :meth:`_adopt`."""
        port = self.node.outgoing_port
        if port is None or not action.candidates:
            state.last_error = "no candidate to dial"
            state.coordinator.dial_result(action.attempt, False, trio.current_time())
            self._act(peer, state)
            return
        async with trio.open_nursery() as nursery:
            for candidate in action.candidates:
                nursery.start_soon(self._try_candidate, peer, state, action.attempt,
                                   candidate, port)

    async def _try_candidate(self, peer: NodeId, state: PeerPunch, attempt: int,
                             candidate: Address, port: int) -> None:
        stream: trio.SocketStream | None = None
        scope = trio.CancelScope()
        state.tries.add(scope)
        try:
            with scope:
                state.connects += 1
                try:
                    with trio.fail_after(TRY_TIMEOUT):
                        stream = await connect_from_port(candidate, port)
                except (OSError, trio.TooSlowError) as exc:
                    why = "no answer" if isinstance(exc, trio.TooSlowError) else (
                        exc.strerror or str(exc)).lower()
                    state.last_error = f"{format_address(candidate)}: {why}"
        finally:
            state.tries.discard(scope)
        if stream is None:
            if not scope.cancelled_caught:
                state.coordinator.dial_failed(attempt, candidate, trio.current_time())
                self._act(peer, state)
            return
        if state.connection or peer in self.node.neighbours:
            await trio.aclose_forcefully(stream)  # another candidate, or an accept, was first
            return
        state.connection = True
        await self._adopt(peer, state, stream, candidate, attempt)

    async def _adopt(self, peer: NodeId, state: PeerPunch, stream: trio.SocketStream,
                     address: Address, attempt: int | None) -> None:
        """Run the link handshake on a punch's connection (dialled in ``attempt``, or
        accepted on the outgoing port: None) and report whether the link came up."""
        coordinator = state.coordinator
        link = self.node.links.new_link(stream, address, initiator=coordinator.initiator,
                                        expected_peer=peer)
        assert self._nursery is not None
        self._nursery.start_soon(self._run_link, link)
        try:
            with trio.move_on_after(self.config.dial_timeout * 0.3):
                await self.node.wait_until(lambda: link.core.established_at is not None
                                           or link.finished.is_set())
        finally:
            state.connection = False
        up = link.core.established_at is not None and peer in self.node.neighbours
        how = "dialled" if attempt is not None else "accepted"
        if up:
            state.successes += 1
            state.inbound += attempt is None
            state.stop_tries()
            log.info("punched through to %s at %s (%s): direct link up", peer.short,
                     format_address(address), how)
            coordinator.direct_up()
            if not state.direct:  # the scan would notice a second later: the time is now
                state.direct, state.since = True, trio.current_time()
                log.info("conversation with %s is direct now", peer.short)
        else:
            state.last_error = f"{how} connection, but the link handshake failed"
            link.close()
            if attempt is not None:
                coordinator.dial_result(attempt, False, trio.current_time())
        self._act(peer, state)

    async def _run_link(self, link: Link) -> None:
        down = await self.node.links.run_link(link)
        if link.core.established_at is not None:
            log.info("direct link %s ended: %s", format_address(link.address), down.describe())
        self._wake.set()
