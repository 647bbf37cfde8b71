"""Running ``overlay`` as real processes from tests (bounded waits, no leftovers)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WAIT = 20.0  # upper bound on any single wait; the machines are shared and noisy
START_WAIT = 30.0  # for a role process's first line (it may log in first)


def overlay_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "overlay", *args]


def run_overlay(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(overlay_command(*args), capture_output=True, text=True,
                          timeout=timeout, check=False)


def short_tempdir() -> Path:
    """Unix socket paths must stay under 108 bytes: pytest's tmp_path can be longer."""
    return Path(tempfile.mkdtemp(prefix="ovl-", dir="/tmp"))


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class NodeProcess:
    """``overlay node`` in a child process, its log in a file."""

    def __init__(self, state: Path, *args: str) -> None:
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.log_path = state.with_suffix(".log")
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            overlay_command("node", "--state", str(state), *args),
            stdout=self._log, stderr=subprocess.STDOUT, text=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def status(self) -> dict[str, Any] | None:
        """The node's ``status --json``, or None while it is not answering."""
        result = run_overlay("status", "--json", "--state", str(self.state), timeout=WAIT)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                    timeout: float = WAIT) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log}")
            status = self.status()
            if status is not None and predicate(status):
                found.append(status)
                return True
            return False

        wait_until(check, what, timeout)
        return found[0]

    def ready(self) -> dict[str, Any]:
        return self.wait_status(lambda s: True, "the control socket")

    def stop(self, sig: int = signal.SIGINT, timeout: float = WAIT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            if self.proc.returncode is None:
                os.kill(self.proc.pid, signal.SIGCONT)  # in case a test stopped it
            self.proc.kill()
            self.proc.wait(WAIT)
        self._log.close()


@contextmanager
def node_processes() -> Iterator[Callable[..., NodeProcess]]:
    """A factory of node processes; every one is killed and its state removed at the end."""
    root = short_tempdir()
    started: list[NodeProcess] = []

    def start(name: str, *args: str) -> NodeProcess:
        node = NodeProcess(root / name, *args)
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            node.kill()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class ServerProcess:
    """A running ``overlay server``: where it listens, the key it proves, its log."""

    proc: subprocess.Popen[str]
    address: tuple[str, int]
    key: bytes
    log_path: Path

    @property
    def listen(self) -> str:
        """The address as the command line takes it (``host:port``)."""
        return f"{self.address[0]}:{self.address[1]}"

    @property
    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def server_process(*args: str) -> Iterator[ServerProcess]:
    """``overlay server`` on 127.0.0.1 in a fresh state directory, stopped and removed
    at the end; ``args`` are extra command-line options."""
    root = short_tempdir()
    log_path = root / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        overlay_command("server", "--listen", "127.0.0.1:0", "--state", str(root / "server"),
                        *args),
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("directory server listening on "), \
            f"server did not start: {line!r}\n{log_path.read_text()}"
        words = line.split()  # "directory server listening on H:P key HEX"
        host, _, port = words[4].rpartition(":")
        yield ServerProcess(proc, (host.strip("[]"), int(port)), bytes.fromhex(words[6]),
                            log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


class Processes:
    """``overlay`` processes a test started; :meth:`stop` interrupts and reaps them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> tuple[subprocess.Popen[str], str]:
        """Start ``overlay ARGS`` and return it with the first line it prints."""
        proc = subprocess.Popen(overlay_command(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_WAIT)
        line = proc.stdout.readline().strip() if ready else ""
        if not line:
            proc.kill()
            raise AssertionError(f"overlay {args[0]} did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
        return proc, line

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
