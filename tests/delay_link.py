"""A user-space delay link for real-process tests: a TCP forwarder on 127.0.0.1.

This kernel has no netem, so a link with real delay is a forwarder that holds
every chunk it reads for ``delay`` seconds before writing it on, in each
direction (order is kept: one FIFO per direction, a constant delay).  The
processes on either side see a real TCP stream with a real round trip of
about twice the delay.  :meth:`DelayLink.go_silent` models a cut that nobody
announces: the forwarder keeps every socket open and reads on, but forwards
nothing, and new connections are accepted and never connected through; only
the nodes' own keepalives can find out.

Threads, not trio: the test drives real processes synchronously, and each
forwarder must run while the test sleeps in its polling loops.  Every socket
and thread ends at :meth:`close` (daemon threads, sockets shut down).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time

CHUNK = 65536


class DelayLink:
    """Listens on 127.0.0.1 (``port``) and forwards to ``target`` with ``delay`` each way."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self._silent = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._start(self._accept)

    def go_silent(self) -> None:
        """Stop forwarding, in both directions, without closing anything."""
        self._silent.set()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            sockets, self._sockets = [self._listener, *self._sockets], []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _start(self, target: object, *args: object) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()  # type: ignore[arg-type]

    def _keep(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed.is_set():
                sock.close()
                return False
            self._sockets.append(sock)
            return True

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if not self._keep(conn):
                return
            if self._silent.is_set():
                self._start(self._pump, conn, None)  # swallow: a black hole
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            if not self._keep(upstream):
                return
            self._start(self._pump, conn, upstream)
            self._start(self._pump, upstream, conn)

    def _pump(self, source: socket.socket, sink: socket.socket | None) -> None:
        """Read ``source`` and write each chunk to ``sink`` ``delay`` seconds later."""
        held: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        if sink is not None:
            self._start(self._deliver, held, sink)
        while True:
            try:
                data = source.recv(CHUNK)
            except OSError:
                data = b""
            if not data:
                held.put(None)
                return
            if sink is not None and not self._silent.is_set():
                held.put((time.monotonic() + self.delay, data))

    def _deliver(self, held: queue.Queue[tuple[float, bytes] | None], sink: socket.socket) -> None:
        while True:
            item = held.get()
            if item is None:
                if not self._silent.is_set():  # a silent link never says goodbye
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                return
            due, data = item
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if self._silent.is_set():
                continue
            try:
                sink.sendall(data)
            except OSError:
                return
