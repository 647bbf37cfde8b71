"""How the interactive chat words things: chat lines, tables and the /status report.

Every chat line starts with the local time (``12:04``): a message, a
presence change or an error.  A message of ours is one line whose state
(in brackets) changes as it goes: ``12:04 you -> bob: hi  [sent, relayed via
1a2b3c4d]`` becomes ``...  [delivered in 3.9 ms]``; where the line cannot be
rewritten in place, :func:`status_line` is the short line printed instead.
"""

from __future__ import annotations

import time

from overlay.addresses import format_address
from overlay.chat.history import Entry
from overlay.cli.chat.client import Client, duration
from overlay.cli.chat.screen import printable

OLD_MESSAGE = 60.0
"""An incoming message written longer ago than this shows when it was written."""
SHORT_TEXT = 40
"""Characters of a message a status line repeats."""


def clock(timestamp: float) -> str:
    """``12:04``: the time at the head of a chat line."""
    try:
        return time.strftime("%H:%M", time.localtime(timestamp))
    except (OverflowError, ValueError, OSError):
        return "--:--"


def stamp(timestamp: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    except (OverflowError, ValueError, OSError):  # a history written before times were checked
        return "(no valid time)"


def indent(text: str) -> str:
    """Continuation lines of a multi-line message, set off from the next speaker."""
    return printable(text).replace("\n", "\n    ")


def short(text: str) -> str:
    """A message as a status line repeats it: its first line, cut."""
    line, _, more = printable(text).partition("\n")
    if len(line) > SHORT_TEXT or more:
        return line[:SHORT_TEXT].rstrip() + "..."
    return line


def outgoing(at: float, peer: str, text: str) -> str:
    """The head of our message's line, without its state."""
    return f"{clock(at)} you -> {printable(peer)}: {indent(text)}"


def incoming(at: float | None, peer: str, text: str, now: float) -> str:
    """A message to us, as the chat line after the time."""
    shown = f"{printable(peer)}: {indent(text)}"
    if at is not None and now - at > OLD_MESSAGE:
        shown += f"  (written {stamp(at)})"
    return shown


def with_state(head: str, state: str) -> str:
    return f"{head}  [{state}]"


def status_line(now: float, what: str, peer: str, text: str, detail: str) -> str:
    """``12:05 delivered to bob: hi (3.9 ms)``: a state change of a line no longer in reach."""
    return f"{clock(now)} {what} {printable(peer)}: {short(text)} ({detail})"


def history_entry(entry: Entry) -> str:
    text = indent(entry.text)
    if entry.direction == "in":
        return f"{stamp(entry.sent_at)}  {entry.peer}: {text}"
    state = entry.state
    if entry.state == "delivered" and entry.delivered_at is not None:
        state += f" in {duration(entry.delivered_at - entry.sent_at)}"
    return f"{stamp(entry.sent_at)}  you -> {entry.peer}: {text}  [{state}]"


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in
                               zip(row, widths, strict=True)).rstrip() for row in rows)


def status_report(client: Client) -> str:
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
        since = "" if row.punch is None else f" for {row.punch.since_s:.0f} s"
        lines.append(f"  {name}: {row.path.describe()}{since}")
    if not conversations:
        lines.append("  no conversations open yet (one opens with the first message)")
    return "\n".join(lines)
