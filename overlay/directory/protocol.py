"""The directory protocol: status codes, operations and the validation of their arguments.

A request is a DIRECTORY_REQUEST message ``[request_id, operation, arguments]``
on an authenticated link to the server (the link handshake has already proved
which node key the client holds, and which key the server holds).  Every
request gets exactly one DIRECTORY_RESPONSE ``[request_id, status, reason,
body]`` with an HTTP-like status.  This module is pure: it checks arguments and
builds responses; :mod:`overlay.directory.server.service` carries the operations out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.signing

from overlay.addresses import Address, format_address, parse_address
from overlay.errors import DirectoryError, RemoteProtocolError
from overlay.ids import NODE_ID_LEN, Identity, NodeId
from overlay.proto.codec import pack, unpack

TOKEN_LEN = 32
USERNAME_RULE = re.compile(r"[a-z][a-z0-9_.-]{2,31}")
USERNAME_HELP = ("a username is 3-32 characters: a lowercase letter, then lowercase letters, "
                 "digits, '.', '_' or '-'")
MIN_PASSWORD_LEN = 10
MAX_PASSWORD_LEN = 1024
MIN_PASSWORD_DISTINCT = 5
PRESENCE_STATES = ("online", "away")


class Status(IntEnum):
    """HTTP's meanings, so that anyone who knows HTTP can read a response."""

    OK = 200
    CREATED = 201
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409
    TOO_MANY_REQUESTS = 429
    INTERNAL_ERROR = 500
    INSUFFICIENT_STORAGE = 507
    """The server's disk (or database size limit) is full: nothing was changed."""


class Rejected(DirectoryError):
    """Raised inside the server to answer a request with an error status.

    The server's side of the refusal a client raises as its parent,
    :class:`~overlay.errors.DirectoryError`: the same status and reason, plus
    the response ``body`` (a ``retry_after`` in it is the parent's field too).
    """

    def __init__(self, status: Status, reason: str, **body: Any) -> None:
        retry_after = body.get("retry_after")
        super().__init__(status, reason,
                         retry_after=retry_after if isinstance(retry_after, int | float) else None)
        self.body = body


# --- argument checkers ---------------------------------------------------------------


def check_username(value: object) -> str:
    if not isinstance(value, str) or USERNAME_RULE.fullmatch(value) is None:
        shown = repr(value)[:40] if isinstance(value, str) else type(value).__name__
        raise Rejected(Status.BAD_REQUEST, f"invalid username {shown}: {USERNAME_HELP}")
    return value


def check_password(value: object) -> str:
    """Only the type and size: the strength floor applies when a password is chosen."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_PASSWORD_LEN:
        raise Rejected(Status.BAD_REQUEST,
                       f"password must be a string of 1-{MAX_PASSWORD_LEN} characters")
    return value


MAX_SEALED_LEN = 2 * MAX_PASSWORD_LEN + 256


def seal_password(server_key: bytes, session_id: bytes, password: str) -> bytes:
    """``password`` sealed for the server (an anonymous libsodium sealed box to its key,
    converted to X25519), bound to this connection's session id.

    Links are authenticated but not encrypted: sealing keeps passwords from anyone
    watching the wire, and the binding keeps a captured blob from being replayed on
    another connection (to log in, or worse, to move the account to another key).
    """
    public = nacl.signing.VerifyKey(server_key).to_curve25519_public_key()
    return bytes(nacl.public.SealedBox(public).encrypt(pack([session_id, password])))


def unseal_password(server: Identity, session_id: bytes | None, sealed: object) -> str:
    """The password inside ``sealed``; Rejected(400) if it was not sealed for this link."""
    if not isinstance(sealed, bytes) or not 0 < len(sealed) <= MAX_SEALED_LEN:
        raise Rejected(Status.BAD_REQUEST,
                       "sealed_password must be bin: the password sealed for the server")
    private = server.signing_key.to_curve25519_private_key()
    try:
        inner = unpack(nacl.public.SealedBox(private).decrypt(sealed))
    except (nacl.exceptions.CryptoError, RemoteProtocolError):
        raise Rejected(Status.BAD_REQUEST,
                       "sealed_password does not open with this server's key") from None
    if not (isinstance(inner, list) and len(inner) == 2 and isinstance(inner[0], bytes)):
        raise Rejected(Status.BAD_REQUEST, "sealed_password holds [session_id, password]")
    if session_id is None or inner[0] != session_id:
        raise Rejected(Status.BAD_REQUEST,
                       "sealed_password was sealed for another connection (a replay?)")
    return check_password(inner[1])


def password_weakness(username: str, password: str) -> str | None:
    """Why ``password`` is too weak to register with, or None if it is acceptable.

    A floor, not a policy: long enough, not built around the username, not a
    run of a few repeated characters (NIST SP 800-63B's spirit: length over
    composition rules).
    """
    if len(password) < MIN_PASSWORD_LEN:
        return f"password too short: at least {MIN_PASSWORD_LEN} characters"
    if username in password.lower():
        return "password must not contain the username"
    if len(set(password)) < MIN_PASSWORD_DISTINCT:
        return f"password too repetitive: use at least {MIN_PASSWORD_DISTINCT} different characters"
    return None


def check_sealed(value: object) -> bytes:
    """Only the shape: opening it needs the server's key and the connection."""
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_SEALED_LEN:
        raise Rejected(Status.BAD_REQUEST,
                       "sealed_password must be bin: the password sealed for the server")
    return value


