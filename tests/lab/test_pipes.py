"""Lines from a real child's pipe: none lost when several arrive at once."""

from __future__ import annotations

import subprocess
import sys

from overlay.lab.pipes import LineReader

PRINT = [sys.executable, "-c",
         "import sys, time\n"
         "sys.stdout.write('one\\ntwo\\nthr'); sys.stdout.flush(); time.sleep(0.3)\n"
         "sys.stdout.write('ee\\n'); sys.stdout.flush(); time.sleep(30)"]


def test_lines_written_together_all_come_and_a_partial_one_waits() -> None:
    proc = subprocess.Popen(PRINT, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        lines = LineReader(proc.stdout)
        assert lines.readline(10) == b"one\n"
        assert lines.readline(10) == b"two\n"  # already read from the pipe: no wait
        assert lines.readline(10) == b"three\n"  # its end came later
        assert lines.readline(0.2) is None  # nothing more yet: the deadline holds
    finally:
        proc.kill()
        proc.wait()


def test_end_of_file_returns_what_is_left() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "print('last', end='')"],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    lines = LineReader(proc.stdout)
    assert lines.readline(10) == b"last"
    assert lines.readline(10) == b""
    proc.wait()
