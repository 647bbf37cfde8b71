"""The issue's check with real processes: two ``overlay server`` processes on one
PostgreSQL database, a client on each, and one of them killed with SIGKILL.

alice uses ``--server A --server B``, bob ``--server B --server A`` (kept in
their saved sessions): they become contacts across the two servers, see each
other's presence and chat; then A dies without a word, alice's client moves to
B, resumes her session without a password and chats on, and everything the
servers acknowledged (accounts, the contact) is still there.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from overlay.state import KEY_FILE
from tests.cli.test_roles_cli import account
from tests.directory.postgres import Cluster
from tests.procs import Processes, run_overlay, wait_until

pytestmark = pytest.mark.postgres


def status(state: Path) -> dict[str, Any] | None:
    result = run_overlay("status", "--json", "--state", str(state))
    return json.loads(result.stdout)["role"] if result.returncode == 0 else None


def contacts(state: Path) -> dict[str, str | None]:
    """Username to presence status, as ``overlay contacts list`` shows it."""
    listed = run_overlay("contacts", "list", "--json", "--state", str(state))
    assert listed.returncode == 0, listed.stderr
    return {row["username"]: row["presence"] and row["presence"]["status"]
            for row in json.loads(listed.stdout) if row["state"] == "accepted"}


def test_two_server_processes_and_a_client_failing_over(postgres_cluster: Cluster,
                                                        procs: Processes) -> None:
    root = procs.root
    db = postgres_cluster.url(postgres_cluster.fresh_schema())
    (root / "b").mkdir(mode=0o700)
    servers: list[subprocess.Popen[str]] = []
    addresses: list[str] = []
    for name in ("a", "b"):
        if name == "b":  # one key for both: copy it, as an operator would
            shutil.copy2(root / "a" / KEY_FILE, root / "b" / KEY_FILE)
        proc, line = procs.start("server", "--listen", "127.0.0.1:0", "--state",
                                 str(root / name), "--db", db, "-q")
        servers.append(proc)
        addresses.append(line.split()[4])
        key = line.split()[6]
    a, b = addresses
    sn = ["--server", b, "--server", a, "--server-key", key]
    _proc, line = procs.start("supernode", "--listen", "127.0.0.1:0", "--state",
                              str(root / "sn"), *sn, "-q")
    assert line.startswith("supernode ")
    order = {"alice": [a, b], "bob": [b, a]}
    for user, (first, second) in order.items():
        directory = ["--server", first, "--server", second, "--server-key", key]
        account(root, user, "register", *directory)
        account(root, user, "login", *directory)
    session = json.loads((root / "alice" / "session.json").read_text())
    assert (session["server"], session["failover"]) == (a, [b])
    added = run_overlay("contacts", "add", "bob", "--state", str(root / "alice"))
    assert added.returncode == 0, added.stderr
    accepted = run_overlay("contacts", "accept", "alice", "--state", str(root / "bob"))
    assert accepted.returncode == 0, accepted.stderr

    for user in ("alice", "bob"):  # the saved sessions: no password, no --server
        _proc, line = procs.start("client", "--user", user, "--state", str(root / user), "-q")
        assert f"client {user}" in line, line
    assert status(root / "alice")["server"] == a  # type: ignore[index]
    assert status(root / "bob")["server"] == b  # type: ignore[index]
    # Each sees the other online, though they are on different servers.
    wait_until(lambda: contacts(root / "alice").get("bob") == "online", "bob online on a")
    wait_until(lambda: contacts(root / "bob").get("alice") == "online", "alice online on b")
    sent = run_overlay("send", "--state", str(root / "alice"), "bob", "before")
    assert sent.returncode == 0 and "acknowledged" in sent.stdout, sent.stderr

    servers[0].send_signal(signal.SIGKILL)  # alice's server dies without a word
    servers[0].wait(10)

    def moved() -> bool:
        role = status(root / "alice")
        return role is not None and role["server"] == b and role["directory"] == "connected"

    wait_until(moved, "alice's client on server b")
    sent = run_overlay("send", "--state", str(root / "alice"), "bob", "after")
    assert sent.returncode == 0 and "acknowledged" in sent.stdout, sent.stderr
    # Nothing acknowledged was lost: the contact is there (the session resumed on b,
    # no password), and bob sees alice online again, now from b itself.
    assert contacts(root / "alice") == {"bob": "online"}
    wait_until(lambda: contacts(root / "bob").get("alice") == "online", "alice online")
    gone = run_overlay("contacts", "list", "--state", str(root / "alice"), "--server", a)
    assert gone.returncode == 1 and "cannot reach" in gone.stderr
