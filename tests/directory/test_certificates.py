"""Certificates: issued by the server key, verified only against it, tamper-evident."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.directory.certificates import issue_certificate, verify_certificate
from overlay.errors import CertificateError
from overlay.ids import NodeId
from tests.conftest import make_identity

SERVER = make_identity("server")
ALICE = make_identity("alice")
NOW = 1_800_000_000.0


def test_round_trip() -> None:
    cert = issue_certificate(SERVER, "alice", ALICE.public_key, now=NOW, lifetime=3600)
    checked = verify_certificate(cert.raw, SERVER.public_key, now=NOW + 10)
    assert checked == cert
    assert checked.node_id == NodeId.from_public_key(ALICE.public_key)


def test_expired_and_not_yet_valid_are_refused() -> None:
    cert = issue_certificate(SERVER, "alice", ALICE.public_key, now=NOW, lifetime=3600)
    with pytest.raises(CertificateError, match="not valid now"):
        verify_certificate(cert.raw, SERVER.public_key, now=NOW + 3600)
    with pytest.raises(CertificateError, match="not valid now"):
        verify_certificate(cert.raw, SERVER.public_key, now=NOW - 3600)


def test_another_server_key_is_refused() -> None:
    cert = issue_certificate(make_identity("rogue"), "alice", ALICE.public_key, now=NOW,
                             lifetime=3600)
    with pytest.raises(CertificateError, match="pinned server key"):
        verify_certificate(cert.raw, SERVER.public_key, now=NOW)


@given(st.data())
def test_any_flipped_byte_is_detected(data: st.DataObject) -> None:
    raw = issue_certificate(SERVER, "alice", ALICE.public_key, now=NOW, lifetime=3600).raw
    index = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = raw[:index] + bytes([raw[index] ^ flip]) + raw[index + 1:]
    with pytest.raises(CertificateError):
        verify_certificate(tampered, SERVER.public_key, now=NOW)


@given(st.binary(max_size=600))
def test_garbage_is_a_certificate_error(garbage: bytes) -> None:
    with pytest.raises(CertificateError):
        verify_certificate(garbage, SERVER.public_key, now=NOW)
