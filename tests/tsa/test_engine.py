"""The token engine: replies for every failInfo, genTime and accuracy rules, the fast path
byte-identical to the asn1crypto reference, the self-check, and "never raises"."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.tsa import FailInfo, PKIStatus, TimeNotAvailable, TimeStampAuthority, der, reject
from appliance.tsa.credentials import TsaCredentials
from appliance.tsa.engine import encode_accuracy, gen_time_unit_ns
from appliance.tsa.request import parse_request
from tests.tsa.conftest import POLICY_OID
from tests.tsa.reference_builder import format_gen_time, parse_response, reference_response
from tests.tsa.test_request import _SEEDS, make_request, mutated

# Tomorrow, 00:00:00.123456789Z: inside the development certificates' validity (made at the
# start of the run, valid from five minutes before), which the engine now insists on.
_MIDNIGHT = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(
    hour=0, minute=0, second=0, microsecond=0
)
T0_NS = int(_MIDNIGHT.timestamp()) * 1_000_000_000 + 123_456_789
DAY = _MIDNIGHT.strftime("%Y%m%d%H%M%S").encode()  # genTime's digits up to the seconds


def fixed_time(utc_ns: int = T0_NS, bound_ns: int = 80_000_000) -> Callable[[], tuple[int, int]]:
    return lambda: (utc_ns, bound_ns)


class Serials:
    def __init__(self, start: int = 1000) -> None:
        self.next_value = start
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        self.next_value += 1
        return self.next_value


@pytest.fixture(scope="module")
def p256(credentials: Callable[[str], TsaCredentials]) -> TsaCredentials:
    return credentials("ec-p256")


@pytest.fixture
def tsa(p256: TsaCredentials) -> TimeStampAuthority:
    return TimeStampAuthority(p256, policy_oid=POLICY_OID, accepted_policies=frozenset({"1.2.3.4"}))


def tst_info(der_bytes: bytes) -> Any:
    resp = parse_response(der_bytes)
    return resp["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed


# --- granted ----------------------------------------------------------------------------------


def test_granted_reply_describes_its_token(tsa: TimeStampAuthority) -> None:
    digest = hashlib.sha256(b"attendance").digest()
    serials = Serials()
    reply = tsa.respond(make_request(digest=digest, nonce=42), time=fixed_time(), serial=serials)
    assert reply.granted and reply.status is PKIStatus.GRANTED and reply.fail_info is None
    assert (reply.serial, reply.nonce, reply.imprint, reply.hash_alg) == (
        1001,
        42,
        digest,
        "sha256",
    )
    assert reply.policy == POLICY_OID
    assert reply.gen_time_ns == T0_NS - 456_789  # truncated to 1 ms (bound 80 ms)
    assert reply.accuracy_us == 81_000
    info = tst_info(reply.der)
    assert info["serial_number"].native == 1001
    assert info["nonce"].native == 42
    assert info["message_imprint"]["hashed_message"].native == digest
    assert info["gen_time"].contents == DAY + b".123Z"
    assert info["accuracy"].native == {"seconds": None, "millis": 81, "micros": None}
    assert info["tsa"].chosen.native == {
        "organization_name": "Horodate development",
        "common_name": "Horodate development TSA",
    }


def test_token_der_is_the_token_inside_the_reply(tsa: TimeStampAuthority) -> None:
    for cert_req in (True, False):  # a long-form header with certificates, maybe not without
        reply = tsa.respond(make_request(cert_req=cert_req), time=fixed_time(), serial=Serials())
        token = reply.token_der
        assert token is not None
        assert bytes(token) == parse_response(reply.der)["time_stamp_token"].dump()
    refused = tsa.respond(b"junk", time=fixed_time(), serial=Serials())
    assert refused.token_der is None


def test_requested_accepted_policy_is_used(tsa: TimeStampAuthority) -> None:
    reply = tsa.respond(make_request(policy="1.2.3.4"), time=fixed_time(), serial=Serials())
    assert reply.granted and reply.policy == "1.2.3.4"
    assert tst_info(reply.der)["policy"].dotted == "1.2.3.4"


def test_certificates_only_when_requested(tsa: TimeStampAuthority, p256: TsaCredentials) -> None:
    for cert_req in (True, False):
        reply = tsa.respond(make_request(cert_req=cert_req), time=fixed_time(), serial=Serials())
        sd = parse_response(reply.der)["time_stamp_token"]["content"]
        certs = sd["certificates"]
        if cert_req:  # the TSA certificate only: the chain is just the root (trust anchor)
            assert len(certs) == 1
            assert certs[0].chosen.dump() == p256.certificate.public_bytes(Encoding.DER)
        else:
            assert not certs


# --- refusals: every failInfo -----------------------------------------------------------------


def assert_rejected(reply: Any, fail_info: FailInfo, text_part: str) -> None:
    assert not reply.granted and reply.status is PKIStatus.REJECTION
    assert reply.fail_info is fail_info
    assert text_part in reply.status_text
    resp = parse_response(reply.der)
    assert resp["status"]["status"].native == "rejection"
    assert resp["status"]["fail_info"].native == {_ASN1_NAMES[fail_info]}
    assert text_part in resp["status"]["status_string"].native[0]
    assert resp["time_stamp_token"].native is None


_ASN1_NAMES = {
    FailInfo.badAlg: "bad_alg",
    FailInfo.badRequest: "bad_request",
    FailInfo.badDataFormat: "bad_data_format",
    FailInfo.timeNotAvailable: "time_not_available",
    FailInfo.unacceptedPolicy: "unaccepted_policy",
    FailInfo.unacceptedExtension: "unaccepted_extensions",  # asn1crypto's spelling
    FailInfo.addInfoNotAvailable: "add_info_not_available",
    FailInfo.systemFailure: "system_failure",
}


@pytest.mark.parametrize(
    ("request_der", "fail_info", "text"),
    [
        (make_request(alg="sha1"), FailInfo.badAlg, "SHA-1"),
        (make_request(alg="md5"), FailInfo.badAlg, "MD5"),
        (make_request(alg="1.2.3.4.5"), FailInfo.badAlg, "1.2.3.4.5"),
        (b"\x30\x03\x02\x01\x01", FailInfo.badDataFormat, "DER"),
        (make_request() + b"\x00", FailInfo.badDataFormat, "trailing"),
        (make_request(digest=b"\x00" * 20), FailInfo.badDataFormat, "32 bytes"),
        (make_request(version=3), FailInfo.badRequest, "version 3"),
        (make_request(policy="1.9.9"), FailInfo.unacceptedPolicy, "1.9.9"),
        (
            make_request(extensions=[{"extn_id": "1.2.7", "critical": True, "extn_value": b""}]),
            FailInfo.unacceptedExtension,
            "1.2.7",
        ),
    ],
    ids=lambda v: v.name if isinstance(v, FailInfo) else v if isinstance(v, str) else "",
)
def test_refusals_carry_the_right_fail_info(
    tsa: TimeStampAuthority, request_der: bytes, fail_info: FailInfo, text: str
) -> None:
    serials = Serials()
    reply = tsa.respond(request_der, time=fixed_time(), serial=serials)
    assert_rejected(reply, fail_info, text)
    assert serials.calls == 0  # a serial is spent only on a granted token


def test_time_not_available_passes_the_reason(tsa: TimeStampAuthority) -> None:
    def no_time() -> tuple[int, int]:
        raise TimeNotAvailable("only 1 of 2 required sources agree")

    serials = Serials()
    reply = tsa.respond(make_request(), time=no_time, serial=serials)
    assert_rejected(reply, FailInfo.timeNotAvailable, "only 1 of 2 required sources agree")
    assert serials.calls == 0


def _boom() -> Any:
    raise RuntimeError("disk on fire")


@pytest.mark.parametrize(
    ("time", "serial"),
    [
        (_boom, Serials()),  # the time source fails unexpectedly
        (fixed_time(), _boom),  # the serial allocator fails
        (lambda: (-1, 5), Serials()),  # nonsense readings
        (lambda: (T0_NS, -5), Serials()),
        (lambda: (10**21, 5), Serials()),  # year > 9999
        (lambda: (1.5, 5), Serials()),
        (fixed_time(), lambda: 0),  # serials are positive
        (fixed_time(), lambda: 1 << 160),  # and at most 160 bits
        (fixed_time(), lambda: True),
    ],
)
def test_system_failure_never_an_exception(
    tsa: TimeStampAuthority, time: Callable[[], tuple[int, int]], serial: Callable[[], int]
) -> None:
    assert_rejected(
        tsa.respond(make_request(), time=time, serial=serial), FailInfo.systemFailure, ""
    )


def test_largest_serial_is_accepted(tsa: TimeStampAuthority) -> None:
    reply = tsa.respond(make_request(), time=fixed_time(), serial=lambda: (1 << 160) - 1)
    assert reply.granted and tst_info(reply.der)["serial_number"].native == (1 << 160) - 1


def test_reject_builds_the_optional_token_form() -> None:
    for fail_info in FailInfo:
        resp = parse_response(reject(fail_info, "nope"))
        assert resp["status"]["fail_info"].native == {_ASN1_NAMES[fail_info]}
        assert resp["status"]["status_string"].native == ["nope"]
    assert parse_response(reject(FailInfo.badRequest, ""))["status"]["status_string"].native is None


def test_stock_asn1crypto_cannot_parse_rejections_our_spec_can() -> None:
    """asn1crypto 1.5.1's TimeStampResp wrongly makes the token mandatory (the fix's reason)."""
    from asn1crypto import tsp

    data = reject(FailInfo.badAlg, "x")
    with pytest.raises(ValueError):
        tsp.TimeStampResp.load(data, strict=True).native  # noqa: B018
    assert parse_response(data)["status"]["status"].native == "rejection"


# --- genTime and accuracy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bound_ns", "unit_ns"),
    [
        (0, 1_000),
        (5_000, 1_000),
        (10_000, 1_000),
        (99_999, 1_000),
        (100_000, 10_000),
        (1_000_000, 100_000),
        (80_000_000, 1_000_000),
        (999_999_999, 10_000_000),
        (1_000_000_000, 100_000_000),
        (10_000_000_000, 1_000_000_000),
        (3600 * 10**9, 1_000_000_000),
    ],
)
def test_gen_time_resolution_follows_the_bound(bound_ns: int, unit_ns: int) -> None:
    assert gen_time_unit_ns(bound_ns) == unit_ns


@pytest.mark.parametrize(
    ("gen_ns", "unit_ns", "text"),
    [
        (T0_NS - 123_456_789, 1_000_000_000, DAY + b"Z"),
        (T0_NS - 123_456_789, 1_000, DAY + b"Z"),  # no ".0", no "."
        (T0_NS - 456_789, 1_000, DAY + b".123Z"),  # trailing zeros dropped
        (T0_NS - 6_789, 1_000, DAY + b".12345Z"),
        (T0_NS - 789, 1_000, DAY + b".123456Z"),
        (T0_NS - 23_456_789, 100_000_000, DAY + b".1Z"),
        (T0_NS - 123_456_789 + 5_000, 1_000, DAY + b".000005Z"),
    ],
)
def test_gen_time_format(gen_ns: int, unit_ns: int, text: bytes) -> None:
    assert format_gen_time(gen_ns, unit_ns) == text


@settings(max_examples=300, deadline=None)
@given(sec=st.integers(0, 253_402_300_799), frac=st.integers(0, 10**9 - 1), e=st.integers(3, 9))
def test_the_engine_writes_genTime_as_format_gen_time_does(
    p256: TsaCredentials, sec: int, frac: int, e: int
) -> None:
    """The engine's cached, byte-formatted genTime against the plain reference."""
    unit = 10**e
    gen_ns = sec * 10**9 + frac - frac % unit
    text = format_gen_time(gen_ns, unit)
    engine = TimeStampAuthority(p256, policy_oid=POLICY_OID)
    assert engine._gen_time_der(gen_ns, unit) == bytes((0x18, len(text))) + text
    assert engine._gen_time_der(gen_ns, unit) == bytes((0x18, len(text))) + text  # cached


