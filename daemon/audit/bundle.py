"""The audit bundle: a zip laid out as DESIGN.md says, that anyone checks with stock tools.

    entries/<i>.bin         the exact leaf bytes (RFC 8785 JSON, personal data committed)
    disclosures/<i>.json    what opens the leaf's commitments (the data and the salts)
    tokens/<i>.tsr          the RFC 3161 reply over SHA-256(0x00 ‖ leaf)
    proofs/<i>.tlog-proof   C2SP tlog-proof: the inclusion proof and the checkpoint
    checkpoint.txt          the signed checkpoint (C2SP tlog-checkpoint), cosigned: the
                            vault's signature line, then its witnesses' cosignature/v1
                            lines; checkpoint.tsr its own token, over the SHA-256 of the
                            note as the vault signed it (the text and its signature line)
    vault.vkey, vault.pem   the vault's signed-note verifier key, and the same Ed25519 key
                            as PEM for ``openssl pkeyutl``
    witnesses.vkey          the vault's witnesses' cosignature/v1 keys (when it has some),
    witnesses/<id>.pem      and each as PEM
    certs/ca.pem            the roots (and intermediates) the tokens chain to
    certs/tsa.pem           the TSA certificates the tokens carry
    report.json, report.pdf the facts and the controls, for programs and for people
    VERIFY.md, check.py     how to check it all: the commands, and a one-file checker
    SHA256SUMS              every file's SHA-256 (``sha256sum -c SHA256SUMS``)

Only the entries in scope are in the bundle, and only theirs are disclosed.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from daemon import merkle
from daemon.audit.controls import Item, run_controls
from daemon.audit.report import Sealed, half_days
from daemon.audit.scope import Scope, ScopeError, select
from daemon.audit.tlog_proof import TlogProof
from daemon.clock import utc_text
from daemon.journal import JournalRecord
from daemon.keys import VaultKeys
from daemon.leaf import canonical, open_leaf
from daemon.note import Checkpoint
from daemon.store import CheckpointRow, EntryRow, Reader, node_lookup
from daemon.witnessing.cosignatures import best_covering
from daemon.witnessing.cosignatures import cosigned as cosigned_checkpoint
from daemon.witnessing.policy import Policy
from timestamping.reply import read_stored_token

BUNDLE_FORMAT: Final = "horodate/audit/v1"
HERE: Final = Path(__file__).resolve().parent


class NotYetProvable(ScopeError):
    """Entries in scope that no checkpoint covers yet (the vault makes one every few s)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRequest:
    scope: Scope
    requested_by: str  # the caller's label, journaled
    funder: str | None = None  # e.g. "OPCO Atlas", "Caisse des Dépôts (CPF)"
    file_reference: str | None = None  # the funder's file number
    language: str = "fr"  # of report.pdf: fr or en


@dataclass(frozen=True, slots=True)
class Bundle:
    data: bytes  # the zip
    sha256: str  # hex, journaled
    entries: int
    findings: int
    report: dict[str, Any]


def audit_record(
    request: AuditRequest,
    lookup_secret: bytes,
    sha256: str,
    entries: int,
    *,
    actor: str,
    role: str = "admin",
    status: int = 0,
    action: str = "audit create",
) -> JournalRecord:
    """The journal's record of one audit trail produced: who asked, for which funder and
    file, the scope (a student by keyed lookup, never by INE), and the bundle's hash."""
    parts = [request.scope.journal_text(lookup_secret)]
    if request.funder:
        parts.append(f"funder {request.funder}")
    if request.file_reference:
        parts.append(f"file {request.file_reference}")
    parts.append(f"{entries} entries, bundle sha256 {sha256}")
    return JournalRecord(
        at=utc_text(dt.datetime.now(dt.UTC)),
        actor=actor,
        role=role,
        establishment=request.scope.establishment,
        action=action,
        target="; ".join(parts),
        outcome="ok",
        status=status,
    )  # fmt: skip


def _plain(row: EntryRow) -> dict[str, Any]:
    """An entry's leaf as JSON, its personal members still committed: what controls may
    read of entries outside the scope."""
    doc: dict[str, Any] = json.loads(row.leaf)
    return doc


