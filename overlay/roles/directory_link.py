"""A role's standing connection to the directory, re-established when it drops.

A running supernode or client must outlive a directory outage: the mesh keeps
routing, attached clients keep talking, and this connection is retried.  With
several servers (``--server A --server B``, one database behind them) a dead
one is left for the next at once, and the session resumes there without a
password; only when every server has failed in turn does the link wait, with
exponential backoff and jitter (:mod:`overlay.directory.client.servers`).  A server
that sheds load (429) is asked again after its ``retry_after``.  After each
(re)connection ``on_connect`` runs again (log in or resume, announce, publish
presence), and notices are handed to ``on_notice`` as they arrive.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterable

import trio

from overlay.addresses import Address, format_address
from overlay.directory.client.connection import DirectoryClient, Notice
from overlay.directory.client.servers import Retry, ServerList, is_busy
from overlay.errors import DirectoryError, DirectoryUnavailable
from overlay.ids import Identity
from overlay.net.transport import Transport

log = logging.getLogger(__name__)

OnConnect = Callable[[DirectoryClient], Awaitable[None]]
OnNotice = Callable[[Notice], Awaitable[None]]


class DirectoryLink:
    """Keeps ``client`` connected; ``await link.ready()`` waits for a working connection."""

    def __init__(self, servers: Address | Iterable[Address] | ServerList, identity: Identity,
                 server_key: bytes | None, on_connect: OnConnect, on_notice: OnNotice, *,
                 transport: Transport | None = None, retry_initial: float = 0.5,
                 retry_max: float = 30.0, rng: random.Random | None = None) -> None:
        self.servers = ServerList.of(servers)
        self.address = self.servers.primary
        """The server in use (or being tried)."""
        self.identity = identity
        self.server_key = server_key
        self._on_connect = on_connect
        self._on_notice = on_notice
        self._transport = transport
        self._retry = Retry(retry_initial, retry_max, rng or random.Random())
        self.client: DirectoryClient | None = None
        self.failovers = 0
        """Times this link moved on to another server (the one it was on, or tried, failed)."""
        self._ready = trio.Event()

    async def ready(self) -> DirectoryClient:
        """The current connection, once it exists and ``on_connect`` has run on it."""
        while self.client is None:
            await self._ready.wait()
        return self.client

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Connect and stay connected.  Until the first connection works, a refusal (a
        user's mistake, such as a wrong key or password) is raised at once; servers
        that cannot be reached are retried with backoff, before the first connection
        (a daemon started before its server) as after it, and each wait is logged."""
        first = True
        tried = 0  # servers failed in a row since the last working connection
        while True:
            busy: DirectoryError | None = None
            unreachable: DirectoryError | None = None
            worked = False
            try:
                async with DirectoryClient.connect(
                        self.address, self.identity, server_key=self.server_key,
                        transport=self._transport) as client:
                    if self.server_key is None:
                        self.server_key = client.server_public_key  # pinned from now on
                    await self._on_connect(client)
                    self.client = client
                    self._ready.set()
                    worked = True
                    if first:
                        task_status.started()
                        first = False
                    else:
                        log.info("directory server %s: connected",
                                 format_address(self.address))
                    tried = 0
                    self._retry.reset()
                    async for notice in client.notices():
                        await self._on_notice(notice)
            except DirectoryError as exc:
                if is_busy(exc):
                    busy = exc
                elif first and not isinstance(exc, DirectoryUnavailable):
                    raise
                else:
                    unreachable = exc
            finally:
                self.client = None
                self._ready = trio.Event()
            if worked:
                log.warning("lost the directory server %s; established conversations go on",
                            format_address(self.address))
            if busy is not None:
                wait = self._retry.busy(busy.retry_after)
                log.info("directory server %s is busy (%s); again in %.1f s",
                         format_address(self.address), busy.reason, wait)
                await trio.sleep(wait)
                continue  # the same server: it is up, only loaded
            tried += 1
            wait = (self._retry.next_server() if tried % len(self.servers)
                    else self._retry.round_failed())
            if unreachable is not None:
                log.log(logging.WARNING if tried == 1 else logging.INFO,
                        "directory server %s: %s; trying again in %.1f s",
                        format_address(self.address), unreachable, wait)
            await trio.sleep(wait)
            if len(self.servers) > 1:
                self.address = self.servers.after(self.address)[0]
                self.failovers += 1
                log.info("trying directory server %s", format_address(self.address))