def check_token(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != TOKEN_LEN:
        raise Rejected(Status.BAD_REQUEST, f"token must be {TOKEN_LEN} bytes of bin")
    return value


def check_node_id(value: object) -> NodeId:
    if not isinstance(value, bytes) or len(value) != NODE_ID_LEN:
        raise Rejected(Status.BAD_REQUEST, f"node id must be {NODE_ID_LEN} bytes of bin")
    return NodeId(value)


def check_address(value: object) -> Address:
    if not isinstance(value, str) or len(value) > 64:
        raise Rejected(Status.BAD_REQUEST, "address must be a HOST:PORT string")
    try:
        host, port = parse_address(value)
    except ValueError as exc:
        raise Rejected(Status.BAD_REQUEST, f"bad address: {exc}") from None
    if port == 0:
        raise Rejected(Status.BAD_REQUEST, "address needs a real port, not 0")
    return host, port


def check_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise Rejected(Status.BAD_REQUEST, "expected true or false")
    return value


def check_presence_state(value: object) -> str:
    if value not in PRESENCE_STATES:
        raise Rejected(Status.BAD_REQUEST,
                       f"presence status must be one of {', '.join(PRESENCE_STATES)}")
    assert isinstance(value, str)
    return value


# --- operations ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    """One request type: its arguments (name -> checker) and whether it needs a session."""

    name: str
    required: dict[str, Callable[[object], Any]]
    optional: dict[str, Callable[[object], Any]]
    needs_session: bool
    summary: str

    def parse(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Checked arguments, or Rejected(400) naming the first problem."""
        unknown = set(arguments) - set(self.required) - set(self.optional)
        if unknown:
            names = ", ".join(sorted(unknown))[:80]
            raise Rejected(Status.BAD_REQUEST, f"{self.name}: unknown argument(s) {names}")
        parsed: dict[str, Any] = {}
        for name, check in self.required.items():
            if name not in arguments:
                raise Rejected(Status.BAD_REQUEST, f"{self.name}: missing argument {name!r}")
            parsed[name] = check(arguments[name])
        for name, check in self.optional.items():
            if arguments.get(name) is not None:
                parsed[name] = check(arguments[name])
        return parsed


def _op(name: str, summary: str, *, session: bool, optional: dict[str, Any] | None = None,
        **required: Callable[[object], Any]) -> Operation:
    return Operation(name, required, optional or {}, session, summary)


_USER: dict[str, Any] = {"username": check_username}
OPERATIONS: dict[str, Operation] = {
    op.name: op for op in (
        _op("register", "create an account bound to this node's key", session=False,
            username=check_username, sealed_password=check_sealed),
        _op("login", "open a session; returns a token and a certificate", session=False,
            username=check_username, sealed_password=check_sealed),
        _op("resume", "reopen a session from its token (same node key only)", session=False,
            token=check_token),
        _op("logout", "end the session; presence becomes offline", session=True),
        _op("change_key", "bind the account to this node's key (a new device)", session=False,
            username=check_username, sealed_password=check_sealed),
        _op("contact_request", "ask a user to become a contact", session=True, **_USER),
        _op("contact_accept", "accept a user's contact request", session=True, **_USER),
        _op("contact_decline", "decline a user's contact request", session=True, **_USER),
        _op("contact_remove", "remove a contact or withdraw a request", session=True, **_USER),
        _op("contacts", "list contacts and requests, with presence", session=True),
        _op("presence", "set presence, home supernode and direct address", session=True,
            status=check_presence_state,
            optional={"home_node": check_node_id, "home_address": check_address,
                      "direct_address": check_address, "supernode_ok": check_bool}),
        _op("lookup", "a contact's certificate and presence", session=True, **_USER),
        _op("supernodes", "the supernode host list", session=False),
        _op("dialback", "ask the server to dial this node back", session=False,
            address=check_address),
        _op("announce_supernode", "offer this node as a supernode", session=False,
            address=check_address),
    )
}


def parse_request(operation: str, arguments: dict[str, Any]) -> tuple[Operation, dict[str, Any]]:
    """The operation and its checked arguments; Rejected(400) for anything unknown or malformed."""
    op = OPERATIONS.get(operation)
    if op is None:
        raise Rejected(Status.BAD_REQUEST, f"unknown operation {operation[:32]!r}")
    return op, op.parse(arguments)


def address_text(address: Address | None) -> str | None:
    return None if address is None else format_address(address)
