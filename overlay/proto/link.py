"""The neighbour link: authenticated three-way handshake, then sealed keepalive and data.

Theory of operation
-------------------
A link runs over one reliable byte stream (TCP in production, a memory stream
in tests and the simulator).  The side that dialled is the *initiator*.

    initiator                                   responder
    HELLO(pk_A, E_A)                ------>
                                    <------     HELLO_ACK(pk_B, E_B, sig_B)
    ACK(sig_A)                      ------>

``pk`` are the Ed25519 identity keys, ``E`` fresh X25519 ephemeral keys made
from the 32 random bytes the driver gives each core (:mod:`overlay.proto.handshake`).
Each signature covers the whole transcript (both identity keys and both
ephemeral keys) under a role-specific context string, so neither can be
replayed into another session or reflected back at its signer.  Each side
therefore proves it holds the private key of the node id it claims, and both
derive the same two session keys, one per direction.  Every frame a side
sends after its last handshake message (the initiator's ACK, the responder's
HELLO_ACK) is sealed, and every frame it receives after the peer's last one
is opened (:mod:`overlay.proto.sealing`), just at the frame boundary: the
rest of the core sees plaintext messages.  A frame that fails to open closes
the link (AUTHENTICATION_FAILED).  Each step must arrive within
``handshake_timeout`` of the previous one.  A refusal is a CLOSE message with a
code and a reason: version mismatch, bad signature, self-connection, wrong
peer (when the dialler expected a particular node id); duplicate links are
detected by the node, which sees all links, and closed with DUPLICATE_LINK.

Once established, the link sends PING every ``hello_interval`` and feeds each
PONG's round trip into an RFC 6298 estimator (SRTT, RTTVAR: shown by
``status``).  The link *metric* that routing uses is half
the smallest RTT of the last ``cost_window`` samples, in microseconds: queueing
and jitter only ever add delay, so the windowed minimum tracks the path's real
latency and ignores noise that would make SRTT, and routes, wander; a level
shift upwards restarts the window (:class:`~overlay.proto.rtt.LinkCost`).

Any frame from the peer shows it is alive; when nothing has
been heard for ``dead_after`` hello intervals (the *dead interval*, i.e.
``dead_after`` PONGs missed in a row) the link is declared dead.

Every outgoing byte (handshake, CLOSE, PONG, PING and data alike) goes through
one buffer, capped at ``max_send_buffer``.  Data is accepted only while the
buffer is less than three quarters full (:attr:`LinkCore.can_send`: the caller
drops and counts), which leaves the last quarter to the link's own small
control frames.  A frame that would take the buffer past the cap means the peer
is not reading what it provokes (a PING flood whose PONGs it never reads): the
core closes the link with ``SLOW_READER`` and queues nothing more; the CLOSE
goes after the backlog (already sealed, so it cannot be dropped without leaving
a gap in the frame counters), bounding the buffer at the cap plus one CLOSE.
The driver reports a write that makes no progress for
``write_stall_timeout`` with :meth:`LinkCore.write_stalled`, the same verdict.
A responder gives a connection ``hello_timeout`` (shorter than the handshake
timeout) to deliver a complete HELLO, so that an idle connection holds a
handshake slot only briefly.

States: HANDSHAKE -> ESTABLISHED -> CLOSED, or HANDSHAKE -> CLOSED.  CLOSED is
sticky: whatever ended the link (our close, the peer's CLOSE, a protocol
error, a timeout, EOF) is reported once as a :class:`LinkDown` event, and later
input is ignored.  The core never raises on peer behaviour; it closes.

One module for one state machine: the handshake, keepalive and the send
buffer are states and limits of the same link; the key schedule
(:mod:`~overlay.proto.handshake`), the sealing (:mod:`~overlay.proto.sealing`)
and the RTT estimators (:mod:`~overlay.proto.rtt`) are already apart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from overlay.errors import LocalProtocolError, RemoteProtocolError, UnsupportedVersion
from overlay.ids import Identity, NodeId, signature_is_valid
from overlay.proto.codec import LENGTH_PREFIX, FrameDecoder
from overlay.proto.fastpath import decode_payload, encode_payload
from overlay.proto.handshake import (
    INITIATOR_CONTEXT,
    RESPONDER_CONTEXT,
    SessionKeys,
    derive_session_keys,
    ephemeral_public_key,
    handshake_transcript,
)
from overlay.proto.messages import (
    LEGACY_VERSIONS,
    LINK_CONTROL_TYPES,
    NONCE_LEN,
    U32_MAX,
    Ack,
    Close,
    CloseCode,
    Hello,
    HelloAck,
    LinkMessage,
    Message,
    Ping,
    Pong,
    encode_close,
    type_name,
)
from overlay.proto.rtt import LinkCost, RttEstimator
from overlay.proto.sealing import FRAME_LIMIT, MAX_SEALED_PAYLOAD, TAG_LEN, Opener, Sealer

MIN_SEND_BUFFER = 4 * (LENGTH_PREFIX + MAX_SEALED_PAYLOAD)
"""A full sealed frame always fits between the data limit (3/4) and the cap."""


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Timing of one link, in seconds."""

    handshake_timeout: float = 5.0
    hello_interval: float = 1.0
    dead_after: int = 3
    max_send_buffer: int = 1 << 20
    """Hard cap on the bytes queued for the peer and not yet taken by the driver (one
    final CLOSE may go past it).  Data is accepted below 3/4 of it (``can_send``); a
    control frame that does not fit closes the link with SLOW_READER."""
    cost_window: int = 30
    """RTT samples the link metric takes its minimum over (30 hello intervals).  Longer
    is steadier under noise; a real latency increase is believed after at most this
    many samples, a decrease at once."""
    hello_timeout: float = 2.0
    """Responder: how long a new connection may take to deliver a complete HELLO (capped
    by ``handshake_timeout``).  Short, so idle connections cannot hoard handshake slots;
    an honest initiator sends HELLO as soon as it is connected."""
    write_stall_timeout: float = 10.0
    """The driver gives up on a write that makes no progress for this long: the peer
    does not read (SLOW_READER)."""
    sealed_frame_limit: int = FRAME_LIMIT
    """Frames one direction may seal under its key (every 64-bit counter value); the
    last one is a CLOSE (KEYS_EXHAUSTED).  Smaller only in tests."""

    def __post_init__(self) -> None:
        if (self.handshake_timeout <= 0 or self.hello_interval <= 0
                or self.hello_timeout <= 0 or self.write_stall_timeout <= 0):
            raise ValueError("timeouts and intervals must be positive")
        if self.dead_after < 1 or self.cost_window < 1:
            raise ValueError("dead_after and cost_window must be at least 1")
        if self.max_send_buffer < MIN_SEND_BUFFER:
            raise ValueError(f"max_send_buffer must be at least {MIN_SEND_BUFFER} bytes "
                             "(room for a full frame below the data limit)")
        if not 2 <= self.sealed_frame_limit <= FRAME_LIMIT:
            raise ValueError(f"sealed_frame_limit must be in 2..{FRAME_LIMIT}")

    @property
    def data_send_limit(self) -> int:
        """Data frames are accepted while fewer bytes than this are queued."""
        return self.max_send_buffer * 3 // 4

    @property
    def dead_interval(self) -> float:
        """How long a silent neighbour may go before it is declared dead."""
        return self.hello_interval * self.dead_after


