"""``horodate vault verify --data-dir DIR``: what the vault holds, recomputed; exit 0 only if
everything checks. (Registered by :mod:`horodate.commands.vault`.)"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def add_witness_options(p: argparse.ArgumentParser) -> None:
    """``--witness-vkey VKEY`` (repeatable) and ``--witness-quorum N``: the witnesses whose
    cosignatures are checked, and how many of them a checkpoint needs."""
    p.add_argument(
        "--witness-vkey",
        action="append",
        metavar="VKEY",
        help="a witness's cosignature/v1 verifier key (repeatable; default: the "
        "configuration's [[vault.witnesses]])",
    )
    p.add_argument(
        "--witness-quorum",
        type=int,
        metavar="N",
        help="cosignatures a checkpoint needs (default: half the witnesses, rounded up)",
    )


def witness_policy(args: argparse.Namespace, conf: dict[str, Any]) -> Any:
    """The flags' witnesses, else the configuration's; None when there are none."""
    from daemon.witnessing import Policy, from_table

    if args.witness_vkey:
        return Policy.of(args.witness_vkey, args.witness_quorum)
    configured = from_table(conf).policy
    if not configured.verifiers:
        return None
    return Policy.checked(configured.verifiers, args.witness_quorum or configured.quorum)


def run(args: argparse.Namespace) -> int:
    from daemon.errors import VaultError
    from daemon.verify import verify_vault

    started = time.monotonic()
    try:
        witnesses = witness_policy(args, getattr(args, "witness_table", {}))
    except VaultError as e:
        print(f"vault verify: {e}", file=sys.stderr)
        return 2

    def progress(text: str) -> None:
        print(f"vault verify: {text}", file=sys.stderr, flush=True)

    ca_pem = args.tsa_ca.read_bytes() if getattr(args, "tsa_ca", None) else None
    report = verify_vault(args.data_dir, ca_pem=ca_pem, progress=progress, witnesses=witnesses)
    elapsed = time.monotonic() - started
    if getattr(args, "json", False):
        doc = {
            "ok": report.ok,
            "failure": report.failure,
            "entries": report.entries,
            "sealed": report.sealed,
            "pending": report.pending,
            "nodes": report.nodes,
            "checkpoints": report.checkpoints,
            "journal_records": report.journal_records,
            "witness_policy": report.witness_policy,
            "cosignatures": report.cosignatures,
            "witnessed_checkpoints": report.witnessed,
            "warnings": report.warnings,
            "seconds": round(elapsed, 3),
        }
        print(json.dumps(doc, ensure_ascii=False))
    else:
        if report.ok:
            for line in report.lines():
                print(line)
            for w in report.warnings:
                print(f"note: {w}")
            rate = report.entries / elapsed if elapsed > 0 else 0.0
            print(
                f"vault verify: OK ({report.entries} entries in {elapsed:.1f} s, "
                f"{rate:,.0f} entries/s)"
            )
        else:
            print(f"vault verify: FAILED: {report.failure}", file=sys.stderr)
    return 0 if report.ok else 1
