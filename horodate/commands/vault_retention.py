"""``horodate vault retention show|set|hold|release`` and ``horodate vault purge``: how long
personal data is kept, the legal holds that suspend it, and the purge that destroys it when
its time is up (:mod:`daemon.retention`). Every change and every destruction is journaled.
(Registered by :mod:`horodate.commands.vault`.)"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Common = Callable[[argparse.ArgumentParser], None]


def register(tools: argparse._SubParsersAction[argparse.ArgumentParser], common: Common) -> None:
    retention = tools.add_parser(
        "retention",
        help="retention periods and legal holds",
        description="Personal data is kept for the establishment's period from the end of "
        "the session (5 years by default), then destroyed by 'horodate vault purge'; a legal "
        "hold on an establishment or a student suspends it.",
    )
    actions = retention.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="each establishment's period, holds, and what is due")
    common(show)
    show.add_argument("--json", action="store_true", help="one JSON object per establishment")
    show.set_defaults(func=run_show)

    set_ = actions.add_parser("set", help="an establishment's retention period")
    common(set_)
    set_.add_argument("--establishment", required=True, metavar="CODE")
    period = set_.add_mutually_exclusive_group(required=True)
    period.add_argument("--years", type=int, help="years from the end of the session")
    period.add_argument("--days", type=int, help="days from the end of the session")
    period.add_argument("--default", action="store_true", help="back to the default (5 years)")
    set_.add_argument("--by", default="command line", help="who decides (journaled)")
    set_.set_defaults(func=run_set)

    hold = actions.add_parser("hold", help="place a legal hold on an establishment or a student")
    common(hold)
    hold.add_argument("--establishment", required=True, metavar="CODE")
    hold.add_argument("--ine", help="a student, with --birth-date (else the establishment)")
    hold.add_argument("--birth-date", metavar="YYYY-MM-DD")
    hold.add_argument("--reason", required=True, help="e.g. the court case or the funder's file")
    hold.add_argument("--by", default="command line", help="who places it (journaled)")
    hold.set_defaults(func=run_hold)

    release = actions.add_parser("release", help="release a legal hold (by its number)")
    common(release)
    release.add_argument("--id", type=int, required=True, help="the hold's number (see show)")
    release.add_argument("--by", default="command line", help="who releases it (journaled)")
    release.set_defaults(func=run_release)

    purge = tools.add_parser(
        "purge",
        help="destroy the personal data whose retention ended (journaled)",
        description="Destroy the disclosures (personal data and the salts of their "
        "commitments) of the sessions whose retention ended, unless a legal hold keeps them; "
        "leaves, tokens, checkpoints and proofs stay and still verify. Safe to interrupt: "
        "run again, it resumes.",
    )
    common(purge)
    purge.add_argument("--dry-run", action="store_true", help="say what would go, destroy nothing")
    purge.add_argument("--batch", type=int, default=500, help="entries per transaction")
    purge.set_defaults(func=run_purge)


def _resolve(args: argparse.Namespace) -> Path:
    """The data directory: --data-dir, else the configuration's, else the default."""
    from horodate.commands.vault_settings import data_dir_of, load_vault_table

    path: Path = data_dir_of(args, load_vault_table(args.config))
    return path


@contextmanager
def _opened(args: argparse.Namespace) -> Iterator[Any]:
    from daemon.store import Store

    args.data_dir = _resolve(args)
    store = Store.open(args.data_dir)
    try:
        yield store
    finally:
        store.close()


def _fail(args: argparse.Namespace, e: Exception) -> int:
    what = " ".join(
        x for x in ("vault", args.vault_command, getattr(args, "retention_command", None)) if x
    )
    print(f"horodate {what}: {e}", file=sys.stderr)
    return 1


def _journal(w: Any, by: str, establishment: str | None, action: str, target: str) -> None:
    from daemon.clock import utc_now, utc_text
    from daemon.journal import JournalRecord, append

    append(
        w,
        JournalRecord(
            at=utc_text(utc_now()),
            actor=by,
            role="admin",
            establishment=establishment,
            action=action,
            target=target,
            outcome="ok",
            status=0,
        ),
    )


def run_show(args: argparse.Namespace) -> int:
    from daemon.clock import utc_now
    from daemon.errors import VaultError
    from daemon.retention.purge import plan_all
    from daemon.retention.rules import DEFAULT_PERIOD
    from daemon.retention.tables import RetentionTables

    try:
        with _opened(args) as store:
            tables = RetentionTables(store.writer.conn)
            rules, holds = tables.rules(), tables.holds()
            plans = {p.establishment: p for p in plan_all(tables, utc_now())}
    except (VaultError, OSError) as e:
        return _fail(args, e)
    names = sorted(set(plans) | set(rules) | {h.establishment for h in holds})
    for est in names:
        period, set_at, set_by = rules.get(est, (DEFAULT_PERIOD, None, None))
        mine = [h for h in holds if h.establishment == est]
        p = plans.get(est)
        doc: dict[str, Any] = {
            "establishment": est,
            "period": period.text(),
            "default": est not in rules,
            "set_at": set_at,
            "set_by": set_by,
            "holds": [
                {
                    "id": h.id,
                    "on": "establishment" if h.lookup is None else f"student {h.lookup.hex()[:16]}",
                    "reason": h.reason,
                    "placed_at": h.placed_at,
                    "placed_by": h.placed_by,
                }
                for h in mine
            ],
            "due": 0 if p is None else len(p.destroy),
            "held": 0 if p is None else p.held,
        }
        if args.json:
            print(json.dumps(doc, ensure_ascii=False))
            continue
        own = "default" if doc["default"] else f"set {set_at} by {set_by}"
        print(
            f"{est}: {doc['period']} from the end of the session ({own}); "
            f"{doc['due']} entries' personal data due for destruction, {doc['held']} held"
        )
        for h in doc["holds"]:
            print(
                f"  hold {h['id']} on {h['on']}: {h['reason']} "
                f"(placed {h['placed_at']} by {h['placed_by']})"
            )
    if not names and not args.json:
        print("(no personal data held)")
    return 0


