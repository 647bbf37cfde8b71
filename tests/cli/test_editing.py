"""The chat's pure line editor (overlay/cli/chat/editing.py) and screen bookkeeping (screen.py).

Random key sequences run through :class:`EditLine` and through a model editor
written differently (the text as two strings either side of the cursor, the
word rule as a regex); they must agree on the text, the cursor, the history
and every submitted line.  The pty test in test_chat_cli.py drives the same
code through a real terminal.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.cli.chat.editing import Candidates, EditLine, Key, KeyDecoder, Quit, Submit
from overlay.cli.chat.screen import CLEAR_LINE, Transcript, display_width, rows_taken

EDIT_KEYS = [Key.LEFT, Key.RIGHT, Key.HOME, Key.END, Key.BACKSPACE, Key.DELETE,
             Key.KILL_START, Key.KILL_END, Key.KILL_WORD, Key.UP, Key.DOWN, Key.ENTER,
             Key.TAB, Key.REDRAW, Key.EOF]
TEXT = st.characters(codec="utf-8").filter(lambda c: c.isprintable())
KEYS = st.lists(st.one_of(TEXT, st.sampled_from(" ab"), st.sampled_from(EDIT_KEYS),
                          st.sampled_from(EDIT_KEYS)), min_size=10, max_size=80)
"""Editing keys twice as likely as text, and long sequences: the interesting cases (a
recalled line, then back to the draft; a word rubbed out after spaces) need several keys."""


class Model:
    """What the keys should do, written as plainly as possible."""

    def __init__(self, history: list[str]) -> None:
        self.before, self.after = "", ""
        self.history = list(history)
        self.shown = len(history)
        self.draft = ""
        self.submitted: list[str] = []

    def press(self, key: str | Key) -> None:
        text = self.before + self.after
        if isinstance(key, str):
            self.before += key
        elif key is Key.LEFT and self.before:
            self.before, self.after = self.before[:-1], self.before[-1] + self.after
        elif key is Key.RIGHT and self.after:
            self.before, self.after = self.before + self.after[0], self.after[1:]
        elif key is Key.HOME:
            self.before, self.after = "", text
        elif key is Key.END:
            self.before, self.after = text, ""
        elif key is Key.BACKSPACE:
            self.before = self.before[:-1]
        elif key in (Key.DELETE, Key.EOF):
            self.after = self.after[1:]
        elif key is Key.KILL_START:
            self.before = ""
        elif key is Key.KILL_END:
            self.after = ""
        elif key is Key.KILL_WORD:
            found = re.fullmatch(r"(.*?)[^ ]* *", self.before, re.S)
            assert found is not None
            self.before = found.group(1)
        elif key is Key.UP and self.shown > 0:
            if self.shown == len(self.history):
                self.draft = text
            self.shown -= 1
            self.before, self.after = self.history[self.shown], ""
        elif key is Key.DOWN and self.shown < len(self.history):
            self.shown += 1
            line = self.draft if self.shown == len(self.history) else self.history[self.shown]
            self.before, self.after = line, ""
        elif key is Key.ENTER:
            self.submitted.append(text)
            if text.strip() and (not self.history or self.history[-1] != text):
                self.history.append(text)
            self.before, self.after, self.draft = "", "", ""
            self.shown = len(self.history)


@settings(max_examples=300)
@given(KEYS, st.lists(st.sampled_from(["one", "two words", "/help"]), max_size=4),
       st.integers(12, 120))  # narrower than prompt + 9 cells: the line may wrap
def test_random_keys_edit_like_the_model(keys: list[str | Key], history: list[str],
                                         columns: int) -> None:
    editor = EditLine(history)
    model = Model(history)
    submitted: list[str] = []
    for key in keys:
        if key is Key.EOF and not editor.text:
            assert editor.press(key) == Quit("eof")
            continue
        event = editor.press(key)
        model.press(key)
        assert event is None or isinstance(event, Submit)  # nothing to complete: no names
        if isinstance(event, Submit):
            submitted.append(event.line)
        assert 0 <= editor.cursor <= len(editor.text)
        assert (editor.text, editor.cursor) == (model.before + model.after, len(model.before))
        shown = editor.render("> ", columns)
        assert shown.startswith(CLEAR_LINE)
        visible, _, _ = shown[len(CLEAR_LINE):].partition("\r")
        assert display_width(visible) <= columns - 1
        column = int(re.fullmatch(r".*\r(?:\x1b\[(\d+)C)?", shown, re.S).group(1) or 0)
        assert column <= display_width(visible) and column < columns
    assert submitted == model.submitted
    assert editor.history == model.history


@given(st.lists(st.one_of(TEXT, st.sampled_from([*EDIT_KEYS, Key.INTERRUPT])), max_size=40),
       st.data())
def test_keys_decode_from_any_split_of_their_bytes(keys: list[str | Key],
                                                   data: st.DataObject) -> None:
    encodings = {
        Key.LEFT: ["\x1b[D", "\x1bOD", "\x02", "\x1b[1;5D"], Key.RIGHT: ["\x1b[C", "\x06"],
        Key.HOME: ["\x1b[H", "\x01", "\x1b[1~", "\x1bOH"], Key.END: ["\x1b[F", "\x05", "\x1b[4~"],
        Key.UP: ["\x1b[A", "\x10"], Key.DOWN: ["\x1bOB", "\x0e"],
        Key.BACKSPACE: ["\x7f", "\x08"], Key.DELETE: ["\x1b[3~"], Key.KILL_START: ["\x15"],
        Key.KILL_END: ["\x0b"], Key.KILL_WORD: ["\x17"], Key.ENTER: ["\r", "\n"],
        Key.TAB: ["\t"], Key.REDRAW: ["\x0c"], Key.EOF: ["\x04"], Key.INTERRUPT: ["\x03"],
    }
    stream = "".join(key if isinstance(key, str) else data.draw(st.sampled_from(encodings[key]))
                     for key in keys).encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = KeyDecoder()
    decoded: list[str | Key] = []
    fed, pressed = EditLine(["earlier"]), EditLine(["earlier"])
    fed.names = pressed.names = {"bob", "bobby"}
    events: list[object] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoded += decoder.feed(stream[start:end])
        events += fed.feed(stream[start:end])
    assert decoded == keys
    # Feeding bytes (text runs inserted at once) is pressing the keys one by one.
    by_key = [pressed.press(key) for key in keys]
    assert events == [event for event in by_key if event is not None]
    assert (fed.text, fed.cursor, fed.history) == (pressed.text, pressed.cursor, pressed.history)


def test_unknown_escapes_and_control_characters_change_nothing() -> None:
    editor = EditLine()
    assert editor.feed(b"a\x1b[15~\x1bx\x1b[200~\x07\x00b\x1b[1;2Q") == []
    assert (editor.text, editor.cursor) == ("ab", 2)
    assert editor.feed(b"\x03") == [Quit("interrupt")]
    assert editor.feed(b"\x04") == []  # Ctrl-D on a line deletes under the cursor, or nothing
    assert editor.feed(b"\x15\x04") == [Quit("eof")]


def typed(editor: EditLine, text: str) -> None:
    for char in text:
        editor.press(char)


def test_tab_completes_the_common_prefix_then_lists() -> None:
    editor = EditLine(commands=["/help", "/history", "/msg", "/to"])
    editor.names = {"bob", "bobby", "carol"}
    typed(editor, "/h")
    assert editor.press(Key.TAB) is None and editor.text == "/h"
    assert editor.press(Key.TAB) == Candidates(("/help", "/history"))
    typed(editor, "i")
    assert editor.press(Key.TAB) is None and editor.text == "/history "
    typed(editor, "b")
    assert editor.press(Key.TAB) is None and editor.text == "/history bob"  # common prefix
    assert editor.press(Key.TAB) == Candidates(("bob", "bobby"))
    editor.press(Key.KILL_START)
    typed(editor, "/msg c hi")
    for _ in range(3):
        editor.press(Key.LEFT)
    editor.press(Key.TAB)  # in the middle of the line, before a space
    assert (editor.text, editor.cursor) == ("/msg carol hi", len("/msg carol "))
    editor.press(Key.KILL_START)
    assert (editor.text, editor.cursor) == ("hi", 0)
    editor.press(Key.KILL_END)
    typed(editor, "/zz")
    assert [editor.press(Key.TAB), editor.press(Key.TAB)] == [None, None]
    assert editor.text == "/zz"
    editor.press(Key.KILL_START)
    typed(editor, "/msg /h")  # a command name only as the first word
    assert editor.press(Key.TAB) is None and editor.text == "/msg /h"


def test_history_is_bounded_and_skips_blank_repeated_and_huge_lines() -> None:
    editor = EditLine(["old", "", "x" * 5000], history_size=3)
    assert editor.history == ["old"]
    for line in ["a", "a", "   ", "b", "c", "x" * 5000]:
        typed(editor, line)
        assert editor.press(Key.ENTER) == Submit(line)
    assert editor.history == ["a", "b", "c"]
    assert editor.recorded is None  # the huge one was not recorded
    typed(editor, "d")
    editor.press(Key.ENTER)
    assert editor.recorded == "d" and editor.history == ["b", "c", "d"]


def test_a_long_line_scrolls_sideways_keeping_the_cursor_in_view() -> None:
    editor = EditLine()
    typed(editor, "0123456789" * 5)
    tail = ("0123456789" * 2)[-15:]  # "<", 15 characters and the cursor fill the 17 cells
    assert editor.render("> ", 20) == CLEAR_LINE + "> <" + tail + "\r\x1b[18C"
    editor.press(Key.HOME)
    assert editor.render("> ", 20) == CLEAR_LINE + "> " + ("0123456789" * 2)[:17] + "\r\x1b[2C"


def test_a_line_is_rewritten_in_place_only_while_that_is_exact() -> None:
    screen = Transcript()
    screen.printed("12:04 you -> bob: hi  [sent]", 80, key="m1")
    screen.printed("12:04 bob: hello", 80)
    screen.printed("a\nb", 80)  # two rows
    assert screen.rewrite("m1", "12:04 you -> bob: hi  [delivered]", 80, 24) == (
        "\x1b[4A\r\x1b[K12:04 you -> bob: hi  [delivered]\x1b[4B\r")
    assert screen.rewrite("m1", "x" * 80, 80, 24) is None  # would wrap
    assert screen.rewrite("m1", "ok", 100, 24) is None  # resized since
    assert screen.rewrite("m1", "ok", 80, 4) is None  # scrolled off
    assert screen.rewrite("unknown", "ok", 80, 24) is None
    screen.printed("y" * 81, 80, key="long")  # two rows itself
    assert screen.rewrite("long", "ok", 80, 24) is None
    screen.printed("\U0001f600" * 60, 80)  # emoji: how wide is up to the terminal
    assert screen.rewrite("m1", "ok", 80, 24) is None


def test_rows_are_counted_as_a_terminal_wraps() -> None:
    assert rows_taken("x" * 80, 80) == 1  # the last column fills without a new row
    assert rows_taken("x" * 81 + "\n\nz", 80) == 4
    assert rows_taken("ab\u4e16\u754c", 3) is None  # wide: doubt
    assert rows_taken("ab\u4e16", 40) == 1  # short enough for any doubt
