"""What every mode of ``overlay chat`` works with: the running client, and the
checks and wording they share."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import trio

from overlay.addresses import Address
from overlay.chat.envelope import check_text_length
from overlay.chat.service import Chat
from overlay.cli.account import span
from overlay.directory.client.connection import Contact, DirectoryClient
from overlay.errors import ChatError, ConfigError
from overlay.net.node import Node
from overlay.roles.edge import EdgeClient
from overlay.runtime import Peer

ONLINE = ("online", "away")


def check_text(text: str) -> None:
    """Refuse what the engine cannot send (it would otherwise fail later, queued)."""
    if not text.strip():
        raise ConfigError("the message is empty")
    try:
        check_text_length(text)
    except ChatError as exc:
        raise ConfigError(str(exc)) from None


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    return span(seconds)


@dataclass(slots=True)
class Progress:
    """How far the one message got, for the line that explains a timeout."""

    step: str = "connecting"
    presence: str | None = None
    error: str | None = None


@dataclass(slots=True)
class Client:
    """What every mode works with: the edge role, the chat engine, and how it was started."""

    args: argparse.Namespace
    server: Address
    peer: Peer
    role: EdgeClient
    chat: Chat
    nursery: trio.Nursery
    interrupted: bool = False
    progress: Progress = field(default_factory=Progress)
    """How far the one message of --to got."""

    @property
    def user(self) -> str:
        return self.role.username

    @property
    def node(self) -> Node:
        return self.peer.node

    async def start(self) -> None:
        """Log in and attach (started() of the edge role), then start the chat engine."""
        await self.peer.start()

    async def directory(self) -> DirectoryClient:
        return await self.role.directory.ready()

    async def contact(self, name: str, commands: str) -> Contact:
        """``name`` as an accepted contact, or a ChatError that says what to do instead.

        ``commands`` starts the hint: ``"/"`` in the terminal, ``"overlay contacts "``
        on the command line.
        """
        if name == self.user:
            raise ChatError("that is you")
        contacts = await (await self.directory()).contacts()
        for contact in contacts:
            if contact.username != name:
                continue
            if contact.state == "accepted":
                return contact
            if contact.state == "outgoing":
                raise ChatError(f"{name} has not accepted your contact request yet")
            raise ChatError(f"{name} asked to be your contact: accept first "
                            f"({commands}accept {name})")
        raise ChatError(f"{name} is not your contact (ask first: {commands}add {name})")
