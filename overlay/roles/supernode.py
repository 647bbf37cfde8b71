"""The supernode role: announce itself, keep a latency-chosen mesh, relay for edge clients.

A supernode is an ordinary routing node (it runs the routing of
:mod:`overlay.proto.routing` with its mesh neighbours) that the directory has
verified to be reachable (the dial-back behind ``announce_supernode``), and
that accepts attachments from edge clients (ATTACH, then VIA delivery; see
:mod:`overlay.proto.forwarding`).

Mesh upkeep, every ``refresh_interval``: fetch the supernode list, measure the
RTT to every candidate (the link's own estimate for those already linked, a
short probe for the others), and keep links to the ``nearest`` plus
``random_extra`` random ones (:func:`overlay.roles.selection.choose_mesh`).
Only links this supernode dialled are managed; links others dialled to it are
theirs to keep.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import trio

from overlay.addresses import Address, format_address
from overlay.directory.client.connection import DirectoryClient, Notice
from overlay.directory.client.servers import ServerList
from overlay.errors import OverlayError, RoleError
from overlay.ids import NodeId
from overlay.net.node import Node
from overlay.net.transport import TcpTransport, Transport
from overlay.proto.messages import MessageType
from overlay.roles.directory_link import DirectoryLink
from overlay.roles.probe import measure_candidates
from overlay.roles.punch import answer_observe
from overlay.roles.selection import choose_mesh
from overlay.roles.status import SupernodeStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SupernodeConfig:
    nearest: int = 6
    random_extra: int = 2
    refresh_interval: float = 15.0
    max_probes: int = 32
    """At most this many unlinked candidates are probed per refresh (a random sample)."""
    probe_parallel: int = 8


class Supernode:
    """Runs the supernode role on a running (non-edge) node."""

    def __init__(self, node: Node, advertise: Address, *, server: Address | ServerList,
                 server_key: bytes | None, config: SupernodeConfig | None = None,
                 transport: Transport | None = None, rng: random.Random | None = None) -> None:
        if node.is_edge:
            raise RoleError("a supernode cannot run on an edge node")
        self.node = node
        self.advertise = advertise
        self.config = config or SupernodeConfig()
        self._transport = transport or TcpTransport()
        self._rng = rng or random.Random()
        self.directory = DirectoryLink(server, node.identity, server_key, self._announce,
                                       self._notice, transport=transport, rng=self._rng)
        self._dialers: dict[NodeId, trio.CancelScope] = {}
        self.known: dict[NodeId, Address] = {}
        self.rtts: dict[NodeId, float] = {}
        self._refresh = trio.Event()
        # Tell attached clients which address their link comes from (hole punching).
        node.register_handler(MessageType.PUNCH, lambda packet: answer_observe(node, packet))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.directory.run)
            log.info("supernode %s announced at %s", self.node.node_id.short,
                     format_address(self.advertise))
            nursery.start_soon(self._maintain_mesh)
            task_status.started()

    def refresh_soon(self) -> None:
        """Look at the supernode list again now (a new supernode is known to have joined)."""
        self._refresh.set()

    def status(self) -> SupernodeStatus:
        return SupernodeStatus(
            advertise=self.advertise,
            mesh_dialled=tuple(self._dialers),
            attached_clients=tuple(self.node.attached_clients),
            candidates=tuple(self.rtts.items()),
            directory_connected=self.directory.client is not None,
            server=self.directory.address,
        )

    # --- directory ------------------------------------------------------------------

    async def _announce(self, client: DirectoryClient) -> None:
        await client.announce_supernode(self.advertise)

    async def _notice(self, notice: Notice) -> None:
        log.debug("directory notice %s", notice.event)

    # --- mesh -------------------------------------------------------------------------

    async def _maintain_mesh(self) -> None:
        while True:
            try:
                client = await self.directory.ready()
                listed = await client.supernodes()
            except OverlayError as exc:  # an outage must not stop the mesh
                log.debug("supernode list unavailable: %s", exc)
            else:
                self.known = {node: address for node, address in listed
                              if node != self.node.node_id}
                await self._measure()
                self._apply(choose_mesh(self.rtts, nearest=self.config.nearest,
                                        random_extra=self.config.random_extra, rng=self._rng))
            with trio.move_on_after(self.config.refresh_interval):
                await self._refresh.wait()
            self._refresh = trio.Event()

    async def _measure(self) -> None:
        self.rtts = await measure_candidates(
            self.node, self._transport, self.known, max_probes=self.config.max_probes,
            parallel=self.config.probe_parallel, rng=self._rng)

    def _apply(self, wanted: set[NodeId]) -> None:
        for peer in wanted - self._dialers.keys():
            log.info("mesh: linking to supernode %s at %s (rtt %.3f ms)", peer.short,
                     format_address(self.known[peer]), self.rtts[peer] * 1000)
            self._dialers[peer] = self.node.connect(self.known[peer], expected_peer=peer)
        for peer in list(self._dialers.keys() - wanted):
            if peer in self.known and peer in self.rtts:
                log.info("mesh: dropping supernode %s (others are closer)", peer.short)
                self._dialers.pop(peer).cancel()
                self.node.disconnect(peer, "mesh neighbour no longer chosen")
            elif peer not in self.known:
                self._dialers.pop(peer).cancel()  # gone from the directory's list
