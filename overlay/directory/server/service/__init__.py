"""The directory's operations: what each request does to the store and to presence.

Glue between the pure parts (:mod:`~overlay.directory.protocol` checks requests,
:mod:`~overlay.directory.server.limits` counts abuse, :mod:`~overlay.directory.certificates`
signs) and the slow parts, which run in worker threads so that the event loop
never waits: the store (SQLite one thread at a time, PostgreSQL one per pooled
connection) and password hashing (one thread per core).  What changes often and
matters only while a client is connected lives in memory: presence, the
accepted-contact sets of logged-in users, issued certificates, the supernode
list.  So lookups and presence updates never touch the disk, and every
acknowledged account or contact change does, durably.

The operations are split by job, one module each, all subclasses of
:class:`~overlay.directory.server.service.state.DirectoryState` (the shared state and
helpers): :mod:`~overlay.directory.server.service.accounts`,
:mod:`~overlay.directory.server.service.contacts` and
:mod:`~overlay.directory.server.service.presence`.  :class:`Directory` composes them
and is the one entry point (:meth:`Directory.handle`).
"""

from __future__ import annotations

import logging
from typing import Any

from overlay.addresses import format_address
from overlay.directory.protocol import Rejected, Status, parse_request
from overlay.directory.server.service.accounts import AccountOperations
from overlay.directory.server.service.contacts import ContactOperations
from overlay.directory.server.service.presence import PresenceOperations
from overlay.directory.server.service.state import (
    MAX_OUTGOING_REQUESTS,
    STORAGE_FULL,
    WRONG_LOGIN,
    Connection,
    Dialer,
    DirectoryConfig,
    Presence,
    Reply,
    Session,
    offline_presence,
)
from overlay.directory.server.store import is_storage_full

log = logging.getLogger(__name__)

__all__ = [
    "MAX_OUTGOING_REQUESTS", "STORAGE_FULL", "WRONG_LOGIN", "Connection", "Dialer",
    "Directory", "DirectoryConfig", "Presence", "Reply", "Session", "offline_presence",
]


class Directory(AccountOperations, ContactOperations, PresenceOperations):
    """Answers requests; one instance serves every connection of a server."""

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

