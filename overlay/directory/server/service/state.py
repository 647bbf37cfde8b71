"""What every directory operation shares: the in-memory state and the helpers over it.

:class:`DirectoryState` holds the presence, the sessions and their contact
sets, the issued certificates and the supernode list, and the helpers every
operation uses: the store and the password hashes off the event loop, the user
cache, and the notifications to contacts here and on the other processes.
The operations themselves (accounts, contacts, presence) are its subclasses,
composed into :class:`~overlay.directory.server.service.Directory`.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

import trio

from overlay.addresses import Address, format_address
from overlay.directory.certificates import Certificate, issue_certificate
from overlay.directory.protocol import (
    Rejected,
    Status,
)
from overlay.directory.server.limits import (
    LoginLimits,
    LoginThrottle,
    RegistrationLimiter,
    RegistrationLimits,
)
from overlay.directory.server.passwords import HashCost, hash_password
from overlay.directory.server.peers import Peers, Publisher
from overlay.directory.server.store import (
    SqlStore,
    StorageFull,
    UserRecord,
)
from overlay.ids import Identity, NodeId

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
Reply = tuple[Status, str, dict[str, Any]]
Dialer = Callable[[Address, NodeId], Awaitable[str | None]]
"""Opens a link to an address and checks that ``NodeId`` answers: None, or why it failed."""

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
MAX_CACHED_USERS = 100_000
MAX_OUTGOING_REQUESTS = 100
"""Unanswered contact requests one user may have at a time (to users and to names)."""
WRONG_LOGIN = "wrong username or password"
STORAGE_FULL = "server storage is full, try later"
HASH_SECONDS_GUESS = 0.05
"""One Argon2id hash at the default cost, until one has been measured."""
MIN_BUSY_RETRY = 0.5


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    """Lifetimes in seconds; limits per the issue's abuse section (docs/directory.md)."""

    certificate_lifetime: float = 24 * 3600.0
    session_lifetime: float = 7 * 24 * 3600.0
    hash_cost: HashCost = field(default_factory=HashCost.owasp)
    logins: LoginLimits = field(default_factory=LoginLimits)
    registrations: RegistrationLimits = field(default_factory=RegistrationLimits)
    hash_threads: int = max(1, os.cpu_count() or 1)
    max_queued_hashes: int = 64
    """Logins, registrations and key changes waiting for a hash thread at most (Argon2id
    costs tens of ms of a core each); one more is shed with 429 and a ``retry_after``
    of about how long the queue takes to drain, so a storm of re-logins waits its turn
    at the clients instead of piling up in the server."""
    inline_blocking: bool = False
    """Run SQLite and hashing on the event loop: only for the simulator's virtual time."""
    clients_per_supernode: int = 50
    """Above this many online edge clients per supernode, a reachable client is promoted."""
    promotion_min_uptime: float = 60.0
    """Only clients online for this long are asked to become supernodes."""
    promotion_retry: float = 30.0
    """How long to wait for an asked client before asking another."""


