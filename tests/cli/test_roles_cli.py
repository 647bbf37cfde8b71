"""`overlay supernode` and `overlay client` as real processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from tests.procs import Processes, overlay_command, run_overlay

WAIT = 30.0
PASSWORD = "correct horse battery"


def account(root: Path, user: str, *args: str) -> None:
    result = subprocess.run(overlay_command("account", *args, "--user", user,
                                            "--password-stdin", "--state", str(root / user)),
                            input=PASSWORD + "\n", capture_output=True, text=True,
                            timeout=WAIT, check=False)
    assert result.returncode == 0, result.stderr


def start_system(procs: Processes) -> list[str]:
    """A server, two supernodes, and alice and bob registered, logged in and contacts.

    Returns the ``--server HOST:PORT --server-key KEY`` arguments.
    """
    root = procs.root
    _server, line = procs.start("server", "--listen", "127.0.0.1:0", "--state",
                                str(root / "dir"), "-q")
    directory = ["--server", line.split()[4], "--server-key", line.split()[6]]
    for name in ("sn1", "sn2"):
        _proc, line = procs.start("supernode", "--listen", "127.0.0.1:0", "--state",
                                  str(root / name), *directory, "-q")
        assert line.startswith("supernode ")
    for user in ("alice", "bob"):
        account(root, user, "register", *directory)
        account(root, user, "login", *directory)
    added = run_overlay("contacts", "add", "bob", "--state", str(root / "alice"))
    assert added.returncode == 0, added.stderr
    accepted = run_overlay("contacts", "accept", "alice", "--state", str(root / "bob"))
    assert accepted.returncode == 0, accepted.stderr
    return directory


def test_two_clients_without_listening_talk_through_supernodes(procs: Processes) -> None:
    root = procs.root
    start_system(procs)
    for user in ("alice", "bob"):
        _proc, line = procs.start("client", "--user", user, "--state", str(root / user), "-q")
        assert f"client {user}" in line and "not reachable (relayed)" in line, line

    sent = run_overlay("send", "--state", str(root / "alice"), "bob", "hello", "bob")
    assert sent.returncode == 0, sent.stderr
    assert "acknowledged" in sent.stdout
    status = run_overlay("status", "--json", "--state", str(root / "alice"))
    assert status.returncode == 0, status.stderr
    role = json.loads(status.stdout)["role"]
    assert role["role"] == "edge" and role["username"] == "alice" and role["home"]
    assert role["reachable"] is False
    text = run_overlay("status", "--state", str(root / "alice")).stdout
    assert "home" in text and "standby" in text

    unknown = run_overlay("send", "--state", str(root / "alice"), "nobody", "hi")
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1 and "nobody" in unknown.stderr


def test_client_and_supernode_usage_errors() -> None:
    assert run_overlay("client", "--help").returncode == 0
    assert run_overlay("supernode", "--help").returncode == 0
    missing = run_overlay("client", "--server", "127.0.0.1:1")
    assert missing.returncode == 2 and "--user" in missing.stderr
    bad = run_overlay("supernode", "--listen", "nonsense", "--server", "127.0.0.1:1")
    assert bad.returncode == 2


def test_a_supernode_and_a_client_started_before_their_server_wait_for_it(
        procs: Processes) -> None:
    root = procs.root
    server, line = procs.start("server", "--listen", "127.0.0.1:0", "--state",
                               str(root / "dir"), "-q")
    address = line.split()[4]
    account(root, "alice", "register", "--server", address)
    server.send_signal(signal.SIGTERM)
    server.wait(WAIT)

    def daemon(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(overlay_command(*args, "--server", address), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL,
                                env={**os.environ, "OVERLAY_PASSWORD": PASSWORD})
        procs.procs.append(proc)
        return proc

    supernode = daemon("supernode", "--listen", "127.0.0.1:0", "--state", str(root / "sn1"))
    client = daemon("client", "--user", "alice", "--state", str(root / "alice"))
    for proc in (supernode, client):  # both say that they wait, and keep waiting
        assert proc.stderr is not None
        assert "trying again in" in _line_with(proc.stderr, "directory server")
        assert proc.poll() is None
    procs.start("server", "--listen", address, "--state", str(root / "dir"), "-q")
    assert _first_line(supernode).startswith("supernode ")
    assert _first_line(client).startswith("client alice")
    role = json.loads(run_overlay("status", "--json", "--state", str(root / "alice")).stdout)
    assert role["role"]["directory"] == "connected" and role["role"]["home"]


def _line_with(stream: IO[str], text: str) -> str:
    """The first line of ``stream`` that contains ``text`` (within WAIT seconds)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], deadline - time.monotonic())
        line = stream.readline() if ready else ""
        if text in line:
            return line
        if ready and not line:
            break
    raise AssertionError(f"no line with {text!r}")


def _first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], WAIT)
    return proc.stdout.readline() if ready else ""


def test_status_on_a_server_and_a_supernode_says_what_each_is_and_its_load(
        procs: Processes) -> None:
    root = procs.root
    directory = start_system(procs)
    _proc, line = procs.start("client", "--user", "alice", "--state", str(root / "alice"), "-q")
    assert line.startswith("client alice")
    server = json.loads(run_overlay("status", "--json", "--state", str(root / "dir")).stdout)
    assert server["kind"] == "directory-server" and server["key"] == directory[3]
    assert server["supernodes"] == 2 and server["sessions"] == 1
    assert server["users_online"] == 1 and server["database"].startswith("SQLite ")
    text = run_overlay("status", "--state", str(root / "dir")).stdout
    assert text.startswith("directory server  ") and "supernodes        2" in text
    refused = run_overlay("ping", "abcd", "--state", str(root / "dir"))
    assert refused.returncode == 1 and "answers only 'status'" in refused.stderr
    home = json.loads(run_overlay("status", "--json", "--state",
                                  str(root / "alice")).stdout)["role"]["home"]
    for name in ("sn1", "sn2"):
        status = json.loads(run_overlay("status", "--json", "--state", str(root / name)).stdout)
        if status["node_id"] == home:
            load = [ln for ln in run_overlay("status", "--state", str(root / name))
                    .stdout.splitlines() if ln.startswith("load")]
            [line] = load  # the relayed count may have grown since the JSON status
            words = line.split()
            assert words[:5] == ["load", "1", "edge", "clients", "attached,"]
            assert int(words[5]) >= status["forwarding"]["forwarded"]
            assert words[6:] == ["packets", "relayed"]
            break
    else:
        raise AssertionError(f"alice's home {home} is neither supernode")
