"""``overlay contacts``: ask, accept, decline and remove contacts; list them with presence.

Each command resumes the session that ``overlay account login`` saved in the
node's state directory (the token works only with this node's key), does one
request and prints the server's one-line answer.  Contacts are mutual: a
request becomes a contact once the other user accepts it, and only contacts
see each other's presence.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import trio

from overlay.addresses import format_address
from overlay.cli.account import (
    NOT_LOGGED_IN,
    Target,
    check_session_server,
    directory_options,
    moment,
    relative,
    state_dir,
    username_arg,
)
from overlay.cli.session_file import SavedSession, load_session, remove_session, save_session
from overlay.directory.client.connection import Contact, DirectoryClient, Presence, Response
from overlay.errors import DirectoryError

Change = Callable[[DirectoryClient, str], Coroutine[Any, Any, Response]]

CHANGES: dict[str, tuple[Change, str, str, str]] = {
    # action: (request, --help line, description, example)
    "add": (
        DirectoryClient.contact_request, "ask a user to become a contact",
        "Ask NAME to become a contact.  NAME sees the request (in `overlay contacts list`) "
        "and accepts or declines it; if NAME had already asked you, this accepts at once.",
        "overlay contacts add bob",
    ),
    "accept": (
        DirectoryClient.contact_accept, "accept a user's contact request",
        "Accept the contact request NAME sent you: from now on each of you sees the "
        "other's presence and can look up the other's certificate.",
        "overlay contacts accept alice",
    ),
    "decline": (
        DirectoryClient.contact_decline, "decline a user's contact request",
        "Decline the contact request NAME sent you; NAME may ask again later.",
        "overlay contacts decline mallory",
    ),
    "remove": (
        DirectoryClient.contact_remove, "remove a contact or withdraw your request",
        "Remove NAME from your contacts (for both of you), or withdraw the request you "
        "sent NAME.",
        "overlay contacts remove bob",
    ),
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "contacts",
        help="ask, accept, decline, remove and list contacts",
        description=(
            "Manage your contacts on the directory server, as the user logged in with "
            "`overlay account login` (the session saved in the node's state directory).  "
            "Contacts are mutual: a request becomes a contact once the other user accepts, "
            "and only contacts see each other's presence."
        ),
        epilog=(
            "example: overlay contacts add bob         # alice asks bob\n"
            "         overlay contacts list            # bob sees alice, incoming\n"
            "         overlay contacts accept alice    # bob accepts\n"
            "         overlay contacts list --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    directory = directory_options()
    for name, (_, summary, description, example) in CHANGES.items():
        leaf = actions.add_parser(
            name, parents=[common, directory], help=summary, description=description,
            epilog=f"example: {example}", formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        leaf.add_argument("username", type=username_arg, metavar="NAME",
                          help="the other user's username")
        leaf.set_defaults(run=run_change, verbose_default=-1)
    listing = actions.add_parser(
        "list", parents=[common, directory], help="list contacts and requests, with presence",
        description=(
            "List your contacts and pending requests: state (accepted, outgoing = you asked, "
            "incoming = they asked) and, for accepted contacts, presence (online, away or "
            "offline), home supernode, direct address and when they were last seen."
        ),
        epilog="example: overlay contacts list\n         overlay contacts list --json | jq .",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--json", action="store_true",
                         help="print a JSON list of {username, state, presence}")
    listing.set_defaults(run=run_list, verbose_default=-1)


# --- the saved session ------------------------------------------------------------------------


def logged_in(args: argparse.Namespace) -> tuple[Target, SavedSession]:
    """The saved session and where it leads; 'not logged in' if there is none worth trying."""
    state = state_dir(args)
    session = load_session(state)
    if session is None:
        raise DirectoryError(401, NOT_LOGGED_IN)
    now = time.time()
    if session.expires_at <= now:
        remove_session(state)
        raise DirectoryError(
            401, f"{NOT_LOGGED_IN} (the session expired {relative(session.expires_at, now)})")
    check_session_server(args, session)
    return Target.from_args(args, session), session


@asynccontextmanager
async def resumed(target: Target, session: SavedSession) -> AsyncIterator[DirectoryClient]:
    """A connection logged in with the saved token; a refused token is forgotten."""
    async with target.connect() as client:
        try:
            login = await client.resume(session.token)
        except DirectoryError as exc:
            if exc.status != 401:  # unreachable, rate-limited, ...: the session may be fine
                raise
            remove_session(target.state)
            raise DirectoryError(401, f"{NOT_LOGGED_IN} (the server said: {exc})") from None
        if (login.expires_at, login.certificate.raw) != (session.expires_at,
                                                         session.certificate):
            # The server reissues certificates before they expire: keep the fresh one
            # for whatever presents it to peers.
            save_session(target.state, dataclasses.replace(
                session, expires_at=login.expires_at, certificate=login.certificate.raw,
                certificate_expires_at=login.certificate.expires_at))
        yield client


# --- the commands --------------------------------------------------------------------------------


def run_change(args: argparse.Namespace) -> int:
    target, session = logged_in(args)
    response = trio.run(_change, target, session, CHANGES[args.action][0], args.username)
    print(response.reason)
    return 0


async def _change(target: Target, session: SavedSession, request: Change,
                  username: str) -> Response:
    async with resumed(target, session) as client:
        return await request(client, username)


def run_list(args: argparse.Namespace) -> int:
    target, session = logged_in(args)
    contacts = trio.run(_list, target, session)
    if args.json:
        json.dump([contact_json(c) for c in contacts], sys.stdout, indent=2)
        print()
    else:
        print(render(contacts, now=time.time()))
    return 0


async def _list(target: Target, session: SavedSession) -> list[Contact]:
    async with resumed(target, session) as client:
        return await client.contacts()


def contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "username": contact.username,
        "state": contact.state,
        "presence": None if contact.presence is None else contact.presence.to_json(),
    }


# --- the table ---------------------------------------------------------------------------------


def _home(presence: Presence) -> str:
    node = presence.home_node.short if presence.home_node is not None else None
    address = format_address(presence.home_address) if presence.home_address else None
    if node and address:
        return f"{node}@{address}"
    return node or address or "-"


def _last_seen(presence: Presence, now: float) -> str:
    if presence.status != "offline":
        return "now"
    if presence.last_seen is None:
        return "-"
    return moment(presence.last_seen, now) if now - presence.last_seen > 86400 \
        else relative(presence.last_seen, now)


def _row(contact: Contact, now: float) -> tuple[str, ...]:
    presence = contact.presence
    if presence is None:
        return (contact.username, contact.state, "-", "-", "-", "-")
    direct = format_address(presence.direct_address) if presence.direct_address else "-"
    return (contact.username, contact.state, presence.status, _home(presence), direct,
            _last_seen(presence, now))


def render(contacts: list[Contact], *, now: float) -> str:
    """The table people read; hints for what to do next when there is something to do."""
    if not contacts:
        return "no contacts yet: ask someone with `overlay contacts add NAME`"
    header = ("USERNAME", "STATE", "PRESENCE", "HOME SUPERNODE", "DIRECT ADDRESS", "LAST SEEN")
    table = [header, *(_row(contact, now) for contact in contacts)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in table]
    incoming = [c.username for c in contacts if c.state == "incoming"]
    if incoming:
        lines += ["", f"{len(incoming)} request(s) waiting: overlay contacts accept NAME "
                      f"(or decline NAME)"]
    return "\n".join(lines)
