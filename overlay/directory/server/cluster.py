"""Several directory server processes on one PostgreSQL database: what they tell each other.

Accounts, sessions and contacts are in the database, so every process sees the
same ones.  What lives in one process's memory is what belongs to its own
connections: presence, the contact sets of its logged-in users, the supernodes
connected to it, and its abuse counters.  For a user on one process to see a
contact on another, the processes tell each other about changes, over
PostgreSQL's LISTEN/NOTIFY (so an operator runs nothing beyond the database
the servers already need):

- every process LISTENs on its directory's channel and publishes small events there
  (msgpack, base64, well under NOTIFY's 8,000-byte payload limit): presence
  changes, notices for a user, contact-set changes, key changes, supernodes
  joining and leaving, login attempts and registrations charged to a throttle;
- a process that starts (or reconnects its listener) says ``hello``, and every
  other one answers by republishing its users' presence and its supernodes;
- each process says ``alive`` every :data:`HEARTBEAT` seconds; one not heard
  from for :data:`SILENCE` seconds (killed, or cut off) is ``gone``, and the
  others forget its users' presence (they show offline) and its supernodes.

NOTIFY is not durable, and it need not be: nothing here is an acknowledged
write (those are in the tables, committed before the answer leaves), only the
news of one, and a process that missed some (its listener reconnected)
catches up with ``hello``.  Events of one process arrive in the order it sent
them; each process drops its own.

The listening connection blocks in a worker thread (psycopg has no trio
driver); it hands events to a trio task through a bounded channel, blocking
when that is full, so a burst slows the listener rather than dropping news.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import psycopg
import trio
from psycopg import sql

from overlay.directory.server.store_pg import redact

log = logging.getLogger(__name__)

CHANNEL = "overlay_directory"
"""The prefix of every directory's channel; :func:`channel_for` adds the schema's mark."""
HEARTBEAT = 5.0
SILENCE = 20.0
QUEUE = 1024
POLL = 0.5
"""How often the listening thread looks up from the socket to see whether to stop."""
RETRY = 1.0

Event = dict[str, Any]
Deliver = Callable[[Event], Awaitable[None]]


def channel_for(schema: str) -> str:
    """The NOTIFY channel of the directory whose tables are in ``schema``.

    Channels belong to the database, not to a schema: two directories in two schemas
    of one database (a bench beside a real one, or two tenants) would otherwise
    hear each other's presence.  The schema goes in as a short hash, since a channel
    is an identifier of at most 63 bytes and a schema name may use all of them.
    """
    mark = hashlib.blake2b(schema.encode(), digest_size=8).hexdigest()
    return f"{CHANNEL}_{mark}"


def _channel_of(conn: psycopg.Connection[Any]) -> str:
    """The channel for the schema this connection's tables resolve to (its search_path)."""
    row = conn.execute("SELECT current_schema()").fetchone()
    return channel_for(row[0] if row and row[0] else "public")


def encode_event(event: Event) -> str:
    return base64.b64encode(msgpack.packb(event, use_bin_type=True)).decode("ascii")


def decode_event(payload: str) -> Event | None:
    """The event, or None for a payload no overlay server sent (logged, ignored)."""
    try:
        event = msgpack.unpackb(base64.b64decode(payload, validate=True), raw=False,
                                strict_map_key=True)
    except Exception:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("o"), str) \
            or not isinstance(event.get("t"), str):
        return None
    return event


