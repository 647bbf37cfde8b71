"""The chat's line editor, pure: bytes from the keyboard in, the edited line and events out.

Theory of operation.  :class:`KeyDecoder` turns the bytes a terminal sends
into keys: text (UTF-8, decoded incrementally, so a character split across
two reads is whole) and :class:`Key` for editing keys, including the escape
sequences of the cursor keys (``ESC [ C``, ``ESC O C``, ``ESC [ 1 ; 5 C``...).
:class:`EditLine` applies keys to the line being typed, with a cursor, the
kill keys of readline (Ctrl-U, Ctrl-K, Ctrl-W), a history browsed with
Up/Down, and Tab completion of ``/commands`` (the first word) and contact
names (any other word): the first Tab completes the common prefix, a second
Tab in a row lists the candidates (:class:`Candidates`).  :meth:`EditLine.render`
is what the screen shows: the prompt, the part of the line that fits, and the
cursor put back where it belongs.

Nothing here reads a terminal, a clock or a file (tests/test_purity.py): the
trio driver (:mod:`overlay.cli.chat.terminal`) feeds bytes, writes what
``render`` returns, and persists the history.  So every key sequence can be
tested without a terminal (tests/cli/test_editing.py drives it with hypothesis
against a model editor).
"""

from __future__ import annotations

import codecs
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from overlay.cli.chat.screen import CLEAR_LINE, display_width, fit_around

__all__ = ["Candidates", "EditLine", "Key", "KeyDecoder", "Quit", "Submit"]

MAX_LINE = 64_000
"""Characters the editor holds; more typed (or pasted) into one line is dropped."""
HISTORY_SIZE = 500
MAX_HISTORY_LINE = 4_000
"""Longer lines are sent but not remembered: the history file stays small."""


class Key(enum.Enum):
    LEFT = "left"
    RIGHT = "right"
    HOME = "home"
    END = "end"
    UP = "up"
    DOWN = "down"
    BACKSPACE = "backspace"
    DELETE = "delete"
    KILL_START = "kill-start"
    """Ctrl-U: delete from the start of the line to the cursor."""
    KILL_END = "kill-end"
    """Ctrl-K: delete from the cursor to the end of the line."""
    KILL_WORD = "kill-word"
    """Ctrl-W: delete the word before the cursor."""
    TAB = "tab"
    ENTER = "enter"
    EOF = "eof"
    """Ctrl-D: leave on an empty line, else delete the character under the cursor."""
    INTERRUPT = "interrupt"
    REDRAW = "redraw"


CONTROL_KEYS = {
    "\x01": Key.HOME, "\x02": Key.LEFT, "\x03": Key.INTERRUPT, "\x04": Key.EOF,
    "\x05": Key.END, "\x06": Key.RIGHT, "\x08": Key.BACKSPACE, "\x09": Key.TAB,
    "\x0a": Key.ENTER, "\x0b": Key.KILL_END, "\x0c": Key.REDRAW, "\x0d": Key.ENTER,
    "\x0e": Key.DOWN, "\x10": Key.UP, "\x15": Key.KILL_START, "\x17": Key.KILL_WORD,
    "\x7f": Key.BACKSPACE,
}
ESCAPE_FINALS = {"A": Key.UP, "B": Key.DOWN, "C": Key.RIGHT, "D": Key.LEFT,
                 "H": Key.HOME, "F": Key.END}
TILDE_KEYS = {"1": Key.HOME, "7": Key.HOME, "4": Key.END, "8": Key.END, "3": Key.DELETE}
ESC = "\x1b"
MAX_ESCAPE = 32


