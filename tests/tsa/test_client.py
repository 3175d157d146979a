"""The client helpers against a real, independent TSA (``openssl ts -reply``)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.tsa.errors import FailInfo, PKIStatus
from tests.tsa._support_client import (
    FIRST_SERIAL,
    OTHER_POLICY,
    POLICY,
    UNACCEPTED_POLICY,
    Pki,
    make_pki,
    openssl_reply,
    write_openssl_config,
)
from timestamping import (
    MAX_REPLY_BYTES,
    Digest,
    ReplyRejected,
    TimestampingError,
    TimeStampQuery,
    VerificationFailed,
    build_request,
    check_reply,
    describe_failure,
    parse_reply,
    random_nonce,
)
from timestamping.verify import verify_reply, verify_with_openssl

DATA = b"attendance sheet, session 2026-11-28, room B12\n"


@pytest.fixture(scope="module")
def pki_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pki, Path]]:
    d = tmp_path_factory.mktemp("openssl-tsa")
    pki = make_pki(d)
    yield pki, write_openssl_config(d, pki)


def _query(digest: Digest = Digest.SHA256, **kw: object) -> TimeStampQuery:
    return build_request(digest.digest(DATA), digest=digest, nonce=random_nonce(), **kw)  # type: ignore[arg-type]


def _openssl_text(query_der: bytes, tmp_path: Path) -> str:
    q = tmp_path / "q.tsq"
    q.write_bytes(query_der)
    r = subprocess.run(
        ["openssl", "ts", "-query", "-in", str(q), "-text"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return r.stdout


@pytest.mark.parametrize("digest", list(Digest))
def test_request_read_back_by_openssl_and_our_tsa_parser(digest: Digest, tmp_path: Path) -> None:
    from appliance.tsa.request import parse_request

    query = build_request(
        digest.digest(DATA), digest=digest, nonce=0xDEADBEEF12345678, policy_oid=POLICY
    )
    text = _openssl_text(query.der, tmp_path)
    assert f"Hash Algorithm: {digest.hashlib_name}" in text
    assert f"Policy OID: {POLICY}" in text
    assert "Nonce: 0xDEADBEEF12345678" in text
    assert "Certificate required: yes" in text
    parsed = parse_request(query.der)  # the appliance's strict DER parser accepts it
    assert parsed.nonce == 0xDEADBEEF12345678


def test_request_without_cert_req_nor_nonce(tmp_path: Path) -> None:
    query = build_request(bytes(32), nonce=None, cert_req=False)
    text = _openssl_text(query.der, tmp_path)
    assert "Certificate required: no" in text
    assert "Nonce: unspecified" in text


def test_request_refuses_bad_input() -> None:
    with pytest.raises(TimestampingError, match="32 bytes"):
        build_request(bytes(20), nonce=1)
    with pytest.raises(TimestampingError, match="not an object identifier"):
        build_request(bytes(32), nonce=1, policy_oid="policy-one")
    with pytest.raises(TimestampingError, match="unsupported hash"):
        Digest.from_name("sha1")


def test_nonces_are_random_64_bit() -> None:
    nonces = {random_nonce() for _ in range(1000)}
    assert len(nonces) == 1000
    assert all(0 <= n < 1 << 64 for n in nonces)
    assert max(nonces).bit_length() > 56


def test_granted_reply_parsed_and_matched(pki_config: tuple[Pki, Path]) -> None:
    _, config = pki_config
    query = _query()
    reply = parse_reply(openssl_reply(config, query.der))
    assert reply.status is PKIStatus.GRANTED
    info = check_reply(query, reply)
    assert info.serial >= FIRST_SERIAL and info.serial.bit_length() == 159
    assert info.nonce == query.nonce
    assert info.policy_oid == POLICY
    assert info.message_imprint == hashlib.sha256(DATA).digest()
    assert info.accuracy is not None and info.accuracy.total_us == 1_500_100
    assert str(info.accuracy) == "±1.5001 s"
    assert info.gen_time_text.endswith("Z")
    assert info.tsa_name is not None and "Horodate Test TSA" in info.tsa_name
    assert len(reply.certificates) == 2  # TSA certificate and root (`certs` in the config)


def test_rejection_parsed_with_fail_info_in_words(pki_config: tuple[Pki, Path]) -> None:
    _, config = pki_config
    query = _query(policy_oid=UNACCEPTED_POLICY)
    reply = parse_reply(openssl_reply(config, query.der))
    assert reply.status is PKIStatus.REJECTION
    assert reply.fail_info == {FailInfo.unacceptedPolicy}
    assert reply.info is None
    words = describe_failure(reply)
    assert "rejected" in words and "unacceptedPolicy" in words
    assert "policy is not supported" in words
    with pytest.raises(ReplyRejected, match="unacceptedPolicy") as exc:
        check_reply(query, reply)
    assert exc.value.reply is reply


def test_reply_for_another_request_is_refused(pki_config: tuple[Pki, Path]) -> None:
    _, config = pki_config
    asked = _query()
    other = build_request(Digest.SHA256.digest(b"other"), nonce=asked.nonce)
    with pytest.raises(VerificationFailed, match="another message"):
        check_reply(asked, parse_reply(openssl_reply(config, other.der)))
    replayed = build_request(asked.message_imprint, nonce=(asked.nonce or 0) + 1)
    with pytest.raises(VerificationFailed, match="nonce"):
        check_reply(asked, parse_reply(openssl_reply(config, replayed.der)))
    wants_other_policy = build_request(asked.message_imprint, nonce=1, policy_oid=OTHER_POLICY)
    reply = parse_reply(openssl_reply(config, wants_other_policy.der))
    assert check_reply(wants_other_policy, reply).policy_oid == OTHER_POLICY
    with pytest.raises(VerificationFailed, match="policy"):
        check_reply(build_request(asked.message_imprint, nonce=1, policy_oid=POLICY), reply)


@pytest.mark.parametrize("digest", list(Digest))
def test_good_token_verifies_with_both_verifiers(
    pki_config: tuple[Pki, Path], digest: Digest
) -> None:
    pki, config = pki_config
    query = _query(digest)
    reply_der = openssl_reply(config, query.der)
    ca = pki.root_pem.read_bytes()
    verified = verify_reply(
        reply_der, message_imprint=query.message_imprint, ca_pem=ca, nonce=query.nonce
    )
    assert verified.tsa_subject == "CN=Horodate Test TSA,O=Horodate test PKI,C=FR"
    assert verified.info.serial.bit_length() == 159
    assert "Verification: OK" in verify_with_openssl(
        reply_der, message_imprint=query.message_imprint, ca_pem=ca
    )


def test_wrong_data_fails_both_verifiers(pki_config: tuple[Pki, Path]) -> None:
    pki, config = pki_config
    query = _query()
    reply_der = openssl_reply(config, query.der)
    other = Digest.SHA256.digest(DATA + b" (edited)")
    ca = pki.root_pem.read_bytes()
    with pytest.raises(VerificationFailed, match="does not match"):
        verify_reply(reply_der, message_imprint=other, ca_pem=ca)
    with pytest.raises(VerificationFailed, match="imprint mismatch"):
        verify_with_openssl(reply_der, message_imprint=other, ca_pem=ca)


def test_wrong_ca_fails_both_verifiers(pki_config: tuple[Pki, Path]) -> None:
    pki, config = pki_config
    query = _query()
    reply_der = openssl_reply(config, query.der)
    ca = pki.other_root_pem.read_bytes()
    with pytest.raises(VerificationFailed, match=r"certificate chain .*self-signed certificate"):
        verify_reply(reply_der, message_imprint=query.message_imprint, ca_pem=ca)
    with pytest.raises(VerificationFailed, match="certificate verify error"):
        verify_with_openssl(reply_der, message_imprint=query.message_imprint, ca_pem=ca)


def test_tsa_certificate_alone_is_not_a_trust_anchor(pki_config: tuple[Pki, Path]) -> None:
    pki, config = pki_config
    query = _query()
    reply_der = openssl_reply(config, query.der)
    with pytest.raises(TimestampingError, match="no self-signed root"):
        verify_reply(
            reply_der, message_imprint=query.message_imprint, ca_pem=pki.tsa_pem.read_bytes()
        )


def test_tampered_token_fails_both_verifiers(pki_config: tuple[Pki, Path]) -> None:
    pki, config = pki_config
    query = _query()
    reply_der = openssl_reply(config, query.der)
    info = parse_reply(reply_der).info
    assert info is not None
    # Change the last digit of the seconds of genTime inside the signed TSTInfo.
    at = reply_der.index(info.gen_time_text.encode()) + 13
    tampered = bytearray(reply_der)
    tampered[at] = ord("0") + (tampered[at] - ord("0") + 1) % 10
    tampered_der = bytes(tampered)
    assert parse_reply(tampered_der).info != info  # still parses, says something else
    ca = pki.root_pem.read_bytes()
    with pytest.raises(VerificationFailed, match="digest failure; signature failure"):
        verify_reply(tampered_der, message_imprint=query.message_imprint, ca_pem=ca)
    with pytest.raises(VerificationFailed, match=r"signature failure|digest failure"):
        verify_with_openssl(tampered_der, message_imprint=query.message_imprint, ca_pem=ca)


def test_nonce_and_policy_checked_by_verifier(pki_config: tuple[Pki, Path]) -> None:
    pki, config = pki_config
    query = _query()
    reply_der = openssl_reply(config, query.der)
    ca = pki.root_pem.read_bytes()
    assert query.nonce is not None
    with pytest.raises(VerificationFailed, match="nonce"):
        verify_reply(
            reply_der, message_imprint=query.message_imprint, ca_pem=ca, nonce=query.nonce + 1
        )
    with pytest.raises(VerificationFailed, match="policy"):
        verify_reply(
            reply_der, message_imprint=query.message_imprint, ca_pem=ca, policy_oid=OTHER_POLICY
        )


def test_token_without_certificate_needs_tsa_cert_in_bundle(pki_config: tuple[Pki, Path]) -> None:
    pki, config = pki_config
    query = _query(Digest.SHA384, cert_req=False)
    reply_der = openssl_reply(config, query.der)
    assert parse_reply(reply_der).certificates == ()
    with pytest.raises(VerificationFailed, match="does not carry the TSA certificate"):
        verify_reply(
            reply_der, message_imprint=query.message_imprint, ca_pem=pki.root_pem.read_bytes()
        )
    bundle = pki.bundle_pem.read_bytes()
    verified = verify_reply(reply_der, message_imprint=query.message_imprint, ca_pem=bundle)
    assert "Horodate Test TSA" in verified.tsa_subject
    verify_with_openssl(reply_der, message_imprint=query.message_imprint, ca_pem=bundle)


def test_rejection_is_not_verifiable(pki_config: tuple[Pki, Path]) -> None:
    pki, config = pki_config
    query = _query(policy_oid=UNACCEPTED_POLICY)
    reply_der = openssl_reply(config, query.der)
    with pytest.raises(ReplyRejected, match="unacceptedPolicy"):
        verify_reply(
            reply_der, message_imprint=query.message_imprint, ca_pem=pki.root_pem.read_bytes()
        )


def test_bad_ca_file_is_a_clear_error(pki_config: tuple[Pki, Path]) -> None:
    _, config = pki_config
    query = _query()
    reply_der = openssl_reply(config, query.der)
    with pytest.raises(TimestampingError, match="no readable PEM"):
        verify_reply(reply_der, message_imprint=query.message_imprint, ca_pem=b"not a pem")


def test_oversized_reply_refused_by_parser() -> None:
    with pytest.raises(TimestampingError, match="larger than"):
        parse_reply(b"\x30" * (MAX_REPLY_BYTES + 1))


def _parse_or_client_error(data: bytes) -> None:
    """Either a TimestampingError, or a reply that is consistent with itself."""
    try:
        reply = parse_reply(data)
    except TimestampingError:
        return
    assert reply.der == data
    assert (reply.info is None) == (reply.token_der is None)
    if reply.granted:
        assert reply.info is not None
    if reply.token_der is not None:
        assert reply.token_der in data


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_parser_fuzz_raises_only_client_error(data: bytes) -> None:
    _parse_or_client_error(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_parser_fuzz_mutated_real_reply(data: st.DataObject) -> None:
    # A real reply with a few bytes changed: parse must either succeed or say TimestampingError.
    reply = _REAL_REPLY[0]
    positions = data.draw(st.lists(st.integers(0, len(reply) - 1), min_size=1, max_size=4))
    mutated = bytearray(reply)
    for p in positions:
        mutated[p] = data.draw(st.integers(0, 255))
    _parse_or_client_error(bytes(mutated))


_REAL_REPLY: list[bytes] = []


@pytest.fixture(autouse=True, scope="module")
def _real_reply(pki_config: tuple[Pki, Path]) -> None:
    _REAL_REPLY.append(openssl_reply(pki_config[1], _query().der))


def test_openssl_missing_is_a_clear_error(pki_config: tuple[Pki, Path]) -> None:
    pki, config = pki_config
    query = _query()
    reply_der = openssl_reply(config, query.der)
    assert shutil.which("no-such-openssl-binary") is None
    with pytest.raises(TimestampingError, match="not found"):
        verify_with_openssl(
            reply_der,
            message_imprint=query.message_imprint,
            ca_pem=pki.root_pem.read_bytes(),
            openssl="no-such-openssl-binary",
        )
