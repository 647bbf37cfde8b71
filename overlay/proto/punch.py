"""Coordinated hole punching between two peers behind NAT: DCUtR's idea, sans-IO.

Why
---
Two edge clients behind NAT talk through supernodes (docs/roles.md).  Most
home NATs keep one public port per local port whatever the destination
(endpoint-independent mapping, "easy"); two such peers can reach each other
directly if each learns the other's public address and both dial at the same
moment, so that each NAT sees its own outgoing SYN before the other's arrives
and lets it in (TCP simultaneous open).  libp2p's DCUtR measured 70% success
over 4.4 M attempts, 97% of successes on the first attempt; Tailscale and
iroh report about 90% with more tricks.  This module decides *when* to send
what and *when* to dial; the driver sends, dials and reports.

The exchange (over the relayed path, so it works before any direct link)
------------------------------------------------------------------------
The *initiator* (by convention the peer with the smaller node id, so both never
start at once) runs up to ``attempts`` attempts, numbered from 1:

1. initiator -> responder: CONNECT(attempt, its candidates); the initiator
   notes the time.
2. responder -> initiator: CONNECT_REPLY(attempt, its candidates).  The
   initiator's relayed round trip ``rtt`` is the time between 1 and 2.
3. initiator -> responder: SYNC(attempt); the initiator dials the responder's
   candidates ``rtt / 2`` later, when SYNC has about reached the responder,
   which dials the initiator's candidates as soon as SYNC arrives.

Dialling is per candidate.  A connect that fails (refused: the other NAT
answered an early SYN with a RST; or unanswered) is tried again after
``redial_pause`` (times a jitter factor in [0.5, 1.5), so that the two sides'
tries do not lock in phase), up to ``redials`` tries per attempt in all and
only while the attempt's dial is younger than ``redial_window`` (0.6 of
``dial_timeout``: 3 s).  Where a NAT
answers an early SYN with a RST, the RST also removes the sender's own
mapping, so a direct connection needs one side's SYN to pass the other NAT
while that side's mapping is open: many quick tries at independent moments
make that likely (docs/nat-lab.md, NAT types).  Both peers also accept a
connection on their outgoing port from an address among the other's
candidates (:meth:`PunchCoordinator.accepts`): a SYN that arrives when no
dial of ours is in flight, through a mapping still open or on a network
without NAT, then becomes the link as well (:meth:`direct_up`).

An attempt fails if no answer comes within ``answer_timeout``, if every
candidate's tries are used up, if the connection made fails its handshake
(the driver reports it), or if no direct link is up within ``dial_timeout``.
A failed attempt is followed at once by the next one; after the last, the
pair stays relayed and a new round starts after ``retry_after`` (doubling per
failed round up to ``retry_max``, times a jitter factor in [0.5, 1.5) drawn
from the injected ``random``).  Once a direct link is up (either side's dial,
or a link the peers had anyway) the coordinator rests; if that link dies, a
new round starts after ``retry_after``.  Messages of another attempt than the
current one are stale (a late reply to a timed-out attempt) and ignored.

Which NATs allow it
-------------------
:func:`classify_mapping` tells from two observers' reports of the same local
port whether the NAT maps endpoint-independently; :func:`direct_expected`
says which pairs should end direct.  Linux conntrack filters inbound packets
by the exact remote address and port, so a peer whose NAT picks a new port
per destination ("hard") cannot be reached by a dial to the port an observer
saw, and neither side's NAT lets the other in: hard with anything behind a
NAT stays relayed (port guessing, as Tailscale does, is not attempted).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from overlay.errors import LocalProtocolError, MalformedMessage

Candidate = tuple[str, int]
MAX_HOST_LENGTH = 45
"""The longest IPv6 text form (with an embedded IPv4 address)."""
"""A host and port a peer may be dialled at: observed (public) or local."""

MAX_CANDIDATES = 8
"""Candidates accepted in one message: an observed address per observer, a few local ones."""


class PunchKind(enum.IntEnum):
    CONNECT = 0
    CONNECT_REPLY = 1
    SYNC = 2
    OBSERVE = 3
    """Edge client -> its supernode: which address do you see my link come from?"""
    OBSERVED = 4
    """The answer: one candidate, the link's remote address as the supernode sees it."""


