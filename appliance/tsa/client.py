"""The RFC 3161 client side: build a ``TimeStampReq``, read a ``TimeStampResp``, verify a token.

Pure functions over bytes, except three thin edges: :func:`hash_file` (reads a file),
:func:`post_query` (HTTP) and :func:`verify_with_openssl` (runs ``openssl ts -verify``).
Nothing here touches the TSA's private key: ``horodate stamp``/``verify`` and the vault's
client use this module.

Verification (:func:`verify_reply`) is done by ``rfc3161-client`` (signature, certificate
chain up to the given roots at ``genTime``, the TSA certificate's critical
``id-kp-timeStamping`` extended key usage, message imprint, nonce, policy);
:func:`verify_with_openssl` asks OpenSSL for a second, independent opinion.

Every failure is a :class:`ClientError` (or a subclass) with a sentence for a person;
foreign exceptions are wrapped with ``raise ... from e``.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import re
import secrets
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from appliance.tsa.errors import FailInfo, PKIStatus, TsaError

if TYPE_CHECKING:
    import rfc3161_client
    from cryptography import x509

__all__ = [
    "MAX_REPLY_BYTES",
    "QUERY_CONTENT_TYPE",
    "REPLY_CONTENT_TYPE",
    "Accuracy",
    "ClientError",
    "Digest",
    "ReplyRejected",
    "TimeStampQuery",
    "TokenInfo",
    "TsaReply",
    "TsaUnreachable",
    "VerificationFailed",
    "VerifiedToken",
    "build_request",
    "check_reply",
    "describe_failure",
    "hash_file",
    "parse_reply",
    "post_query",
    "random_nonce",
    "verify_reply",
    "verify_with_openssl",
]

QUERY_CONTENT_TYPE: Final = "application/timestamp-query"  # RFC 3161 §3.4
REPLY_CONTENT_TYPE: Final = "application/timestamp-reply"  # RFC 3161 §3.4
MAX_REPLY_BYTES: Final = 1024 * 1024  # a token with a 3-certificate chain is ~5 KiB
_MAX_CA_BYTES: Final = 1024 * 1024
_NONCE_BITS: Final = 64


class ClientError(TsaError):
    """A time-stamp could not be obtained or does not verify; the message says why."""


class TsaUnreachable(ClientError):
    """The TSA could not be reached, or did not answer with a time-stamp reply."""


class ReplyRejected(ClientError):
    """The TSA answered with a PKIStatus other than granted (RFC 3161 §2.4.2)."""

    def __init__(self, reply: TsaReply) -> None:
        super().__init__(describe_failure(reply))
        self.reply = reply


class VerificationFailed(ClientError):
    """The token does not prove what it should (wrong data, signature, chain, nonce…)."""


class Digest(enum.Enum):
    """Message-imprint hash algorithms we ask for (RFC 5754 §2 OIDs)."""

    SHA256 = ("sha256", "2.16.840.1.101.3.4.2.1", 32)
    SHA384 = ("sha384", "2.16.840.1.101.3.4.2.2", 48)
    SHA512 = ("sha512", "2.16.840.1.101.3.4.2.3", 64)

    def __init__(self, hashlib_name: str, oid: str, digest_bytes: int) -> None:
        self.hashlib_name = hashlib_name
        self.oid = oid
        self.digest_bytes = digest_bytes

    @classmethod
    def from_name(cls, name: str) -> Digest:
        for d in cls:
            if d.hashlib_name == name.lower():
                return d
        raise ClientError(f"unsupported hash algorithm {name!r} (use sha256, sha384 or sha512)")

    @classmethod
    def from_oid(cls, oid: str) -> Digest | None:
        return next((d for d in cls if d.oid == oid), None)

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()


# RFC 3161 §2.4.2, in words a person can act on.
_STATUS_WORDS: Final = {
    PKIStatus.GRANTED: "granted",
    PKIStatus.GRANTED_WITH_MODS: "granted with modifications",
    PKIStatus.REJECTION: "rejected",
    PKIStatus.WAITING: "waiting (the TSA will answer later)",
    PKIStatus.REVOCATION_WARNING: "revocation warning (TSA certificate about to be revoked)",
    PKIStatus.REVOCATION_NOTIFICATION: "revocation notification (TSA certificate revoked)",
}
_FAIL_WORDS: Final = {
    FailInfo.badAlg: "the hash algorithm is not accepted",
    FailInfo.badRequest: "the request is not permitted or not supported",
    FailInfo.badDataFormat: "the request is malformed",
    FailInfo.timeNotAvailable: "the TSA's time source is not available",
    FailInfo.unacceptedPolicy: "the requested policy is not supported by the TSA",
    FailInfo.unacceptedExtension: "the requested extension is not supported by the TSA",
    FailInfo.addInfoNotAvailable: "the additional information requested is not available",
    FailInfo.systemFailure: "the TSA failed internally",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeStampQuery:
    """A ``TimeStampReq`` (RFC 3161 §2.4.1) and what we asked in it."""

    der: bytes
    digest: Digest
    message_imprint: bytes
    nonce: int | None
    cert_req: bool
    policy_oid: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Accuracy:
    """RFC 3161 §2.4.2 ``Accuracy``: the bound on genTime the TSA states."""

    seconds: int = 0
    millis: int = 0
    micros: int = 0

    @property
    def total_us(self) -> int:
        return self.seconds * 1_000_000 + self.millis * 1000 + self.micros

    def __str__(self) -> str:
        return f"±{self.total_us / 1e6:g} s"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    """The ``TSTInfo`` of a token (RFC 3161 §2.4.2), as plain values."""

    version: int
    policy_oid: str
    digest: Digest | None  # None: an algorithm we do not know
    hash_oid: str
    message_imprint: bytes
    serial: int
    gen_time: dt.datetime  # UTC, aware (microsecond resolution)
    gen_time_text: str  # the GeneralizedTime exactly as encoded, e.g. 20261128105122.123456Z
    accuracy: Accuracy | None
    ordering: bool
    nonce: int | None
    tsa_name: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TsaReply:
    """A parsed ``TimeStampResp`` (RFC 3161 §2.4.2)."""

    der: bytes
    status: PKIStatus
    status_text: tuple[str, ...]
    fail_info: frozenset[FailInfo]
    unknown_fail_bits: frozenset[int]
    info: TokenInfo | None  # present iff a token is
    token_der: bytes | None  # the TimeStampToken (CMS ContentInfo)
    certificates: tuple[bytes, ...]  # DER certificates carried in the token

    @property
    def granted(self) -> bool:
        return self.status in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedToken:
    """What a successful :func:`verify_reply` proved."""

    info: TokenInfo
    tsa_subject: str  # RFC 4514 string of the TSA certificate's subject
    tsa_certificate_der: bytes


def random_nonce() -> int:
    """A fresh 64-bit nonce (RFC 3161 §2.4.1: a large random number, to match the reply)."""
    return secrets.randbits(_NONCE_BITS)


def hash_file(path: Path, digest: Digest = Digest.SHA256) -> bytes:
    """The digest of a file's content, read in chunks (files may be large)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, digest.hashlib_name).digest()
    except OSError as e:
        raise ClientError(f"cannot read {path}: {e.strerror or e}") from e


