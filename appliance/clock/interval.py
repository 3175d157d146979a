"""Evidence about ``θ = UTC − mono`` and how it ages.

All offsets are integer nanoseconds on the continuous count (see ``leap``); slopes are
``dθ/dmono`` (dimensionless; −1e-6 means the crystal runs 1 ppm fast). Ageing rounds
outwards, so an interval never loses the truth to arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SlopeRange:
    """``dθ/dmono`` lies in ``[lo, hi]``."""

    lo: float
    hi: float

    @classmethod
    def symmetric(cls, ppm: float) -> SlopeRange:
        return cls(-ppm * 1e-6, ppm * 1e-6)

    @property
    def mid(self) -> float:
        return (self.lo + self.hi) / 2

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


@dataclass(frozen=True, slots=True)
class Evidence:
    """At ``mono_ns``, θ lay in ``[lo_ns, hi_ns]``."""

    mono_ns: int
    lo_ns: int
    hi_ns: int

    @property
    def mid_ns(self) -> int:
        return (self.lo_ns + self.hi_ns) // 2

    @property
    def half_width_ns(self) -> int:
        """Half-width rounded up: ``mid ± half_width`` covers the whole interval."""
        mid = self.mid_ns
        return max(self.hi_ns - mid, mid - self.lo_ns)

    def at(self, mono_ns: int, slope: SlopeRange) -> Evidence:
        """The same evidence seen from ``mono_ns``: widened by what θ may have done since."""
        dt = mono_ns - self.mono_ns
        if dt == 0:
            return self
        if dt > 0:
            lo = self.lo_ns + math.floor(slope.lo * dt) - 1
            hi = self.hi_ns + math.ceil(slope.hi * dt) + 1
        else:
            lo = self.lo_ns + math.floor(slope.hi * dt) - 1
            hi = self.hi_ns + math.ceil(slope.lo * dt) + 1
        return Evidence(mono_ns, lo, hi)

    def intersect(self, other: Evidence) -> Evidence | None:
        """Both at once (same instant), or None when they share no point."""
        lo, hi = max(self.lo_ns, other.lo_ns), min(self.hi_ns, other.hi_ns)
        return Evidence(self.mono_ns, lo, hi) if lo <= hi else None

    def hull(self, other: Evidence) -> Evidence:
        return Evidence(self.mono_ns, min(self.lo_ns, other.lo_ns), max(self.hi_ns, other.hi_ns))

    def widen(self, by_ns: int) -> Evidence:
        return Evidence(self.mono_ns, self.lo_ns - by_ns, self.hi_ns + by_ns)

    def contains(self, theta_ns: int) -> bool:
        return self.lo_ns <= theta_ns <= self.hi_ns

    def distance_ns(self, other: Evidence) -> int:
        """Gap between two disjoint intervals (0 when they overlap)."""
        return max(0, other.lo_ns - self.hi_ns, self.lo_ns - other.hi_ns)
