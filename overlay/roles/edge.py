"""The edge client role: log in, attach to the nearest supernode, find contacts, fail over.

An edge client may be behind a NAT: it only dials out.  On login it asks the
directory for a dial-back of its listening address (if it has one): only a
client the server could reach is *reachable*, may publish a direct address,
and may be promoted to supernode.

Attachment: measure the RTT to several supernodes (short probes), attach to
the nearest (the *home*, published in presence) and keep a second attachment
as *standby*.  Packets for this client reach it through either one (VIA), so
when the home dies the standby becomes home at once, presence is updated, and
every peer with an open conversation is sent a packet that tells it the new
home (VIA's ``src_home``); a new standby is found in the background.

Conversations: :meth:`EdgeClient.locate` turns a contact's username into its
node id and where to reach it (the certificate from a lookup, verified against
the pinned server key; its home supernode from presence).  A contact with a
verified direct address gets a direct link; everything else is relayed by
supernodes.  Presence notices keep locations current.

One module for one role: the directory session and the attachment share the
client's state (home, standby, reachability) and each drives the other (an
attachment is published as presence; a notice can move the attachment); the
choice of supernodes itself is pure, in :mod:`overlay.roles.selection`.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from overlay.addresses import Address, format_address
from overlay.directory.certificates import Certificate
from overlay.directory.client.connection import DirectoryClient, Notice, Presence
from overlay.directory.client.servers import ServerList
from overlay.errors import DirectoryError
from overlay.ids import NodeId
from overlay.net.node import Node
from overlay.net.transport import TcpTransport, Transport
from overlay.proto.messages import MessageType
from overlay.proto.punch import PunchConfig
from overlay.roles.directory_link import DirectoryLink
from overlay.roles.probe import measure_candidates
from overlay.roles.punch import PunchService
from overlay.roles.selection import Attachment, choose_attachment
from overlay.roles.status import Conversation, EdgeStatus, Path
from overlay.roles.supernode import Supernode

log = logging.getLogger(__name__)


PROBES_AT_ONCE = 8


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    candidates: int = 32
    """Supernodes probed when choosing where to attach, beyond those already linked (a
    random sample when more are listed).  A probe is three PING/PONG rounds 20 ms
    apart, so probing many is cheap; probing few leaves clients away from their nearest
    supernode (in the simulator, probing 6 of 20 left half of them elsewhere and relayed
    latency 8% higher)."""
    refresh_interval: float = 30.0
    attach_timeout: float = 5.0
    supernode_ok: bool = True
    """May the directory ask this client to become a supernode?  (--no-supernode)"""
    direct: bool = True
    """Link directly to contacts that published a verified direct address."""
    only_supernodes: frozenset[NodeId] = frozenset()
    """Attach only to these supernodes (empty: any the directory lists)."""
    punch: bool = True
    """Try to turn relayed conversations with other edge clients into direct links (hole
    punching, docs/roles.md); needs the node's ``outgoing_port``."""
    punch_config: PunchConfig = field(default_factory=PunchConfig)


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str | None = None
    token: bytes | None = None


@dataclass(slots=True)
class Peer:
    """A contact this client talks to: who (from the certificate) and where (presence)."""

    username: str
    node_id: NodeId
    presence: Presence
    certificate: Certificate
    """Verified against the pinned server key: binds the username to the node's key."""


