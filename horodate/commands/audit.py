"""``horodate audit``: an audit trail for a funder's auditor, and its verification."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from horodate.commands.vault import DEFAULT_DATA_DIR, DEFAULT_TSA


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


def run_create(args: argparse.Namespace) -> int:
    from daemon.audit.bundle import AuditRequest, build_bundle
    from daemon.audit.pdf_signing import report_maker
    from daemon.audit.scope import Scope
    from daemon.clock import utc_now
    from daemon.errors import VaultError
    from daemon.keys import load_existing
    from daemon.store import Store

    try:
        scope = Scope(
            establishment=args.establishment,
            ine=args.ine,
            birth_date=args.birth_date,
            session=args.session,
            training_action=args.training_action,
            period_from=_date(args.period_from, "--from"),
            period_to=_date(args.period_to, "--to"),
        )
        keys = load_existing(args.data_dir / "keys")
        ca_path = args.tsa_ca or args.data_dir / "keys" / "tsa-ca.pem"
        ca_pem = ca_path.read_bytes()
        store = Store.open(args.data_dir)
        try:
            _cover_with_a_checkpoint(store, keys)
            request = AuditRequest(
                scope=scope,
                requested_by="command line",
                funder=args.funder,
                file_reference=args.file_reference,
                language=args.lang,
            )
            pdf = report_maker(args.data_dir / "keys", keys.signer.name, args.tsa or [DEFAULT_TSA])
            bundle = build_bundle(
                store.reader(), keys, request, ca_pem=ca_pem, now=utc_now(), render_pdf=pdf
            )
            args.output.write_bytes(bundle.data)
            _journal(store, keys, request, bundle.sha256, bundle.entries)
        finally:
            store.close()
    except (VaultError, OSError) as e:
        print(f"horodate audit create: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.output}: {bundle.entries} entries, {bundle.findings} control finding(s), "
        f"SHA-256 {bundle.sha256}"
    )
    return 0


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


def _journal(store: Any, keys: Any, request: Any, sha256: str, entries: int) -> None:
    from daemon.audit.bundle import audit_record
    from daemon.journal import GENESIS, link

    record = audit_record(request, keys.lookup_secret, sha256, entries, actor="command line")
    with store.transaction() as w:
        seq, head = w.journal_head()
        data = record.encode()
        w.add_journal(seq, data, link(head or GENESIS, data))


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

    report = verify_bundle(data, ca_pem=ca, vkey=vkey, progress=progress)
    for good, what in report.checks:
        print(("ok    " if good else "FAIL  ") + what)
    if report.pending:
        print(f"note  {len(report.pending)} entries not sealed yet: {report.pending[:20]}")
    if ca is None:
        print("note  tokens checked against the bundle's own roots (certs/ca.pem): give --ca "
              "the TSA's published roots to prove who time-stamped")  # fmt: skip
    print("bundle verifies" if report.ok else "bundle does NOT verify")
    return 0 if report.ok else 1
