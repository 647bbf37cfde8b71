"""``overlay chat``: talk to contacts from a terminal, from a script, or as a JSON stream.

One process is a whole edge client (like ``overlay client``: log in, attach
to the nearest supernode) with the chat engine (:mod:`overlay.chat.service`)
on top, in one of three modes:

interactive (the default)
    A line editor (:mod:`overlay.chat.terminal`) reads commands and messages
    while incoming messages, receipts and presence changes are printed above
    the line being typed.
one-shot (``--to CONTACT``)
    Send one message and exit 0 only once the contact's receipt came back;
    otherwise exit 1 with the reason.  A message that could not be delivered
    stays queued in the history and goes out the next time ``overlay chat``
    runs for the same user, which is why "queued" is not a success: the
    process that would send it is exiting.
JSON (``--json``)
    One JSON object per line, ``ready`` first, then every chat event, for
    scripts to consume.

The history is ``STATE/chat-USER.sqlite3``.  Ctrl-C (or SIGTERM) is an orderly
stop and exits 0, as ``overlay node`` does; only in one-shot mode, where it
means "not delivered", it exits 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import trio

from overlay.addresses import Address, format_address
from overlay.chat.envelope import MAX_TEXT_LEN, check_text_length
from overlay.chat.history import Entry
from overlay.chat.service import Chat, ChatEvent
from overlay.chat.terminal import LineEditor, printable
from overlay.cli.account import (
    directory_options,
    password_options,
    read_password,
    span,
    username_arg,
)
from overlay.cli.common import address_arg, positive_float, stop_signals
from overlay.cli.roles import directory_target
from overlay.cli.session_file import saved_token
from overlay.directory.client import Contact, DirectoryClient
from overlay.directory.protocol import USERNAME_RULE
from overlay.directory.servers import ServerList
from overlay.errors import ChatError, ConfigError, OverlayError
from overlay.net.node import Node, NodeConfig
from overlay.roles.edge import Credentials, EdgeClient, EdgeConfig
from overlay.runtime import EdgeRole, Peer, PeerSpec, run_peer
from overlay.state import StateDir

log = logging.getLogger("overlay.cli")

DEFAULT_TIMEOUT = 30.0
COMMAND_TIMEOUT = 10.0
"""How long an interactive command waits for the directory before giving up."""
HISTORY_LIMIT = 20
OLD_MESSAGE = 60.0
"""An incoming message written longer ago than this shows when it was written."""
PROMPT = "> "
ONLINE = ("online", "away")
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


# --- the command line ----------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "chat",
        parents=[common, directory_options(), password_options()],
        help="chat with contacts: interactive, one message (--to), or a JSON stream",
        description=(
            "Chat as USER: log in (the session saved by `overlay account login`, or a "
            "password), attach to the nearest supernode and talk to contacts, end-to-end "
            "sealed, relayed by supernodes or over a direct link.  Without --to or --json it "
            "is interactive: type /help.  Each sent message shows 'sent', then 'delivered' "
            "when the recipient's receipt returns.  Messages to an offline contact are "
            "queued in the history (STATE/chat-USER.sqlite3) and sent when the contact comes "
            "online while `overlay chat` runs.\n\n"
            "--to CONTACT sends one message (--message TEXT, else standard input) and exits "
            "0 only once it is delivered; 1 with the reason otherwise (it then stays "
            "queued).  --json prints one JSON object per line: {\"event\": \"ready\"} first, "
            "then message, queued, sent, delivered, presence, rejected, contact_request, "
            "contact_accepted, contact_removed and error events."
        ),
        epilog=(
            "examples: overlay chat --server 127.0.0.1:7000 --user alice\n"
            "          overlay chat --user alice --to bob --message 'lunch?'\n"
            "          echo 'lunch?' | overlay chat --user alice --to bob --timeout 10\n"
            "          overlay chat --user bob --json | jq -c 'select(.event == \"message\")'"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--user", type=username_arg, required=True, metavar="NAME",
                        help="chat as this user")
    parser.add_argument("--listen", type=address_arg, default=None, metavar="HOST:PORT",
                        help="accept direct links here (default: do not listen, dial out only)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--to", type=username_arg, default=None, metavar="CONTACT",
                      help="send one message to CONTACT and exit once it is delivered")
    mode.add_argument("--json", action="store_true",
                      help="print the event stream as JSON lines instead of being interactive")
    parser.add_argument("--message", default=None, metavar="TEXT",
                        help="with --to: the message (default: read standard input)")
    parser.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT,
                        metavar="SECONDS",
                        help="with --to: give up if not delivered within SECONDS, connecting "
                             "included (default %(default)g)")
    parser.set_defaults(run=run_chat, verbose_default=-1, usage_error=parser.error)


def run_chat(args: argparse.Namespace) -> int:
    if args.message is not None and args.to is None:
        usage_error: Callable[[str], NoReturn] = args.usage_error
        usage_error("--message needs --to CONTACT")
    state, server, key = directory_target(args)
    credentials = _credentials(args, state, server)
    text = _message(args) if args.to is not None else None
    _tolerate_unprintable_output()
    return trio.run(partial(_chat, args, state_path=state, server=server, key=key,
                            credentials=credentials, text=text))


def _credentials(args: argparse.Namespace, state: Path, server: ServerList) -> Credentials:
    """The saved session's token if it is this user's on this server, else a password.

    With --password-stdin the first line of stdin is the password in every
    case (with the token tried first), so that a script's input means the
    same thing whether or not a session happens to be saved.
    """
    token = saved_token(state, args.user, server.addresses, time.time())
    password = None
    if args.password_stdin:
        password = _first_line_of_stdin()
    elif token is None:
        password = read_password(args, args.user, confirm=False)
    return Credentials(args.user, password=password, token=token)


def _first_line_of_stdin() -> str:
    """The password line, read byte by byte from fd 0.

    Not ``sys.stdin.readline()``: that buffers ahead, and what follows the
    password (the message, or the commands of a scripted session) must stay
    unread for whoever reads standard input next.
    """
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            break
        line += byte
    if not line:
        raise ConfigError("--password-stdin: standard input is empty")
    password = line.decode("utf-8", errors="replace").rstrip("\r\n")
    if not password:
        raise ConfigError("the password is empty")
    return password


def _message(args: argparse.Namespace) -> str:
    """--message, else all of standard input (its final line end dropped)."""
    if args.message is not None:
        text: str = args.message
    elif sys.stdin.isatty():
        raise ConfigError("nothing to send: give --message TEXT or pipe the message in")
    else:
        data = bytearray()
        while chunk := os.read(0, 65536):
            data += chunk
            if len(data) > 4 * MAX_TEXT_LEN:
                break
        try:
            text = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ConfigError("the message on standard input is not UTF-8 text") from None
    check_text(text)
    return text


def check_text(text: str) -> None:
    """Refuse what the engine cannot send (it would otherwise fail later, queued)."""
    if not text.strip():
        raise ConfigError("the message is empty")
    try:
        check_text_length(text)
    except ChatError as exc:
        raise ConfigError(str(exc)) from None


def _tolerate_unprintable_output() -> None:
    """A contact's emoji on a non-UTF-8 terminal becomes '?', not a crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")