@dataclass(frozen=True, slots=True)
class PunchMessage:
    """``[kind, attempt, candidates]``; SYNC carries no candidates (an empty array)."""

    kind: PunchKind
    attempt: int
    candidates: tuple[Candidate, ...] = ()

    def to_body(self) -> list[object]:
        return [int(self.kind), self.attempt, [[host, port] for host, port in self.candidates]]

    @classmethod
    def from_body(cls, body: object) -> PunchMessage:
        if not isinstance(body, list) or len(body) != 3:
            raise MalformedMessage("a punch message is [kind, attempt, candidates]")
        kind, attempt, candidates = body
        if type(kind) is not int or kind not in PunchKind._value2member_map_:
            raise MalformedMessage(f"unknown punch message kind {kind!r}")
        if type(attempt) is not int or not 1 <= attempt <= 255:
            raise MalformedMessage("a punch attempt is an integer 1-255")
        if not isinstance(candidates, list) or len(candidates) > MAX_CANDIDATES:
            raise MalformedMessage(f"candidates must be an array of at most {MAX_CANDIDATES}")
        parsed = []
        for item in candidates:
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                    or type(item[1]) is not int or not 0 < item[1] < 65536):
                raise MalformedMessage("a candidate is [host, port] with a port 1-65535")
            parsed.append((_dialable_ip(item[0]), item[1]))
        return cls(PunchKind(kind), attempt, tuple(parsed))


def _dialable_ip(host: str) -> str:
    """``host`` if it is an IPv4 or IPv6 address one could dial, else MalformedMessage.

    Never a name: a stranger's candidate must not make us look anything up (nor
    reach the resolver with text it chokes on), and an address that is nobody's
    (unspecified, multicast) is no candidate."""
    try:
        address = ipaddress.ip_address(host) if len(host) <= MAX_HOST_LENGTH else None
    except ValueError:
        address = None
    if address is None or address.is_unspecified or address.is_multicast:
        raise MalformedMessage(f"a candidate host is an IPv4 or IPv6 address, not {host[:64]!r}")
    return host


def worth_dialling(candidate: Candidate, own: Sequence[Candidate]) -> bool:
    """Whether to dial a peer's candidate: a loopback address only when we are on
    loopback too (``own``: our own candidates).  The peer chose the address: from
    anywhere else a loopback candidate reaches no peer, only this machine's own
    services (a stranger in a conversation could have us probe them)."""
    if not ipaddress.ip_address(candidate[0]).is_loopback:
        return True
    return any(ipaddress.ip_address(host).is_loopback for host, _ in own)


@dataclass(frozen=True)
class PunchConfig:
    attempts: int = 3
    answer_timeout: float = 5.0
    """How long the initiator waits for CONNECT_REPLY, and the responder for SYNC."""
    dial_timeout: float = 5.0
    """A dial not reported by then has failed (the driver's own connect timeout is shorter)."""
    redials: int = 400
    """Connect tries after the first per attempt, over all candidates: bounded, because a
    refused try costs a SYN and a RST, and fast, because each try is a short chance."""
    redial_pause: float = 0.002
    """The pause before a failed candidate is tried again, times jitter in [0.5, 1.5)."""
    redial_window: float | None = None
    """No try starts later than this after the attempt's dial began (at most
    ``dial_timeout``; None: 0.6 of it, leaving time for the handshake of a late
    connection)."""
    retry_after: float = 60.0
    retry_max: float = 3600.0
    start_delay: float = 0.0
    """Seconds a new relayed conversation stays relayed before the initiator's first
    attempt.  0 in use (try at once); ``overlay bench nat`` holds punching off for a
    moment to measure the relayed path of the very conversation it then upgrades."""

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 255:
            raise LocalProtocolError("attempts must be 1-255")
        if self.start_delay < 0:
            raise LocalProtocolError("start_delay must not be negative")
        if min(self.answer_timeout, self.dial_timeout, self.retry_after,
               self.redial_pause, self.tries_window) <= 0:
            raise LocalProtocolError("timeouts must be positive")
        if self.redials < 0:
            raise LocalProtocolError("redials must not be negative")
        if self.tries_window > self.dial_timeout:
            raise LocalProtocolError("redial_window must not exceed dial_timeout")
        if self.retry_max < self.retry_after:
            raise LocalProtocolError("retry_max must be at least retry_after")

    @property
    def tries_window(self) -> float:
        """``redial_window`` as it applies."""
        return self.dial_timeout * 0.6 if self.redial_window is None else self.redial_window


