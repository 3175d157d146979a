"""``horodate vault backup|restore`` and ``horodate appliance backup|restore``: one pair of
tools for each daemon, the same words and exit status (:mod:`horodate.backup`). Registered
by :mod:`horodate.commands.vault` and :mod:`horodate.commands.appliance`.

Exit status: 0 done (the copy checks, or the backup was restored); 1 refused or failed (the
copy does not check, the backup does not match its manifest or does not check, the target
is in use or not empty); 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Common = Callable[[argparse.ArgumentParser], None]
KindOf = Callable[[argparse.Namespace], tuple[Any, Path]]  # (horodate.backup.Kind, data dir)


def register(
    tools: argparse._SubParsersAction[argparse.ArgumentParser],
    what: str,
    common: Common,
    kind_of: KindOf,
) -> None:
    backup = tools.add_parser(
        "backup",
        help=f"a consistent, checked copy of the {what}'s data while it runs",
        description=f"Copy the {what}'s state and keys into DEST (new or empty), check the "
        "copy as a restore would, and write DEST/MANIFEST.json: each file's size, mode and "
        "SHA-256, and what the copy holds.",
    )
    backup.add_argument("dest", type=Path, metavar="DEST", help="a new or empty directory")
    common(backup)
    backup.set_defaults(func=lambda args: run_backup(args, what, kind_of))

    restore = tools.add_parser(
        "restore",
        help=f"put a backup in place of the {what}'s data (refused unless it checks)",
        description=f"Check SRC against its manifest and as the {what} would, then install it "
        "as the data directory. Refused while the daemon runs there, and on a non-empty "
        "directory without --force (which keeps the old one, renamed).",
    )
    restore.add_argument("src", type=Path, metavar="SRC", help="a backup directory")
    common(restore)
    restore.add_argument(
        "--force",
        action="store_true",
        help="replace a non-empty data directory (set aside as DIR.before-restore-TIME)",
    )
    restore.set_defaults(func=lambda args: run_restore(args, what, kind_of))


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_backup(args: argparse.Namespace, what: str, kind_of: KindOf) -> int:
    from horodate.backup import BackupError, backup

    try:
        kind, data_dir = kind_of(args)
        done = backup(kind, data_dir, args.dest, now=dt.datetime.now(dt.UTC), say=_say)
    except (BackupError, OSError, ValueError) as e:
        print(f"horodate {what} backup: {e}", file=sys.stderr)
        return 1
    for line in done.verdict.lines:
        print(line)
    for warning in [*done.verdict.warnings, *done.warnings]:
        print(f"note: {warning}")
    size = sum(f.size for f in done.manifest.files)
    if not done.verdict.ok:
        print(
            f"horodate {what} backup: the copy in {args.dest} does NOT check: "
            f"{done.verdict.failure}",
            file=sys.stderr,
        )
        return 1
    print(
        f"{what} backup: {data_dir} copied into {args.dest}: {len(done.manifest.files)} files, "
        f"{size / 2**20:.1f} MiB, {_facts(done.manifest.facts)}; the copy checks "
        f"(manifest: {args.dest / 'MANIFEST.json'})"
    )
    return 0


def run_restore(args: argparse.Namespace, what: str, kind_of: KindOf) -> int:
    from horodate.backup import BackupError, restore

    try:
        kind, data_dir = kind_of(args)
        done = restore(
            kind, args.src, data_dir, force=args.force, now=dt.datetime.now(dt.UTC), say=_say
        )
    except (BackupError, OSError, ValueError) as e:
        print(f"horodate {what} restore: refused: {e}", file=sys.stderr)
        return 1
    for line in done.verdict.lines:
        print(line)
    for warning in done.verdict.warnings:
        print(f"note: {warning}")
    for line in done.lines:
        print(line)
    if done.aside is not None:
        print(f"the directory that was there is kept as {done.aside}")
    print(
        f"{what} restore: the backup of {done.manifest.created_at} "
        f"({_facts(done.manifest.facts)}) is now {data_dir}"
    )
    return 0


def _facts(facts: dict[str, Any]) -> str:
    if "tree_size" in facts:
        return f"{facts['tree_size']:,} entries, checkpoint at {facts['checkpoint_size']}"
    return f"{facts.get('issuance_records', 0):,} issuance records"