class Connection(Protocol):
    """What the service needs of one client connection (the server's glue implements it)."""

    node_id: NodeId
    public_key: bytes
    address: Address
    session_id: bytes | None
    session: Session | None
    verified_address: Address | None

    def notify(self, event: str, body: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class Presence:
    status: str
    home_node: NodeId | None
    home_address: Address | None
    direct_address: Address | None
    since: int
    connection: Connection
    supernode_ok: bool = False

    def to_wire(self, last_seen: int | None) -> dict[str, Any]:
        return {
            "status": self.status,
            "home_node": None if self.home_node is None else self.home_node.raw,
            "home_address": None if self.home_address is None
            else format_address(self.home_address),
            "direct_address": None if self.direct_address is None
            else format_address(self.direct_address),
            "since": self.since,
            "last_seen": last_seen,
        }


def offline_presence(last_seen: int | None) -> dict[str, Any]:
    return {"status": "offline", "home_node": None, "home_address": None,
            "direct_address": None, "since": None, "last_seen": last_seen}


@dataclass(slots=True)
class Session:
    """A logged-in connection: whose it is, and that user's accepted contacts."""

    user: UserRecord
    token_hash: bytes
    expires_at: int
    contacts: set[str]


@dataclass(frozen=True, slots=True)
class ListedSupernode:
    node_id: NodeId
    address: Address
    connection: Connection




class DirectoryState:
    """The state one directory keeps for every connection of a server, and its helpers."""

    def __init__(self, identity: Identity, store: SqlStore, dialer: Dialer,
                 config: DirectoryConfig | None = None, *,
                 cluster: Publisher | None = None) -> None:
        self.identity = identity
        self.config = config or DirectoryConfig()
        self._store = store
        self._dialer = dialer
        self._db_limiter = trio.CapacityLimiter(store.concurrency)
        self._hash_limiter = trio.CapacityLimiter(self.config.hash_threads)
        self.hashes_waiting = 0
        """Password hashes queued or running now (bounded by ``max_queued_hashes``)."""
        self.hashes_peak = 0
        self.hashes_shed = 0
        """Attempts refused with 429 because the hash queue was full."""
        self._hash_seconds = HASH_SECONDS_GUESS
        self._logins = LoginThrottle(self.config.logins)
        self._registrations = RegistrationLimiter(self.config.registrations)
        # Checked in place of a password hash for a username nobody has, so that an
        # unknown name costs the same time as a wrong password (no timing oracle).
        self._dummy_hash = hash_password(secrets.token_urlsafe(16), self.config.hash_cost)
        self._storage_full = False
        self._users: OrderedDict[str, UserRecord] = OrderedDict()
        self._certificates: dict[str, Certificate] = {}
        self._presence: dict[str, Presence] = {}
        self._last_seen: dict[str, int] = {}
        self._sessions: dict[str, set[Connection]] = {}
        self._watchers: dict[str, set[Connection]] = {}
        """username -> the sessions here that have that user as an accepted contact."""
        self._supernodes: dict[NodeId, ListedSupernode] = {}
        self._online_since: dict[str, float] = {}
        self._promotion_asked: dict[str, float] = {}
        self.peers = Peers(self, cluster)
        """The other server processes on the same database (none with SQLite)."""

    def load(self) -> dict[str, int]:
        """How busy this process is, for ``overlay status`` on a server."""
        return {"sessions": sum(len(c) for c in self._sessions.values()),
                "users_online": len(self._presence), "supernodes": len(self._supernodes),
                "login_queue": self.hashes_waiting, "login_queue_peak": self.hashes_peak,
                "logins_shed": self.hashes_shed}

    async def connection_closed(self, conn: Connection, now: int) -> None:
        """The client hung up (or its session ended): it is offline, and no supernode."""
        for node_id, supernode in list(self._supernodes.items()):
            if supernode.connection is conn:
                del self._supernodes[node_id]
                self.peers.publish_supernode(node_id, None)
                log.info("supernode %s at %s left", node_id.short,
                         format_address(supernode.address))
        session = conn.session
        if session is None:
            return
        conn.session = None
        for contact in session.contacts:
            self._unwatch(contact, conn)
        username = session.user.username
        connections = self._sessions.get(username)
        if connections is not None:
            connections.discard(conn)
            if not connections:
                del self._sessions[username]
        presence = self._presence.get(username)
        if presence is not None and presence.connection is conn:
            del self._presence[username]
            self._online_since.pop(username, None)
            self._last_seen[username] = now
            with suppress(Rejected):  # storage full: last_seen stays in memory only
                await self._db(self._store.set_last_seen, session.user.id, now)
            self._announce_presence(session.contacts, username, offline_presence(now))


    # --- helpers ----------------------------------------------------------------------------

    async def _db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` on the store; a write that finds the storage full is a 507."""
        try:
            result = await self._offload(self._db_limiter, fn, *args, **kwargs)
        except StorageFull as exc:
            self._storage_refused(str(exc))
            raise Rejected(Status.INSUFFICIENT_STORAGE, STORAGE_FULL) from None
        if self._storage_full and not self._store.storage_full:
            self._storage_full = False
            log.warning("database writes succeed again")
        return result

    def _storage_refused(self, detail: str) -> None:
        """One log line when the storage fills up (not one per refused request)."""
        if not self._storage_full:
            self._storage_full = True
            log.error("database storage is full (%s): refusing changes with 507 until "
                      "there is room again", detail)


    async def _offload(self, limiter: trio.CapacityLimiter, fn: Callable[P, T],
                       *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking work in a worker thread (inline under the simulator's virtual clock,
        where a thread's real time would let the clock jump past every timeout)."""
        def call() -> T:
            return fn(*args, **kwargs)
        if self.config.inline_blocking:
            return call()
        return await trio.to_thread.run_sync(call, limiter=limiter)

    async def _user(self, username: str) -> UserRecord | None:
        user = self._users.get(username)
        if user is not None:
            self._users.move_to_end(username)
            return user
        user = await self._db(self._store.user, username)
        if user is not None:
            self._users[username] = user
            if len(self._users) > MAX_CACHED_USERS:
                self._users.popitem(last=False)
        return user


    def _identity_body(self, user: UserRecord, now: float) -> dict[str, Any]:
        return {"username": user.username, "certificate": self._certificate(user, now).raw}

    def _certificate(self, user: UserRecord, now: float) -> Certificate:
        """The user's certificate, reissued once half of its lifetime is used up."""
        cached = self._certificates.get(user.username)
        lifetime = self.config.certificate_lifetime
        if cached is None or cached.public_key != user.public_key \
                or cached.expires_at - now < lifetime / 2:
            cached = issue_certificate(self.identity, user.username, user.public_key,
                                       now=now, lifetime=lifetime)
            self._certificates[user.username] = cached
        return cached

    def _presence_of(self, username: str) -> dict[str, Any]:
        last_seen = self._last_seen.get(username)
        if last_seen is None:
            cached = self._users.get(username)
            last_seen = cached.last_seen if cached is not None else None
        presence = self._presence.get(username)
        if presence is not None:
            return presence.to_wire(last_seen)
        elsewhere = self.peers.presence.get(username)
        return offline_presence(last_seen) if elsewhere is None else elsewhere[1]

    async def _key_changed_here(self, username: str, node_id: NodeId, now: int) -> None:
        """The account moved to ``node_id``: forget its old key, end its other sessions."""
        self._users.pop(username, None)
        self._certificates.pop(username, None)
        for other in list(self._sessions.get(username, ())):
            if other.node_id != node_id:
                await self.connection_closed(other, now)
                other.notify("session_ended", {"reason": "the account moved to another key"})

    def _contacts_changed(self, a: str, b: str, *, accepted: bool) -> None:
        self._contacts_changed_here(a, b, accepted=accepted)
        self.peers.publish({"t": "contacts", "a": a, "b": b, "acc": accepted})

    def _contacts_changed_here(self, a: str, b: str, *, accepted: bool) -> None:
        for user, other in ((a, b), (b, a)):
            for conn in self._sessions.get(user, ()):
                assert conn.session is not None
                if accepted:
                    conn.session.contacts.add(other)
                    self._watchers.setdefault(other, set()).add(conn)
                else:
                    conn.session.contacts.discard(other)
                    self._unwatch(other, conn)

    def _notify_user(self, username: str, event: str, body: dict[str, Any]) -> None:
        """Notify the user's sessions, on this process and the others."""
        self._notify_here(username, event, body)
        self.peers.publish({"t": "notify", "u": username, "e": event, "b": body})

    def _notify_here(self, username: str, event: str, body: dict[str, Any]) -> None:
        for conn in self._sessions.get(username, ()):
            conn.notify(event, body)

    def _announce_presence(self, contacts: set[str], username: str,
                           presence: dict[str, Any]) -> None:
        """Tell every logged-in contact of ``username`` (and only them), here and on the
        other processes (which tell their own sessions of contacts)."""
        body = {"username": username, "presence": presence}
        for contact in contacts:
            self._notify_here(contact, "presence", body)
        self.peers.publish_presence(username, presence)

    def _unwatch(self, username: str, conn: Connection) -> None:
        watchers = self._watchers.get(username)
        if watchers is not None:
            watchers.discard(conn)
            if not watchers:
                del self._watchers[username]

    def _announce_here(self, username: str, presence: dict[str, Any]) -> None:
        """Tell the sessions on this process that have ``username`` as a contact (as this
        process knows it: the news of a new contact may still be on its way to the one
        that sent this presence)."""
        body = {"username": username, "presence": presence}
        for conn in list(self._watchers.get(username, ())):
            conn.notify("presence", body)
