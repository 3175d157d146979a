"""``report.pdf``: read back by pdftotext (the words a controller reads, in French), its
PAdES signature and document time-stamp validated by pyHanko's validator against the
vault's document certificate and the appliance's root, and any change to it caught."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

from asn1crypto import pem, x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature, validate_pdf_timestamp
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from daemon.audit.pdf_signing import CERT_FILE
from daemon.audit.report_pdf import render_report

from .conftest import VaultUnderTest
from .test_audit import bundle  # noqa: F401 - the fixture


def _pdf(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read("report.pdf")


def _certs(data: bytes) -> list[x509.Certificate]:
    return [x509.Certificate.load(der) for _, _, der in pem.unarmor(data, multiple=True)]


def test_the_report_reads_in_french(bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "report.pdf").write_bytes(_pdf(bundle))
    text = subprocess.run(
        ["pdftotext", "-layout", str(tmp_path / "report.pdf"), "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for words in (
        "Piste d'audit — relevé de présence",
        "CFA-LYON-02",
        "OPCO Atlas",
        "DOS-2026-0042",
        "Léa Dubois",
        "INE 0123456789M",
        "en retard (12 min)",
        "Claire Martin",
        "Heures prévues 6 h · réalisées 5,8 h · manquées 0,2 h",
        "retard de 10 minutes, pas 12",  # the correction, with its reason
        "Demi-journée sans contre-signature du formateur",
        "Comment vérifier",
        "python3 check.py",
    ):
        assert words in text, words
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(tmp_path / "report.pdf"),
         str(tmp_path / "page")], check=True,
    )  # fmt: skip
    (png,) = tmp_path.glob("page*.png")
    assert png.stat().st_size > 10_000  # a page with text on it (looked at when written)


def test_the_signature_and_the_document_time_stamp_validate(
    bundle: Path,  # noqa: F811
    vault: VaultUnderTest,
) -> None:
    data = _pdf(bundle)
    reader = PdfFileReader(io.BytesIO(data))
    signature, stamp = reader.embedded_signatures
    document = ValidationContext(
        trust_roots=_certs((vault.data_dir / "keys" / CERT_FILE).read_bytes())
    )
    tsa = ValidationContext(trust_roots=_certs(vault.appliance.ca_pem))
    status = validate_pdf_signature(signature, document, ts_validation_context=tsa)
    assert status.intact and status.valid and status.trusted
    assert signature.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    stamped = validate_pdf_timestamp(stamp, validation_context=tsa)
    assert stamped.intact and stamped.valid and stamped.trusted
    # the time-stamp covers the whole file, the signed revision included
    assert stamped.coverage == SignatureCoverageLevel.ENTIRE_FILE
    assert stamp.sig_object["/SubFilter"] == "/ETSI.RFC3161"


def test_a_changed_report_is_caught(bundle: Path, vault: VaultUnderTest) -> None:  # noqa: F811
    data = bytearray(_pdf(bundle))
    at = data.index(b"/Author")  # inside the signed revision's bytes
    data[at + 9] ^= 0x01
    signature = PdfFileReader(io.BytesIO(bytes(data))).embedded_signatures[0]
    document = ValidationContext(
        trust_roots=_certs((vault.data_dir / "keys" / CERT_FILE).read_bytes())
    )
    assert not validate_pdf_signature(signature, document).intact


def test_the_report_in_english(bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    with zipfile.ZipFile(bundle) as z:
        report = json.loads(z.read("report.json"))
    (tmp_path / "en.pdf").write_bytes(render_report(report, "en"))
    text = subprocess.run(
        ["pdftotext", str(tmp_path / "en.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Audit trail — attendance record" in text and "late (12 min)" in text
