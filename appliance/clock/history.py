"""The clock's recent past, for the technician's plots: a bounded ring of assessments.

Pure and small: :meth:`ClockHistory.record` takes an :class:`Assessment` (it carries its own
raw-monotonic instant) and keeps, per point, the verdict, the bound and each source's
offset from the ensemble. Nobody's reading changes it. Whoever owns a timer feeds it (the
appliance's HTTP application records every ``step_s``, see ``appliance.http.status_page``);
the page that draws it only reads.

Two windows, each a ring of fixed length:

- the last hour, one point per ``hour_step_s`` (default 10 s: 360 points);
- the last day, downsampled into ``day_bucket_s`` buckets (default 5 min: 288 buckets).
  A bucket keeps the worst of what it saw — the widest bound, each source's offset
  furthest from zero, the worst verdict — so that a spike or a minute of holdover stays
  visible on the day plot instead of being averaged away.

Memory: at most ``max_sources`` sources per point (default 16; more are not kept), so at
most 361 + 289 points of 16 offsets: 450 KiB held when full, 205 KiB with four sources
(measured, each object counted once: ``tests/appliance/test_status_page.py``).
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .assessment import Assessment, ClockState
from .leap import NS_PER_S


class Verdict(enum.Enum):
    """The page's banner, in one of three words (worst last)."""

    ISSUING = "issuing"  # synchronised: a quorum agrees
    HOLDOVER = "holdover"  # issuing on the prediction alone, the bound growing
    REFUSING = "refusing"  # no token: alarm, starting, unsynchronised, leap window, …

    @classmethod
    def of(cls, state: ClockState | str, issuing: bool) -> Verdict:
        if not issuing:
            return cls.REFUSING
        value = state.value if isinstance(state, ClockState) else state
        return cls.HOLDOVER if value == ClockState.HOLDOVER.value else cls.ISSUING

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Verdict.ISSUING: 0, Verdict.HOLDOVER: 1, Verdict.REFUSING: 2}


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """At ``mono_ns``: the verdict, the bound, and each source's offset from the ensemble
    (``offsets_ns[i]`` for ``names[i]``; ``None``: the source had no interval then, or the
    ensemble no estimate). Consecutive points share one ``names`` tuple."""

    mono_ns: int
    verdict: Verdict
    bound_ns: int | None
    names: tuple[str, ...]
    offsets_ns: tuple[int | None, ...]

    def offset_of(self, name: str) -> int | None:
        try:
            return self.offsets_ns[self.names.index(name)]
        except ValueError:
            return None


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryLimits:
    hour_span_s: float = 3600.0
    hour_step_s: float = 10.0  # the recording timer's period
    day_span_s: float = 86_400.0
    day_bucket_s: float = 300.0
    max_sources: int = 16  # per point; a configuration with more keeps the first ones

    @property
    def hour_points(self) -> int:
        return int(self.hour_span_s // self.hour_step_s) + 1

    @property
    def day_points(self) -> int:
        return int(self.day_span_s // self.day_bucket_s) + 1


class ClockHistory:
    """The last hour point by point, the last day in buckets; thread-safe."""

    def __init__(self, limits: HistoryLimits | None = None) -> None:
        self.limits = limits or HistoryLimits()
        self._lock = threading.Lock()
        self._hour: deque[HistoryPoint] = deque(maxlen=self.limits.hour_points)
        self._day: deque[HistoryPoint] = deque(maxlen=self.limits.day_points)
        self._bucket_ns = int(self.limits.day_bucket_s * NS_PER_S)
        self._last_names: tuple[str, ...] = ()

    def record(self, assessment: Assessment) -> None:
        """One point at ``assessment.mono_ns``; a point not after the last is ignored (the
        raw-monotonic clock does not go back, so only a duplicate can be)."""
        reports = assessment.sources[: self.limits.max_sources]
        names = tuple(s.name for s in reports)
        with self._lock:
            if names == self._last_names:
                names = self._last_names  # one tuple for every point while they stay
            self._last_names = names
        point = HistoryPoint(
            mono_ns=assessment.mono_ns,
            verdict=Verdict.of(assessment.state, assessment.issuing),
            bound_ns=assessment.bound_ns,
            names=names,
            offsets_ns=tuple(s.offset_ns for s in reports),
        )
        with self._lock:
            if self._hour and point.mono_ns <= self._hour[-1].mono_ns:
                return
            self._hour.append(point)
            bucket = point.mono_ns // self._bucket_ns
            if self._day and self._day[-1].mono_ns // self._bucket_ns == bucket:
                self._day[-1] = _worst(self._day[-1], point, self.limits.max_sources)
            else:
                self._day.append(point)

    def hour(self, now_ns: int) -> list[HistoryPoint]:
        """The points of the hour before ``now_ns``, oldest first."""
        return self._since(self._hour, now_ns, self.limits.hour_span_s)

    def day(self, now_ns: int) -> list[HistoryPoint]:
        """The buckets of the day before ``now_ns``, oldest first (each at its first point's
        instant, with the worst of its points)."""
        return self._since(self._day, now_ns, self.limits.day_span_s)

    def __len__(self) -> int:
        return len(self._hour)

    def _since(self, ring: deque[HistoryPoint], now_ns: int, span_s: float) -> list[HistoryPoint]:
        start = now_ns - int(span_s * NS_PER_S)
        with self._lock:
            return [p for p in ring if start <= p.mono_ns <= now_ns]


def _worst(a: HistoryPoint, b: HistoryPoint, max_sources: int) -> HistoryPoint:
    """One bucket's summary: ``a``'s instant, the worse verdict, the wider bound, and per
    source (at most ``max_sources``) the offset furthest from zero."""
    offsets = dict(zip(a.names, a.offsets_ns, strict=True))
    for name, off in zip(b.names, b.offsets_ns, strict=True):
        if name not in offsets and len(offsets) >= max_sources:
            continue
        kept = offsets.get(name)
        if kept is None or (off is not None and abs(off) > abs(kept)):
            offsets[name] = off
    bounds = [x for x in (a.bound_ns, b.bound_ns) if x is not None]
    names = tuple(offsets)
    return HistoryPoint(
        mono_ns=a.mono_ns,
        verdict=a.verdict if a.verdict.rank >= b.verdict.rank else b.verdict,
        bound_ns=max(bounds) if bounds else None,
        names=a.names if names == a.names else names,
        offsets_ns=tuple(offsets.values()),
    )


def source_names(points: Iterable[HistoryPoint]) -> list[str]:
    """Every source named in ``points``, in order of first appearance."""
    seen: dict[str, None] = {}
    for p in points:
        for name in p.names:
            seen.setdefault(name)
    return list(seen)
