"""How ``overlay bench nat`` reads its peers: lines never lost, nonsense a failed session."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from overlay.bench import nat
from overlay.lab import LabError

LINES = ('{"event": "ready"}\n{"event": "window"}\nnot json\n[1, 2]\n'
         '{"event": "session"}\n')


def test_events_that_arrive_together_are_all_read_and_nonsense_is_a_lab_error() -> None:
    proc = subprocess.Popen([sys.executable, "-c", f"import sys, time\n"
                             f"sys.stdout.write({LINES!r}); sys.stdout.flush(); time.sleep(30)"],
                            stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        assert nat._event(proc, "sender", deadline, "ready") == {"event": "ready"}
        assert nat._event(proc, "sender", deadline, "window") == {"event": "window"}
        with pytest.raises(LabError, match="sender printed 'not json' where the event"):
            nat._event(proc, "sender", deadline, "window-done")
        with pytest.raises(LabError, match=r"printed '\[1, 2\]'"):
            nat._event(proc, "sender", deadline, "window-done")
        with pytest.raises(LabError, match="said 'session' where 'received' was due"):
            nat._event(proc, "sender", deadline, "received")
        with pytest.raises(LabError, match="printed nothing in time"):
            nat._event(proc, "sender", time.monotonic() + 0.2, "received")
    finally:
        proc.kill()
        proc.wait()