@given(st.integers(-(2**1100), 2**1100))
def test_integers_are_encoded_as_asn1crypto_encodes_them(value: int) -> None:
    from asn1crypto import core

    assert der.encode_integer(value) == core.Integer(value).dump()


@pytest.mark.parametrize(
    ("accuracy_us", "native"),
    [
        (1, {"micros": 1}),
        (999, {"micros": 999}),
        (1_000, {"millis": 1}),
        (81_000, {"millis": 81}),
        (80_500, {"millis": 80, "micros": 500}),
        (1_000_000, {"seconds": 1}),
        (1_100_000, {"seconds": 1, "millis": 100}),
        (3_600_000_001, {"seconds": 3600, "micros": 1}),
    ],
)
def test_accuracy_encoding_omits_zero_fields(accuracy_us: int, native: dict[str, int]) -> None:
    from asn1crypto import tsp

    parsed = tsp.Accuracy.load(encode_accuracy(accuracy_us), strict=True)
    assert {k: v for k, v in parsed.native.items() if v is not None} == native
    assert parsed.dump(force=True) == encode_accuracy(accuracy_us)


def _validity_ns(creds: TsaCredentials) -> tuple[int, int]:
    certs = (creds.certificate, *creds.chain)
    first = max(c.not_valid_before_utc for c in certs)
    last = min(c.not_valid_after_utc for c in certs)
    return int(first.timestamp()) * 10**9, int(last.timestamp()) * 10**9


