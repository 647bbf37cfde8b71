"""A node's state directory: its key pair, a lock, and its control socket.

One directory belongs to one running process at a time (an exclusive
``flock`` on ``lock``), so two nodes can never share a key by accident and a
stale control socket can be removed safely.  The private key is written with
mode 0600 from the start (never chmod-ed after the fact).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import stat
from pathlib import Path
from types import TracebackType

from overlay.errors import ConfigError
from overlay.ids import SEED_LEN, Identity

log = logging.getLogger(__name__)

KEY_FILE = "node.key"
LOCK_FILE = "lock"
CONTROL_SOCKET = "control.sock"
UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, one of them the terminating NUL


def default_state_dir() -> Path:
    """``$OVERLAY_STATE``, else ``$XDG_DATA_HOME/overlay``, else ``~/.local/share/overlay``."""
    if env := os.environ.get("OVERLAY_STATE"):
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "overlay"


def control_socket_path(state_dir: Path) -> Path:
    return state_dir / CONTROL_SOCKET


class StateDir:
    """Owns a state directory while the node runs (a context manager holding the lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    def __enter__(self) -> StateDir:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot use state directory {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"state directory {self.path} is in use by another overlay process "
                "(give each node its own --state)"
            ) from None
        self._lock_fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    @property
    def control_socket(self) -> Path:
        path = control_socket_path(self.path)
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise ConfigError(
                f"state directory path too long for a Unix socket ({path}); use a shorter --state"
            )
        return path

    def load_or_create_identity(self) -> Identity:
        """The node's key pair, created on first start."""
        key_path = self.path / KEY_FILE
        try:
            return self._load_identity(key_path)
        except FileNotFoundError:
            pass
        identity = Identity.from_seed(secrets.token_bytes(SEED_LEN))
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # lost a race with another creator: use theirs
            return self._load_identity(key_path)
        except OSError as exc:
            raise ConfigError(f"cannot create {key_path}: {exc.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(identity.seed.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.info("created node key %s (node id %s)", key_path, identity.node_id)
        return identity

    @staticmethod
    def _load_identity(key_path: Path) -> Identity:
        text = key_path.read_text(encoding="ascii", errors="replace").strip()
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s is readable by other users (mode %o); chmod 600 it", key_path, mode)
        try:
            return Identity.from_seed(bytes.fromhex(text))
        except ValueError:
            raise ConfigError(
                f"{key_path} is not a node key (expected {2 * SEED_LEN} hex digits)"
            ) from None


def load_identity(path: Path) -> Identity:
    """The key pair in state directory ``path``, created (under the lock) if there is none.

    Unlike :class:`StateDir` this does not keep the directory: a client command
    may read the key of a node that is running with the same state directory.
    """
    key_path = path / KEY_FILE
    if key_path.exists():
        return StateDir._load_identity(key_path)
    with StateDir(path) as state:
        return state.load_or_create_identity()
