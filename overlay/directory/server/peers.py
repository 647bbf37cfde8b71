"""What a directory process knows of the other processes on its database, and how it
answers their events (sent over :mod:`overlay.directory.server.cluster`).

The rule that keeps it simple: every process is the authority for its own
connections, and only for them.  A user's presence is the one set on the
process the user is connected to; the others keep a copy, tagged with the
process it came from, that is replaced by newer news from anywhere and dropped
when that process says the user went offline or falls silent.  A local
presence always wins over a copy, so a user who moved to this process (their
old one died) is not shown offline by the old one's late news.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from overlay.addresses import Address, format_address, parse_address
from overlay.ids import NodeId

if TYPE_CHECKING:
    from overlay.directory.server.service.state import DirectoryState

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where a directory sends its events
    (:class:`~overlay.directory.server.cluster.PostgresCluster`)."""

    def publish(self, event: dict[str, Any]) -> None: ...


class Peers:
    """The other processes' presence and supernodes, as last heard; their events applied."""

    def __init__(self, directory: DirectoryState, publisher: Publisher | None) -> None:
        self._directory = directory
        self._publisher = publisher
        self.presence: dict[str, tuple[str, dict[str, Any]]] = {}
        """username -> (origin, presence on the wire) of users connected elsewhere."""
        self.supernodes: dict[NodeId, tuple[str, Address]] = {}

    @property
    def enabled(self) -> bool:
        return self._publisher is not None

    def publish(self, event: dict[str, Any]) -> None:
        if self._publisher is not None:
            self._publisher.publish(event)

    def publish_presence(self, username: str, presence: dict[str, Any]) -> None:
        """Each process tells its own sessions that have ``username`` as a contact."""
        self.publish({"t": "presence", "u": username, "p": presence})

    def publish_supernode(self, node_id: NodeId, address: Address | None) -> None:
        self.publish({"t": "supernode", "n": node_id.raw,
                      "a": None if address is None else format_address(address)})

    async def handle(self, event: dict[str, Any]) -> None:
        """Apply one event from another process; a malformed one is logged and ignored."""
        kind = event.get("t")
        handler = getattr(self, f"_on_{kind}", None) if isinstance(kind, str) else None
        if handler is None:
            log.warning("cluster: ignored an event of unknown kind %r", kind)
            return
        try:
            await handler(event)
        except Exception:
            log.exception("cluster: could not apply a %r event", kind)

    async def _on_alive(self, event: dict[str, Any]) -> None:
        pass

    async def _on_hello(self, event: dict[str, Any]) -> None:
        """A process (re)joined: tell it what is ours."""
        d = self._directory
        for username, presence in d._presence.items():
            self.publish_presence(username, presence.to_wire(d._last_seen.get(username)))
        for supernode in d._supernodes.values():
            self.publish_supernode(supernode.node_id, supernode.address)

    async def _on_gone(self, event: dict[str, Any]) -> None:
        """A process fell silent: its users are offline, its supernodes unlisted."""
        origin = event["o"]
        d = self._directory
        for username, (came_from, _presence) in list(self.presence.items()):
            if came_from == origin:
                del self.presence[username]
                if username not in d._presence:
                    d._announce_here(username, d._presence_of(username))
        for node_id, (came_from, _address) in list(self.supernodes.items()):
            if came_from == origin:
                del self.supernodes[node_id]

    async def _on_presence(self, event: dict[str, Any]) -> None:
        origin, username, presence = event["o"], str(event["u"]), dict(event["p"])
        d = self._directory
        if presence.get("status") == "offline":
            held = self.presence.get(username)
            if held is not None and held[0] != origin:
                return  # the user is online on yet another process meanwhile
            self.presence.pop(username, None)
            last_seen = presence.get("last_seen")
            if isinstance(last_seen, int):
                d._last_seen[username] = last_seen
        else:
            self.presence[username] = (origin, presence)
        if username not in d._presence:  # a local presence is the truth here
            d._announce_here(username, presence)

    async def _on_notify(self, event: dict[str, Any]) -> None:
        self._directory._notify_here(str(event["u"]), str(event["e"]), dict(event["b"]))

    async def _on_contacts(self, event: dict[str, Any]) -> None:
        self._directory._contacts_changed_here(str(event["a"]), str(event["b"]),
                                               accepted=bool(event["acc"]))

    async def _on_key(self, event: dict[str, Any]) -> None:
        """An account moved to another key: its sessions on other keys end here too."""
        username, node_id, now = str(event["u"]), NodeId(bytes(event["n"])), int(event["now"])
        await self._directory._key_changed_here(username, node_id, now)

    async def _on_supernode(self, event: dict[str, Any]) -> None:
        node_id = NodeId(bytes(event["n"]))
        if event["a"] is None:
            self.supernodes.pop(node_id, None)
        else:
            self.supernodes[node_id] = (event["o"], parse_address(str(event["a"])))

    async def _on_registered(self, event: dict[str, Any]) -> None:
        self._directory._registrations.charge(str(event["h"]), bytes(event["k"]),
                                              float(event["now"]))

    async def _on_login_try(self, event: dict[str, Any]) -> None:
        self._directory._logins.charge(str(event["u"]), bytes(event["k"]), str(event["h"]),
                                       owner=bool(event["owner"]), now=float(event["now"]))

    async def _on_login_ok(self, event: dict[str, Any]) -> None:
        self._directory._logins.succeeded(str(event["u"]), bytes(event["k"]),
                                          str(event["h"]), owner=bool(event["owner"]))