@settings(max_examples=300, deadline=None)
@given(
    where=st.integers(0, 10**18),
    bound_ns=st.integers(0, 100 * 10**9),
)
def test_true_time_is_inside_the_stated_accuracy(
    p256: TsaCredentials, where: int, bound_ns: int
) -> None:
    """Whatever the truncation, [genTime - accuracy, genTime + accuracy] holds the interval
    [utc - bound, utc + bound] the ensemble vouched for (anywhere the certificate is valid
    with room for the bound)."""
    first, last = _validity_ns(p256)
    room = 2 * bound_ns + 2 * 10**9
    utc_ns = first + room + where % max(1, last - first - 2 * room)
    tsa = TimeStampAuthority(p256, policy_oid=POLICY_OID, self_check=False)
    reply = tsa.respond(_SEEDS[0], time=fixed_time(utc_ns, bound_ns), serial=lambda: 1)
    assert reply.gen_time_ns is not None and reply.accuracy_us is not None
    acc_ns = reply.accuracy_us * 1_000
    assert reply.gen_time_ns - acc_ns <= utc_ns - bound_ns
    assert utc_ns + bound_ns <= reply.gen_time_ns + acc_ns
    assert reply.gen_time_ns <= utc_ns
    text = tst_info(reply.der)["gen_time"].contents
    assert not text.endswith((b"0Z", b".Z")) or b"." not in text


