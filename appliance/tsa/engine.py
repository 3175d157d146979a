"""Build RFC 3161 ``TimeStampResp`` messages: granted tokens and rejections.

The fast path encodes by hand only what changes from token to token (the TSTInfo, the
messageDigest attribute, the signature and the lengths around them) and splices it into DER
precomputed once per key: the certificate set, the signingCertificate/V2 attributes, the
SignerInfo prefix. :mod:`tests.tsa.reference_builder` builds the same token slowly with asn1crypto;
the tests require both to be byte-identical.

Token profile (docs/adr/0004-token-profile.md): RFC 3161 §2.4.2 TSTInfo v1 inside RFC 5652
SignedData v3, one SignerInfo v1 (issuerAndSerialNumber), signed attributes contentType,
messageDigest, signingCertificate (RFC 2634 §5.4, SHA-1) and signingCertificateV2
(RFC 5035, SHA-256), DER-sorted (X.690 §11.6).
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import logging
import threading
import time as _time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, Protocol

from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.tsa import der
from appliance.tsa.credentials import TsaCredentials
from appliance.tsa.errors import FailInfo, PKIStatus, RequestRejected, TimeNotAvailable
from appliance.tsa.request import TimeStampRequest, parse_request

__all__ = [
    "MAX_SERIAL_BITS",
    "GenTimeFloor",
    "LocalGenTimeFloor",
    "Reply",
    "TimeStampAuthority",
    "gen_time_unit_ns",
    "reject",
]

log = logging.getLogger(__name__)

MAX_SERIAL_BITS = 160  # RFC 3161 §2.4.2: serial numbers up to 160 bits
MAX_STATUS_TEXT_CHARS = 512
_MAX_UTC_NS = 253_402_300_800 * 10**9  # 10000-01-01T00:00:00Z: GeneralizedTime has 4 digits
_NS_PER_US = 1_000
_NS_PER_S = 1_000_000_000

# Object identifiers (RFC 5652 §14, RFC 3161 §2.4.2, RFC 2634 §5.4, RFC 5035, RFC 5754,
# RFC 5758 §3.2, RFC 8017 App. C).
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_CERTIFICATE = "1.2.840.113549.1.9.16.2.12"
OID_SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"
OID_SHA1 = "1.3.14.3.2.26"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
OID_ECDSA_SHA384 = "1.2.840.10045.4.3.3"
OID_RSA_SHA256 = "1.2.840.113549.1.1.11"

# a request of a batch that passed the checks: its index, the request, its policy (OID, DER)
_Checked = tuple[int, TimeStampRequest, str, bytes]
_GRANTED_STATUS = b"\x30\x03\x02\x01\x00"  # PKIStatusInfo { status granted(0) }
_FRAMES_KEPT = 256  # response frames kept per engine (TimeStampAuthority._frame)
_SEQ, _SET = der.SEQUENCE, der.SET
_hdr, _tlv = der.header, der.tlv


@dataclass(slots=True, kw_only=True)
class Reply:
    """What :meth:`TimeStampAuthority.respond` answers: the DER to send and what it says.

    Read-only by convention, not frozen: one is made per request, and a frozen
    dataclass's ``__init__`` costs several times as much (benchmarks/RESULTS.md)."""

    der: bytes  # the TimeStampResp, application/timestamp-reply
    granted: bool
    status: PKIStatus
    fail_info: FailInfo | None
    status_text: str
    serial: int | None = None
    gen_time_ns: int | None = None  # genTime as encoded (truncated), ns since the epoch
    accuracy_us: int | None = None
    hash_alg: str | None = None
    imprint: bytes | None = None
    nonce: int | None = None
    policy: str | None = None

    @property
    def token_der(self) -> memoryview | None:
        """The TimeStampToken (CMS ContentInfo) inside a granted reply, without a copy: it
        follows the reply's SEQUENCE header and the fixed granted PKIStatusInfo."""
        if not self.granted:
            return None
        first = self.der[1]
        head = 2 if first < 0x80 else 2 + (first & 0x7F)
        return memoryview(self.der)[head + len(_GRANTED_STATUS) :]


