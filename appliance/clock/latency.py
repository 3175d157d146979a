"""Calibrating a GPS receiver's NMEA output latency against NTP or PPS.

A receiver sends the sentence naming second ``S`` some time after ``S`` began: UTC at the
sentence's arrival is ``S + L``. The driver adds a configured latency with a wide
uncertainty (DESIGN.md: typically 50–700 ms). Here each arrival is compared with a better
reference (PPS, or the NTP servers) and the measured latency intervals are collected; once
enough are in, the calibrated latency is their hull plus a jitter margin, and the GPS
interval shrinks to it (never beyond what the driver itself allows).

A receiver's latency can jump (firmware, sentence set, baud rate). A measurement outside
the calibrated range by more than the jump tolerance, several times in a row, drops the
calibration: the GPS falls back to the driver's wide interval and calibration starts over.
The latency is never followed blindly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LatencySettings:
    samples: int
    jitter_margin_ns: int
    jump_tolerance_ns: int
    jump_samples: int


class NmeaLatency:
    def __init__(self, settings: LatencySettings) -> None:
        self._s = settings
        self._collecting: list[tuple[int, int]] = []
        self._range: tuple[int, int] | None = None  # calibrated [lo, hi] latency
        self._misses = 0
        self._change = ""  # the last latency change seen, kept until calibrated again
        self.note = "not calibrated yet"

    @property
    def calibrated(self) -> tuple[int, int] | None:
        return self._range

    def observe(self, lo_ns: int, hi_ns: int) -> None:
        """One measured latency interval ``[lo, hi]`` (reference UTC − labelled second)."""
        if self._range is None:
            self._collecting.append((lo_ns, hi_ns))
            if len(self._collecting) >= self._s.samples:
                lo = min(x for x, _ in self._collecting) - self._s.jitter_margin_ns
                hi = max(y for _, y in self._collecting) + self._s.jitter_margin_ns
                self._range = (lo, hi)
                self._collecting.clear()
                self._misses = 0
                self.note = f"NMEA latency calibrated: {lo / 1e6:.1f}–{hi / 1e6:.1f} ms"
            else:
                self.note = f"calibrating NMEA latency ({len(self._collecting)}/{self._s.samples})"
            return
        lo, hi = self._range
        tol = self._s.jump_tolerance_ns
        if hi_ns < lo - tol or lo_ns > hi + tol:
            self._misses += 1
            if self._misses >= self._s.jump_samples:
                mid = (lo_ns + hi_ns) / 2e6
                self._change = (
                    f"NMEA latency changed ({(lo + hi) / 2e6:.0f} ms → {mid:.0f} ms), "
                    "calibration dropped; "
                )
                self.note = f"{self._change}calibrating again"
                log.warning("%s", self.note)
                self._range = None
                self._collecting.clear()
                self._misses = 0
        else:
            self._misses = 0

    def usable(self) -> tuple[int, int] | None:
        """The calibrated latency range, unless the last measurement(s) disagreed with it."""
        return self._range if self._misses == 0 else None