@settings(max_examples=200, deadline=None)
@given(utc_ns=st.integers(0, 253_402_300_799 * 10**9), bound_ns=st.integers(0, 10**9))
def test_no_token_is_signed_outside_the_certificates_validity(
    p256: TsaCredentials, utc_ns: int, bound_ns: int
) -> None:
    """Judged on the time the engine is given (the clock's), whatever the host's clock
    says: a token is signed only if genTime ± accuracy lies inside every certificate's
    validity; otherwise systemFailure, saying why."""
    first, last = _validity_ns(p256)
    tsa = TimeStampAuthority(p256, policy_oid=POLICY_OID, self_check=False)
    reply = tsa.respond(_SEEDS[0], time=fixed_time(utc_ns, bound_ns), serial=lambda: 1)
    if reply.granted:
        assert reply.gen_time_ns is not None and reply.accuracy_us is not None
        acc_ns = reply.accuracy_us * 1_000
        assert first <= reply.gen_time_ns - acc_ns and reply.gen_time_ns + acc_ns <= last
    else:
        assert reply.fail_info is FailInfo.systemFailure
        assert "outside the validity of the TSA's certificates" in reply.status_text
        assert not first + 2 * 10**9 <= utc_ns <= last - 2 * 10**9  # near or outside


def test_the_last_second_of_validity_and_the_first_after(p256: TsaCredentials) -> None:
    first, last = _validity_ns(p256)
    tsa = TimeStampAuthority(p256, policy_oid=POLICY_OID)
    inside = tsa.respond(make_request(), time=fixed_time(last - 10**9, 1_000), serial=Serials())
    assert inside.granted
    after = tsa.respond(make_request(), time=fixed_time(last + 1, 1_000), serial=Serials())
    before = tsa.respond(make_request(), time=fixed_time(first - 10**9, 1_000), serial=Serials())
    for refused in (after, before):
        assert not refused.granted and refused.fail_info is FailInfo.systemFailure
        assert "renew the certificate" in refused.status_text


def test_gen_time_never_goes_backwards_when_resolution_coarsens(tsa: TimeStampAuthority) -> None:
    fine = tsa.respond(make_request(), time=fixed_time(T0_NS, 5_000), serial=Serials())
    coarse = tsa.respond(make_request(), time=fixed_time(T0_NS + 1000, 10**9), serial=Serials())
    assert fine.gen_time_ns == T0_NS - 789  # 1 µs resolution
    assert coarse.gen_time_ns == fine.gen_time_ns  # not T0 truncated to 100 ms
    assert tst_info(coarse.der)["gen_time"].contents == DAY + b".123456Z"


