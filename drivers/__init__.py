"""Hardware I/O for Horodate's three time sources: GPS (NMEA, PPS), NTP and the DS3231 RTC.

A driver's whole contract is one output: "at local ``CLOCK_MONOTONIC_RAW`` instant m, the
reference said UTC was u ± e", as a :class:`drivers.sample.TimeSample`. Selection, filtering
and falseticker rejection live in :mod:`appliance.clock`, never here. This package imports
nothing else of ours.
"""

from drivers.errors import DriverError
from drivers.sample import Leap, SourceKind, TimeSample

__all__ = ["DriverError", "Leap", "SourceKind", "TimeSample"]