class KeyDecoder:
    """Bytes from a terminal in, keys out; unknown escape sequences are swallowed whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._escape = ""
        """The escape sequence being read, from its ESC; empty outside one."""

    def feed(self, data: bytes) -> list[str | Key]:
        keys: list[str | Key] = []
        for char in self._decoder.decode(data):
            key = self._char(char)
            if key is not None:
                keys.append(key)
        return keys

    def _char(self, char: str) -> str | Key | None:
        if self._escape:
            return self._escaped(char)
        if char == ESC:
            self._escape = ESC
            return None
        if char in CONTROL_KEYS:
            return CONTROL_KEYS[char]
        if char.isprintable() or char == " ":
            return char
        return None  # any other control character does nothing

    def _escaped(self, char: str) -> Key | None:
        """``ESC [ params final`` (CSI), ``ESC O x`` (SS3) and ``ESC x`` (Alt-x, ignored)."""
        sequence = self._escape + char
        if len(sequence) == 2:
            self._escape = sequence if char in "[O" else ""
            return None
        if sequence[1] == "O":
            self._escape = ""
            return ESCAPE_FINALS.get(char)
        if "\x40" <= char <= "\x7e":
            self._escape = ""
            if char == "~":
                return TILDE_KEYS.get(sequence[2:-1].split(";")[0])
            return ESCAPE_FINALS.get(char)
        self._escape = sequence if len(sequence) < MAX_ESCAPE else ""
        return None


@dataclass(frozen=True, slots=True)
class Submit:
    """Enter was pressed: ``line`` is what had been typed."""

    line: str


@dataclass(frozen=True, slots=True)
class Quit:
    """The user asked to leave: ``reason`` is ``"interrupt"`` (Ctrl-C) or ``"eof"`` (Ctrl-D)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Candidates:
    """Tab twice with several completions: the driver lists them above the line."""

    names: tuple[str, ...]


Event = Submit | Quit | Candidates


def common_prefix(words: Iterable[str]) -> str:
    listed = list(words)
    if not listed:
        return ""
    first, last = min(listed), max(listed)
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    return first[:length]


class EditLine:
    """The line being typed, its cursor and its history; keys in, events out.

    ``commands`` and ``names`` are what Tab completes (the driver keeps
    ``names`` to the current contacts).  ``history`` is oldest first; a
    submitted line joins it unless it is blank, too long or the same as the
    last one, and :attr:`recorded` then names it for the driver to persist.
    """

    def __init__(self, history: Iterable[str] = (), *, history_size: int = HISTORY_SIZE,
                 commands: Iterable[str] = ()) -> None:
        self.text = ""
        self.cursor = 0
        """Index into :attr:`text`: the cursor stands before ``text[cursor]``."""
        self.history_size = history_size
        self.history: list[str] = [line for line in history if self._memorable(line)]
        del self.history[:-history_size]
        self.commands: list[str] = sorted(commands)
        self.names: set[str] = set()
        self.recorded: str | None = None
        self._browsing = len(self.history)
        """Index of the history entry shown; ``len(history)`` is the line being written."""
        self._draft = ""
        self._last: str | Key | None = None
        self._decoder = KeyDecoder()

    def feed(self, data: bytes) -> list[Event]:
        """Apply the keys in ``data``; a run of text is inserted at once, so that a
        pasted line costs one copy of the buffer, not one per character."""
        events: list[Event] = []
        run: list[str] = []
        for key in [*self._decoder.feed(data), None]:
            if isinstance(key, str):
                run.append(key)
                continue
            if run:
                self.press("".join(run))
                run.clear()
            event = None if key is None else self.press(key)
            if event is not None:
                events.append(event)
        return events

    def press(self, key: str | Key) -> Event | None:
        """Apply one key (or a run of text: a str of any length)."""
        last, self._last = self._last, key
        if isinstance(key, str):
            self._insert(key)
            return None
        if key is Key.ENTER:
            return self._submit()
        if key is Key.INTERRUPT:
            return Quit("interrupt")
        if key is Key.EOF and not self.text:
            return Quit("eof")
        if key is Key.TAB:
            return self._complete(again=last is Key.TAB)
        self._edit(key)
        return None

    def _edit(self, key: Key) -> None:
        text, cursor = self.text, self.cursor
        if key is Key.LEFT:
            self.cursor = max(cursor - 1, 0)
        elif key is Key.RIGHT:
            self.cursor = min(cursor + 1, len(text))
        elif key is Key.HOME:
            self.cursor = 0
        elif key is Key.END:
            self.cursor = len(text)
        elif key is Key.BACKSPACE and cursor > 0:
            self.text, self.cursor = text[:cursor - 1] + text[cursor:], cursor - 1
        elif key in (Key.DELETE, Key.EOF):
            self.text = text[:cursor] + text[cursor + 1:]
        elif key is Key.KILL_START:
            self.text, self.cursor = text[cursor:], 0
        elif key is Key.KILL_END:
            self.text = text[:cursor]
        elif key is Key.KILL_WORD:
            start = len(text[:cursor].rstrip(" "))
            while start > 0 and text[start - 1] != " ":
                start -= 1
            self.text, self.cursor = text[:start] + text[cursor:], start
        elif key is Key.UP and self._browsing > 0:
            if self._browsing == len(self.history):
                self._draft = text
            self._browsing -= 1
            self._show(self.history[self._browsing])
        elif key is Key.DOWN and self._browsing < len(self.history):
            self._browsing += 1
            at_end = self._browsing == len(self.history)
            self._show(self._draft if at_end else self.history[self._browsing])
        # REDRAW changes nothing: the driver redraws after every read anyway.

    def _show(self, line: str) -> None:
        self.text, self.cursor = line, len(line)

    def _insert(self, chars: str) -> None:
        chars = chars[:max(MAX_LINE - len(self.text), 0)]
        self.text = self.text[:self.cursor] + chars + self.text[self.cursor:]
        self.cursor += len(chars)

    def _submit(self) -> Submit:
        line = self.text
        self.recorded = None
        if self._memorable(line) and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-self.history_size]
            self.recorded = line
        self.text, self.cursor, self._draft = "", 0, ""
        self._browsing = len(self.history)
        return Submit(line)

    @staticmethod
    def _memorable(line: str) -> bool:
        return bool(line.strip()) and len(line) <= MAX_HISTORY_LINE and "\n" not in line

    # --- completion --------------------------------------------------------------------------

    def candidates(self) -> list[str]:
        """What the word before the cursor could be: a command first, a contact name after."""
        start = self._word_start()
        word = self.text[start:self.cursor]
        pool: Iterable[str] = self.commands if start == 0 and word.startswith("/") else self.names
        return sorted(name for name in pool if name.startswith(word))

    def _word_start(self) -> int:
        start = self.cursor
        while start > 0 and self.text[start - 1] != " ":
            start -= 1
        return start

    def _complete(self, *, again: bool) -> Candidates | None:
        found = self.candidates()
        if not found:
            return None
        typed = self.cursor - self._word_start()
        if len(found) == 1:
            rest = found[0][typed:]
            following = self.text[self.cursor:self.cursor + 1]
            self._insert(rest if following == " " else rest + " ")
            if following == " ":
                self.cursor += 1
            return None
        prefix = common_prefix(found)
        if len(prefix) > typed:
            self._insert(prefix[typed:])
            return None
        return Candidates(tuple(found)) if again else None

    # --- the screen ------------------------------------------------------------------------

    def render(self, prompt: str, columns: int) -> str:
        """What redraws the input line: clear it, show prompt and line, place the cursor.

        The line scrolls sideways instead of wrapping (erase-line clears only
        the row the cursor is on), keeping the cursor in view.
        """
        room = max(columns - 1 - display_width(prompt), 8)
        shown, column = fit_around(self.text, self.cursor, room)
        column += display_width(prompt)
        back = f"\r\x1b[{column}C" if column else "\r"
        return CLEAR_LINE + prompt + shown + back
