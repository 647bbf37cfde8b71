"""``overlay bench nat``: hole punching over every NAT pairing of the real-NAT lab, repeated.

Why: issue #14's targets are about outcomes on real NATs (the share of
conversations that end direct, how fast, at what cost in attempts) and about
what the upgrade buys (latency, supernode traffic).  Only the lab
(:mod:`overlay.lab`: namespaces, iptables, real processes) has real NATs, so
this bench needs root, like the lab tests.

One lab for the whole run: a directory server and three supernodes on the
public side, one client host behind each of two NAT routers.  For each
pairing the routers are switched to its NAT types
(:func:`~overlay.lab.nat_types.set_nat_behaviour`, which also forgets old
mappings), and each session is two fresh lab peer processes
(:mod:`overlay.lab.peer`) with two fresh users: the sender runs
:mod:`overlay.lab.peer_bench`'s session (a relayed window of K stop-and-wait
messages with punching held off, then punching while messages flow, then a
window of K on the path it ended on); the receiver takes everything until the
sender closes.  Around each window the bench reads every supernode's counters
(``overlay status --json``: packets forwarded for others, bytes sent on its
links), so "supernode bytes per conversation" is what the supernodes sent
during the window (keepalives and routing among supernodes included: the same
background in both windows).  Latency figures are ratios of the same session's
two windows, so they do not depend on how fast this machine is.

:mod:`overlay.bench.nat_report` holds the records and the summaries.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from overlay.bench.nat_report import NatReport, Pairing, SessionResult, summarise
from overlay.bench.progress import Progress
from overlay.lab import Lab, LabConfig, LabError, available
from overlay.lab.nat_types import NatBehaviour, set_nat_behaviour
from overlay.lab.pipes import LineReader

__all__ = ["PAIRINGS", "NatBenchConfig", "NatReport", "Pairing", "run"]

PAIRINGS = (Pairing("easy", "easy"), Pairing("easy", "hard"), Pairing("hard", "hard"),
            Pairing("easy", "easy", firewall=False), Pairing("easy", "hard", firewall=False),
            Pairing("hard", "hard", firewall=False))
"""Every pairing the lab has: hard-easy is easy-hard with the roles swapped (which
side initiates follows the node ids, not the hosts), so it is not run twice."""

SERVER_PORT = 7000
SUPERNODE_PORT = 7100
START_WAIT = 60.0


@dataclass(frozen=True)
class NatBenchConfig:
    pairings: tuple[Pairing, ...] = PAIRINGS
    repeat: int = 5
    """Sessions per pairing."""
    messages: int = 100
    """Stop-and-wait messages in each of a session's two measured windows."""
    start_delay: float = 5.0
    """Seconds punching is held off so that the first window is relayed for sure."""
    session_timeout: float = 90.0
    """Bound on one session, from its processes' start to their last line."""
    time_limit: float = 1800.0
    """Bound on the whole run: no session starts after it (the report says so)."""
    prefix: str = "ovb"
    """The lab's name (its namespaces are PREFIX-HOST)."""


