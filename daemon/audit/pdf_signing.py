"""Sign ``report.pdf`` as a PDF (PAdES), time-stamped by our TSA, with pyHanko.

Two revisions are added to the report: a PAdES signature (``ETSI.CAdES.detached``) by the
vault's document-signing key, then a document time-stamp (``ETSI.RFC3161``) over the whole
signed file — PAdES B-T by a document time-stamp, as ETSI EN 319 142-1 §5.4 allows. A PDF
reader shows the document signed and unaltered since; pyHanko's validator checks both (the
tests do). Not a signature time-stamp inside the CMS: pyHanko re-encodes an embedded token
through asn1crypto, which was slow and varied widely (benchmarks/RESULTS.md), where the
document time-stamp proves the same time at a small constant cost.

The document-signing certificate is made on first use, self-signed, in the vault's keys
directory (``report.key``, ``report.pem``): a reader then says "signature valid, signer
unknown" until the funder trusts it. An operator who wants readers to name the signer
replaces both files with a key and a certificate from a CA the funders trust.

The time-stamps come from the vault's own TSA through :func:`timestamping.http_client.post_query`
(pyHanko builds the request and checks the reply; our client carries it).
"""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.timestamps import TimeStamper

from daemon.errors import VaultError
from timestamping.errors import TimestampingError
from timestamping.http_client import post_query

KEY_FILE: Final = "report.key"
CERT_FILE: Final = "report.pem"
_VALIDITY: Final = dt.timedelta(days=3650)


_DOCUMENT_SIGNING: Final = x509.KeyUsage(
    digital_signature=True, content_commitment=True, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


class SigningError(VaultError):
    """The report could not be signed or time-stamped (the TSA down, a bad key file)."""


def document_credentials(keys_dir: Path, name: str) -> tuple[Path, Path]:
    """The document-signing key and certificate, made on first use (see the module)."""
    key_path, cert_path = keys_dir / KEY_FILE, keys_dir / CERT_FILE
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (audit reports)"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Horodate vault"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_DOCUMENT_SIGNING, critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class _OurTsa(TimeStamper):
    """pyHanko's time-stamper over our RFC 3161 client, trying each TSA in turn."""

    def __init__(self, urls: Sequence[str]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # pyHanko's is not annotated
        self.urls = tuple(urls)

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        failures = []
        for url in self.urls:
            try:
                return tsp.TimeStampResp.load(post_query(url, req.dump()))
            except TimestampingError as e:
                failures.append(str(e))
        raise SigningError("no TSA time-stamped the report: " + "; ".join(failures))


def sign_report(
    pdf: bytes, *, key: Path, cert: Path, tsa_urls: Sequence[str], place: str, reason: str
) -> bytes:
    """``pdf`` signed (PAdES), then document-time-stamped by one of ``tsa_urls``.

    Synchronous (pyHanko runs its own event loop): call it from a thread that has none.
    """
    try:
        signer = signers.SimpleSigner.load(str(key), str(cert))  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as e:
        raise SigningError(f"cannot load the document-signing key {key}: {e}") from e
    if signer is None:
        raise SigningError(f"cannot load the document-signing key {key} and {cert}")
    stamper = _OurTsa(tsa_urls)
    meta = signers.PdfSignatureMetadata(
        field_name="Signature",
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason,
        location=place,
    )
    try:
        signed = signers.PdfSigner(meta, signer).sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)))
        stamped = signers.PdfTimeStamper(stamper, field_name="Horodatage").timestamp_pdf(
            IncrementalPdfFileWriter(signed), "sha256"
        )
    except SigningError:
        raise
    except Exception as e:  # pyHanko raises many kinds; the reason is in the message
        raise SigningError(f"cannot sign the report: {e}") from e
    return bytes(stamped.getvalue())


_REASONS: Final = {
    "fr": "Piste d'audit produite par le coffre à la demande du financeur",
    "en": "Audit trail produced by the vault at the funder's request",
}


def report_maker(
    keys_dir: Path, name: str, tsa_urls: Sequence[str]
) -> Callable[[dict[str, Any], str], bytes]:
    """What :func:`daemon.audit.bundle.build_bundle` calls to set and sign ``report.pdf``."""
    from daemon.audit.report_pdf import render_report

    key, cert = document_credentials(keys_dir, name)

    def make(report: dict[str, Any], language: str) -> bytes:
        pdf = render_report(report, language)
        return sign_report(
            pdf, key=key, cert=cert, tsa_urls=tsa_urls, place=name, reason=_REASONS[language]
        )

    return make


_CERTIFICATE_REASONS: Final = {
    "fr": "Certificat de réalisation établi d'après les émargements conservés par le coffre",
    "en": "Certificate of completion from the sign-in records the vault keeps",
}


def certificate_maker(
    keys_dir: Path, name: str, tsa_urls: Sequence[str]
) -> Callable[[dict[str, Any], bytes, str], bytes]:
    """What :func:`daemon.audit.certificate.make_certificate` calls to set and sign it."""
    from daemon.audit.certificate_pdf import render_certificate

    key, cert = document_credentials(keys_dir, name)

    def make(facts: dict[str, Any], bundle: bytes, language: str) -> bytes:
        pdf = render_certificate(facts, bundle, language)
        place = facts["provider"].get("place") or name
        reason = _CERTIFICATE_REASONS[language]
        return sign_report(pdf, key=key, cert=cert, tsa_urls=tsa_urls, place=place, reason=reason)

    return make
