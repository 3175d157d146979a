"""``horodate audit``: an audit trail for a funder's auditor, and its verification."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from horodate.commands.vault import DEFAULT_TSA
from horodate.commands.vault_settings import DEFAULT_DATA_DIR

_CONFIG_HELP = "the vault's TOML configuration: its witnesses (the trail carries their keys)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="audit trails: create one from the vault, verify one offline",
        description="An audit trail ('piste d'audit') is a zip a funder's auditor checks "
        "without trusting us: the entries in scope, their disclosures, tokens and inclusion "
        "proofs, the signed checkpoint, the TSA chain, a report, and VERIFY.md.",
    )
    tools = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    create = tools.add_parser("create", help="write the audit trail of one scope to a zip")
    create.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the vault's data")
    create.add_argument("--config", type=Path, help=_CONFIG_HELP)
    create.add_argument("--establishment", required=True, metavar="CODE")
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--ine", help="a student, with --birth-date")
    who.add_argument("--session", metavar="ID")
    who.add_argument("--training-action", metavar="NAME")
    create.add_argument("--birth-date", metavar="YYYY-MM-DD")
    create.add_argument("--from", dest="period_from", metavar="YYYY-MM-DD", help="first day")
    create.add_argument("--to", dest="period_to", metavar="YYYY-MM-DD", help="last day")
    create.add_argument("--funder", help="who asks, e.g. 'OPCO Atlas' (in the report)")
    create.add_argument("--file-reference", help="the funder's file number (in the report)")
    create.add_argument("--tsa-ca", type=Path, metavar="PEM", help="the roots of the tokens")
    create.add_argument(
        "--tsa",
        action="append",
        metavar="URL",
        help=f"the TSA time-stamping report.pdf (default {DEFAULT_TSA}); several allowed",
    )
    create.add_argument("--lang", choices=["fr", "en"], default="fr", help="of report.pdf")
    create.add_argument("-o", "--output", type=Path, required=True, metavar="BUNDLE.zip")
    create.set_defaults(func=run_create)
    cert = tools.add_parser(
        "certificate",
        help="the certificate of completion of a trainee in an action (signed PDF)",
        description="The Ministry of Labour's 'certificat de réalisation', filled from the "
        "vault: the hours the trainee actually attended in the action, the trainee's audit "
        "trail attached to the PDF and referenced by its SHA-256; signed like report.pdf.",
    )
    cert.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the vault's data")
    cert.add_argument("--config", type=Path, help=_CONFIG_HELP)
    cert.add_argument("--establishment", required=True, metavar="CODE")
    cert.add_argument("--ine", required=True, help="the trainee, with --birth-date")
    cert.add_argument("--birth-date", required=True, metavar="YYYY-MM-DD")
    cert.add_argument("--training-action", required=True, metavar="NAME")
    cert.add_argument("--from", dest="period_from", metavar="YYYY-MM-DD", help="first day")
    cert.add_argument("--to", dest="period_to", metavar="YYYY-MM-DD", help="last day")
    cert.add_argument("--provider", required=True, metavar="NAME", help="who provides the action")
    cert.add_argument("--nda", metavar="NUMBER", help="the provider's numéro de déclaration")
    cert.add_argument("--signatory", help="who signs for the provider, e.g. 'M. Martin, directeur'")
    cert.add_argument("--place", help="'Fait à …'")
    cert.add_argument(
        "--nature",
        choices=["formation", "bilan", "vae", "apprentissage"],
        default="formation",
        help="the model's box: training (default), skills assessment, VAE, apprenticeship",
    )
    cert.add_argument("--funder", help="who pays, e.g. 'OPCO Atlas'")
    cert.add_argument("--file-reference", help="the funder's file number")
    cert.add_argument("--tsa-ca", type=Path, metavar="PEM", help="the roots of the tokens")
    cert.add_argument("--tsa", action="append", metavar="URL", help="the TSA time-stamping it")
    cert.add_argument("--lang", choices=["fr", "en"], default="fr")
    cert.add_argument("-o", "--output", type=Path, required=True, metavar="CERTIFICATE.pdf")
    cert.add_argument("--bundle", type=Path, metavar="BUNDLE.zip",
                      help="also write the attached audit trail here")  # fmt: skip
    cert.set_defaults(func=run_certificate)
    verify = tools.add_parser(
        "verify", help="check an audit trail offline; exit 0 only if all holds"
    )
    verify.add_argument("bundle", type=Path, metavar="BUNDLE.zip")
    verify.add_argument(
        "--ca", type=Path, metavar="PEM", help="the TSA's roots (default: the bundle's)"
    )
    verify.add_argument(
        "--vkey", type=Path, help="the vault's verifier key (default: the bundle's)"
    )
    verify.add_argument(
        "--witness-vkey",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness's cosignature/v1 verifier key, as its operator publishes it "
        "(repeatable): the checkpoint must carry the quorum's cosignatures",
    )
    verify.add_argument(
        "--witness-quorum",
        type=int,
        metavar="N",
        help="how many of those witnesses must have cosigned (default: half, rounded up)",
    )
    verify.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="check the entries in N processes (default: one per CPU on large bundles)",
    )
    verify.set_defaults(func=run_verify)


def _date(text: str | None, what: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise SystemExit(
            f"horodate audit create: {what} {text!r} is not a YYYY-MM-DD date"
        ) from None


def _request(args: argparse.Namespace) -> Any:
    from daemon.audit.bundle import AuditRequest
    from daemon.audit.scope import Scope

    scope = Scope(
        establishment=args.establishment,
        ine=args.ine,
        birth_date=args.birth_date,
        session=getattr(args, "session", None),
        training_action=args.training_action,
        period_from=_date(args.period_from, "--from"),
        period_to=_date(args.period_to, "--to"),
    )
    return AuditRequest(
        scope=scope,
        requested_by="command line",
        funder=args.funder,
        file_reference=args.file_reference,
        language=args.lang,
    )


def _produce(args: argparse.Namespace, what: str, make: Any) -> int:
    """Open the vault, cover it with a checkpoint, ``make(store, keys, ca_pem, build)`` the
    document (``build(request)`` gives a bundle), write it, journal the trail it holds."""
    from daemon.audit.bundle import build_bundle
    from daemon.audit.pdf_signing import report_maker
    from daemon.clock import utc_now
    from daemon.errors import VaultError
    from daemon.keys import load_existing
    from daemon.store import Store
    from daemon.witnessing import from_table
    from horodate.commands.vault_settings import load_vault_table

    try:
        keys = load_existing(args.data_dir / "keys")
        ca_path = args.tsa_ca or args.data_dir / "keys" / "tsa-ca.pem"
        ca_pem = ca_path.read_bytes()
        tsa = args.tsa or [DEFAULT_TSA]
        witnesses = from_table(load_vault_table(args.config)).policy
        store = Store.open(args.data_dir)
        try:
            _cover_with_a_checkpoint(store, keys)
            pdf = report_maker(args.data_dir / "keys", keys.signer.name, tsa)

            def build(request: Any) -> Any:
                return build_bundle(
                    store.reader(), keys, request, ca_pem=ca_pem, now=utc_now(), render_pdf=pdf,
                    witnesses=witnesses,
                )  # fmt: skip

            request, bundle, document = make(keys, tsa, build)
            args.output.write_bytes(document)
            _journal(store, keys, request, bundle.sha256, bundle.entries, what)
        finally:
            store.close()
    except (VaultError, OSError, ValueError) as e:  # ValueError: a malformed --config
        print(f"horodate audit {args.audit_command}: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.output}: {bundle.entries} entries, {bundle.findings} control finding(s), "
        f"{'trail ' if what != 'audit create' else ''}SHA-256 {bundle.sha256}"
    )
    return 0


def run_create(args: argparse.Namespace) -> int:
    def make(keys: Any, tsa: list[str], build: Any) -> tuple[Any, Any, bytes]:
        request = _request(args)
        bundle = build(request)
        return request, bundle, bundle.data

    return _produce(args, "audit create", make)


def run_certificate(args: argparse.Namespace) -> int:
    from daemon.audit.certificate import CertificateRequest, Provider, make_certificate
    from daemon.audit.pdf_signing import certificate_maker
    from daemon.clock import utc_now

    def make(keys: Any, tsa: list[str], build: Any) -> tuple[Any, Any, bytes]:
        provider = Provider(name=args.provider, nda=args.nda, signatory=args.signatory,
                            place=args.place)  # fmt: skip
        request = CertificateRequest(audit=_request(args), provider=provider, nature=args.nature)
        render = certificate_maker(args.data_dir / "keys", keys.signer.name, tsa)
        certificate = make_certificate(request, build, render, utc_now())
        if args.bundle is not None:
            args.bundle.write_bytes(certificate.bundle.data)
        facts = certificate.facts
        print(f"{facts['trainee']['ine']} in {facts['training_action']}: "
              f"{facts['hours_attended']:g} h attended of {facts['hours_planned']:g} h planned, "
              f"{facts['first_day']} to {facts['last_day']}")  # fmt: skip
        return request.audit, certificate.bundle, certificate.pdf

    return _produce(args, "audit certificate", make)


def _cover_with_a_checkpoint(store: Any, keys: Any) -> None:
    """Sign a checkpoint of the whole log now if the latest does not cover it (the vault's
    daemon makes one every few seconds; this is for a vault that is not running)."""
    from daemon import merkle
    from daemon.clock import utc_now, utc_text
    from daemon.note import Checkpoint, sign_checkpoint
    from daemon.sequencer import Sequencer
    from daemon.store import CheckpointRow, node_lookup

    reader = store.reader()
    size = reader.size()
    latest = reader.latest_checkpoint()
    if latest is not None and latest.size >= size:
        return

    note = sign_checkpoint(
        Checkpoint(keys.signer.name, size, merkle.root(size, node_lookup(reader))), keys.signer
    )
    row = CheckpointRow(size=size, note=note, token=None, created_at=utc_text(utc_now()))
    with store.transaction() as w:
        Sequencer().checkpoint(row)(w)


def _journal(store: Any, keys: Any, request: Any, sha256: str, entries: int, action: str) -> None:
    from daemon.audit.bundle import audit_record
    from daemon.journal import append

    record = audit_record(
        request, keys.lookup_secret, sha256, entries, actor="command line", action=action
    )
    with store.transaction() as w:
        append(w, record)


def run_verify(args: argparse.Namespace) -> int:
    from daemon.audit.verify import verify_bundle

    try:
        data = args.bundle.read_bytes()
        ca = args.ca.read_bytes() if args.ca else None
        vkey = args.vkey.read_text() if args.vkey else None
    except OSError as e:
        print(f"horodate audit verify: {e}", file=sys.stderr)
        return 2

    def progress(done: int, total: int) -> None:
        if total >= 200 and (done % 200 == 0 or done == total):
            print(f"  … {done}/{total} entries checked", file=sys.stderr, flush=True)

    report = verify_bundle(data, ca_pem=ca, vkey=vkey, progress=progress,
                           witness_vkeys=args.witness_vkey, witness_quorum=args.witness_quorum,
                           processes=args.processes)  # fmt: skip
    for good, what in report.checks:
        print(("ok    " if good else "FAIL  ") + what)
    for note in report.notes:
        print(f"note  {note}")
    if report.pending:
        print(f"note  {len(report.pending)} entries not sealed yet: {report.pending[:20]}")
    if ca is None:
        print("note  tokens checked against the bundle's own roots (certs/ca.pem): give --ca "
              "the TSA's published roots to prove who time-stamped")  # fmt: skip
    print("bundle verifies" if report.ok else "bundle does NOT verify")
    return 0 if report.ok else 1
