"""What the ensemble answers: its state, the bound, and each source's status with a reason."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers.sample import SourceKind


class ClockState(enum.Enum):
    """The ensemble's state, in plain words (``/health``'s ``state``)."""

    STARTING = "starting"  # never synchronised yet: waiting for a quorum
    SYNCHRONISED = "synchronised"  # a quorum of independent sources agrees: issuing
    HOLDOVER = "holdover"  # no quorum, the prediction is still within the maximum error
    UNSYNCHRONISED = "unsynchronised"  # no quorum and no usable prediction, or bound too wide
    ALARM = "alarm"  # the agreeing sources jumped away from the prediction
    LEAP_WINDOW = "leap-window"  # too close to a leap second to risk a token


class SourceStatus(enum.Enum):
    """A source's selection outcome, as chrony's state letters (``/health``'s ``status``)."""

    SELECTED = "selected"  # agrees with the majority and its interval counts in the bound
    FALSETICKER = "falseticker"  # disagrees with the majority, or with the prediction
    STALE = "stale"  # no trusted sample for too long
    UNTRUSTED = "untrusted"  # its driver refused the last sample (reason says why)
    UNSYNCHRONISED = "unsynchronised"  # the source says it does not know (LI=3, RTC OSF)
    WAITING = "waiting"  # usable but not counted yet (no quorum, RTC not set, leap window)
    ALARM = "alarm"  # part of an agreeing group that jumped away from the prediction


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceReport:
    name: str
    kind: SourceKind
    status: SourceStatus
    reason: str
    offset_ns: int | None  # this source's UTC estimate minus the ensemble's
    bound_ns: int | None  # half-width of this source's interval at the assessed instant
    last_mono_ns: int | None
    samples: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Assessment:
    mono_ns: int
    state: ClockState
    issuing: bool
    reason: str  # why not issuing, in plain words; empty when issuing
    utc_ns: int | None  # POSIX UTC estimate at mono_ns
    bound_ns: int | None  # |UTC − utc_ns| ≤ bound_ns
    frequency_ppm: float | None  # the crystal's frequency error (positive: runs fast)
    skew_ppm: float | None  # half-width of the frequency range every piece of evidence allows
    sources: tuple[SourceReport, ...]


@dataclass(frozen=True, slots=True)
class Issue:
    """A time for one token: ``utc_ns`` (POSIX) within ``bound_ns`` of the truth."""

    utc_ns: int
    bound_ns: int
    state: ClockState


@dataclass(frozen=True, slots=True)
class Window:
    """At raw-monotonic ``mono_ns``, UTC (POSIX ns) lies in ``[lo_ns, hi_ns]``."""

    mono_ns: int
    lo_ns: int
    hi_ns: int
    state: ClockState


@dataclass(frozen=True, slots=True)
class RtcAction:
    """Set the RTC from the consensus: ``utc_at`` maps a raw-monotonic instant to UTC.

    Pass ``action.utc_at`` to the RTC driver's ``set_time(utc_at)``; afterwards tell the
    ensemble with ``Ensemble.rtc_was_set(mono_ns, utc_ns, error_ns)``.
    """

    mono_ns: int
    utc_ns: int  # POSIX UTC at mono_ns
    bound_ns: int
    rate: float  # dθ/dmono: UTC advances by (1 + rate) ns per monotonic ns

    def utc_at(self, mono_ns: int) -> int:
        dt = mono_ns - self.mono_ns
        return self.utc_ns + dt + round(self.rate * dt)