def build_request(
    message_imprint: bytes,
    *,
    digest: Digest = Digest.SHA256,
    nonce: int | None,
    cert_req: bool = True,
    policy_oid: str | None = None,
) -> TimeStampQuery:
    """A DER ``TimeStampReq`` for an already-computed message imprint (RFC 3161 §2.4.1)."""
    from asn1crypto import tsp  # imported here: ``horodate --help`` stays fast

    if len(message_imprint) != digest.digest_bytes:
        raise ClientError(
            f"a {digest.hashlib_name} imprint is {digest.digest_bytes} bytes, "
            f"got {len(message_imprint)}"
        )
    if nonce is not None and nonce < 0:
        raise ClientError("the nonce must not be negative")
    fields: dict[str, object] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": digest.hashlib_name},
            "hashed_message": message_imprint,
        },
        "cert_req": cert_req,
    }
    if policy_oid is not None:
        fields["req_policy"] = _check_oid(policy_oid)
    if nonce is not None:
        fields["nonce"] = nonce
    try:
        der = tsp.TimeStampReq(fields).dump()
    except (ValueError, TypeError) as e:
        raise ClientError(f"cannot encode the time-stamp request: {e}") from e
    return TimeStampQuery(
        der=der,
        digest=digest,
        message_imprint=message_imprint,
        nonce=nonce,
        cert_req=cert_req,
        policy_oid=policy_oid,
    )


def _check_oid(oid: str) -> str:
    parts = oid.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts) or int(parts[0]) > 2:
        raise ClientError(f"{oid!r} is not an object identifier (dotted numbers, e.g. 1.2.3.4)")
    return oid


