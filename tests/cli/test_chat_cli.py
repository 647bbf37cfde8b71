"""`overlay chat` as real processes: interactive on a pseudo-terminal, one-shot, JSON lines.

One directory server, two supernodes and the accounts alice and bob (contacts
of each other) are shared by the module; each test starts its own chats.
"""

from __future__ import annotations

import codecs
import fcntl
import json
import os
import re
import select
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytest

from overlay.cli.chat.screen import printable
from overlay.proto.codec import pack
from overlay.state import load_identity
from tests.cli.test_roles_cli import PASSWORD, account, start_system
from tests.procs import Processes, overlay_command, run_overlay, short_tempdir, wait_until

WAIT = 20.0
ESCAPE = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
TIME = r"\d\d:\d\d"
"""The local time at the head of every chat line."""
UP, LEFT, DELETE = "\x1b[A", "\x1b[D", "\x1b[3~"


@dataclass
class Network:
    root: Path
    directory: list[str]

    def chat_args(self, user: str) -> list[str]:
        return ["chat", "--user", user, "--state", str(self.root / user), *self.directory]

    def history(self, user: str, text: str) -> str | None:
        """The state of the message ``text`` in ``user``'s chat history."""
        with sqlite3.connect(self.root / user / f"chat-{user}.sqlite3") as db:
            row = db.execute("SELECT state FROM messages WHERE text = ?", (text,)).fetchone()
        return None if row is None else str(row[0])

    def presence(self, user: str, contact: str) -> str | None:
        listed = run_overlay("contacts", "list", "--json", "--state", str(self.root / user))
        for row in json.loads(listed.stdout) if listed.returncode == 0 else []:
            if row["username"] == contact and row["presence"] is not None:
                return str(row["presence"]["status"])
        return None


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    root = short_tempdir()
    procs = Processes(root)
    try:
        directory = start_system(procs)
        yield Network(root, directory)
    finally:
        procs.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- a chat on a pseudo-terminal -------------------------------------------------------------


