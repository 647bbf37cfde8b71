"""Lines from a child process's stdout, each awaited with a deadline.

``select()`` on ``proc.stdout`` and then ``proc.stdout.readline()`` loses
lines: the buffered reader takes every byte the pipe holds, so when two lines
arrive together the second sits in Python's buffer while ``select()`` waits
on an empty pipe until its deadline ("printed nothing in time").
:class:`LineReader` reads the pipe's file descriptor itself and keeps its own
buffer, so a line that has arrived is always returned at once.
"""

from __future__ import annotations

import os
import select
import time
from typing import IO

CHUNK = 65536


class LineReader:
    """Read whole lines from one pipe; the only reader of it (nothing else may read it)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""

    def readline(self, timeout: float) -> bytes | None:
        """The next line with its newline; what is left (maybe b"") at end of file;
        None if no whole line came within ``timeout`` seconds (a partial one is kept)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._fd], [], [], remaining)[0]:
                return None
            chunk = os.read(self._fd, CHUNK)
            if not chunk:
                rest, self._buffer = self._buffer, b""
                return rest
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"
