"""``overlay account`` and ``overlay contacts`` as a user runs them: real processes, real server.

One ``overlay server`` process serves the whole module (each test uses its own
usernames and state directories), because every CLI process costs about half
a second to start.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlay.addresses import parse_address
from overlay.cli.main import main
from overlay.cli.session_file import (
    KNOWN_SERVERS_FILE,
    SESSION_FILE,
    SavedSession,
    pin_key,
    save_session,
)
from overlay.state import load_identity
from tests.procs import WAIT, overlay_command, server_process, short_tempdir

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Directory:
    """The module's running server, and where the test nodes keep their state."""

    address: str
    key: str
    root: Path

    def state(self, name: str) -> Path:
        return self.root / name


def overlay(*args: str, password: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI; ``password`` goes to stdin with --password-stdin, as a script would."""
    environment = {k: v for k, v in os.environ.items() if k != "OVERLAY_PASSWORD"}
    environment.update(env or {})
    if password is not None:
        args = (*args, "--password-stdin")
    return subprocess.run(overlay_command(*args), input=f"{password}\n" if password else "",
                          capture_output=True, text=True, timeout=3 * WAIT, check=False,
                          env=environment)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """A failed command's whole stderr, which must be exactly one line (no traceback)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def directory() -> Iterator[Directory]:
    root = short_tempdir()
    try:
        with server_process() as server:
            yield Directory(address=server.listen, key=server.key.hex(), root=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_register_login_contacts_and_logout(directory: Directory) -> None:
    alice, bob = directory.state("alice"), directory.state("bob")
    server = ("--server", directory.address)

    registered = overlay("account", "register", "--state", str(alice), *server,
                         "--user", "alice", password=PASSWORD)
    assert registered.returncode == 0, registered.stderr
    assert "registered alice" in registered.stdout
    assert str(load_identity(alice).node_id) in registered.stdout
    # Trust on first use: the key is pinned, and the user is told which.
    assert registered.stderr.strip() == \
        f"pinned server key {directory.key} for {directory.address}"
    assert overlay("account", "register", "--state", str(bob), *server, "--user", "bob",
                   password=PASSWORD).returncode == 0

    login = overlay("account", "login", "--state", str(alice), *server, "--user", "alice",
                    env={"OVERLAY_PASSWORD": PASSWORD})
    assert login.returncode == 0, login.stderr
    assert login.stderr == ""  # already pinned: no note
    assert "logged in as alice" in login.stdout
    assert str(load_identity(alice).node_id) in login.stdout
    assert "session" in login.stdout and "certificate" in login.stdout
    session_file = alice / SESSION_FILE
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert json.loads(session_file.read_text())["username"] == "alice"
    assert overlay("account", "login", "--state", str(bob), *server, "--user", "bob",
                   password=PASSWORD).returncode == 0

    # From here on the saved sessions name the server: no --server needed.
    asked = overlay("contacts", "add", "bob", "--state", str(alice))
    assert (asked.returncode, asked.stdout.strip()) == (0, "asked bob"), asked.stderr
    listed = overlay("contacts", "list", "--state", str(bob))
    assert listed.returncode == 0, listed.stderr
    [row] = [line.split() for line in listed.stdout.splitlines() if line.startswith("alice")]
    assert row[:2] == ["alice", "incoming"]
    accepted = overlay("contacts", "accept", "alice", "--state", str(bob))
    assert (accepted.returncode, accepted.stdout.strip()) == (0, "alice is now a contact")

    as_json = overlay("contacts", "list", "--json", "--state", str(alice))
    assert as_json.returncode == 0, as_json.stderr
    [contact] = json.loads(as_json.stdout)
    assert (contact["username"], contact["state"]) == ("bob", "accepted")
    assert contact["presence"]["status"] == "offline"  # bob's CLI never announced presence
    assert set(contact["presence"]) >= {"home_node", "home_address", "direct_address",
                                        "last_seen"}

    logout = overlay("account", "logout", "--state", str(alice))
    assert (logout.returncode, logout.stdout.strip()) == (0, f"logged out alice from "
                                                             f"{directory.address}")
    assert not session_file.exists()
    assert (alice / KNOWN_SERVERS_FILE).exists()  # the pin outlives the session
    after = overlay("contacts", "list", "--state", str(alice))
    assert after.returncode == 1
    assert one_line(after) == "overlay contacts: not logged in: run overlay account login"


def test_login_after_register_needs_neither_server_nor_later_the_user(
        directory: Directory) -> None:
    dora, fresh = directory.state("dora"), directory.state("nobody-yet")
    assert overlay("account", "register", "--state", str(dora), "--server", directory.address,
                   "--user", "dora", password=PASSWORD).returncode == 0
    # The README's own second step: the server is the one this node pinned.
    login = overlay("account", "login", "--state", str(dora), "--user", "dora",
                    password=PASSWORD)
    assert (login.returncode, login.stdout.splitlines()[0]) == \
        (0, f"logged in as dora on {directory.address}"), login.stderr
    again = overlay("account", "login", "--state", str(dora), password=PASSWORD)
    assert again.returncode == 0 and again.stdout.startswith("logged in as dora"), again.stderr
    lost = overlay("account", "login", "--state", str(fresh), password=PASSWORD)
    assert (lost.returncode, lost.stderr) == \
        (1, "overlay account: which directory server? pass --server HOST:PORT\n")
    pin_key(fresh, parse_address(directory.address), bytes.fromhex(directory.key))
    pin_key(fresh, parse_address("127.0.0.1:1"), bytes.fromhex(directory.key))
    two = overlay("account", "login", "--state", str(fresh), "--user", "dora",
                  password=PASSWORD)
    assert two.returncode == 1
    assert two.stderr == (f"overlay account: which directory server? this node knows "
                          f"{directory.address}, 127.0.0.1:1: pass --server HOST:PORT\n")
    nameless = overlay("account", "login", "--state", str(fresh), "--server",
                       directory.address, password=PASSWORD)
    assert (nameless.returncode, nameless.stderr) == \
        (1, "overlay account: which account? pass --user NAME\n")


def test_login_and_register_errors_are_one_clear_line(directory: Directory) -> None:
    carol = directory.state("carol")
    server = ("--server", directory.address)
    assert overlay("account", "register", "--state", str(carol), *server, "--user", "carol",
                   password=PASSWORD).returncode == 0

    wrong = overlay("account", "login", "--state", str(carol), *server, "--user", "carol",
                    password="not the password")
    assert wrong.returncode == 1
    assert one_line(wrong) == "overlay account: wrong username or password"
    assert not (carol / SESSION_FILE).exists()

    unknown = overlay("account", "login", "--state", str(carol), *server, "--user", "nobody",
                      password=PASSWORD)
    assert unknown.returncode == 1
    assert one_line(unknown) == "overlay account: wrong username or password"

    weak = overlay("account", "register", "--state", str(carol), *server, "--user", "dave",
                   password="short")
    assert weak.returncode == 1
    assert one_line(weak) == "overlay account: password too short: at least 10 characters"


def test_unreachable_server(directory: Directory) -> None:
    state = directory.state("lonely")
    dead = f"127.0.0.1:{free_port()}"
    refused = overlay("account", "login", "--state", str(state), "--server", dead,
                      "--user", "alice", password=PASSWORD)
    assert refused.returncode == 1
    assert one_line(refused).startswith(
        f"overlay account: cannot reach the directory server at {dead}")

    # Logout still forgets the session when the server cannot be told, and says so.
    save_session(state, SavedSession(
        server=parse_address(dead), server_key=bytes(32), username="alice",
        node_id=load_identity(state).node_id, token=bytes(32), expires_at=2**40,
        certificate=b"", certificate_expires_at=0))
    logout = overlay("account", "logout", "--state", str(state))
    assert logout.returncode == 0
    assert "warning" in one_line(logout) and "cannot reach" in logout.stderr
    assert not (state / SESSION_FILE).exists()


def test_bad_arguments_are_usage_errors(directory: Directory,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    nonsense = overlay("account", "register", "--server", "nonsense", "--user", "alice")
    assert nonsense.returncode == 2
    assert "--server" in nonsense.stderr and "Traceback" not in nonsense.stderr
    for argv in (["contacts", "add", "Not A Name"], ["account", "register"],
                 ["account", "login", "--user", "alice", "--server-key", "abc"], ["contacts"]):
        with pytest.raises(SystemExit) as usage:
            main(argv)
        assert usage.value.code == 2, argv
    capsys.readouterr()


def test_changed_server_key_is_refused_until_given(directory: Directory) -> None:
    erin = directory.state("erin")
    server = ("--server", directory.address)
    impostor_key = bytes(range(32))
    pin_key(erin, parse_address(directory.address), impostor_key)  # as if pinned long ago

    changed = overlay("account", "register", "--state", str(erin), *server, "--user", "erin",
                      password=PASSWORD)
    assert changed.returncode == 1
    line = one_line(changed)
    assert line.startswith(f"overlay account: server key for {directory.address} changed")
    assert directory.key in line and "--server-key" in line
    pins = json.loads((erin / KNOWN_SERVERS_FILE).read_text())["servers"]
    assert pins == {directory.address: impostor_key.hex()}  # a refusal changes nothing

    wrong = overlay("account", "register", "--state", str(erin), *server, "--user", "erin",
                    "--server-key", impostor_key.hex(), password=PASSWORD)
    assert wrong.returncode == 1
    assert "not the --server-key given" in one_line(wrong)

    accepted = overlay("account", "register", "--state", str(erin), *server, "--user", "erin",
                       "--server-key", directory.key, password=PASSWORD)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stderr.strip() == (f"pinned server key {directory.key} for "
                                       f"{directory.address} (replacing {impostor_key.hex()})")
    pins = json.loads((erin / KNOWN_SERVERS_FILE).read_text())["servers"]
    assert pins == {directory.address: directory.key}


LEAVES = [("account", name) for name in ("register", "login", "logout", "change-key")] + \
    [("contacts", name) for name in ("add", "accept", "decline", "remove", "list")]


@pytest.mark.parametrize(("command", "action"), LEAVES)
def test_every_subcommand_help_teaches(command: str, action: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, action, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert f"example: overlay {command}" in text
    assert "--server" in text and "--state" in text


def test_a_weak_password_is_refused_before_it_is_typed_again_or_sent(
        directory: Directory) -> None:
    """The rules are checked on the first entry: no repeat prompt, no server contacted."""
    state = directory.state("erin")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: a server contacted would be an error
    piped = overlay("account", "register", "--state", str(state), "--server", dead,
                    "--user", "erin", password="erinerinerin")
    assert piped.returncode == 1
    assert one_line(piped) == "overlay account: password must not contain the username"
    pid, fd = pty.fork()
    if pid == 0:  # the child: register on a terminal, as a person types it
        argv = overlay_command("account", "register", "--state", str(state), "--server", dead,
                               "--user", "erin")
        os.execv(argv[0], argv)
    screen = b""
    try:
        while b"password for erin: " not in screen:
            screen += os.read(fd, 1024)
        os.write(fd, b"short\n")
        with contextlib.suppress(OSError):  # EIO once the child has gone
            while chunk := os.read(fd, 1024):
                screen += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 1
    assert b"password too short: at least 10 characters" in screen
    assert b"repeat" not in screen