def _fail_info(bits: object) -> tuple[frozenset[FailInfo], frozenset[int]]:
    from asn1crypto import tsp

    names = {v: k for k, v in tsp.PKIFailureInfo._map.items()}
    known: set[FailInfo] = set()
    unknown: set[int] = set()
    for item in bits if isinstance(bits, set) else ():
        bit = names.get(item, item) if isinstance(item, str) else item
        if isinstance(bit, int):
            try:
                known.add(FailInfo(bit))
            except ValueError:
                unknown.add(bit)
    return frozenset(known), frozenset(unknown)


def _token_info(tst: object) -> TokenInfo:
    from asn1crypto import tsp

    assert isinstance(tst, tsp.TSTInfo)
    imprint = tst["message_imprint"]
    hash_oid = imprint["hash_algorithm"]["algorithm"].dotted
    acc = tst["accuracy"]
    accuracy = None
    if acc.native is not None:
        accuracy = Accuracy(
            seconds=acc["seconds"].native or 0,
            millis=acc["millis"].native or 0,
            micros=acc["micros"].native or 0,
        )
    tsa = tst["tsa"]
    tsa_name = None
    if tsa.native is not None:
        tsa_name = tsa.chosen.human_friendly if tsa.name == "directory_name" else str(tsa.native)
    gen_time = tst["gen_time"]
    return TokenInfo(
        version=1 if tst["version"].native == "v1" else int(tst["version"].native),
        policy_oid=tst["policy"].dotted,
        digest=Digest.from_oid(hash_oid),
        hash_oid=hash_oid,
        message_imprint=imprint["hashed_message"].native,
        serial=tst["serial_number"].native,
        gen_time=gen_time.native.astimezone(dt.UTC),
        gen_time_text=gen_time.contents.decode("ascii"),
        accuracy=accuracy,
        ordering=bool(tst["ordering"].native),
        nonce=tst["nonce"].native,
        tsa_name=tsa_name,
    )


@functools.cache
def _resp_spec() -> Any:
    """RFC 3161 §2.4.2 ``TimeStampResp`` with the token OPTIONAL, as the RFC has it
    (asn1crypto's declares it mandatory and so cannot read a rejection)."""
    from asn1crypto import cms, core, tsp

    class TimeStampResp(core.Sequence):  # type: ignore[misc]
        _fields = [  # noqa: RUF012 - asn1crypto's declaration style
            ("status", tsp.PKIStatusInfo),
            ("time_stamp_token", cms.ContentInfo, {"optional": True}),
        ]

    return TimeStampResp


def _tlv_end(buf: bytes, pos: int) -> int:
    """End offset of the DER element starting at ``pos`` (X.690 §8.1.2-8.1.3)."""
    pos += 1
    if buf[pos - 1] & 0x1F == 0x1F:  # high tag number form
        while buf[pos] & 0x80:
            pos += 1
        pos += 1
    first = buf[pos]
    pos += 1
    if first < 0x80:
        return pos + first
    n = first & 0x7F
    return pos + n + int.from_bytes(buf[pos : pos + n], "big")


def _second_element(der: bytes) -> bytes:
    """The raw bytes of the 2nd element of the outer SEQUENCE (the TimeStampToken), as
    received; the caller has already parsed ``der`` as a TimeStampResp."""
    first = der[1]  # the outer SEQUENCE's tag (0x30) is one byte; then its length
    start = 2 if first < 0x80 else 2 + (first & 0x7F)
    status_end = _tlv_end(der, start)
    return der[status_end : _tlv_end(der, status_end)]


