"""The sender's side of one ``overlay bench nat`` session, inside a lab host.

Why a session has this shape: the bench wants, of *one* conversation, its
relayed path, how long punching took to make it direct, and the same
conversation's path afterwards.  Punching is held off for ``--start-delay``
seconds (:attr:`~overlay.proto.punch.PunchConfig.start_delay`), so the first
window of ``--bench K`` stop-and-wait messages crosses the relay for sure.
Then messages flow (``--interval`` apart) while punching runs, until the
path is direct or punching gave up a round (or ``--session-limit``), and a
second window of K messages measures the path it ended on.  Around each
window the peer prints ``{"event": "window", "phase": P}`` and waits for a
line on stdin, and after it ``{"event": "window-done", "phase": P}`` and waits
again: the bench reads the supernodes' counters meanwhile.  Last comes one
``{"event": "session", ...}`` line with the figures (times are seconds), once
the receiver has acknowledged the closing ``end`` message; then the peer
waits, still on the channel, until the bench stops it:

- ``before`` / ``after``: each window's round trips (send to acknowledgement)
  and the paths seen at its start and end;
- ``clean_before``: whether punching had not begun yet when the first window
  ended (else its figures may include the direct path);
- ``time_to_direct``: from the first message to the direct link, less the
  hold-off (None if it stayed relayed); ``path``, ``punch`` and ``mapping`` as
  in ``sent`` of :mod:`overlay.lab.peer`; ``sent``: messages in all (the
  closing ``end`` message, the receiver's cue, not counted).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

from overlay.ids import NodeId
from overlay.net.channels import Channel
from overlay.net.node import Node
from overlay.roles.edge import EdgeClient

POLL = 0.005
"""How often the path is looked at while waiting for the direct link (seconds)."""


async def _wait_for_go() -> None:
    await trio.to_thread.run_sync(sys.stdin.readline)


async def _window(channel: Channel, role: EdgeClient, peer: NodeId, count: int,
                  first: int) -> dict[str, Any]:
    """``count`` messages, each waited for until acknowledged: their round trips."""
    rtts = []
    start_path = role.path_to(peer)["path"]
    for i in range(first, first + count):
        began = trio.current_time()
        await channel.send(b"message %d" % i)
        await channel.wait_acknowledged()
        rtts.append(round(trio.current_time() - began, 6))
    return {"rtts": rtts, "path_start": start_path, "path_end": role.path_to(peer)["path"]}


def _settled(role: EdgeClient, peer: NodeId) -> bool:
    """Direct, or a whole round of attempts given up."""
    assert role.punch is not None
    if role.path_to(peer)["path"] == "direct":
        return True
    status = role.punch.peer_status(peer)
    return (status is not None and status.state == "relayed"
            and status.attempts >= role.punch.config.attempts)


async def bench_session(node: Node, role: EdgeClient, args: argparse.Namespace) -> None:
    from overlay.lab.peer import END, locate, say

    assert role.punch is not None, "a bench session punches (--punch)"
    peer = await locate(role, args.peer)
    count = args.bench
    direct_at: float | None = None
    sent = 0
    with trio.fail_after(args.session_limit + 60):
        async with node.open_channel(peer) as channel:
            first = trio.current_time()
            say("window", phase="before")
            await _wait_for_go()
            before = await _window(channel, role, peer, count, sent)
            sent += count
            status = role.punch.peer_status(peer)
            clean = (trio.current_time() - first < args.start_delay
                     and (status is None or status.attempts == 0)
                     and before["path_end"] == "relayed")
            say("window-done", phase="before")
            await _wait_for_go()
            with trio.move_on_at(first + args.session_limit):
                async with trio.open_nursery() as nursery:
                    async def watch() -> None:
                        nonlocal direct_at
                        # Polled: the driver's state has no event to wait on, and
                        # POLL is the time resolution of ``time_to_direct``.
                        while not _settled(role, peer):  # noqa: ASYNC110
                            await trio.sleep(POLL)
                        if role.path_to(peer)["path"] == "direct":
                            direct_at = trio.current_time()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(watch)
                    while True:
                        await channel.send(b"message %d" % sent)
                        sent += 1
                        await trio.sleep(args.interval or 0.02)
            await channel.wait_acknowledged()
            say("window", phase="after")
            await _wait_for_go()
            after = await _window(channel, role, peer, count, sent)
            sent += count
            say("window-done", phase="after")
            await _wait_for_go()
            path = role.path_to(peer)
            punch = role.punch.peer_status(peer)
            await channel.send(END)  # the receiver's cue to report (overlay.lab.peer)
            await channel.wait_acknowledged()
            # Reported before the channel closes: the bench has what it needs, and
            # stops both peers once the receiver has reported too.
            say("session", sent=sent, before=before, after=after, clean_before=clean,
                time_to_direct=(None if direct_at is None
                                else round(max(0.0, direct_at - first - args.start_delay), 6)),
                path=path, punch=None if punch is None else punch.to_json(),
                mapping=role.punch.mapping().value)
            await _wait_for_go()
