"""How the interactive chat shows events, without a terminal: one line per message,
rewritten where possible, a status line where not (pipes, a line scrolled off); and
the input-history file."""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any, cast

import pytest

from overlay.chat.events import ChatEvent
from overlay.cli.chat import input_history
from overlay.cli.chat.interactive import Interactive

TIME = r"\d\d:\d\d"


class Screen:
    """Stands in for the LineEditor: records what is printed and rewritten."""

    def __init__(self, *, in_place: bool) -> None:
        self.in_place = in_place
        self.names: set[str] = set()
        self.lines: list[tuple[str, Hashable | None]] = []
        self.rewritten: list[tuple[Hashable, str]] = []

    def print_above(self, text: str, key: Hashable | None = None) -> None:
        self.lines.append((text, key))

    def rewrite(self, key: Hashable, text: str) -> bool:
        if self.in_place:
            self.rewritten.append((key, text))
        return self.in_place


def session(screen: Screen) -> Interactive:
    return Interactive(cast(Any, None), cast(Any, screen))


def test_a_message_is_one_line_whose_state_changes_in_place() -> None:
    screen = Screen(in_place=True)
    chat = session(screen)
    chat.presence["bob"] = "online"
    chat.show(ChatEvent("queued", "bob", b"1", "hi", at=0.0))
    assert screen.lines == []  # online: "sent" follows at once
    chat.show(ChatEvent("sent", "bob", b"1", "hi", at=0.0, path="direct"))
    chat.show(ChatEvent("delivered", "bob", b"1", "hi", latency=0.0042))
    [(line, key)] = screen.lines
    assert key == b"1" and re.fullmatch(rf"{TIME} you -> bob: hi  \[sent, direct\]", line)
    [(key, line)] = screen.rewritten
    assert key == b"1" and line == screen.lines[0][0].replace("[sent, direct]",
                                                              "[delivered in 4.2 ms]")


def test_where_a_line_cannot_change_a_status_line_says_what_did() -> None:
    screen = Screen(in_place=False)
    chat = session(screen)
    chat.show(ChatEvent("queued", "bob", b"1", "hi\x1b[2J there\nsecond line", at=0.0))
    chat.show(ChatEvent("sent", "bob", b"1", "hi\x1b[2J there\nsecond line", path="direct"))
    chat.show(ChatEvent("delivered", "bob", b"1", "hi\x1b[2J there\nsecond line",
                        latency=1.5))
    chat.show(ChatEvent("delivered", "bob", b"2", "from the last run", latency=0.5))
    chat.show(ChatEvent("presence", "bob", detail="online"))
    chat.show(ChatEvent("presence", "bob", detail="online"))
    chat.show(ChatEvent("error", "bob", detail="bob unreachable"))
    shown = [line for line, _ in screen.lines]
    assert len(shown) == 6, shown
    assert re.fullmatch(rf"{TIME} you -> bob: hi\\x1b\[2J there\n    second line  "
                        r"\[queued: bob is offline; sent when bob comes online\]", shown[0])
    assert re.fullmatch(rf"{TIME} sent to bob: hi\\x1b\[2J there\.\.\. \(direct\)", shown[1])
    assert re.fullmatch(rf"{TIME} delivered to bob: hi\\x1b\[2J there\.\.\. \(1\.5 s\)",
                        shown[2])
    assert re.fullmatch(rf"{TIME} delivered to bob: from the last run \(500\.0 ms\)", shown[3])
    assert re.fullmatch(rf"{TIME} \* bob is online", shown[4])
    assert re.fullmatch(rf"{TIME} ! bob unreachable", shown[5])
    assert screen.names == {"bob"}


def test_every_command_is_completed() -> None:
    assert set(session(Screen(in_place=True)).commands) == set(Interactive.COMMANDS)


def test_the_input_history_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "chat-alice.input-history"
    assert input_history.load(path) == []
    path.write_text("old\n")
    path.chmod(0o644)
    assert input_history.save(path, ["/msg bob hi", "h\u00e9llo"])
    assert path.stat().st_mode & 0o777 == 0o600
    assert input_history.load(path) == ["/msg bob hi", "h\u00e9llo"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert not input_history.save(tmp_path / "missing" / "file", ["x"])
    with path.open("r+b") as f:
        f.truncate(input_history.MAX_FILE + 1)
    assert input_history.load(path) == []
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
