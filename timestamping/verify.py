"""Verify an RFC 3161 token: by ``rfc3161-client``, and a second opinion from ``openssl``.

:func:`verify_reply` checks the signature, the certificate chain up to the given roots at
``genTime``, the TSA certificate's critical ``id-kp-timeStamping`` extended key usage, the
message imprint, the nonce and the policy; :func:`verify_with_openssl` asks OpenSSL (a thin
edge: it runs ``openssl ts -verify``).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import rfc3161_client
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from timestamping.errors import PKIStatus, TimestampingError, VerificationFailed
from timestamping.known_signers import KnownSigners, check_known
from timestamping.reply import ReplyRejected, TokenInfo, TsaReply, check_reply, parse_reply
from timestamping.request import TimeStampQuery, check_oid

_MAX_CA_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedToken:
    """What a successful :func:`verify_reply` proved."""

    info: TokenInfo
    tsa_subject: str  # RFC 4514 string of the TSA certificate's subject
    tsa_certificate_der: bytes


def _load_pem_bundle(ca_pem: bytes) -> list[x509.Certificate]:

    if len(ca_pem) > _MAX_CA_BYTES:
        raise TimestampingError(f"CA file larger than {_MAX_CA_BYTES} bytes")
    try:
        certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as e:
        raise TimestampingError(f"the CA file holds no readable PEM certificate: {e}") from e
    return list(certs)


def _is_self_signed(cert: x509.Certificate) -> bool:

    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _has_time_stamping_eku(cert: x509.Certificate) -> bool:

    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return x509.oid.ExtendedKeyUsageOID.TIME_STAMPING in eku


@functools.lru_cache(maxsize=8)
def _trust(
    ca_pem: bytes,
) -> tuple[tuple[x509.Certificate, ...], ...]:
    """The CA file read once: its roots, its other certificates, and among those the TSA
    certificates. Cached: the vault verifies every token against the same file, and reading
    it (a self-signature check per root) cost as much as verifying the token."""
    roots: list[x509.Certificate] = []
    others: list[x509.Certificate] = []
    for cert in _load_pem_bundle(ca_pem):
        (roots if _is_self_signed(cert) else others).append(cert)
    if not roots:
        raise TimestampingError("the CA file holds no self-signed root certificate")
    return tuple(roots), tuple(others), tuple(c for c in others if _has_time_stamping_eku(c))


KNOWN_SIGNERS: Final = KnownSigners()  # this process's: see timestamping.known_signers


@functools.lru_cache(maxsize=64)
def _certificate(der: bytes) -> x509.Certificate:
    """A certificate a token embeds (the same TSA certificate in every token)."""
    return x509.load_der_x509_certificate(der)


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
    Raises :class:`VerificationFailed` (or another :class:`TimestampingError`) unless everything
    holds: signature, chain to a given root at genTime, the TSA certificate's critical
    ``id-kp-timeStamping`` EKU (RFC 3161 §2.3), imprint, nonce and policy when given.
    """
    return _verify_parsed(
        parse_reply(reply_der),
        message_imprint=message_imprint,
        ca_pem=ca_pem,
        nonce=nonce,
        policy_oid=policy_oid,
    )


def accept_reply(query: TimeStampQuery, reply_der: bytes, *, ca_pem: bytes) -> VerifiedToken:
    """All a requester checks before keeping a token, the reply parsed once: it answers
    ``query`` (:func:`~timestamping.reply.check_reply`: imprint, nonce, policy, the
    certificate asked for) and it verifies (:func:`verify_reply`).

    Plain values in and out, so that it can run in another process (the vault verifies
    its tokens beside its event loop, see :class:`~timestamping.aio_client.ClientPolicy`).
    """
    reply = parse_reply(reply_der)
    check_reply(query, reply)  # ReplyRejected when refused
    return _verify_parsed(
        reply,
        message_imprint=query.message_imprint,
        ca_pem=ca_pem,
        nonce=query.nonce,
        policy_oid=query.policy_oid,
    )


def _verify_parsed(
    reply: TsaReply,
    *,
    message_imprint: bytes,
    ca_pem: bytes,
    nonce: int | None,
    policy_oid: str | None,
) -> VerifiedToken:
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
        raise TimestampingError(f"the imprint to check is not a {info.digest.hashlib_name} digest")
    fast = _from_known_signer(reply, info, message_imprint, ca_pem, nonce, policy_oid)
    if fast is not None:
        return fast
    return _verify_fully(reply, message_imprint, ca_pem, nonce, policy_oid)


