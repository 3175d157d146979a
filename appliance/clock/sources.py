"""What each source has said, and what it is worth at a given instant: the evidence.

``Sources.take`` turns one driver sample into the source's last word: refused (untrusted,
LI=3, the RTC's OSF), set aside (inside a leap-second window), or an interval for
``θ = UTC − mono`` at the sample's instant, narrowed by the NMEA latency calibration and,
for the RTC, widened by its drift since it was set. ``Sources.survey`` sees every source
from one instant: which ones vote, with their intervals aged to that instant (the GPS and
its PPS as one voter, ADR 0003), and why each of the others does not.

Findings are facts, not words: ``explanation`` says them to people.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from drivers.sample import Leap, SourceKind, TimeSample

from .assessment import SourceStatus
from .errors import ClockError
from .interval import Evidence, SlopeRange
from .latency import LatencySettings, NmeaLatency
from .leap import NS_PER_S, LeapSecond, LeapTable, next_month_start_s
from .policy import Policy
from .selection import GNSS

log = logging.getLogger(__name__)


class Finding(enum.Enum):
    """Why a source has its status (the words are ``explanation``'s)."""

    DRIVER = "driver"  # the driver refused the sample, or the source says it does not know
    NO_SAMPLE = "no-sample"  # no trusted sample yet (or the last one was set aside)
    STALE = "stale"  # the last trusted sample is too old
    RTC_NOT_SET = "rtc-not-set"  # the RTC has not been set from the consensus
    SELECTED = "selected"
    MAJORITY_GAP = "majority-gap"  # outside the majority's region
    PREDICTION_GAP = "prediction-gap"  # outside the prediction
    JUMPED = "jumped"  # part of a quorum that left the prediction (alarm)
    NO_MAJORITY = "no-majority"
    NO_QUORUM = "no-quorum"  # agrees, but alone in its class
    RTC_DRIFTED = "rtc-drifted"  # the RTC left its own bound: no longer a reference


@dataclass(frozen=True, slots=True)
class SourceVerdict:
    status: SourceStatus
    finding: Finding
    gap_ns: int = 0  # how far from the majority or the prediction, when that is the finding
    text: str = ""  # the driver's words (DRIVER), or the track's note
    cause: Finding | None = None  # RTC_DRIFTED: the gap that showed it


@dataclass(frozen=True, slots=True)
class RtcDiscipline:
    """The RTC was set from the consensus at ``set_mono_ns``, within ``set_error_ns``."""

    set_mono_ns: int
    set_error_ns: int  # |RTC − truth| at set_mono_ns, at most


class Track:
    """What the ensemble remembers about one source: its last word."""

    __slots__ = (
        "evidence",
        "kind",
        "last_mono_ns",
        "latency",
        "name",
        "note",
        "problem",
        "samples",
    )

    def __init__(self, name: str, kind: SourceKind, latency: NmeaLatency | None) -> None:
        self.name = name
        self.kind = kind
        self.samples = 0
        self.last_mono_ns: int | None = None
        self.evidence: Evidence | None = None  # the last trusted sample's interval for θ
        self.problem: tuple[SourceStatus, str] | None = None  # the last sample was refused
        self.latency = latency
        self.note = ""


@dataclass(frozen=True, slots=True)
class Survey:
    """Every source seen from one instant."""

    verdicts: Mapping[str, SourceVerdict]  # the sources that do not vote, and why
    voters: Mapping[str, Evidence]  # voter key → its interval for θ at the instant
    members: Mapping[str, tuple[str, ...]]  # voter key → the sources it speaks for
    stale_at_ns: int | None  # the first later instant a source still counted goes stale
    gnss_split: bool  # the GPS and its PPS disagree: the GNSS voter is their hull


def lost_power(sample: TimeSample) -> bool:
    """DS3231 datasheet, register 0Fh bit 7 (OSF): the RTC's oscillator stopped."""
    return sample.kind is SourceKind.RTC and bool(getattr(sample, "osf", False))


class Sources:
    """The tracks of every source; changed only by samples and by the RTC being set."""

    def __init__(self, policy: Policy, leaps: LeapTable) -> None:
        self._p = policy
        self._leaps = leaps
        self._tracks: dict[str, Track] = {}
        self._stale_ns = {kind: policy.stale_after_ns(kind) for kind in SourceKind}
        self._latency_settings = LatencySettings(
            samples=policy.nmea_calibration_samples,
            jitter_margin_ns=int(policy.nmea_jitter_margin_ms * 1e6),
            jump_tolerance_ns=int(policy.nmea_latency_jump_ms * 1e6),
            jump_samples=policy.nmea_latency_jump_samples,
        )
        self.version = 0  # counts trusted evidence: the model knows what it has absorbed

    def __iter__(self) -> Iterator[Track]:
        """The tracks in name order."""
        return iter([self._tracks[name] for name in sorted(self._tracks)])

    def has(self, kind: SourceKind) -> bool:
        return any(t.kind is kind for t in self._tracks.values())

    # ------------------------------------------------------------------ samples in

    def take(
        self,
        sample: TimeSample,
        *,
        slope: SlopeRange,
        rtc: RtcDiscipline | None,
        falsetickers: frozenset[str],
    ) -> None:
        """One sample from a driver. Untrusted samples are shown, never used as evidence."""
        track = self._tracks.get(sample.source)
        if track is None:
            latency = NmeaLatency(self._latency_settings) if sample.kind is SourceKind.GPS else None
            track = self._tracks[sample.source] = Track(sample.source, sample.kind, latency)
        elif track.kind is not sample.kind:
            raise ClockError(
                f"source {sample.source!r} changed kind from {track.kind.value} to "
                f"{sample.kind.value}"
            )
        track.samples += 1
        track.last_mono_ns = sample.mono_ns
        if lost_power(sample):
            track.evidence = None
            track.problem = (
                SourceStatus.UNSYNCHRONISED,
                "oscillator stopped (OSF): the RTC lost power; waiting to be set",
            )
            return
        if not sample.trusted:
            status = (
                SourceStatus.UNSYNCHRONISED
                if sample.leap is Leap.UNKNOWN
                else SourceStatus.UNTRUSTED
            )
            track.problem = (status, sample.reason)
            return
        if sample.leap is Leap.UNKNOWN:  # RFC 5905 §7.3: LI=3, the server is unsynchronised
            track.problem = (SourceStatus.UNSYNCHRONISED, "the source says it is unsynchronised")
            return
        track.problem = None
        if sample.leap in (Leap.INSERT, Leap.DELETE):
            self._learn_leap(sample)
        window_ns = int(self._p.leap_window_s * NS_PER_S)
        leap = self._leaps.in_window(
            sample.utc_ns - sample.error_ns, sample.utc_ns + sample.error_ns, window_ns
        )
        if leap is not None:
            track.note = "sample taken in the leap-second window: not used"
            return
        track.note = ""
        m = sample.mono_ns
        theta = self._leaps.to_continuous(sample.utc_ns) - m
        lo, hi = theta - sample.error_ns, theta + sample.error_ns
        if track.latency is not None:
            ref = self._reference(m, slope, falsetickers)
            lo, hi = self._calibrate_nmea(track, sample, ref, lo, hi)
        if sample.kind is SourceKind.RTC and rtc is not None and m >= rtc.set_mono_ns:
            # The RTC drifts at most rtc_max_ppm from the moment it was set (DS3231: ±2 ppm),
            # over true elapsed time, itself at most crystal_max_ppm longer than monotonic.
            age = m - rtc.set_mono_ns
            ppm = self._p.rtc_max_ppm * (1 + self._p.crystal_max_ppm * 1e-6)
            widen = rtc.set_error_ns + math.ceil(age * ppm * 1e-6)
            lo, hi = lo - widen, hi + widen
        track.evidence = Evidence(m, lo, hi)
        self.version += 1

    def forget_rtc(self) -> None:
        """The RTC was just set: what it said before is no evidence of what it says now."""
        for t in self._tracks.values():
            if t.kind is SourceKind.RTC:
                t.evidence = None
                t.problem = None

    def _learn_leap(self, sample: TimeSample) -> None:
        leap = LeapSecond(
            at_posix_s=next_month_start_s(sample.utc_ns), insert=sample.leap is Leap.INSERT
        )
        if self._leaps.add(leap):
            log.info(
                "%s announces a leap second (%s) at %d POSIX; no tokens within %.0f s of it",
                sample.source,
                "inserted" if leap.insert else "deleted",
                leap.at_posix_s,
                self._p.leap_window_s,
            )

    def _usable(self, track: Track, m: int) -> Evidence | None:
        ev = track.evidence
        if track.problem is not None or ev is None:
            return None
        if abs(m - ev.mono_ns) > self._stale_ns[track.kind]:
            return None
        return ev

    def _reference(
        self, m: int, slope: SlopeRange, falsetickers: frozenset[str]
    ) -> Evidence | None:
        """The best evidence at ``m`` that does not depend on NMEA: PPS, else NTP."""
        pps = [
            ev.at(m, slope)
            for t in self._tracks.values()
            if t.kind is SourceKind.PPS and (ev := self._usable(t, m)) is not None
        ]
        if pps:
            ref = pps[0]
            for ev in pps[1:]:
                both = ref.intersect(ev)
                ref = both if both is not None else ref.hull(ev)
            return ref
        ntp = [
            ev.at(m, slope)
            for t in self._tracks.values()
            if t.kind is SourceKind.NTP
            and t.name not in falsetickers
            and (ev := self._usable(t, m)) is not None
        ]
        if not ntp:
            return None
        ref = ntp[0]
        for ev in ntp[1:]:
            ref = ref.hull(ev)  # any one honest server is enough for the hull to hold
        return ref

    def _calibrate_nmea(
        self, track: Track, sample: TimeSample, ref: Evidence | None, lo: int, hi: int
    ) -> tuple[int, int]:
        label = getattr(sample, "label_utc_ns", None)
        if not isinstance(label, int) or track.latency is None:
            return lo, hi
        label_theta = self._leaps.to_continuous(label) - sample.mono_ns
        max_ref_ns = int(self._p.nmea_calibration_max_ref_ms * 1e6)
        if ref is not None and ref.half_width_ns <= max_ref_ns:
            # latency = UTC at arrival − labelled second = θ − label_θ
            track.latency.observe(ref.lo_ns - label_theta, ref.hi_ns - label_theta)
        cal = track.latency.usable()
        if cal is not None:
            clo, chi = max(lo, label_theta + cal[0]), min(hi, label_theta + cal[1])
            if clo <= chi:  # never beyond what the driver itself allows
                return clo, chi
        return lo, hi

    # ------------------------------------------------------------------ seen from an instant

    def survey(
        self,
        m: int,
        *,
        slope: SlopeRange,
        rtc: RtcDiscipline | None,
        rtc_fault: SourceVerdict | None,
    ) -> Survey:
        """Which sources vote at ``m`` and with what interval; why the others do not."""
        verdicts: dict[str, SourceVerdict] = {}
        voters: dict[str, Evidence] = {}
        members: dict[str, list[str]] = {}
        stale_at: list[int] = []
        split = False
        for t in self:
            if t.problem is not None:
                verdicts[t.name] = SourceVerdict(t.problem[0], Finding.DRIVER, text=t.problem[1])
                continue
            if t.evidence is None:
                verdicts[t.name] = (
                    SourceVerdict(SourceStatus.WAITING, Finding.RTC_NOT_SET)
                    if t.kind is SourceKind.RTC
                    else SourceVerdict(SourceStatus.WAITING, Finding.NO_SAMPLE, text=t.note)
                )
                continue
            stale_ns = self._stale_ns[t.kind]
            if abs(m - t.evidence.mono_ns) > stale_ns:
                verdicts[t.name] = SourceVerdict(SourceStatus.STALE, Finding.STALE)
                continue
            stale_at.append(t.evidence.mono_ns + stale_ns + 1)
            if t.kind is SourceKind.RTC and (rtc is None or t.evidence.mono_ns < rtc.set_mono_ns):
                verdicts[t.name] = (
                    rtc_fault
                    if rtc is None and rtc_fault is not None
                    else SourceVerdict(SourceStatus.WAITING, Finding.RTC_NOT_SET, text=t.note)
                )
                continue
            key = GNSS if t.kind in (SourceKind.GPS, SourceKind.PPS) else t.name
            members.setdefault(key, []).append(t.name)
            ev = t.evidence.at(m, slope)
            if key in voters:
                both = voters[key].intersect(ev)
                split = split or both is None
                voters[key] = both if both is not None else voters[key].hull(ev)
            else:
                voters[key] = ev
        return Survey(
            verdicts=verdicts,
            voters=voters,
            members={k: tuple(v) for k, v in members.items()},
            stale_at_ns=min(stale_at) if stale_at else None,
            gnss_split=split,
        )