def build_bundle(
    reader: Reader,
    keys: VaultKeys,
    request: AuditRequest,
    *,
    ca_pem: bytes,
    now: dt.datetime,
    render_pdf: Callable[[dict[str, Any], str], bytes] | None = None,
    witnesses: Policy | None = None,
) -> Bundle:
    """The bundle for ``request``, from what ``reader`` holds now.

    ``render_pdf(report, language)`` sets (and signs) ``report.pdf``; raises
    :class:`ScopeError` when nothing is in scope, :class:`NotYetProvable` when the latest
    checkpoint does not cover every entry in scope yet. With ``witnesses`` (the vault's
    policy), the entries are proven against the latest covering checkpoint that meets it
    (else the most cosigned one), carried cosigned, with the witnesses' keys.
    """
    scope = request.scope
    indices = select(reader, scope, keys.lookup_secret)
    if not indices:
        raise ScopeError(f"no entry of {scope.establishment} in this scope")
    policy = witnesses or Policy()
    cp = best_covering(reader, policy, indices[-1] + 1)
    if cp is None:
        raise NotYetProvable(
            f"entry {indices[-1]} is not in a checkpoint yet (the vault makes one every few "
            "seconds): ask again in a moment"
        )
    note, cosigned = cosigned_checkpoint(reader, policy, cp)  # the vault's note, cosigned
    files: dict[str, bytes] = {}
    items: list[Item] = []
    sealed: dict[int, Sealed] = {}
    tsa_certs: dict[bytes, None] = {}
    leaf_hashes: dict[int, bytes] = {}
    node = functools.lru_cache(maxsize=None)(node_lookup(reader))  # the proofs share nodes
    for idx in indices:
        row = reader.entry(idx)
        assert row is not None
        disclosure = reader.disclosure(idx)
        opened = json.loads(disclosure) if disclosure else {}
        entry = open_leaf(row.leaf, opened)
        files[f"entries/{idx}.bin"] = row.leaf
        leaf_hashes[idx] = row.leaf_hash
        if disclosure:
            files[f"disclosures/{idx}.json"] = canonical(opened)
        seal = reader.seal(idx)
        gen_time = None
        if seal is not None:
            files[f"tokens/{idx}.tsr"] = seal.token
            token = read_stored_token(seal.token, seal.gen_time)
            gen_time = token.gen_time
            acc = token.accuracy
            sealed[idx] = Sealed(
                gen_time=gen_time,
                accuracy_s=None if acc is None else acc.total_us / 1e6,
                serial=token.serial,
            )
            tsa_certs.update(dict.fromkeys(token.certificates))
        proof = TlogProof(
            index=idx, hashes=tuple(merkle.inclusion_proof(idx, cp.size, node)), checkpoint=note
        )
        files[f"proofs/{idx}.tlog-proof"] = proof.text().encode()
        items.append(Item(index=idx, entry=entry, gen_time=gen_time))
    files.update(_log_files(cp, note, keys, ca_pem, tsa_certs))
    files.update(_witness_files(policy))
    findings = run_controls(items, **_control_context(reader, scope, items))
    rows, totals = half_days(items, sealed)
    report = _report(request, cp, items, leaf_hashes, sealed, rows, totals, findings, keys, now)
    if policy.verifiers:
        report["witnessing"] = cosigned.to_json()
    files["report.json"] = (json.dumps(report, ensure_ascii=False, indent=2) + "\n").encode()
    if render_pdf is not None:
        files["report.pdf"] = render_pdf(report, request.language)
    files["VERIFY.md"] = (HERE / "VERIFY.md").read_bytes()
    files["check.py"] = (HERE / "checker.py").read_bytes()
    files["SHA256SUMS"] = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items())
    ).encode()
    data = _zip(files, now)
    return Bundle(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        entries=len(indices),
        findings=len(findings),
        report=report,
    )


def _log_files(
    cp: CheckpointRow, note: str, keys: VaultKeys, ca_pem: bytes, tsa_certs: dict[bytes, None]
) -> dict[str, bytes]:
    from cryptography import x509

    files = {"checkpoint.txt": note.encode()}  # checkpoint.tsr is over cp.note, without them
    if cp.token is not None:
        files["checkpoint.tsr"] = cp.token
    verifier = keys.signer.verifier()
    files["vault.vkey"] = (verifier.key_string() + "\n").encode()
    public = Ed25519PublicKey.from_public_bytes(verifier.public)
    files["vault.pem"] = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    files["certs/ca.pem"] = ca_pem
    files["certs/tsa.pem"] = b"".join(
        x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM) for der in tsa_certs
    )
    return files


