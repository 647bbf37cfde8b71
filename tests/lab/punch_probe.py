"""Plain-socket probes of a lab NAT: what observers see, and whether TCP simultaneous open works.

Run inside a lab host (``python tests/lab/punch_probe.py ...``):

- ``observe PORT SECONDS``: on a public host, answer every connection with the
  source address it came from (``HOST PORT\\n``), as the directory and
  supernodes report a client's observed address; stop after SECONDS.
- ``punch LOCAL_PORT OBSERVER OBSERVER``: behind a NAT, connect to both
  observers from LOCAL_PORT and print ``{"observed": [[host, port], ...]}``;
  then read ``PEER_HOST PEER_PORT START_AT`` from stdin, wait until START_AT
  (wall clock, shared by both hosts: one machine), and dial the peer from
  LOCAL_PORT again and again until a connection is made or WINDOW seconds
  pass (a refused or timed-out SYN is retried at once, as a punching peer
  does); print ``{"direct": bool, "tries": N, "seconds": S, "why": ...}``.

Every socket sets SO_REUSEADDR and SO_REUSEPORT so that one local port serves
every connection, as the overlay's outgoing links would.
"""

from __future__ import annotations

import json
import socket
import sys
import time

WINDOW = 3.0  # how long a punch may take before it has failed
TRY_TIMEOUT = 0.5  # one connect attempt


def bound_socket(local_port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("0.0.0.0", local_port))
    return sock


def observe(port: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    with socket.create_server(("0.0.0.0", port), reuse_port=True) as server:
        print("listening", flush=True)
        while (left := end - time.monotonic()) > 0:
            server.settimeout(left)
            try:
                conn, peer = server.accept()
            except TimeoutError:
                return
            with conn:
                conn.sendall(f"{peer[0]} {peer[1]}\n".encode())


def ask(local_port: int, observer: str) -> list[object]:
    host, port = observer.rsplit(":", 1)
    with bound_socket(local_port) as sock:
        sock.settimeout(5.0)
        sock.connect((host, int(port)))
        seen_host, seen_port = sock.makefile().readline().split()
        # Closing from this side leaves TIME_WAIT here, not a reset mapping at the NAT.
    return [seen_host, int(seen_port)]


def punch(local_port: int, observers: list[str]) -> None:
    print(json.dumps({"observed": [ask(local_port, o) for o in observers]}), flush=True)
    peer_host, peer_port, start_at = sys.stdin.readline().split()
    time.sleep(max(0.0, float(start_at) - time.time()))
    began = time.monotonic()
    tries, why = 0, "no try"
    while time.monotonic() - began < WINDOW:
        tries += 1
        sock = bound_socket(local_port)
        sock.settimeout(TRY_TIMEOUT)
        try:
            sock.connect((peer_host, int(peer_port)))
        except OSError as exc:
            why = type(exc).__name__
            sock.close()
            time.sleep(0.02)
            continue
        with sock:
            sock.sendall(b"hi\n")
            sock.settimeout(2.0)
            answer = sock.makefile().readline().strip()
        print(json.dumps({"direct": answer == "hi", "tries": tries,
                          "seconds": round(time.monotonic() - began, 3), "why": "connected"}),
              flush=True)
        return
    print(json.dumps({"direct": False, "tries": tries, "seconds": WINDOW, "why": why}),
          flush=True)


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "observe":
        observe(int(args[0]), float(args[1]))
    elif mode == "punch":
        punch(int(args[0]), args[1:])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
