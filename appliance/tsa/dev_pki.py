"""Keys and certificates made here: a development PKI (a CA and a TSA certificate under it,
for the demo and the tests) and a certificate signing request for a real CA.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.tsa.credentials import KEY_TYPES, KeyType, PrivateKey, key_type_of
from appliance.tsa.errors import CredentialsError

log = logging.getLogger(__name__)


DEV_CA_VALIDITY_DAYS = 3650


DEV_TSA_VALIDITY_DAYS = 825


_BACKDATE = dt.timedelta(minutes=5)  # tolerate a small clock difference with verifiers


@dataclass(frozen=True, slots=True, kw_only=True)
class DevPki:
    """Where ``init_dev_pki`` wrote its files."""

    ca_key: Path
    ca_cert: Path
    tsa_key: Path
    tsa_cert: Path
    chain: Path  # the certificates above the TSA certificate (here: the root CA)


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
