"""A real ``overlay server`` process under hostile load (issue #11 items 4 and 5).

A client that floods PINGs, or requests, and never reads the answers is
disconnected and the server's memory stays bounded; a crowd of idle connections
from several source addresses, re-opened as soon as they are dropped, does not
keep honest clients from completing handshakes and logging in.
"""

from __future__ import annotations

import pytest
import trio

from overlay.directory.client.connection import DirectoryClient
from overlay.errors import DirectoryUnavailable
from overlay.proto.messages import CloseCode, DirectoryRequest, Message
from tests.conftest import make_identity
from tests.directory.conftest import PASSWORD
from tests.hostile import IdleCrowd, flood_never_reading, honest_link_retrying, rss_kib
from tests.procs import WAIT, ServerProcess, server_process


async def register_and_login(server: ServerProcess, name: str, *, tries: int = 3) -> int:
    """Register and log in, tried again after an OVERLOADED refusal of the handshake, as
    a real node's directory link does (see :func:`honest_link_retrying` for why one
    refusal is not starvation when the client shares its address with an idle crowd);
    the tries used."""
    for attempt in range(1, tries + 1):
        try:
            async with DirectoryClient.connect(server.address, make_identity(name),
                                               server_key=server.key) as client:
                await client.register(name, PASSWORD)
                await client.login(name, PASSWORD)
        except DirectoryUnavailable as exc:
            if "overloaded" not in str(exc) or attempt == tries:
                raise
        else:
            return attempt
    raise AssertionError("unreachable")


def requests(count: int) -> list[Message]:
    return [DirectoryRequest(i, "login", {"username": "nobody", "password": "x"})
            for i in range(count)]


@pytest.mark.parametrize("what", ["pings", "requests"])
async def test_a_client_that_never_reads_is_disconnected(what: str) -> None:
    with server_process() as server:
        start_kib = rss_kib(server.proc.pid)
        batch = None if what == "pings" else requests(2_000)
        flood = await flood_never_reading(server.address, make_identity("flooder"),
                                          max_frames=5_000_000, time_limit=WAIT, batch=batch)
        print(flood, f"RSS at start {start_kib} KiB")
        assert flood.disconnected is not None, f"still connected after {flood.frames} frames"
        assert server.proc.poll() is None, server.log
        peak_kib = rss_kib(server.proc.pid, field="VmHWM")
        assert peak_kib < 2 * start_kib + 30 * 1024, (start_kib, peak_kib)
        # Honest clients are still served.
        await register_and_login(server, "alice")
        assert server.proc.poll() is None
        log = server.log
        assert f"gone: {CloseCode.describe(CloseCode.SLOW_READER)} (we: " in log, log
        assert "Traceback" not in log, log


async def test_idle_connections_do_not_lock_honest_clients_out() -> None:
    sources = [f"127.0.0.{i}" for i in range(1, 11)]
    with server_process() as server:
        start_kib = rss_kib(server.proc.pid)
        crowd = IdleCrowd(server.address, sources, per_source=12, max_opens=50_000)
        failures: dict[str, str] = {}

        retried: list[int] = []
        logins_retried: list[int] = []

        async def honest(i: int) -> None:
            outcome, tries = await honest_link_retrying(
                server.address, make_identity(f"honest{i}"), source_host=sources[i % len(sources)])
            if tries > 1:
                retried.append(i)
            if outcome is not None:
                failures[f"handshake {i}"] = f"{outcome} (after {tries} tries)"

        async def user(i: int) -> None:
            try:
                if await register_and_login(server, f"user{i}") > 1:
                    logins_retried.append(i)
            except Exception as exc:  # reported below, with the others
                failures[f"login {i}"] = repr(exc)

        async with trio.open_nursery() as nursery:
            await nursery.start(crowd.run)
            with trio.fail_after(WAIT):
                await crowd.churned.wait()
            async with trio.open_nursery() as honest_peers:
                for i in range(20):
                    honest_peers.start_soon(honest, i)
                for i in range(5):
                    honest_peers.start_soon(user, i)
            opens_meanwhile = crowd.opens
            nursery.cancel_scope.cancel()
        print(crowd, f"{opens_meanwhile} opened by the time the honest clients were done; "
              f"{len(retried)} honest handshakes and {len(logins_retried)} logins needed "
              "another try")
        assert failures == {}, failures
        assert crowd.closed_by_target > 120 and opens_meanwhile > 2 * 120, crowd
        assert server.proc.poll() is None, server.log
        assert rss_kib(server.proc.pid, field="VmHWM") < 2 * start_kib + 30 * 1024
        log = server.log
        assert "Traceback" not in log, log
        assert CloseCode.describe(CloseCode.SLOW_READER) not in log
