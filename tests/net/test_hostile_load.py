"""A real node process under hostile load (issue #11 items 4 and 5).

A neighbour that floods PINGs and never reads the PONGs is disconnected and the
node's memory stays bounded; a crowd of idle connections from several source
addresses, re-opened as soon as they are dropped, locks out neither honest
neighbours dialling in nor the peer the node dials itself.
"""

from __future__ import annotations

import socket

import trio

from overlay.addresses import Address, parse_address
from overlay.proto.messages import CloseCode
from tests.conftest import make_identity
from tests.hostile import (
    IdleCrowd,
    flood_never_reading,
    honest_link,
    honest_link_retrying,
    rss_kib,
)
from tests.procs import WAIT, NodeProcess, node_processes

MIB = 1024


def rss_bound(start_kib: int) -> int:
    return 2 * start_kib + 30 * MIB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def listening(node: NodeProcess) -> Address:
    status = await trio.to_thread.run_sync(node.ready)
    return parse_address(status["listen"])


async def test_a_neighbour_that_pings_and_never_reads_is_disconnected() -> None:
    with node_processes() as start:
        node = start("target", "--listen", "127.0.0.1:0")
        address = await listening(node)
        start_kib = rss_kib(node.proc.pid)
        flood = await flood_never_reading(address, make_identity("flooder"),
                                          max_frames=5_000_000, time_limit=WAIT)
        print(flood, f"RSS at start {start_kib} KiB")
        assert flood.disconnected is not None, f"still connected after {flood.frames} PINGs"
        assert node.proc.poll() is None, node.log
        peak_kib = rss_kib(node.proc.pid, field="VmHWM")
        assert peak_kib < rss_bound(start_kib), (start_kib, peak_kib)
        # The node goes on serving honest neighbours.
        assert await honest_link(address, make_identity("honest")) is None
        assert node.proc.poll() is None
        log = node.log
        assert CloseCode.describe(CloseCode.SLOW_READER) in log and "does not read" in log
        assert "Traceback" not in log, log


async def test_idle_connections_lock_out_neither_inbound_nor_outbound_neighbours() -> None:
    sources = [f"127.0.0.{i}" for i in range(1, 11)]
    dialled_port = free_port()
    with node_processes() as start:
        # The target dials a peer that is not up yet: it will redial during the crowd.
        target = start("target", "--listen", "127.0.0.1:0",
                       "--connect", f"127.0.0.1:{dialled_port}")
        address = await listening(target)
        start_kib = rss_kib(target.proc.pid)
        # 120 idle connections from 10 addresses: over the 8-per-address and 64-in-all
        # slots, so the crowd churns, each re-opened connection evicting another.
        crowd = IdleCrowd(address, sources, per_source=12, max_opens=50_000)
        async with trio.open_nursery() as nursery:
            await nursery.start(crowd.run)
            with trio.fail_after(WAIT):
                await crowd.churned.wait()
            dialled = start("dialled", "--listen", f"127.0.0.1:{dialled_port}")
            dialler = start("dialler", "--listen", "127.0.0.1:0",
                            "--connect", f"127.0.0.1:{address[1]}")
            failures: dict[int, str] = {}

            retried: list[int] = []

            async def honest(i: int) -> None:
                outcome, tries = await honest_link_retrying(
                    address, make_identity(f"honest{i}"), source_host=sources[i % len(sources)])
                if tries > 1:
                    retried.append(i)
                if outcome is not None:
                    failures[i] = f"{outcome} (after {tries} tries)"

            async with trio.open_nursery() as honest_peers:
                for i in range(20):
                    honest_peers.start_soon(honest, i)
            opens_meanwhile = crowd.opens
            print(crowd, f"{opens_meanwhile} opened by the time the honest peers linked; "
                  f"{len(retried)} needed another try")
            assert failures == {}, failures
            ids = {(await listening_id(n)) for n in (dialled, dialler)}
            await trio.to_thread.run_sync(lambda: target.wait_status(
                lambda s: ids <= {n["id"] for n in s["neighbours"]},
                "the dialled and the dialling node as neighbours"))
            nursery.cancel_scope.cancel()
        assert crowd.closed_by_target > 120 and opens_meanwhile > 2 * 120, crowd
        assert target.proc.poll() is None, target.log
        assert rss_kib(target.proc.pid, field="VmHWM") < rss_bound(start_kib)
        assert "Traceback" not in target.log, target.log


async def listening_id(node: NodeProcess) -> str:
    status = await trio.to_thread.run_sync(node.ready)
    return str(status["node_id"])
