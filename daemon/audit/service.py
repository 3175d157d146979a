"""``POST /v1/audits``: an audit trail asked over HTTP, by an establishment or the auditor
it granted a token to (both scoped to that establishment).

The body names the scope as the command line does::

    {"student": {"ine": "0123456789M", "birth_date": "2004-05-17"},
     "from": "2026-09-01", "to": "2027-06-30",
     "funder": "OPCO Atlas", "file_reference": "DOS-2026-0042"}

(or ``"session": "S-1042"``, or ``"training_action": "BTS SIO"``). The answer is the zip;
the trail is journaled with its hash in the same way as ``horodate audit create``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from daemon.audit.bundle import AuditRequest, Bundle, NotYetProvable, audit_record, build_bundle
from daemon.audit.pdf_signing import report_maker
from daemon.audit.scope import Scope, ScopeError
from daemon.clock import utc_now
from daemon.errors import FieldError, InvalidEntry
from daemon.keys import Role
from daemon.records import parse_date
from daemon.vault import Caller, Forbidden, NotFound, Vault

_MEMBERS = frozenset(
    {"student", "session", "training_action", "from", "to", "funder", "file_reference"}
    | {"language"}
)


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


def parse_audit_request(value: object, caller: Caller) -> AuditRequest:
    """The request in the body, for the caller's establishment; every field error at once."""
    if caller.role not in (Role.ESTABLISHMENT, Role.AUDITOR) or caller.establishment is None:
        raise Forbidden("audit trails are asked by an establishment or its auditor")
    if not isinstance(value, dict):
        raise InvalidEntry([FieldError("", "expected an object")])
    errors = [FieldError(f"/{k}", f"unknown member {k!r}") for k in value if k not in _MEMBERS]
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


async def make_audit(vault: Vault, caller: Caller, request: AuditRequest) -> Bundle:
    """The bundle, once a checkpoint covers the log (one is made now if needed), journaled."""

    keys_dir = vault.config.data_dir / "keys"
    pdf = report_maker(keys_dir, vault.keys.signer.name, vault.config.tsa_urls)

    def build() -> Bundle:
        return build_bundle(
            vault.store.reader(),
            vault.keys,
            request,
            ca_pem=vault.ca_pem(),
            now=utc_now(),
            render_pdf=pdf,
        )

    latest = vault.store.reader().latest_checkpoint()
    if latest is None or latest.size < vault.sequencer.size:
        await vault.make_checkpoint()
    try:
        bundle = await vault.read_in_thread(build)
    except NotYetProvable:  # appended meanwhile and in scope: one more checkpoint covers it
        await vault.make_checkpoint()
        bundle = await vault.read_in_thread(build)
    except ScopeError as e:
        raise NotFound(str(e)) from e
    record = audit_record(
        request,
        vault.keys.lookup_secret,
        bundle.sha256,
        bundle.entries,
        actor=caller.label,
        role=caller.role,
        status=200,
    )
    await vault.committer.run(vault.sequencer.journal(record))
    return bundle
