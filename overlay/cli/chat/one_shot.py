"""``overlay chat --to CONTACT``: send one message, exit 0 once its receipt is back.

Otherwise exit 1 with one line that says how far the message got and what
becomes of it (it stays queued in the history, or nothing was sent).
"""

from __future__ import annotations

import trio

from overlay.cli.chat.client import ONLINE, Client, Progress, duration
from overlay.cli.chat.screen import printable
from overlay.errors import ChatError


async def run_one_shot(client: Client, to: str, text: str) -> int:
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