class Terminal:
    """``overlay chat`` with a pty for stdin and stdout, and a tiny model of its screen."""

    def __init__(self, network: Network, user: str) -> None:
        self.user = user
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.initial_mode = termios.tcgetattr(self.slave)
        self.log_path = network.root / f"{user}-chat.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(overlay_command(*network.chat_args(user)),
                                     stdin=self.slave, stdout=self.slave, stderr=self._log,
                                     start_new_session=True)
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.output = ""
        self._mark = 0

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.output += self._decoder.decode(os.read(self.master, 65536))
            except OSError:
                time.sleep(timeout)

    def text(self) -> str:
        """The output without escapes, every redraw (``\\r``) on a line of its own."""
        return ESCAPE.sub("", self.output.replace("\r", "\n"))

    def expect(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """Wait for ``pattern`` (a multi-line regex) in the output after the last match."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.text(), self._mark)
            if found is not None:
                self._mark = found.end()
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.user}'s screen never showed {pattern!r}:\n"
                                     f"{self.text()[self._mark:]}\n--- stderr:\n{self.log}")
            self._read(0.05)

    def settle(self, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(0.05)

    def screen(self) -> list[str]:
        """The lines as a terminal would show them: ``\\r``, erase-line, the cursor
        moves the chat makes (up, down, right, left) and overwrites applied; wide
        characters count as one column here, so test lines that move the cursor are ASCII."""
        lines = [""]
        row = col = 0
        text = self.output
        i = 0
        while i < len(text):
            char = text[i]
            escape = ESCAPE.match(text, i)
            if escape is not None:
                count, final = int(escape.group(1) or 1), escape.group(2)
                if final == "K":
                    lines[row] = lines[row][:col]
                elif final == "A":
                    row = max(row - count, 0)
                elif final == "B":
                    row += count
                    lines += [""] * (row + 1 - len(lines))
                elif final == "C":
                    col += count
                elif final == "D":
                    col = max(col - count, 0)
                i = escape.end()
                continue
            if char == "\r":
                col = 0
            elif char == "\n":
                row += 1
                if row == len(lines):
                    lines.append("")
            elif char == "\b":
                col = max(col - 1, 0)
            else:
                line = lines[row].ljust(col)
                lines[row] = line[:col] + char + line[col + 1:]
                col += 1
            i += 1
        self.cursor_row, self.cursor_col = row, col
        return lines

    def current_line(self) -> str:
        lines = self.screen()
        return lines[self.cursor_row]

    def cursor(self) -> tuple[str, int]:
        """The input line and the cursor's column on it."""
        lines = self.screen()
        return lines[self.cursor_row], self.cursor_col

    def wait_line(self, wanted: str) -> None:
        wait_until(lambda: (self._read(0.05), self.current_line() == wanted)[1],
                   f"{self.user}'s input line to be {wanted!r}")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    @property
    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def wait_exit(self) -> int:
        try:
            return self.proc.wait(WAIT)
        finally:
            self.settle(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        os.close(self.master)
        os.close(self.slave)
        self._log.close()


@pytest.fixture
def terminals(network: Network) -> Iterator[dict[str, Terminal]]:
    opened: dict[str, Terminal] = {}
    try:
        for user in ("alice", "bob"):
            opened[user] = Terminal(network, user)
        yield opened
    finally:
        for terminal in opened.values():
            terminal.close()


def test_interactive_chat_on_a_terminal(terminals: dict[str, Terminal]) -> None:
    alice, bob = terminals["alice"], terminals["bob"]
    for me, other in ((alice, bob), (bob, alice)):
        me.expect(r"/help lists the commands")
        me.expect(rf"^contacts: {other.user} \(")

    # One line per message: "[sent, ...]" is rewritten in place to "[delivered in ...]".
    alice.type("/msg bob hello\r")
    alice.expect(rf"^{TIME} you -> bob: hello  \[sent, relayed via [0-9a-f]{{8}}")
    alice.expect(rf"^{TIME} you -> bob: hello  \[delivered in [0-9.]+ ms\]$")
    bob.expect(rf"^{TIME} alice: hello$")
    alice.settle()
    shown = [line for line in alice.screen() if "bob: hello" in line]
    assert len(shown) == 1 and re.fullmatch(
        rf"{TIME} you -> bob: hello  \[delivered in [0-9.]+ ms\]", shown[0]), shown
    assert alice.current_line() == "> "

    # A message arriving while bob is typing leaves his partial line as it was.
    bob.type("/msg alice part")
    bob.wait_line("> /msg alice part")
    alice.type("/msg bob second\r")
    bob.expect(rf"^{TIME} alice: second$")
    bob.settle()
    lines = bob.screen()
    assert lines[bob.cursor_row] == "> /msg alice part"
    assert re.fullmatch(rf"{TIME} alice: second", lines[bob.cursor_row - 1])
    bob.type("ial reply\r")
    alice.expect(rf"^{TIME} bob: partial reply$")

    editing_keys(alice, bob)
    commands(alice, bob)

    alice.type("/quit\r")
    assert alice.wait_exit() == 0, alice.log
    bob.expect(rf"^{TIME} \* alice is offline$")
    bob.type("\x03")  # Ctrl-C leaves as cleanly as /quit
    assert bob.wait_exit() == 0, bob.log
    for terminal in (alice, bob):
        assert termios.tcgetattr(terminal.slave) == terminal.initial_mode, "mode not restored"
        assert "Traceback" not in terminal.log, terminal.log


def editing_keys(alice: Terminal, bob: Terminal) -> None:
    """A selected conversation; cursor keys, deleting keys, history recall and UTF-8."""
    alice.type("/to bob\r")
    alice.wait_line("[bob]> ")
    alice.type("typoo\x7f\r")
    bob.expect(rf"^{TIME} alice: typo$")
    alice.type("wrld" + LEFT * 3 + "o")  # Left moves the cursor: the o goes after the w
    alice.wait_line("[bob]> world")
    assert alice.cursor() == ("[bob]> world", len("[bob]> wo"))
    alice.type("\x01hello \x05!\r")  # Ctrl-A, Ctrl-E
    bob.expect(rf"^{TIME} alice: hello world!$")
    alice.type("abc" + LEFT * 2 + DELETE + "\x1b[F-\x1b[Hx\r")  # Delete, End, Home
    bob.expect(rf"^{TIME} alice: xac-$")
    alice.type("keep this one" + LEFT * 4 + "\x0b\x17that\r")  # Ctrl-K, Ctrl-W
    bob.expect(rf"^{TIME} alice: keep that$")

    # Up recalls earlier lines (newest first), Down goes back towards the draft.
    alice.type("draft" + UP)
    alice.wait_line("[bob]> keep that")
    alice.type(UP + UP + "\x1b[B")
    alice.wait_line("[bob]> xac-")
    alice.type("\x1b[B\x1b[B")
    alice.wait_line("[bob]> draft")
    alice.type("\x15" + UP * 2 + "\r")
    bob.expect(rf"^{TIME} alice: xac-$")

    alice.type("h\u00e9llo \u2713 \u4e16\u754c\r")
    bob.expect(f"^{TIME} alice: h\u00e9llo \u2713 \u4e16\u754c$")
    alice.expect("you -> bob: h\u00e9llo \u2713 \u4e16\u754c  \\[delivered in ")


def commands(alice: Terminal, bob: Terminal) -> None:
    # Tab completes a command, then a contact's name; twice, it lists the candidates.
    alice.type("/hi\t")
    alice.wait_line("[bob]> /history ")
    alice.type("b\t")
    alice.wait_line("[bob]> /history bob ")
    alice.type("\r")
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    alice.expect(rf"^{stamp}  you -> bob: hello  \[delivered in [0-9.]+ ms\]$")
    alice.expect(rf"^{stamp}  bob: partial reply$")
    alice.type("/a\t\t")
    alice.expect(r"^/accept  /add$")
    alice.wait_line("[bob]> /a")
    alice.type("\x15/contacts\r")
    alice.expect(r"^USERNAME\s+STATE\s+PRESENCE\s+HOME$")
    alice.expect(r"^bob\s+accepted\s+online\s+[0-9a-f]{8}$")
    alice.type("/status\r")
    alice.expect(r"^alice \([0-9a-f]{8}\): home supernode [0-9a-f]{8}, standby [0-9a-f]{8}; "
                 r"not reachable")
    # Both punch (one outgoing port, listening on it): on 127.0.0.1 their conversation
    # has usually moved to a direct link by now, but when is not this test's business.
    alice.expect(r"^  bob: (relayed via [0-9a-f]{8}|direct for \d+ s)")
    bob.type("/status\r")
    bob.expect(r"^  alice: (relayed via [0-9a-f]{8}|direct for \d+ s)")
    alice.type("/frobnicate\r")
    alice.expect(r"^! unknown command /frobnicate: /help lists the commands$")
    alice.type("/msg\r")
    alice.expect(r"^! usage: /msg NAME TEXT$")
    alice.type("/help\r")
    alice.expect(r"^  /quit ")


def test_typed_lines_are_recalled_in_the_next_run(network: Network) -> None:
    """The input history is STATE/chat-USER.input-history, the owner's only."""
    path = network.root / "alice" / "chat-alice.input-history"
    path.unlink(missing_ok=True)
    first = Terminal(network, "alice")
    try:
        first.expect(r"/help lists the commands")
        first.type("/to bob\r/help\r")
        first.expect(r"^  /quit ")
        first.type("/quit\r")
        assert first.wait_exit() == 0, first.log
    finally:
        first.close()
    assert path.read_text() == "/to bob\n/help\n/quit\n"
    assert path.stat().st_mode & 0o777 == 0o600
    again = Terminal(network, "alice")
    try:
        again.expect(r"/help lists the commands")
        again.type(UP * 2)
        again.wait_line("> /help")
        again.type("\x03")
        assert again.wait_exit() == 0, again.log
    finally:
        again.close()


# --- scripted: one message, JSON lines ------------------------------------------------------


class JsonChat:
    """``overlay chat --json`` with its stdout read line by line."""

    def __init__(self, network: Network, user: str) -> None:
        self.log_path = network.root / f"{user}-json.log"
        self._log: TextIO = self.log_path.open("w")
        self.proc = subprocess.Popen(overlay_command(*network.chat_args(user), "--json"),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log)
        self.events: list[dict[str, Any]] = []
        self._partial = b""

    def expect(self, **fields: Any) -> dict[str, Any]:
        """The first event (seen or to come) with these fields."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()  # raw reads: select() cannot see a file's buffer
        deadline = time.monotonic() + WAIT
        while True:
            for event in self.events:
                if all(event.get(key) == value for key, value in fields.items()):
                    return event
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            data = os.read(fd, 65536) if ready else b""
            if not data:
                raise AssertionError(f"no event {fields} in {self.events}:\n"
                                     f"{self.log_path.read_text()}")
            *lines, self._partial = (self._partial + data).split(b"\n")
            self.events += [json.loads(line) for line in lines]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(WAIT)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        self._log.close()


def one_shot(network: Network, *args: str, stdin: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(overlay_command(*network.chat_args("alice"), "--to", "bob", *args),
                          input=stdin, capture_output=True, text=True, timeout=60, check=False)


def test_one_shot_messages_json_events_and_offline_delivery(network: Network) -> None:
    bob = JsonChat(network, "bob")
    alice: JsonChat | None = None
    try:
        ready = bob.expect(event="ready")
        assert ready["user"] == "bob" and ready["home"] and ready["reachable"] is False

        sent = one_shot(network, "--message", "hi")
        assert sent.returncode == 0, sent.stderr
        assert re.fullmatch(r"delivered to bob: hi \([0-9.]+ ms\)\n", sent.stdout), sent.stdout
        got = bob.expect(event="message", text="hi")
        assert got["peer"] == "alice" and len(got["id"]) == 32 and got["path"]
        bob.expect(event="presence", peer="alice")
        piped = one_shot(network, stdin="from a pipe\n")
        assert piped.returncode == 0, piped.stderr
        bob.expect(event="message", text="from a pipe")
        assert bob.stop() == 0

        wait_until(lambda: network.presence("alice", "bob") == "offline", "bob to be offline")
        late = one_shot(network, "--message", "while you were away", "--timeout", "2")
        assert late.returncode == 1, late.stdout
        assert late.stderr.count("\n") == 1, late.stderr
        assert late.stderr.startswith("overlay chat: not delivered within 2 s (queued: bob is "
                                      "offline); it stays queued"), late.stderr
        assert network.history("alice", "while you were away") == "queued"

        bob = JsonChat(network, "bob")  # bob comes back; alice's next run delivers
        bob.expect(event="ready")
        alice = JsonChat(network, "alice")
        assert alice.expect(event="ready")["pending"] >= 1
        alice.expect(event="delivered", peer="bob", text="while you were away")
        bob.expect(event="message", peer="alice", text="while you were away")
        assert alice.stop() == 0
        assert network.history("alice", "while you were away") == "delivered"
    finally:
        bob.close()
        if alice is not None:
            alice.close()


def test_one_shot_refusals(network: Network) -> None:
    stranger = subprocess.run(
        overlay_command(*network.chat_args("alice"), "--to", "nobody", "--message", "hi"),
        capture_output=True, text=True, timeout=60, check=False)
    assert stranger.returncode == 1
    assert stranger.stderr == ("overlay chat: nobody is not your contact (ask first: "
                               "overlay contacts add nobody)\n")
    empty = one_shot(network, "--message", "   ")
    assert (empty.returncode, empty.stderr) == (1, "overlay chat: the message is empty\n")
    no_to = run_overlay(*network.chat_args("alice"), "--message", "hi")
    assert no_to.returncode == 2 and "--message needs --to" in no_to.stderr
    both = run_overlay(*network.chat_args("alice"), "--to", "bob", "--json")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert run_overlay("chat", "--help").returncode == 0


# --- the editor's pure part: tests/cli/test_editing.py; pipes ---------------------------------


def test_text_from_others_cannot_drive_the_terminal() -> None:
    assert printable("hi\x1b]0;owned\x07\r\n\tx\u202e") == "hi\\x1b]0;owned\\x07\\r\n x\\u202e"


def test_piped_commands_print_plainly(network: Network) -> None:
    piped = subprocess.run(overlay_command(*network.chat_args("alice")),
                           input="/contacts\n/frobnicate\n/msg alice me\n", capture_output=True,
                           text=True, timeout=60, check=False)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stdout and "\r" not in piped.stdout
    assert re.search(r"^bob\s+accepted\s+\w+", piped.stdout, re.M), piped.stdout
    assert "! unknown command /frobnicate" in piped.stdout
    assert "! that is you\n" in piped.stdout


# --- hostile senders (issue 11: items 3 and 7) -------------------------------------------------


def hostile_send(network: Network, user: str, to: dict[str, Any], text: str) -> None:
    """``tests/cli/chat_sender.py``: a sealed message from ``user`` to bob, no questions asked."""
    server, key = network.directory[1], network.directory[3]
    sent = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("chat_sender.py")), "--server", server,
         "--server-key", key, "--user", user, "--password", PASSWORD, "--to-user", "bob",
         "--to-node", to["node_id"], "--to-key", to["key"], "--to-home", to["home"],
         "--text", text, "--state", str(network.root / user)],
        capture_output=True, text=True, timeout=60, check=False)
    assert sent.returncode == 0 and '"sent"' in sent.stdout, sent.stderr


def test_hostile_messages_leave_the_chat_up_and_are_refused(network: Network) -> None:
    """A 70 KB message from a contact, a stranger's and an ex-contact's sealed messages:
    bob's `overlay chat` reports each in one line, stores none, and goes on."""
    account(network.root, "carol", "register", *network.directory)
    account(network.root, "carol", "login", *network.directory)
    bob = JsonChat(network, "bob")
    alice = JsonChat(network, "alice")
    try:
        ready = bob.expect(event="ready")
        to = {"node_id": ready["node_id"], "home": ready["home"],
              "key": load_identity(network.root / "bob").public_key.hex()}
        alice.expect(event="ready")

        # Item 3: over the 65,535-byte limit of a chat envelope, through alice's node.
        big = network.root / "big.bin"
        big.write_bytes(pack([1, "m", b"x" * 70_000, b""]))
        sent = run_overlay("send", "--state", str(network.root / "alice"), "bob",
                           "--file", str(big))
        assert sent.returncode == 0, sent.stderr
        rejected = bob.expect(event="rejected")
        assert "not a chat envelope" in rejected["detail"], rejected
        assert "\n" not in rejected["detail"]
        assert alice.stop() == 0

        # Item 7: carol was never bob's contact.
        hostile_send(network, "carol", to, "hello from a stranger")
        refused = bob.expect(event="rejected", peer="carol")
        assert "carol, who is not your contact" in refused["detail"], refused

        # ...and alice no longer is one once bob removes her.
        removed = run_overlay("contacts", "remove", "alice", "--state", str(network.root / "bob"))
        assert removed.returncode == 0, removed.stderr
        hostile_send(network, "alice", to, "hello from an ex")
        refused = bob.expect(event="rejected", peer="alice")
        assert "alice, who is not your contact" in refused["detail"], refused

        assert bob.proc.poll() is None, "bob's chat is still up"
        assert [e for e in bob.events if e["event"] == "message"] == []
        for text in ("hello from a stranger", "hello from an ex"):
            assert network.history("bob", text) is None
        assert bob.stop() == 0
        assert "Traceback" not in bob.log_path.read_text()
    finally:
        bob.close()
        alice.close()
        # Other tests of this module need alice and bob as contacts.
        run_overlay("contacts", "add", "bob", "--state", str(network.root / "alice"))
        run_overlay("contacts", "accept", "alice", "--state", str(network.root / "bob"))
