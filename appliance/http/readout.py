"""How the technician's readouts word the clock's numbers and colour its words.

One wording for ``horodate status`` (a terminal) and ``GET /status`` (a page): an offset of
41.0 ms reads the same on both, and "falseticker" is red on both. Pure, no aiohttp.
"""

from __future__ import annotations

import enum


class Tone(enum.Enum):
    """How a status word is shown: green, amber or red."""

    GOOD = "good"
    WARN = "warn"
    BAD = "bad"


GOOD_WORDS = frozenset({"selected", "synchronised", "issuing"})
BAD_WORDS = frozenset(
    {"falseticker", "alarm", "untrusted", "unsynchronised", "unreachable", "refused", "refusing"}
)


def tone(word: str) -> Tone:
    """Green for a word that says all is well, red for a fault, amber for the rest
    (waiting, stale, holdover, expiring, …)."""
    if word in GOOD_WORDS:
        return Tone.GOOD
    if word in BAD_WORDS:
        return Tone.BAD
    return Tone.WARN


def duration(seconds: float | None) -> str:
    """A bound or offset in the unit a person reads best: 3.2 µs, 41.0 ms, 1.250 s."""
    if seconds is None:
        return "—"
    magnitude = abs(seconds)
    if magnitude < 1e-3:
        return f"{seconds * 1e6:+.1f} µs" if seconds else "0"
    if magnitude < 1:
        return f"{seconds * 1e3:+.1f} ms"
    return f"{seconds:+.3f} s"


def bound(seconds: float | None) -> str:
    """``±4.2 µs``; ``—`` when there is none."""
    return "—" if seconds is None else "±" + duration(seconds).lstrip("+")


def age(seconds: float | None) -> str:
    """How long ago, coarsely: 12s, 4 min, 3.5 h, 2.0 days."""
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


def plural(n: int, word: str) -> str:
    """``1 token``, ``12,345 tokens``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"
