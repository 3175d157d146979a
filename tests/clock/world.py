"""A virtual world for the clock ensemble: truth, sources, faults, on a virtual clock.

Everything is deterministic for a seed. The truth is ``UTC(m) = m + θ(m)`` with the local
crystal running ``crystal_ppm`` fast, or wandering along ``crystal_path`` (temperature,
ageing); each source reports what a healthy device of its kind would (honest about its own
uncertainty), unless a ``Fault`` says otherwise. There is no real peer for a week-long
simulated GPS constellation, so this is a simulator by necessity; the drivers' own tests
cover the real devices.

Used by tests/clock/ and benchmarks/clock_week.py.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from appliance.clock import Assessment, Ensemble, LeapSecond
from appliance.clock.leap import LeapTable
from drivers.sample import Leap, SourceKind, TimeSample

NS = 1_000_000_000
MS = 1_000_000
US = 1_000
START_UTC_NS = 1_782_000_000 * NS  # 2026-06-21, a Sunday
BOOT_MONO_NS = 5_000 * NS


@dataclass(frozen=True, slots=True, kw_only=True)
class GpsSample(TimeSample):
    label_utc_ns: int
    latency_ns: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpSample(TimeSample):
    stratum: int = 1
    delay: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcSample(TimeSample):
    osf: bool = False


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault on the sources whose name starts with ``source``, during [start_s, end_s)."""

    source: str  # "gps" (NMEA and PPS: the receiver), "pps", "ntp", "ntp:b", "rtc"
    start_s: float
    end_s: float = math.inf
    offset_s: float = 0.0
    drift_ppm: float = 0.0
    silent: bool = False
    untrusted: str = ""  # the driver refuses the samples with this reason
    unsynchronised: bool = False  # NTP LI=3
    lost_power: bool = False  # RTC OSF: the registers reset until the RTC is set again
    latency_s: float | None = None  # GPS output latency changes to this

    def active(self, name: str, t_s: float) -> bool:
        return name.startswith(self.source) and self.start_s <= t_s < self.end_s

    def error_s(self, t_s: float) -> float:
        return self.offset_s + self.drift_ppm * 1e-6 * (t_s - self.start_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorldConfig:
    seed: int = 1
    start_utc_ns: int = START_UTC_NS
    crystal_ppm: float = 37.0  # the Pi's crystal runs this fast (truth)
    # Its frequency wandering instead: (t_s, ppm) corners of a piecewise-linear path, held
    # before the first and after the last (see ``crystal_ramp``). Empty: crystal_ppm.
    crystal_path: tuple[tuple[float, float], ...] = ()
    gps: bool = True
    gps_latency_s: float = 0.120  # true NMEA latency
    gps_jitter_s: float = 0.004
    gps_config_latency_s: float = 0.350  # what the driver assumes
    gps_config_error_s: float = 0.450  # the driver's uncertainty around it
    gps_period_s: float = 1.0
    pps: bool = False
    pps_error_s: float = 5e-6
    ntp: tuple[str, ...] = ("ntp:a",)
    ntp_error_s: float = 0.010
    ntp_poll_s: float = 16.0
    rtc: bool = True
    rtc_drift_ppm: float = 0.8  # truth, within the DS3231's ±2 ppm
    rtc_period_s: float = 10.0
    rtc_read_error_s: float = 0.002
    leaps: tuple[LeapSecond, ...] = ()
    faults: tuple[Fault, ...] = ()


def crystal_ramp(
    ppm: float, to_ppm: float, start_s: float, end_s: float
) -> tuple[tuple[float, float], ...]:
    """A crystal at ``ppm`` until ``start_s``, then a steady ramp to ``to_ppm`` at ``end_s``."""
    if not start_s < end_s:
        raise ValueError(f"the ramp must end after it starts ({start_s} .. {end_s})")
    return ((start_s, ppm), (end_s, to_ppm))


class Crystal:
    """The local crystal: how far the monotonic clock has run ahead of the truth since boot.

    Its frequency error is piecewise linear (in ppb) between the path's corners, times
    counted on the monotonic clock from boot; ``ahead_ns`` is its integral, exact: one floor
    of an integer ratio, so the truth never depends on float rounding. Without a path:
    ``ppb·t // 1e9``."""

    def __init__(self, ppm: float, path: tuple[tuple[float, float], ...]) -> None:
        corners = [(round(t_s * NS), round(f * 1000)) for t_s, f in path]
        if any(t1 <= t0 for (t0, _), (t1, _) in itertools.pairwise(corners)):
            raise ValueError(f"crystal_path corners must be in increasing time: {path}")
        self._ppb = round(ppm * 1000)
        self._t = [t for t, _ in corners]
        self._f = [f for _, f in corners]
        # Twice the integral up to each corner, in ppb·ns (exact integers).
        self._twice = [self._f[0] * 2 * corners[0][0]] if corners else []
        for k in range(1, len(corners)):
            length = self._t[k] - self._t[k - 1]
            self._twice.append(self._twice[-1] + (self._f[k - 1] + self._f[k]) * length)

    def ppm_at(self, t_s: float) -> float:
        """The frequency error ``t_s`` seconds after boot (for tests that check the world)."""
        t_ns = round(t_s * NS)
        if not self._t:
            return self._ppb / 1000
        k = bisect.bisect_right(self._t, t_ns)
        if k == 0 or k == len(self._t):
            return self._f[min(k, len(self._f) - 1)] / 1000
        t0, t1, f0, f1 = self._t[k - 1], self._t[k], self._f[k - 1], self._f[k]
        return (f0 + (f1 - f0) * (t_ns - t0) / (t1 - t0)) / 1000

    def ahead_ns(self, t_ns: int) -> int:
        """How far ahead the monotonic clock is, ``t_ns`` (monotonic) after boot."""
        if not self._t:
            return (self._ppb * t_ns) // NS
        k = bisect.bisect_right(self._t, t_ns)
        if k == 0:  # held before the first corner
            return (self._f[0] * t_ns) // NS
        t0, f0 = self._t[k - 1], self._f[k - 1]
        dt = t_ns - t0
        if k == len(self._t):  # held after the last corner
            return (self._twice[-1] + 2 * f0 * dt) // (2 * NS)
        length, f1 = self._t[k] - t0, self._f[k]
        # 2·∫ f over [t0, t0 + dt] with f linear from f0 to f1 over length, times length.
        twice_by_length = (self._twice[k - 1] + 2 * f0 * dt) * length + (f1 - f0) * dt * dt
        return twice_by_length // (2 * NS * length)


@dataclass(slots=True)
class _Rtc:
    set_true_ns: int  # continuous truth when it was last set
    set_value_ns: int  # what it was set to (continuous)
    lost: bool = False


def _closest_leap(leaps: tuple[LeapSecond, ...], posix_ns: int) -> LeapSecond | None:
    """The leap second of ``leaps`` closest to ``posix_ns`` (the earlier of two as close)."""
    return min(sorted(leaps), key=lambda x: abs(x.at_posix_s * NS - posix_ns), default=None)


@dataclass(slots=True)
class World:
    cfg: WorldConfig
    rng: random.Random = field(init=False)
    leaps: LeapTable = field(init=False)
    rtc: _Rtc = field(init=False)
    theta0: int = field(init=False)
    crystal: Crystal = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.cfg.seed)
        self.leaps = LeapTable(self.cfg.leaps)
        self.crystal = Crystal(self.cfg.crystal_ppm, self.cfg.crystal_path)
        self.theta0 = self.leaps.to_continuous(self.cfg.start_utc_ns) - BOOT_MONO_NS
        # The RTC kept some time across the reboot, a bit off.
        self.rtc = _Rtc(self.true_ns(BOOT_MONO_NS), self.true_ns(BOOT_MONO_NS) + 300 * MS)

    # Truth ----------------------------------------------------------------------------
    def true_ns(self, m: int) -> int:
        """Continuous UTC at monotonic ``m`` (the crystal runs fast: θ decreases)."""
        return m + self.theta0 - self.crystal.ahead_ns(m - BOOT_MONO_NS)

    def posix_ns(self, m: int) -> int:
        return self.leaps.to_posix(self.true_ns(m))

    def mono_at(self, true_ns: int) -> int:
        m = true_ns - self.theta0
        for _ in range(3):
            m += true_ns - self.true_ns(m)
        return m

    def mono(self, t_s: float) -> int:
        return BOOT_MONO_NS + round(t_s * NS)

    def t_s(self, m: int) -> float:
        return (m - BOOT_MONO_NS) / NS

    def silent_throughout(self, name: str, t0_s: float, t1_s: float) -> bool:
        return any(
            f.silent and name.startswith(f.source) and f.start_s <= t0_s and t1_s <= f.end_s
            for f in self.cfg.faults
        )

    def faults(self, name: str, t_s: float) -> list[Fault]:
        return [f for f in self.cfg.faults if f.active(name, t_s)]

    def _reported(self, name: str, m: int) -> tuple[int, list[Fault]]:
        fs = self.faults(name, self.t_s(m))
        err = sum(f.error_s(self.t_s(m)) for f in fs)
        return self.true_ns(m) + round(err * NS), fs

    def _leap_flag(self, posix_ns: int) -> Leap:
        nxt = _closest_leap(self.cfg.leaps, posix_ns)
        if nxt is None:
            return Leap.NONE
        at = nxt.at_posix_s * NS
        if 0 < at - posix_ns <= 28 * 86400 * NS:
            return Leap.INSERT if nxt.insert else Leap.DELETE
        return Leap.NONE

    # Sources --------------------------------------------------------------------------
    def gps_samples(self, m_from: int, m_to: int) -> Iterator[TimeSample]:
        c = self.cfg
        err_ns = round(
            sum(f.error_s(self.t_s(m_from)) for f in self.faults("gps", self.t_s(m_from))) * NS
        )
        # The receiver's own clock reads truth + err; it labels its seconds on that clock.
        label = ((self.posix_ns(m_from) + err_ns) // NS + 1) * NS
        while True:
            t = self.t_s(self.mono_at(self.leaps.to_continuous(label) - err_ns))
            fs = self.faults("gps", t)
            err_ns = round(sum(f.error_s(t) for f in fs) * NS)
            lat = c.gps_latency_s
            for f in fs:
                if f.latency_s is not None:
                    lat = f.latency_s
            lat += self.rng.uniform(-c.gps_jitter_s, c.gps_jitter_s)
            # The sentence labelled `label` arrives when the receiver's (possibly wrong)
            # clock reads label + latency.
            arrive_true = self.leaps.to_continuous(label) + round(lat * NS) - err_ns
            m = self.mono_at(arrive_true)
            if m >= m_to:
                return
            if m < m_from - 2 * NS:  # the receiver's clock stepped forward: catch up
                label = ((self.posix_ns(m_from) + err_ns) // NS + 1) * NS
                continue
            if m >= m_from and not any(f.silent for f in fs):
                reason = next((f.untrusted for f in fs if f.untrusted), "")
                latency_ns = round(c.gps_config_latency_s * NS)
                yield GpsSample(
                    source="gps0",
                    kind=SourceKind.GPS,
                    mono_ns=m,
                    utc_ns=label + latency_ns,
                    error_ns=round(c.gps_config_error_s * NS),
                    trusted=not reason,
                    reason=reason,
                    label_utc_ns=label,
                    latency_ns=latency_ns,
                )
                if c.pps and not reason:
                    yield from self._pps(label, err_ns, t)
            label += round(c.gps_period_s * NS)

    def _pps(self, second: int, receiver_err_ns: int, t: float) -> Iterator[TimeSample]:
        fs = [f for f in self.faults("pps", t) if f.source == "pps"]
        if any(f.silent for f in fs):
            return
        err_ns = receiver_err_ns + round(sum(f.error_s(t) for f in fs) * NS)
        jitter = round(self.rng.uniform(-1e-6, 1e-6) * NS)
        m = self.mono_at(self.leaps.to_continuous(second) + jitter - err_ns)
        yield TimeSample(
            source="pps0",
            kind=SourceKind.PPS,
            mono_ns=m,
            utc_ns=second,
            error_ns=round(self.cfg.pps_error_s * NS),
            trusted=True,
        )

    def ntp_sample(self, name: str, m: int) -> TimeSample | None:
        c = self.cfg
        true, fs = self._reported(name, m)
        if any(f.silent for f in fs):
            return None
        posix = self.leaps.to_posix(true)
        noise = round(self.rng.uniform(-0.5, 0.5) * c.ntp_error_s * NS)
        unsync = any(f.unsynchronised for f in fs)
        reason = next((f.untrusted for f in fs if f.untrusted), "")
        if unsync and not reason:
            reason = "server unsynchronised (LI=3)"
        return NtpSample(
            source=name,
            kind=SourceKind.NTP,
            mono_ns=m,
            utc_ns=posix + noise,
            error_ns=round(c.ntp_error_s * NS),
            trusted=not reason,
            reason=reason,
            leap=Leap.UNKNOWN if unsync else self._leap_flag(posix),
        )

    def rtc_sample(self, m: int) -> TimeSample | None:
        c = self.cfg
        t = self.t_s(m)
        fs = self.faults("rtc", t)
        if any(f.silent for f in fs):
            return None
        if any(f.lost_power for f in fs) and not self.rtc.lost:
            self.rtc = _Rtc(self.true_ns(m), 946_684_800 * NS, lost=True)  # 2000-01-01
        true = self.true_ns(m)
        elapsed = true - self.rtc.set_true_ns
        value = self.rtc.set_value_ns + elapsed + round(elapsed * c.rtc_drift_ppm * 1e-6)
        value += round(sum(f.error_s(t) for f in fs) * NS)
        value += round(self.rng.uniform(-0.5, 0.5) * c.rtc_read_error_s * NS)
        return RtcSample(
            source="rtc0",
            kind=SourceKind.RTC,
            mono_ns=m,
            utc_ns=self.leaps.to_posix(value),
            error_ns=round(c.rtc_read_error_s * NS),
            trusted=not self.rtc.lost,
            reason="oscillator stopped (OSF)" if self.rtc.lost else "",
            osf=self.rtc.lost,
        )

    def set_rtc(self, m: int, utc_at: Callable[[int], int]) -> tuple[int, int]:
        """The RTC driver's aligned set: returns (mono, utc) written."""
        utc = utc_at(m)
        self.rtc = _Rtc(self.true_ns(m), self.leaps.to_continuous(utc))
        return m, utc

    def samples(self, m_from: int, m_to: int) -> list[TimeSample]:
        """Every sample the drivers would emit in [m_from, m_to), in monotonic order."""
        c = self.cfg
        out: list[TimeSample] = []
        t0, t1 = self.t_s(m_from), self.t_s(m_to)
        if c.gps and not self.silent_throughout("gps0", t0, t1):
            out.extend(self.gps_samples(m_from, m_to))
        for i, name in enumerate(c.ntp):
            if self.silent_throughout(name, t0, t1):
                continue
            period = round(c.ntp_poll_s * NS)
            phase = BOOT_MONO_NS + (i * period) // max(len(c.ntp), 1)
            k = max(0, -(-(m_from - phase) // period))
            while (m := phase + k * period) < m_to:
                s = self.ntp_sample(name, m)
                if s is not None:
                    out.append(s)
                k += 1
        if c.rtc and not self.silent_throughout("rtc0", t0, t1):
            period = round(c.rtc_period_s * NS)
            k = max(0, -(-(m_from - BOOT_MONO_NS) // period))
            while (m := BOOT_MONO_NS + k * period + 7 * MS) < m_to:
                s = self.rtc_sample(m)
                if s is not None:
                    out.append(s)
                k += 1
        out.sort(key=lambda s: s.mono_ns)
        return out


@dataclass(frozen=True, slots=True)
class Step:
    """One assessment during a run."""

    t_s: float
    assessment: Assessment
    truth_posix_ns: int


def run(
    world: World,
    ensemble: Ensemble,
    until_s: float,
    *,
    step_s: float = 1.0,
    from_s: float = 0.0,
    assess_every_sample: bool = False,
) -> Iterator[Step]:
    """Feed the ensemble; assess every ``step_s``; obey its RTC actions as the lead would."""
    t = from_s
    heap: list[tuple[int, int, TimeSample]] = []
    n = 0
    while t < until_s:
        m_from, m_to = world.mono(t), world.mono(min(t + step_s, until_s))
        for s in world.samples(m_from, m_to):
            heapq.heappush(heap, (s.mono_ns, n, s))
            n += 1
        while heap:
            _, _, s = heapq.heappop(heap)
            ensemble.add(s)
            if assess_every_sample:
                ensemble.assess(s.mono_ns)
        m = m_to
        assessment = ensemble.assess(m)
        action = ensemble.rtc_action(m)
        if action is not None and world.cfg.rtc:
            mono, utc = world.set_rtc(m, action.utc_at)
            ensemble.rtc_was_set(mono, utc, error_ns=MS)
        yield Step(world.t_s(m), assessment, world.posix_ns(m))
        t += step_s
