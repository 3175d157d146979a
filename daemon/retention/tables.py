"""The retention tables (schema v3) and the purge's reads and deletes, in portable SQL.

Kept beside :mod:`daemon.store` rather than in it: the store is the log's, this is the
one place that deletes, and a reviewer should find every DELETE of the vault in one file.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from daemon.clock import parse_time
from daemon.retention.rules import Disclosure, Hold, Period
from daemon.store import wrap


class RetentionTables:
    """Reads and writes of retention over one connection (the writer's to change them)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def _all(self, sql: str, *args: Any) -> list[Any]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise wrap(e) from e

    def _run(self, sql: str, *args: Any) -> int:
        try:
            return self.conn.execute(sql, args).rowcount
        except sqlite3.Error as e:
            raise wrap(e) from e

    # -- rules and holds ----------------------------------------------------------------

    def rules(self) -> dict[str, tuple[Period, str, str]]:
        """Each establishment's own period, when and by whom it was set."""
        rows = self._all("SELECT establishment, years, days, set_at, set_by FROM retention_rules")
        return {r[0]: (Period(years=r[1], days=r[2]), r[3], r[4]) for r in rows}

    def set_rule(self, establishment: str, period: Period | None, at: str, by: str) -> None:
        """``period`` None: back to the default."""
        self._run("DELETE FROM retention_rules WHERE establishment = ?", establishment)
        if period is not None:
            self._run("INSERT INTO retention_rules VALUES (?, ?, ?, ?, ?)", establishment,
                      period.years, period.days, at, by)  # fmt: skip

    def holds(self, *, active_only: bool = True) -> list[Hold]:
        sql = "SELECT * FROM legal_holds"
        if active_only:
            sql += " WHERE released_at IS NULL"
        rows = self._all(sql + " ORDER BY id")
        return [Hold(r[0], r[1], None if r[2] is None else bytes(r[2]), *r[3:]) for r in rows]

    def place_hold(
        self, establishment: str, lookup: bytes | None, reason: str, at: str, by: str
    ) -> int:
        cursor = self.conn.execute(
            "INSERT INTO legal_holds (establishment, lookup, reason, placed_at, placed_by) "
            "VALUES (?, ?, ?, ?, ?)",
            (establishment, lookup, reason, at, by),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def release_hold(self, hold_id: int, at: str) -> bool:
        return self._run("UPDATE legal_holds SET released_at = ? WHERE id = ? AND released_at "
                         "IS NULL", at, hold_id) == 1  # fmt: skip

    # -- what the purge reads -----------------------------------------------------------

    def establishments(self) -> list[str]:
        """The establishments with personal data still held."""
        return [r[0] for r in self._all("SELECT DISTINCT establishment FROM disclosures")]

    def session_ends(self, establishment: str) -> dict[str, dt.datetime]:
        """Each session's end at its latest version."""
        rows = self._all(
            "SELECT s.session_id, s.end_at FROM sessions s JOIN (SELECT session_id, MAX(idx) "
            "AS m FROM sessions WHERE establishment = ? GROUP BY session_id) l ON s.idx = l.m",
            establishment,
        )
        return {r[0]: parse_time(r[1]) for r in rows}

    def disclosures(self, establishment: str) -> Iterator[Disclosure]:
        try:
            cursor = self.conn.execute(
                "SELECT d.idx, d.lookup, e.session_id FROM disclosures d JOIN entries e "
                "ON e.idx = d.idx WHERE d.establishment = ? ORDER BY d.idx",
                (establishment,),
            )
            for idx, lookup, sid in cursor:
                yield Disclosure(idx, None if lookup is None else bytes(lookup), sid)
        except sqlite3.Error as e:
            raise wrap(e) from e

    # -- what the purge destroys --------------------------------------------------------

    def destroy(self, establishment: str, indices: Sequence[int]) -> int:
        """Delete the disclosures of ``indices``, and the body hashes of the deposits they
        came in (see :mod:`daemon.schema`); the number of disclosures deleted."""
        marks = ",".join("?" * len(indices))
        gone = self._run(
            f"DELETE FROM disclosures WHERE establishment = ? AND idx IN ({marks})",
            establishment,
            *indices,
        )
        deposits: set[tuple[str, str]] = set()
        for idx in indices:  # deposits cover the log densely: the one starting at or before
            deposits.update(map(tuple, self._all(
                "SELECT scope, key FROM idempotency WHERE first_idx <= ? ORDER BY first_idx "
                "DESC LIMIT 1", idx,
            )))  # fmt: skip
        for scope, key in sorted(deposits):
            self._run("DELETE FROM idempotency_bodies WHERE scope = ? AND key = ?", scope, key)
        return gone
