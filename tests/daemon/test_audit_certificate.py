"""The certificate of completion: made by ``horodate audit certificate`` and by
``POST /v1/certificates`` from a vault filled through its API with real tokens; read back by
pdftotext (the model's French wording, the hours *attended*), its attached trail pulled out
by pdfdetach and verified, its hash the one the text states, its signature validated by
pyHanko; other actions' sessions stay out."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature, async_validate_pdf_timestamp
from pyhanko_certvalidator import ValidationContext

from daemon.audit.certificate import ATTACHMENT
from daemon.audit.pdf_signing import CERT_FILE
from daemon.journal import JournalRecord
from daemon.store import Store
from horodate.cli import main as horodate

from .conftest import VaultUnderTest, entry_now
from .test_audit import BIRTH, INE, OTHER, _post, two_half_days
from .test_audit_pdf import _certs

PROVIDER = {
    "name": "CFA du Rhône",
    "nda": "84 69 12345 69",
    "signatory": "Marie Martin, directrice",
    "place": "Lyon",
}


def _text(pdf: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout


def _attached(pdf: Path, folder: Path) -> Path:
    listing = subprocess.run(["pdfdetach", "-list", str(pdf)], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert ATTACHMENT in listing, listing
    out = folder / "attached.zip"
    subprocess.run(["pdfdetach", "-save", "1", "-o", str(out), str(pdf)], check=True)
    return out


@pytest.fixture
async def filled(vault: VaultUnderTest) -> str:
    """:func:`two_half_days` (both BTS SIO), then S-9 in another action, which Léa's BTS
    SIO certificate must leave out."""
    token = vault.token()
    await two_half_days(vault, token)
    elsewhere = entry_now(session="S-9", minutes_ago=3)
    elsewhere["session"]["training_action"] = "CAP Cuisine"
    await _post(vault, token, elsewhere, "h")
    await vault.vault.make_checkpoint()
    return token


async def test_the_command_certifies_the_hours_attended(
    vault: VaultUnderTest, filled: str, tmp_path: Path
) -> None:
    out, trail = tmp_path / "certificat.pdf", tmp_path / "trail.zip"
    args = ["audit", "certificate", "--data-dir", str(vault.data_dir), "--establishment",
            "CFA-LYON-02", "--ine", INE, "--birth-date", BIRTH, "--training-action", "BTS SIO",
            "--provider", PROVIDER["name"], "--nda", PROVIDER["nda"], "--signatory",
            PROVIDER["signatory"], "--place", "Lyon", "--funder", "OPCO Atlas",
            "--tsa", vault.appliance.url, "-o", str(out), "--bundle", str(trail)]  # fmt: skip
    assert await asyncio.to_thread(horodate, args) == 0
    text = _text(out)
    flat = " ".join(text.split())
    attached = _attached(out, tmp_path)
    digest = hashlib.sha256(attached.read_bytes()).hexdigest()
    assert attached.read_bytes() == trail.read_bytes()
    assert digest in text
    import zipfile

    with zipfile.ZipFile(attached) as z:
        report = json.loads(z.read("report.json"))
    sessions = {r["session"] for r in report["half_days"]}
    assert sessions == {"S-1", "S-2"}  # S-9 is another action's
    assert {r["student"]["ine"] for r in report["half_days"]} == {INE}  # Hugo stays out
    attended = report["totals"]["hours_attended"]
    assert 0 < attended < report["totals"]["hours_planned"] == 6  # the 12 late minutes
    for words in (
        "CERTIFICAT DE RÉALISATION",
        "Je soussigné(e) Marie Martin, directrice, représentant(e) légal(e)",
        "CFA du Rhône (numéro de déclaration d'activité 84 69 12345 69)",
        "Léa Dubois (INE 0123456789M, né(e) le 17/05/2004)",
        "a suivi l'action : BTS SIO",
        "☒ action de formation",
        "☐ bilan de compétences",
        f"pour une durée réalisée de {attended:g} heures".replace(".", ","),
        "(sur 6 heures prévues ; 2 demi-journée(s) suivie(s) sur 2)",
        "Financeur : OPCO Atlas",
        "Fait à Lyon, le",
        "3 ans à compter de la fin de l'année du dernier paiement",
        ATTACHMENT,
    ):
        assert words in flat, words
    assert "CAP Cuisine" not in flat
    assert horodate(["audit", "verify", str(attached)]) == 0

    reader = PdfFileReader(io.BytesIO(out.read_bytes()))
    signature, stamp = reader.embedded_signatures
    document = ValidationContext(
        trust_roots=_certs((vault.data_dir / "keys" / CERT_FILE).read_bytes())
    )
    tsa = ValidationContext(trust_roots=_certs(vault.appliance.ca_pem))
    status = await async_validate_pdf_signature(signature, document, ts_validation_context=tsa)
    assert status.intact and status.valid and status.trusted
    stamped = await async_validate_pdf_timestamp(stamp, validation_context=tsa)
    assert stamped.intact and stamped.valid and stamped.trusted

    store = Store.open(vault.data_dir)
    try:
        records = [JournalRecord.decode(r) for _, r, _ in store.reader().journal(0, 10_000)]
    finally:
        store.close()
    (made,) = [r for r in records if r.action == "audit certificate"]
    assert digest in made.target and "in training action BTS SIO" in made.target
    assert INE not in made.target  # the journal names the trainee by keyed lookup only
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(out),
                    str(tmp_path / "page")], check=True)  # fmt: skip
    (png,) = tmp_path.glob("page*.png")
    assert png.stat().st_size > 10_000  # a page with text on it (looked at when written)


async def test_the_endpoint_answers_the_signed_pdf(
    vault: VaultUnderTest, filled: str, tmp_path: Path
) -> None:
    h = {"Content-Type": "application/json"}
    body: dict[str, Any] = {
        "student": {"ine": INE, "birth_date": BIRTH},
        "training_action": "BTS SIO",
        "nature": "apprentissage",
        "provider": PROVIDER,
        "language": "en",
    }
    resp = await vault.client.post(
        "/v1/certificates", data=json.dumps(body), headers={**vault.headers(filled), **h}
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/pdf"
    pdf = tmp_path / "certificate.pdf"
    pdf.write_bytes(await resp.read())
    attached = _attached(pdf, tmp_path)
    assert resp.headers["X-Bundle-SHA256"] == hashlib.sha256(attached.read_bytes()).hexdigest()
    flat = " ".join(_text(pdf).split())
    assert "CERTIFICATE OF COMPLETION" in flat and "☒ apprenticeship training" in flat

    async def refused(who: str, value: Any) -> tuple[int, Any]:
        r = await vault.client.post(
            "/v1/certificates", data=json.dumps(value), headers={**vault.headers(who), **h}
        )
        return r.status, await r.json()

    lacking = {"student": {"ine": INE, "birth_date": BIRTH}, "nature": ["stage"],
               "provider": {"nda": 1}}  # fmt: skip
    status, problem = await refused(filled, lacking)
    assert status == 422
    pointers = {e["pointer"] for e in problem["errors"]}
    assert pointers == {"/training_action", "/nature", "/provider"}
    status, problem = await refused(
        filled, {**body, "provider": {"name": "x", "siret": "1"}, "session": "S-1"}
    )
    assert status == 422
    assert {e["pointer"] for e in problem["errors"]} >= {"/provider/siret"}
    nobody = {**body, "student": {"ine": OTHER["ine"], "birth_date": "1999-01-01"}}
    assert (await refused(filled, nobody))[0] == 404
    admin = vault.token(role="admin", est=None)
    assert (await refused(admin, body))[0] == 403
