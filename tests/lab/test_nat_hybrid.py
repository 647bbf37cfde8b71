"""The hybrid design on a real NAT: real processes in network namespaces behind iptables.

A directory server and three supernodes on the public side, a reachable
client there too, and one client behind each of two NAT routers.  What this
proves: the server's dial-back tells reachable from NAT-ed clients; nobody
can dial a NAT-ed client directly; two clients behind different NATs exchange
1,000 messages through supernodes, all of them, in order; and when the
sender's home supernode is killed (SIGKILL) mid-conversation the client moves
to its standby and every message still arrives exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overlay.lab import Lab, LabConfig
from overlay.lab.pipes import LineReader
from tests.lab.conftest import lab_prefix
from tests.procs import short_tempdir

PREFIX = lab_prefix("ovh")
SCRATCH = lab_prefix("ovs")  # the lab `bin/nat-lab` builds in one test
WAIT = 60.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
SERVER_PORT = 7000
SUPERNODE_PORT = 7100
CLIENT_PORT = 7200
PEER = ["-m", "overlay.lab.peer"]  # the lab peer program (overlay/lab/peer.py)


class Running:
    """The lab with the server and supernodes up; spawns peers; kills everything at the end."""

    def __init__(self, lab: Lab, scratch: Path) -> None:
        self.lab = lab
        self.scratch = scratch
        self.procs: list[subprocess.Popen[bytes]] = []
        self.key = ""
        self.server = f"{lab.host('server').address}:{SERVER_PORT}"
        self.supernodes: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self.logs: dict[int, Path] = {}
        """Each peer's --log file by pid: a failure message quotes its end."""
        self.readers: dict[int, LineReader] = {}
        """Each process's stdout lines (the only reader of that pipe)."""

    def spawn(self, host: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = self.lab.popen(host, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def line(self, proc: subprocess.Popen[Any], what: str) -> str:
        assert proc.stdout is not None
        reader = self.readers.get(proc.pid)
        if reader is None:
            reader = self.readers[proc.pid] = LineReader(proc.stdout)
        line = reader.readline(WAIT)
        if line is None:
            proc.kill()  # its stderr says where it was (the peer dumps its stacks)
            err = proc.communicate(timeout=WAIT)[1] or b""
            text = err.decode(errors="replace") if isinstance(err, bytes) else err
            raise AssertionError(f"{what}: nothing printed within {WAIT:g} s: {text[-3000:]}"
                                 f"{self._log_tail(proc)}")
        text = line.decode(errors="replace")
        if not text:
            err = proc.stderr.read() if proc.stderr else b""
            raise AssertionError(f"{what} exited: {err.decode(errors='replace')[-2000:]}")
        return text.strip()

    def _log_tail(self, proc: subprocess.Popen[Any]) -> str:
        path = self.logs.get(proc.pid)
        if path is None or not path.exists():
            return ""
        return f"\n-- the end of {path.name}:\n{path.read_text(errors='replace')[-3000:]}"

    def event(self, proc: subprocess.Popen[Any], what: str) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.line(proc, what))
        return event

    def start_system(self) -> None:
        overlay = [sys.executable, "-m", "overlay"]
        server = self.spawn("server", [*overlay, "server", "-q", "--listen", self.server,
                                       "--state", str(self.scratch / "server")])
        words = self.line(server, "server").split()  # "... listening on H:P key HEX"
        self.key = words[-1]
        for name in ("sn1", "sn2", "sn3"):
            address = f"{self.lab.host(name).address}:{SUPERNODE_PORT}"
            proc = self.spawn(name, [*overlay, "supernode", "-q", "--listen", address,
                                     "--server", self.server, "--server-key", self.key,
                                     "--state", str(self.scratch / name)])
            node_id = self.line(proc, name).split()[1]  # "supernode ID listening on ..."
            self.supernodes[node_id] = (name, proc)

    def peer(self, host: str, user: str, peer: str, *args: str,
             listen: bool = True) -> subprocess.Popen[bytes]:
        argv = [sys.executable, *PEER, "--server", self.server, "--key", self.key,
                "--user", user, "--peer", peer, "--state", str(self.scratch / user),
                "--log", str(self.scratch / f"{user}.log"), *args]
        if listen:
            argv += ["--listen", f"{self.lab.host(host).address}:{CLIENT_PORT}"]
        proc = self.spawn(host, argv)
        self.logs[proc.pid] = self.scratch / f"{user}.log"
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=10)


