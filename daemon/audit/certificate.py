"""The certificate of completion ("certificat de réalisation"), filled from the vault.

Since 2020 a provider of an action "concourant au développement des compétences" sends the
funder, for each trainee, a certificate on the Ministry of Labour's model: the provider and
who signs for it, the trainee, the action and its nature (training, skills assessment, VAE,
apprenticeship), the dates, and the hours *actually attended* — the figure funders pay on.
Here every fact comes from the vault: the hours are those of the half-days the trainee
signed (late arrivals and early departures deducted), over the audit trail of that trainee
and that action, which is built at the same time, attached to the PDF (``piste-d-audit.zip``)
and referenced by its SHA-256, so that the certificate carries its own evidence.

The PDF is :mod:`daemon.audit.certificate_pdf`; it is signed like the report
(:mod:`daemon.audit.pdf_signing`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from daemon.audit.bundle import AuditRequest, Bundle
from daemon.audit.scope import ScopeError
from daemon.clock import utc_text

ATTACHMENT: Final = "piste-d-audit.zip"

# The model's four boxes, as the Ministry words them (and in English for the translation).
NATURES: Final[dict[str, dict[str, str]]] = {
    "formation": {"fr": "action de formation", "en": "training action"},
    "bilan": {"fr": "bilan de compétences", "en": "skills assessment"},
    "vae": {
        "fr": "action de validation des acquis de l'expérience",
        "en": "validation of prior experience (VAE)",
    },
    "apprentissage": {
        "fr": "action de formation par apprentissage",
        "en": "apprenticeship training",
    },
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider:
    """The provider ("dispensateur de l'action") as the certificate names it."""

    name: str
    nda: str | None = None  # numéro de déclaration d'activité
    signatory: str | None = None  # who signs for it, e.g. "Marie Martin, directrice"
    place: str | None = None  # "Fait à …"


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRequest:
    audit: AuditRequest  # its scope names a student and a training action
    provider: Provider
    nature: str = "formation"

    def __post_init__(self) -> None:
        scope = self.audit.scope
        if scope.ine is None or scope.training_action is None:
            raise ScopeError("a certificate is for one trainee (ine, birth_date) and one action")
        if self.nature not in NATURES:
            raise ScopeError(f"nature {self.nature!r}: one of {', '.join(NATURES)}")


@dataclass(frozen=True, slots=True)
class Certificate:
    pdf: bytes  # signed, the bundle attached
    bundle: Bundle
    facts: dict[str, Any]


def certificate_facts(
    request: CertificateRequest, bundle: Bundle, now: dt.datetime
) -> dict[str, Any]:
    """What the certificate states, from the bundle's report (one trainee, one action)."""
    report = bundle.report
    scope = report["scope"]
    held = [r for r in report["half_days"] if r["status"]["code"] != "cancelled"]
    if not held:
        raise ScopeError("no session of this action was held for this trainee")
    attended = [r for r in held if r["hours_attended"] > 0]
    days = sorted(r["date"] for r in held)
    student = held[0]["student"]
    titles = sorted({r["title"] for r in held if r.get("title")})
    return {
        "provider": {
            "name": request.provider.name,
            "nda": request.provider.nda,
            "signatory": request.provider.signatory,
            "place": request.provider.place,
        },
        "establishment": scope["establishment"],
        "trainee": {
            "name": student.get("name"),
            "ine": student["ine"],
            "birth_date": student["birth_date"],
        },
        "training_action": scope["training_action"],
        "titles": titles,
        "nature": request.nature,
        "first_day": days[0],
        "last_day": days[-1],
        "hours_attended": round(sum(r["hours_attended"] for r in held), 2),
        "hours_planned": round(sum(r["hours_planned"] for r in held), 2),
        "half_days_attended": len(attended),
        "half_days_planned": len(held),
        "funder": report["request"]["funder"],
        "file_reference": report["request"]["file_reference"],
        "findings": len(report["controls"]),
        "bundle": {
            "file": ATTACHMENT,
            "sha256": bundle.sha256,
            "entries": bundle.entries,
            "checkpoint": report["checkpoint"],
        },
        "vault": report["vault"],
        "made_at": utc_text(now),
    }


def make_certificate(
    request: CertificateRequest,
    build: Callable[[AuditRequest], Bundle],
    render: Callable[[dict[str, Any], bytes, str], bytes],
    now: dt.datetime,
) -> Certificate:
    """The trail of the trainee in the action (``build``), and the certificate stating it,
    set, the trail attached, and signed (``render(facts, bundle, language)``)."""
    bundle = build(request.audit)
    facts = certificate_facts(request, bundle, now)
    return Certificate(pdf=render(facts, bundle.data, request.audit.language), bundle=bundle,
                       facts=facts)  # fmt: skip
