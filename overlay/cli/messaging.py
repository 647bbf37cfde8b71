"""``overlay send`` and ``overlay listen``: netcat over the overlay, through a running node."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, BinaryIO

import trio

from overlay.cli.common import add_state_argument, positive_int
from overlay.errors import ConfigError, ControlError
from overlay.net.control import control_session, read_result
from overlay.net.messaging import CHUNK
from overlay.state import control_socket_path, default_state_dir


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    send = subparsers.add_parser(
        "send", parents=[common], help="send a message reliably to another node",
        description=(
            "Send TEXT, a file, or standard input as one message to NODE_ID over a reliable "
            "channel (sequence numbers, acknowledgements, retransmission) through the local "
            "node.  Exit status 0 only once the peer has acknowledged every byte; 1 with the "
            "reason otherwise."
        ),
        epilog="examples: overlay send 3f2a9c1d hello there\n"
               "          overlay send 3f2a9c1d --file photo.jpg\n"
               "          echo hi | overlay send 3f2a9c1d\n"
               "          overlay send --state /tmp/alice bob hello   "
               "(through `overlay client`: a contact)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument("node_id", metavar="NODE_ID",
                      help="the destination: a full node id or a unique prefix; through a "
                           "running `overlay client`, also a contact's username")
    send.add_argument("text", nargs="*", metavar="TEXT", help="the message (words are joined)")
    send.add_argument("--file", type=Path, metavar="FILE", help="send this file's bytes")
    add_state_argument(send)
    send.set_defaults(run=run_send)

    listen = subparsers.add_parser(
        "listen", parents=[common], help="print messages other nodes send to this one",
        description=(
            "Print each message sent to the local node (with `overlay send` or a channel), "
            "with its sender, until Ctrl-C; or save them with --output."
        ),
    )
    add_state_argument(listen)
    listen.add_argument("-n", "--count", type=positive_int, metavar="N",
                        help="exit after N messages")
    listen.add_argument("--output", type=Path, metavar="FILE",
                        help="write the messages' bytes to FILE instead of printing them")
    listen.add_argument("--json", action="store_true",
                        help="one JSON object per message: from, bytes, text (if UTF-8)")
    listen.set_defaults(run=run_listen)


def _payload(args: argparse.Namespace) -> bytes:
    if args.file is not None and args.text:
        raise ConfigError("give TEXT or --file, not both")
    if args.file is not None:
        try:
            return Path(args.file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from None
    if args.text:
        return " ".join(args.text).encode()
    if sys.stdin.isatty():
        raise ConfigError("nothing to send: give TEXT, --file, or pipe data in")
    return sys.stdin.buffer.read()


def run_send(args: argparse.Namespace) -> int:
    payload = _payload(args)
    result = trio.run(_send, args, payload)
    print(f"sent {result['bytes']} bytes to {result['to'][:8]}: acknowledged "
          f"in {result['seconds']:.3f} s ({result['retransmissions']} retransmissions)")
    return 0


async def _send(args: argparse.Namespace, payload: bytes) -> dict[str, Any]:
    path = control_socket_path(args.state or default_state_dir())
    async with control_session(path, "send", dst=args.node_id) as connection:
        try:
            for start in range(0, len(payload), CHUNK):
                await connection.send({"data": payload[start:start + CHUNK]})
            await connection.send({"end": True})
        except trio.BrokenResourceError:
            pass  # the node refused early (say, an unknown id): its answer is waiting
        result: dict[str, Any] = await read_result(path, connection)
        return result


def run_listen(args: argparse.Namespace) -> int:
    if args.output is None:
        return trio.run(_listen, args, None)
    try:
        with Path(args.output).open("wb") as output:
            return trio.run(_listen, args, output)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.output}: {exc.strerror}") from None


async def _listen(args: argparse.Namespace, output: BinaryIO | None) -> int:
    path = control_socket_path(args.state or default_state_dir())
    assembling: dict[tuple[str, int], list[bytes]] = {}
    count = 0
    async with control_session(path, "listen") as connection:
        while args.count is None or count < args.count:
            frame = await connection.receive()
            if not isinstance(frame, dict) or "chunk" not in frame:
                await _result_or_error(path, frame)
                return 1
            key = (str(frame["from"]), int(frame["channel"]))
            assembling.setdefault(key, []).append(frame["chunk"])
            if frame["last"]:
                message = b"".join(assembling.pop(key))
                count += 1
                _show(args, key[0], message, output)
    return 0


async def _result_or_error(path: Path, frame: Any) -> None:
    if isinstance(frame, dict) and frame.get("ok") is False:
        raise ControlError(str(frame.get("error")))
    raise ControlError(f"unexpected answer from the node at {path}")


def _show(args: argparse.Namespace, sender: str, message: bytes,
          output: BinaryIO | None) -> None:
    if output is not None:
        output.write(message)
        output.flush()
        print(f"from {sender[:8]}: {len(message)} bytes written to {args.output}", flush=True)
        return
    try:
        text: str | None = message.decode()
    except UnicodeDecodeError:
        text = None
    if args.json:
        print(json.dumps({"from": sender, "bytes": len(message), "text": text}), flush=True)
    else:
        print(render_message(sender, message), flush=True)


def render_message(sender: str, message: bytes) -> str:
    """How ``listen`` shows a message: its text (lines after the first indented, one
    trailing newline dropped, as ``echo hi | overlay send`` adds one), or its size when
    it is not text.  Control characters other than newline and tab count as not text:
    a stranger's bytes must not drive the terminal (escape sequences)."""
    head = f"from {sender[:8]}: "
    try:
        text = message.decode()
    except UnicodeDecodeError:
        return f"{head}{len(message)} bytes (not text)"
    text = text[:-1] if text.endswith("\n") else text
    lines = text.split("\n")
    if not all(line.replace("\t", " ").isprintable() for line in lines):
        return f"{head}{len(message)} bytes (not text)"
    return head + "\n  ".join(lines)
