"""The directory's operations: what each request does to the store and to presence.

Glue between the pure parts (:mod:`~overlay.directory.protocol` checks requests,
:mod:`~overlay.directory.limits` counts abuse, :mod:`~overlay.directory.certificates`
signs) and the slow parts, which run in worker threads so that the event loop
never waits: the store (SQLite one thread at a time, PostgreSQL one per pooled
connection) and password hashing (one thread per core).  What changes often and
matters only while a client is connected lives in memory: presence, the
accepted-contact sets of logged-in users, issued certificates, the supernode
list.  So lookups and presence updates never touch the disk, and every
acknowledged account or contact change does, durably.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

import trio

from overlay.addresses import Address, format_address
from overlay.directory.certificates import Certificate, issue_certificate
from overlay.directory.limits import (
    LoginLimits,
    LoginThrottle,
    RegistrationLimiter,
    RegistrationLimits,
)
from overlay.directory.passwords import HashCost, hash_password, password_matches
from overlay.directory.peers import Peers, Publisher
from overlay.directory.protocol import (
    Rejected,
    Status,
    parse_request,
    password_weakness,
    unseal_password,
)
from overlay.directory.store import (
    SqlStore,
    StorageFull,
    UsernameTaken,
    UserRecord,
    is_storage_full,
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


class Directory:
    """Answers requests; one instance serves every connection of a server."""

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

    # --- the entry point ------------------------------------------------------------------

    async def handle(self, conn: Connection, operation: str, arguments: dict[str, Any],
                     now: float) -> Reply:
        """Run one request; never raises for anything a client can send."""
        try:
            op, args = parse_request(operation, arguments)
            if op.needs_session and conn.session is None:
                raise Rejected(Status.UNAUTHORIZED, "log in first")
            if conn.session is not None and conn.session.expires_at <= now:
                await self.connection_closed(conn, int(now))
                raise Rejected(Status.UNAUTHORIZED, "session expired: log in again")
            handler = getattr(self, f"_op_{op.name}")
            reply: Reply = await handler(conn, now=now, **args)
            return reply
        except Rejected as rejected:
            return Status(rejected.status), rejected.reason, rejected.body
        except Exception as exc:
            if is_storage_full(exc):  # e.g. ENOSPC from a file outside the store
                self._storage_refused(str(exc))
                return Status.INSUFFICIENT_STORAGE, STORAGE_FULL, {}
            log.exception("internal error in %r from %s", operation[:32],
                          format_address(conn.address))
            return Status.INTERNAL_ERROR, "internal server error", {}

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

    # --- accounts --------------------------------------------------------------------------

    async def _op_register(self, conn: Connection, *, now: float, username: str,
                           sealed_password: bytes) -> Reply:
        password = unseal_password(self.identity, conn.session_id, sealed_password)
        weakness = password_weakness(username, password)
        if weakness is not None:
            raise Rejected(Status.BAD_REQUEST, weakness)
        # Charged before the name is looked at: "taken" is the one answer that must say
        # whether a name exists, and the limit makes asking it slow.
        self._admit_hash()
        throttled = self._registrations.admit(conn.address[0], conn.public_key, now)
        if throttled is not None:
            raise Rejected(Status.TOO_MANY_REQUESTS, throttled.reason,
                           retry_after=round(throttled.retry_after, 3))
        self.peers.publish({"t": "registered", "h": conn.address[0], "k": conn.public_key,
                            "now": now})
        if await self._user(username) is not None:
            raise Rejected(Status.CONFLICT, f"username {username!r} is taken")
        encoded = await self._hash(hash_password, password, self.config.hash_cost)
        try:
            user = await self._db(self._store.create_user, username, encoded,
                                  conn.public_key, int(now))
        except UsernameTaken:
            raise Rejected(Status.CONFLICT, f"username {username!r} is taken") from None
        log.info("registered %s (node %s)", username, user.node_id.short)
        return Status.CREATED, "registered", {"username": username,
                                              "node_id": user.node_id.raw}

    async def _check_password(self, conn: Connection, username: str, password: str,
                              now: float) -> UserRecord:
        """The account, if ``password`` is right; 429 when a throttle says wait.

        An unknown username and a wrong password get the same answer after the same
        work (a hash is checked either way), and the same throttles: nothing tells
        which names exist.  The account's own key has a budget nobody else can spend.
        """
        user = await self._user(username)
        owner = user is not None and user.public_key == conn.public_key
        host = conn.address[0]
        self._admit_hash()  # a shed attempt costs no throttle budget: it was never tried
        throttled = self._logins.admit(username, conn.public_key, host, owner=owner, now=now)
        if throttled is not None:
            raise Rejected(Status.TOO_MANY_REQUESTS, throttled.reason,
                           retry_after=round(throttled.retry_after, 3))
        attempt = {"u": username, "k": conn.public_key, "h": host, "owner": owner}
        self.peers.publish({"t": "login_try", "now": now, **attempt})
        encoded = self._dummy_hash if user is None else user.password_hash
        matches = await self._hash(password_matches, encoded, password)
        if user is None or not matches:
            log.info("failed login for %s from %s%s", username, host,
                     "" if user is not None else " (no such account)")
            raise Rejected(Status.UNAUTHORIZED, WRONG_LOGIN)
        self._logins.succeeded(username, conn.public_key, host, owner=owner)
        self.peers.publish({"t": "login_ok", **attempt})
        return user

    async def _op_login(self, conn: Connection, *, now: float, username: str,
                        sealed_password: bytes) -> Reply:
        password = unseal_password(self.identity, conn.session_id, sealed_password)
        user = await self._check_password(conn, username, password, now)
        if user.public_key != conn.public_key:
            raise Rejected(
                Status.FORBIDDEN,
                f"account {username!r} belongs to another node key; to move it to this "
                "node, change its key (overlay account change-key)",
            )
        token = secrets.token_bytes(32)
        expires_at = int(now + self.config.session_lifetime)
        token_hash = hashlib.sha256(token).digest()
        await self._db(self._store.create_session, token_hash, user.id, conn.node_id,
                       expires_at, int(now))
        await self._start_session(conn, user, token_hash, expires_at, now)
        return Status.OK, "logged in", {
            "token": token, "expires_at": expires_at, **self._identity_body(user, now),
        }

    async def _op_resume(self, conn: Connection, *, now: float, token: bytes) -> Reply:
        token_hash = hashlib.sha256(token).digest()
        record = await self._db(self._store.session, token_hash)
        if record is None:
            raise Rejected(Status.UNAUTHORIZED, "unknown or ended session: log in again")
        if record.node_id != conn.node_id:
            raise Rejected(Status.UNAUTHORIZED, "this session belongs to another node key")
        if record.expires_at <= now:
            raise Rejected(Status.UNAUTHORIZED, "session expired: log in again")
        await self._start_session(conn, record.user, token_hash, record.expires_at, now)
        return Status.OK, "session resumed", {
            "expires_at": record.expires_at, **self._identity_body(record.user, now),
        }

    async def _op_logout(self, conn: Connection, *, now: float) -> Reply:
        assert conn.session is not None
        await self._db(self._store.delete_session, conn.session.token_hash)
        await self.connection_closed(conn, int(now))
        return Status.OK, "logged out", {}

    async def _op_change_key(self, conn: Connection, *, now: float, username: str,
                             sealed_password: bytes) -> Reply:
        password = unseal_password(self.identity, conn.session_id, sealed_password)
        user = await self._check_password(conn, username, password, now)
        if user.public_key == conn.public_key:
            return Status.OK, "the account already uses this node's key", {}
        await self._db(self._store.set_public_key, user.id, conn.public_key)
        await self._key_changed_here(username, conn.node_id, int(now))
        self.peers.publish({"t": "key", "u": username, "n": conn.node_id.raw, "now": int(now)})
        log.info("%s moved to node %s", username, conn.node_id.short)
        return Status.OK, "key changed: log in from this node", {"node_id": conn.node_id.raw}

    # --- contacts ---------------------------------------------------------------------------

    async def _other_user(self, conn: Connection,
                          username: str) -> tuple[Session, UserRecord | None]:
        """The session and the named user, None if nobody has that name: callers answer
        an unknown name exactly as they answer a user who has nothing to do with us."""
        session = conn.session
        assert session is not None
        if username == session.user.username:
            raise Rejected(Status.BAD_REQUEST, "that is you")
        return session, await self._user(username)

    async def _op_contact_request(self, conn: Connection, *, now: float,
                                  username: str) -> Reply:
        session, other = await self._other_user(conn, username)
        me = session.user
        if other is None:
            asked = await self._db(self._store.name_requested, me.id, username)
            mine = "requested" if asked else None
        else:
            mine = await self._db(self._store.contact_state, me.id, other.id)
        if mine == "accepted":
            raise Rejected(Status.CONFLICT, f"{username} is already a contact")
        if mine == "requested":
            raise Rejected(Status.CONFLICT, f"you already asked {username}")
        if other is not None and \
                await self._db(self._store.contact_state, other.id, me.id) == "requested":
            return await self._accept(me, other, now)  # they asked first: that is a yes
        if await self._db(self._store.outgoing_requests, me.id) >= MAX_OUTGOING_REQUESTS:
            raise Rejected(Status.FORBIDDEN,
                           f"{MAX_OUTGOING_REQUESTS} contact requests are unanswered: "
                           "withdraw some first (contacts remove)")
        if other is None:
            # Kept as if the user existed (it reaches whoever registers the name).
            await self._db(self._store.add_name_request, me.id, username, int(now))
        else:
            await self._db(self._store.add_request, me.id, other.id, int(now))
            self._notify_user(username, "contact_request", {"username": me.username})
        return Status.CREATED, f"asked {username}", {"state": "outgoing"}

    async def _op_contact_accept(self, conn: Connection, *, now: float,
                                 username: str) -> Reply:
        session, other = await self._other_user(conn, username)
        state = None if other is None else \
            await self._db(self._store.contact_state, other.id, session.user.id)
        if state == "accepted":
            raise Rejected(Status.CONFLICT, f"{username} is already a contact")
        if other is None or state != "requested":
            raise Rejected(Status.NOT_FOUND, f"no contact request from {username}")
        return await self._accept(session.user, other, now)

    async def _accept(self, me: UserRecord, requester: UserRecord, now: float) -> Reply:
        await self._db(self._store.accept, requester.id, me.id, int(now))
        self._contacts_changed(me.username, requester.username, accepted=True)
        self._notify_user(requester.username, "contact_accepted", {"username": me.username})
        for a, b in ((me.username, requester.username), (requester.username, me.username)):
            self._notify_user(a, "presence", {"username": b, "presence": self._presence_of(b)})
        return Status.OK, f"{requester.username} is now a contact", {"state": "accepted"}

    async def _op_contact_decline(self, conn: Connection, *, now: float,
                                  username: str) -> Reply:
        session, other = await self._other_user(conn, username)
        if other is None or await self._db(self._store.contact_state, other.id,
                                           session.user.id) != "requested":
            raise Rejected(Status.NOT_FOUND, f"no contact request from {username}")
        await self._db(self._store.remove_pair, session.user.id, other.id)
        return Status.OK, f"declined {username}", {}

    async def _op_contact_remove(self, conn: Connection, *, now: float,
                                 username: str) -> Reply:
        session, other = await self._other_user(conn, username)
        if other is None:
            removed = await self._db(self._store.remove_name_request, session.user.id,
                                     username)
        else:
            removed = await self._db(self._store.remove_pair, session.user.id, other.id)
        if removed == 0:
            raise Rejected(Status.NOT_FOUND, f"{username} is not a contact")
        if other is not None:
            self._contacts_changed(session.user.username, username, accepted=False)
            self._notify_user(username, "contact_removed",
                              {"username": session.user.username})
            # The remover's other sessions (a running chat) learn it too: they must stop
            # accepting messages from the removed contact now, not at their next refresh.
            self._notify_user(session.user.username, "contact_removed",
                              {"username": username})
        return Status.OK, f"removed {username}", {}

    async def _op_contacts(self, conn: Connection, *, now: float) -> Reply:
        assert conn.session is not None
        records = await self._db(self._store.contacts, conn.session.user.id)
        listed = [{
            "username": record.username,
            "state": record.state,
            "presence": self._presence_of(record.username)
            if record.state == "accepted" else None,
        } for record in records]
        return Status.OK, f"{len(listed)} contact(s)", {"contacts": listed}

    # --- presence and lookup -------------------------------------------------------------

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

    def _admit_hash(self) -> None:
        """429 if the hash queue is full (admission control; nothing awaited between this
        and :meth:`_hash` counting the attempt, so the bound holds)."""
        waiting = self.hashes_waiting
        if waiting >= self.config.max_queued_hashes:
            self.hashes_shed += 1
            drain = waiting * self._hash_seconds / self.config.hash_threads
            raise Rejected(Status.TOO_MANY_REQUESTS,
                           "the server is busy with other logins; retry in a moment",
                           retry_after=round(max(MIN_BUSY_RETRY, drain), 3))

    async def _hash(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A password hash in a hash thread, counted in the queue while it waits or runs;
        its duration (measured in the thread) keeps the drain estimate current."""
        def timed() -> tuple[T, float]:
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            return result, time.perf_counter() - start

        self.hashes_waiting += 1
        self.hashes_peak = max(self.hashes_peak, self.hashes_waiting)
        try:
            result, seconds = await self._offload(self._hash_limiter, timed)
        finally:
            self.hashes_waiting -= 1
        self._hash_seconds += 0.2 * (seconds - self._hash_seconds)
        return result

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

    async def _start_session(self, conn: Connection, user: UserRecord, token_hash: bytes,
                             expires_at: int, now: float) -> None:
        if conn.session is not None:
            await self.connection_closed(conn, int(now))
        records = await self._db(self._store.contacts, user.id)
        accepted = {record.username for record in records if record.state == "accepted"}
        conn.session = Session(user, token_hash, expires_at, accepted)
        for contact in accepted:
            self._watchers.setdefault(contact, set()).add(conn)
        self._sessions.setdefault(user.username, set()).add(conn)

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
