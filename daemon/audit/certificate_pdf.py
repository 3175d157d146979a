"""The certificate of completion set as the Ministry of Labour's model lays it out (A4,
portrait), the audit trail attached as a PDF file attachment (``pdfdetach -list`` shows it).

The wording of the model is kept in French (it is the document funders know); ``en`` gives
a translation for a reader who asks for one. Unsigned here: :mod:`daemon.audit.pdf_signing`
signs it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from fpdf.enums import XPos, YPos

from daemon.audit.certificate import ATTACHMENT, NATURES
from daemon.audit.report_pdf import AuditPdf

WORDS: Final[dict[str, dict[str, str]]] = {
    "fr": {
        "title": "CERTIFICAT DE RÉALISATION",
        "undersigned": "Je soussigné(e) {signatory}, représentant(e) légal(e) du dispensateur de "
        "l'action concourant au développement des compétences {provider}{nda},",
        "nda": " (numéro de déclaration d'activité {nda})",
        "attests": "atteste que :",
        "trainee": "{name} (INE {ine}, né(e) le {born})",
        "followed": "a suivi l'action : {action}",
        "nature": "Nature de l'action concourant au développement des compétences :",
        "dates": "qui s'est déroulée du {first} au {last}",
        "hours": "pour une durée réalisée de {attended} heures",
        "detail": "(sur {planned} heures prévues ; {hd_a} demi-journée(s) suivie(s) sur {hd_p}).",
        "funder": "Financeur : {funder}",
        "file": "Référence du dossier : {file}",
        "keep": "Sans préjudice des délais imposés par les règles fiscales, comptables ou "
        "commerciales, je m'engage à conserver l'ensemble des pièces justificatives qui ont "
        "permis d'établir le présent certificat pendant une durée de 3 ans à compter de la fin "
        "de l'année du dernier paiement. En cas de cofinancement des fonds européens, la durée "
        "de conservation est étendue conformément aux obligations conventionnelles spécifiques.",
        "done": "Fait à {place}, le {date}",
        "signed": "Signé électroniquement (PAdES) et horodaté pour {provider}.",
        "evidence": "Pièces justificatives",
        "evidence_text": "Les heures ci-dessus sont celles des émargements conservés dans le "
        "coffre {vault} (établissement {establishment}) : chaque signature y est scellée par un "
        "jeton d'horodatage RFC 3161. La piste d'audit de ce stagiaire pour cette action "
        "({entries} entrées) est jointe à ce document ({file}) ; son empreinte SHA-256 est :",
        "evidence_check": "Elle se vérifie sans faire confiance au coffre (VERIFY.md et check.py "
        "qu'elle contient). Contrôles de la piste : {findings}.",
        "no_findings": "aucune anomalie relevée",
        "findings": "{n} constat(s), détaillé(s) dans son report.pdf",
        "unnamed": "le stagiaire",
        "blank": "……………………",
        "page": "page {n}",
    },
    "en": {
        "title": "CERTIFICATE OF COMPLETION (certificat de réalisation)",
        "undersigned": "I, the undersigned {signatory}, legal representative of the provider of "
        "the skills development action {provider}{nda},",
        "nda": " (activity declaration number {nda})",
        "attests": "certify that:",
        "trainee": "{name} (INE {ine}, born {born})",
        "followed": "followed the action: {action}",
        "nature": "Nature of the skills development action:",
        "dates": "held from {first} to {last}",
        "hours": "for an attended duration of {attended} hours",
        "detail": "(of {planned} hours planned; {hd_a} half-day(s) attended of {hd_p}).",
        "funder": "Funder: {funder}",
        "file": "File reference: {file}",
        "keep": "Without prejudice to the periods required by tax, accounting or commercial "
        "rules, I undertake to keep all the supporting documents used to establish this "
        "certificate for 3 years from the end of the year of the last payment. Where European "
        "funds co-finance the action, the period is extended as their specific terms require.",
        "done": "Done at {place}, on {date}",
        "signed": "Signed electronically (PAdES) and time-stamped for {provider}.",
        "evidence": "Supporting evidence",
        "evidence_text": "The hours above are those of the sign-in records kept in the vault "
        "{vault} (establishment {establishment}): each signature there is sealed by an RFC 3161 "
        "time-stamp token. The audit trail of this trainee in this action ({entries} entries) "
        "is attached to this document ({file}); its SHA-256 is:",
        "evidence_check": "It is checked without trusting the vault (its VERIFY.md and "
        "check.py). The trail's controls: {findings}.",
        "no_findings": "nothing found",
        "findings": "{n} finding(s), detailed in its report.pdf",
        "unnamed": "the trainee",
        "blank": "……………………",
        "page": "page {n}",
    },
}


def _day(iso: str) -> str:
    return dt.date.fromisoformat(iso).strftime("%d/%m/%Y")


def _hours(x: float, language: str) -> str:
    text = f"{x:g}"
    return text.replace(".", ",") if language == "fr" else text


def render_certificate(facts: dict[str, Any], bundle: bytes, language: str = "fr") -> bytes:
    """The certificate as PDF bytes (unsigned), ``bundle`` attached as :data:`ATTACHMENT`."""
    w = WORDS[language]
    made = dt.datetime.fromisoformat(facts["made_at"])
    pdf = AuditPdf(w, f"{facts['vault']} · {made:%d/%m/%Y %H:%M} UTC", orientation="P")
    t = pdf.text_
    provider = facts["provider"]
    trainee = facts["trainee"]
    pdf.set_margins(20, 18, 20)
    pdf.add_page()
    pdf.set_title(t(w["title"]))
    pdf.set_author(t(provider["name"]))
    pdf.set_font(pdf.family, "B", 16)
    pdf.cell(0, 12, t(w["title"]), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)

    def para(text: str, size: float = 10.5, style: str = "", gap: float = 2) -> None:
        pdf.set_font(pdf.family, style, size)
        pdf.multi_cell(0, 5.5, t(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(gap)

    nda = w["nda"].format(nda=provider["nda"]) if provider.get("nda") else ""
    para(w["undersigned"].format(signatory=provider.get("signatory") or w["blank"],
                                 provider=provider["name"], nda=nda))  # fmt: skip
    para(w["attests"])
    para(
        w["trainee"].format(
            name=trainee.get("name") or w["unnamed"],
            ine=trainee["ine"],
            born=_day(trainee["birth_date"]),
        ),
        size=12,
        style="B",
    )
    action = facts["training_action"]
    if facts["titles"]:
        action += " — " + " ; ".join(facts["titles"])
    para(w["followed"].format(action=action))
    para(w["nature"], gap=1)
    ticked, empty = ("☒", "☐") if pdf.family != "Helvetica" else ("[X]", "[ ]")
    for code, names in NATURES.items():
        box = ticked if code == facts["nature"] else empty
        para(f"    {box}  {names[language]}", gap=0)
    pdf.ln(2)
    para(w["dates"].format(first=_day(facts["first_day"]), last=_day(facts["last_day"])), gap=0)
    para(w["hours"].format(attended=_hours(facts["hours_attended"], language)), style="B", gap=0)
    para(
        w["detail"].format(
            planned=_hours(facts["hours_planned"], language),
            hd_a=facts["half_days_attended"],
            hd_p=facts["half_days_planned"],
        )
    )
    if facts.get("funder"):
        para(w["funder"].format(funder=facts["funder"]), gap=0)
    if facts.get("file_reference"):
        para(w["file"].format(file=facts["file_reference"]), gap=0)
    pdf.ln(2)
    para(w["keep"], size=9)
    place = provider.get("place") or w["blank"]
    para(w["done"].format(place=place, date=made.strftime("%d/%m/%Y")))
    para(w["signed"].format(provider=provider["name"]), size=9, gap=6)

    evidence = facts["bundle"]
    para(w["evidence"], size=11, style="B", gap=1)
    para(
        w["evidence_text"].format(
            vault=facts["vault"],
            establishment=facts["establishment"],
            entries=evidence["entries"],
            file=evidence["file"],
        ),
        size=9,
        gap=1,
    )
    pdf.set_font("Courier", "", 9)
    pdf.cell(0, 5, evidence["sha256"], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(1)
    found = w["no_findings"] if not facts["findings"] else w["findings"].format(n=facts["findings"])
    para(w["evidence_check"].format(findings=found), size=9)
    pdf.embed_file(
        bytes=bundle,
        basename=ATTACHMENT,
        desc=t(w["evidence"]),
        mime_type="application/zip",
        modification_date=made,
        compress=False,  # a zip: deflating it again gains nothing
    )
    return bytes(pdf.output())
