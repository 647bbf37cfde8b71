"""What the directory commands remember between runs, in the node's state directory.

Two small JSON files sit next to the node key (bytes are hex):

``known_servers.json``
    ``{"version": 1, "servers": {"HOST:PORT": KEY}}``: the key each directory
    server proved the first time this node talked to it.  Trust on first use,
    like ssh's ``known_hosts``: a later, different key is refused (someone may
    be impersonating the server) until the user says it is expected by passing
    ``--server-key``.

``session.json``
    The login: server (and the ``failover`` servers on the same database), server
    key, username, node id, token, expiry and the
    identity certificate.  The token lets anyone holding this node's key act
    as the user until it expires, so the file is created with mode 0600 (never
    chmod-ed after the fact) and deleted on logout.

Every write goes to a temporary file that is fsync-ed and renamed over the
old one, so Ctrl-C or a crash leaves the old file or the new one, never half
of one.  One session per state directory: one node key is one device.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlay.addresses import Address, format_address, parse_address
from overlay.errors import ConfigError, DirectoryUnavailable
from overlay.ids import PUBLIC_KEY_LEN, NodeId

KNOWN_SERVERS_FILE = "known_servers.json"
SESSION_FILE = "session.json"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class SavedSession:
    """A login as stored on disk; ``certificate`` is the raw signed bytes the server issued."""

    server: Address
    server_key: bytes
    username: str
    node_id: NodeId
    token: bytes
    expires_at: int
    certificate: bytes
    certificate_expires_at: int
    failover: tuple[Address, ...] = ()
    """Further servers on the same database, tried in turn when ``server`` is down
    (``--server A --server B``: the session is valid on each)."""

    @property
    def servers(self) -> tuple[Address, ...]:
        """Every server the session may be resumed on, in the order to try them."""
        return tuple(dict.fromkeys((self.server, *self.failover)))

    def on(self, servers: tuple[Address, ...]) -> bool:
        """Is this session one of those servers' (they share its database)?"""
        return not set(servers).isdisjoint(self.servers)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "server": format_address(self.server),
            "failover": [format_address(address) for address in self.failover],
            "server_key": self.server_key.hex(),
            "username": self.username,
            "node_id": self.node_id.hex(),
            "token": self.token.hex(),
            "expires_at": self.expires_at,
            "certificate": self.certificate.hex(),
            "certificate_expires_at": self.certificate_expires_at,
        }

    @classmethod
    def from_json(cls, data: Any) -> SavedSession:
        """Parse what :meth:`to_json` wrote; ValueError (any kind of damage) if it is not that."""
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a version {FORMAT_VERSION} session")
        try:
            return cls(
                server=parse_address(str(data["server"])),
                server_key=bytes.fromhex(data["server_key"]),
                username=str(data["username"]),
                node_id=NodeId.from_hex(data["node_id"]),
                token=bytes.fromhex(data["token"]),
                expires_at=int(data["expires_at"]),
                certificate=bytes.fromhex(data["certificate"]),
                certificate_expires_at=int(data["certificate_expires_at"]),
                failover=tuple(parse_address(str(text)) for text in data.get("failover", ())),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"missing or mistyped field {exc}") from None


# --- files ------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    """The parsed file, or None if there is none; ConfigError if it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError:
        raise ConfigError(f"{path} is damaged (not JSON); delete it and try again") from None


def write_private_json(path: Path, data: Any) -> None:
    """Replace ``path`` atomically with ``data`` as JSON, readable by the owner only."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a crash
        finally:
            os.close(directory)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


# --- the session -------------------------------------------------------------------------


def session_path(state: Path) -> Path:
    return state / SESSION_FILE


def load_session(state: Path) -> SavedSession | None:
    """The saved login of the node in ``state``, or None if it has none."""
    path = session_path(state)
    data = _read_json(path)
    if data is None:
        return None
    try:
        return SavedSession.from_json(data)
    except ValueError as exc:
        raise ConfigError(
            f"{path} is damaged ({exc}); run overlay account login again") from None


def saved_token(state: Path, username: str, servers: tuple[Address, ...],
                now: float) -> bytes | None:
    """The saved session's token if it is ``username``'s on one of ``servers`` (they
    share the session's database) and not expired.

    Every command that logs in as a user (``overlay client``, ``overlay chat``)
    asks this, so an expired session means the same everywhere: log in again.
    """
    session = load_session(state)
    if (session is not None and session.username == username and session.on(servers)
            and session.expires_at > now):
        return session.token
    return None


def save_session(state: Path, session: SavedSession) -> None:
    write_private_json(session_path(state), session.to_json())


def remove_session(state: Path) -> bool:
    """Forget the login; False if there was none."""
    try:
        session_path(state).unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot remove {session_path(state)}: {exc.strerror}") from None
    return True


# --- pinned server keys -----------------------------------------------------------------


def _load_pins(state: Path) -> dict[str, str]:
    path = state / KNOWN_SERVERS_FILE
    data = _read_json(path)
    if data is None:
        return {}
    servers = data.get("servers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ConfigError(f"{path} is damaged (no 'servers' table); delete it and try again")
    return {str(where): str(key) for where, key in servers.items()}


def known_servers(state: Path) -> tuple[Address, ...]:
    """The servers whose keys this node has pinned (it talked to them), in pin order."""
    servers = []
    for where in _load_pins(state):
        try:
            servers.append(parse_address(where))
        except ValueError:
            continue  # not ours to judge here: pinned_key reports a damaged entry
    return tuple(servers)


def pinned_key(state: Path, server: Address) -> bytes | None:
    """The key pinned for ``server``, or None if this node never talked to it."""
    text = _load_pins(state).get(format_address(server))
    if text is None:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != PUBLIC_KEY_LEN:
        raise ConfigError(f"{state / KNOWN_SERVERS_FILE} holds a malformed key for "
                          f"{format_address(server)}; delete that entry and try again")
    return key


def pin_key(state: Path, server: Address, key: bytes) -> None:
    """Remember ``key`` as the one ``server`` must prove from now on."""
    pins = _load_pins(state)
    pins[format_address(server)] = key.hex()
    write_private_json(state / KNOWN_SERVERS_FILE, {"version": FORMAT_VERSION, "servers": pins})


def server_key_verdict(server: Address, proved: bytes, *, given: bytes | None,
                       pinned: bytes | None) -> str | None:
    """Judge the key a server just proved, before anything is sent to it.

    Returns None when it is the pinned key, or the note to show once the caller
    has pinned it (first use, or the user named it with ``--server-key``).
    Raises DirectoryUnavailable when it must be refused: it is not the key the
    user gave, or it differs from the pin (the server was reinstalled, or someone
    is impersonating it; only the user can tell which).
    """
    where = format_address(server)
    if given is not None:
        if proved != given:
            raise DirectoryUnavailable(
                f"the server at {where} proved key {proved.hex()}, not the --server-key given")
        if pinned == given:
            return None
        replaced = "" if pinned is None else f" (replacing {pinned.hex()})"
        return f"pinned server key {given.hex()} for {where}{replaced}"
    if pinned is None:
        return f"pinned server key {proved.hex()} for {where}"
    if proved != pinned:
        raise DirectoryUnavailable(
            f"server key for {where} changed: the server now proves {proved.hex()}, not the "
            f"pinned {pinned.hex()[:16]}... (someone may be impersonating it; if expected, "
            f"pass --server-key KEY, as `overlay server --show-key` prints it there)")
    return None
