"""``overlay chat`` on a terminal: commands in, events rendered above the line being typed.

Also the demo's ``--interactive`` session (:func:`interactive_session`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import trio

from overlay.addresses import format_address
from overlay.chat.events import ChatEvent
from overlay.chat.history import Entry
from overlay.cli.chat.client import ONLINE, Client, check_text, duration
from overlay.cli.chat.terminal import LineEditor, printable
from overlay.directory.protocol import USERNAME_RULE
from overlay.errors import OverlayError

log = logging.getLogger("overlay.cli")

COMMAND_TIMEOUT = 10.0
"""How long an interactive command waits for the directory before giving up."""
HISTORY_LIMIT = 20
OLD_MESSAGE = 60.0
"""An incoming message written longer ago than this shows when it was written."""
PROMPT = "> "
HELP = """\
commands:
  /msg NAME TEXT     send TEXT to contact NAME
  /to NAME           talk to NAME: plain lines go to NAME (/to alone: nobody)
  /contacts          contacts and requests, with presence and home supernode
  /add NAME          ask NAME to become a contact
  /accept NAME       accept NAME's contact request
  /history [NAME]    the last 20 messages with NAME, with time and state
  /status            this client's supernodes; each conversation direct or relayed
  /help              this list
  /quit              leave (also Ctrl-C, or Ctrl-D on an empty line)
a line starting with // sends the text after the first /"""