class PostgresCluster:
    """This process's seat on the channel: ``publish`` events, ``run`` to hear the others'."""

    def __init__(self, url: str, *, heartbeat: float = HEARTBEAT,
                 silence: float = SILENCE) -> None:
        self.url = url
        self.heartbeat = heartbeat
        self.silence = silence
        self.origin = secrets.token_hex(8)
        """This process, in every event it sends."""
        self._outbox_send, self._outbox = trio.open_memory_channel[str](QUEUE)
        self._heard: dict[str, float] = {}
        self.dropped = 0

    def publish(self, event: Event) -> None:
        """Queue an event for the others; never blocks (a full queue drops and logs)."""
        event = {**event, "o": self.origin}
        try:
            self._outbox_send.send_nowait(encode_event(event))
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("cluster: %d event(s) dropped, the database is not keeping up",
                            self.dropped)

    async def run(self, deliver: Deliver, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, publish and keep time until cancelled; started once LISTEN is in place."""
        inbox_send, inbox = trio.open_memory_channel[Event](QUEUE)
        listening = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._listen, inbox_send, listening)
            await listening.wait()
            nursery.start_soon(self._send_outbox)
            nursery.start_soon(self._heartbeat, inbox_send)
            task_status.started()
            async for event in inbox:
                if event["t"] != "gone":
                    self._heard[event["o"]] = trio.current_time()
                await deliver(event)

    async def _listen(self, inbox: trio.MemorySendChannel[Event], listening: trio.Event) -> None:
        token = trio.lowlevel.current_trio_token()
        stop = threading.Event()

        def connected() -> None:
            if not listening.is_set():
                listening.set()
            self.publish({"t": "hello"})  # the others republish what we may have missed

        def hear(payload: str) -> None:
            event = decode_event(payload)
            if event is None:
                log.warning("cluster: ignored a malformed event on its channel")
                return
            if event["o"] == self.origin:
                return
            trio.from_thread.run(inbox.send, event, trio_token=token)

        def loop() -> None:
            while not stop.is_set():
                try:
                    with psycopg.connect(self.url, autocommit=True) as conn:
                        conn.execute(sql.SQL("LISTEN {}").format(
                            sql.Identifier(_channel_of(conn))))
                        trio.from_thread.run_sync(connected, trio_token=token)
                        while not stop.is_set():
                            for notify in conn.notifies(timeout=POLL):
                                hear(notify.payload)
                except psycopg.Error as exc:
                    log.warning("cluster: listening on %s failed (%s); again in %g s",
                                redact(self.url), str(exc).strip() or type(exc).__name__,
                                RETRY)
                    stop.wait(RETRY)
                except (trio.RunFinishedError, trio.Cancelled):
                    return

        try:
            await trio.to_thread.run_sync(loop, abandon_on_cancel=True)
        finally:
            stop.set()  # the abandoned thread ends within POLL seconds

    async def _send_outbox(self) -> None:
        """NOTIFY from one connection, so the others hear our events in our order."""
        conn: psycopg.Connection[Any] | None = None
        channel = ""

        def send(payloads: list[str]) -> None:
            nonlocal conn, channel
            if conn is None or conn.closed:
                conn = psycopg.connect(self.url, autocommit=True)
                channel = _channel_of(conn)
            with conn.transaction():  # one round trip's worth of commits for a batch
                for payload in payloads:
                    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))

        try:
            async for first in self._outbox:
                batch = [first]
                while len(batch) < 100:
                    try:
                        batch.append(self._outbox.receive_nowait())
                    except trio.WouldBlock:
                        break
                try:
                    await trio.to_thread.run_sync(send, batch)
                except psycopg.Error as exc:
                    log.warning("cluster: %d event(s) not sent (%s)", len(batch),
                                str(exc).strip() or type(exc).__name__)
                    if conn is not None:
                        conn.close()
                    await trio.sleep(RETRY)
        finally:
            if conn is not None:
                conn.close()

    async def _heartbeat(self, inbox: trio.MemorySendChannel[Event]) -> None:
        """Say we are alive; declare silent processes gone (their users show offline)."""
        while True:
            self.publish({"t": "alive"})
            await trio.sleep(self.heartbeat)
            now = trio.current_time()
            for origin, heard in list(self._heard.items()):
                if now - heard > self.silence:
                    del self._heard[origin]
                    log.warning("cluster: server %s silent for %g s: its users show offline",
                                origin, self.silence)
                    await inbox.send({"t": "gone", "o": origin})
