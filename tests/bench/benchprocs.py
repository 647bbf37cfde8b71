"""Benchmark processes in tests: each run in a TMPDIR of its own, found and stopped by it.

Every child of a bench inherits TMPDIR, so a test finds the run's leftovers by
their environment without confusing them with anyone else's processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.procs import short_tempdir


def processes_with(tmpdir: Path) -> list[int]:
    """Live processes whose environment names ``tmpdir`` (the bench's children carry it)."""
    marker = f"TMPDIR={tmpdir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


@contextmanager
def bench_tmpdir() -> Iterator[Path]:
    """A TMPDIR of the run's own, removed whatever the test's outcome."""
    tmpdir = short_tempdir()
    try:
        yield tmpdir
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def bench_env(tmpdir: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmpdir)}


def stop_leftovers(bench: subprocess.Popen[Any], tmpdir: Path) -> None:
    """After a test, whatever it asserted: the bench killed if it still runs, and every
    process of its TMPDIR killed (a failing test must not leave servers behind)."""
    if bench.poll() is None:
        bench.kill()
        bench.wait()
    for pid in processes_with(tmpdir):
        os.kill(pid, signal.SIGKILL)