# --- the process ---------------------------------------------------------------------------


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


async def _chat(args: argparse.Namespace, *, state_path: Path, server: ServerList,
                key: bytes | None, credentials: Credentials, text: str | None) -> int:
    with stop_signals() as signals, StateDir(state_path) as state:
        # A one-shot process leaves at once: it must not be asked to be a supernode.
        role = EdgeRole(credentials, server, key, EdgeConfig(supernode_ok=text is None),
                        chat_history=state.path / f"chat-{args.user}.sqlite3")
        spec = PeerSpec(state.load_or_create_identity(), NodeConfig(listen=args.listen),
                        role, control_path=state.control_socket)
        result = 0
        async with run_peer(spec, start=False) as peer, trio.open_nursery() as nursery:
            assert peer.edge is not None and peer.chat is not None
            client = Client(args, server.primary, peer, peer.edge, peer.chat, nursery)
            nursery.start_soon(_stop_on_signal, signals, client)
            if text is not None:
                result = await _one_shot(client, args.to, text)
            elif args.json:
                result = await _json_stream(client)
            else:
                result = await _interactive(client)
            nursery.cancel_scope.cancel()
    if client.interrupted:
        if text is None:
            return 0
        if client.progress.step in ("connecting", "checking"):
            fate = "nothing was sent or queued"
        else:
            fate = f"it stays queued and is sent the next time overlay chat runs as {args.user}"
        print(f"overlay chat: interrupted before {args.to} acknowledged the message; {fate}",
              file=sys.stderr)
        return 130
    return result