def parse_reply(der: bytes) -> TsaReply:
    """Parse a DER ``TimeStampResp``; :class:`ClientError` if it is not one."""
    from asn1crypto import cms, core, tsp

    if len(der) > MAX_REPLY_BYTES:
        raise ClientError(f"time-stamp reply larger than {MAX_REPLY_BYTES} bytes")
    status_codes = {name: code for code, name in tsp.PKIStatus._map.items()}
    try:
        resp = _resp_spec().load(der, strict=True)
        raw_status = resp["status"]["status"].native
        status = PKIStatus(status_codes.get(raw_status, raw_status))
    except Exception as e:  # asn1crypto raises many types (ValueError, TypeError, KeyError…)
        raise ClientError(f"not a valid RFC 3161 TimeStampResp: {e}") from e
    try:
        status_info = resp["status"]
        text = status_info["status_string"]
        status_text = tuple(text.native) if text.native else ()
        fail_info, unknown = _fail_info(status_info["fail_info"].native)
        token = resp["time_stamp_token"]
        info = None
        token_der = None
        certificates: tuple[bytes, ...] = ()
        if not isinstance(token, core.Void):
            if token["content_type"].native != "signed_data":
                raise ValueError("the token is not CMS SignedData")
            signed = token["content"]
            assert isinstance(signed, cms.SignedData)
            encap = signed["encap_content_info"]
            if encap["content_type"].native != "tst_info":
                raise ValueError("the token does not encapsulate a TSTInfo")
            info = _token_info(encap["content"].parsed)
            token_der = _second_element(der)  # as received: never re-encoded
            certificates = tuple(
                c.chosen.dump() for c in signed["certificates"] if c.name == "certificate"
            )
    except Exception as e:  # see above: wrap whatever asn1crypto raises
        raise ClientError(f"not a valid RFC 3161 TimeStampResp: {e}") from e
    if status in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS) and info is None:
        raise ClientError("the TSA said granted but sent no token (RFC 3161 §2.4.2)")
    return TsaReply(
        der=der,
        status=status,
        status_text=status_text,
        fail_info=fail_info,
        unknown_fail_bits=unknown,
        info=info,
        token_der=token_der,
        certificates=certificates,
    )


def describe_failure(reply: TsaReply) -> str:
    """A refusal in words: status, failInfo names and meanings, the TSA's own text."""
    words = [f"the TSA answered: {_STATUS_WORDS[reply.status]}"]
    for fi in sorted(reply.fail_info, key=lambda f: f.value):
        words.append(f"{fi.name} ({_FAIL_WORDS[fi]})")
    for bit in sorted(reply.unknown_fail_bits):
        words.append(f"unknown failInfo bit {bit}")
    if reply.status_text:
        words.append("TSA says: " + " / ".join(repr(t) for t in reply.status_text))
    return "; ".join(words)


def check_reply(query: TimeStampQuery, reply: TsaReply) -> TokenInfo:
    """The checks RFC 3161 §2.4.2 asks of a requester before accepting a token.

    Not a signature check (that is :func:`verify_reply`): this matches the reply to the
    request — status granted, same imprint and algorithm, same nonce, the policy asked for,
    the certificate asked for.
    """
    if not reply.granted:
        raise ReplyRejected(reply)
    info = reply.info
    assert info is not None  # parse_reply guarantees a token when granted
    if info.hash_oid != query.digest.oid or info.message_imprint != query.message_imprint:
        raise VerificationFailed("the token time-stamps another message than the one sent")
    if query.nonce is not None and info.nonce != query.nonce:
        raise VerificationFailed(
            "the token's nonce differs from the request's (a replayed or misrouted reply)"
        )
    if query.policy_oid is not None and info.policy_oid != query.policy_oid:
        raise VerificationFailed(
            f"the token's policy {info.policy_oid} is not the one requested ({query.policy_oid})"
        )
    if query.cert_req and not reply.certificates:
        raise VerificationFailed("the TSA certificate was requested but is not in the token")
    return info


def _load_pem_bundle(ca_pem: bytes) -> list[x509.Certificate]:
    from cryptography import x509

    if len(ca_pem) > _MAX_CA_BYTES:
        raise ClientError(f"CA file larger than {_MAX_CA_BYTES} bytes")
    try:
        certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as e:
        raise ClientError(f"the CA file holds no readable PEM certificate: {e}") from e
    return list(certs)


def _is_self_signed(cert: x509.Certificate) -> bool:
    from cryptography.exceptions import InvalidSignature

    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _has_time_stamping_eku(cert: x509.Certificate) -> bool:
    from cryptography import x509

    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return x509.oid.ExtendedKeyUsageOID.TIME_STAMPING in eku


