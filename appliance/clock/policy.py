"""The operator's clock policy: quorum, maximum error, crystal and RTC bounds, leap window.

Every field carries its unit in its name. The defaults are conservative: they are what an
appliance should do when nobody has measured its hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from drivers.sample import SourceKind

from .errors import PolicyError
from .leap import LeapSecond

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """How sure the ensemble must be before it lets the TSA issue a token."""

    # Independent agreeing source classes needed to issue (GNSS, NTP; see ADR 0003).
    quorum: int = 2
    # Largest bound at which tokens are issued. ETSI EN 319 421 asks for 1 s or better.
    max_error_s: float = 1.0
    # Agreeing sources that may be lying *within* the others' intervals without the bound
    # losing the truth (ADR 0003). 0 trusts every agreeing source: tighter, less safe.
    hidden_faults: int = 1
    # The local crystal (CLOCK_MONOTONIC_RAW) before its frequency is measured.
    crystal_max_ppm: float = 100.0
    # How far the crystal's frequency may wander away from its measured value (temperature,
    # ageing) over the frequency window and during holdover.
    crystal_wander_ppm: float = 1.0
    # Frequency tracking: one point of the consensus every interval, this many points kept.
    frequency_point_interval_s: float = 120.0
    frequency_window_points: int = 60
    # Smallest span of evidence before the measured frequency replaces the worst case.
    frequency_min_span_s: float = 600.0
    # DS3231 datasheet: ±2 ppm from 0 °C to +40 °C.
    rtc_max_ppm: float = 2.0
    # Re-set the RTC from the consensus this often while synchronised.
    rtc_resync_s: float = 3600.0
    # A source with no trusted sample for this long is stale.
    gps_stale_after_s: float = 10.0
    pps_stale_after_s: float = 10.0
    ntp_stale_after_s: float = 300.0
    rtc_stale_after_s: float = 120.0
    # No token within this many seconds either side of a leap second.
    leap_window_s: float = 30.0
    # Known leap seconds (e.g. from the IERS leap-seconds.list, see leap.parse_leap_seconds_list).
    leap_seconds: tuple[LeapSecond, ...] = ()
    # NMEA latency calibration against NTP or PPS.
    nmea_calibration_samples: int = 30
    nmea_calibration_max_ref_ms: float = 50.0
    nmea_jitter_margin_ms: float = 5.0
    nmea_latency_jump_ms: float = 20.0
    nmea_latency_jump_samples: int = 3

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise PolicyError(f"{f.name} must be finite, got {value!r}")
        positive = (
            "max_error_s",
            "crystal_max_ppm",
            "frequency_point_interval_s",
            "rtc_max_ppm",
            "rtc_resync_s",
            "gps_stale_after_s",
            "pps_stale_after_s",
            "ntp_stale_after_s",
            "rtc_stale_after_s",
            "nmea_calibration_max_ref_ms",
            "nmea_latency_jump_ms",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise PolicyError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.quorum < 1:
            raise PolicyError(f"quorum must be >= 1, got {self.quorum}")
        if self.hidden_faults < 0:
            raise PolicyError(f"hidden_faults must be >= 0, got {self.hidden_faults}")
        if not 0 <= self.crystal_wander_ppm <= self.crystal_max_ppm:
            raise PolicyError("crystal_wander_ppm must be between 0 and crystal_max_ppm")
        if self.crystal_max_ppm > 1000:
            raise PolicyError("crystal_max_ppm above 1000 ppm is not a crystal")
        if self.frequency_window_points < 2:
            raise PolicyError("frequency_window_points must be >= 2")
        if self.frequency_min_span_s < 0:
            raise PolicyError("frequency_min_span_s must be >= 0")
        # The window must cover the repeated second itself, so samples taken in it are never
        # mistaken for evidence on either side of the leap.
        if self.leap_window_s < 2.0:
            raise PolicyError(f"leap_window_s must be >= 2, got {self.leap_window_s}")
        if self.nmea_calibration_samples < 2:
            raise PolicyError("nmea_calibration_samples must be >= 2")
        if self.nmea_jitter_margin_ms < 0:
            raise PolicyError("nmea_jitter_margin_ms must be >= 0")
        if self.nmea_latency_jump_samples < 1:
            raise PolicyError("nmea_latency_jump_samples must be >= 1")
        for leap in self.leap_seconds:
            if not isinstance(leap, LeapSecond):
                raise PolicyError(f"leap_seconds must hold LeapSecond values, got {leap!r}")

    def stale_after_ns(self, kind: SourceKind) -> int:
        seconds = {
            SourceKind.GPS: self.gps_stale_after_s,
            SourceKind.PPS: self.pps_stale_after_s,
            SourceKind.NTP: self.ntp_stale_after_s,
            SourceKind.RTC: self.rtc_stale_after_s,
        }[kind]
        return int(seconds * NS_PER_S)

    @property
    def max_error_ns(self) -> int:
        return int(self.max_error_s * NS_PER_S)
