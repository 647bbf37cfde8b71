"""A small line editor for interactive terminal programs that also print while you type.

Theory of operation.  A chat prints lines at any moment (a message arrives)
while the user is half-way through typing one.  With the terminal in its
normal (canonical) mode the kernel echoes and edits the line itself, so any
output lands in the middle of it and the user loses track of what they
typed.  So on a terminal this module takes the editing over:

* stdin's terminal is switched to a cbreak-like mode (no canonical editing,
  no echo, no signal keys, so Ctrl-C arrives as a byte) and *always* restored
  when :class:`LineEditor` exits, by an error, a cancellation or Ctrl-C
  included.  Output processing is left alone, so ``"\\n"`` still starts a new
  line at column 0.
* keys are read from a separate, non-blocking descriptor of the same terminal
  through :class:`trio.lowlevel.FdStream`, which is cancellable, unlike a
  thread stuck in ``read()``.  A *separate* open of the terminal (not a
  ``dup`` of fd 0) matters: non-blocking mode belongs to the open file
  description, which stdout usually shares with stdin, and a non-blocking
  stdout loses output under load.
* :class:`LineBuffer` is the pure part: bytes in, the edited line and
  completed lines out (UTF-8 decoded incrementally, escape sequences such as
  arrow keys swallowed).  It knows nothing of terminals or trio.
* :meth:`LineEditor.print_above` clears the input line (``\\r\\x1b[K``),
  prints the text, and redraws the prompt and the partial input, so output
  never breaks the line being typed.  Input longer than the terminal is wide
  scrolls horizontally instead of wrapping, because ``\\x1b[K`` clears only
  the last row of a wrapped line.

When stdin is not a terminal (a pipe, a file, a test), nothing is switched:
lines are read plainly and text is printed plainly, without prompts.

Text from other people must never reach the terminal raw: :func:`printable`
turns control characters into visible escapes, so a message cannot move the
cursor, retitle the window or hide itself.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import sys
import termios
import unicodedata
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

import trio

__all__ = ["LineBuffer", "LineEditor", "Quit", "Submit", "display_width", "printable"]

READ_SIZE = 4096
DEFAULT_COLUMNS = 80
MAX_LINE = 64_000
"""Characters the editor holds; more typed (or pasted) into one line is dropped."""

# Keys (as characters, after UTF-8 decoding).
CTRL_C = "\x03"
CTRL_D = "\x04"
BACKSPACES = ("\x7f", "\x08")
CTRL_L = "\x0c"
CTRL_U = "\x15"
CTRL_W = "\x17"
ESC = "\x1b"
ENTER = ("\r", "\n")
TAB = "\t"

CLEAR_LINE = "\r\x1b[K"


# --- the pure part --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submit:
    """Enter was pressed: ``line`` is what had been typed."""

    line: str


@dataclass(frozen=True, slots=True)
class Quit:
    """The user asked to leave: ``reason`` is ``"interrupt"`` (Ctrl-C) or ``"eof"`` (Ctrl-D)."""

    reason: str


class LineBuffer:
    """The line being typed, edited by the keys fed in; no I/O at all.

    ``feed(bytes)`` returns what completed (lines, a request to quit) in the
    order the keys came, and leaves the unfinished rest in :attr:`text`.
    Ctrl-D quits only on an empty line, as in a shell: a stray Ctrl-D in the
    middle of a message should not throw it away.
    """

    def __init__(self) -> None:
        self.text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._escape = ""
        """The escape sequence being swallowed, from its ESC; empty outside one."""

    def feed(self, data: bytes) -> list[Submit | Quit]:
        events: list[Submit | Quit] = []
        for char in self._decoder.decode(data):
            event = self._key(char)
            if event is not None:
                events.append(event)
        return events

    def clear(self) -> None:
        self.text = ""

    def _key(self, char: str) -> Submit | Quit | None:
        if self._escape:
            self._swallow(char)
            return None
        if char == ESC:
            self._escape = ESC
        elif char in ENTER:
            line, self.text = self.text, ""
            return Submit(line)
        elif char == CTRL_C:
            return Quit("interrupt")
        elif char == CTRL_D:
            if not self.text:
                return Quit("eof")
        elif char in BACKSPACES:
            self.text = self.text[:-1]
        elif char == CTRL_U:
            self.text = ""
        elif char == CTRL_W:
            self.text = self.text.rstrip(" ").rpartition(" ")[0]
            if self.text:
                self.text += " "
        elif char == TAB:
            self._insert(" ")
        elif char.isprintable() or char == " ":
            self._insert(char)
        # Any other control character (Ctrl-L included) changes nothing; the caller redraws.
        return None

    def _insert(self, char: str) -> None:
        if len(self.text) < MAX_LINE:
            self.text += char

    def _swallow(self, char: str) -> None:
        """Skip ``ESC [ params final``, ``ESC O x`` and ``ESC x`` (arrows, function keys, Alt)."""
        sequence = self._escape + char
        if len(sequence) == 2:
            self._escape = sequence if char in "[O" else ""
        elif sequence[1] == "O" or "\x40" <= char <= "\x7e" or len(sequence) > 32:
            self._escape = ""
        else:
            self._escape = sequence


def display_width(text: str) -> int:
    """Terminal cells ``text`` takes: wide (CJK, emoji) characters take two, combining none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _tail(text: str, cells: int) -> str:
    """The end of ``text`` that fits in ``cells``, marked with ``<`` when cut."""
    if display_width(text) <= cells:
        return text
    kept: list[str] = []
    used = 1  # the "<"
    for char in reversed(text):
        width = display_width(char)
        if used + width > cells:
            break
        kept.append(char)
        used += width
    return "<" + "".join(reversed(kept))


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters become visible escapes.

    Newlines stay (multi-line messages) and tabs become a space; ESC, CR, C1
    controls and the like become ``\\x1b``-style escapes, so that text from
    someone else can neither drive the terminal nor overwrite what is on it.
    """
    out: list[str] = []
    for char in text:
        if char == "\n":
            out.append(char)
        elif char == "\t":
            out.append(" ")
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") and char != "\u200d":
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


# --- the terminal glue -------------------------------------------------------------------------


class LineEditor:
    """Read lines from stdin while printing above them; use as ``async with LineEditor():``.

    On a terminal (stdin and stdout both ttys) the terminal mode is switched
    on entry and restored on exit; elsewhere lines are read and printed
    plainly.  :meth:`read_line` returns None once the user quits (Ctrl-C,
    Ctrl-D on an empty line, or the end of the input); :attr:`quit_reason`
    then says which.
    """

    def __init__(self, prompt: str = "> ", *, stdin_fd: int = 0,
                 output: TextIO | None = None) -> None:
        self._prompt = prompt
        self._fd = stdin_fd
        self._out = output if output is not None else sys.stdout
        self.tty = os.isatty(stdin_fd) and self._out.isatty()
        self._saved: list[Any] | None = None
        self._stream: trio.lowlevel.FdStream | None = None
        self._buffer = LineBuffer()
        self._lines: deque[str] = deque()
        self._partial = b""
        self.quit_reason: str | None = None

    # --- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> LineEditor:
        if self.tty:
            self._saved = termios.tcgetattr(self._fd)
            try:
                self._stream = trio.lowlevel.FdStream(self._open_terminal())
                termios.tcsetattr(self._fd, termios.TCSANOW, self._editing_mode(self._saved))
            except BaseException:
                await self._restore()
                raise
            self._redraw()
        else:
            self._stream = trio.lowlevel.FdStream(os.dup(self._fd))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._restore()

    async def _restore(self) -> None:
        """Put the terminal back as it was and close the reading descriptor; idempotent."""
        saved, self._saved = self._saved, None
        if saved is not None:
            # A terminal that is gone (hung up) has nothing left to restore or clear.
            with contextlib.suppress(OSError, ValueError):
                self._write(CLEAR_LINE)  # no prompt left behind for the shell's to follow
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self._fd, termios.TCSADRAIN, saved)
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    def _open_terminal(self) -> int:
        """A descriptor of our own on stdin's terminal (see the module docstring for why)."""
        try:
            return os.open(os.ttyname(self._fd), os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            return os.dup(self._fd)

    @staticmethod
    def _editing_mode(saved: list[Any]) -> list[Any]:
        """No line editing, echo or signal keys; one byte is enough for a read to return."""
        mode = list(saved)
        mode[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
        cc = list(mode[6])
        cc[termios.VMIN] = 1
        cc[termios.VTIME] = 0
        mode[6] = cc
        return mode

    # --- output ---------------------------------------------------------------------------

    @property
    def prompt(self) -> str:
        return self._prompt

    @prompt.setter
    def prompt(self, prompt: str) -> None:
        self._prompt = prompt
        self._redraw()

    def print_above(self, text: str) -> None:
        """Print ``text`` (one or more lines) without disturbing the line being typed."""
        if self._saved is None:
            self._write(text + "\n")
            return
        self._write(CLEAR_LINE + text + "\n" + self._input_line())

    def _redraw(self) -> None:
        if self._saved is not None:
            self._write(CLEAR_LINE + self._input_line())

    def _input_line(self) -> str:
        room = max(self._columns() - 1 - display_width(self._prompt), 8)
        return self._prompt + _tail(self._buffer.text, room)

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self._out.fileno()).columns
        except (OSError, ValueError):
            return DEFAULT_COLUMNS
        return columns or DEFAULT_COLUMNS

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    # --- input ----------------------------------------------------------------------------

    async def read_line(self) -> str | None:
        """The next line typed (without its line end), or None once the user quits."""
        while not self._lines:
            if self.quit_reason is not None or self._stream is None:
                return None
            data = await self._stream.receive_some(READ_SIZE)
            if not data:
                self._end_of_input()
            elif self._saved is not None:
                self._keys(data)
            else:
                self._plain(data)
        return self._lines.popleft()

    def _keys(self, data: bytes) -> None:
        for event in self._buffer.feed(data):
            if isinstance(event, Quit):
                self.quit_reason = event.reason
                self._write("\n")
                return
            # The typed line stays on screen, as the shell leaves a command.
            self._write(CLEAR_LINE + self._prompt + event.line + "\n")
            self._lines.append(event.line)
        self._redraw()

    def _plain(self, data: bytes) -> None:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            self._lines.append(line.decode("utf-8", errors="replace").removesuffix("\r"))
        if len(self._partial) > 4 * MAX_LINE:
            self._partial = b""  # no line end in sight: not text meant for us

    def _end_of_input(self) -> None:
        if self._partial:
            self._lines.append(self._partial.decode("utf-8", errors="replace"))
            self._partial = b""
        self.quit_reason = "eof"