async def _stop_on_signal(signals: trio.abc.ReceiveChannel[int], client: Client) -> None:
    async for _signum in signals:
        client.interrupted = True
        client.nursery.cancel_scope.cancel()
        return


# --- one message ---------------------------------------------------------------------------


async def _one_shot(client: Client, to: str, text: str) -> int:
    progress = client.progress
    with trio.move_on_after(client.args.timeout):
        await client.start()
        progress.step = "checking"
        contact = await client.contact(to, "overlay contacts ")
        progress.presence = contact.presence.status if contact.presence else None
        message_id = await client.chat.send(to, text)
        progress.step = "queued"
        async for event in client.chat.events:
            if event.peer != to:
                continue
            if event.kind == "presence":
                progress.presence = event.detail
            elif event.kind == "error":  # a failed channel: its messages are queued again
                progress.error = event.detail
                progress.step = "queued"
            elif event.id == message_id and event.kind == "sent":
                progress.step = "sent"
            elif event.id == message_id and event.kind == "delivered":
                print(f"delivered to {to}: {printable(text)} "
                      f"({duration(event.latency or 0.0)})", flush=True)
                return 0
            elif event.kind == "delivered":
                print(f"delivered to {to} (queued earlier): {printable(event.text or '')}",
                      flush=True)
    raise ChatError(_not_delivered(client, to, progress))


def _not_delivered(client: Client, to: str, progress: Progress) -> str:
    within = f"not delivered within {client.args.timeout:g} s"
    later = f"the next time overlay chat runs as {client.user}"
    if progress.step == "connecting":
        return (f"{within}: could not log in and attach to a supernode "
                f"(nothing was sent or queued)")
    if progress.step == "checking":
        return f"{within}: the directory server did not answer (nothing was sent or queued)"
    if progress.step == "sent":
        return (f"{within}: sent, but {to}'s receipt has not come back (is {to} running "
                f"overlay chat?); it is sent again {later}")
    if progress.presence in ONLINE:
        why = f"{to} is {progress.presence} but could not be reached"
        if progress.error:
            why += f": {progress.error}"
    else:
        why = f"{to} is offline"
    return (f"{within} (queued: {why}); it stays queued in {client.user}'s history and is "
            f"sent {later} while {to} is online")


# --- JSON lines ------------------------------------------------------------------------------


async def _json_stream(client: Client) -> int:
    await client.start()
    status = client.role.status()
    ready = {"event": "ready", "user": client.user, "node_id": client.node.node_id.hex(),
             "server": format_address(status.server),
             "home": None if status.home is None else status.home.hex(),
             "reachable": status.reachable, "pending": len(await client.chat.pending())}
    if not _print_json(ready):
        return 0
    async for event in client.chat.events:
        if not _print_json(event.to_json()):
            return 0
    return 0


def _print_json(record: dict[str, Any]) -> bool:
    """Print one line; False once nobody reads (``| head``): then stop quietly."""
    try:
        print(json.dumps(record), flush=True)
    except BrokenPipeError:
        # The interpreter flushes stdout again at exit: point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False
    return True


# --- interactive ---------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    return span(seconds)


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
        lines.append(f"  {name}: {row.path.describe()}")
    if not conversations:
        lines.append("  no conversations open yet (one opens with the first message)")
    return "\n".join(lines)


async def _interactive(client: Client) -> int:
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