class LinkState(enum.Enum):
    HANDSHAKE = "handshake"
    ESTABLISHED = "up"
    CLOSED = "closed"


# --- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """Base class of what the link core reports to its driver."""


@dataclass(frozen=True, slots=True)
class LinkEstablished(LinkEvent):
    peer_id: NodeId
    peer_public_key: bytes


@dataclass(frozen=True, slots=True)
class RttMeasured(LinkEvent):
    sample: float
    srtt: float
    rttvar: float


@dataclass(frozen=True, slots=True)
class MessageReceived(LinkEvent):
    message: Message


@dataclass(frozen=True, slots=True)
class LinkDown(LinkEvent):
    """The link is over.  ``by_peer``: the peer sent CLOSE or hung up."""

    code: int
    reason: str
    by_peer: bool

    def describe(self) -> str:
        who = "peer" if self.by_peer else "we"
        return f"{CloseCode.describe(self.code)} ({who}: {self.reason})"


@dataclass(slots=True)
class LinkCounters:
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    missed_pongs: int = 0


# --- the core -------------------------------------------------------------------


class LinkCore:
    """Sans-IO state machine of one neighbour link (see the module docstring)."""

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        nonce: bytes,
        now: float,
        config: LinkConfig | None = None,
        expected_peer: NodeId | None = None,
    ) -> None:
        # ``nonce``: fresh random bytes, used as this connection's ephemeral X25519 secret
        # (never sent; the name is from version 1, where a nonce went in clear).
        if len(nonce) != NONCE_LEN:
            raise LocalProtocolError(f"a handshake nonce is {NONCE_LEN} bytes")
        self.identity = identity
        self.initiator = initiator
        self.config = config or LinkConfig()
        self.expected_peer = expected_peer
        self.state = LinkState.HANDSHAKE
        self.peer_id: NodeId | None = None
        self.peer_public_key: bytes | None = None
        self.rtt = RttEstimator()
        self.counters = LinkCounters()
        self.established_at: float | None = None
        self.down: LinkDown | None = None
        self._ephemeral_secret = nonce
        self.ephemeral_key = ephemeral_public_key(nonce)
        """Our ephemeral X25519 public key, sent in HELLO or HELLO_ACK."""
        self._peer_ephemeral: bytes | None = None
        self._keys: SessionKeys | None = None
        self.sealer: Sealer | None = None
        """Seals what we send, from the frame after our last handshake message."""
        self.opener: Opener | None = None
        """Opens what we receive, from the frame after the peer's last handshake message."""
        self._decoder = FrameDecoder()
        self._outgoing = bytearray()
        self._events: list[LinkEvent] = []
        if initiator:
            self._handshake_deadline = now + self.config.handshake_timeout
            self._deadline_reason = "no HELLO_ACK in time"
        else:
            self._handshake_deadline = now + min(self.config.hello_timeout,
                                                 self.config.handshake_timeout)
            self._deadline_reason = "no complete HELLO in time"
        self._next_ping_at = 0.0
        self._last_heard = now
        self._next_ping_seq = 0
        self._outstanding: dict[int, float] = {}
        self._cost = LinkCost(self.config.cost_window)
        if initiator:
            self._queue(Hello(identity.public_key, self.ephemeral_key))

    # --- driver interface -----------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self.state is LinkState.CLOSED

    @property
    def session_id(self) -> bytes | None:
        """SHA-256 of both ephemeral keys (initiator's first), the same at both ends;
        None before the handshake.  Upper layers bind secrets to it so that what was
        sealed for this link is refused on any other (a replay)."""
        return None if self._keys is None else self._keys.session_id

    @property
    def pending_bytes(self) -> int:
        return len(self._outgoing)

    @property
    def awaiting_hello(self) -> bool:
        """A responder that has not yet received a complete HELLO: an idle connection."""
        return (not self.initiator and self.state is LinkState.HANDSHAKE
                and self._peer_ephemeral is None)

    @property
    def metric_us(self) -> int | None:
        """One-way latency estimate for routing: min RTT since the last level shift / 2, in us."""
        return self._cost.metric_us

    @property
    def metric_noise_us(self) -> int:
        """The robust spread of the metric's window of RTT samples, in us (smallest sample
        to the 90th percentile, so a few outliers are set aside): the noise a change in the
        metric must exceed to be believed (0 with steady samples, and until the window has
        first filled)."""
        return self._cost.noise_us

    @property
    def metric_recent_high_us(self) -> int | None:
        """Half the largest of the last few RTT samples, in us (None before there are that
        many): a decrease they all agree on is believed whatever the noise."""
        return self._cost.recent_high_us

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """Bytes the driver must write, in order: all of them, or the first ``max_bytes``."""
        if max_bytes is None or max_bytes >= len(self._outgoing):
            data = bytes(self._outgoing)
            self._outgoing.clear()
        else:
            data = bytes(self._outgoing[:max_bytes])
            del self._outgoing[:max_bytes]
        return data

    def next_event(self) -> LinkEvent | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (None: no timer)."""
        if self.state is LinkState.HANDSHAKE:
            return self._handshake_deadline
        if self.state is LinkState.ESTABLISHED:
            return min(self._next_ping_at, self._last_heard + self.config.dead_interval)
        return None

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        if self.is_closed:
            return
        self.counters.bytes_received += len(data)
        self._decoder.receive_data(data)
        try:
            while not self.is_closed and (payload := self._decoder.next_payload()) is not None:
                self.counters.frames_received += 1
                self._last_heard = now
                if self.opener is not None:
                    payload = self.opener.open(payload)
                self._handle(decode_payload(payload), now)
        except RemoteProtocolError as exc:
            if (isinstance(exc, UnsupportedVersion) and self.sealer is None
                    and type(exc.version) is int and exc.version in LEGACY_VERSIONS):
                self._refuse_legacy(exc.version, str(exc))
            else:
                self.close(exc.close_code, str(exc))

    def receive_eof(self, now: float) -> None:
        """The peer closed its side of the stream without a CLOSE message."""
        if not self.is_closed:
            what = "connection closed by peer"
            if self._decoder.buffered:
                what += f" in the middle of a frame ({self._decoder.buffered} bytes buffered)"
            self._finish(CloseCode.NORMAL, what, by_peer=True)

    def connection_lost(self, reason: str) -> None:
        """The stream failed (reset, write error); nothing more can be sent."""
        if not self.is_closed:
            self._outgoing.clear()
            self._finish(CloseCode.NORMAL, f"connection lost: {reason}", by_peer=True)

    def write_stalled(self, seconds: float) -> None:
        """The driver could hand the peer no bytes for ``seconds``: the peer does not read.

        The driver abandoned a write midway, so the stream can carry no CLOSE: the
        link ends at once, reported as SLOW_READER.
        """
        if not self.is_closed:
            self._outgoing.clear()
            self._finish(CloseCode.SLOW_READER,
                         f"the peer read nothing for {seconds:g} s", by_peer=False)

    def handle_timer(self, now: float) -> None:
        if self.state is LinkState.HANDSHAKE:
            if now >= self._handshake_deadline:
                self.close(CloseCode.TIMEOUT, f"handshake timed out: {self._deadline_reason}")
        elif self.state is LinkState.ESTABLISHED:
            if now >= self._last_heard + self.config.dead_interval:
                self.counters.missed_pongs += len(self._outstanding)
                self._outstanding.clear()
                self.close(
                    CloseCode.TIMEOUT,
                    f"nothing heard for {now - self._last_heard:.3g} s "
                    f"({self.config.dead_after} hello intervals)",
                )
            elif now >= self._next_ping_at:
                self._send_ping(now)

    def send(self, message: Message) -> None:
        """Queue a non-control message to the peer; only once the link is up."""
        if self.state is not LinkState.ESTABLISHED:
            raise LocalProtocolError(f"cannot send on a link in state {self.state.value}")
        if message.header_type() in LINK_CONTROL_TYPES:
            raise LocalProtocolError("link control messages are sent by the link core itself")
        if not self.can_send:
            raise LocalProtocolError("the send buffer is full: check can_send first")
        self._queue(message)

    @property
    def can_send(self) -> bool:
        """False when the outgoing buffer is (3/4) full: the caller should drop and count."""
        return (
            self.state is LinkState.ESTABLISHED
            and len(self._outgoing) < self.config.data_send_limit
        )

    def close(self, code: int = CloseCode.NORMAL, reason: str = "closed") -> None:
        """Send CLOSE with ``reason`` and end the link (idempotent)."""
        if not self.is_closed:
            self._queue(Close(int(code), reason[:256]), final=True)
            self._finish(code, reason, by_peer=False)

    # --- internals -----------------------------------------------------------

    def _queue(self, message: Message, *, final: bool = False) -> None:
        """The one way out for every frame; the cap is enforced here (module docstring)."""
        payload = encode_payload(message)
        sealed_len = LENGTH_PREFIX + len(payload) + (TAG_LEN if self.sealer is not None else 0)
        if not final and len(self._outgoing) + sealed_len > self.config.max_send_buffer:
            # The peer is not reading.  The backlog stays queued (already sealed: dropping
            # it would leave a gap in the counters the CLOSE after it must follow), the
            # CLOSE goes after it, and the driver's write-stall timeout ends the rest.
            self.close(CloseCode.SLOW_READER,
                       f"the peer does not read: {len(self._outgoing)} bytes unsent, "
                       f"limit {self.config.max_send_buffer}")
            return
        if self.sealer is not None:
            frame = self._seal(payload, message)
            if not frame:
                return
        else:
            frame = len(payload).to_bytes(LENGTH_PREFIX, "big") + payload
        self._outgoing += frame
        self.counters.frames_sent += 1
        self.counters.bytes_sent += len(frame)

    def _seal(self, payload: bytes, message: Message) -> bytes:
        """The frame carrying ``payload`` sealed; b"" if the link closed instead (its key
        is spent)."""
        assert self.sealer is not None
        if self.sealer.remaining == 0:
            return b""  # the CLOSE that spent the last counter went out already
        if self.sealer.remaining == 1 and not isinstance(message, Close):
            self.close(
                CloseCode.KEYS_EXHAUSTED,
                f"sent {self.sealer.counter + 1} frames, all one key may seal; redial",
            )
            return b""
        return self.sealer.seal(payload)

    def _refuse_legacy(self, version: int, reason: str) -> None:
        """CLOSE (VERSION_MISMATCH) in the peer's own old version, so that it shows why."""
        frame = encode_close(Close(CloseCode.VERSION_MISMATCH, reason[:256]), version)
        self._outgoing += frame
        self.counters.frames_sent += 1
        self.counters.bytes_sent += len(frame)
        self._finish(CloseCode.VERSION_MISMATCH, reason, by_peer=False)

    def _finish(self, code: int, reason: str, *, by_peer: bool) -> None:
        self.state = LinkState.CLOSED
        self.down = LinkDown(int(code), reason, by_peer)
        self._events.append(self.down)

    def _handle(self, message: Message, now: float) -> None:
        if isinstance(message, Close):
            self._finish(message.code, message.reason or "no reason given", by_peer=True)
        elif self.state is LinkState.HANDSHAKE:
            self._handle_handshake(message, now)
        elif isinstance(message, Ping):
            self._queue(Pong(message.seq))
        elif isinstance(message, Pong):
            self._handle_pong(message, now)
        elif isinstance(message, LinkMessage) and message.header_type() in LINK_CONTROL_TYPES:
            raise RemoteProtocolError(f"unexpected {message.TYPE.name} on an established link")
        else:
            self._events.append(MessageReceived(message))

    def _handle_handshake(self, message: Message, now: float) -> None:
        waiting = self._peer_ephemeral is None
        if self.initiator and waiting and isinstance(message, HelloAck):
            self._on_hello_ack(message, now)
        elif not self.initiator and waiting and isinstance(message, Hello):
            self._on_hello(message, now)
        elif not self.initiator and not waiting and isinstance(message, Ack):
            self._on_ack(message, now)
        else:
            name = type_name(message.header_type())
            raise RemoteProtocolError(f"unexpected {name} during the handshake")

    def _refuse_peer_key(self, public_key: bytes) -> bool:
        """Checks common to both roles on learning the peer's key; True if refused."""
        if public_key == self.identity.public_key:
            self.close(CloseCode.SELF_CONNECTION, "connected to ourselves")
            return True
        peer_id = NodeId.from_public_key(public_key)
        if self.expected_peer is not None and peer_id != self.expected_peer:
            self.close(
                CloseCode.WRONG_PEER,
                f"expected node {self.expected_peer.hex()}, found {peer_id.hex()}",
            )
            return True
        return False

    def _on_hello(self, hello: Hello, now: float) -> None:
        if self._refuse_peer_key(hello.public_key):
            return
        keys = (hello.public_key, hello.ephemeral_key, self.identity.public_key,
                self.ephemeral_key)
        # Raises BadEphemeralKey (closing the link) before we sign anything.
        self._keys = derive_session_keys(initiator=False, own_secret=self._ephemeral_secret,
                                         initiator_key=keys[0], initiator_ephemeral=keys[1],
                                         responder_key=keys[2], responder_ephemeral=keys[3])
        self.peer_public_key = hello.public_key
        self._peer_ephemeral = hello.ephemeral_key
        signature = self.identity.sign(handshake_transcript(RESPONDER_CONTEXT, *keys))
        self._queue(HelloAck(self.identity.public_key, self.ephemeral_key, signature))
        self.sealer = Sealer(self._keys.send, limit=self.config.sealed_frame_limit)
        self._handshake_deadline = now + self.config.handshake_timeout
        self._deadline_reason = "no ACK in time"

    def _on_hello_ack(self, ack: HelloAck, now: float) -> None:
        if self._refuse_peer_key(ack.public_key):
            return
        keys = (self.identity.public_key, self.ephemeral_key, ack.public_key, ack.ephemeral_key)
        transcript = handshake_transcript(RESPONDER_CONTEXT, *keys)
        if not signature_is_valid(ack.public_key, transcript, ack.signature):
            self.close(
                CloseCode.BAD_SIGNATURE,
                f"HELLO_ACK signature does not verify for node "
                f"{NodeId.from_public_key(ack.public_key).hex()}: the peer lacks its private key",
            )
            return
        self._keys = derive_session_keys(initiator=True, own_secret=self._ephemeral_secret,
                                         initiator_key=keys[0], initiator_ephemeral=keys[1],
                                         responder_key=keys[2], responder_ephemeral=keys[3])
        self.peer_public_key = ack.public_key
        self._peer_ephemeral = ack.ephemeral_key
        self._start_opening(self._keys)  # the responder seals everything after HELLO_ACK
        self._queue(Ack(self.identity.sign(handshake_transcript(INITIATOR_CONTEXT, *keys))))
        self.sealer = Sealer(self._keys.send, limit=self.config.sealed_frame_limit)
        self._establish(now)

    def _start_opening(self, keys: SessionKeys) -> None:
        self.opener = Opener(keys.receive, limit=self.config.sealed_frame_limit)
        self._decoder.max_payload = MAX_SEALED_PAYLOAD  # the prefix now counts the tag too

    def _on_ack(self, ack: Ack, now: float) -> None:
        assert self.peer_public_key is not None and self._peer_ephemeral is not None
        assert self._keys is not None
        transcript = handshake_transcript(
            INITIATOR_CONTEXT, self.peer_public_key, self._peer_ephemeral,
            self.identity.public_key, self.ephemeral_key,
        )
        if not signature_is_valid(self.peer_public_key, transcript, ack.signature):
            self.close(
                CloseCode.BAD_SIGNATURE,
                f"ACK signature does not verify for node "
                f"{NodeId.from_public_key(self.peer_public_key).hex()}: "
                "the peer lacks its private key",
            )
            return
        self._start_opening(self._keys)
        self._establish(now)

    def _establish(self, now: float) -> None:
        assert self.peer_public_key is not None
        self.state = LinkState.ESTABLISHED
        self.peer_id = NodeId.from_public_key(self.peer_public_key)
        self.established_at = now
        self._events.append(LinkEstablished(self.peer_id, self.peer_public_key))
        self._send_ping(now)  # measure the RTT straight away

    def _send_ping(self, now: float) -> None:
        seq = self._next_ping_seq
        self._next_ping_seq = (seq + 1) & U32_MAX
        self._outstanding[seq] = now
        # Remember only as many unanswered pings as can still count before death.
        while len(self._outstanding) > self.config.dead_after + 1:
            del self._outstanding[next(iter(self._outstanding))]
            self.counters.missed_pongs += 1
        self.counters.pings_sent += 1
        self._queue(Ping(seq))
        self._next_ping_at = now + self.config.hello_interval

    def _handle_pong(self, pong: Pong, now: float) -> None:
        sent_at = self._outstanding.get(pong.seq)
        if sent_at is None:
            return  # a PONG for a ping we gave up on, or never sent: harmless
        # Answering one ping answers every earlier one: the link is alive.
        for seq in [s for s in self._outstanding if self._outstanding[s] <= sent_at]:
            del self._outstanding[seq]
        self.counters.pongs_received += 1
        self.record_rtt(now - sent_at)
        assert self.rtt.srtt is not None and self.rtt.rttvar is not None
        self._events.append(RttMeasured(now - sent_at, self.rtt.srtt, self.rtt.rttvar))

    def record_rtt(self, sample: float) -> None:
        """Fold one RTT sample into both the estimator and the metric's window."""
        self.rtt.observe(sample)
        self._cost.observe(sample)