def reject(fail_info: FailInfo, text: str) -> bytes:
    """A DER ``TimeStampResp`` with status rejection (RFC 3161 §2.4.2)."""
    body = der.encode_integer(int(PKIStatus.REJECTION))
    text = text[:MAX_STATUS_TEXT_CHARS]
    if text:
        body += _tlv(_SEQ, _tlv(der.UTF8_STRING, text.encode("utf-8", "replace")))
    body += der.bit_string_named(fail_info.value)
    return _tlv(_SEQ, _tlv(_SEQ, body))


# gen_time_unit_ns: 1 µs below a bound of 100 µs, then each tenfold bound a tenfold unit
_UNITS_NS: tuple[int, ...] = tuple(10**e for e in range(3, 10))  # 1 µs .. 1 s
_UNIT_MIN_BOUNDS_NS = tuple(10 * u for u in _UNITS_NS[1:])


# digits of a genTime's fraction in a unit: 9 for 1 ns, 6 for 1 µs, 0 for 1 s
_FRACTION_DIGITS = {10**e: 9 - e for e in range(10)}


def gen_time_unit_ns(bound_ns: int) -> int:
    """The genTime resolution the error bound warrants: the largest power of ten, from 1 µs
    to 1 s, at most a tenth of the bound (80 ms → 1 ms, 5 µs → 1 µs, 20 s → 1 s)."""
    return _UNITS_NS[bisect.bisect_right(_UNIT_MIN_BOUNDS_NS, bound_ns)]


def encode_accuracy(accuracy_us: int) -> bytes:
    """RFC 3161 §2.4.2 Accuracy; zero fields omitted, millis and micros in 1..999."""
    seconds, rest = divmod(accuracy_us, 1_000_000)
    millis, micros = divmod(rest, 1_000)
    body = b""
    if seconds:
        body += der.encode_integer(seconds)
    if millis:
        body += b"\x80" + der.encode_integer(millis)[1:]  # [0] IMPLICIT INTEGER
    if micros:
        body += b"\x81" + der.encode_integer(micros)[1:]  # [1] IMPLICIT INTEGER
    return _tlv(_SEQ, body)


@dataclass(frozen=True, slots=True)
class _Signer:
    digest: str  # hashlib name of the SignerInfo digestAlgorithm
    digest_alg_der: bytes  # AlgorithmIdentifier, parameters absent (RFC 5754 §2)
    sig_alg_der: bytes
    sign: Callable[[bytes], bytes]
    verify: Callable[[bytes, bytes], None]  # (signature, data); raises InvalidSignature
    verify_every: int  # default self-check period (1 = every token)


def _signer_for(creds: TsaCredentials) -> _Signer:
    key = creds.private_key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP384R1):
            h: hashes.HashAlgorithm = hashes.SHA384()
            name, digest_oid, sig_oid = "sha384", OID_SHA384, OID_ECDSA_SHA384
        else:
            h, name, digest_oid, sig_oid = hashes.SHA256(), "sha256", OID_SHA256, OID_ECDSA_SHA256
        algo = ec.ECDSA(h)
        ec_pub = key.public_key()

        def ec_sign(data: bytes) -> bytes:
            return key.sign(data, algo)

        def ec_verify(sig: bytes, data: bytes) -> None:
            ec_pub.verify(sig, data, algo)

        return _Signer(
            digest=name,
            digest_alg_der=_tlv(_SEQ, der.encode_oid(digest_oid)),
            sig_alg_der=_tlv(_SEQ, der.encode_oid(sig_oid)),  # RFC 5758 §3.2: no parameters
            sign=ec_sign,
            verify=ec_verify,
            verify_every=SELF_CHECK_EVERY_ECDSA,
        )
    if isinstance(key, rsa.RSAPrivateKey):
        pad, sha = padding.PKCS1v15(), hashes.SHA256()
        rsa_pub = key.public_key()

        def rsa_sign(data: bytes) -> bytes:
            return key.sign(data, pad, sha)

        def rsa_verify(sig: bytes, data: bytes) -> None:
            rsa_pub.verify(sig, data, pad, sha)

        return _Signer(
            digest="sha256",
            digest_alg_der=_tlv(_SEQ, der.encode_oid(OID_SHA256)),
            sig_alg_der=_tlv(_SEQ, der.encode_oid(OID_RSA_SHA256) + b"\x05\x00"),  # NULL
            sign=rsa_sign,
            verify=rsa_verify,
            verify_every=1,
        )
    raise TypeError(f"unsupported key {type(key).__name__}")