@contextlib.contextmanager
def running_system(prefix: str, what: str, lab_timings: list[str], *,
                   public_clients: int) -> Iterator[Running]:
    """A lab of two NATs (one client each) and three supernodes, the system started in it;
    torn down after, its times recorded.  ``OVERLAY_LAB_KEEP=1`` keeps the peers' logs."""
    lab = Lab(LabConfig(prefix=prefix, nat_networks=2, clients_per_nat=1, supernodes=3,
                        public_clients=public_clients))
    scratch = short_tempdir()
    running = Running(lab, scratch)
    try:
        lab.up()
        running.start_system()
        yield running
    finally:
        running.stop()
        teardown = lab.down()
        lab_timings.append(f"{prefix} ({what}): setup {lab.setup_seconds or 0:.3f} s, "
                           f"teardown {teardown:.3f} s")
        assert lab.leftovers() == []
        if os.environ.get("OVERLAY_LAB_KEEP") != "1":
            shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def system(netns_required: None, lab_timings: list[str]) -> Iterator[Running]:
    with running_system(PREFIX, "hybrid system", lab_timings, public_clients=1) as running:
        yield running


@pytest.mark.netns
def test_dial_back_tells_nat_ed_clients_from_reachable_ones(system: Running) -> None:
    public = system.peer("pub1", "pat", "nora", "--receive", "0")
    natted = system.peer("nat1-c1", "nora", "pat", "--receive", "0")
    pat = system.event(public, "pat")
    nora = system.event(natted, "nora")
    assert pat["reachable"] is True, pat
    assert nora["reachable"] is False, nora
    assert "NAT" in nora["reason"]
    assert pat["home"] in system.supernodes and nora["home"] in system.supernodes
    # And indeed nobody can dial nora's listening address directly.
    dial = ("import socket,sys\n"
            "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)\n"
            "except OSError as e:\n print('failed', e); sys.exit(1)\nprint('connected')")
    result = system.lab.run("pub1", [sys.executable, "-c", dial,
                                     system.lab.host("nat1-c1").address, str(CLIENT_PORT)],
                            timeout=WAIT)
    assert result.returncode == 1, result.stdout
    public.kill()
    natted.kill()


@pytest.mark.netns
def test_clients_behind_two_nats_exchange_1000_messages(system: Running) -> None:
    receiver = system.peer("nat2-c1", "bob", "alice", "--receive", "1000")
    sender = system.peer("nat1-c1", "alice", "bob", "--send", "1000")
    assert system.event(receiver, "bob")["reachable"] is False
    assert system.event(sender, "alice")["reachable"] is False
    sent = system.event(sender, "alice sending")
    received = system.event(receiver, "bob receiving")
    assert sent["event"] == "sent", sent
    assert received == {**received, "event": "received", "count": 1000, "in_order": True,
                        "duplicates": 0}
    assert sent["path"]["path"] == "relayed"
    assert set(sent["path"]["via"]) <= set(system.supernodes)


@pytest.mark.netns
def test_killing_the_home_supernode_mid_conversation_loses_nothing(system: Running) -> None:
    receiver = system.peer("nat2-c1", "dave", "carol", "--receive", "1000")
    sender = system.peer("nat1-c1", "carol", "dave", "--send", "1000", "--pause-at", "500")
    system.event(receiver, "dave")
    system.event(sender, "carol")
    paused = system.event(sender, "carol paused")
    assert paused["event"] == "paused", paused
    name, proc = system.supernodes.pop(paused["home"])
    proc.send_signal(signal.SIGKILL)  # no goodbye: the kernel just resets its connections
    proc.wait(timeout=WAIT)
    assert sender.stdin is not None
    sender.stdin.write(b"go\n")
    sender.stdin.flush()
    sent = system.event(sender, "carol sending")
    received = system.event(receiver, "dave receiving")
    assert sent["event"] == "sent" and sent["failovers"] >= 1, sent
    assert sent["home"] != paused["home"], f"still attached to the killed {name}"
    assert received["count"] == 1000 and received["in_order"] and received["duplicates"] == 0


