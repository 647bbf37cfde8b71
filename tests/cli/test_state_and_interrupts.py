"""Real processes: state directories that are not the user's own, and no tracebacks.

A state directory another user may write to, or a key file others may read,
is refused with one line that says how to fix it; so are a node.key that is a
directory and a server port already in use.  Ctrl-C at any moment of a
command's start (imports included) prints at most one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.procs import WAIT, overlay_command, run_overlay, short_tempdir

KEY = "00" * 32 + "\n"


@pytest.fixture
def root() -> Iterator[Path]:
    path = short_tempdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def refused(*args: str) -> str:
    """Run ``overlay ARGS``: it must fail with one line and no traceback; that line."""
    result = run_overlay(*args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_a_state_directory_others_may_write_to_is_refused(root: Path) -> None:
    state = root / "shared"
    state.mkdir()
    state.chmod(0o777)
    for command in (("node", "--listen", "127.0.0.1:0"), ("status",),
                    ("server", "--listen", "127.0.0.1:0")):
        line = refused(*command, "--state", str(state))
        assert f"state directory {state} is writable by other users (mode 777)" in line
        assert f"chmod go-w {state}" in line
    assert not (state / "node.key").exists(), "nothing was created in it"


def test_a_key_file_others_may_read_is_refused(root: Path) -> None:
    state = root / "alice"
    state.mkdir(mode=0o700)
    key = state / "node.key"
    key.write_text(KEY)
    key.chmod(0o644)
    for command in (("node", "--listen", "127.0.0.1:0"), ("server", "--show-key")):
        line = refused(*command, "--state", str(state))
        assert f"{key} can be read by other users (mode 644)" in line
        assert f"chmod 600 {key}" in line
    key.chmod(0o600)
    shown = run_overlay("server", "--show-key", "--state", str(state))
    assert shown.returncode == 0 and len(shown.stdout.strip()) == 64, shown.stderr


def test_a_state_directory_of_another_user_is_refused(root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another uid needs root")
    state = root / "planted"
    state.mkdir(mode=0o700)
    (state / "node.key").write_text(KEY)
    os.chown(state / "node.key", 65534, 65534)
    os.chmod(state / "node.key", 0o600)
    line = refused("node", "--listen", "127.0.0.1:0", "--state", str(state))
    assert f"key file {state / 'node.key'} belongs to uid 65534" in line
    os.chown(state, 65534, 65534)
    for command in (("node", "--listen", "127.0.0.1:0"), ("status",), ("server", "--show-key")):
        line = refused(*command, "--state", str(state))
        assert f"state directory {state} belongs to uid 65534, not to you (uid 0)" in line
        assert f"chown 0 {state}" in line


def test_a_node_key_that_is_a_directory_is_one_line(root: Path) -> None:
    state = root / "odd"
    (state / "node.key").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    for command in (("node", "--listen", "127.0.0.1:0"), ("server", "--listen", "127.0.0.1:0"),
                    ("server", "--show-key")):
        line = refused(*command, "--state", str(state))
        assert f"{state / 'node.key'} is not a node key file" in line


def test_server_on_a_port_in_use_is_one_line(root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused("server", "--listen", f"127.0.0.1:{port}", "--state", str(root / "dir"),
                       "-q")  # without the log line of the key it creates
    assert line == f"overlay server: cannot listen on 127.0.0.1:{port}: Address already in use\n"


DELAYS = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6)
MAX_RUNS = 12


@pytest.mark.parametrize("command", ["node", "server", "chat"])
def test_ctrl_c_early_prints_no_traceback(root: Path, command: str) -> None:
    """SIGINT while overlay imports, parses, opens the state directory or starts.

    On a loaded machine the first delays can land while the interpreter itself is
    still starting (importing ``site``, or runpy finding ``overlay.__main__``, before
    any of overlay's code): Python prints its own traceback then, which no program
    can prevent; those runs (no overlay file in the traceback) are not
    counted, and most runs must land later.
    """
    # The chat's "directory" accepts connections (the kernel does, into its backlog)
    # and never answers: the chat waits in its handshake, where the interrupt finds it.
    # (A refused port is no good: the chat gives up on it at once, faster than the
    # interrupt on a quick machine.)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    args = {
        "node": ["node", "--listen", "127.0.0.1:0"],
        "server": ["server", "--listen", "127.0.0.1:0"],
        "chat": ["chat", "--user", "alice", "--server", f"127.0.0.1:{port}",
                 "--password-stdin"],
    }[command]
    with silent, _sigint_as_from_a_terminal():
        reached = _interrupt_early(root, command, args)
    assert reached >= len(DELAYS) - 2, "most interrupts must land in overlay's own start"


@contextmanager
def _sigint_as_from_a_terminal() -> Iterator[None]:
    """Children start with SIGINT's default action, as a shell in the foreground leaves
    it.  A suite run in the background (``bin/test &``) inherits SIGINT ignored from its
    shell, and hands that on to every child; until overlay's own handler is in place
    (after its imports) an ignored interrupt is simply lost, and the run would wait out
    WAIT.  A handled signal goes back to its default at exec, an ignored one does not."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt_early(root: Path, command: str, args: list[str]) -> int:
    """Start ``overlay *args`` once per delay and interrupt it then; how many runs
    reached overlay's own code (see the test above).  A run whose interrupt came
    while the interpreter was still starting is tried again later with twice the
    delay (a loaded machine starts Python slowly), at most ``MAX_RUNS`` runs in all."""
    reached = 0
    delays = list(DELAYS)
    for i in range(MAX_RUNS):
        if not delays:
            break
        delay = delays.pop(0)
        proc = subprocess.Popen(overlay_command(*args, "--state", str(root / f"s{i}")),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdin is not None
            proc.stdin.write("a password\n")
            proc.stdin.flush()
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if ("init_import_site" in err or ("Traceback" in err and "/overlay/" not in err)
                or (proc.returncode == -signal.SIGINT and not err)):
            # The interpreter itself was still starting (before Python's own SIGINT
            # handler, the signal's default action ends it silently): no overlay code ran.
            delays.append(delay * 2)
            continue
        reached += 1
        assert "Traceback" not in err, f"after {delay} s:\n{err}"
        assert proc.returncode in (0, 130), f"after {delay} s: {proc.returncode}\n{err}"
        if proc.returncode == 130:  # before the command line was parsed: "overlay: ..."
            assert err.endswith((f"overlay {command}: interrupted\n",
                                 "overlay: interrupted\n")), err
    return reached


def test_ctrl_c_while_hundreds_of_simulated_nodes_converge_stops_them_cleanly() -> None:
    """`overlay bench routing` at 400 nodes, interrupted while converging: every node
    unwinds (once, the bench's one exit stack of nodes nested their exceptions past the
    recursion limit, and trio reported its nursery stack corrupted), status 130."""
    with _sigint_as_from_a_terminal():
        proc = subprocess.Popen(overlay_command("bench", "routing", "--nodes", "400"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        deadline = time.monotonic() + 4 * WAIT
        for line in proc.stderr:  # progress lines, one per step with stderr not a terminal
            seen.append(line)
            if line.startswith("converging") or time.monotonic() > deadline:
                break
        assert seen and seen[-1].startswith("converging"), "".join(seen)
        proc.send_signal(signal.SIGINT)
        _out, rest = proc.communicate(timeout=4 * WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = "".join(seen) + rest
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 130, err[-3000:]
    assert err.endswith("overlay bench: interrupted\n"), err[-300:]
