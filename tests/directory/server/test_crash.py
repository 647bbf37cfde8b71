"""Crash safety: what the server acknowledged survives a SIGKILL (real process, real store:
a SQLite file, or a PostgreSQL database)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from overlay.addresses import Address, parse_address
from overlay.directory.client.connection import DirectoryClient
from tests.conftest import make_identity
from tests.directory.conftest import PASSWORD
from tests.procs import overlay_command, short_tempdir

USERS = [f"user{i:02d}" for i in range(12)]


@contextmanager
def server_process(state: Path, *args: str,
                   ) -> Iterator[tuple[subprocess.Popen[str], Address, bytes]]:
    proc = subprocess.Popen(
        overlay_command("server", "--state", str(state), "--listen", "127.0.0.1:0", "-q",
                        *args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "directory server listening on H:P key HEX"
        assert line.startswith("directory server listening on"), proc.stderr and proc.stderr.read()
        words = line.split()
        yield proc, parse_address(words[4]), bytes.fromhex(words[6])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=20)


async def test_acknowledged_writes_survive_sigkill(db: str) -> None:
    state = short_tempdir()
    try:
        with server_process(state, "--db", db) as (proc, address, key):
            async with DirectoryClient.connect(address, make_identity("user00"),
                                               server_key=key) as first:
                for name in USERS:
                    async with DirectoryClient.connect(address, make_identity(name),
                                                       server_key=key) as client:
                        await client.register(name, PASSWORD)
                await first.login("user00", PASSWORD)
                for name in USERS[1:]:
                    await first.contact_request(name)
                async with DirectoryClient.connect(address, make_identity("user01"),
                                                   server_key=key) as second:
                    await second.login("user01", PASSWORD)
                    await second.contact_accept("user00")
                    await second.contact_request("user02")
                await first.contact_remove("user03")
                # Killed right after the last acknowledgement: no chance to flush anything.
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)

        with server_process(state, "--db", db) as (_proc, address, key):
            for name in USERS:  # every account is there, with its password and key
                async with DirectoryClient.connect(address, make_identity(name),
                                                   server_key=key) as client:
                    await client.login(name, PASSWORD)
                    if name == "user00":
                        states = {c.username: c.state for c in await client.contacts()}
                        expected = {n: "outgoing" for n in USERS[2:] if n != "user03"}
                        assert states == {**expected, "user01": "accepted"}
                    if name == "user02":
                        states = {c.username: c.state for c in await client.contacts()}
                        assert states == {"user00": "incoming", "user01": "incoming"}
    finally:
        shutil.rmtree(state, ignore_errors=True)


async def test_server_restarts_on_the_same_database_keep_the_key() -> None:
    state = short_tempdir()
    try:
        with server_process(state) as (_proc, _address, key1):
            pass
        with server_process(state) as (_proc, _address, key2):
            pass
        assert key1 == key2
    finally:
        shutil.rmtree(state, ignore_errors=True)