def run_set(args: argparse.Namespace) -> int:
    from daemon.clock import utc_now, utc_text
    from daemon.errors import VaultError
    from daemon.retention.rules import DEFAULT_PERIOD, Period
    from daemon.retention.tables import RetentionTables

    try:
        period = None if args.default else Period(years=args.years, days=args.days)
        with _opened(args) as store, store.transaction() as w:
            RetentionTables(w.conn).set_rule(
                args.establishment, period, utc_text(utc_now()), args.by
            )
            text = (period or DEFAULT_PERIOD).text() + (" (the default)" if period is None else "")
            _journal(
                w,
                args.by,
                args.establishment,
                "retention set",
                f"{text} from the end of the session",
            )
    except (VaultError, OSError) as e:
        return _fail(args, e)
    print(f"{args.establishment}: personal data kept {text} from the end of the session")
    return 0


def run_hold(args: argparse.Namespace) -> int:
    from daemon.clock import utc_now, utc_text
    from daemon.errors import VaultError
    from daemon.keys import load_existing
    from daemon.leaf import student_lookup
    from daemon.records import parse_date
    from daemon.retention.tables import RetentionTables

    if (args.ine is None) != (args.birth_date is None):
        return _fail(args, ValueError("a student is named by --ine and --birth-date together"))
    if args.birth_date is not None and parse_date(args.birth_date) is None:
        return _fail(args, ValueError(f"--birth-date {args.birth_date!r} is not YYYY-MM-DD"))
    try:
        lookup = None
        if args.ine is not None:
            keys = load_existing(_resolve(args) / "keys")
            lookup = student_lookup(
                keys.lookup_secret, args.establishment, args.ine, args.birth_date
            )
        with _opened(args) as store, store.transaction() as w:
            hold_id = RetentionTables(w.conn).place_hold(
                args.establishment, lookup, args.reason, utc_text(utc_now()), args.by
            )
            on = "the establishment" if lookup is None else f"student {lookup.hex()[:16]}"
            _journal(
                w,
                args.by,
                args.establishment,
                "retention hold",
                f"hold {hold_id} on {on}: {args.reason}",
            )
    except (VaultError, OSError) as e:
        return _fail(args, e)
    print(
        f"hold {hold_id} placed on {on} of {args.establishment}: nothing of it is purged "
        "until it is released"
    )
    return 0


def run_release(args: argparse.Namespace) -> int:
    from daemon.clock import utc_now, utc_text
    from daemon.errors import VaultError
    from daemon.retention.tables import RetentionTables

    try:
        with _opened(args) as store, store.transaction() as w:
            tables = RetentionTables(w.conn)
            hold = next((h for h in tables.holds() if h.id == args.id), None)
            if hold is None or not tables.release_hold(args.id, utc_text(utc_now())):
                raise ValueError(f"no active hold {args.id} (see 'vault retention show')")
            _journal(
                w,
                args.by,
                hold.establishment,
                "retention release",
                f"hold {hold.id} released ({hold.reason})",
            )
    except (VaultError, OSError, ValueError) as e:
        return _fail(args, e)
    print(f"hold {args.id} released: the next purge destroys what it kept, if due")
    return 0


def run_purge(args: argparse.Namespace) -> int:
    from daemon.clock import utc_now
    from daemon.errors import VaultError
    from daemon.retention.purge import purge

    def progress(done: int, total: int) -> None:
        print(
            f"vault purge: {done}/{total} entries' personal data destroyed",
            file=sys.stderr,
            flush=True,
        )

    if args.batch < 1:
        return _fail(args, ValueError("--batch must be at least 1"))
    try:
        with _opened(args) as store:
            result = purge(
                store, utc_now, dry_run=args.dry_run, batch=args.batch, progress=progress
            )
    except (VaultError, OSError) as e:
        return _fail(args, e)
    for p in result.plans:
        verb = "would destroy" if args.dry_run else "destroyed"
        sessions = len({d.session_id for d in p.destroy})
        line = (
            f"{p.establishment}: {verb} the personal data of {len(p.destroy)} entries "
            f"({sessions} session(s); {p.period.text()} from the end of the session)"
        )
        if p.held:
            line += f"; {p.held} kept by hold(s) {', '.join(map(str, p.held_by))}"
        print(line)
    if not args.dry_run:
        wal = "truncated" if result.wal_truncated else "NOT truncated"
        print(
            f"vault purge: {result.destroyed} entries' personal data destroyed in "
            f"{result.batches} journaled batch(es); WAL {wal}"
        )
    for note in result.notes:
        print(f"vault purge: {note}", file=sys.stderr)
    return 0 if result.wal_truncated is not False else 1
