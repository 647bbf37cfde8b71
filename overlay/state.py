"""A node's state directory: its key pair, a lock, and its control socket.

One directory belongs to one running process at a time (an exclusive
``flock`` on ``lock``), so two nodes can never share a key by accident and a
stale control socket can be removed safely.  The private key is written with
mode 0600 from the start (never chmod-ed after the fact).

A state directory must be the user's own: whoever can write to it can plant
a key, or put their own socket where ``control.sock`` was; whoever can read
the key is the node.  So a directory not owned by the current user, or
writable by group or others, and a key file not owned by the user or readable
by anyone else, are refused with the command that fixes them.
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
    """The control socket, in a state directory that passed :func:`check_state_dir`."""
    check_state_dir(state_dir)
    return state_dir / CONTROL_SOCKET


def check_state_dir(path: Path) -> None:
    """Refuse a state directory that another user owns or may write to (a missing one is
    fine: it is created with mode 0700)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot use state directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"state directory {path} is not a directory")
    _check_owner(path, info, "state directory")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"state directory {path} is writable by other users (mode {mode:o}): "
            f"fix it with chmod go-w {path}")


def _check_owner(path: Path, info: os.stat_result, what: str) -> None:
    uid = os.geteuid()
    if info.st_uid != uid:
        raise ConfigError(
            f"{what} {path} belongs to uid {info.st_uid}, not to you (uid {uid}): use your "
            f"own --state, or if it is yours, chown {uid} {path}")


class StateDir:
    """Owns a state directory while the node runs (a context manager holding the lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    def __enter__(self) -> StateDir:
        check_state_dir(self.path)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            check_state_dir(self.path)  # somebody may have made it in between
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
        """The key in ``key_path``: a regular file of the user's that nobody else can read.
        FileNotFoundError if there is none."""
        try:
            fd = os.open(key_path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not hang us
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise ConfigError(f"cannot read {key_path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{key_path} is not a node key file (not a regular file); "
                                  "move it away and a new key is created")
            _check_owner(key_path, info, "key file")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise ConfigError(f"{key_path} can be read by other users (mode {mode:o}), "
                                  f"who could act as this node: fix it with chmod 600 "
                                  f"{key_path} (and make a new key if they may have read it)")
            data = os.read(fd, 4096)
        except OSError as exc:
            raise ConfigError(f"cannot read {key_path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        try:
            return Identity.from_seed(bytes.fromhex(data.decode("ascii", errors="replace")))
        except ValueError:
            raise ConfigError(
                f"{key_path} is not a node key (expected {2 * SEED_LEN} hex digits)"
            ) from None


def load_identity(path: Path) -> Identity:
    """The key pair in state directory ``path``, created (under the lock) if there is none.

    Unlike :class:`StateDir` this does not keep the directory: a client command
    may read the key of a node that is running with the same state directory.
    """
    check_state_dir(path)
    try:
        return StateDir._load_identity(path / KEY_FILE)
    except FileNotFoundError:
        pass
    with StateDir(path) as state:
        return state.load_or_create_identity()
