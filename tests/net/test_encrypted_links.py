"""Real-process, real-socket: what an on-path observer or tamperer sees of a link.

Two ``overlay node`` processes on 127.0.0.1 are linked through a byte-logging
TCP relay run by the test (the tap).  An ``overlay send`` crosses it; the tap
must hold the handshake (its keys are public) but none of the payload.  A
second variant flips one bit of the first sealed frame: the receiving node
closes that link as AUTHENTICATION_FAILED and keeps its other link.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from overlay.proto.messages import PROTOCOL_VERSION, MessageType
from tests.procs import (
    WAIT,
    NodeProcess,
    node_processes,
    overlay_command,
    run_overlay,
    server_process,
    short_tempdir,
)

FAST = ("--hello-interval", "0.2", "--dead-after", "5")
SECRET = "the eagle lands at midnight on pier 39"


class Tap:
    """A one-connection TCP relay on 127.0.0.1 that records every byte, each way.

    ``flip_at``: if set, the byte at that offset of the dialler-to-listener stream
    is XORed with 1 on its way (an on-path attacker altering one bit).
    """

    def __init__(self, target: tuple[str, int], flip_at: int | None = None) -> None:
        self.target = target
        self.flip_at = flip_at
        self.to_listener = bytearray()
        self.to_dialler = bytearray()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(WAIT)
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._sockets: list[socket.socket] = [self._server]
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        """Relay every connection made to the tap (one after another: each CLI command
        is a connection of its own); only the first gets ``flip_at``."""
        flip_at = self.flip_at
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=WAIT)
            self._sockets += [client, upstream]
            for src, dst, log, flip in ((client, upstream, self.to_listener, flip_at),
                                        (upstream, client, self.to_dialler, None)):
                thread = threading.Thread(target=self._pump,
                                          args=(src, dst, log, flip, len(log)), daemon=True)
                thread.start()
                self._threads.append(thread)
            flip_at = None

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, log: bytearray,
              flip_at: int | None, start: int) -> None:
        src.settimeout(None)
        try:
            while data := src.recv(65536):
                chunk = bytearray(data)
                offset = len(log) - start  # bytes of this connection so far
                if flip_at is not None and offset <= flip_at < offset + len(chunk):
                    chunk[flip_at - offset] ^= 0x01
                log += data
                dst.sendall(chunk)
        except OSError:
            return
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        for thread in self._threads:
            thread.join(WAIT)


@contextmanager
def tap(target: str, flip_at: int | None = None) -> Iterator[Tap]:
    host, port = target.rsplit(":", 1)
    relay = Tap((host, int(port)), flip_at)
    relay.start()
    try:
        yield relay
    finally:
        relay.close()


def linked(node: NodeProcess, peer_id: str) -> None:
    node.wait_status(lambda s: any(n["id"] == peer_id and n["rtt_samples"] > 0
                                   for n in s["neighbours"]), f"a link to {peer_id[:8]}")


def test_a_tap_between_two_nodes_sees_no_plaintext_of_overlay_send() -> None:
    with node_processes() as start:
        a = start("a", "--listen", "127.0.0.1:0", *FAST)
        a_status = a.ready()
        with tap(a_status["listen"]) as relay:
            b = start("b", "--listen", "127.0.0.1:0", "--connect", relay.address, *FAST)
            b_id = b.ready()["node_id"]
            linked(a, b_id)
            listener = subprocess.Popen(
                overlay_command("listen", "-n", "1", "--state", str(a.state)),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                sent = run_overlay("send", a_status["node_id"], SECRET, "--state", str(b.state))
                assert sent.returncode == 0, sent.stderr
                out, _ = listener.communicate(timeout=WAIT)
            finally:
                if listener.poll() is None:
                    listener.kill()
            assert out.strip() == f"from {b_id[:8]}: {SECRET}"  # it did cross the tap
            ping = run_overlay("ping", a_status["node_id"], "-c", "2", "-i", "0.2",
                               "--state", str(b.state))
            assert ping.returncode == 0, ping.stdout + ping.stderr  # routed, across the tap
            captured = bytes(relay.to_listener) + bytes(relay.to_dialler)
    # The tap saw the link: the HELLO's leading bytes are in clear, and much more.
    hello_head = bytes([0x94, PROTOCOL_VERSION, MessageType.HELLO, 0xC4, 0x20])
    assert relay.to_listener[4:9] == hello_head
    assert len(captured) > 1000
    for needle in (SECRET, "eagle", "midnight", "pier 39"):
        assert needle.encode() not in captured, f"{needle!r} crossed the link in clear"
    for node_id in (b_id, a_status["node_id"]):  # routed headers (DATA, ECHO) are sealed too
        assert bytes.fromhex(node_id) not in captured[200:]


def test_one_flipped_bit_closes_that_link_and_the_node_keeps_its_others() -> None:
    with node_processes() as start:
        a = start("a", "--listen", "127.0.0.1:0", *FAST)
        a_status = a.ready()
        c = start("c", "--listen", "127.0.0.1:0", "--connect", a_status["listen"], *FAST)
        c_id = c.ready()["node_id"]
        linked(a, c_id)
        # HELLO is 75 bytes and ACK 73; byte 75 + 73 + 10 is inside the first sealed frame.
        with tap(a_status["listen"], flip_at=75 + 73 + 10) as relay:
            b = start("b", "--listen", "127.0.0.1:0", *FAST, "--connect", relay.address)
            b.ready()
            a.wait_status(lambda s: s["links_refused"] >= 1 or "authentication" in a.log,
                          "a to refuse the tampered link")
            assert len(relay.to_listener) > 75 + 73 + 10
        assert "authentication failed" in a.log
        assert "Traceback" not in a.log
        before = next(n["rtt_samples"] for n in a.status()["neighbours"]  # type: ignore[index]
                      if n["id"] == c_id)
        # The other link is still up, and still measured.
        a.wait_status(lambda s: any(n["id"] == c_id and n["rtt_samples"] > before
                                    for n in s["neighbours"]), "more RTT samples to c")


def test_a_tap_between_a_client_and_the_directory_sees_no_names_or_passwords() -> None:
    """Registration, login and a contact request through the tap: no username, contact
    name or password crosses in clear (the directory link is an ordinary sealed link)."""
    user, contact, password = "tapwatched", "hiddenfriend", "a long secret phrase"
    root = short_tempdir()
    try:
        with server_process() as server, tap(server.listen) as relay:
            for args in (("account", "register", "--user", user),
                         ("account", "register", "--user", contact),
                         ("account", "login", "--user", user)):
                state = root / (contact if contact in args else user)
                result = subprocess.run(
                    overlay_command(*args, "--server", relay.address, "--state", str(state),
                                    "--password-stdin"),
                    input=f"{password}\n", capture_output=True, text=True, timeout=3 * WAIT,
                    check=False)
                assert result.returncode == 0, result.stderr
            added = run_overlay("contacts", "add", contact, "--state", str(root / user))
            assert added.returncode == 0, added.stderr
            captured = bytes(relay.to_listener) + bytes(relay.to_dialler)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert len(captured) > 2000
    for needle in (user, contact, password, "login", "register", "contact_request"):
        assert needle.encode() not in captured, f"{needle!r} crossed the link in clear"