def test_gen_time_held_when_the_estimate_steps_back_and_accuracy_covers_it(
    tsa: TimeStampAuthority,
) -> None:
    first = tsa.respond(make_request(), time=fixed_time(T0_NS, 1_000_000), serial=Serials())
    back = T0_NS - 5_000_000  # the ensemble's estimate moved 5 ms back, bound 1 ms
    second = tsa.respond(make_request(), time=fixed_time(back, 1_000_000), serial=Serials())
    assert second.gen_time_ns == first.gen_time_ns == T0_NS - 56_789  # 100 µs resolution
    assert second.accuracy_us is not None and second.gen_time_ns is not None
    # the truth lies in [back - 1 ms, back + 1 ms]: genTime ± accuracy must contain it
    assert second.gen_time_ns - second.accuracy_us * 1000 <= back - 1_000_000
    assert second.accuracy_us == 5_944  # 1 ms bound + 4.943211 ms ahead, rounded up


def test_accuracy_never_exceeds_the_policy_maximum(p256: TsaCredentials) -> None:
    """A 0.95 s bound would be truncated to 100 ms and stated as 1.05 s: the resolution is
    narrowed instead, so the token still promises at most the policy's 1 s."""
    tsa = TimeStampAuthority(p256, policy_oid=POLICY_OID, max_accuracy_us=1_000_000)
    reply = tsa.respond(make_request(), time=fixed_time(T0_NS, 950_000_000), serial=Serials())
    assert reply.granted and reply.accuracy_us is not None
    assert 950_000 < reply.accuracy_us <= 1_000_000
    assert tst_info(reply.der)["gen_time"].contents == DAY + b".12Z"  # 10 ms, not 100


def test_a_bound_at_the_maximum_leaves_no_room_and_is_refused(p256: TsaCredentials) -> None:
    tsa = TimeStampAuthority(p256, policy_oid=POLICY_OID, max_accuracy_us=1_000_000)
    reply = tsa.respond(make_request(), time=fixed_time(T0_NS, 1_000_000_000), serial=Serials())
    assert not reply.granted
    assert reply.fail_info is FailInfo.timeNotAvailable
    assert "exceed the policy's 1 s" in reply.status_text
    without_cap = TimeStampAuthority(p256, policy_oid=POLICY_OID)
    loose = without_cap.respond(make_request(), time=fixed_time(T0_NS, 10**9), serial=Serials())
    assert loose.granted and loose.accuracy_us == 1_100_000  # the cap is what prevents this


# --- fast path == asn1crypto reference ---------------------------------------------------------


SIG_ALGS = {"ec-p256": "sha256_ecdsa", "ec-p384": "sha384_ecdsa", "rsa-2048": "sha256_rsa"}


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
@pytest.mark.parametrize("cert_req", [True, False])
@pytest.mark.parametrize("nonce", [None, 1, 2**64 - 1])
def test_fast_path_is_byte_identical_to_asn1crypto_reference(
    credentials: Callable[[str], TsaCredentials],
    key_type: str,
    cert_req: bool,
    nonce: int | None,
) -> None:
    creds = credentials(key_type)
    tsa = TimeStampAuthority(creds, policy_oid=POLICY_OID)
    for alg, bound_ns in (("sha256", 80_000_000), ("sha384", 3_000), ("sha512", 2 * 10**9)):
        request = make_request(alg=alg, nonce=nonce, cert_req=cert_req)
        reply = tsa.respond(request, time=fixed_time(T0_NS, bound_ns), serial=lambda: 2**70 + 5)
        assert reply.granted and reply.gen_time_ns is not None and reply.accuracy_us is not None
        signer_info = parse_response(reply.der)["time_stamp_token"]["content"]["signer_infos"][0]
        signature = signer_info["signature"].native
        gen = dt.datetime.fromtimestamp(reply.gen_time_ns // 10**9, dt.UTC) + dt.timedelta(
            microseconds=reply.gen_time_ns % 10**9 // 1000
        )
        reference = reference_response(
            creds,
            request,
            policy=POLICY_OID,
            serial=2**70 + 5,
            gen_time=gen,
            accuracy_us=reply.accuracy_us,
            digest="sha384" if key_type == "ec-p384" else "sha256",
            signature_algorithm=SIG_ALGS[key_type],
            sign=functools.partial(_same_signature, signature),
        )
        assert reply.der == reference


