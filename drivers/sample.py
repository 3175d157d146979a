"""What every time-source driver hands the clock ensemble.

A sample says: at local raw-monotonic instant ``mono_ns``, UTC was ``utc_ns`` give or take
``error_ns``. The source's interval is ``[utc_ns - error_ns, utc_ns + error_ns]``; the
ensemble maps it onto the monotonic timescale and intersects it with the others.

UTC is counted as POSIX time in nanoseconds (no leap seconds in the count). A sample that is
not ``trusted`` still travels to the ensemble, so a technician can see why it was refused;
``reason`` says why, in plain words.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SourceKind(enum.Enum):
    """The four kinds of evidence; a source's name starts with its kind's value."""

    GPS = "gps"
    PPS = "pps"
    NTP = "ntp"
    RTC = "rtc"


class Leap(enum.Enum):
    """A leap second announced by the source for the end of the current UTC month."""

    NONE = "none"
    INSERT = "insert"  # 23:59:60 will be inserted
    DELETE = "delete"  # 23:59:59 will be skipped
    UNKNOWN = "unknown"  # the source cannot say (e.g. NTP LI=3, unsynchronised)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeSample:
    """One measurement: at ``mono_ns`` (``CLOCK_MONOTONIC_RAW``), UTC was ``utc_ns ± error_ns``.

    Driver-specific samples subclass this and add their own fields (fix quality, stratum,
    temperature…); the ensemble needs only these.
    """

    source: str  # e.g. "gps0", "pps0", "ntp:127.0.0.1:123", "rtc0"
    kind: SourceKind
    mono_ns: int  # local raw-monotonic instant the measurement refers to
    utc_ns: int  # UTC at mono_ns, POSIX nanoseconds
    error_ns: int  # half-width of the interval, >= 0
    trusted: bool
    reason: str = ""  # why not trusted; empty when trusted
    leap: Leap = Leap.NONE

    def __post_init__(self) -> None:
        if self.error_ns < 0:
            raise ValueError(f"error_ns must be >= 0, got {self.error_ns}")
        if not self.source.startswith(self.kind.value):
            raise ValueError(f"source {self.source!r} must start with {self.kind.value!r}")
        if self.trusted and self.reason:
            raise ValueError("a trusted sample carries no reason")
        if not self.trusted and not self.reason:
            raise ValueError("an untrusted sample must say why")

    @property
    def offset_ns(self) -> int:
        """UTC minus the raw monotonic reading: θ at ``mono_ns`` according to this source."""
        return self.utc_ns - self.mono_ns