def _witness_files(policy: Policy) -> dict[str, bytes]:
    """The vault's witnesses, as it is configured: ``witnesses.vkey`` (one cosignature/v1
    vkey a line) and each key as PEM for ``openssl pkeyutl``, ``witnesses/<key ID>.pem``."""
    if not policy.verifiers:
        return {}
    files = {"witnesses.vkey": "".join(v.key_string() + "\n" for v in policy.verifiers).encode()}
    for v in policy.verifiers:
        _, hex_id, b64 = v.key_string().split("+", 2)
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(b64)[1:])
        files[f"witnesses/{hex_id}.pem"] = public.public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
    return files


def _control_context(reader: Reader, scope: Scope, items: list[Item]) -> dict[str, Any]:
    """What the controls read beyond the scope: whole sessions (no personal data), the
    trainer's other counter-signatures around the scope's dates, signers per session."""
    est = scope.establishment
    sessions = sorted({i.entry["session"]["id"] for i in items})
    session_items: dict[str, list[Item]] = {}
    signed: dict[str, int] = {}
    for sid in sessions:
        session_items[sid] = [
            Item(index=r.idx, entry=_plain(r),
                 gen_time=None if gen is None else dt.datetime.fromisoformat(gen))
            for r, gen in reader.session_entries(est, sid)
        ]  # fmt: skip
        signed[sid] = reader.student_count(est, sid, "student_signed")
    starts = [dt.datetime.fromisoformat(i.entry["session"]["start"]) for i in items]
    ends = [dt.datetime.fromisoformat(i.entry["session"]["end"]) for i in items]
    day = dt.timedelta(days=1)
    trainer: list[Item] = []
    for row in reader.find(
        est,
        occurred_from=utc_text(min(starts) - day),
        occurred_to=utc_text(max(ends) + day),
        kind="teacher_signed",
        limit=10**12,
    ):
        trainer.append(Item(index=row.idx, entry=_plain(row), gen_time=None))
    return {"session_items": session_items, "trainer_sessions": trainer, "signed_students": signed}


def _report(
    request: AuditRequest,
    cp: CheckpointRow,
    items: list[Item],
    leaf_hashes: dict[int, bytes],
    sealed: dict[int, Sealed],
    rows: list[dict[str, Any]],
    totals: dict[str, float],
    findings: list[Any],
    keys: VaultKeys,
    now: dt.datetime,
) -> dict[str, Any]:
    checkpoint = Checkpoint.parse(cp.note.split("\n\n", 1)[0] + "\n")
    return {
        "format": BUNDLE_FORMAT,
        "generated_at": utc_text(now),
        "vault": keys.signer.name,
        "request": {
            "requested_by": request.requested_by,
            "funder": request.funder,
            "file_reference": request.file_reference,
        },
        "scope": request.scope.describe(),
        "checkpoint": {"size": checkpoint.size, "root": checkpoint.root.hex()},
        "entries": [
            {
                "index": i.index,
                "leaf_hash": leaf_hashes[i.index].hex(),
                "kind": i.entry["kind"],
                "session": i.entry["session"]["id"],
                "occurred_at": i.entry["occurred_at"],
                "received_at": i.entry.get("received_at"),
                "sealed": i.index in sealed,
                "gen_time": None
                if i.gen_time is None
                else i.gen_time.isoformat().replace("+00:00", "Z"),
                "accuracy_s": sealed[i.index].accuracy_s if i.index in sealed else None,
            }
            for i in items
        ],
        "half_days": rows,
        "totals": totals,
        "controls": [f.to_json() for f in findings],
    }


def _zip(files: dict[str, bytes], now: dt.datetime) -> bytes:
    stamp = now.astimezone(dt.UTC).timetuple()[:6]
    buf = io.BytesIO()
    # Level 1: the files are small and mostly tokens and hashes; the higher levels took
    # noticeably longer for a year's trail and saved little (benchmarks/RESULTS.md).
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, files[name], compresslevel=1)
    return buf.getvalue()
