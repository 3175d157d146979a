"""Retention, pure: how long an establishment keeps personal data, the holds that suspend
it, and which disclosures a purge destroys now.

A session's personal data (the disclosures of its entries: the students' INE, birth dates
and names, the trainer's and authors' names, and the salts that open the leaves'
commitments) is kept for the establishment's period from the end of the session — five
years unless it set another, in years or in days (some funders ask six or ten years) —
then destroyed; the leaves, tokens, checkpoints and proofs stay, and still verify.

A legal hold suspends it: on a whole establishment, or on one student (named by the keyed
lookup of INE and birth date). A student's hold keeps that student's entries and their
sessions' entries about nobody in particular (the roll call, the trainer's
counter-signature, a move): what the student's audit trail needs. Other students of the
same sessions are purged as usual.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from daemon.errors import VaultError

MAX_YEARS: Final = 100
MAX_DAYS: Final = 36_525


class RetentionError(VaultError):
    """A retention period or a hold that cannot be."""


@dataclass(frozen=True, slots=True)
class Period:
    """A retention period from the end of the session: whole years, or days."""

    years: int | None = None
    days: int | None = None

    def __post_init__(self) -> None:
        if (self.years is None) == (self.days is None):
            raise RetentionError("a retention period is in years or in days, not both")
        if self.years is not None and not 1 <= self.years <= MAX_YEARS:
            raise RetentionError(f"{self.years} years: from 1 to {MAX_YEARS}")
        if self.days is not None and not 1 <= self.days <= MAX_DAYS:
            raise RetentionError(f"{self.days} days: from 1 to {MAX_DAYS}")

    def after(self, end: dt.datetime) -> dt.datetime:
        """When data of a session that ended at ``end`` expires (a 29 February plus years
        is the 28th)."""
        if self.days is not None:
            return end + dt.timedelta(days=self.days)
        assert self.years is not None
        year = end.year + self.years
        day = min(end.day, calendar.monthrange(year, end.month)[1])
        return end.replace(year=year, day=day)

    def text(self) -> str:
        if self.years is not None:
            return f"{self.years} year{'s' if self.years > 1 else ''}"
        return f"{self.days} day{'s' if self.days != 1 else ''}"


DEFAULT_PERIOD: Final = Period(years=5)


@dataclass(frozen=True, slots=True)
class Hold:
    id: int
    establishment: str
    lookup: bytes | None  # a student's keyed lookup; None: the whole establishment
    reason: str
    placed_at: str
    placed_by: str
    released_at: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None


@dataclass(frozen=True, slots=True)
class Disclosure:
    """What the purge needs of one disclosure: whose, and of which session."""

    idx: int
    lookup: bytes | None
    session_id: str


@dataclass(slots=True)
class Plan:
    """One establishment's purge: what goes now, and what stays under a hold."""

    establishment: str
    period: Period
    destroy: list[Disclosure] = field(default_factory=list)  # in log order
    held: int = 0  # expired, kept by a hold
    held_by: list[int] = field(default_factory=list)  # the holds that kept them


def plan(
    establishment: str,
    period: Period,
    disclosures: Iterable[Disclosure],
    session_ends: Mapping[str, dt.datetime],
    holds: Iterable[Hold],
    now: dt.datetime,
) -> Plan:
    """Which of ``disclosures`` expire at ``now``: their session ended more than ``period``
    ago (``session_ends``: each session's end at its latest version), and no active hold
    keeps them."""
    active = [h for h in holds if h.active and h.establishment == establishment]
    out = Plan(establishment, period)
    expired = {sid for sid, end in session_ends.items() if period.after(end) <= now}
    candidates = [d for d in disclosures if d.session_id in expired]
    whole = [h.id for h in active if h.lookup is None]
    if whole:
        out.held, out.held_by = len(candidates), whole
        return out
    held_students = {h.lookup: h.id for h in active if h.lookup is not None}
    held_sessions: dict[str, int] = {}
    for d in candidates:
        if d.lookup in held_students:
            held_sessions.setdefault(d.session_id, held_students[d.lookup])
    used: dict[int, None] = {}
    for d in sorted(candidates, key=lambda d: d.idx):
        if d.lookup is not None and d.lookup in held_students:
            used[held_students[d.lookup]] = None
        elif d.lookup is None and d.session_id in held_sessions:
            used[held_sessions[d.session_id]] = None
        else:
            out.destroy.append(d)
            continue
        out.held += 1
    out.held_by = sorted(used)
    return out


def ranges(indices: Iterable[int]) -> str:
    """``0-5,9,12-20``: a sorted list of indices, compact (the journal's record of them)."""
    parts: list[str] = []
    run: list[int] = []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def parse_ranges(text: str) -> set[int]:
    """The inverse of :func:`ranges` (``vault verify`` reads the journal's destructions)."""
    out: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out