def _stamp(timestamp: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    except (OverflowError, ValueError, OSError):  # a history written before times were checked
        return "(no valid time)"


def _indent(text: str) -> str:
    """Continuation lines of a multi-line message, set off from the next speaker."""
    return printable(text).replace("\n", "\n    ")


@dataclass(frozen=True, slots=True)
class Glyphs:
    """The marks in front of lines, plain ASCII when the terminal cannot show better."""

    pending: str
    delivered: str

    @classmethod
    def for_stream(cls, stream: Any) -> Glyphs:
        fancy = cls("\u2026", "\u2713")
        try:
            (fancy.pending + fancy.delivered).encode(getattr(stream, "encoding", None) or "ascii")
        except (UnicodeEncodeError, LookupError):
            return cls("...", "v")
        return fancy


Command = Callable[[str], Awaitable[None]]


class Interactive:
    """The terminal session: commands in, events rendered above the line being typed."""

    def __init__(self, client: Client, editor: LineEditor) -> None:
        self.client = client
        self.editor = editor
        self.selected: str | None = None
        self.presence: dict[str, str] = {}
        """The last presence shown for each contact: only changes are worth a line."""
        self.glyphs = Glyphs.for_stream(sys.stdout)
        self.commands: dict[str, Command] = {
            "/msg": self._msg, "/to": self._to, "/contacts": self._contacts,
            "/add": self._add, "/accept": self._accept, "/history": self._history,
            "/status": self._status, "/help": self._help,
        }

    def say(self, text: str) -> None:
        self.editor.print_above(text)

    # --- the loops -------------------------------------------------------------------------

    async def run(self) -> None:
        status = self.client.role.status()
        home = status.home.short if status.home else "-"
        self.say(f"chat as {self.client.user} on {format_address(self.client.server)}: "
                 f"home supernode {home}, "
                 f"{'reachable' if status.reachable else 'relayed by supernodes'}; "
                 f"/help lists the commands")
        await self._guarded(self._greeting())
        self.client.nursery.start_soon(self._show_events)
        while True:
            line = await self.editor.read_line()
            if line is None:
                return
            line = line.strip()
            if line in ("/quit", "/exit"):
                return
            if line:
                await self._guarded(self._line(line))

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run one command: a refusal is a line on screen, never the end of the session."""
        with trio.move_on_after(COMMAND_TIMEOUT) as timer:
            try:
                await work
            except OverlayError as exc:
                self.say(f"! {printable(str(exc))}")
        if timer.cancelled_caught:
            self.say(f"! no answer within {COMMAND_TIMEOUT:g} s (is the directory server up?)")

    async def _show_events(self) -> None:
        async for event in self.client.chat.events:
            shown = self.render(event)
            if shown is not None:
                self.say(shown)
            if (event.kind == "message" and event.peer is not None
                    and event.peer not in self.client.role.peers):
                # Name this sender's conversation in /status (and route replies at once).
                self.client.nursery.start_soon(self._locate, event.peer)

    async def _locate(self, username: str) -> None:
        with trio.move_on_after(COMMAND_TIMEOUT):
            try:
                await self.client.role.locate(username)
            except OverlayError as exc:
                log.debug("could not locate %s: %s", username, exc)

    def render(self, event: ChatEvent) -> str | None:
        """The line an event shows as, or None when it is not worth one."""
        peer = printable(event.peer or "?")
        text = _indent(event.text or "")
        kind = event.kind
        if kind == "message":
            shown = f"{peer}: {text}"
            if event.at is not None and time.time() - event.at > OLD_MESSAGE:
                shown += f"  (written {_stamp(event.at)})"
            return shown
        if kind == "queued":
            if self.presence.get(event.peer or "") in ONLINE:
                return None  # "sent" follows at once
            return (f"{self.glyphs.pending} you -> {peer}: {text} "
                    f"(queued: {peer} is offline; it is sent when {peer} comes online)")
        if kind == "sent":
            path = f", {event.path}" if event.path else ""
            return f"{self.glyphs.pending} you -> {peer}: {text} (sent{path})"
        if kind == "delivered":
            return (f"{self.glyphs.delivered} delivered to {peer}: {text} "
                    f"({duration(event.latency or 0.0)})")
        if kind == "presence":
            status = event.detail or "offline"
            if self.presence.get(event.peer or "") == status:
                return None
            self.presence[event.peer or ""] = status
            return f"* {peer} is {printable(status)}"
        if kind == "contact_request":
            return f"* {peer} asks to be your contact: /accept {peer}"
        if kind == "contact_accepted":
            return f"* {peer} accepted: you are contacts now"
        if kind == "contact_removed":
            return f"* {peer} is no longer a contact"
        if kind == "rejected":
            return f"! rejected {_indent(event.detail or 'a message')}"
        return f"! {_indent(event.detail or kind)}"

    # --- commands ----------------------------------------------------------------------------

    async def _line(self, line: str) -> None:
        if line.startswith("//"):
            await self._to_selected(line[1:])
        elif line.startswith("/"):
            name, _, rest = line.partition(" ")
            command = self.commands.get(name)
            if command is None:
                self.say(f"! unknown command {printable(name)}: /help lists the commands")
            else:
                await command(rest.strip())
        else:
            await self._to_selected(line)

    async def _to_selected(self, text: str) -> None:
        if self.selected is None:
            self.say("! no conversation selected: /to NAME first, or /msg NAME TEXT")
            return
        await self._send(self.selected, text)

    async def _send(self, to: str, text: str) -> None:
        check_text(text)
        contact = await self.client.contact(to, "/")
        if contact.presence is not None:
            self.presence[to] = contact.presence.status
        await self.client.chat.send(to, text)

    def _name(self, rest: str, usage: str) -> str | None:
        """The NAME argument, or None (after a usage line) if it is not a username."""
        name = rest.split(" ", 1)[0] if rest else (self.selected or "")
        if USERNAME_RULE.fullmatch(name) is None:
            self.say(f"! usage: {usage}")
            return None
        return name

    async def _msg(self, rest: str) -> None:
        name, _, text = rest.partition(" ")
        if USERNAME_RULE.fullmatch(name) is None or not text.strip():
            self.say("! usage: /msg NAME TEXT")
            return
        await self._send(name, text.strip())

    async def _to(self, rest: str) -> None:
        if not rest:
            self.selected = None
            self.editor.prompt = PROMPT
            return
        name = self._name(rest, "/to NAME")
        if name is None:
            return
        await self.client.contact(name, "/")
        self.selected = name
        self.editor.prompt = f"[{name}]{PROMPT}"

    async def _add(self, rest: str) -> None:
        name = self._name(rest, "/add NAME")
        if name is not None:
            response = await (await self.client.directory()).contact_request(name)
            self.say(f"* {printable(response.reason)}")

    async def _accept(self, rest: str) -> None:
        name = self._name(rest, "/accept NAME")
        if name is not None:
            response = await (await self.client.directory()).contact_accept(name)
            self.say(f"* {printable(response.reason)}")

    async def _contacts(self, _rest: str) -> None:
        contacts = await (await self.client.directory()).contacts()
        if not contacts:
            self.say("no contacts yet: /add NAME")
            return
        rows: list[tuple[str, ...]] = [("USERNAME", "STATE", "PRESENCE", "HOME")]
        for contact in contacts:
            presence = contact.presence
            status = presence.status if presence else "-"
            home = presence.home_node.short if presence and presence.home_node else "-"
            if presence is not None:
                self.presence[contact.username] = presence.status
            rows.append((contact.username, contact.state, status, home))
        self.say(_table(rows))

    async def _history(self, rest: str) -> None:
        name = self._name(rest, "/history NAME")
        if name is None:
            return
        entries = await self.client.chat.conversation(name, HISTORY_LIMIT)
        if not entries:
            self.say(f"no messages with {name} yet")
            return
        self.say("\n".join(self._entry(entry) for entry in entries))

    def _entry(self, entry: Entry) -> str:
        text = _indent(entry.text)
        if entry.direction == "in":
            return f"{_stamp(entry.sent_at)}  {entry.peer}: {text}"
        state = entry.state
        if entry.state == "delivered" and entry.delivered_at is not None:
            state += f" in {duration(entry.delivered_at - entry.sent_at)}"
        return f"{_stamp(entry.sent_at)}  you -> {entry.peer}: {text}  [{state}]"

    async def _status(self, _rest: str) -> None:
        self.say(_status_lines(self.client))

    async def _help(self, _rest: str) -> None:
        self.say(HELP)

    async def _greeting(self) -> None:
        """One line of who is there, and requests waiting, so nobody starts blind."""
        contacts = await (await self.client.directory()).contacts()
        accepted = [c for c in contacts if c.state == "accepted"]
        for contact in accepted:
            if contact.presence is not None:
                self.presence[contact.username] = contact.presence.status
        if accepted:
            self.say("contacts: " + ", ".join(
                f"{c.username} ({c.presence.status if c.presence else 'offline'})"
                for c in accepted))
        else:
            self.say("no contacts yet: /add NAME")
        for contact in contacts:
            if contact.state == "incoming":
                self.say(f"* {contact.username} asks to be your contact: "
                         f"/accept {contact.username}")
        waiting = len(await self.client.chat.pending())
        if waiting:
            self.say(f"{waiting} earlier message(s) not delivered yet: sending when possible")


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in
                               zip(row, widths, strict=True)).rstrip() for row in rows)


def _status_lines(client: Client) -> str:
    """Where this client hangs off the mesh, and how each conversation travels."""
    status = client.role.status()
    home = status.home.short if status.home else "none yet"
    standby = status.standby.short if status.standby else "none"
    if status.reachable:
        address = format_address(status.direct_address) if status.direct_address else None
        reach = f"reachable at {address}"
    else:
        reach = f"not reachable, relayed by supernodes: {status.reachability}"
    directory = "connected" if status.directory_connected else "unreachable"
    lines = [f"{client.user} ({client.node.node_id.short}): home supernode {home}, "
             f"standby {standby}; {reach}; directory {directory}"]
    conversations = status.conversations
    for row in conversations:
        name = row.username or row.peer.short
        since = "" if row.punch is None else f" for {row.punch['since_s']:.0f} s"
        lines.append(f"  {name}: {row.path.describe()}{since}")
    if not conversations:
        lines.append("  no conversations open yet (one opens with the first message)")
    return "\n".join(lines)


async def run_interactive(client: Client) -> int:
    print(f"connecting to {format_address(client.server)} as {client.user} ...", flush=True)
    await client.start()
    await interactive_session(client)
    return 0


async def interactive_session(client: Client) -> None:
    """The terminal chat on a client whose role and engine already run (also the demo's)."""
    editor = LineEditor(PROMPT)
    async with editor:
        with _logging_above(editor):
            await Interactive(client, editor).run()


@contextmanager
def _logging_above(editor: LineEditor) -> Iterator[None]:
    """Log records go through the editor too, so a warning cannot break the typed line."""
    if not editor.tty:
        yield
        return
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = _AboveHandler(editor)
    if saved:
        handler.setFormatter(saved[0].formatter)
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved


class _AboveHandler(logging.Handler):
    def __init__(self, editor: LineEditor) -> None:
        super().__init__()
        self.editor = editor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.editor.print_above(printable(self.format(record)))
        except Exception:
            self.handleError(record)