# Verifying an ECDSA signature costs more than making one, so verifying each token would
# cost much of the throughput; RSA verification is far cheaper than signing and an RSA-CRT
# fault leaks the key, so RSA tokens are always checked. docs/adr/0004-token-profile.md
# explains the choice; benchmarks/RESULTS.md has the figures.
SELF_CHECK_EVERY_ECDSA = 16


class GenTimeFloor(Protocol):
    """The latest genTime issued (POSIX ns), read and raised under ``lock``, which admits
    one thread at a time of all the engines sharing the floor (it also orders their serial
    numbers and counts).

    genTime never goes backwards across the tokens of one TSA (RFC 3161 §2.4.2): every
    engine signing for it must share one floor. :class:`LocalGenTimeFloor` lives in the
    engine's process; ``appliance.runtime.shared_clock.SharedGenTimeFloor`` in shared memory.
    """

    @property
    def lock(self) -> AbstractContextManager[Any]: ...

    @property
    def value(self) -> int: ...

    @value.setter
    def value(self, ns: int) -> None: ...


class LocalGenTimeFloor:
    """A :class:`GenTimeFloor` for the engines of one process."""

    def __init__(self) -> None:
        self.lock: AbstractContextManager[Any] = threading.Lock()
        self.value = 0


class TimeStampAuthority:
    """The RFC 3161 engine: request DER in, response DER out. Pure: time and serial numbers
    come from the callables passed to :meth:`respond`; it never opens a file or socket."""

    def __init__(
        self,
        credentials: TsaCredentials,
        *,
        policy_oid: str,
        accepted_policies: frozenset[str] | None = None,
        self_check: bool = True,
        self_check_every: int | None = None,
        max_accuracy_us: int | None = None,
        gen_floor: GenTimeFloor | None = None,
    ) -> None:
        """``gen_floor``: the latest genTime issued, shared by every engine that signs for
        this TSA (the worker processes share one in memory); by default this engine's own.

        ``max_accuracy_us``: the largest accuracy a token may state (the policy's maximum
        error, e.g. 1 s for ETSI EN 319 421). genTime's resolution is narrowed so the stated
        accuracy stays within it; when it cannot, the answer is timeNotAvailable."""
        if max_accuracy_us is not None and max_accuracy_us < 2:
            raise ValueError("max_accuracy_us must be at least 2 µs")
        self.max_accuracy_us = max_accuracy_us
        self.credentials = credentials
        # No token outside the validity of every certificate of the chain, judged on the
        # genTime about to be signed (the clock's time), never on the host's clock: a host
        # clock set back must not let it sign past notAfter.
        certs = (credentials.certificate, *credentials.chain)
        self._valid_from = max(c.not_valid_before_utc for c in certs)
        self._valid_until = min(c.not_valid_after_utc for c in certs)
        self._valid_ns = (
            int(self._valid_from.timestamp()) * _NS_PER_S,
            int(self._valid_until.timestamp()) * _NS_PER_S,
        )
        self.policy_oid = policy_oid
        self.accepted_policies = frozenset(accepted_policies or ()) | {policy_oid}
        self._policy_der = {oid: der.encode_oid(oid) for oid in self.accepted_policies}
        self._signer = _signer_for(credentials)
        self._self_check_every_asked = self_check_every
        every = self._signer.verify_every if self_check_every is None else self_check_every
        if every < 1:
            raise ValueError("self_check_every must be >= 1")
        self.self_check = self_check
        self.self_check_every = every
        self.tokens_issued = 0
        self.self_checks = 0
        self.self_check_failures = 0
        self._floor: GenTimeFloor = gen_floor or LocalGenTimeFloor()
        self._sec_cache: tuple[int, bytes] = (-1, b"")  # genTime seconds -> its text
        self._accuracy_cache: tuple[int, bytes] = (-1, b"")  # accuracy_us -> its DER
        # (TSTInfo length, signature length, certReq) -> the response around them
        self._frames: dict[tuple[int, int, bool], tuple[bytes, bytes, bytes]] = {}
        self._build_templates()

    def with_credentials(self, credentials: TsaCredentials) -> TimeStampAuthority:
        """A TSA like this one that signs with ``credentials`` (a renewed certificate, a new
        key): the same policies, accuracy limit, self-check and genTime floor — genTime
        never goes back across the change — and its counters carried on. This one is left
        as it was, so the caller swaps engines in one step."""
        other = TimeStampAuthority(
            credentials,
            policy_oid=self.policy_oid,
            accepted_policies=self.accepted_policies,
            self_check=self.self_check,
            self_check_every=self._self_check_every_asked,
            max_accuracy_us=self.max_accuracy_us,
            gen_floor=self._floor,
        )
        other.tokens_issued = self.tokens_issued
        other.self_checks = self.self_checks
        other.self_check_failures = self.self_check_failures
        return other

    # --- precomputation -------------------------------------------------------------------

    def _build_templates(self) -> None:
        creds, signer = self.credentials, self._signer
        cert_der = creds.certificate.public_bytes(Encoding.DER)
        tbs = asn1_x509.Certificate.load(cert_der)["tbs_certificate"]
        issuer_der: bytes = tbs["issuer"].dump()
        serial_der: bytes = tbs["serial_number"].dump()
        subject_der: bytes = tbs["subject"].dump()

        # IssuerSerial ::= SEQUENCE { issuer GeneralNames, serialNumber } (RFC 5035 §4);
        # GeneralNames holds one directoryName [4] (EXPLICIT: Name is a CHOICE).
        issuer_serial = _tlv(_SEQ, _tlv(_SEQ, _tlv(0xA4, issuer_der)) + serial_der)
        ess_v1 = _tlv(_SEQ, _tlv(der.OCTET_STRING, hashlib.sha1(cert_der).digest()) + issuer_serial)
        # ESSCertIDv2: hashAlgorithm DEFAULT sha256 is omitted (X.690 §11.5)
        ess_v2 = _tlv(
            _SEQ, _tlv(der.OCTET_STRING, hashlib.sha256(cert_der).digest()) + issuer_serial
        )
        signing_cert = _tlv(_SEQ, _tlv(_SEQ, ess_v1))  # SigningCertificate { certs }
        signing_cert_v2 = _tlv(_SEQ, _tlv(_SEQ, ess_v2))

        def attribute(oid: str, value: bytes) -> bytes:
            return _tlv(_SEQ, der.encode_oid(oid) + _tlv(_SET, value))

        digest_len = hashlib.new(signer.digest).digest_size
        md_head = der.encode_oid(OID_MESSAGE_DIGEST)
        md_head = _hdr(_SEQ, len(md_head) + 2 + 2 + digest_len) + md_head
        md_head += _hdr(_SET, 2 + digest_len) + _hdr(der.OCTET_STRING, digest_len)
        fixed = [
            attribute(OID_CONTENT_TYPE, der.encode_oid(OID_TST_INFO)),
            attribute(OID_SIGNING_CERTIFICATE, signing_cert),
            attribute(OID_SIGNING_CERTIFICATE_V2, signing_cert_v2),
        ]
        # SET OF sorts by encoding (X.690 §11.6); the order never depends on the digest
        # value because every attribute differs from the messageDigest one before it.
        orders = [sorted([*fixed, md_head + bytes([fill]) * digest_len]) for fill in (0x00, 0xFF)]
        md_index = [a.startswith(md_head) for a in orders[0]].index(True)
        if [a.startswith(md_head) for a in orders[1]].index(True) != md_index:
            raise AssertionError("signed attribute order depends on the digest")
        self._attrs_head = b"".join(orders[0][:md_index]) + md_head
        self._attrs_tail = b"".join(orders[0][md_index + 1 :])
        attrs_len = len(self._attrs_head) + digest_len + len(self._attrs_tail)
        self._attrs_set_hdr = _hdr(_SET, attrs_len)  # what is signed (RFC 5652 §5.4)
        self._attrs_implicit_hdr = _hdr(0xA0, attrs_len)  # signedAttrs [0] IMPLICIT
        self._digest_len = digest_len
        self._hash = getattr(hashlib, signer.digest)

        # SignerInfo v1 with sid = issuerAndSerialNumber (RFC 5652 §5.3)
        self._si_prefix = (
            b"\x02\x01\x01" + _tlv(_SEQ, issuer_der + serial_der) + signer.digest_alg_der
        )
        # SignedData v3 (RFC 5652 §5.1: eContentType is not id-data), digestAlgorithms
        self._si_fixed_len = (
            len(self._si_prefix)
            + len(self._attrs_implicit_hdr)
            + attrs_len
            + len(signer.sig_alg_der)
        )
        self._sd_prefix = b"\x02\x01\x03" + _tlv(_SET, signer.digest_alg_der)
        self._econtent_type = der.encode_oid(OID_TST_INFO)
        self._content_type = der.encode_oid(OID_SIGNED_DATA)
        # certificates [0] IMPLICIT CertificateSet: the TSA certificate (referenced by the
        # ESSCertIDs, RFC 3161 §2.4.1) and the intermediates; never the root (trust anchor).
        certs = [cert_der] + [
            c.public_bytes(Encoding.DER) for c in creds.chain if c.issuer != c.subject
        ]
        self._certs_der = _tlv(0xA0, b"".join(sorted(set(certs))))
        # tsa [0] GeneralName: directoryName [4] Name, the certificate subject (§2.4.2)
        self._tsa_name = _tlv(0xA0, _tlv(0xA4, subject_der))

    # --- public API -----------------------------------------------------------------------

    def respond(
        self,
        request_der: bytes,
        *,
        time: Callable[[], tuple[int, int]],
        serial: Callable[[], int],
    ) -> Reply:
        """Answer one request. Never raises: every failure is a rejection Reply."""
        return self.respond_all((request_der,), time=time, serial=serial)[0]

    def respond_all(
        self,
        requests: Sequence[bytes],
        *,
        time: Callable[[], tuple[int, int]],
        serial: Callable[[], int],
    ) -> list[Reply]:
        """Answer requests that are all at hand, in order, each as :meth:`respond` would.

        They share one reading of the clock, taken once every one of them had arrived, and
        so one genTime and accuracy; each gets its own serial number. Their signatures are
        computed back to back, where the key's tables stay in the processor's caches: under
        load, where a token is signed between network reads and other processes, that
        saves about a fifth of a token's CPU (ADR 0007, *Tokens signed together*). Never
        raises: a request's failure is its rejection (a request the parser fails on
        included), and an unexpected error past the parsing rejects them all with
        systemFailure."""
        try:
            return self._respond_all(requests, time, serial)
        except Exception:
            log.exception("time-stamp requests failed unexpectedly; answering systemFailure")
            return [_rejection(FailInfo.systemFailure, "internal error")] * len(requests)

    def reject(self, fail_info: FailInfo, text: str) -> bytes:
        return reject(fail_info, text)

    # --- the work -------------------------------------------------------------------------

    def _respond_all(
        self,
        requests: Sequence[bytes],
        time: Callable[[], tuple[int, int]],
        serial: Callable[[], int],
    ) -> list[Reply]:
        replies: list[Reply] = [_NOT_ANSWERED] * len(requests)
        valid: list[_Checked] = []
        for i, request_der in enumerate(requests):
            try:
                req = parse_request(request_der)
            except RequestRejected as e:
                replies[i] = _rejection(e.fail_info, e.text)
                continue
            except Exception:  # a bug in the parser: this request fails, not its batch
                log.exception("time-stamp request failed unexpectedly; answering systemFailure")
                replies[i] = _rejection(FailInfo.systemFailure, "internal error")
                continue
            policy = self.policy_oid if req.policy is None else req.policy
            policy_der = self._policy_der.get(policy)
            if policy_der is None:
                replies[i] = _rejection(FailInfo.unacceptedPolicy, f"policy {policy} not accepted")
            elif req.extensions:
                replies[i] = _rejection(
                    FailInfo.unacceptedExtension,
                    "extensions not supported: " + ", ".join(req.extensions[:4]),
                )
            else:
                valid.append((i, req, policy, policy_der))
        if valid:
            self._grant(valid, time, serial, replies)
        return replies

    def _grant(
        self,
        valid: list[_Checked],
        time: Callable[[], tuple[int, int]],
        serial: Callable[[], int],
        replies: list[Reply],
    ) -> None:
        """Time, number, sign and frame the requests that passed the checks, into
        ``replies`` at their indexes."""
        try:
            utc_ns, bound_ns = time()
        except TimeNotAvailable as e:
            _refuse_all(valid, replies, FailInfo.timeNotAvailable, e.reason or "time not available")
            return
        if not (
            type(utc_ns) is int
            and type(bound_ns) is int
            and 0 <= utc_ns < _MAX_UTC_NS
            and 0 <= bound_ns < 10**18
        ):
            log.error("time source returned an invalid reading %r, %r", utc_ns, bound_ns)
            _refuse_all(valid, replies, FailInfo.systemFailure, "invalid time reading")
            return

        unit_ns = gen_time_unit_ns(bound_ns)
        max_us = self.max_accuracy_us
        if max_us is not None:
            # Keep bound + resolution within the policy's maximum where a finer unit can.
            room_ns = max_us * _NS_PER_US - bound_ns
            while unit_ns > _NS_PER_US and unit_ns > room_ns:
                unit_ns //= 10
        # Truncating to the unit adds up to one unit of error, which the accuracy includes.
        numbered: list[tuple[int, TimeStampRequest, str, bytes, int, bool]] = []
        floor = self._floor
        with floor.lock:  # every thread of every engine sharing the floor, one at a time
            # genTime never goes backwards, even when the resolution gets coarser or the
            # ensemble's estimate steps back; then genTime is later than utc_ns.
            gen_ns = max(utc_ns - utc_ns % unit_ns, floor.value)
            # Truncation puts genTime up to one unit before utc_ns; a kept previous genTime
            # may lie after it. The accuracy covers both, so [genTime ± accuracy] always
            # contains [utc_ns ± bound_ns]; rounded up to the microsecond.
            accuracy_us = -(-(bound_ns + max(unit_ns, gen_ns - utc_ns)) // _NS_PER_US)
            if max_us is not None and accuracy_us > max_us:
                _refuse_all(
                    valid,
                    replies,
                    FailInfo.timeNotAvailable,
                    f"accuracy {accuracy_us / 1e6:g} s would exceed the policy's "
                    f"{max_us / 1e6:g} s",
                )
                return
            outside = self._outside_validity(gen_ns, accuracy_us)
            if outside is not None:
                _refuse_all(valid, replies, FailInfo.systemFailure, outside)
                return
            floor.value = gen_ns
            for i, req, policy, policy_der in valid:
                serial_no = serial()
                if type(serial_no) is not int or not 0 < serial_no < 1 << MAX_SERIAL_BITS:
                    log.error("serial allocator returned an invalid serial %r", serial_no)
                    replies[i] = _rejection(FailInfo.systemFailure, "invalid serial number")
                    continue
                self.tokens_issued += 1
                # the first token, then one in self_check_every
                check = self.self_check and (self.tokens_issued - 1) % self.self_check_every == 0
                numbered.append((i, req, policy, policy_der, serial_no, check))
        if gen_ns % unit_ns:  # the clamp kept a finer previous genTime: keep its digits
            unit_ns = _finest_unit(gen_ns)
        gen_time = self._gen_time_der(gen_ns, unit_ns)
        cached_us, accuracy_der = self._accuracy_cache
        if cached_us != accuracy_us:
            accuracy_der = encode_accuracy(accuracy_us)
            self._accuracy_cache = (accuracy_us, accuracy_der)

        drafts = [
            self._tst_info(req, policy_der, gen_time, accuracy_der, serial_no)
            for _, req, _, policy_der, serial_no, _ in numbered
        ]
        sign = self._signer.sign
        signatures = [sign(signed) for _, _, signed in drafts]  # back to back: see respond_all
        for (i, req, policy, _, serial_no, check), (tst, attrs, signed), signature in zip(
            numbered, drafts, signatures, strict=True
        ):
            if check and not self._self_check(signature, signed):
                replies[i] = _rejection(FailInfo.systemFailure, "token self-check failed")
                continue
            shape = (len(tst), len(signature), req.cert_req)
            frame = self._frames.get(shape) or self._frame(*shape)
            replies[i] = Reply(
                der=b"".join((frame[0], tst, frame[1], attrs, frame[2], signature)),
                granted=True,
                status=PKIStatus.GRANTED,
                fail_info=None,
                status_text="granted",
                serial=serial_no,
                gen_time_ns=gen_ns,
                accuracy_us=accuracy_us,
                hash_alg=req.hash_alg.name,
                imprint=req.imprint,
                nonce=req.nonce,
                policy=policy,
            )

    def _outside_validity(self, gen_ns: int, accuracy_us: int) -> str | None:
        """Why a token at ``gen_ns`` ± accuracy may not be signed, or None: the whole
        interval must lie inside every certificate's validity."""
        first, last = self._valid_ns
        spread = accuracy_us * _NS_PER_US
        if first <= gen_ns - spread and gen_ns + spread <= last:
            return None
        at = dt.datetime.fromtimestamp(gen_ns // _NS_PER_S, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            f"the time {at} is outside the validity of the TSA's certificates "
            f"({self._valid_from:%Y-%m-%dT%H:%M:%SZ} to {self._valid_until:%Y-%m-%dT%H:%M:%SZ}): "
            "no token is signed; renew the certificate"
        )

    def _gen_time_der(self, gen_ns: int, unit_ns: int) -> bytes:
        sec, frac_ns = divmod(gen_ns, _NS_PER_S)
        cached_sec, prefix = self._sec_cache
        if cached_sec != sec:
            prefix = _time.strftime("%Y%m%d%H%M%S", _time.gmtime(sec)).encode("ascii")
            self._sec_cache = (sec, prefix)
        if frac_ns:
            frac = b"%0*d" % (_FRACTION_DIGITS[unit_ns], frac_ns // unit_ns)
            text = b"%s.%sZ" % (prefix, frac.rstrip(b"0"))
        else:
            text = prefix + b"Z"
        return bytes((der.GENERALIZED_TIME, len(text))) + text  # at most 25 bytes

    def _tst_info(
        self,
        req: TimeStampRequest,
        policy_der: bytes,
        gen_time_der: bytes,
        accuracy_der: bytes,
        serial_no: int,
    ) -> tuple[bytes, bytes, bytes]:
        """Return (TSTInfo DER, signed attributes, the bytes to sign).

        The response is the frame of its shape (:meth:`_frame`) around the TSTInfo, the
        signed attributes and the signature."""
        # TSTInfo (RFC 3161 §2.4.2): version 1, policy, messageImprint (echoed), serial,
        # genTime, accuracy, [ordering FALSE omitted], nonce (echoed), tsa
        body = b"".join(
            (
                b"\x02\x01\x01",
                policy_der,
                req.imprint_der,
                der.encode_integer(serial_no),
                gen_time_der,
                accuracy_der,
                req.nonce_der or b"",
                self._tsa_name,
            )
        )
        tst = _hdr(_SEQ, len(body)) + body
        attrs = self._attrs_head + self._hash(tst).digest() + self._attrs_tail
        return tst, attrs, self._attrs_set_hdr + attrs

    def _frame(self, tst_len: int, sig_len: int, cert_req: bool) -> tuple[bytes, bytes, bytes]:
        """The bytes of a response around its TSTInfo, signed attributes and signature.

        They depend only on those lengths and on certReq, so each shape is encoded once
        (a few dozen shapes: the TSTInfo's length moves with the serial, the nonce and the
        genTime's digits, an ECDSA signature's by a byte or two). The nesting is
        TimeStampResp > ContentInfo > SignedData > {EncapsulatedContentInfo > TSTInfo,
        certificates, SignerInfos > SignerInfo}."""
        sig_hdr = _hdr(der.OCTET_STRING, sig_len)
        si_len = self._si_fixed_len + len(sig_hdr) + sig_len
        si_hdr = _hdr(_SEQ, si_len)
        set_hdr = _hdr(_SET, len(si_hdr) + si_len)
        econtent_hdr = _hdr(der.OCTET_STRING, tst_len)
        explicit_len = len(econtent_hdr) + tst_len
        explicit_hdr = _hdr(0xA0, explicit_len)
        encap_len = len(self._econtent_type) + len(explicit_hdr) + explicit_len
        encap_hdr = _hdr(_SEQ, encap_len)
        certs = self._certs_der if cert_req else b""
        sd_len = (
            len(self._sd_prefix)
            + len(encap_hdr)
            + encap_len
            + len(certs)
            + len(set_hdr)
            + len(si_hdr)
            + si_len
        )
        sd_hdr = _hdr(_SEQ, sd_len)
        content_hdr = _hdr(0xA0, len(sd_hdr) + sd_len)
        ci_len = len(self._content_type) + len(content_hdr) + len(sd_hdr) + sd_len
        ci_hdr = _hdr(_SEQ, ci_len)
        resp_hdr = _hdr(_SEQ, len(_GRANTED_STATUS) + len(ci_hdr) + ci_len)
        head = b"".join(
            (
                resp_hdr,
                _GRANTED_STATUS,
                ci_hdr,
                self._content_type,  # id-signedData
                content_hdr,  # [0] EXPLICIT
                sd_hdr,
                self._sd_prefix,  # version 3, digestAlgorithms
                encap_hdr,
                self._econtent_type,  # id-ct-TSTInfo
                explicit_hdr,  # [0] EXPLICIT
                econtent_hdr,  # OCTET STRING, then the TSTInfo
            )
        )
        middle = b"".join(
            (
                certs,  # [0] IMPLICIT CertificateSet, or nothing
                set_hdr,  # SignerInfos
                si_hdr,
                self._si_prefix,  # version 1, sid, digestAlgorithm
                self._attrs_implicit_hdr,  # signedAttrs [0] IMPLICIT, then the attributes
            )
        )
        tail = self._signer.sig_alg_der + sig_hdr  # then the signature
        if len(self._frames) >= _FRAMES_KEPT:
            self._frames.clear()
        frame = self._frames[tst_len, sig_len, cert_req] = (head, middle, tail)
        return frame

    def _self_check(self, signature: bytes, signed: bytes) -> bool:
        self.self_checks += 1
        try:
            self._signer.verify(signature, signed)
        except InvalidSignature:
            self.self_check_failures += 1
            log.critical(
                "token signature self-check FAILED: the signing key or its hardware is "
                "faulty; the token was withheld (systemFailure)"
            )
            return False
        return True

    def stats(self) -> dict[str, Any]:
        """Counters for the metrics endpoint."""
        return {
            "tokens_issued": self.tokens_issued,
            "self_checks": self.self_checks,
            "self_check_failures": self.self_check_failures,
        }


def _finest_unit(gen_ns: int) -> int:
    unit = _NS_PER_S
    while gen_ns % unit:
        unit //= 10
    return max(unit, _NS_PER_US)


def _rejection(fail_info: FailInfo, text: str) -> Reply:
    return Reply(
        der=reject(fail_info, text),
        granted=False,
        status=PKIStatus.REJECTION,
        fail_info=fail_info,
        status_text=text,
    )


def _refuse_all(
    valid: list[_Checked],
    replies: list[Reply],
    fail_info: FailInfo,
    text: str,
) -> None:
    """One rejection for every request of ``valid``, at its index in ``replies``."""
    refusal = _rejection(fail_info, text)
    for i, *_ in valid:
        replies[i] = refusal


# what a request of a batch is answered if a bug leaves it unanswered (never a token)
_NOT_ANSWERED: Final = _rejection(FailInfo.systemFailure, "internal error")
