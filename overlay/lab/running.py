"""``bin/nat-lab start`` and ``bin/nat-lab chat``: the overlay running in a lab that is up.

``start`` launches a directory server, supernodes and one edge client per
client host, registers every client host as a user (named after the host) and
makes them all contacts.  Each background client owns its host's state
directory (a node's state directory is locked while it runs), so ``chat``
stops that host's client before it runs ``overlay chat`` in the host's
namespace with the same state directory and saved session: no password, no
new account.  The parsers' shared ``--prefix`` option is here too, since both
halves of the lab's command line use it.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

from overlay.lab.errors import LabError
from overlay.lab.netns import Lab, processes_in
from overlay.lab.topology import Host, LabConfig, host_from_name

CLIENT_KINDS = ("public-client", "nat-client")
STOP_WAIT = 10.0
"""Seconds a background client gets to log out after SIGTERM before SIGKILL."""


def add_prefix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default=LabConfig.prefix, metavar="P",
                        help="name of the lab: its namespaces are P-HOST "
                             f"(1-8 lower-case letters and digits; default {LabConfig.prefix})")


# --- start -------------------------------------------------------------------

SERVER_PORT = 7000
SUPERNODE_PORT = 7100
CLIENT_PORT = 7200
LAB_PASSWORD = "nat-lab password 1"
START_WAIT = 30.0


def run_dir(prefix: str) -> Path:
    """Where ``start`` keeps the state directories and logs of what it launched."""
    return Path(tempfile.gettempdir()) / f"overlay-lab-{prefix}"


def add_start(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "start", help="run the overlay in a lab that is up: server, supernodes, clients",
        description=(
            "Start the directory server on `server`, a supernode on every snK and an "
            "edge client on every pubK (listening: reachable) and natN-cM (behind NAT), "
            "each user named after its host and a contact of every other, all in the "
            "background.  Logs and state directories go to /tmp/overlay-lab-PREFIX. "
            "`bin/nat-lab down` stops everything and deletes the lab."),
        epilog=("example: bin/nat-lab up && bin/nat-lab start\n"
                "         bin/nat-lab exec nat1-c1 -- bin/overlay status --state "
                "/tmp/overlay-lab-ovl/nat1-c1"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_prefix(parser)
    parser.set_defaults(run=cmd_start)


def cmd_start(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise LabError("the NAT lab needs root")
    lab = Lab.attach(args.prefix)
    if not lab.is_up():
        raise LabError(f"lab {args.prefix!r} is not up: run bin/nat-lab up first")
    if processes_in(set(lab.namespaces())):
        raise LabError(f"lab {args.prefix!r} is already running something: "
                       "bin/nat-lab down, up, then start")
    base = run_dir(args.prefix)
    shutil.rmtree(base, ignore_errors=True)  # a fresh directory server and fresh users
    base.mkdir(parents=True)
    overlay = [sys.executable, "-m", "overlay"]
    server = f"{lab.host('server').address}:{SERVER_PORT}"

    def background(host: str, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (base / f"{name}.log").open("wb")
        return lab.popen(host, argv, stdout=subprocess.PIPE, stderr=log,
                         start_new_session=True)

    def first_line(proc: subprocess.Popen[bytes], name: str) -> str:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_WAIT)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line:
            raise LabError(f"{name} did not start; see {base / (name + '.log')}")
        return line

    key = first_line(background("server", "server", [
        *overlay, "server", "--listen", server, "--state", str(base / "server")]),
        "server").split()[-1]
    print(f"server      {server}  key {key}")
    for host in lab.hosts_of_kind("supernode"):
        address = f"{host.address}:{SUPERNODE_PORT}"
        line = first_line(background(host.name, host.name, [
            *overlay, "supernode", "--listen", address, "--server", server,
            "--server-key", key, "--state", str(base / host.name)]), host.name)
        print(f"{host.name:<11} {address}  {line.split()[1]}")
    clients = lab.hosts_of_kind("public-client") + lab.hosts_of_kind("nat-client")
    directory = ["--server", server, "--server-key", key]
    for host in clients:
        for step in ("register", "login"):
            lab.run(host.name, [*overlay, "account", step, "--user", host.name,
                                "--password-stdin", "--state", str(base / host.name),
                                *directory], check=True, input=LAB_PASSWORD + "\n")
    for i, a in enumerate(clients):
        for b in clients[i + 1:]:
            lab.run(a.name, [*overlay, "contacts", "add", b.name,
                             "--state", str(base / a.name)], check=True)
            lab.run(b.name, [*overlay, "contacts", "accept", a.name,
                             "--state", str(base / b.name)], check=True)
    for host in clients:
        listen = ["--listen", f"{host.address}:{CLIENT_PORT}"]
        line = first_line(background(host.name, host.name, [
            *overlay, "client", "--user", host.name, "--state", str(base / host.name),
            *directory, *listen]), host.name)
        print(f"{host.name:<11} {line}")
    print(f"running; logs and state in {base}.  Try:\n"
          f"  bin/nat-lab exec {clients[-1].name} -- bin/overlay status --state "
          f"{base / clients[-1].name}\n"
          f"  bin/nat-lab exec {clients[-1].name} -- bin/overlay send --state "
          f"{base / clients[-1].name} {clients[0].name} hello\n"
          f"  bin/nat-lab chat {clients[-1].name}   # chat as {clients[-1].name} (stops its "
          f"background client)\n"
          f"  bin/nat-lab down")
    return 0


# --- chat --------------------------------------------------------------------


def add_chat(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "chat", help="chat as one of the lab's users, on that user's host",
        description=(
            "Run `overlay chat` as the user HOST (a pubK or natN-cM host) inside HOST's "
            "namespace, with the state directory and saved session that `start` made for "
            "it: no password, no new account.  The background client `start` ran on HOST "
            "holds that state directory, so it is stopped first (and not restarted: the "
            "chat is HOST's node from then on).  Arguments after `--` go to `overlay chat`."),
        epilog=("examples, in two terminals:\n"
                "  bin/nat-lab chat nat1-c1\n"
                "  bin/nat-lab chat nat2-c1        # then type: /msg nat1-c1 hello\n"
                "one message, waiting for its receipt:\n"
                "  bin/nat-lab chat nat2-c1 -- --to nat1-c1 --message 'hello'"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_prefix(parser)
    parser.add_argument("host", metavar="HOST", help="a client host: pubK or natN-cM")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CHAT-OPTIONS",
                        help="more options for overlay chat (e.g. --json, or --to USER "
                             "--message TEXT)")
    parser.set_defaults(run=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    extra: list[str] = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    host_from_name(args.prefix, args.host)  # a name no lab can have: say so, root or not
    if os.geteuid() != 0:
        raise LabError("the NAT lab needs root")
    lab = Lab.attach(args.prefix)
    if not lab.is_up():
        raise LabError(f"lab {args.prefix!r} is not up: bin/nat-lab up, then start")
    host = lab.host(args.host)
    if host.kind not in CLIENT_KINDS:
        raise LabError(f"{host.name} runs no user (it is a {host.kind}): "
                       "chat on a pubK or natN-cM host")
    state = run_dir(args.prefix) / host.name
    if not state.is_dir():
        raise LabError(f"no user {host.name} in lab {args.prefix!r}: run bin/nat-lab start first")
    stop_clients_of(host, state)
    argv = [sys.executable, "-m", "overlay", "chat", "--user", host.name, "--state", str(state)]
    if host.kind == "public-client":  # reachable, as its background client was
        argv += ["--listen", f"{host.address}:{CLIENT_PORT}"]
    command = lab.command(host, [*argv, *extra])
    sys.stdout.flush()
    try:
        os.execv(command[0], command)  # the chat's exit status is ours
    except OSError as exc:
        raise LabError(f"cannot run {command[0]}: {exc.strerror}") from None


def stop_clients_of(host: Host, state: Path) -> None:
    """Stop the ``overlay client`` processes on ``host`` that run on ``state``.

    SIGTERM lets a client log out (its contacts see it go offline, then come
    back with the chat); one still there after :data:`STOP_WAIT` is killed.
    """
    def running() -> list[int]:
        found = []
        for pid in processes_in([host.namespace]):
            try:
                words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"client" in words and str(state).encode() in words:
                found.append(pid)
        return found

    pids = running()
    for pid in pids:
        with suppress(ProcessLookupError):  # ended by itself: as wanted
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = running()
    for pid in pids:
        with suppress(ProcessLookupError):  # ended by itself: as wanted
            os.kill(pid, signal.SIGKILL)

