"""``overlay chat`` on a terminal: commands in, events shown above the line being typed.

Each event is one chat line (:mod:`.lines` words them); a message of ours is
one line whose state is rewritten in place as its events come (queued, sent,
delivered: :meth:`LineEditor.rewrite`), else a short status line says what
changed.  Warnings logged meanwhile become ``! ...`` chat lines too, so
nothing but chat lines reaches the screen while the user types.

Also the demo's ``--interactive`` session (:func:`interactive_session`).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from overlay.addresses import format_address
from overlay.chat.events import ChatEvent
from overlay.cli.chat import lines
from overlay.cli.chat.client import ONLINE, Client, check_text, duration
from overlay.cli.chat.terminal import LineEditor, printable
from overlay.directory.protocol import USERNAME_RULE
from overlay.errors import OverlayError

log = logging.getLogger("overlay.cli")

COMMAND_TIMEOUT = 10.0
"""How long an interactive command waits for the directory before giving up."""
HISTORY_LIMIT = 20
KEPT_MESSAGES = 256
"""Our messages whose line can still change; an older one's change is a status line."""
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
a line starting with // sends the text after the first /
keys: Left/Right, Home/End (Ctrl-A/E), Ctrl-U/K/W delete, Up/Down recall earlier
lines, Tab completes commands and contact names (twice: lists them)"""


Command = Callable[[str], Awaitable[None]]


class Interactive:
    """The terminal session: commands in, events rendered above the line being typed."""

    COMMANDS = ("/msg", "/to", "/contacts", "/add", "/accept", "/history", "/status", "/help")

    def __init__(self, client: Client, editor: LineEditor) -> None:
        self.client = client
        self.editor = editor
        self.selected: str | None = None
        self.presence: dict[str, str] = {}
        """The last presence shown for each contact: only changes are worth a line."""
        self.commands: dict[str, Command] = {
            "/msg": self._msg, "/to": self._to, "/contacts": self._contacts,
            "/add": self._add, "/accept": self._accept, "/history": self._history,
            "/status": self._status, "/help": self._help,
        }
        self.mine: OrderedDict[bytes, str] = OrderedDict()
        """Our messages' lines on screen, by message id: the line's head, without state."""

    def say(self, text: str) -> None:
        self.editor.print_above(text)

    def chat_line(self, text: str) -> None:
        """A line of the conversation: the time first."""
        self.say(f"{lines.clock(time.time())} {text}")

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
                self.chat_line(f"! {printable(str(exc))}")
        if timer.cancelled_caught:
            self.chat_line(f"! no answer within {COMMAND_TIMEOUT:g} s "
                           "(is the directory server up?)")

    async def _show_events(self) -> None:
        async for event in self.client.chat.events:
            self.show(event)
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

    def show(self, event: ChatEvent) -> None:
        """Put ``event`` on screen: a new chat line, a rewritten one, or nothing."""
        if event.kind in ("queued", "sent", "delivered") and event.id is not None:
            self._our_message(event, event.id)
            return
        shown = self.render(event)
        if shown is not None:
            self.chat_line(shown)

    def _our_message(self, event: ChatEvent, key: bytes) -> None:
        peer, text, now = event.peer or "?", event.text or "", time.time()
        kind = event.kind
        if kind == "queued":
            if self.presence.get(peer) in ONLINE:
                return  # "sent" follows at once
            state = f"queued: {peer} is offline; sent when {peer} comes online"
        elif kind == "sent":
            state = f"sent, {event.path}" if event.path else "sent"
        else:
            state = f"delivered in {duration(event.latency or 0.0)}"
        head = self.mine.get(key)
        if head is None:
            if kind == "delivered":
                # Sent in an earlier run, or its line is long gone: a status line.
                self.say(lines.status_line(now, "delivered to", peer, text,
                                           duration(event.latency or 0.0)))
                return
            head = lines.outgoing(event.at or now, peer, text)
            self.mine[key] = head
            while len(self.mine) > KEPT_MESSAGES:
                self.mine.popitem(last=False)
            self.editor.print_above(lines.with_state(head, printable(state)), key=key)
            return
        if kind == "delivered":
            del self.mine[key]
        if not self.editor.rewrite(key, lines.with_state(head, printable(state))):
            if kind == "delivered":
                detail, what = duration(event.latency or 0.0), "delivered to"
            else:
                detail, what = printable(event.path or "sent"), "sent to"
            self.say(lines.status_line(now, what, peer, text, detail))

    def render(self, event: ChatEvent) -> str | None:
        """The chat line (without its time) an event shows as, or None if not worth one."""
        peer = printable(event.peer or "?")
        kind = event.kind
        if event.peer is not None and kind in ("presence", "contact_request",
                                               "contact_accepted"):
            self.editor.names.add(event.peer)
        if kind == "message":
            return lines.incoming(event.at, event.peer or "?", event.text or "", time.time())
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
            self.editor.names.discard(event.peer or "")
            return f"* {peer} is no longer a contact"
        if kind == "rejected":
            return f"! rejected {lines.indent(event.detail or 'a message')}"
        return f"! {lines.indent(event.detail or kind)}"

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
            self.editor.names.add(contact.username)
            rows.append((contact.username, contact.state, status, home))
        self.say(lines.table(rows))

    async def _history(self, rest: str) -> None:
        name = self._name(rest, "/history NAME")
        if name is None:
            return
        entries = await self.client.chat.conversation(name, HISTORY_LIMIT)
        if not entries:
            self.say(f"no messages with {name} yet")
            return
        self.say("\n".join(lines.history_entry(entry) for entry in entries))

    async def _status(self, _rest: str) -> None:
        self.say(lines.status_report(self.client))

    async def _help(self, _rest: str) -> None:
        self.say(HELP)

    async def _greeting(self) -> None:
        """One line of who is there, and requests waiting, so nobody starts blind."""
        contacts = await (await self.client.directory()).contacts()
        accepted = [c for c in contacts if c.state == "accepted"]
        self.editor.names.update(c.username for c in contacts)
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


async def run_interactive(client: Client, input_history: Path | None = None) -> int:
    print(f"connecting to {format_address(client.server)} as {client.user} ...", flush=True)
    await client.start()
    await interactive_session(client, input_history)
    return 0


async def interactive_session(client: Client, input_history: Path | None = None) -> None:
    """The terminal chat on a client whose role and engine already run (also the demo's).

    ``input_history`` is the file that keeps typed lines between runs (None: this run only).
    """
    commands = [*Interactive.COMMANDS, "/quit", "/exit"]
    editor = LineEditor(PROMPT, history=input_history, commands=commands)
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
        """A warning or error is a chat line (``12:04 ! ...``); debug output keeps its form."""
        try:
            if record.levelno >= logging.WARNING:
                text = f"{lines.clock(record.created)} ! {record.getMessage()}"
            else:
                text = self.format(record)
            self.editor.print_above(printable(text))
        except Exception:
            self.handleError(record)
