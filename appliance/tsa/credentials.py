"""The TSA's signing key and certificates: load them and check them.

Checks on load (RFC 3161 §2.3 for the certificate, RFC 5280 for the rest):

* the key file is readable by its owner only (no group or other permission bits);
* the key is ECDSA P-256 or P-384, or RSA of 2048 to 4096 bits;
* the certificate carries the key's public half;
* the certificate has an extended key usage extension, marked critical, holding exactly
  one purpose, id-kp-timeStamping; if it has a key usage extension, it allows
  digitalSignature or nonRepudiation;
* the certificate and every chain certificate are valid at ``now``; each certificate is
  issued (and signed) by the next one in the chain.

``now`` is always an argument: read the clock at the edge.
"""

from __future__ import annotations

import datetime as dt
import logging
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from appliance.tsa.errors import CredentialsError

log = logging.getLogger(__name__)


KeyType = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"]


KEY_TYPES: tuple[KeyType, ...] = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


EXPIRY_WARNING_DAYS = 30.0  # warn (log + metric) when the TSA certificate expires sooner


RSA_MIN_BITS, RSA_MAX_BITS = 2048, 4096


@dataclass(frozen=True, slots=True)
class TsaCredentials:
    """A validated TSA key, its certificate, and the chain above it (up to the root)."""

    private_key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuer of ``certificate`` first, root last

    @property
    def key_type(self) -> KeyType:
        return key_type_of(self.private_key)

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    def chain_pem(self) -> bytes:
        """The TSA certificate then its chain, PEM (what ``GET /tsa/certs`` serves)."""
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.chain)
        )

    def root(self) -> x509.Certificate:
        """The last certificate of the chain (the certificate itself if the chain is empty)."""
        return self.chain[-1] if self.chain else self.certificate


def key_type_of(key: object) -> KeyType:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ec-p256"
        if isinstance(key.curve, ec.SECP384R1):
            return "ec-p384"
        raise CredentialsError(f"unsupported elliptic curve {key.curve.name} (P-256 or P-384)")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        bits = key.key_size
        if not RSA_MIN_BITS <= bits <= RSA_MAX_BITS:
            raise CredentialsError(f"RSA key of {bits} bits (2048 to 4096 accepted)")
        return "rsa-4096" if bits > 3072 else "rsa-3072" if bits > 2048 else "rsa-2048"
    raise CredentialsError(f"unsupported key type {type(key).__name__} (ECDSA or RSA)")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CredentialsError(f"cannot read the {what} {path}: {e.strerror}") from e


def _check_key_permissions(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as e:
        raise CredentialsError(f"cannot stat the TSA key {path}: {e.strerror}") from e
    if mode & 0o077:
        raise CredentialsError(
            f"the TSA key {path} is accessible to group or others (mode {mode:04o}); "
            f"make it readable by the appliance's user only: chmod 600 {path}"
        )


def _load_certs(data: bytes, path: Path, what: str) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise CredentialsError(f"the {what} {path} holds no readable certificate: {e}") from e


def load_credentials(
    key_path: Path,
    cert_path: Path,
    chain_path: Path | None,
    *,
    now: dt.datetime,
) -> TsaCredentials:
    """Load and validate the TSA key, certificate and chain; raise :class:`CredentialsError`.

    ``cert_path`` may hold the TSA certificate followed by its chain; ``chain_path`` (if given)
    holds the certificates above it, issuer first (a root last, if present).
    """
    _check_key_permissions(key_path)
    try:
        key = serialization.load_pem_private_key(_read(key_path, "TSA key"), password=None)
    except (ValueError, TypeError) as e:
        raise CredentialsError(
            f"the TSA key {key_path} is not an unencrypted PEM private key: {e}"
        ) from e
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CredentialsError(f"the TSA key {key_path} is not an ECDSA or RSA key")
    key_type_of(key)

    certs = _load_certs(_read(cert_path, "TSA certificate"), cert_path, "TSA certificate")
    cert, chain = certs[0], certs[1:]
    if chain_path is not None:
        chain += _load_certs(_read(chain_path, "certificate chain"), chain_path, "chain")
    creds = TsaCredentials(private_key=key, certificate=cert, chain=tuple(_dedupe(chain)))
    validate_credentials(creds, now=now)
    warning = expiry_warning(creds, now)
    if warning:
        log.warning("%s", warning)
    return creds


def _dedupe(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    seen: list[x509.Certificate] = []
    for c in certs:
        if c not in seen:
            seen.append(c)
    return seen


def validate_credentials(creds: TsaCredentials, *, now: dt.datetime) -> None:
    """The checks listed in the module docstring; raise :class:`CredentialsError`."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    cert = creds.certificate
    who = f"TSA certificate '{cert.subject.rfc4514_string()}'"
    if cert.public_key() != creds.private_key.public_key():
        raise CredentialsError(f"the {who} does not match the TSA key")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound as e:
        raise CredentialsError(f"the {who} has no extended key usage (RFC 3161 §2.3)") from e
    purposes = list(eku.value)
    if purposes != [ExtendedKeyUsageOID.TIME_STAMPING] or not eku.critical:
        raise CredentialsError(
            f"the {who} must have exactly one extended key usage, timeStamping, marked "
            f"critical (RFC 3161 §2.3); it has {[p.dotted_string for p in purposes]}, "
            f"critical={eku.critical}"
        )
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not (ku.digital_signature or ku.content_commitment):
        raise CredentialsError(
            f"the {who}'s key usage allows neither signatures nor nonRepudiation"
        )
    for c in (cert, *creds.chain):
        name = c.subject.rfc4514_string()
        if now < c.not_valid_before_utc:
            raise CredentialsError(
                f"certificate '{name}' is not valid before {c.not_valid_before_utc}"
            )
        if now > c.not_valid_after_utc:
            raise CredentialsError(f"certificate '{name}' expired on {c.not_valid_after_utc}")
    for child, parent in zip((cert, *creds.chain), creds.chain, strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise CredentialsError(
                f"certificate '{child.subject.rfc4514_string()}' is not issued by the next "
                f"certificate of the chain, '{parent.subject.rfc4514_string()}': {e}"
            ) from e


def days_to_expiry(creds: TsaCredentials, now: dt.datetime) -> float:
    """Days until the TSA certificate (or an earlier-expiring chain certificate) expires."""
    first = min(c.not_valid_after_utc for c in (creds.certificate, *creds.chain))
    return (first - now).total_seconds() / 86400.0


def expiry_warning(
    creds: TsaCredentials, now: dt.datetime, *, warn_days: float = EXPIRY_WARNING_DAYS
) -> str | None:
    """An operator-facing warning when a certificate expires within ``warn_days``, else None."""
    days = days_to_expiry(creds, now)
    if days > warn_days:
        return None
    first = min((creds.certificate, *creds.chain), key=lambda c: c.not_valid_after_utc)
    return (
        f"certificate '{first.subject.rfc4514_string()}' expires in {days:.1f} days "
        f"({first.not_valid_after_utc:%Y-%m-%d %H:%M}Z): renew it; tokens stop when it expires"
    )


def load_private_key(path: Path) -> PrivateKey:
    """Load an unencrypted PEM key (permissions checked) for ``keys csr``."""
    _check_key_permissions(path)
    try:
        key = serialization.load_pem_private_key(_read(path, "key"), password=None)
    except (ValueError, TypeError) as e:
        raise CredentialsError(f"{path} is not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CredentialsError(f"{path} is not an ECDSA or RSA key")
    key_type_of(key)
    return key