class PunchState(enum.Enum):
    RELAYED = "relayed"          # resting: waiting for the next round (or for start)
    AWAIT_REPLY = "await-reply"  # initiator: CONNECT sent
    AWAIT_SYNC = "await-sync"    # responder: CONNECT_REPLY sent
    DIAL_SOON = "dial-soon"      # initiator: SYNC sent, dialling at rtt / 2
    DIALING = "dialing"          # a dial is out, its result awaited
    DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class SendPunch:
    """Send ``message`` to the peer over the relayed path."""

    message: PunchMessage


@dataclass(frozen=True, slots=True)
class Dial:
    """Dial the peer at ``candidates`` now, from the local port outgoing links use; report
    each candidate's failure (:meth:`PunchCoordinator.dial_failed`) and the connection
    made (:meth:`PunchCoordinator.dial_result`).  ``redial``: 0 for an attempt's first
    dial (all the peer's candidates), else the number of this try again (one candidate)."""

    candidates: tuple[Candidate, ...]
    attempt: int
    redial: int = 0


@dataclass(frozen=True, slots=True)
class GaveUp:
    """This round's attempts all failed; the pair stays relayed until ``retry_at``."""

    attempts: int
    retry_at: float


PunchAction = SendPunch | Dial | GaveUp


class PunchCoordinator:
    """One peer's side of hole punching with one other peer (see the module docstring)."""

    def __init__(self, *, initiator: bool, candidates: Sequence[Candidate],
                 random: Callable[[], float], config: PunchConfig | None = None) -> None:
        self.initiator = initiator
        self.config = config or PunchConfig()
        self._candidates = tuple(candidates)[:MAX_CANDIDATES]
        self._random = random
        self.state = PunchState.RELAYED
        self.attempt = 0
        self.failed_rounds = 0
        self.rtt: float | None = None
        """The relayed round trip measured in the last CONNECT exchange (initiator)."""
        self._timer: float | None = None
        self._sent_connect_at = 0.0
        self._peer_candidates: tuple[Candidate, ...] = ()
        self._actions: list[PunchAction] = []
        self._dial_started = 0.0
        self._redials = 0
        """Tries again made in this attempt's dial."""
        self._dialling: set[Candidate] = set()
        """Candidates with a connect in flight (their failure not yet reported)."""
        self._redial_at: list[tuple[float, Candidate, int]] = []
        """Candidates to try again: when, which, and the try's number."""

    # --- events in -------------------------------------------------------------------

    def start(self, now: float) -> None:
        """A relayed conversation began: try at once, or after ``start_delay`` (the
        initiator; the responder waits)."""
        if self.initiator and self.state is PunchState.RELAYED:
            if self.config.start_delay > 0:
                self._timer = now + self.config.start_delay  # handle_timer begins attempt 1
            else:
                self._begin_attempt(1, now)

    def set_candidates(self, candidates: Sequence[Candidate]) -> None:
        """The local candidates changed (a new observed address): used from the next message."""
        self._candidates = tuple(candidates)[:MAX_CANDIDATES]

    def receive(self, message: PunchMessage, now: float) -> None:
        if self.state is PunchState.DIRECT:
            return
        if message.kind is PunchKind.CONNECT and not self.initiator:
            if self.state is PunchState.DIALING and message.attempt == self.attempt:
                return  # a duplicate of the attempt being dialled
            self.attempt = message.attempt
            self._peer_candidates = self._dialable(message.candidates)
            self._emit(SendPunch(PunchMessage(PunchKind.CONNECT_REPLY, message.attempt,
                                              self._candidates)))
            self.state = PunchState.AWAIT_SYNC
            self._timer = now + self.config.answer_timeout
        elif message.kind is PunchKind.CONNECT_REPLY and self.initiator:
            if self.state is not PunchState.AWAIT_REPLY or message.attempt != self.attempt:
                return
            self._peer_candidates = self._dialable(message.candidates)
            self.rtt = now - self._sent_connect_at
            self._emit(SendPunch(PunchMessage(PunchKind.SYNC, self.attempt)))
            self.state = PunchState.DIAL_SOON
            self._timer = now + self.rtt / 2
        elif message.kind is PunchKind.SYNC and not self.initiator:
            if self.state is not PunchState.AWAIT_SYNC or message.attempt != self.attempt:
                return
            self._dial(now)

    def dial_failed(self, attempt: int, candidate: Candidate, now: float) -> None:
        """One connect to ``candidate`` in ``attempt`` failed (refused, unreachable, no
        answer): try it again soon while the attempt's budget lasts, else give it up; the
        attempt fails when no candidate is left."""
        if (self.state is not PunchState.DIALING or attempt != self.attempt
                or candidate not in self._dialling):
            return
        self._dialling.discard(candidate)
        pause = self.config.redial_pause * (0.5 + self._random())
        if (self._redials < self.config.redials
                and now + pause <= self._dial_started + self.config.tries_window):
            self._redials += 1
            self._redial_at.append((now + pause, candidate, self._redials))
        elif not self._dialling and not self._redial_at:
            self._attempt_failed(now)
            return
        self._dial_timer()

    def dial_result(self, attempt: int, success: bool, now: float) -> None:
        """The driver's report on the connection a dial of ``attempt`` made (success: the
        link is up), or that there was nothing to dial."""
        if self.state is not PunchState.DIALING or attempt != self.attempt:
            return
        if success:
            self.direct_up()
        else:
            self._attempt_failed(now)

    def accepts(self, address: Candidate) -> bool:
        """Whether a connection arriving on our outgoing port from ``address`` may be the
        peer's punch: it comes from one of the candidates the peer sent us, and we are
        not direct already.  (The link handshake then proves who it is.)"""
        return self.state is not PunchState.DIRECT and address in self._peer_candidates

    def direct_up(self) -> None:
        """A direct link to the peer is up (whoever made it, dialled or accepted): rest."""
        self.state = PunchState.DIRECT
        self.failed_rounds = 0
        self._timer = None
        self._stop_dialling()

    def direct_down(self, now: float) -> None:
        """The direct link died: the conversation is relayed again; a new round later."""
        if self.state is PunchState.DIRECT:
            self.state = PunchState.RELAYED
            self.attempt = 0
            self._timer = now + self.config.retry_after if self.initiator else None

    def handle_timer(self, now: float) -> None:
        if self._timer is None or now < self._timer:
            return
        self._timer = None
        dial_deadline = self._dial_started + self.config.dial_timeout
        if self.state is PunchState.DIALING and now < dial_deadline:
            self._redial_due(now)
        elif self.state is PunchState.DIAL_SOON:
            self._dial(now)
        elif self.state is PunchState.RELAYED:
            if self.initiator:
                self._begin_attempt(1, now)
        elif self.state is PunchState.AWAIT_SYNC:
            self.state = PunchState.RELAYED  # the initiator decides what comes next
        else:  # AWAIT_REPLY or DIALING timed out
            self._attempt_failed(now)

    # --- actions out -----------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._timer

    def actions(self) -> list[PunchAction]:
        out, self._actions = self._actions, []
        return out

    # --- internals -------------------------------------------------------------------

    def _emit(self, action: PunchAction) -> None:
        self._actions.append(action)

    def _begin_attempt(self, attempt: int, now: float) -> None:
        self.attempt = attempt
        self._sent_connect_at = now
        self._emit(SendPunch(PunchMessage(PunchKind.CONNECT, attempt, self._candidates)))
        self.state = PunchState.AWAIT_REPLY
        self._timer = now + self.config.answer_timeout

    def _dialable(self, candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
        """The peer's candidates we would dial (:func:`worth_dialling`): the others are
        neither dialled nor accepted, nor waited for."""
        return tuple(c for c in candidates if worth_dialling(c, self._candidates))

    def _dial(self, now: float) -> None:
        self.state = PunchState.DIALING
        self._dial_started = now
        self._redials = 0
        self._dialling = set(self._peer_candidates)
        self._redial_at = []
        self._emit(Dial(self._peer_candidates, self.attempt))
        self._timer = now + self.config.dial_timeout

    def _redial_due(self, now: float) -> None:
        """Try again the candidates whose pause is over; the timer goes to the next."""
        due = [entry for entry in self._redial_at if entry[0] <= now]
        self._redial_at = [entry for entry in self._redial_at if entry[0] > now]
        for _, candidate, number in due:
            self._dialling.add(candidate)
            self._emit(Dial((candidate,), self.attempt, redial=number))
        self._dial_timer()

    def _dial_timer(self) -> None:
        deadline = self._dial_started + self.config.dial_timeout
        self._timer = min([deadline, *(entry[0] for entry in self._redial_at)])

    def _stop_dialling(self) -> None:
        self._dialling = set()
        self._redial_at = []

    def _attempt_failed(self, now: float) -> None:
        self._stop_dialling()
        if not self.initiator:
            self.state = PunchState.RELAYED  # the initiator times out too and tries again
            self._timer = None
            return
        if self.attempt < self.config.attempts:
            self._begin_attempt(self.attempt + 1, now)
            return
        delay = min(self.config.retry_after * 2 ** self.failed_rounds, self.config.retry_max)
        self.failed_rounds += 1
        retry_at = now + delay * (0.5 + self._random())
        self._emit(GaveUp(self.attempt, retry_at))
        self.state = PunchState.RELAYED
        self.attempt = 0
        self._timer = retry_at


class NatMapping(enum.Enum):
    NONE = "none"                                  # observed as its own local address: no NAT
    ENDPOINT_INDEPENDENT = "endpoint-independent"  # "easy": one public port for every destination
    ENDPOINT_DEPENDENT = "endpoint-dependent"      # "hard": a new public port per destination
    UNKNOWN = "unknown"                            # fewer than two observers answered


def classify_mapping(local: Candidate, observed: Sequence[Candidate]) -> NatMapping:
    """The NAT's mapping, from what two or more observers saw of connections from ``local``.

    The connections must come from the same local port (the one outgoing links
    are bound to); each observer reports the source address it saw.
    """
    if len(observed) < 2:
        return NatMapping.UNKNOWN
    if all(seen == local for seen in observed):
        return NatMapping.NONE
    if len(set(observed)) == 1:
        return NatMapping.ENDPOINT_INDEPENDENT
    return NatMapping.ENDPOINT_DEPENDENT


def direct_expected(a: NatMapping, b: NatMapping) -> bool:
    """Whether a punch between peers behind ``a`` and ``b`` should end direct here.

    No NAT on either side needs no punch (the other dials it); two easy NATs
    punch; a hard NAT with any NAT on the other side stays relayed (the module
    docstring says why); unknown is not expected either way, so False.
    """
    if NatMapping.NONE in (a, b):
        return True
    return a is NatMapping.ENDPOINT_INDEPENDENT and b is NatMapping.ENDPOINT_INDEPENDENT
