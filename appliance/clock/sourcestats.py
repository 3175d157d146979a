"""Frequency tracking from a window of consensus intervals, after chrony's sourcestats.c.

Two answers from the same points:

- a weighted least-squares regression of θ against mono (chrony's method): the best
  estimate of the crystal's frequency, reported to the technician;
- the range of slopes that *every* point allows: a line through all the intervals exists
  for slope ``s`` iff ``s·(m_j − m_i) ≤ hi_j − lo_i`` for every pair ``i, j`` (a 1-D Helly
  argument). That range is a guarantee, not a statistic, so the holdover bound grows at it.
  Checking only the pairs that include the oldest or the newest point gives a range that
  can only be wider, in O(n).

The crystal may wander by ``wander`` (dimensionless) from its current frequency; each point
is widened by ``wander × its age`` so the current frequency stays feasible.

``estimate`` is a pure function of the points, so the clock's state (``state.Model``) keeps
its window as an immutable tuple; ``OffsetWindow`` is the same window as a mutable object.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .interval import Evidence, SlopeRange


@dataclass(frozen=True, slots=True)
class FrequencyEstimate:
    slope: SlopeRange  # what every point allows (before adding future wander)
    regression: float  # weighted least-squares slope, clamped into ``slope``
    points: int
    span_ns: int


class OffsetWindow:
    """The last ``max_points`` consensus intervals."""

    def __init__(self, max_points: int) -> None:
        self._points: deque[Evidence] = deque(maxlen=max_points)

    def __len__(self) -> int:
        return len(self._points)

    def clear(self) -> None:
        self._points.clear()

    @property
    def last_mono_ns(self) -> int | None:
        return self._points[-1].mono_ns if self._points else None

    def add(self, point: Evidence) -> None:
        if self._points and point.mono_ns <= self._points[-1].mono_ns:
            return
        self._points.append(point)

    def estimate(self, wander: float, min_span_ns: int) -> FrequencyEstimate | None:
        """See :func:`estimate`."""
        return estimate(self._points, wander, min_span_ns)


def estimate(
    points: Sequence[Evidence], wander: float, min_span_ns: int
) -> FrequencyEstimate | None:
    """The frequency the points allow; None when the window is too short, or when no single
    line fits (the crystal wandered more than allowed, or a point was wrong): then the
    worst case applies."""
    pts = list(points)
    if len(pts) < 2:
        return None
    last, first = pts[-1], pts[0]
    span = last.mono_ns - first.mono_ns
    if span < max(min_span_ns, 1):
        return None
    widened = [p.widen(math.ceil(wander * (last.mono_ns - p.mono_ns)) + 1) for p in pts]
    lo, hi = -math.inf, math.inf
    pairs = [(widened[0], q) for q in widened[1:]]
    pairs += [(p, widened[-1]) for p in widened[1:-1]]
    for p, q in pairs:
        dm = q.mono_ns - p.mono_ns
        lo = max(lo, (q.lo_ns - p.hi_ns) / dm)
        hi = min(hi, (q.hi_ns - p.lo_ns) / dm)
    # Outward by a hair, so float division never costs the truth a nanosecond.
    lo -= 1e-12
    hi += 1e-12
    if lo > hi:
        return None
    slope = SlopeRange(lo, hi)
    return FrequencyEstimate(slope, _regression(pts, slope), len(pts), span)


def _regression(pts: list[Evidence], clamp: SlopeRange) -> float:
    # Weighted least squares, weights 1/σ² with σ the interval's half-width.
    m0, t0 = pts[0].mono_ns, pts[0].mid_ns
    sw = sx = sy = sxx = sxy = 0.0
    for p in pts:
        w = 1.0 / max(float(p.half_width_ns), 1.0) ** 2
        x = float(p.mono_ns - m0)
        y = float(p.mid_ns - t0)
        sw += w
        sx += w * x
        sy += w * y
        sxx += w * x * x
        sxy += w * x * y
    denominator = sw * sxx - sx * sx
    if denominator <= 0:
        return clamp.mid
    slope = (sw * sxy - sx * sy) / denominator
    return min(max(slope, clamp.lo), clamp.hi)
