"""The chat engine: send, receive, acknowledge, queue for offline contacts, keep history.

Runs on an edge client (:class:`~overlay.roles.edge.EdgeClient`): a contact is
found by username (lookup: certificate and presence), a message is sealed
for the contact's certified key (:mod:`overlay.chat.envelope`) and sent on a
reliable channel to the contact's node, direct or relayed by supernodes,
which see only ciphertext.  The recipient verifies and opens it, stores it,
and answers with a sealed receipt: that receipt is what turns the sender's
message from *sent* to *delivered*.

Offline contacts: a message is always written to history first, as
*queued*.  It is sent when the contact is online (presence says so); until
then it waits, and the contact's coming online (a presence notice) flushes
the queue.  If a channel fails, what it had not delivered is queued again and
re-sent later; the recipient drops duplicates by message id, so a message is
shown once however often it travelled.

Only accepted contacts may write to us, as the directory's contact rules say
(presence, lookups): a verified message from anybody else (a stranger, a
contact who removed us or whom we removed) is refused, never stored and never
acknowledged.  The engine keeps the list of accepted contacts from the
directory and follows it by notices (presence comes only from accepted
contacts; ``contact_accepted``/``contact_removed``); a sender not on it makes
the engine ask the directory again, at most every :data:`CONTACTS_RETRY`
seconds, so a stranger's flood cannot make us flood the directory.  While the
directory is down the last list stands.

The history (SQLite) is used from a worker thread, one call at a time, so
no fsync stalls the node's links, relays and timers; UIs read it through
:meth:`Chat.conversation` and :meth:`Chat.pending` for the same reason.

Everything the UI needs to show arrives as :class:`ChatEvent` on
:meth:`Chat.events`.  Refusals are shown once per sending node and then at
most every :data:`REJECTION_QUIET` seconds, with a count of the ones not
shown: a hostile sender cannot fill the screen.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable

import trio

from overlay.blocking import WorkerThreads
from overlay.chat.envelope import (
    MESSAGE_ID_LEN,
    ChatMessage,
    Receipt,
    check_text_length,
    open_envelope,
    seal,
)
from overlay.chat.events import ChatEvent
from overlay.chat.history import Entry, History
from overlay.directory.client.connection import Notice, Presence
from overlay.errors import (
    ChatError,
    DirectoryError,
    OverlayError,
    RejectedMessage,
    TransportError,
)
from overlay.ids import NodeId
from overlay.net.channels import Channel
from overlay.roles.edge import EdgeClient, Peer

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
CERTIFICATE_MARGIN = 3600.0
"""Look a contact up again when its certificate has less than this left (seconds)."""
CONTACTS_FRESH = 300.0
"""Ask the directory for the contact list again when it is older than this (seconds),
in case a notice was missed while the directory connection was down."""
CONTACTS_RETRY = 10.0
"""A message from someone not on the list asks the directory at most this often."""
DIRECTORY_WAIT = 5.0
"""How long a contact check waits for the directory before using the last list."""
REJECTION_QUIET = 60.0
"""After a refusal from a node is shown, further ones from it are counted, not shown,
for this long (seconds)."""


class Chat:
    """``async with`` nothing: start :meth:`run` in a nursery, then :meth:`send`."""

    def __init__(self, edge: EdgeClient, history: History, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.edge = edge
        self.node = edge.node
        self.username = edge.username
        self.history = history
        self._history_thread = WorkerThreads(1)  # one connection: one call at a time
        self._clock = clock
        self._events_send, self._events = trio.open_memory_channel[ChatEvent](MAX_EVENTS)
        self._outgoing: dict[NodeId, Channel] = {}
        self._flushing: set[str] = set()
        self._again: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._contacts: set[str] = set()
        self._statuses: dict[str, str] = {}
        """The presence status last reported per contact (events only on a change)."""
        """Accepted contacts, as the directory last said and notices since have told."""
        self._contacts_at: float | None = None
        self._contacts_asked = -math.inf
        self._rejections: dict[tuple[NodeId, str | None], tuple[float, int]] = {}
        """Per sending node (and user, when known): when a refusal was last shown, and
        how many since were not."""
        edge.on_presence = self._presence_changed
        edge.on_notice = self._notice

    @property
    def events(self) -> trio.MemoryReceiveChannel[ChatEvent]:
        return self._events

    async def conversation(self, peer: str, limit: int = 50) -> list[Entry]:
        """The last ``limit`` messages with ``peer``, oldest first (from the history)."""
        return await self._history_thread.run(self.history.conversation, peer, limit)

    async def pending(self) -> list[ChatMessage]:
        """Outgoing messages not delivered yet, to anyone, oldest first."""
        return await self._history_thread.run(self.history.pending)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._refresh_contacts()  # before any message can arrive
            nursery.start_soon(self._accept_channels)
            # What an earlier run could not deliver: messages it had handed to a channel
            # died with that channel, so they are queued again (the recipient drops a
            # copy that did arrive).
            for peer in {message.recipient
                         for message in await self._history_thread.run(self.history.requeue)}:
                self._want_flush(peer)
            task_status.started()

    # --- sending ----------------------------------------------------------------------

    async def send(self, to: str, text: str) -> bytes:
        """Queue ``text`` for contact ``to`` (on disk first); returns the message id."""
        if to == self.username:
            raise ChatError("that is you")
        check_text_length(text)
        try:
            await self._contact(to)  # a certificate to seal for, and where to send
        except DirectoryError as exc:
            if exc.status in (403, 404):
                raise ChatError(f"cannot send to {to}: {exc}") from None
            # The directory is down: queue; the flush finds the contact when it is back.
        message = ChatMessage(secrets.token_bytes(MESSAGE_ID_LEN), self.username, to,
                              self._clock(), text)
        await self._history_thread.run(self.history.add_outgoing, message)
        self._emit(ChatEvent("queued", to, message.id, text, message.sent_at))
        self._want_flush(to)
        return message.id

    def _want_flush(self, peer: str) -> None:
        if peer in self._flushing:
            self._again.add(peer)  # the running flush will look once more
        elif self._nursery is not None:
            self._flushing.add(peer)
            self._nursery.start_soon(self._flush, peer)

    async def _flush(self, peer: str) -> None:
        try:
            while True:
                self._again.discard(peer)
                await self._send_pending(peer)
                if peer not in self._again:
                    return
        finally:
            self._flushing.discard(peer)

    async def _send_pending(self, peer: str) -> None:
        """Send what is queued for ``peer``: one read of the queue (a message queued
        meanwhile makes the flush look again), two if a lookup, a round trip in which
        a receipt may come, came between."""
        queued = await self._history_thread.run(self.history.pending, peer, only_queued=True)
        if not queued:
            return
        try:
            contact = self._known_contact(peer)
            if contact is None:
                contact = await self._contact(peer)
                queued = await self._history_thread.run(self.history.pending, peer,
                                                        only_queued=True)
        except OverlayError as exc:
            self._emit(ChatEvent("error", peer, detail=f"cannot find {peer}: {exc}"))
            return
        node_id = contact.node_id
        reachable = node_id in self.node.neighbours or contact.presence.home_node is not None
        if contact.presence.status == "offline" or not reachable:
            return  # queued: the contact's next presence change flushes
        certificate = self.edge.certificate
        if certificate is None:
            return
        channel = self._channel_to(node_id, peer)
        path = self._path(node_id)
        try:
            for message in queued:
                envelope = seal(self.node.identity, certificate.raw,
                                contact.certificate.public_key, message)
                await channel.send(envelope)
                await self._history_thread.run(self.history.mark_sent, message.id)
                self._emit(ChatEvent("sent", peer, message.id, message.text, self._clock(),
                                     path=path))
        except TransportError as exc:
            await self._channel_failed(node_id, peer, exc)

    async def _contact(self, username: str) -> Peer:
        """The contact as last looked up; looked up again when unknown or its certificate
        is near expiry.  Presence notices keep a known contact's location current, so a
        conversation costs the directory one lookup, not one per message."""
        peer = self._known_contact(username)
        if peer is None:
            await self.edge.locate(username)
            peer = self.edge.peers[username]
        return peer

    def _known_contact(self, username: str) -> Peer | None:
        """The contact as last looked up, unless its certificate is near expiry."""
        peer = self.edge.peers.get(username)
        if peer is None or peer.certificate.expires_at - self._clock() < CERTIFICATE_MARGIN:
            return None
        return peer

    def _channel_to(self, node_id: NodeId, peer: str | None) -> Channel:
        channel = self._outgoing.get(node_id)
        if channel is None or channel.done.is_set():
            channel = self.node.open_channel(node_id)
            self._outgoing[node_id] = channel
            if peer is not None and self._nursery is not None:
                self._nursery.start_soon(self._watch, channel, peer)
        return channel

    async def _watch(self, channel: Channel, peer: str) -> None:
        """A channel that ends with messages unacknowledged gives them back to the queue."""
        await channel.done.wait()
        if self._outgoing.get(channel.peer) is channel:
            await self._channel_failed(channel.peer, peer, channel.core.error or "closed")

    async def _channel_failed(self, node_id: NodeId, peer: str, reason: object) -> None:
        """Undelivered messages go back to the queue; they are re-sent when possible
        (after a fresh lookup: the contact may have moved or changed its key)."""
        self.edge.peers.pop(peer, None)
        if self._outgoing.get(node_id) is not None and not self._outgoing[node_id].done.is_set():
            self._outgoing[node_id].abort("failed")
        self._outgoing.pop(node_id, None)
        requeued = len(await self._history_thread.run(self.history.requeue, peer))
        if requeued:
            self._emit(ChatEvent("error", peer, detail=f"{peer} unreachable ({reason}); "
                                                       f"{requeued} message(s) queued again"))
            self._want_flush(peer)

    def _path(self, node_id: NodeId) -> str:
        return self.edge.route_to(node_id).describe()

    # --- receiving --------------------------------------------------------------------

    async def _accept_channels(self) -> None:
        assert self._nursery is not None
        while True:
            channel = await self.node.accept_channel()
            self._nursery.start_soon(self._read, channel)

    async def _read(self, channel: Channel) -> None:
        async with channel:
            while True:
                try:
                    data = await channel.receive()
                except TransportError:
                    return
                await self._handle(channel.peer, data)

    async def _handle(self, sender: NodeId, data: bytes) -> None:
        certificate = self.edge.certificate
        server_key = self.edge.directory.server_key
        if certificate is None or server_key is None:
            return
        try:
            opened = open_envelope(data, self.node.identity, username=self.username,
                                   server_key=server_key, sender_node=sender,
                                   now=self._clock())
        except RejectedMessage as exc:
            self._reject(sender, None, f"a message from node {sender.short}: {exc}")
            return
        content = opened.content
        who = opened.sender.username
        if isinstance(content, Receipt):
            # None: not a message of ours to this sender, nothing to mark.
            entry = await self._history_thread.run(self.history.mark_delivered, content.id,
                                                   self._clock(), peer=who)
            if entry is not None:
                self._emit(ChatEvent("delivered", entry.peer, entry.id, entry.text,
                                     entry.delivered_at,
                                     latency=(entry.delivered_at or 0) - entry.sent_at))
            return
        if not await self._is_contact(who):
            self._reject(sender, who, f"a message from {who}, who is not your contact "
                                      "(not stored, not acknowledged)")
            return
        if await self._history_thread.run(self.history.add_incoming, content):
            self._emit(ChatEvent("message", content.sender, content.id, content.text,
                                 content.sent_at, path=self._path(sender)))
        # Acknowledge every copy: the first receipt may be what got lost.
        receipt = Receipt(content.id, self._clock())
        envelope = seal(self.node.identity, certificate.raw, opened.sender.public_key, receipt)
        channel = self._channel_to(sender, None)
        assert self._nursery is not None
        self._nursery.start_soon(self._send_receipt, channel, envelope)

    def _reject(self, sender: NodeId, username: str | None, reason: str) -> None:
        """Log and report a refusal, quietly when this node keeps sending them."""
        now = self._clock()
        key = (sender, username)
        shown_at, unshown = self._rejections.get(key, (-math.inf, 0))
        if now - shown_at < REJECTION_QUIET:
            self._rejections[key] = (shown_at, unshown + 1)
            log.debug("rejected %s", reason)
            return
        if unshown:
            reason += f" ({unshown} more like it not shown)"
        if len(self._rejections) >= MAX_EVENTS:  # bounded, however many nodes try
            self._rejections.clear()
        self._rejections[key] = (now, 0)
        log.warning("rejected %s", reason)
        self._emit(ChatEvent("rejected", username, detail=reason, at=now))

    # --- who may write to us ----------------------------------------------------------

    async def _is_contact(self, username: str) -> bool:
        now = self._clock()
        stale = self._contacts_at is None or now - self._contacts_at > CONTACTS_FRESH
        if ((username not in self._contacts or stale)
                and now - self._contacts_asked >= CONTACTS_RETRY):
            await self._refresh_contacts()
        return username in self._contacts

    async def _refresh_contacts(self) -> None:
        """The accepted contacts, from the directory; the last list if it cannot say."""
        self._contacts_asked = self._clock()
        client = self.edge.directory.client
        if client is None:
            return
        with trio.move_on_after(DIRECTORY_WAIT):
            try:
                contacts = await client.contacts()
            except OverlayError as exc:
                log.info("contact list not refreshed: %s", exc)
                return
            self._contacts = {c.username for c in contacts if c.state == "accepted"}
            self._contacts_at = self._clock()

    async def _send_receipt(self, channel: Channel, envelope: bytes) -> None:
        try:
            await channel.send(envelope)
        except TransportError as exc:
            log.info("receipt to %s not sent: %s", channel.peer.short, exc)

    # --- directory notices -------------------------------------------------------------

    def _presence_changed(self, username: str, presence: Presence) -> None:
        self._contacts.add(username)  # the directory shows presence to accepted contacts only
        # A notice also comes when only the contact's home supernode changed: the status
        # is the same, and the user hears of it once.
        if self._statuses.get(username) != presence.status:
            self._statuses[username] = presence.status
            self._emit(ChatEvent("presence", username, detail=presence.status,
                                 at=self._clock()))
        if presence.status != "offline":
            self._want_flush(username)

    def _notice(self, notice: Notice) -> None:
        if notice.event in ("contact_request", "contact_accepted", "contact_removed"):
            who = notice.body.get("username")
            if isinstance(who, str) and notice.event == "contact_accepted":
                self._contacts.add(who)
            elif isinstance(who, str) and notice.event == "contact_removed":
                self._contacts.discard(who)
            self._emit(ChatEvent(notice.event, who if isinstance(who, str) else None,
                                 at=self._clock()))

    def _emit(self, event: ChatEvent) -> None:
        try:
            self._events_send.send_nowait(event)
        except trio.WouldBlock:
            log.warning("chat event dropped: nobody is reading events (%s)", event.kind)
