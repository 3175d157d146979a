"""``POST /v1/audits``: an audit trail asked over HTTP, by an establishment or the auditor
it granted a token to (both scoped to that establishment).

The body names the scope as the command line does::

    {"student": {"ine": "0123456789M", "birth_date": "2004-05-17"},
     "from": "2026-09-01", "to": "2027-06-30",
     "funder": "OPCO Atlas", "file_reference": "DOS-2026-0042"}

(or ``"session": "S-1042"``, or ``"training_action": "BTS SIO"``). The answer is the zip;
the trail is journaled with its hash in the same way as ``horodate audit create``.

``POST /v1/certificates``: the certificate of completion of one trainee in one action
(:mod:`daemon.audit.certificate`), the body an audit request naming both, plus who provides
the action::

    {"student": {...}, "training_action": "BTS SIO", "nature": "formation",
     "provider": {"name": "Lycée Jean Moulin — GRETA", "nda": "11 75 12345 75",
                  "signatory": "Marie Martin, directrice", "place": "Paris"}}

The answer is the signed PDF, the trail attached, its hash in ``X-Bundle-SHA256``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from daemon.audit.bundle import AuditRequest, Bundle, NotYetProvable, audit_record, build_bundle
from daemon.audit.certificate import NATURES, Certificate, CertificateRequest, Provider
from daemon.audit.certificate import make_certificate as certify
from daemon.audit.pdf_signing import certificate_maker, report_maker
from daemon.audit.scope import Scope, ScopeError
from daemon.clock import utc_now
from daemon.errors import FieldError, InvalidEntry
from daemon.keys import Role
from daemon.records import parse_date
from daemon.vault import Caller, Forbidden, NotFound, Vault

T = TypeVar("T")

_MEMBERS = frozenset(
    {"student", "session", "training_action", "from", "to", "funder", "file_reference"}
    | {"language"}
)
_CERTIFICATE_MEMBERS = frozenset({"provider", "nature"})
_PROVIDER_MEMBERS = frozenset({"name", "nda", "signatory", "place"})
_CERTIFICATE_MEMBERS = frozenset({"provider", "nature"})
_PROVIDER_MEMBERS = frozenset({"name", "nda", "signatory", "place"})


def _text(value: dict[str, Any], name: str, errors: list[FieldError], max_len: int = 200) -> Any:
    v = value.get(name)
    if v is not None and (not isinstance(v, str) or not v.strip() or len(v) > max_len):
        errors.append(FieldError(f"/{name}", f"1 to {max_len} characters"))
        return None
    return v


def _day(value: dict[str, Any], name: str, errors: list[FieldError]) -> dt.date | None:
    v = value.get(name)
    if v is None:
        return None
    day = parse_date(v) if isinstance(v, str) else None
    if day is None:
        errors.append(FieldError(f"/{name}", "a YYYY-MM-DD date"))
    return day


def parse_audit_request(
    value: object, caller: Caller, extra: frozenset[str] = frozenset()
) -> AuditRequest:
    """The request in the body, for the caller's establishment; every field error at once.
    ``extra``: members a caller parses itself (the certificate's)."""
    if caller.role not in (Role.ESTABLISHMENT, Role.AUDITOR) or caller.establishment is None:
        raise Forbidden("audit trails are asked by an establishment or its auditor")
    if not isinstance(value, dict):
        raise InvalidEntry([FieldError("", "expected an object")])
    known = _MEMBERS | extra
    errors = [FieldError(f"/{k}", f"unknown member {k!r}") for k in value if k not in known]
    student = value.get("student")
    ine = birth = None
    if student is not None:
        if not isinstance(student, dict) or set(student) != {"ine", "birth_date"}:
            errors.append(FieldError("/student", "an object with ine and birth_date"))
        else:
            ine, birth = student["ine"], student["birth_date"]
            if not isinstance(ine, str) or not 1 <= len(ine) <= 64:
                errors.append(FieldError("/student/ine", "a string"))
            if not isinstance(birth, str) or parse_date(birth) is None:
                errors.append(FieldError("/student/birth_date", "a YYYY-MM-DD date"))
    fields = {n: _text(value, n, errors) for n in ("session", "training_action", "funder")}
    reference = _text(value, "file_reference", errors)
    language = value.get("language", "fr")
    if language not in ("fr", "en"):
        errors.append(FieldError("/language", "fr or en"))
    period = (_day(value, "from", errors), _day(value, "to", errors))
    if errors:
        raise InvalidEntry(errors)
    try:
        scope = Scope(
            establishment=caller.establishment,
            ine=ine,
            birth_date=birth,
            session=fields["session"],
            training_action=fields["training_action"],
            period_from=period[0],
            period_to=period[1],
        )
    except ScopeError as e:
        raise InvalidEntry([FieldError("", str(e))]) from e
    return AuditRequest(
        scope=scope,
        requested_by=caller.label,
        funder=fields["funder"],
        file_reference=reference,
        language=language,
    )


def parse_certificate_request(value: object, caller: Caller) -> CertificateRequest:
    """A certificate's body: an audit request naming a student and an action, the provider
    and the action's nature; every field error at once."""
    errors: list[FieldError] = []
    try:
        audit = parse_audit_request(value, caller, _CERTIFICATE_MEMBERS)
    except InvalidEntry as e:
        if not isinstance(value, dict):
            raise
        errors.extend(e.errors)
        audit = None
    assert isinstance(value, dict)  # parse_audit_request refuses anything else
    if value.get("student") is None:
        errors.append(FieldError("/student", "required: the trainee the certificate is for"))
    if value.get("training_action") is None:
        errors.append(FieldError("/training_action", "required: the action it certifies"))
    nature = value.get("nature", "formation")
    if not isinstance(nature, str) or nature not in NATURES:
        errors.append(FieldError("/nature", f"one of {', '.join(NATURES)}"))
    provider = value.get("provider")
    named: dict[str, Any] = {}
    if not isinstance(provider, dict) or "name" not in provider:
        errors.append(FieldError("/provider", "an object with at least the provider's name"))
    else:
        errors.extend(
            FieldError(f"/provider/{k}", f"unknown member {k!r}")
            for k in provider
            if k not in _PROVIDER_MEMBERS
        )
        sub: list[FieldError] = []
        named = {k: _text(provider, k, sub) for k in sorted(_PROVIDER_MEMBERS)}
        errors.extend(FieldError("/provider" + f.pointer, f.detail) for f in sub)
    if errors or audit is None:
        raise InvalidEntry(errors)
    try:
        return CertificateRequest(audit=audit, provider=Provider(**named), nature=nature)
    except ScopeError as e:
        raise InvalidEntry([FieldError("", str(e))]) from e


async def _covered(vault: Vault, build: Callable[[], T]) -> T:
    """``build()`` in the read thread once a checkpoint covers the log (one is made now if
    needed, and once more if an entry in scope came meanwhile)."""
    latest = vault.store.reader().latest_checkpoint()
    if latest is None or latest.size < vault.sequencer.size:
        latest = await vault.make_checkpoint()
    # the witnesses' cosignatures of it, if they come within their timeout: the trail
    # carries the latest checkpoint that counts (daemon.witnessing.cosignatures.best_covering)
    await vault.witnessing.wait_witnessed(latest.size, vault.config.witnessing.timeout_s)
    try:
        return await vault.read_in_thread(build)
    except NotYetProvable:  # appended meanwhile and in scope: one more checkpoint covers it
        await vault.make_checkpoint()
        return await vault.read_in_thread(build)
    except ScopeError as e:
        raise NotFound(str(e)) from e


def _bundle_builder(vault: Vault) -> Callable[[AuditRequest], Bundle]:
    pdf = report_maker(vault.config.data_dir / "keys", vault.keys.signer.name,
                       vault.config.tsa_urls)  # fmt: skip

    def build(request: AuditRequest) -> Bundle:
        return build_bundle(vault.store.reader(), vault.keys, request, ca_pem=vault.ca_pem(),
                            now=utc_now(), render_pdf=pdf,
                            witnesses=vault.witnessing.policy)  # fmt: skip

    return build


async def _journal(
    vault: Vault, caller: Caller, request: AuditRequest, bundle: Bundle, action: str
) -> None:
    record = audit_record(
        request,
        vault.keys.lookup_secret,
        bundle.sha256,
        bundle.entries,
        actor=caller.label,
        role=caller.role,
        status=200,
        action=action,
    )
    await vault.committer.run(vault.sequencer.journal(record))


async def make_audit(vault: Vault, caller: Caller, request: AuditRequest) -> Bundle:
    """The bundle, once a checkpoint covers the log, journaled."""
    build = _bundle_builder(vault)
    bundle = await _covered(vault, lambda: build(request))
    await _journal(vault, caller, request, bundle, "audit create")
    return bundle


async def make_certificate(
    vault: Vault, caller: Caller, request: CertificateRequest
) -> Certificate:
    """The certificate and the trail it carries, journaled as one audit trail produced."""
    build = _bundle_builder(vault)
    render = certificate_maker(vault.config.data_dir / "keys", vault.keys.signer.name,
                               vault.config.tsa_urls)  # fmt: skip
    certificate = await _covered(vault, lambda: certify(request, build, render, utc_now()))
    await _journal(vault, caller, request.audit, certificate.bundle, "audit certificate")
    return certificate
