"""``horodate vault verify --data-dir DIR``: what the vault holds, recomputed; exit 0 only if
everything checks. (Registered by :mod:`horodate.commands.vault`.)"""

from __future__ import annotations

import argparse
import json
import sys
import time


def run(args: argparse.Namespace) -> int:
    from daemon.verify import verify_vault

    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"vault verify: {text}", file=sys.stderr, flush=True)

    ca_pem = args.tsa_ca.read_bytes() if getattr(args, "tsa_ca", None) else None
    report = verify_vault(args.data_dir, ca_pem=ca_pem, progress=progress)
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
