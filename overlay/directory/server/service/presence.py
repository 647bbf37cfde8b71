"""Presence, lookup, the supernode list, reachability dial-back and promotion.

What changes often lives in memory only: a presence update never touches the
disk, and a lookup answers from the certificate cache and the presence table.
"""

from __future__ import annotations

import logging

from overlay.addresses import Address, format_address
from overlay.directory.protocol import (
    Rejected,
    Status,
)
from overlay.directory.server.service.state import (
    WILDCARD_HOSTS,
    Connection,
    DirectoryState,
    ListedSupernode,
    Presence,
    Reply,
)
from overlay.ids import NodeId

log = logging.getLogger(__name__)


class PresenceOperations(DirectoryState):
    """The presence requests (``presence``, ``lookup``, ``supernodes``, ``dialback``,
    ``announce_supernode``) and the promotion policy they trigger."""

    async def _op_presence(self, conn: Connection, *, now: float, status: str,
                           home_node: NodeId | None = None, home_address: Address | None = None,
                           direct_address: Address | None = None,
                           supernode_ok: bool = False) -> Reply:
        assert conn.session is not None
        if direct_address is not None and direct_address != conn.verified_address:
            raise Rejected(Status.FORBIDDEN,
                           "a direct address must first pass a dial-back (dialback request)")
        username = conn.session.user.username
        presence = Presence(status, home_node, home_address, direct_address, int(now), conn,
                            supernode_ok=supernode_ok and conn.verified_address is not None)
        previous = self._presence.get(username)
        unchanged = previous is not None and (
            previous.status, previous.home_node, previous.home_address, previous.direct_address,
        ) == (status, home_node, home_address, direct_address)
        if previous is not None and unchanged:
            presence.since = previous.since
        self._presence[username] = presence
        self._online_since.setdefault(username, now)
        if not unchanged:  # a repeated update tells the contacts nothing new
            self._announce_presence(conn.session.contacts, username,
                                    presence.to_wire(self._last_seen.get(username)))
        self._consider_promotion(now)
        return Status.OK, f"presence {status}", {}

    def _consider_promotion(self, now: float) -> None:
        """Ask one reachable, long-lived, willing client to become a supernode when the
        supernodes are too few for the clients online (Skype's promotion, by policy)."""
        config = self.config
        if len(self._presence) <= config.clients_per_supernode * max(1, len(self._supernodes)):
            return  # cheap: there are not even that many users online
        if any(now - asked < config.promotion_retry
               for asked in self._promotion_asked.values()):
            return  # one question at a time
        supernode_ids = set(self._supernodes)
        clients = [(name, p) for name, p in self._presence.items()
                   if p.connection.node_id not in supernode_ids]
        if len(clients) <= config.clients_per_supernode * max(1, len(supernode_ids)):
            return
        candidates = [
            (self._online_since.get(name, now), name, p) for name, p in clients
            if p.supernode_ok and p.connection.verified_address is not None
            and now - self._online_since.get(name, now) >= config.promotion_min_uptime
            and name not in self._promotion_asked
        ]
        if not candidates:
            return
        _since, name, presence = min(candidates, key=lambda c: (c[0], c[1]))  # longest online
        self._promotion_asked[name] = now
        log.info("asking %s to become a supernode (%d clients, %d supernodes)", name,
                 len(clients), len(supernode_ids))
        presence.connection.notify("promote", {
            "reason": f"{len(clients)} clients for {len(supernode_ids)} supernode(s)",
        })

    async def _op_lookup(self, conn: Connection, *, now: float, username: str) -> Reply:
        session = conn.session
        assert session is not None
        not_yours = Rejected(Status.NOT_FOUND, f"{username} is not your contact")
        if username != session.user.username and username not in session.contacts:
            raise not_yours  # whether or not the name exists: it must not tell
        user = await self._user(username)
        if user is None:  # removed meanwhile
            raise not_yours
        return Status.OK, "found", {
            **self._identity_body(user, now), "presence": self._presence_of(username),
        }

    # --- supernodes and reachability -------------------------------------------------------

    async def _op_supernodes(self, conn: Connection, *, now: float) -> Reply:
        listed = [{"node_id": s.node_id.raw, "address": format_address(s.address)}
                  for s in self._supernodes.values()]
        listed += [{"node_id": node_id.raw, "address": format_address(address)}
                   for node_id, (_origin, address) in self.peers.supernodes.items()
                   if node_id not in self._supernodes]
        return Status.OK, f"{len(listed)} supernode(s)", {"supernodes": listed}

    async def _op_dialback(self, conn: Connection, *, now: float, address: Address) -> Reply:
        reachable, dialled, reason = await self._dial_back(conn, address)
        return Status.OK, "reachable" if reachable else "not reachable", {
            "reachable": reachable, "address": format_address(dialled), "reason": reason,
        }

    async def _op_announce_supernode(self, conn: Connection, *, now: float,
                                     address: Address) -> Reply:
        reachable, dialled, reason = await self._dial_back(conn, address)
        if not reachable:
            raise Rejected(Status.FORBIDDEN, f"a supernode must be reachable: {reason}")
        self._supernodes[conn.node_id] = ListedSupernode(conn.node_id, dialled, conn)
        self.peers.publish_supernode(conn.node_id, dialled)
        log.info("supernode %s at %s joined", conn.node_id.short, format_address(dialled))
        return Status.OK, "listed as a supernode", {"address": format_address(dialled)}

    async def _dial_back(self, conn: Connection, address: Address) -> tuple[bool, Address, str]:
        """Dial ``address`` and check that the client's own key answers there.

        Only the address the connection comes from may be dialled (a wildcard
        host means that one), so the server cannot be turned into a port scanner
        of other hosts; a different host is itself the sign of a NAT.
        """
        host, port = address
        seen_host = conn.address[0]
        if host in WILDCARD_HOSTS:
            host = seen_host
        dialled = (host, port)
        if host != seen_host:
            return False, dialled, (f"you connect from {seen_host}, not {host}: "
                                    "behind a NAT or a proxy")
        failure = await self._dialer(dialled, conn.node_id)
        if failure is not None:
            return False, dialled, failure
        conn.verified_address = dialled
        return True, dialled, "the handshake succeeded with your node key"