def _same_signature(signature: bytes, _signed: bytes) -> bytes:
    """The fast path's (randomised ECDSA) signature, so both builds can be compared."""
    return signature


def test_signed_attributes_are_der_sorted_and_complete(tsa: TimeStampAuthority) -> None:
    reply = tsa.respond(make_request(), time=fixed_time(), serial=Serials())
    signer_info = parse_response(reply.der)["time_stamp_token"]["content"]["signer_infos"][0]
    attrs = signer_info["signed_attrs"]
    encodings = [a.dump() for a in attrs]
    assert encodings == sorted(encodings)
    assert {a["type"].native for a in attrs} == {
        "content_type",
        "message_digest",
        "signing_certificate",
        "signing_certificate_v2",
    }


# --- self-check ---------------------------------------------------------------------------------


def test_self_check_withholds_a_token_with_a_bad_signature(p256: TsaCredentials) -> None:
    other = ec.generate_private_key(ec.SECP256R1())

    def wrong_key(data: bytes) -> bytes:
        return other.sign(data, ec.ECDSA(hashes.SHA256()))

    checked = TimeStampAuthority(p256, policy_oid=POLICY_OID)
    object.__setattr__(checked._signer, "sign", wrong_key)  # a faulty signer (simulated)
    assert_rejected(
        checked.respond(make_request(), time=fixed_time(), serial=Serials()),
        FailInfo.systemFailure,
        "self-check",
    )
    assert checked.self_check_failures == 1
    # the same fault without the check lets the bad token out: the check is what stops it
    unchecked = TimeStampAuthority(p256, policy_oid=POLICY_OID, self_check=False)
    object.__setattr__(unchecked._signer, "sign", wrong_key)
    assert unchecked.respond(make_request(), time=fixed_time(), serial=Serials()).granted


def test_self_check_sampling(
    p256: TsaCredentials, credentials: Callable[[str], TsaCredentials]
) -> None:
    ecdsa = TimeStampAuthority(p256, policy_oid=POLICY_OID)
    for _ in range(33):
        ecdsa.respond(make_request(), time=fixed_time(), serial=Serials())
    assert (ecdsa.tokens_issued, ecdsa.self_checks) == (33, 3)  # tokens 1, 17, 33
    every = TimeStampAuthority(p256, policy_oid=POLICY_OID, self_check_every=1)
    rsa = TimeStampAuthority(credentials("rsa-2048"), policy_oid=POLICY_OID)
    for tsa in (every, rsa):
        for _ in range(5):
            tsa.respond(make_request(), time=fixed_time(), serial=Serials())
        assert tsa.self_checks == 5


# --- requests answered together -----------------------------------------------------------------

_EXTENSION = [{"extn_id": "1.2.3", "critical": False, "extn_value": b"\x00"}]


class CountingTime:
    """A clock that counts its readings."""

    def __init__(self, utc_ns: int, bound_ns: int = 1_000_000) -> None:
        self.reading = (utc_ns, bound_ns)
        self.calls = 0

    def __call__(self) -> tuple[int, int]:
        self.calls += 1
        return self.reading


def test_requests_answered_together_are_each_answered_as_alone(
    p256: TsaCredentials, dev_pki: Callable[[str], Any]
) -> None:
    from timestamping.verify import verify_reply

    tsa = TimeStampAuthority(p256, policy_oid=POLICY_OID, accepted_policies=frozenset({"1.2.3.4"}))
    digests = [hashlib.sha256(b"a").digest(), hashlib.sha512(b"b").digest()]
    batch = [
        make_request(digest=digests[0], nonce=1),
        b"junk",
        make_request(policy="1.9.9"),
        make_request(alg="sha512", digest=digests[1], nonce=None, policy="1.2.3.4"),
        make_request(extensions=_EXTENSION),
        make_request(alg="sha1"),
    ]
    clock, serials = CountingTime(time.time_ns()), Serials()
    replies = tsa.respond_all(batch, time=clock, serial=serials)

    assert clock.calls == 1  # one reading for the whole batch
    assert [r.granted for r in replies] == [True, False, False, True, False, False]
    for i in (1, 2, 4, 5):  # each refusal is the one the request gets alone, byte for byte
        alone = TimeStampAuthority(p256, policy_oid=POLICY_OID, accepted_policies=frozenset())
        assert replies[i].der == alone.respond(batch[i], time=clock, serial=Serials()).der
    first, second = replies[0], replies[3]
    assert (first.serial, second.serial) == (1001, 1002)  # in order, one each
    assert first.gen_time_ns == second.gen_time_ns and first.accuracy_us == second.accuracy_us
    assert (first.nonce, second.nonce, second.policy) == (1, None, "1.2.3.4")
    ca = dev_pki("ec-p256").ca_cert.read_bytes()
    verify_reply(first.der, message_imprint=digests[0], ca_pem=ca, nonce=1)
    verify_reply(second.der, message_imprint=digests[1], ca_pem=ca, policy_oid="1.2.3.4")
    assert tsa.tokens_issued == 2


