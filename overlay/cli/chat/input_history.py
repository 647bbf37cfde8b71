"""The lines typed into ``overlay chat``, kept between runs: ``STATE/chat-USER.input-history``.

One line per entry, oldest first, at most :data:`~overlay.cli.chat.editing.HISTORY_SIZE`
of them.  What a user typed is as private as their messages, so the file is
the owner's only (0600), whatever mode an older copy had.  Losing it costs
nothing but convenience: it is replaced whole (write, then rename, no fsync)
and a file that cannot be read or written only turns recall off, with one
warning, never the chat.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("overlay.cli")

MAX_FILE = 4 * 1024 * 1024
"""More than this is not an input history we wrote: it is not read."""


def load(path: Path) -> list[str]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read the input history %s: %s", path, exc.strerror)
        return []
    if len(data) > MAX_FILE:
        log.warning("ignoring the input history %s: larger than %d bytes", path, MAX_FILE)
        return []
    return data.decode("utf-8", errors="replace").splitlines()


def save(path: Path, lines: list[str]) -> bool:
    """Replace the file with ``lines``; False (after a warning) if that failed."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an old leftover keeps its mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
            f.writelines(line + "\n" for line in lines)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        log.warning("cannot save the input history %s: %s", path, exc.strerror)
        return False
    return True
