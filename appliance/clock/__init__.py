"""The clock ensemble: what time is it, how wrong could that be, and may we issue?

A pure core (no I/O, no clock reads): drivers' samples go in with ``Ensemble.add``; any
raw-monotonic instant gets an ``Assessment`` (state, UTC, bound, every source's status)
and, for a token, an ``Issue`` or ``TimeNotAvailable``. See docs/clock.md and ADRs 0001 and
0003.
"""

from .assessment import (
    Assessment,
    ClockState,
    Issue,
    RtcAction,
    SourceReport,
    SourceStatus,
    Window,
)
from .ensemble import Ensemble
from .errors import ClockError, PolicyError, TimeNotAvailable
from .leap import LeapSecond, parse_leap_seconds_list
from .policy import Policy

__all__ = [
    "Assessment",
    "ClockError",
    "ClockState",
    "Ensemble",
    "Issue",
    "LeapSecond",
    "Policy",
    "PolicyError",
    "RtcAction",
    "SourceReport",
    "SourceStatus",
    "TimeNotAvailable",
    "Window",
    "parse_leap_seconds_list",
]