class _System:
    """The lab with a server and supernodes running; spawns sessions; stops everything."""

    def __init__(self, config: NatBenchConfig) -> None:
        self.config = config
        self.lab = Lab(LabConfig(prefix=config.prefix, nat_networks=2, clients_per_nat=1,
                                 supernodes=3, public_clients=0))
        self.scratch = Path(tempfile.mkdtemp(prefix="ovl-bench-nat-", dir="/tmp"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.server = f"{self.lab.host('server').address}:{SERVER_PORT}"
        self.key = ""
        self.supernodes: list[str] = []

    def start(self) -> None:
        self.lab.up()
        overlay = [sys.executable, "-m", "overlay"]
        server = self._spawn("server", [*overlay, "server", "-q", "--listen", self.server,
                                        "--state", str(self.scratch / "server")])
        self.key = _line(server, "the directory server", time.monotonic() + START_WAIT).split()[-1]
        for name in ("sn1", "sn2", "sn3"):
            address = f"{self.lab.host(name).address}:{SUPERNODE_PORT}"
            proc = self._spawn(name, [*overlay, "supernode", "-q", "--listen", address,
                                      "--server", self.server, "--server-key", self.key,
                                      "--state", str(self.scratch / name)])
            _line(proc, name, time.monotonic() + START_WAIT)
            self.supernodes.append(name)

    def stop(self) -> None:
        _stop(self.procs)
        self.lab.down()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _spawn(self, host: str, argv: list[str], log: Path | None = None,
               ) -> subprocess.Popen[bytes]:
        with (log.open("wb") if log else open(os.devnull, "wb")) as stderr:
            proc = self.lab.popen(host, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=stderr)
        self.procs.append(proc)
        return proc

    def counters(self, deadline: float) -> tuple[int, int]:
        """(bytes sent on all supernode links, packets forwarded), summed over supernodes."""
        procs = [self.lab.popen(name, [sys.executable, "-m", "overlay", "status", "--json",
                                       "--state", str(self.scratch / name)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                 for name in self.supernodes]
        sent = forwarded = 0
        for name, proc in zip(self.supernodes, procs, strict=True):
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise LabError(f"overlay status on {name} did not answer in time") from None
            if proc.returncode != 0:
                raise LabError(f"overlay status on {name} failed")
            try:
                status = json.loads(out)
                sent += sum(link.get("bytes_sent", 0) for link in status["neighbours"])
                forwarded += status["forwarding"]["forwarded"]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise LabError(f"overlay status on {name} said something unexpected "
                               f"({exc!r})") from None
        return sent, forwarded

    def session(self, pairing: Pairing, number: int) -> SessionResult:
        """One conversation behind ``pairing``'s NATs, with two fresh users and processes."""
        config = self.config
        for router, mapping in (("nat1", pairing.a), ("nat2", pairing.b)):
            set_nat_behaviour(self.lab, router, NatBehaviour(mapping, pairing.firewall))
        deadline = time.monotonic() + config.session_timeout
        sender_user, receiver_user = f"sender{number}", f"receiver{number}"
        common = ["--server", self.server, "--key", self.key, "--punch",
                  "--start-delay", str(config.start_delay)]

        def peer(host: str, user: str, other: str, *args: str) -> subprocess.Popen[bytes]:
            return self._spawn(host, [sys.executable, "-m", "overlay.lab.peer", *common,
                                      "--user", user, "--peer", other,
                                      "--state", str(self.scratch / user), *args],
                               log=self.scratch / f"{user}.err")

        limit = max(10.0, config.session_timeout - config.start_delay - 20.0)
        receiver = peer("nat2-c1", receiver_user, sender_user, "--until-closed")
        sender = peer("nat1-c1", sender_user, receiver_user, "--bench", str(config.messages),
                      "--session-limit", str(config.start_delay + limit))
        windows: dict[str, int] = {}
        try:
            for proc, who in ((sender, "sender"), (receiver, "receiver")):
                _event(proc, who, deadline, "ready")
            for phase in ("before", "after"):
                _event(sender, "sender", deadline, "window")
                windows[f"{phase}_bytes"], windows[f"{phase}_forwarded"] = \
                    self.counters(deadline)
                _go(sender)
                _event(sender, "sender", deadline, "window-done")
                sent, forwarded = self.counters(deadline)
                windows[f"{phase}_bytes"] = sent - windows[f"{phase}_bytes"]
                windows[f"{phase}_forwarded"] = forwarded - windows[f"{phase}_forwarded"]
                _go(sender)
            result = _event(sender, "sender", deadline, "session")
            received = _event(receiver, "receiver", deadline, "received")
        except LabError as exc:
            _stop([sender, receiver])
            return SessionResult(pairing.name, number,
                                 error=f"{exc}{_last_words(self.scratch, sender_user)}")
        finally:
            _stop([sender, receiver])
            for proc in (sender, receiver):
                self.procs.remove(proc)
            for user in (sender_user, receiver_user):
                shutil.rmtree(self.scratch / user, ignore_errors=True)
                (self.scratch / f"{user}.err").unlink(missing_ok=True)
        try:
            return SessionResult.from_events(pairing.name, number, result, received, windows)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return SessionResult(pairing.name, number,
                                 error=f"the peers' reports lack what the bench reads ({exc!r})")


def _last_words(scratch: Path, user: str) -> str:
    """The last line ``user``'s peer wrote to stderr (its error), for the report."""
    try:
        lines = (scratch / f"{user}.err").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f" ({lines[-1][:300]})" if lines else ""


def _line(proc: subprocess.Popen[bytes], who: str, deadline: float) -> str:
    """The next line ``proc`` prints (through its one :class:`LineReader`)."""
    assert proc.stdout is not None
    reader = _READERS.get(proc)
    if reader is None:
        reader = _READERS[proc] = LineReader(proc.stdout)
    line = reader.readline(max(0.0, deadline - time.monotonic()))
    if line is None:
        raise LabError(f"{who} printed nothing in time")
    text = line.decode(errors="replace").strip()
    if not text:
        raise LabError(f"{who} exited with status {proc.wait()}")
    return text


_READERS: weakref.WeakKeyDictionary[subprocess.Popen[bytes], LineReader] = \
    weakref.WeakKeyDictionary()
"""Each process's stdout reader, for as long as the process object lives."""


def _event(proc: subprocess.Popen[bytes], who: str, deadline: float,
           wanted: str) -> dict[str, Any]:
    """The next line of ``proc``, which must be the event ``wanted``."""
    line = _line(proc, who, deadline)
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise LabError(f"{who} printed {line[:200]!r} where the event {wanted!r} was due")
    if event.get("event") != wanted:
        raise LabError(f"{who} said {event.get('event')!r} where {wanted!r} was due")
    return event


def _go(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)


async def run(config: NatBenchConfig, progress: Progress) -> NatReport:
    """Every pairing of ``config``, ``repeat`` sessions each; LabError if the lab cannot run."""
    reason = await trio.to_thread.run_sync(available)
    if reason is not None:
        raise LabError(f"overlay bench nat needs the NAT lab: {reason}")
    system = _System(config)
    began = time.monotonic()
    sessions: list[SessionResult] = []
    total = len(config.pairings) * config.repeat
    stopped_early = False
    try:
        await trio.to_thread.run_sync(system.start)
        for pairing in config.pairings:
            for i in range(config.repeat):
                if time.monotonic() - began > config.time_limit:
                    stopped_early = True
                    break
                result = await trio.to_thread.run_sync(system.session, pairing,
                                                       len(sessions) + 1)
                sessions.append(result)
                progress(f"{pairing.name} {i + 1}/{config.repeat}: {result.outcome()}",
                         len(sessions) / total)
                await trio.lowlevel.checkpoint()  # a Ctrl-C during the session stops here
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(system.stop)
    return summarise(config.pairings, config.repeat, config.messages, sessions,
                     stopped_early=stopped_early, wall_s=time.monotonic() - began)
