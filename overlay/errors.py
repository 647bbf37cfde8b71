"""The error hierarchy, one family per layer, all rooted in :class:`OverlayError`.

Protocol cores raise :class:`ProtocolError` subclasses: *Local* when our own
code misused a core (a bug or a race in the glue), *Remote* when the peer sent
something the protocol forbids.  A remote error carries the close code the glue
should send back, in the spirit of wsproto's ``event_hint``.  User-facing
commands turn any :class:`OverlayError` into one clear line.

A few classes that only one module raises and its caller catches live beside
that module, still under this root: the directory server's ``Rejected`` (a
:class:`DirectoryError`, in :mod:`overlay.directory.protocol`), the store's
``StoreError`` family, ``BadEphemeralKey`` (a :class:`RemoteProtocolError`),
the lab's ``LabError``, the simulator's and the benchmarks' own.  Nothing in
this package raises ``ValueError`` for bytes a peer sent.
"""

from __future__ import annotations


class OverlayError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(OverlayError):
    """The user's configuration or command line cannot work (bad address, unusable state dir)."""


# --- wire and link protocol -------------------------------------------------


class ProtocolError(OverlayError):
    """A protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """Our own side misused a protocol core (e.g. sent data before the handshake)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the link to it must be closed.

    This is the one family for "another machine sent bad bytes": every decoder
    (framing, msgpack, messages, envelopes, certificates) raises only this
    family for hostile input, so a caller that handles peer input catches
    ``RemoteProtocolError`` and never a single sibling such as
    :class:`MalformedMessage` alone.

    ``close_code`` is the :class:`overlay.proto.messages.CloseCode` value the
    link should send in its CLOSE message (an int, to keep this module free of
    protocol imports).
    """

    close_code: int = 5  # CloseCode.PROTOCOL_ERROR

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code


class FrameTooLarge(RemoteProtocolError):
    """A length prefix announced a frame larger than the protocol allows."""


class MalformedMessage(RemoteProtocolError):
    """Bytes that are not valid msgpack, or a message with wrong fields or types."""


class UnsupportedVersion(RemoteProtocolError):
    """The peer speaks a protocol version we do not."""

    close_code = 1  # CloseCode.VERSION_MISMATCH

    def __init__(self, version: object, supported: int) -> None:
        advice = ""
        # Worded so that it reads right at both ends (it is sent as the CLOSE reason).
        if type(version) is int and 0 <= version != supported:
            advice = f": upgrade the node that speaks version {min(version, supported)}"
        scalar = isinstance(version, int | float | str | None)
        shown = repr(version) if scalar else type(version).__name__  # never walk a container
        super().__init__(
            f"peer speaks protocol version {shown[:40]}, we speak {supported}{advice}"
        )
        self.version = version
        self.supported = supported


class AuthenticationFailed(RemoteProtocolError):
    """A sealed frame did not authenticate: tampered, replayed, reordered, truncated or forged.

    With an implicit per-frame counter these are indistinguishable, and all mean
    the same thing: the byte stream is no longer the peer's.
    """

    close_code = 10  # CloseCode.AUTHENTICATION_FAILED


class KeysExhausted(RemoteProtocolError):
    """The peer sealed more frames than one session key may protect."""

    close_code = 11  # CloseCode.KEYS_EXHAUSTED


# --- local control socket ---------------------------------------------------


class ControlError(OverlayError):
    """The local control socket of a running node could not answer."""


# --- transport (reliable channels) -------------------------------------------------


class TransportError(OverlayError):
    """Family of errors about one end-to-end reliable channel."""


class PeerUnreachable(TransportError):
    """The peer stopped answering: what was not acknowledged may not have arrived."""


class ChannelClosed(TransportError):
    """The channel is closed (by us, by the peer's reset, or because the node stopped)."""


# --- directory (login/contacts server) ------------------------------------------------


class DirectoryError(OverlayError):
    """The directory server refused a request: ``status`` is HTTP-like, ``reason`` says why.

    The message is what a user should read: the server's reason, in one line.
    """

    def __init__(self, status: int, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class DirectoryUnavailable(DirectoryError):
    """The server could not be reached, or it did not prove the pinned key."""

    def __init__(self, reason: str) -> None:
        super().__init__(503, reason)


class CertificateError(OverlayError):
    """A certificate is malformed, expired, or not signed by the pinned server key."""


# --- roles (supernode, edge client) ------------------------------------------------------


class RoleError(OverlayError):
    """A role cannot run as asked (a supernode on an edge node, say)."""


# --- chat -------------------------------------------------------------------------------


class ChatError(OverlayError):
    """Family of errors of the chat layer."""


class RejectedMessage(ChatError):
    """A received message or receipt failed verification; it is reported, never shown."""
