"""Source selection: interval intersection in the manner of Marzullo and NTP.

Marzullo's algorithm (K. Marzullo, 1984), as NTP uses it (RFC 5905 §11.2.1): find the
smallest number ``f`` of falsetickers such that a point is covered by ``n − f`` intervals
with ``n − f`` a strict majority. Sources whose interval touches that region are the
truechimers, the others falsetickers.

The bound goes one step further than NTP (ADR 0003): up to ``hidden`` truechimers may be
lying *within* the others' intervals, which no vote can see. So the bound is the hull of
the points covered by at least ``len(truechimers) − hidden`` truechimers; with at most that
many hidden liars among them, the truth is inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
