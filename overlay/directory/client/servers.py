"""The directory servers a client may use, and how it moves between them.

Several ``overlay server`` processes can share one PostgreSQL database and one
server key (docs/directory.md): any of them accepts a session another one
issued.  So a client is given a list (``--server A --server B``, kept in the
saved session) and treats it as one directory with several doors:

- a one-shot command (``overlay account``, ``overlay contacts``) uses the first
  server that answers, in the order given (:func:`connect_first`);
- a running role (:class:`~overlay.roles.directory_link.DirectoryLink`) stays on
  the server it reached; when that one dies it tries the next at once, then
  the others in turn, and only after a whole round has failed does it wait,
  with exponential backoff and jitter so that thousands of clients cut off at
  the same moment do not all come back in the same one (:class:`Retry`);
- a server that sheds load answers 429 with ``retry_after``: the client waits
  that long, stretched by up to half again at random, before asking again.

Every server must prove the same key: the one pinned for the list (the first
connection pins it when none was given), so failing over never means trusting
a new key.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import trio

from overlay.addresses import Address, format_address
from overlay.directory.client.connection import DirectoryClient
from overlay.errors import DirectoryError, DirectoryUnavailable

log = logging.getLogger(__name__)

BUSY = 429
"""The status of a server that sheds load (and of throttled logins): wait and retry."""
BUSY_WAIT = 1.0
"""How long to wait after a 429 that named no ``retry_after``."""


@dataclass(frozen=True, slots=True)
class ServerList:
    """Directory servers in the order to try them; never empty, no address twice."""

    addresses: tuple[Address, ...]

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("a server list needs at least one address")
        unique = tuple(dict.fromkeys(self.addresses))
        if unique != self.addresses:
            object.__setattr__(self, "addresses", unique)

    @classmethod
    def of(cls, servers: Address | Iterable[Address] | ServerList) -> ServerList:
        """From one address, several, or a list already."""
        if isinstance(servers, ServerList):
            return servers
        if isinstance(servers, tuple) and len(servers) == 2 and isinstance(servers[0], str):
            return cls((servers,))  # one (host, port)
        return cls(tuple(servers))

    @property
    def primary(self) -> Address:
        return self.addresses[0]

    def after(self, address: Address) -> list[Address]:
        """Every server, starting with the one after ``address`` (``address`` last)."""
        if address not in self.addresses:
            return list(self.addresses)
        i = self.addresses.index(address) + 1
        return list(self.addresses[i:] + self.addresses[:i])

    def describe(self) -> str:
        return ", ".join(format_address(address) for address in self.addresses)

    def __len__(self) -> int:
        return len(self.addresses)

    def __iter__(self) -> Iterator[Address]:
        return iter(self.addresses)


@dataclass(slots=True)
class Retry:
    """When to try again: at once for the next server in a round, with backoff after a
    failed round, as told after a 429.  Pure: the caller sleeps, ``rng`` is the jitter."""

    initial: float
    maximum: float
    rng: random.Random
    delay: float = 0.0

    def __post_init__(self) -> None:
        self.delay = self.initial

    def reset(self) -> None:
        """A connection worked: the next outage starts with a short wait again."""
        self.delay = self.initial

    def next_server(self) -> float:
        """Before trying the next server of a round: a small random pause only."""
        return self.rng.uniform(0.0, self.initial / 2)

    def round_failed(self) -> float:
        """Every server failed: wait between half and all of the delay, then double it."""
        wait = self.delay * self.rng.uniform(0.5, 1.0)
        self.delay = min(2 * self.delay, self.maximum)
        return wait

    def busy(self, retry_after: float | None) -> float:
        """The server said 429: its ``retry_after``, stretched by up to half again."""
        base = BUSY_WAIT if retry_after is None or retry_after <= 0 else retry_after
        return min(base, self.maximum) * self.rng.uniform(1.0, 1.5)


def is_busy(exc: DirectoryError) -> bool:
    return exc.status == BUSY and not isinstance(exc, DirectoryUnavailable)


Connect = Callable[[Address], AbstractAsyncContextManager[DirectoryClient]]


@asynccontextmanager
async def connect_first(servers: ServerList | Sequence[Address], connect: Connect,
                        ) -> AsyncIterator[tuple[Address, DirectoryClient]]:
    """The first server that answers, in order, and the connection to it.

    Only failing to connect moves on to the next server; an error raised while
    the caller uses the connection is the caller's.  If none answers, one
    DirectoryUnavailable names what went wrong with each.
    """
    errors: list[str] = []
    for address in ServerList.of(servers):
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(connect(address))
        except DirectoryUnavailable as exc:
            errors.append(str(exc))
            continue
        async with stack:
            yield address, client
        return
    if len(errors) == 1:
        raise DirectoryUnavailable(errors[0])
    raise DirectoryUnavailable("no directory server answered: " + "; ".join(errors))


async def sleep_busy(retry: Retry, exc: DirectoryError, what: str) -> None:
    """Wait as a 429 asks (logged), for callers that retry a request themselves."""
    wait = retry.busy(exc.retry_after)
    log.info("%s: the server is busy (%s); again in %.1f s", what, exc.reason, wait)
    await trio.sleep(wait)