def test_a_batch_of_refusals_reads_no_clock_and_spends_no_serial(
    tsa: TimeStampAuthority,
) -> None:
    clock, serials = CountingTime(T0_NS), Serials()
    replies = tsa.respond_all([b"junk", make_request(alg="md5")], time=clock, serial=serials)
    assert [r.fail_info for r in replies] == [FailInfo.badDataFormat, FailInfo.badAlg]
    assert (clock.calls, serials.calls) == (0, 0)
    assert tsa.respond_all([], time=clock, serial=serials) == []


def test_time_not_available_refuses_the_batch_each_refusal_keeping_its_own(
    tsa: TimeStampAuthority,
) -> None:
    def no_time() -> tuple[int, int]:
        raise TimeNotAvailable("no quorum")

    serials = Serials()
    batch = [make_request(), b"junk", make_request()]
    replies = tsa.respond_all(batch, time=no_time, serial=serials)
    assert_rejected(replies[0], FailInfo.timeNotAvailable, "no quorum")
    assert_rejected(replies[1], FailInfo.badDataFormat, "")
    assert_rejected(replies[2], FailInfo.timeNotAvailable, "no quorum")
    assert serials.calls == 0


def test_an_invalid_serial_refuses_only_its_own_token(tsa: TimeStampAuthority) -> None:
    given_out = iter([5, 0, 6])
    replies = tsa.respond_all(
        [make_request()] * 3, time=fixed_time(), serial=lambda: next(given_out)
    )
    assert [r.serial for r in replies] == [5, None, 6]
    assert_rejected(replies[1], FailInfo.systemFailure, "invalid serial number")
    assert tsa.tokens_issued == 2


def test_a_failure_while_signing_refuses_the_whole_batch_and_never_raises(
    p256: TsaCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    tsa = TimeStampAuthority(p256, policy_oid=POLICY_OID)
    signed: list[bytes] = []
    real_sign = tsa._signer.sign

    def fails_second(data: bytes) -> bytes:
        signed.append(data)
        if len(signed) == 2:
            raise RuntimeError("the key's hardware failed")
        return real_sign(data)

    object.__setattr__(tsa._signer, "sign", fails_second)
    replies = tsa.respond_all([make_request()] * 3, time=fixed_time(), serial=Serials())
    for reply in replies:  # no token leaves from a batch that failed half-way
        assert_rejected(reply, FailInfo.systemFailure, "internal error")
    assert "failed unexpectedly" in caplog.text


def test_a_request_the_parser_fails_on_fails_alone(
    tsa: TimeStampAuthority, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import appliance.tsa.engine as engine

    def parse(request_der: bytes) -> Any:
        if request_der == b"poison":
            raise RuntimeError("a bug in the parser")
        return parse_request(request_der)

    monkeypatch.setattr(engine, "parse_request", parse)
    replies = tsa.respond_all(
        [make_request(), b"poison", make_request()], time=fixed_time(), serial=Serials()
    )
    assert [r.granted for r in replies] == [True, False, True]
    assert_rejected(replies[1], FailInfo.systemFailure, "internal error")
    assert "a bug in the parser" in caplog.text


def test_a_batch_self_checks_the_tokens_one_by_one_would(p256: TsaCredentials) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    tsa = TimeStampAuthority(p256, policy_oid=POLICY_OID, self_check_every=3)
    wrong_key = functools.partial(other.sign, signature_algorithm=ec.ECDSA(hashes.SHA256()))
    object.__setattr__(tsa._signer, "sign", wrong_key)
    replies = tsa.respond_all([make_request()] * 7, time=fixed_time(), serial=Serials())
    # tokens 1, 4 and 7 are checked (and, signed by a wrong key, withheld); the others are not
    assert [r.granted for r in replies] == [False, True, True, False, True, True, False]
    assert (tsa.self_checks, tsa.self_check_failures) == (3, 3)


def test_the_gen_time_floor_holds_across_batches(tsa: TimeStampAuthority) -> None:
    first = tsa.respond_all([make_request()] * 2, time=fixed_time(T0_NS), serial=Serials())
    back = tsa.respond_all([make_request()] * 2, time=fixed_time(T0_NS - 10**6), serial=Serials())
    assert {r.gen_time_ns for r in first + back} == {first[0].gen_time_ns}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_SEEDS), mutated()), min_size=1, max_size=6))
