"""Source selection: interval intersection in the manner of Marzullo and NTP.

Marzullo's algorithm (K. Marzullo, 1984), as NTP uses it (RFC 5905 §11.2.1): find the
smallest number ``f`` of falsetickers such that a point is covered by ``n − f`` intervals
with ``n − f`` a strict majority. Sources whose interval touches that region are the
truechimers, the others falsetickers.

The bound goes one step further than NTP (ADR 0003): up to ``hidden`` truechimers may be
lying *within* the others' intervals, which no vote can see. So the bound is the hull of
the points covered by at least ``len(truechimers) − hidden`` truechimers; with at most that
many hidden liars among them, the truth is inside.

``vote`` adds the quorum (ADR 0003): the truechimers must span enough *independent classes*
(GNSS, NTP); the RTC, which learned its time from the others, votes but is no class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drivers.sample import SourceKind

from .interval import Evidence

GNSS = "gnss"  # the voter key of the GPS receiver (its NMEA and PPS are one voice)


@dataclass(frozen=True, slots=True)
class Voter:
    """One independent voice in the vote: its interval for θ at the assessed instant."""

    key: str
    lo_ns: int
    hi_ns: int


@dataclass(frozen=True, slots=True)
class Selection:
    majority: bool  # a strict majority of voters share a point
    truechimers: frozenset[str]
    falsetickers: frozenset[str]
    lo_ns: int | None = None  # the bound's interval for θ, when there is a majority
    hi_ns: int | None = None


def _region(voters: Sequence[Voter], need: int) -> list[tuple[int, int]]:
    """Closed segments of the points covered by at least ``need`` intervals."""
    events: list[tuple[int, int]] = []
    for v in voters:
        events.append((v.lo_ns, 0))  # starts sort before ends at the same point: closed
        events.append((v.hi_ns, 1))
    events.sort()
    depth = 0
    start = 0
    segments: list[tuple[int, int]] = []
    for x, kind in events:
        if kind == 0:
            depth += 1
            if depth == need:
                start = x
        else:
            if depth == need:
                segments.append((start, x))
            depth -= 1
    return segments


def _touches(v: Voter, segments: list[tuple[int, int]]) -> bool:
    return any(v.lo_ns <= b and a <= v.hi_ns for a, b in segments)


def select(voters: Sequence[Voter], hidden: int) -> Selection:
    n = len(voters)
    everyone = frozenset(v.key for v in voters)
    for f in range(n):
        need = n - f
        if 2 * need <= n:
            break
        region = _region(voters, need)
        if not region:
            continue
        chimers = [v for v in voters if _touches(v, region)]
        bound = _region(chimers, max(1, len(chimers) - hidden))
        if not bound:  # the truechimers share no common point: fall back to the vote's region
            bound = region
        truechimers = frozenset(v.key for v in chimers)
        return Selection(True, truechimers, everyone - truechimers, bound[0][0], bound[-1][1])
    return Selection(False, frozenset(), everyone)


def class_of(key: str) -> str | None:
    """The independence class a voter counts for in the quorum (ADR 0003)."""
    if key == GNSS:
        return GNSS
    if key.startswith(SourceKind.NTP.value):
        return SourceKind.NTP.value
    return None  # the RTC learned its time from the others: a witness, not a source


@dataclass(frozen=True, slots=True)
class Vote:
    """The selection among the voters at one instant, and whether it makes a quorum."""

    selection: Selection
    classes: tuple[str, ...]  # independent classes among the truechimers, sorted
    quorum: bool
    hull: Evidence | None  # the bound's interval for θ, when there is a majority
    voters: int


def vote(voters: Mapping[str, Evidence], at_ns: int, hidden: int, quorum: int) -> Vote:
    """Put the voters' intervals (all seen from ``at_ns``) to the vote."""
    sel = select([Voter(k, ev.lo_ns, ev.hi_ns) for k, ev in voters.items()], hidden)
    classes = tuple(sorted({c for k in sel.truechimers if (c := class_of(k)) is not None}))
    hull = (
        Evidence(at_ns, sel.lo_ns, sel.hi_ns)
        if sel.lo_ns is not None and sel.hi_ns is not None
        else None
    )
    return Vote(sel, classes, sel.majority and len(classes) >= quorum, hull, len(voters))
