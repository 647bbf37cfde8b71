"""``overlay chat --json``: the event stream as JSON lines, ``ready`` first, for scripts."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from overlay.addresses import format_address
from overlay.cli.chat.client import Client


async def run_json_stream(client: Client) -> int:
    await client.start()
    status = client.role.status()
    ready = {"event": "ready", "user": client.user, "node_id": client.node.node_id.hex(),
             "server": format_address(status.server),
             "home": None if status.home is None else status.home.hex(),
             "reachable": status.reachable, "pending": len(await client.chat.pending())}
    if not _print_json(ready):
        return 0
    async for event in client.chat.events:
        if not _print_json(event.to_json()):
            return 0
    return 0


def _print_json(record: dict[str, Any]) -> bool:
    """Print one line; False once nobody reads (``| head``): then stop quietly."""
    try:
        print(json.dumps(record), flush=True)
    except BrokenPipeError:
        # The interpreter flushes stdout again at exit: point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False
    return True
