"""``overlay id``: this node's id and public key, read from its state directory.

Why a command: the id is what others pass to ``overlay send``/``ping`` and the
public key is what a directory server's operator hands out as
``--server-key``; both were only visible in a running node's status.  It
never creates a key (a missing key is reported), and it reads the key file
through the same checks every command uses, so a key file other users can
read is refused with the fix.
"""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

from overlay.errors import ConfigError
from overlay.state import KEY_FILE, default_state_dir, load_identity


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "id", parents=[common],
        help="print this node's id and public key (from its state directory)",
        description=(
            "Print the node id (what others pass to `overlay send`, `ping`, `traceroute`) "
            "and the Ed25519 public key (for a directory server: what clients pass as "
            "--server-key) of the node whose state directory is --state.  Nothing is "
            "created: without a key file this says so.  A key file that other users can "
            "read is refused, with the command that fixes it."
        ),
    )
    parser.add_argument("--state", type=Path, default=None, metavar="DIR",
                        help=f"the node's state directory (default {default_state_dir()}, "
                             "or $OVERLAY_STATE)")
    parser.add_argument("--json", action="store_true",
                        help="print node_id, public_key and key_file as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    state = args.state or default_state_dir()
    key_file = state / KEY_FILE
    try:
        mode = stat.S_IMODE(key_file.stat().st_mode)
    except FileNotFoundError:
        raise ConfigError(f"no node key in {state} yet: `overlay node --state {state}` "
                          "(or any command that runs a node there) creates one") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {key_file}: {exc.strerror}") from None
    identity = load_identity(state)
    if args.json:
        print(json.dumps({"node_id": identity.node_id.hex(),
                          "public_key": identity.public_key.hex(),
                          "key_file": str(key_file)}))
    else:
        print(f"node id     {identity.node_id.hex()}")
        print(f"public key  {identity.public_key.hex()}")
        print(f"key file    {key_file} (mode {mode:03o})")
    return 0