def verify_reply(
    reply_der: bytes,
    *,
    message_imprint: bytes,
    ca_pem: bytes,
    nonce: int | None = None,
    policy_oid: str | None = None,
) -> VerifiedToken:
    """Verify a granted ``TimeStampResp`` over ``message_imprint`` (computed by the caller
    with the token's own algorithm, see :attr:`TokenInfo.digest`).

    ``ca_pem``: the trusted root certificate(s), PEM; it may also carry intermediates and
    the TSA certificate (needed when the token does not embed it, ``certReq`` false).
    Raises :class:`VerificationFailed` (or another :class:`ClientError`) unless everything
    holds: signature, chain to a given root at genTime, the TSA certificate's critical
    ``id-kp-timeStamping`` EKU (RFC 3161 §2.3), imprint, nonce and policy when given.
    """
    import rfc3161_client
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    reply = parse_reply(reply_der)
    if not reply.granted or reply.info is None:
        raise ReplyRejected(reply)
    info = reply.info
    if info.digest is None:
        raise VerificationFailed(f"the token uses an unsupported hash algorithm {info.hash_oid}")
    if reply.status is PKIStatus.GRANTED_WITH_MODS:
        raise VerificationFailed(
            "the token was 'granted with modifications', which rfc3161-client does not verify"
        )
    if len(message_imprint) != info.digest.digest_bytes:
        raise ClientError(f"the imprint to check is not a {info.digest.hashlib_name} digest")
    bundle = _load_pem_bundle(ca_pem)
    roots = [c for c in bundle if _is_self_signed(c)]
    if not roots:
        raise ClientError("the CA file holds no self-signed root certificate")
    others = [c for c in bundle if not _is_self_signed(c)]
    embedded = [x509.load_der_x509_certificate(d) for d in reply.certificates]
    builder = rfc3161_client.VerifierBuilder()
    for root in roots:
        builder = builder.add_root_certificate(root)
    tsa_from_bundle = [c for c in others if _has_time_stamping_eku(c)]
    for cert in others:
        if cert not in tsa_from_bundle:
            builder = builder.add_intermediate_certificate(cert)
    if not embedded:
        if len(tsa_from_bundle) != 1:
            raise VerificationFailed(
                "the token does not carry the TSA certificate; put it in the CA file"
            )
        builder = builder.tsa_certificate(tsa_from_bundle[0])
    if nonce is not None:
        builder = builder.nonce(nonce)
    if policy_oid is not None:
        builder = builder.policy_id(x509.ObjectIdentifier(_check_oid(policy_oid)))
    try:
        response = _decode_for_rfc3161_client(reply_der)
        builder.build().verify(response, message_imprint)
    except rfc3161_client.VerificationError as e:
        raise VerificationFailed(_verification_words(str(e))) from e
    except (ValueError, TypeError) as e:
        raise VerificationFailed(f"the token cannot be verified: {e}") from e
    signer = _signer_certificate(response, embedded or tsa_from_bundle)
    return VerifiedToken(
        info=info,
        tsa_subject=signer.subject.rfc4514_string(),
        tsa_certificate_der=signer.public_bytes(Encoding.DER),
    )


def _decode_for_rfc3161_client(reply_der: bytes) -> rfc3161_client.TimeStampResponse:
    """Decode for rfc3161-client, which insists on DER order in the SignedData's
    ``certificates`` SET; OpenSSL writes that set in chain order (its PKCS7 code declares a
    SEQUENCE). The certificates are outside the signature, so putting them in DER order
    changes nothing that is signed — the token verifies or not exactly as before."""
    import rfc3161_client
    from asn1crypto import cms, tsp

    try:
        return rfc3161_client.decode_timestamp_response(reply_der)
    except ValueError as e:
        if "InvalidSetOrdering" not in str(e):
            raise
        resp = tsp.TimeStampResp.load(reply_der)
        signed = resp["time_stamp_token"]["content"]
        certs = sorted(c.dump() for c in signed["certificates"])
        signed["certificates"] = cms.CertificateSet([cms.CertificateChoices.load(c) for c in certs])
        return rfc3161_client.decode_timestamp_response(resp.dump())


def _verification_words(message: str) -> str:
    if message == "Mismatch between messages":
        return "the file does not match the token (its hash is not the one time-stamped)"
    if message == "Nonce mismatch":
        return "the token's nonce is not the request's (a replayed or misrouted reply)"
    if message == "Policy ID mismatch":
        return "the token was issued under another policy than the one required"
    if message.startswith("Error while verifying certificates"):
        # rfc3161-client passes OpenSSL's error stack through; keep its reasons only.
        reasons = re.findall(r'(?:reason|data): "([^"]+)"', message)
        return (
            "the token's signature or certificate chain does not verify against the given "
            f"CA: {'; '.join(reasons) if reasons else message}"
        )
    return f"the token does not verify: {message}"