def test_fuzz_a_batch_answers_each_request_as_alone(
    p256: TsaCredentials, batch: list[bytes]
) -> None:
    together = TimeStampAuthority(p256, policy_oid=POLICY_OID, self_check=False)
    alone = TimeStampAuthority(p256, policy_oid=POLICY_OID, self_check=False)
    replies = together.respond_all(batch, time=fixed_time(), serial=Serials())
    assert len(replies) == len(batch)
    serials = Serials()
    for request, reply in zip(batch, replies, strict=True):
        single = alone.respond(request, time=fixed_time(), serial=serials)
        assert (reply.granted, reply.fail_info, reply.serial) == (
            single.granted,
            single.fail_info,
            single.serial,
        )
        if reply.granted:
            assert tst_info(reply.der).dump() == tst_info(single.der).dump()
        else:
            assert reply.der == single.der


# --- never raises ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), mutated()))
def test_fuzz_respond_always_answers_a_valid_response(p256: TsaCredentials, data: bytes) -> None:
    tsa = TimeStampAuthority(p256, policy_oid=POLICY_OID, self_check=False)
    reply = tsa.respond(data, time=fixed_time(), serial=lambda: 7)
    resp = parse_response(reply.der)
    assert (resp["status"]["status"].native == "granted") is reply.granted
    if reply.granted:
        assert isinstance(resp["time_stamp_token"]["content"], cms.SignedData)
    else:
        assert reply.fail_info is not None and reply.fail_info is not FailInfo.systemFailure


# --- new credentials (a reload) ------------------------------------------------------------


def test_with_credentials_signs_with_the_new_key_and_keeps_the_floor_and_counters(
    p256: TsaCredentials,
    credentials: Callable[[str], TsaCredentials],
    dev_pki: Callable[[str], Any],
) -> None:
    from timestamping import VerificationFailed
    from timestamping.verify import verify_reply

    now = time.time_ns()  # the development certificates are valid from today
    old = TimeStampAuthority(p256, policy_oid=POLICY_OID, accepted_policies=frozenset({"1.2.3.4"}))
    first = old.respond(make_request(), time=fixed_time(now, 1_000_000), serial=Serials())
    p384 = credentials("ec-p384")
    new = old.with_credentials(p384)
    assert new.credentials is p384 and old.credentials is p256  # the old engine untouched
    assert new.accepted_policies == old.accepted_policies
    assert new.max_accuracy_us == old.max_accuracy_us

    # the estimate steps 5 ms back across the change: the shared floor holds genTime
    back = fixed_time(now - 5_000_000, 1_000_000)
    second = new.respond(make_request(policy="1.2.3.4"), time=back, serial=Serials())
    assert second.granted and second.gen_time_ns == first.gen_time_ns
    assert new.stats()["tokens_issued"] == 2 and old.stats()["tokens_issued"] == 1

    imprint = b"\x5a" * 32
    p384_ca = dev_pki("ec-p384").ca_cert.read_bytes()
    p256_ca = dev_pki("ec-p256").ca_cert.read_bytes()
    verify_reply(second.der, message_imprint=imprint, ca_pem=p384_ca)
    with pytest.raises(VerificationFailed):
        verify_reply(second.der, message_imprint=imprint, ca_pem=p256_ca)
    tsa_name = tst_info(second.der)["tsa"].chosen.native  # the TSTInfo names the new TSA
    subject = p384.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert tsa_name["common_name"] == subject
    still_old = old.respond(make_request(), time=fixed_time(now + 1000), serial=Serials())
    verify_reply(still_old.der, message_imprint=imprint, ca_pem=p256_ca)
