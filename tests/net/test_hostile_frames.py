"""Issue #11 items 1 and 2 against real processes: the bytes that used to kill them.

Each test sends, from a plain socket on 127.0.0.1, the exact frames the
adversarial probe used (the documented 0x3f vector as a first frame, values
nested about a thousand levels deep before and after the handshake) to a real
``overlay node`` or ``overlay server`` process, then checks that the process
closed only the offending connection, is still up, still serves a newcomer,
and logged no traceback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time

import msgpack
import pytest

from overlay.ids import Identity, NodeId
from overlay.proto.link import LinkCore, LinkState
from overlay.proto.messages import PROTOCOL_VERSION, CloseCode, MessageType
from tests.conftest import make_identity
from tests.procs import NodeProcess, node_processes, run_overlay, server_process
from tests.proto.test_vectors import VECTORS

FAST = ("--hello-interval", "0.2", "--dead-after", "3")
UNASSIGNED_ROUTED = next(v.frame for v in VECTORS
                         if v.name.startswith("unassigned routed type 0x3f"))


def nested_bytes(depth: int) -> bytes:
    """msgpack of ``depth`` nested one-element arrays around nil (any depth, unlike packb)."""
    return b"\x91" * depth + b"\xc0"


def framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def deep_data_frame(src: NodeId, dst: NodeId, depth: int) -> bytes:
    """A DATA packet carrying a transport segment whose kind is nested ``depth`` levels.

    The segment decoder of the destination used to print that field
    (``repr``) and die of a RecursionError, while relays forwarded it.
    """
    head = msgpack.packb([PROTOCOL_VERSION, MessageType.DATA, 32, src.raw, dst.raw, 7],
                         use_bin_type=True)
    segment_tail = msgpack.packb([0, 0, 0, 1, [], False, b""], use_bin_type=True)[1:]
    body = b"\x98" + nested_bytes(depth) + segment_tail  # fixarray of 8: [kind, channel, ...]
    return framed(b"\x97" + head[1:] + body)  # fixarray of 7 fields


def deep_ping_frame(depth: int) -> bytes:
    """A PING whose seq is nested ``depth`` levels: its field check used to ``repr`` it."""
    return framed(b"\x93" + msgpack.packb(PROTOCOL_VERSION) + msgpack.packb(MessageType.PING)
                  + nested_bytes(depth))


def deep_frame(depth: int) -> bytes:
    return framed(nested_bytes(depth))


class RawPeer:
    """A TCP client that speaks the link protocol by hand: it sends whatever bytes it is told."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=20)

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def handshake(self, identity: Identity) -> LinkCore:
        """Complete a real handshake as the initiator; the core stays ours to inspect."""
        core = LinkCore(identity, initiator=True, nonce=os.urandom(32), now=time.monotonic())
        self.sock.sendall(core.data_to_send())
        while core.state is LinkState.HANDSHAKE:
            data = self.sock.recv(65536)
            assert data, "the peer closed the connection during the handshake"
            core.receive_data(data, time.monotonic())
            self.sock.sendall(core.data_to_send())
        assert core.state is LinkState.ESTABLISHED, "the handshake was refused"
        return core

    def send_raw(self, frame: bytes) -> None:
        """Write one frame as is on the connection (before the handshake)."""
        self.sock.sendall(frame)

    def send_sealed(self, core: LinkCore, frame: bytes) -> None:
        """Write one frame's payload sealed on the established link ``core`` negotiated,
        so that the target opens it and decodes exactly these bytes."""
        assert core.sealer is not None
        self.sock.sendall(core.sealer.seal(frame[4:]))

    def closed_by_peer(self) -> bool:
        """Read until the peer closes the connection (True) or 20 s pass (False)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
            except TimeoutError:
                continue
        return False


def assert_refused_as_malformed(peer: RawPeer, link: LinkCore) -> None:
    """Read the target's sealed frames until its CLOSE: it must be PROTOCOL_ERROR (the
    frame opened and was refused for what it holds, not for failing authentication)."""
    deadline = time.monotonic() + 20
    while link.state is LinkState.ESTABLISHED and time.monotonic() < deadline:
        try:
            data = peer.sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            break
        link.receive_data(data, time.monotonic())
    assert link.down is not None and link.down.by_peer, link.down
    assert link.down.code == CloseCode.PROTOCOL_ERROR, link.down
    assert "nested" in link.down.reason, link.down


def assert_alive(proc: subprocess.Popen[str], log: str) -> None:
    assert proc.poll() is None, f"the process died (exit {proc.returncode}):\n{log}"
    assert "Traceback" not in log, log


HOSTILE_FIRST_FRAMES = {
    "type 0x3f": UNASSIGNED_ROUTED,
    "PING seq nested 990": deep_ping_frame(990),
    "PING seq nested 1021": deep_ping_frame(1_021),
    "array nested 1024": deep_frame(1_023),
    "DATA segment nested 990": deep_data_frame(NodeId(b"s" * 16), NodeId(b"d" * 16), 990),
}


@pytest.mark.parametrize("frame", HOSTILE_FIRST_FRAMES.values(), ids=HOSTILE_FIRST_FRAMES.keys())
def test_first_frame_from_a_stranger_closes_only_that_connection_of_a_node(frame: bytes) -> None:
    with node_processes() as start:
        node = start("target", "--listen", "127.0.0.1:0", *FAST)
        address = node.ready()["listen"]
        with RawPeer(address) as attacker:
            attacker.send_raw(frame)
            assert attacker.closed_by_peer()
        with RawPeer(address) as newcomer:
            newcomer.handshake(make_identity("newcomer"))
        assert_alive(node.proc, node.log)
        assert node.status() is not None


@pytest.mark.parametrize("frame", HOSTILE_FIRST_FRAMES.values(), ids=HOSTILE_FIRST_FRAMES.keys())
def test_first_frame_from_a_stranger_closes_only_that_connection_of_the_server(
        frame: bytes) -> None:
    with server_process() as server:
        with RawPeer(server.listen) as attacker:
            attacker.send_raw(frame)
            assert attacker.closed_by_peer()
        with RawPeer(server.listen) as newcomer:
            newcomer.handshake(make_identity("client"))
        assert_alive(server.proc, server.log)


def _line_of_three(start: object) -> tuple[NodeProcess, NodeProcess, NodeProcess]:
    assert callable(start)
    a = start("a", "--listen", "127.0.0.1:0", *FAST)
    a_address = a.ready()["listen"]
    b = start("b", "--listen", "127.0.0.1:0", "--connect", a_address, *FAST)
    b_address = b.ready()["listen"]
    c = start("c", "--listen", "127.0.0.1:0", "--connect", b_address, *FAST)
    c_id = c.ready()["node_id"]
    a.wait_status(lambda s: any(r["destination"] == c_id for r in s["routes"]),
                  "a route from a to c")
    return a, b, c


def test_deep_nesting_routed_to_a_far_node_is_stopped_at_the_first_hop() -> None:
    """Attacker - A - B - C: a DATA packet for C nested about a thousand levels deep.

    It used to travel A -> B unread and kill C.  Now A refuses it (closing only
    the attacker's link), nothing reaches C, and the line still carries pings.
    """
    with node_processes() as start:
        a, b, c = _line_of_three(start)
        attacker_id = make_identity("attacker")
        c_id = NodeId(bytes.fromhex(c.ready()["node_id"]))
        with RawPeer(a.ready()["listen"]) as attacker:
            link = attacker.handshake(attacker_id)
            attacker.send_sealed(link, deep_data_frame(
                NodeId.from_public_key(attacker_id.public_key), c_id, 990))
            assert link.opener is not None
            assert_refused_as_malformed(attacker, link)
            assert attacker.closed_by_peer()
        ping = run_overlay("ping", "--state", str(a.state), "-c", "2", "-i", "0.2", c_id.hex())
        assert ping.returncode == 0, ping.stdout + ping.stderr
        for node in (a, b, c):
            assert_alive(node.proc, node.log)


def test_deepest_valid_body_reaches_a_far_node_which_stays_up() -> None:
    """A body at the nesting limit is valid: relayed A -> B -> C, and C just drops it."""
    with node_processes() as start:
        a, b, c = _line_of_three(start)
        attacker_id = make_identity("attacker")
        c_id = NodeId(bytes.fromhex(c.ready()["node_id"]))
        with RawPeer(a.ready()["listen"]) as attacker:
            link = attacker.handshake(attacker_id)
            src = NodeId.from_public_key(attacker_id.public_key)
            for _ in range(3):
                attacker.send_sealed(link, deep_data_frame(src, c_id, 29))  # 32 levels in all
            ping = run_overlay("ping", "--state", str(a.state), "-c", "2", "-i", "0.2",
                               c_id.hex())
            assert ping.returncode == 0, ping.stdout + ping.stderr
        c.wait_status(lambda s: True, "c to answer")
        for node in (a, b, c):
            assert_alive(node.proc, node.log)


def _tampered(link: LinkCore, how: str) -> bytes:
    """Two PINGs sealed on ``link``, then changed the way an on-path attacker would."""
    assert link.sealer is not None
    first, second = (link.sealer.seal(msgpack.packb([PROTOCOL_VERSION, MessageType.PING, n]))
                     for n in (1, 2))
    if how == "replay":
        return first + first
    if how == "reorder":
        return second + first
    if how == "truncate":  # one byte short, with a length prefix that agrees
        body = first[4:-1]
        return len(body).to_bytes(4, "big") + body
    flipped = bytearray(first)  # "flip": one bit of the ciphertext
    flipped[-3] ^= 0x04
    return bytes(flipped)


@pytest.mark.parametrize("how", ["replay", "reorder", "truncate", "flip"])
def test_tampered_sealed_frames_close_that_link_with_authentication_failed(how: str) -> None:
    """Issue #12: on a real socket, replaying, reordering, truncating or altering a sealed
    frame closes the link with AUTHENTICATION_FAILED; the node serves a newcomer after."""
    with node_processes() as start:
        node = start("target", "--listen", "127.0.0.1:0", *FAST)
        address = node.ready()["listen"]
        with RawPeer(address) as attacker:
            link = attacker.handshake(make_identity("tamperer"))
            attacker.sock.sendall(_tampered(link, how))
            deadline = time.monotonic() + 20
            while link.state is LinkState.ESTABLISHED and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    if not (data := attacker.sock.recv(65536)):
                        break
                    link.receive_data(data, time.monotonic())
            assert link.down is not None and link.down.by_peer, link.down
            assert link.down.code == CloseCode.AUTHENTICATION_FAILED, link.down
        with RawPeer(address) as newcomer:
            newcomer.handshake(make_identity("newcomer"))
        assert_alive(node.proc, node.log)
