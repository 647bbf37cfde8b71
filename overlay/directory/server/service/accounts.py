"""Accounts: register, log in, resume, log out, change key; the password hashes' admission.

Every path that checks a password goes through one bounded hash queue
(:meth:`AccountOperations._admit_hash`), and an unknown name costs the same
work and gets the same answer as a wrong password.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable

from overlay.addresses import format_address
from overlay.directory.protocol import (
    Rejected,
    Status,
    password_weakness,
    unseal_password,
)
from overlay.directory.server.passwords import hash_password, password_matches
from overlay.directory.server.service.state import (
    MIN_BUSY_RETRY,
    WRONG_LOGIN,
    Connection,
    DirectoryState,
    P,
    Reply,
    Session,
    T,
)
from overlay.directory.server.store import (
    UsernameTaken,
    UserRecord,
)

log = logging.getLogger(__name__)


class AccountOperations(DirectoryState):
    """The account requests (``register``, ``login``, ``resume``, ``logout``, ``change_key``)."""

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
            "observed": format_address(conn.address),
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
            "observed": format_address(conn.address),
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