def _signer_certificate(
    response: rfc3161_client.TimeStampResponse, candidates: Sequence[x509.Certificate]
) -> x509.Certificate:
    """The certificate named by the SignerInfo (issuer and serial), among ``candidates``."""
    signer_infos = list(response.signed_data.signer_infos)
    if len(signer_infos) != 1:
        raise VerificationFailed(f"expected one signer in the token, found {len(signer_infos)}")
    si = signer_infos[0]
    for cert in candidates:
        if cert.issuer == si.issuer and cert.serial_number == si.serial_number:
            return cert
    raise VerificationFailed("no certificate matches the token's signer")


def verify_with_openssl(
    reply_der: bytes,
    *,
    message_imprint: bytes,
    ca_pem: bytes,
    openssl: str = "openssl",
    timeout_s: float = 30.0,
) -> str:
    """A second opinion: ``openssl ts -verify -digest HEX -in REPLY -CAfile ROOTS``.

    Non-root certificates of ``ca_pem`` are passed as ``-untrusted`` (intermediates, or the
    TSA certificate when the token does not embed it). OpenSSL checks the certificates at
    the current time, not at genTime. Returns OpenSSL's output; raises
    :class:`VerificationFailed` with OpenSSL's reason otherwise.
    """
    from cryptography.hazmat.primitives.serialization import Encoding

    exe = shutil.which(openssl)
    if exe is None:
        raise ClientError(f"{openssl!r} not found: install OpenSSL for the second opinion")
    bundle = _load_pem_bundle(ca_pem)
    roots = [c for c in bundle if _is_self_signed(c)]
    others = [c for c in bundle if not _is_self_signed(c)]
    if not roots:
        raise ClientError("the CA file holds no self-signed root certificate")
    with tempfile.TemporaryDirectory(prefix="horodate-verify-") as tmp:
        d = Path(tmp)
        (d / "reply.tsr").write_bytes(reply_der)
        (d / "roots.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in roots))
        cmd = [exe, "ts", "-verify", "-in", str(d / "reply.tsr"), "-digest", message_imprint.hex()]
        cmd += ["-CAfile", str(d / "roots.pem")]
        if others:
            (d / "untrusted.pem").write_bytes(
                b"".join(c.public_bytes(Encoding.PEM) for c in others)
            )
            cmd += ["-untrusted", str(d / "untrusted.pem")]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise ClientError(f"openssl ts -verify did not finish within {timeout_s} s") from e
        except OSError as e:
            raise ClientError(f"cannot run {exe}: {e}") from e
    output = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or "Verification: OK" not in r.stdout:
        reason = _openssl_reason(output)
        raise VerificationFailed(f"openssl ts -verify refused the token: {reason}")
    return output


def _openssl_reason(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error" in ln.lower() or "verif" in ln.lower()]
    return " | ".join(useful[-3:] or lines[-3:] or ["no output"])


def post_query(
    url: str,
    query_der: bytes,
    *,
    timeout_s: float = 10.0,
    max_reply_bytes: int = MAX_REPLY_BYTES,
) -> bytes:
    """POST a ``TimeStampReq`` to a TSA over HTTP(S) (RFC 3161 §3.4); the reply's DER.

    Raises :class:`TsaUnreachable` for anything that is not a time-stamp reply: connection
    refused, timeout, HTTP error, wrong content type, a reply larger than
    ``max_reply_bytes``.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ClientError(f"{url!r} is not an http:// or https:// URL")
    request = urllib.request.Request(
        url,
        data=query_der,
        method="POST",
        headers={"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            content_type = resp.headers.get_content_type()
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_reply_bytes:
                raise TsaUnreachable(
                    f"the reply from {url} is {declared} bytes, more than the "
                    f"{max_reply_bytes}-byte limit; refused"
                )
            body: bytes = resp.read(max_reply_bytes + 1)
    except urllib.error.HTTPError as e:
        raise TsaUnreachable(f"{url} answered HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise TsaUnreachable(f"cannot reach the TSA at {url}: {e.reason}") from e
    except TimeoutError as e:
        raise TsaUnreachable(f"the TSA at {url} did not answer within {timeout_s} s") from e
    except OSError as e:
        raise TsaUnreachable(f"cannot talk to the TSA at {url}: {e}") from e
    if len(body) > max_reply_bytes:
        raise TsaUnreachable(f"the reply from {url} exceeds {max_reply_bytes} bytes; refused")
    if content_type != REPLY_CONTENT_TYPE:
        raise TsaUnreachable(
            f"{url} did not answer with a time-stamp reply (Content-Type: {content_type})"
        )
    return body