@pytest.mark.netns
def test_nat_lab_start_runs_the_whole_system(netns_required: None) -> None:
    """`bin/nat-lab start` as a user runs it: up, start, a message across the NATs, down."""
    nat_lab = str(Path(__file__).resolve().parents[2] / "bin" / "nat-lab")
    env = {**os.environ, "OVERLAY_NETNS_INSTALL": "0"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([nat_lab, *args], capture_output=True, text=True,
                              timeout=WAIT * 2, check=False, env=env)

    try:
        assert run("up", "--prefix", SCRATCH).returncode == 0
        started = run("start", "--prefix", SCRATCH)
        assert started.returncode == 0, started.stderr
        assert "nat1-c1" in started.stdout and "not reachable (relayed)" in started.stdout
        state = f"/tmp/overlay-lab-{SCRATCH}/nat2-c1"
        sent = run("exec", "--prefix", SCRATCH, "nat2-c1", "--", sys.executable, "-m", "overlay",
                   "send", "--state", state, "nat1-c1", "hello across two NATs")
        assert sent.returncode == 0, sent.stderr
        assert "acknowledged" in sent.stdout
        # A chat between the two users, as docs/nat-lab.md tells: `chat` stops each
        # host's background client and chats on its state directory and session.
        listener = subprocess.Popen([nat_lab, "chat", "--prefix", SCRATCH, "nat1-c1", "--",
                                     "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env)
        try:
            assert listener.stdout is not None
            ready, _, _ = select.select([listener.stdout], [], [], WAIT)
            first = json.loads(listener.stdout.readline()) if ready else {}
            assert first.get("event") == "ready", first or listener.stderr.read()
            assert first["user"] == "nat1-c1"
            chat = run("chat", "--prefix", SCRATCH, "nat2-c1", "--", "--to", "nat1-c1",
                       "--message", "chat across two NATs")
            assert chat.returncode == 0, chat.stdout + chat.stderr
            assert "delivered" in chat.stdout + chat.stderr
        finally:  # the receipt came back, so the message event is printed by now
            listener.terminate()
            rest, _ = listener.communicate(timeout=WAIT)
        events = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
        [got] = [e for e in events if e["event"] == "message"]
        assert got["text"] == "chat across two NATs" and got["peer"] == "nat2-c1", got
    finally:
        down = run("down", "--prefix", SCRATCH)
        assert down.returncode == 0, down.stderr
        assert "nothing is left" in down.stdout



@pytest.mark.netns
def test_two_lab_chats_behind_firewalled_easy_nats_go_direct(netns_required: None) -> None:
    """The docs/nat-lab.md recipe: `nat` turns both routers' firewalls on, `start`, then
    two `chat`s: the first message is relayed, the chats punch a hole, and a later
    message goes direct (the interactive one on a real terminal, the other as JSON)."""
    prefix = lab_prefix("ovd")
    nat_lab = str(Path(__file__).resolve().parents[2] / "bin" / "nat-lab")
    env = {**os.environ, "OVERLAY_NETNS_INSTALL": "0"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([nat_lab, *args, "--prefix", prefix], capture_output=True,
                              text=True, timeout=WAIT * 2, check=False, env=env)

    try:
        assert run("up").returncode == 0
        for router in ("nat1", "nat2"):
            changed = run("nat", router, "--firewall", "on")
            assert changed.returncode == 0, changed.stderr
            assert changed.stdout == f"{router}: easy mapping, firewall on\n"
        assert run("start").returncode == 0
        listener = subprocess.Popen([nat_lab, "chat", "--prefix", prefix, "nat1-c1", "--",
                                     "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env)
        try:
            assert listener.stdout is not None
            ready, _, _ = select.select([listener.stdout], [], [], WAIT)
            assert ready and json.loads(listener.stdout.readline())["event"] == "ready"
            with Terminal([nat_lab, "chat", "--prefix", prefix, "nat2-c1"], env) as chat:
                chat.expect("/help lists the commands")
                chat.type("/msg nat1-c1 first\r")
                chat.expect("first  [delivered")
                for _ in range(int(WAIT)):
                    chat.type("/status\r")
                    if chat.expect("nat1-c1: ", then="\n").startswith("direct"):
                        break
                    time.sleep(1)
                else:
                    raise AssertionError(f"never direct:\n{chat.screen}")
                chat.type("/msg nat1-c1 second\r")
                chat.expect("second  [sent, direct]")
                chat.expect("second  [delivered")
                chat.type("/quit\r")
        finally:
            listener.terminate()
            rest, _ = listener.communicate(timeout=WAIT)
        paths = {e["text"]: e["path"] for e in map(json.loads, rest.splitlines())
                 if e["event"] == "message"}
        assert paths["first"].startswith("relayed via ") and paths["second"] == "direct", paths
    finally:
        down = run("down")
        assert down.returncode == 0, down.stderr


class Terminal:
    """A command on a pseudo-terminal: type into it, wait for text on its screen."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv, self.env = argv, env
        self.screen = ""
        self._seen = 0

    def __enter__(self) -> Terminal:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the command, on the terminal
            os.execve(self.argv[0], self.argv, self.env)
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)
        os.close(self.fd)

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, text: str, *, then: str = "") -> str:
        """Wait for ``text`` after what was already matched; return what follows it, up
        to ``then`` (which must arrive too) when given."""
        deadline = time.monotonic() + WAIT
        while True:
            at = self.screen.find(text, self._seen)
            end = -1 if at < 0 or not then else self.screen.find(then, at + len(text))
            if at >= 0 and (not then or end >= 0):
                self._seen = at + len(text)
                return self.screen[self._seen:end] if then else ""
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} within {WAIT} s:\n{self.screen}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    chunk = b""
                assert chunk, f"the chat ended before {text!r}:\n{self.screen}"
                self.screen += ANSI.sub("", chunk.decode(errors="replace"))
