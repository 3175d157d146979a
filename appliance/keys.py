"""The TSA's signing key and certificates: load and validate them, make a development PKI,
make a certificate signing request for a real CA.

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
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.tsa.errors import CredentialsError

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "KEY_TYPES",
    "CredentialsError",
    "DevPki",
    "KeyType",
    "TsaCredentials",
    "days_to_expiry",
    "expiry_warning",
    "generate_key",
    "init_dev_pki",
    "key_type_of",
    "load_credentials",
    "load_private_key",
    "make_csr",
    "validate_credentials",
    "write_private_key",
]

log = logging.getLogger(__name__)

KeyType = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"]
KEY_TYPES: tuple[KeyType, ...] = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

EXPIRY_WARNING_DAYS = 30.0  # warn (log + metric) when the TSA certificate expires sooner
RSA_MIN_BITS, RSA_MAX_BITS = 2048, 4096
DEV_CA_VALIDITY_DAYS = 3650
DEV_TSA_VALIDITY_DAYS = 825
_BACKDATE = dt.timedelta(minutes=5)  # tolerate a small clock difference with verifiers


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


@dataclass(frozen=True, slots=True, kw_only=True)
class DevPki:
    """Where ``init_dev_pki`` wrote its files."""

    ca_key: Path
    ca_cert: Path
    tsa_key: Path
    tsa_cert: Path
    chain: Path  # the certificates above the TSA certificate (here: the root CA)


# --- keys ----------------------------------------------------------------------------------


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


def generate_key(key_type: KeyType = "ec-p256") -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-3072", "rsa-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise CredentialsError(f"unknown key type {key_type!r} (one of {', '.join(KEY_TYPES)})")


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600, refusing to overwrite."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(path, pem, 0o600)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as e:
        raise CredentialsError(f"{path} already exists; refusing to overwrite it") from e
    except OSError as e:
        raise CredentialsError(f"cannot create {path}: {e.strerror}") from e
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # the umask may have removed bits we want


# --- loading and validation ---------------------------------------------------------------


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


# --- development PKI and CSR ----------------------------------------------------------------


def _name(common_name: str, organization: str | None, country: str | None) -> x509.Name:
    attrs = []
    if country:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _sig_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


_Builder = TypeVar("_Builder", x509.CertificateBuilder, x509.CertificateSigningRequestBuilder)


def _tsa_extensions(builder: _Builder) -> _Builder:
    """EKU timeStamping, critical and alone (RFC 3161 §2.3); key usage digitalSignature."""
    return builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
    ).add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )


def init_dev_pki(
    directory: Path,
    *,
    key_type: KeyType = "ec-p256",
    now: dt.datetime,
    organization: str = "Horodate development",
) -> DevPki:
    """Create a development root CA and a TSA key/certificate in ``directory``.

    Never for production: the CA key sits next to the TSA key. Refuses to overwrite files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = DevPki(
        ca_key=directory / "ca.key",
        ca_cert=directory / "ca.pem",
        tsa_key=directory / "tsa.key",
        tsa_cert=directory / "tsa.pem",
        chain=directory / "chain.pem",
    )
    for p in (paths.ca_key, paths.ca_cert, paths.tsa_key, paths.tsa_cert, paths.chain):
        if p.exists():
            raise CredentialsError(f"{p} already exists; refusing to overwrite it")

    ca_key = generate_key(key_type)
    tsa_key = generate_key(key_type)
    ca_name = _name(f"{organization} root CA", organization, None)
    start = now - _BACKDATE
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + dt.timedelta(days=DEV_CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, _sig_hash(ca_key))
    )
    tsa_builder = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{organization} TSA", organization, None))
        .issuer_name(ca_name)
        .public_key(tsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + dt.timedelta(days=DEV_TSA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    tsa_cert = _tsa_extensions(tsa_builder).sign(ca_key, _sig_hash(ca_key))

    pem = serialization.Encoding.PEM
    write_private_key(paths.ca_key, ca_key)
    write_private_key(paths.tsa_key, tsa_key)
    _write_new(paths.ca_cert, ca_cert.public_bytes(pem), 0o644)
    _write_new(paths.tsa_cert, tsa_cert.public_bytes(pem), 0o644)
    _write_new(paths.chain, ca_cert.public_bytes(pem), 0o644)
    log.info("development PKI (%s) written to %s", key_type, directory)
    return paths


def make_csr(
    key: PrivateKey,
    *,
    common_name: str,
    organization: str | None = None,
    country: str | None = None,
) -> bytes:
    """A PEM certificate signing request for ``key``, asking for the TSA extensions
    (extended key usage timeStamping, critical; key usage digitalSignature)."""
    key_type_of(key)
    if country is not None and len(country) != 2:
        raise CredentialsError(f"country must be a two-letter code, got {country!r}")
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        _name(common_name, organization, country)
    )
    builder = _tsa_extensions(builder)
    csr = builder.sign(key, _sig_hash(key))
    return csr.public_bytes(serialization.Encoding.PEM)


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
