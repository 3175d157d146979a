"""Faults the simulated hardware can be told to commit, as data.

The JSON form is what the appliance's ``/sim/faults`` endpoint reads and writes
(DESIGN.md), e.g. ``{"gps": {"offset_s": 5.0}, "ntp": {"unsynchronised": true},
"rtc": {"lost_power": true}}``. A fault set is immutable; the world swaps in a new one
atomically. Unknown keys and values of the wrong type are refused, never ignored, so a typo
in a test or by a technician cannot silently inject nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Self


class FaultError(ValueError):
    """A fault description that cannot be applied (unknown key, wrong type, out of range)."""


KOD_CODES = ("RATE", "DENY", "RSTR")


@dataclass(frozen=True, slots=True)
class _SourceFaults:
    offset_s: float = 0.0  # step added to what the source reports, seconds
    drift_ppm: float = 0.0  # the reported time walks away from truth at this rate
    silent: bool = False  # the source says nothing at all

    _bool_fields: ClassVar[tuple[str, ...]] = ()

    def offset_at(self, elapsed_ns: int) -> float:
        """The total error of the source, in seconds, ``elapsed_ns`` after the fault was set."""
        return self.offset_s + self.drift_ppm * 1e-6 * (elapsed_ns / 1e9)

    @classmethod
    def from_json(cls, name: str, data: Any) -> Self:
        if not isinstance(data, dict):
            raise FaultError(f"{name}: expected an object, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise FaultError(f"{name}: unknown fault {key!r} (known: {', '.join(known)})")
            default = known[key].default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise FaultError(f"{name}.{key}: expected true or false")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise FaultError(f"{name}.{key}: expected a number")
                value = float(value)
                if not math.isfinite(value) or abs(value) > 1e9:
                    raise FaultError(f"{name}.{key}: out of range")
            elif key == "kod":
                if value is not None and value not in KOD_CODES:
                    raise FaultError(f"{name}.kod: expected one of {', '.join(KOD_CODES)}")
            elif key == "latency_s":
                if value is not None and (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not 0.0 <= value <= 0.95
                ):
                    raise FaultError(f"{name}.latency_s: expected seconds in [0, 0.95]")
                value = None if value is None else float(value)
            kwargs[key] = value
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        """Only the fields that differ from a healthy source."""
        healthy = type(self)()
        return {k: v for k, v in asdict(self).items() if getattr(healthy, k) != v}


@dataclass(frozen=True, slots=True)
class GpsFaults(_SourceFaults):
    fix: bool = True  # False: the receiver reports no fix (RMC status V, GGA quality 0)
    garbage: bool = False  # interleave binary noise and broken sentences with the good ones
    latency_s: float | None = None  # override the receiver's output latency (a latency jump)


@dataclass(frozen=True, slots=True)
class NtpFaults(_SourceFaults):
    unsynchronised: bool = False  # answer with LI=3 (alarm), as a server that lost its reference
    kod: str | None = None  # answer every request with a Kiss-o'-Death of this code


@dataclass(frozen=True, slots=True)
class RtcFaults(_SourceFaults):
    lost_power: bool = False  # the oscillator stopped: OSF set, time registers reset


@dataclass(frozen=True, slots=True)
class Faults:
    """The whole fault set of the simulated world. ``Faults()`` is a healthy world."""

    gps: GpsFaults = field(default_factory=GpsFaults)
    ntp: NtpFaults = field(default_factory=NtpFaults)
    rtc: RtcFaults = field(default_factory=RtcFaults)

    @classmethod
    def from_json(cls, data: Any) -> Faults:
        if not isinstance(data, dict):
            raise FaultError('expected a JSON object such as {"gps": {"offset_s": 5.0}}')
        unknown = set(data) - {"gps", "ntp", "rtc"}
        if unknown:
            raise FaultError(f"unknown source(s): {', '.join(sorted(unknown))}")
        return cls(
            gps=GpsFaults.from_json("gps", data.get("gps", {})),
            ntp=NtpFaults.from_json("ntp", data.get("ntp", {})),
            rtc=RtcFaults.from_json("rtc", data.get("rtc", {})),
        )

    def to_json(self) -> dict[str, Any]:
        return {"gps": self.gps.to_json(), "ntp": self.ntp.to_json(), "rtc": self.rtc.to_json()}