class EdgeClient:
    """Runs the edge role (and the user's session) on a running node."""

    def __init__(self, node: Node, credentials: Credentials, *,
                 server: Address | ServerList,
                 server_key: bytes | None, config: EdgeConfig | None = None,
                 transport: Transport | None = None, rng: random.Random | None = None,
                 on_promote: Callable[[], Awaitable[None]] | None = None) -> None:
        self.node = node
        self.credentials = credentials
        self.username = credentials.username
        self.config = config or EdgeConfig()
        self._transport = transport or TcpTransport()
        self._rng = rng or random.Random()
        self._on_promote = on_promote
        # The directory connection leaves from the node's outgoing port (if it has one):
        # the server's report of its source address is one of the punching candidates.
        self.directory = DirectoryLink(server, node.identity, server_key, self._connected,
                                       self._notice, transport=transport or node.transport,
                                       rng=self._rng)
        self.token: bytes | None = credentials.token
        self.certificate: Certificate | None = None
        """Our own, from the last login or resume: the chat layer seals under it."""
        self.reachable: bool | None = None
        self.reachability_reason = ""
        self.direct_address: Address | None = None
        self.attachment: Attachment | None = None
        self.known: dict[NodeId, Address] = {}
        self.rtts: dict[NodeId, float] = {}
        self.peers: dict[str, Peer] = {}
        self._dialers: dict[NodeId, trio.CancelScope] = {}
        self._direct_dialers: dict[NodeId, trio.CancelScope] = {}
        self.failovers = 0
        self.promoted = False
        self._attached = trio.Event()
        self._attaching = trio.CancelScope()
        self._warned_no_supernodes = False
        self.on_presence: Callable[[str, Presence], None] | None = None
        """Called for every presence notice of a contact (the chat layer flushes queues)."""
        self.on_notice: Callable[[Notice], None] | None = None
        """Called first for every notice from the directory (contact requests, ...)."""
        self._nursery: trio.Nursery | None = None
        self.supernode: Supernode | None = None
        """The supernode role this client runs once promoted."""
        self.punch: PunchService | None = None
        if self.config.punch and node.config.outgoing_port is not None and node.is_edge:
            self.punch = PunchService(node, home=lambda: self.home,
                                      config=self.config.punch_config, rng=self._rng)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Log in, attach, then keep attached; started() once the first home is up."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.punch is not None:
                await nursery.start(self.punch.run)
            await nursery.start(self.directory.run)
            if self.node.is_edge:
                nursery.start_soon(self._attach_loop_until_promoted)
                await self._attached.wait()
            task_status.started()

    async def _attach_loop_until_promoted(self) -> None:
        with self._attaching:
            await self._attach_loop()

    # --- what the CLI and the chat layer use ------------------------------------------

    @property
    def home(self) -> NodeId | None:
        if not self.node.is_edge:
            return self.node.node_id  # a supernode is its own home
        return None if self.attachment is None else self.attachment.home

    async def locate(self, username: str, client: DirectoryClient | None = None) -> NodeId:
        """A contact's node id, with its location set up for routing (and a direct link).
        ``client``: the connection to ask (on_connect's, which is not ready() yet)."""
        client = client or await self.directory.ready()
        found = await client.lookup(username)
        peer = Peer(username, found.certificate.node_id, found.presence, found.certificate)
        self.peers[username] = peer
        self._apply_presence(peer)
        return peer.node_id

    def conversations(self) -> list[Conversation]:
        """Each open conversation: direct, or relayed through which supernodes."""
        rows = []
        names = {peer.node_id: peer.username for peer in self.peers.values()}
        seen: set[NodeId] = set()
        for channel in self.node.channels.channels():
            peer = channel.peer
            if peer in seen:
                continue
            seen.add(peer)
            punch = None if self.punch is None else self.punch.peer_status(peer)
            rows.append(Conversation(peer, names.get(peer), self.route_to(peer), punch))
        return rows

    def route_to(self, peer: NodeId) -> Path:
        """How packets to ``peer`` travel: direct, or through our home and theirs."""
        if peer in self.node.neighbours and peer not in self._dialers:
            return Path(direct=True)
        via = [] if self.home is None or self.home == self.node.node_id else [self.home]
        their_home = self.node.forwarder.locations.get(peer)
        if their_home is not None and their_home not in via:
            via.append(their_home)
        return Path(direct=False, via=tuple(via))

    def path_to(self, peer: NodeId) -> dict[str, Any]:
        """:meth:`route_to` in its JSON shape (``{"path": "direct", "via": []}``)."""
        return self.route_to(peer).to_json()

    def status(self) -> EdgeStatus:
        attachment = self.attachment
        return EdgeStatus(
            role="edge" if self.node.is_edge else "supernode",
            username=self.username,
            reachable=self.reachable,
            reachability=self.reachability_reason,
            direct_address=self.direct_address,
            home=self.home,
            standby=None if attachment is None else attachment.standby,
            failovers=self.failovers,
            supernodes=tuple(self.rtts.items()),
            conversations=tuple(self.conversations()),
            directory_connected=self.directory.client is not None,
            server=self.directory.address,
            punch=None if self.punch is None else self.punch.status(),
        )

    # --- directory ------------------------------------------------------------------

    async def _connected(self, client: DirectoryClient) -> None:
        """Runs after every (re)connection to the directory."""
        if self.token is not None:
            try:
                resumed = await client.resume(self.token)
                self.certificate = resumed.certificate
                self._observed(resumed.observed, client)
            except DirectoryError as exc:
                if self.credentials.password is None or exc.status != 401:
                    raise
                self.token = None
        if self.token is None:
            if self.credentials.password is None:
                raise DirectoryError(401, "no session: log in first (overlay account login)")
            login = await client.login(self.username, self.credentials.password)
            self.token, self.certificate = login.token, login.certificate
            self._observed(login.observed, client)
        listen = self.node.listen_address
        if listen is not None and self.reachable is None:
            result = await client.dialback(listen)
            self.reachable = result.reachable
            self.reachability_reason = result.reason
            self.direct_address = result.address if result.reachable else None
            log.info("%s: %s (%s)", self.username,
                     "reachable at " + format_address(result.address) if result.reachable
                     else "not reachable from outside, relayed by supernodes", result.reason)
        elif listen is None:
            self.reachable = False
            self.reachability_reason = "not listening (dials out only)"
        await self._publish(client)
        for username in list(self.peers):  # the world may have moved while we were away
            with contextlib.suppress(DirectoryError):
                await self.locate(username, client)

    def _observed(self, address: Address | None, client: DirectoryClient) -> None:
        """The server's report of our source address, if the connection left from the
        outgoing port (a dial that fell back to an ephemeral port tells nothing about it)."""
        local = client.local_address
        if self.punch is None or local is None or local[1] != self.node.outgoing_port:
            return
        self.punch.set_observed("directory", address)

    async def _publish(self, client: DirectoryClient | None = None) -> None:
        client = client or self.directory.client
        if client is None:
            return  # the directory is down: on_connect publishes when it is back
        home = self.home
        home_address = None
        if home is not None:
            home_address = self.direct_address if home == self.node.node_id \
                else self.known.get(home)
        try:
            await client.request(
                "presence", status="online",
                home_node=None if home is None else home.raw,
                home_address=None if home_address is None else format_address(home_address),
                direct_address=None if self.direct_address is None
                else format_address(self.direct_address),
                supernode_ok=self.config.supernode_ok and bool(self.reachable),
            )
        except DirectoryError as exc:
            log.warning("could not publish presence: %s", exc)

    async def _notice(self, notice: Notice) -> None:
        if self.on_notice is not None:
            self.on_notice(notice)
        if notice.event == "presence":
            username = notice.body.get("username")
            if not isinstance(username, str):
                return
            presence = Presence.from_wire(notice.body.get("presence"))
            peer = self.peers.get(username)
            if peer is not None:
                peer.presence = presence
                self._apply_presence(peer)
            if self.on_presence is not None:
                self.on_presence(username, presence)
        elif notice.event == "promote":
            await self._promotion_asked(notice)
        else:
            log.debug("directory: %s %s", notice.event, notice.body)

    async def _promotion_asked(self, notice: Notice) -> None:
        reason = notice.body.get("reason", "")
        if not self.config.supernode_ok or self.promoted or self.direct_address is None:
            log.info("asked to become a supernode (%s); declined by configuration", reason)
            return
        log.info("asked to become a supernode (%s): promoting", reason)
        self.promoted = True
        self._attaching.cancel()
        for scope in self._dialers.values():
            scope.cancel()
        self._dialers.clear()
        self.attachment = None
        self.punch = None  # a supernode is dialled, it does not punch (its task idles)
        self.node.promote()
        self.supernode = Supernode(self.node, self.direct_address,
                                   server=self.directory.servers,
                                   server_key=self.directory.server_key,
                                   transport=self._transport, rng=self._rng)
        assert self._nursery is not None
        self._nursery.start_soon(self.supernode.run)
        self._attached.set()  # a supernode is its own home
        await self._publish()
        if self._on_promote is not None:
            await self._on_promote()

    def _apply_presence(self, peer: Peer) -> None:
        presence = peer.presence
        if presence.home_node is not None:
            self.node.set_location(peer.node_id, presence.home_node)
        direct = presence.direct_address
        if self.config.direct and direct is not None and peer.node_id not in self._direct_dialers:
            log.info("linking directly to %s at %s", peer.username, format_address(direct))
            self._direct_dialers[peer.node_id] = self.node.connect(direct,
                                                                   expected_peer=peer.node_id)

    # --- attachment -------------------------------------------------------------------

    async def _attach_loop(self) -> None:
        while True:
            await self._choose_and_attach()
            home = self.home
            with trio.move_on_after(self.config.refresh_interval):
                if home is None:
                    await trio.sleep(1.0)  # nothing to attach to yet: look again soon
                else:
                    await self._wait_attachment_broken(home)
            if home is not None and home not in self.node.neighbours:
                await self._fail_over(home)

    async def _wait_attachment_broken(self, home: NodeId) -> None:
        """Return when the home link is lost, or the standby link once up is lost.

        A lost standby is replaced at once (the loop chooses again), not at the next
        refresh: otherwise a home that fails within ``refresh_interval`` of its standby
        leaves the client with nothing to switch to, and a search instead of a switch.
        """
        standby = self.attachment.standby if self.attachment is not None else None
        standby_seen = False

        def broken() -> bool:
            nonlocal standby_seen
            neighbours = self.node.neighbours
            if home not in neighbours:
                return True
            if standby is not None:
                if standby in neighbours:
                    standby_seen = True
                elif standby_seen:
                    return True
            return False

        await self.node.wait_until(broken)

    async def _choose_and_attach(self) -> None:
        try:
            client = await self.directory.ready()
            allowed = self.config.only_supernodes
            self.known = {node: address for node, address in await client.supernodes()
                          if not allowed or node in allowed}
        except DirectoryError as exc:
            log.debug("supernode list unavailable (%s); using the last one", exc)
        self.rtts = await self._measure()
        if self.attachment is not None and self.attachment.home not in self.node.neighbours:
            # The home died while we measured (its RTT came from the link, so it may
            # still look best): fail over to the standby now rather than wait
            # attach_timeout for a dead home, or drop the standby for a fresh choice.
            return
        choice = choose_attachment(self.rtts, self.attachment)
        if choice is None:
            if self.known:
                log.warning("%s: no supernode answered (%d listed)", self.username,
                            len(self.known))
            elif not self._warned_no_supernodes:
                self._warned_no_supernodes = True
                log.warning("%s: the directory lists no supernode yet; waiting for one "
                            "(start one with overlay supernode)", self.username)
            return
        for peer in (choice.home, choice.standby):
            if peer is not None and peer not in self._dialers:
                self._dialers[peer] = self.node.connect(self.known[peer], expected_peer=peer,
                                                        attach=True)
        for peer in list(self._dialers.keys() - {choice.home, choice.standby}):
            self._dialers.pop(peer).cancel()
            self.node.disconnect(peer, "no longer this client's supernode")
        with trio.move_on_after(self.config.attach_timeout):
            await self.node.wait_until(lambda: choice.home in self.node.neighbours)
        if choice.home not in self.node.neighbours:
            log.warning("%s: supernode %s did not accept the attachment", self.username,
                        choice.home.short)
            return
        changed = self.attachment is None or self.attachment.home != choice.home
        self.attachment = choice
        self.node.set_home(choice.home)
        if changed:
            log.info("%s: attached to supernode %s at %s (rtt %.3f ms)%s", self.username,
                     choice.home.short, format_address(self.known[choice.home]),
                     self.rtts[choice.home] * 1000,
                     f", standby {choice.standby.short}" if choice.standby else "")
            await self._publish()
            self._tell_peers()
        self._attached.set()

    async def _fail_over(self, dead: NodeId) -> None:
        """The home link is gone: the standby (already attached) takes over at once."""
        self.failovers += 1
        standby = self.attachment.standby if self.attachment else None
        scope = self._dialers.pop(dead, None)
        if scope is not None:
            scope.cancel()
        self.rtts.pop(dead, None)
        if standby is not None and standby in self.node.neighbours:
            self.attachment = Attachment(standby, None)
            self.node.set_home(standby)
            log.warning("%s: home supernode %s lost; standby %s is home now", self.username,
                        dead.short, standby.short)
            self._tell_peers()
            await self._publish()
        else:
            self.attachment = None
            self.node.set_home(None)
            log.warning("%s: home supernode %s lost and no standby is up; searching",
                        self.username, dead.short)

    def _tell_peers(self) -> None:
        """Send each relayed conversation's peer a packet stamped with our new home."""
        for channel in self.node.channels.channels():
            if channel.peer not in self.node.neighbours:
                self.node.send_packet(MessageType.ECHO_REQUEST, channel.peer, None)

    async def _measure(self) -> dict[NodeId, float]:
        return await measure_candidates(
            self.node, self._transport, self.known, max_probes=self.config.candidates,
            parallel=PROBES_AT_ONCE, rng=self._rng)
