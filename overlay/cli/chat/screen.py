"""What the chat puts on a terminal, pure: widths, safe text, and which row holds which line.

Theory of operation.  The chat prints lines above the line being typed, and
some of them change later: a message's ``[sent]`` becomes ``[delivered]``
when the receipt comes.  Rather than print a second line, the driver moves
the cursor up to the message's row and rewrites it.  For that it must know
how many rows were printed since: :class:`Transcript` counts the rows every
printed text takes at the terminal's width (wide characters take two cells,
a long line wraps onto several rows) and remembers the row of each keyed
line.  A rewrite is done only when it is certainly right: the line and its
new text are one row each, the terminal's width is the one it was printed
at (a resize reflows the screen), and the row is still on screen; otherwise
:meth:`Transcript.rewrite` answers None and the caller prints a short status
line instead.

:func:`printable` keeps text from other people from driving the terminal.
No I/O here (tests/test_purity.py); :mod:`overlay.cli.chat.terminal` writes.
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["CLEAR_LINE", "Transcript", "display_width", "fit_around", "printable"]

CLEAR_LINE = "\r\x1b[K"
KEPT_LINES = 256
"""Keyed lines remembered for a rewrite; older ones get a status line instead."""


def display_width(text: str) -> int:
    """Terminal cells ``text`` takes: wide (CJK, emoji) characters take two, combining none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def fit_around(text: str, cursor: int, room: int) -> tuple[str, int]:
    """The part of ``text`` to show in ``room`` cells with the cursor in view, and the
    cursor's cell in it; a cut at the left is marked ``<``."""
    if display_width(text) <= room and display_width(text[:cursor]) < room:
        return text, display_width(text[:cursor])
    start = 0
    if display_width(text[:cursor]) >= room:
        start = cursor
        used = 1  # the "<", and one cell for the cursor itself
        while start > 0 and used + 1 + display_width(text[start - 1]) <= room:
            start -= 1
            used += display_width(text[start])
    marker = "<" if start else ""
    shown: list[str] = []
    used = len(marker)
    for char in text[start:]:
        width = display_width(char)
        if used + width > room:
            break
        shown.append(char)
        used += width
    return marker + "".join(shown), len(marker) + display_width(text[start:cursor])


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


def rows_taken(text: str, columns: int) -> int | None:
    """Rows ``text`` (lines separated by ``\\n``) fills on a terminal ``columns`` wide,
    or None when that depends on the terminal.

    Terminals disagree about the width of some characters (emoji, ambiguous
    East Asian ones, variation selectors), so a line is counted only when no
    such doubt can change its rows: it is all ASCII, or short enough to fit
    even if every other character took one cell more than :func:`display_width`
    says.  A wide character that does not fit at the end of a row starts the
    next one, as terminals do.
    """
    columns = max(columns, 1)
    total = 0
    for line in text.split("\n"):
        doubt = sum(not char.isascii() for char in line)
        if doubt and display_width(line) + doubt > columns:
            return None
        rows, used = 1, 0
        for char in line:
            width = display_width(char)
            if used + width > columns:
                rows, used = rows + 1, 0
            used += width
        total += rows
    return total


@dataclass(frozen=True, slots=True)
class _Placed:
    row: int
    rows: int
    columns: int


class Transcript:
    """The rows printed above the input line, and where each keyed line of them is."""

    def __init__(self) -> None:
        self.rows = 0
        """Rows printed so far: the input line is on row ``rows``."""
        self._placed: OrderedDict[Hashable, _Placed] = OrderedDict()

    def printed(self, text: str, columns: int, key: Hashable | None = None) -> None:
        """``text`` was printed above the input line (one newline after it)."""
        rows = rows_taken(text, columns)
        if rows is None:
            # How far up the earlier lines are is no longer known: none is rewritten.
            self._placed.clear()
            self.rows += 1
            return
        if key is not None:
            self._placed[key] = _Placed(self.rows, rows, columns)
            self._placed.move_to_end(key)
            while len(self._placed) > KEPT_LINES:
                self._placed.popitem(last=False)
        self.rows += rows

    def rewrite(self, key: Hashable, text: str, columns: int, height: int) -> str | None:
        """What rewrites keyed line ``key`` as ``text`` in place, or None when it cannot be.

        The caller writes the answer while the cursor is on the input line and
        redraws the input line after it.
        """
        placed = self._placed.get(key)
        if placed is None:
            return None
        up = self.rows - placed.row
        if (placed.columns != columns or placed.rows != 1 or rows_taken(text, columns) != 1
                or display_width(text) + sum(not c.isascii() for c in text) >= columns
                or up >= height):
            return None
        return f"\x1b[{up}A{CLEAR_LINE}{text}\x1b[{up}B\r"

    def forget(self, key: Hashable) -> None:
        self._placed.pop(key, None)
