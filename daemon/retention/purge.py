"""The purge: destroy the personal data whose retention ended, so that nothing of it
remains — not in the tables, not in the WAL, not in free pages — while every leaf, token,
checkpoint and proof still verifies.

It works in batches, each one transaction that deletes the disclosures of a few hundred
entries (and the body hashes of the deposits they came in) and journals what it destroyed,
why and under which rule. A purge killed at any moment has destroyed whole batches, each
journaled; run again, it plans from what is left and finishes. A hold placed or a rule
changed by another process while it runs makes it plan again before its next batch.

Then the WAL is checkpointed and truncated: with ``secure_delete`` on (the store's
connections), SQLite overwrote the deleted cells and freed pages with zeros, and the
checkpoint carries those pages into the database file; truncating the WAL drops the frames
that still held the old pages. What the file system keeps of freed blocks is below the
database: full-disk encryption is the answer there (docs/retention.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from daemon.clock import utc_text
from daemon.journal import JournalRecord, append
from daemon.retention.rules import DEFAULT_PERIOD, Plan, ranges
from daemon.retention.rules import plan as plan_one
from daemon.retention.tables import RetentionTables
from daemon.store import Store

log = logging.getLogger("horodate.vault.retention")

ACTION: Final = "retention purge"
BATCH: Final = 500
_WAL_DEADLINE_S: Final = 30.0
_SESSIONS_NAMED: Final = 20  # a journal record names at most this many sessions


@dataclass(slots=True)
class PurgeResult:
    plans: list[Plan]
    destroyed: int = 0
    batches: int = 0
    wal_truncated: bool | None = None  # None: a dry run
    replanned: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def due(self) -> int:
        return sum(len(p.destroy) for p in self.plans)


def plan_all(tables: RetentionTables, now: dt.datetime) -> list[Plan]:
    """Every establishment's purge at ``now``."""
    rules = tables.rules()
    holds = tables.holds()
    out = []
    for est in sorted(tables.establishments()):
        period = rules[est][0] if est in rules else DEFAULT_PERIOD
        out.append(
            plan_one(est, period, tables.disclosures(est), tables.session_ends(est), holds, now)
        )
    return out


def _record(
    p: Plan, batch: list[int], sessions: list[str], now: dt.datetime, actor: str
) -> JournalRecord:
    named = ", ".join(sessions[:_SESSIONS_NAMED])
    if len(sessions) > _SESSIONS_NAMED:
        named += f" and {len(sessions) - _SESSIONS_NAMED} more"
    return JournalRecord(
        at=utc_text(now),
        actor=actor,
        role="admin",
        establishment=p.establishment,
        action=ACTION,
        target=(
            f"destroyed the disclosures of entries {ranges(batch)} ({len(batch)}), sessions "
            f"{named}: retention ended ({p.period.text()} from the end of the session)"
        ),
        outcome="ok",
        status=0,
    )


def purge(
    store: Store,
    now: Callable[[], dt.datetime],
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    actor: str = "retention purge",
    progress: Callable[[int, int], None] | None = None,
) -> PurgeResult:
    """Destroy what :func:`plan_all` says is due (nothing with ``dry_run``)."""
    tables = RetentionTables(store.writer.conn)
    result = PurgeResult(plan_all(tables, now()))
    if dry_run:
        return result
    total = result.due
    while True:
        seen = (tables.rules(), tables.holds())
        replan = False
        for p in result.plans:
            todo = list(p.destroy)
            while todo and not replan:
                chunk, todo = todo[:batch], todo[batch:]
                with store.transaction() as w:
                    if (tables.rules(), tables.holds()) != seen:
                        replan = True  # a hold or a rule changed meanwhile: plan again
                        break
                    indices = [d.idx for d in chunk]
                    tables.destroy(p.establishment, indices)
                    sessions = sorted({d.session_id for d in chunk})
                    append(w, _record(p, indices, sessions, now(), actor))
                result.destroyed += len(chunk)
                result.batches += 1
                if progress is not None:
                    progress(result.destroyed, total)
            if replan:
                break
        if not replan:
            break
        result.replanned += 1
        log.info("retention: a hold or a rule changed during the purge; planning again")
        result.plans = plan_all(tables, now())
        total = result.destroyed + result.due
    result.wal_truncated = truncate_wal(store)
    if not result.wal_truncated:
        result.notes.append(
            "the WAL could not be truncated (a reader kept it busy): the destroyed data is "
            "gone from the tables, but old WAL frames may still hold it — run the purge again"
        )
    return result


def truncate_wal(store: Store, deadline_s: float = _WAL_DEADLINE_S) -> bool:
    """Checkpoint the whole WAL into the database and truncate it to zero bytes; False if
    readers kept it busy past ``deadline_s`` (SQLite's busy handler waits in each try)."""
    end = time.monotonic() + deadline_s
    while True:
        busy, _, _ = store.writer.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy == 0:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)  # a retry pause, not a wait for a test