def _verify_fully(
    reply: TsaReply,
    message_imprint: bytes,
    ca_pem: bytes,
    nonce: int | None,
    policy_oid: str | None,
) -> VerifiedToken:
    """rfc3161-client's verification, the chain built to ``ca_pem``'s roots."""
    assert reply.info is not None
    info, reply_der = reply.info, reply.der
    roots, others, tsa_from_bundle = _trust(ca_pem)
    embedded = [_certificate(d) for d in reply.certificates]
    builder = rfc3161_client.VerifierBuilder()
    for root in roots:
        builder = builder.add_root_certificate(root)
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
        builder = builder.policy_id(x509.ObjectIdentifier(check_oid(policy_oid)))
    try:
        response = _decode_for_rfc3161_client(reply_der, reply.certificates)
        builder.build().verify(response, message_imprint)
    except rfc3161_client.VerificationError as e:
        raise VerificationFailed(_verification_words(str(e))) from e
    except (ValueError, TypeError) as e:
        raise VerificationFailed(f"the token cannot be verified: {e}") from e
    signer = _signer_certificate(response, embedded or tsa_from_bundle)
    chain = _chain(signer, [*embedded, *others, *roots])
    KNOWN_SIGNERS.remember(ca_pem, reply.certificates, signer, chain)
    return VerifiedToken(
        info=info,
        tsa_subject=signer.subject.rfc4514_string(),
        tsa_certificate_der=signer.public_bytes(Encoding.DER),
    )


def _from_known_signer(
    reply: TsaReply,
    info: TokenInfo,
    message_imprint: bytes,
    ca_pem: bytes,
    nonce: int | None,
    policy_oid: str | None,
) -> VerifiedToken | None:
    """The token verified against a TSA certificate a full verification already proved
    (:mod:`timestamping.known_signers`), or None: then the full verification runs."""
    if reply.signer_info_der is None or reply.tst_info_der is None:
        return None
    known = KNOWN_SIGNERS.signer(ca_pem, reply.certificates)
    if known is None or info.message_imprint != message_imprint:
        return None
    if nonce is not None and info.nonce != nonce:
        return None
    if policy_oid is not None and info.policy_oid != policy_oid:
        return None
    if not check_known(
        reply.signer_info_der, reply.tst_info_der, info.gen_time, known, reply.digest_oids
    ):
        return None
    try:  # the strict DER reader of the full verification: what it cannot read, it refuses
        _decode_for_rfc3161_client(reply.der, reply.certificates)
    except ValueError:
        return None
    return VerifiedToken(info=info, tsa_subject=known.subject, tsa_certificate_der=known.der)


def _chain(signer: x509.Certificate, pool: list[x509.Certificate]) -> list[x509.Certificate]:
    """``signer`` and, by issuer name, every certificate of ``pool`` above it up to a
    self-issued one (all of a name: their validities bound the remembered window)."""
    chain, current = [signer], signer
    for _ in range(8):
        if current.issuer == current.subject:
            break
        above = [c for c in pool if c.subject == current.issuer and c not in chain]
        if not above:
            break
        chain += above
        current = above[0]
    return chain


def _decode_for_rfc3161_client(
    reply_der: bytes, certificates: tuple[bytes, ...] = ()
) -> rfc3161_client.TimeStampResponse:
    """Decode for rfc3161-client, which insists on DER order in the SignedData's
    ``certificates`` SET; OpenSSL writes that set in chain order (its PKCS7
    code declares a SEQUENCE). The certificates are outside the signature, so putting them
    in DER order changes nothing that is signed — the token verifies or not exactly as
    before. ``certificates``: the set's members as parsed; when they lie back to back in
    the reply (they do), sorting them is a permutation of those bytes, lengths unchanged;
    otherwise asn1crypto re-encodes the reply (far slower: benchmarks/RESULTS.md)."""
    from asn1crypto import cms, tsp

    try:
        return rfc3161_client.decode_timestamp_response(reply_der)
    except ValueError as e:
        if "InvalidSetOrdering" not in str(e):
            raise
    together = b"".join(certificates)
    at = reply_der.find(together) if certificates else -1
    if at >= 0 and reply_der.find(together, at + 1) < 0:
        ordered = b"".join(sorted(certificates))
        return rfc3161_client.decode_timestamp_response(
            reply_der[:at] + ordered + reply_der[at + len(together) :]
        )
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

    exe = shutil.which(openssl)
    if exe is None:
        raise TimestampingError(f"{openssl!r} not found: install OpenSSL for the second opinion")
    bundle = _load_pem_bundle(ca_pem)
    roots = [c for c in bundle if _is_self_signed(c)]
    others = [c for c in bundle if not _is_self_signed(c)]
    if not roots:
        raise TimestampingError("the CA file holds no self-signed root certificate")
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
            raise TimestampingError(
                f"openssl ts -verify did not finish within {timeout_s} s"
            ) from e
        except OSError as e:
            raise TimestampingError(f"cannot run {exe}: {e}") from e
    output = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or "Verification: OK" not in r.stdout:
        reason = _openssl_reason(output)
        raise VerificationFailed(f"openssl ts -verify refused the token: {reason}")
    return output


def _openssl_reason(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error" in ln.lower() or "verif" in ln.lower()]
    return " | ".join(useful[-3:] or lines[-3:] or ["no output"])
