"""Contacts: requests, acceptance, decline, removal and the contact list.

A request to a name nobody has is kept as if the user existed, and every
answer about another user is worded so that it does not tell whether the name
exists.
"""

from __future__ import annotations

import logging

from overlay.directory.protocol import (
    Rejected,
    Status,
)
from overlay.directory.server.service.state import (
    MAX_OUTGOING_REQUESTS,
    Connection,
    DirectoryState,
    Reply,
    Session,
)
from overlay.directory.server.store import (
    UserRecord,
)

log = logging.getLogger(__name__)


class ContactOperations(DirectoryState):
    """The contact requests (``contact_*`` and ``contacts``)."""

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
            if not await self._db(self._store.add_name_request, me.id, username, int(now)):
                # Registered since we looked: ask the user (at most once more: a name,
                # once registered, stays so while the account exists).
                return await self._op_contact_request(conn, now=now, username=username)
        elif await self._db(self._store.add_request, me.id, other.id, int(now)):
            # They asked us meanwhile (the store looked again, under its lock): a yes.
            return self._accepted(me, other)
        else:
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
        return self._accepted(me, requester)

    def _accepted(self, me: UserRecord, requester: UserRecord) -> Reply:
        """Tell both (and their other connections) that they are contacts now."""
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

