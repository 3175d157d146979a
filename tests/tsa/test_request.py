"""The strict DER TimeStampReq parser: every refusal and its PKIFailureInfo, agreement with
asn1crypto, and fuzzing (never an exception other than RequestRejected, never a hang)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from asn1crypto import core, tsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rfc3161_client import TimestampRequestBuilder

from appliance.tsa import FailInfo, parse_request
from appliance.tsa.errors import RequestRejected
from appliance.tsa.request import MAX_REQUEST_BYTES

DIGEST = {"sha256": 32, "sha384": 48, "sha512": 64, "sha1": 20, "md5": 16}


def make_request(
    *,
    alg: str = "sha256",
    digest: bytes | None = None,
    version: int = 1,
    policy: str | None = None,
    nonce: int | None = 0x1234567890ABCDEF,
    cert_req: bool = True,
    extensions: list[dict[str, Any]] | None = None,
    params_null: bool = True,
) -> bytes:
    """A TimeStampReq encoded by asn1crypto (an encoder independent of ours)."""
    algorithm: dict[str, Any] = {"algorithm": alg}
    if params_null:
        algorithm["parameters"] = core.Null()
    fields: dict[str, Any] = {
        "version": version,
        "message_imprint": {
            "hash_algorithm": algorithm,
            "hashed_message": digest if digest is not None else b"\x5a" * DIGEST.get(alg, 32),
        },
        "cert_req": cert_req,
    }
    if policy is not None:
        fields["req_policy"] = policy
    if nonce is not None:
        fields["nonce"] = nonce
    if extensions is not None:
        fields["extensions"] = extensions
    return bytes(tsp.TimeStampReq(fields).dump(force=True))


def refusal(data: bytes) -> FailInfo:
    with pytest.raises(RequestRejected) as exc:
        parse_request(data)
    return exc.value.fail_info


# --- accepted -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["sha256", "sha384", "sha512"])
def test_accepts_sha2_requests_with_and_without_parameters(alg: str) -> None:
    for params_null in (True, False):
        digest = hashlib.new(alg, b"data").digest()
        req = parse_request(make_request(alg=alg, digest=digest, params_null=params_null))
        assert req.hash_alg.name == alg
        assert req.imprint == digest
        assert req.nonce == 0x1234567890ABCDEF
        assert req.cert_req is True
        assert req.policy is None
        assert req.extensions == ()


def test_parses_every_optional_field() -> None:
    data = make_request(policy="1.2.3.4.5", nonce=-5, cert_req=False)
    req = parse_request(data)
    assert (req.policy, req.nonce, req.cert_req) == ("1.2.3.4.5", -5, False)
    assert req.nonce_der == b"\x02\x01\xfb"
    assert data.find(req.imprint_der) == 5  # the MessageImprint TLV, verbatim


def test_parses_rfc3161_client_requests() -> None:
    for nonce in (True, False):
        for cert in (True, False):
            built = (
                TimestampRequestBuilder()
                .data(b"hello")
                .nonce(nonce=nonce)
                .cert_request(cert_request=cert)
                .build()
            )
            req = parse_request(built.as_bytes())
            assert req.hash_alg.name == "sha512"
            assert req.imprint == hashlib.sha512(b"hello").digest()
            assert req.nonce == built.nonce
            assert req.cert_req is cert


# --- refused, one test per failInfo the parser produces ------------------------------------


@pytest.mark.parametrize(
    ("alg", "why"),
    [
        ("sha1", "SHA-1"),
        ("md5", "MD5"),
        ("sha224", "SHA-224"),
        ("1.2.3.4.99", "1.2.3.4.99"),
        ("sha3_256", "2.16.840.1.101.3.4.2.8"),
    ],
)
def test_bad_alg_for_weak_or_unknown_hash(alg: str, why: str) -> None:
    with pytest.raises(RequestRejected) as exc:
        parse_request(make_request(alg=alg))
    assert exc.value.fail_info is FailInfo.badAlg
    assert why in exc.value.text


def test_bad_alg_for_sha2_with_parameters() -> None:
    data = bytearray(make_request(nonce=None, cert_req=False, params_null=True))
    # replace the NULL parameters (05 00) by an INTEGER 0 (02 01 00), fixing lengths
    i = data.index(b"\x05\x00")
    data[i : i + 2] = b"\x02\x01\x00"
    data[1] += 1  # TimeStampReq
    data[6] += 1  # MessageImprint
    data[8] += 1  # AlgorithmIdentifier
    assert refusal(bytes(data)) is FailInfo.badAlg


@pytest.mark.parametrize(
    ("alg", "length"), [("sha256", 31), ("sha256", 33), ("sha384", 32), ("sha512", 0)]
)
def test_bad_data_format_for_digest_length(alg: str, length: int) -> None:
    assert refusal(make_request(alg=alg, digest=b"\x01" * length)) is FailInfo.badDataFormat


def test_bad_request_for_version_2() -> None:
    assert refusal(make_request(version=2)) is FailInfo.badRequest


def test_bad_request_for_oversized_nonce() -> None:
    assert refusal(make_request(nonce=1 << (8 * 64 + 1))) is FailInfo.badRequest
    assert parse_request(make_request(nonce=1 << (8 * 63))).nonce == 1 << (8 * 63)


def test_extensions_are_parsed_and_reported_not_refused_by_the_parser() -> None:
    ext = [{"extn_id": "1.2.3.9", "critical": True, "extn_value": b"\x05\x00"}]
    assert parse_request(make_request(extensions=ext)).extensions == ("1.2.3.9",)


VALID = make_request(policy="1.2.3.4", nonce=77)


def _explicit_cert_req_false() -> bytes:
    base = make_request(cert_req=False)
    return bytes([0x30, base[1] + 3]) + base[2:] + b"\x01\x01\x00"


def _nonce_before_policy() -> bytes:
    base = make_request(policy=None, nonce=None, cert_req=False)
    extra = b"\x02\x01\x07" + b"\x06\x03\x2a\x03\x04"
    return bytes([0x30, base[1] + len(extra)]) + base[2:] + extra


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty", b""),
        ("not ASN.1", b"GET / HTTP/1.1\r\n\r\n"),
        ("trailing bytes", VALID + b"\x00"),
        ("truncated", VALID[:-1]),
        ("indefinite length", b"\x30\x80" + VALID[2:] + b"\x00\x00"),
        ("long-form short length", b"\x30\x81" + VALID[1:]),
        ("non-minimal length", b"\x30\x82\x00" + VALID[1:]),
        ("huge length", b"\x30\x84\xff\xff\xff\xff" + VALID[2:]),
        ("non-minimal INTEGER", VALID[:2] + b"\x02\x02\x00\x01" + VALID[5:]),
        ("explicit certReq FALSE", _explicit_cert_req_false()),
        ("BOOLEAN not 00/FF", VALID.replace(b"\x01\x01\xff", b"\x01\x01\x01")),
        ("not a SEQUENCE", b"\x31" + VALID[1:]),
        ("fields out of order", _nonce_before_policy()),
        ("too large", b"\x30\x83\x01\x00\x00" + b"\x00" * (MAX_REQUEST_BYTES + 1)),
    ],
)
def test_bad_data_format_for_malformed_der(name: str, data: bytes) -> None:
    assert refusal(data) is FailInfo.badDataFormat


def _tail(extra: bytes) -> bytes:
    """A request with nothing after its imprint but ``extra`` (what the fast read sees)."""
    base = make_request(policy=None, nonce=None, cert_req=False)
    return bytes([0x30, base[1] + len(extra)]) + base[2:] + extra


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("non-minimal nonce", b"\x02\x02\x00\x01"),
        ("non-minimal negative nonce", b"\x02\x02\xff\x80"),
        ("empty nonce", b"\x02\x00"),
        ("nonce running past the end", b"\x02\x05\x01\x02"),
        ("nonce twice", b"\x02\x01\x07\x02\x01\x08"),
        ("certReq twice", b"\x01\x01\xff\x01\x01\xff"),
        ("certReq before the nonce", b"\x01\x01\xff\x02\x01\x07"),
        ("policy after the nonce", b"\x02\x01\x07\x06\x03\x2a\x03\x04"),
        ("certReq cut short", b"\x02\x01\x07\x01\x01"),
    ],
)
def test_bad_data_format_after_the_imprint(name: str, extra: bytes) -> None:
    assert refusal(_tail(extra)) is FailInfo.badDataFormat


@given(
    nonce=st.none() | st.integers(-(2**511), 2**511 - 1),
    cert_req=st.booleans(),
    policy=st.sampled_from([None, "1.2.3.4.5"]),
    extension=st.booleans(),
)
def test_the_optional_fields_read_as_asn1crypto_reads_them(
    nonce: int | None, cert_req: bool, policy: str | None, extension: bool
) -> None:
    """Whatever path reads them (the direct one for a nonce and certReq), the same values."""
    ext = [{"extn_id": "1.2.3.9", "critical": False, "extn_value": b"x"}] if extension else None
    data = make_request(nonce=nonce, cert_req=cert_req, policy=policy, extensions=ext)
    req, ref = parse_request(data), tsp.TimeStampReq.load(data)
    assert req.nonce == ref["nonce"].native == nonce
    assert req.nonce_der == (None if nonce is None else ref["nonce"].dump())
    assert req.cert_req is cert_req
    assert req.policy == policy
    assert req.extensions == (("1.2.3.9",) if extension else ())
    assert req.imprint_der == ref["message_imprint"].dump()


def test_non_minimal_oid_refused() -> None:
    data = make_request(policy="1.2.3.4", nonce=None, cert_req=False)
    bad = data.replace(b"\x06\x03\x2a\x03\x04", b"\x06\x04\x2a\x80\x03\x04")
    bad = bytes([0x30, bad[1] + 1]) + bad[2:]
    assert refusal(bad) is FailInfo.badDataFormat


def test_non_bytes_input_is_refused_not_raised() -> None:
    assert refusal("not bytes") is FailInfo.badRequest  # type: ignore[arg-type]


# --- agreement with asn1crypto, and fuzzing ---------------------------------------------------


def _parse_or_failinfo(data: bytes) -> FailInfo | None:
    try:
        parse_request(data)
    except RequestRejected as e:
        return e.fail_info
    return None


def _agrees_with_asn1crypto(data: bytes) -> None:
    """If we accept, asn1crypto (strict) reads the same fields and re-encodes the same bytes."""
    try:
        req = parse_request(data)
    except RequestRejected:
        return
    ref = tsp.TimeStampReq.load(data, strict=True)
    assert ref.dump(force=True) == data  # what we accept is canonical DER
    assert ref["message_imprint"]["hashed_message"].native == req.imprint
    assert ref["nonce"].native == req.nonce
    assert ref["req_policy"].dotted if req.policy else ref["req_policy"].native is None
    assert bool(ref["cert_req"].native) == req.cert_req


_SEEDS = [
    make_request(),
    make_request(alg="sha512", policy="1.3.6.1.4.1.99999.1", nonce=None),
    make_request(alg="sha384", cert_req=False, nonce=-1),
    make_request(extensions=[{"extn_id": "1.2.3", "critical": False, "extn_value": b"\x00"}]),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_never_raise(data: bytes) -> None:
    _parse_or_failinfo(data)
    _agrees_with_asn1crypto(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x84, 0xFF, 0x30, 0xA0]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[i]
        elif op == "truncate":
            del data[i:]
    return bytes(data)


@settings(max_examples=500, deadline=None)
@given(mutated())
def test_fuzz_mutated_valid_requests_never_raise(data: bytes) -> None:
    _parse_or_failinfo(data)
    _agrees_with_asn1crypto(data)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 5000), st.sampled_from([b"\x30\x80", b"\x30\x84\x7f\xff\xff\xff", b"\xa0\x81"])
)
def test_fuzz_deep_nesting_and_huge_lengths(depth: int, opener: bytes) -> None:
    assert _parse_or_failinfo(opener * depth) is FailInfo.badDataFormat


def test_deep_nesting_of_definite_lengths_is_refused_fast() -> None:
    inner = b"\x05\x00"
    for _ in range(200):  # short-form lengths cap the depth; long form beyond 127 bytes
        inner = (
            bytes([0x30])
            + (bytes([len(inner)]) if len(inner) < 128 else b"\x82" + len(inner).to_bytes(2, "big"))
            + inner
        )
    assert _parse_or_failinfo(inner) is FailInfo.badDataFormat
