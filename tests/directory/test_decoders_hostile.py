"""Every directory decoder, fed hostile input, raises only its own refusal (issue #11).

A request's operation and arguments, a sealed password and a certificate all
come from another machine.  Whatever their shape (any msgpack, values nested
to the wire's limit, wrong types, garbage bytes), the server answers with a
``Rejected`` status and a client refuses a certificate with
``CertificateError``; no other exception may escape to kill a connection
task or the process.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay.directory.certificates import issue_certificate, verify_certificate
from overlay.directory.protocol import OPERATIONS, Rejected, parse_request, unseal_password
from overlay.errors import CertificateError
from tests.conftest import make_identity
from tests.proto.test_hostile_input import nested, shaped_values

SERVER = make_identity("server")
NOW = 1_800_000_000.0
CERTIFICATE = issue_certificate(SERVER, "alice", make_identity("alice").public_key, now=NOW,
                                lifetime=3600).raw
HOSTILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

argument_values = shaped_values | st.integers(0, 31).map(nested)
arguments = st.dictionaries(
    st.sampled_from(["username", "sealed_password", "token", "node_id", "address", "state",
                     "direct_address", "home_address", "home_node", "supernode", "x"]),
    argument_values, max_size=6)
operations = st.sampled_from(sorted(OPERATIONS)) | st.text(max_size=40)


@HOSTILE
@given(operations, arguments)
def test_parse_request_answers_only_with_a_status(operation: str, args: dict[str, Any]) -> None:
    with contextlib.suppress(Rejected):
        parse_request(operation, args)


@HOSTILE
@given(argument_values | st.binary(max_size=3000), st.binary(min_size=32, max_size=32) | st.none())
def test_unseal_password_answers_only_with_a_status(sealed: object,
                                                    session: bytes | None) -> None:
    with contextlib.suppress(Rejected):
        unseal_password(SERVER, session, sealed)


@st.composite
def hostile_certificates(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return bytes(msgpack.packb(draw(argument_values), use_bin_type=True))
    raw = bytearray(CERTIFICATE)
    i = draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(raw)


@HOSTILE
@given(hostile_certificates(), st.floats(allow_nan=True) | st.just(NOW))
def test_verify_certificate_refuses_only_with_certificate_error(raw: bytes, now: float) -> None:
    with contextlib.suppress(CertificateError):
        verify_certificate(raw, SERVER.public_key, now=now)
