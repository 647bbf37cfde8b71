"""The chat's terminal driver: the pure editor (:mod:`.editing`) on a real terminal, under trio.

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
* the bytes go to :class:`~overlay.cli.chat.editing.EditLine` (cursor keys,
  history, completion); after each read the input line is redrawn from its
  ``render``.  Submitted lines that join the history are saved to the
  input-history file (:mod:`.input_history`) in a worker thread.
* :meth:`LineEditor.print_above` clears the input line, prints the text, and
  redraws the prompt and the partial input, so output never breaks the line
  being typed; a :class:`~overlay.cli.chat.screen.Transcript` counts the rows,
  so that :meth:`LineEditor.rewrite` can change a line printed earlier in place.

When stdin is not a terminal (a pipe, a file, a test), nothing is switched:
lines are read plainly, text is printed plainly without prompts, nothing is
rewritten (the caller prints a status line instead) and no history is kept.

Text from other people must never reach the terminal raw: :func:`printable`
turns control characters into visible escapes, so a message cannot move the
cursor, retitle the window or hide itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
import termios
from collections import deque
from collections.abc import Hashable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import trio

from overlay.cli.chat import input_history
from overlay.cli.chat.editing import MAX_LINE, Candidates, EditLine, Quit
from overlay.cli.chat.screen import CLEAR_LINE, Transcript, printable

__all__ = ["LineEditor", "printable"]

READ_SIZE = 4096
DEFAULT_COLUMNS = 80
DEFAULT_ROWS = 24


# --- the terminal glue -------------------------------------------------------------------------


class LineEditor:
    """Read lines from stdin while printing above them; use as ``async with LineEditor():``.

    On a terminal (stdin and stdout both ttys) the terminal mode is switched
    on entry and restored on exit; elsewhere lines are read and printed
    plainly.  :meth:`read_line` returns None once the user quits (Ctrl-C,
    Ctrl-D on an empty line, or the end of the input); :attr:`quit_reason`
    then says which.  ``history`` is the input-history file (None: recall
    only within this run); Tab completes ``commands`` and :attr:`names`.
    """

    def __init__(self, prompt: str = "> ", *, stdin_fd: int = 0,
                 output: TextIO | None = None, history: Path | None = None,
                 commands: Iterable[str] = ()) -> None:
        self._prompt = prompt
        self._fd = stdin_fd
        self._out = output if output is not None else sys.stdout
        self.tty = os.isatty(stdin_fd) and self._out.isatty()
        self._saved: list[Any] | None = None
        self._stream: trio.lowlevel.FdStream | None = None
        self._history_path = history
        self._buffer = EditLine(commands=commands)
        self._transcript = Transcript()
        self._lines: deque[str] = deque()
        self._partial = b""
        self.quit_reason: str | None = None

    # --- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> LineEditor:
        if self.tty:
            if self._history_path is not None:
                lines = await trio.to_thread.run_sync(input_history.load, self._history_path)
                self._buffer = EditLine(lines, commands=self._buffer.commands)
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

    @property
    def names(self) -> set[str]:
        """The contact names Tab completes; the caller keeps them current."""
        return self._buffer.names

    def print_above(self, text: str, key: Hashable | None = None) -> None:
        """Print ``text`` (one or more lines) without disturbing the line being typed.

        A ``key`` names the line for a later :meth:`rewrite`.
        """
        if self._saved is None:
            self._write(text + "\n")
            return
        self._transcript.printed(text, self._size()[0], key)
        self._write(CLEAR_LINE + text + "\n" + self._input_line())

    def rewrite(self, key: Hashable, text: str) -> bool:
        """Change the line printed with ``key`` to ``text`` where it stands on screen.

        False when that cannot be done exactly (not a terminal, scrolled off,
        wrapped, resized since): the caller then prints a status line instead.
        """
        if self._saved is None:
            return False
        columns, rows = self._size()
        moves = self._transcript.rewrite(key, text, columns, rows)
        if moves is None:
            return False
        self._write(CLEAR_LINE + moves + self._input_line())
        return True

    def _redraw(self) -> None:
        if self._saved is not None:
            self._write(self._input_line())

    def _input_line(self) -> str:
        return self._buffer.render(self._prompt, self._size()[0])

    def _size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self._out.fileno())
        except (OSError, ValueError):
            return DEFAULT_COLUMNS, DEFAULT_ROWS
        return size.columns or DEFAULT_COLUMNS, size.lines or DEFAULT_ROWS

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
                await self._keys(data)
            else:
                self._plain(data)
        return self._lines.popleft()

    async def _keys(self, data: bytes) -> None:
        for event in self._buffer.feed(data):
            if isinstance(event, Quit):
                self.quit_reason = event.reason
                self._write(CLEAR_LINE + self._input_line() + "\n")
                return
            if isinstance(event, Candidates):
                self.print_above("  ".join(event.names))
                continue
            # The typed line stays on screen, as the shell leaves a command.
            shown = self._prompt + printable(event.line)
            self._transcript.printed(shown, self._size()[0])
            self._write(CLEAR_LINE + shown + "\n")
            self._lines.append(event.line)
            recorded, self._buffer.recorded = self._buffer.recorded, None
            if recorded is not None and self._history_path is not None:
                await self._save_history()
        self._redraw()

    async def _save_history(self) -> None:
        assert self._history_path is not None
        saved = await trio.to_thread.run_sync(input_history.save, self._history_path,
                                              list(self._buffer.history))
        if not saved:
            self._history_path = None  # warned once: recall still works in this run

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

