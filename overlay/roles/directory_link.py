"""A role's standing connection to the directory server, re-established when it drops.

The directory is a single point of failure by design, so a running supernode
or client must outlive its outages: the mesh keeps routing, attached clients
keep talking, and this connection is retried with exponential backoff.  After
each (re)connection ``on_connect`` runs again (log in or resume, announce,
publish presence), and notices are handed to ``on_notice`` as they arrive.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import trio

from overlay.addresses import Address, format_address
from overlay.directory.client import DirectoryClient, Notice
from overlay.errors import DirectoryError, DirectoryUnavailable
from overlay.ids import Identity
from overlay.net.transport import Transport

log = logging.getLogger(__name__)

OnConnect = Callable[[DirectoryClient], Awaitable[None]]
OnNotice = Callable[[Notice], Awaitable[None]]


class DirectoryLink:
    """Keeps ``client`` connected; ``await link.ready()`` waits for a working connection."""

    def __init__(self, address: Address, identity: Identity, server_key: bytes | None,
                 on_connect: OnConnect, on_notice: OnNotice, *,
                 transport: Transport | None = None, retry_initial: float = 0.5,
                 retry_max: float = 30.0, rng: random.Random | None = None) -> None:
        self.address = address
        self.identity = identity
        self.server_key = server_key
        self._on_connect = on_connect
        self._on_notice = on_notice
        self._transport = transport
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._rng = rng or random.Random()
        self.client: DirectoryClient | None = None
        self._ready = trio.Event()

    async def ready(self) -> DirectoryClient:
        """The current connection, once it exists and ``on_connect`` has run on it."""
        while self.client is None:
            await self._ready.wait()
        return self.client

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Connect and stay connected.  The first attempt's failure is raised (a user's
        mistake, such as a wrong address or key, should stop the command at once); later
        outages are retried forever."""
        delay = self._retry_initial
        first = True
        while True:
            try:
                async with DirectoryClient.connect(
                        self.address, self.identity, server_key=self.server_key,
                        transport=self._transport) as client:
                    if self.server_key is None:
                        self.server_key = client.server_public_key  # pinned from now on
                    await self._on_connect(client)
                    self.client = client
                    self._ready.set()
                    if first:
                        task_status.started()
                        first = False
                    else:
                        log.info("directory server %s is back", format_address(self.address))
                    delay = self._retry_initial
                    async for notice in client.notices():
                        await self._on_notice(notice)
            except (DirectoryUnavailable, DirectoryError) as exc:
                if first:
                    raise
                log.warning("directory server %s: %s; retrying", format_address(self.address),
                            exc)
            finally:
                self.client = None
                self._ready = trio.Event()
            if not first:
                log.warning("lost the directory server %s; established conversations go on",
                            format_address(self.address))
            await trio.sleep(delay * self._rng.uniform(0.5, 1.0))
            delay = min(2 * delay, self._retry_max)
