"""Which entries an audit request covers, within one establishment.

Three kinds of request (DESIGN.md, the audit bundle): a student (INE + birth date, found by
the keyed lookup, across years), a session, or a training action; each optionally bounded
to a period of session dates (inclusive, the session's own local date). A student's request
may also name a training action, to keep to that action's sessions (what a certificate of
completion attests).

A student's trail holds the student's own entries and, for each session they appear in,
the session's entries about nobody in particular (roll call opened, the trainer's
counter-signature, a move, a cancellation); other students' entries stay out. Every
correction of an entry in scope is in scope too, transitively.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from daemon.errors import VaultError
from daemon.leaf import student_lookup
from daemon.records import NO_STUDENT, parse_date
from daemon.store import EntryRow, Reader

_ALL = 10**12  # "no limit" for Reader.find


class ScopeError(VaultError):
    """A request that does not name one scope, or names it badly."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    establishment: str
    ine: str | None = None
    birth_date: str | None = None
    session: str | None = None
    training_action: str | None = None
    period_from: dt.date | None = None
    period_to: dt.date | None = None  # inclusive

    def __post_init__(self) -> None:
        student = self.ine is not None or self.birth_date is not None
        named = [student, self.session is not None, self.training_action is not None]
        if sum(named) != 1 and named != [True, False, True]:
            raise ScopeError(
                "name one scope: a student (ine and birth_date), a session, or a training "
                "action (or a student and a training action)"
            )
        if (self.ine is None) != (self.birth_date is None):
            raise ScopeError("a student is named by ine and birth_date together")
        if self.birth_date is not None and parse_date(self.birth_date) is None:
            raise ScopeError(f"birth_date {self.birth_date!r} is not a YYYY-MM-DD date")
        if self.period_from and self.period_to and self.period_to < self.period_from:
            raise ScopeError("the period ends before it starts")

    @property
    def kind(self) -> str:
        if self.ine is not None:
            return "student"
        return "session" if self.session is not None else "training_action"

    def describe(self) -> dict[str, Any]:
        """The scope as the bundle's report states it (the student's data included: the
        report is for the auditor, who asked for that student)."""
        out: dict[str, Any] = {"establishment": self.establishment, "kind": self.kind}
        if self.ine is not None:
            out["student"] = {"ine": self.ine, "birth_date": self.birth_date}
        if self.session is not None:
            out["session"] = self.session
        if self.training_action is not None:
            out["training_action"] = self.training_action
        out["from"] = None if self.period_from is None else self.period_from.isoformat()
        out["to"] = None if self.period_to is None else self.period_to.isoformat()
        return out

    def journal_text(self, lookup_secret: bytes) -> str:
        """The scope as the journal keeps it: a student by the keyed lookup, not by INE (the
        journal outlives the personal data it must not hold)."""
        if self.ine is not None and self.birth_date is not None:
            who = student_lookup(lookup_secret, self.establishment, self.ine, self.birth_date)
            what = f"student {who.hex()[:16]}"
            if self.training_action is not None:
                what += f" in training action {self.training_action}"
        elif self.session is not None:
            what = f"session {self.session}"
        else:
            what = f"training action {self.training_action}"
        period = f" from {self.period_from or '…'} to {self.period_to or '…'}"
        return what + (period if self.period_from or self.period_to else "")

    def covers(self, session: dict[str, Any]) -> bool:
        """Whether a session is in the scope's period (and action, when it names one)."""
        if self.training_action is not None and session["training_action"] != self.training_action:
            return False
        return self.in_period(session["start"])

    def in_period(self, session_start: str) -> bool:
        day = dt.datetime.fromisoformat(session_start).date()
        if self.period_from is not None and day < self.period_from:
            return False
        return self.period_to is None or day <= self.period_to


def _session_of(row: EntryRow) -> dict[str, Any]:
    doc = json.loads(row.leaf)
    session: dict[str, Any] = doc["session"]
    return session


def select(reader: Reader, scope: Scope, lookup_secret: bytes) -> list[int]:
    """The indices in scope, in log order."""
    est = scope.establishment
    chosen: set[int] = set()
    if scope.ine is not None and scope.birth_date is not None:
        lookup = student_lookup(lookup_secret, est, scope.ine, scope.birth_date)
        sessions: set[str] = set()
        for row in reader.find(est, lookup=lookup, limit=_ALL):
            if scope.covers(_session_of(row)):
                chosen.add(row.idx)
                sessions.add(row.session_id)
        for sid in sorted(sessions):
            for row in reader.find(est, session_id=sid, limit=_ALL):
                if row.kind in NO_STUDENT and scope.covers(_session_of(row)):
                    chosen.add(row.idx)
    elif scope.session is not None:
        for row in reader.find(est, session_id=scope.session, limit=_ALL):
            if scope.in_period(_session_of(row)["start"]):
                chosen.add(row.idx)
    else:
        for row in reader.establishment_entries(est):
            if scope.covers(_session_of(row)):
                chosen.add(row.idx)
    frontier = list(chosen)
    while frontier:  # corrections of what is in scope, and of those corrections
        more = [c for i in frontier for c in reader.corrections_of(i) if c not in chosen]
        chosen.update(more)
        frontier = more
    return sorted(chosen)
