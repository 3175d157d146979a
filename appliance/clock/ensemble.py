"""The clock ensemble: samples in, "what time is it, how sure are we" out.

Pure: no I/O and no clock reads; every method takes the raw-monotonic instant it is about.
The model (ADR 0001) is ``UTC(m) = m + θ(m)`` on ``CLOCK_MONOTONIC_RAW``; every source's
evidence is an interval for θ that widens with age, selection is an interval vote
(``selection``), the quorum and the bound follow ADR 0003.

Memory: the *anchor* is the last combined interval for θ; grown to any later instant at the
crystal's slope range it is the *prediction*. New evidence from a quorum is intersected with
the prediction (both hold the truth, so their intersection does); a quorum that does not
meet the prediction at all is a jump, hence an alarm, never a new truth. Without new
evidence the anchor is not touched, so the bound only grows.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

from drivers.sample import Leap, SourceKind, TimeSample

from .assessment import Assessment, ClockState, Issue, RtcAction, SourceReport, SourceStatus, Window
from .errors import ClockError, TimeNotAvailable
from .interval import Evidence, SlopeRange
from .latency import LatencySettings, NmeaLatency
from .leap import NS_PER_S, LeapSecond, LeapTable, next_month_start_s
from .policy import Policy
from .selection import Voter, select
from .sourcestats import FrequencyEstimate, OffsetWindow

log = logging.getLogger(__name__)

GNSS = "gnss"  # the voter key of the GPS receiver (its NMEA and PPS are one voice)
RTC_ACTION_RETRY_NS = 60 * NS_PER_S  # ask again at most this often if nobody acts
RTC_RESET_GAIN_NS = 1_000_000  # re-set early when that would tighten the RTC by more than this


def _ms(ns: int) -> str:
    """A duration for people: 2.5 s, 12.3 ms, 40 µs."""
    if abs(ns) >= NS_PER_S:
        return f"{ns / 1e9:.4g} s"
    if abs(ns) >= 1_000_000:
        return f"{ns / 1e6:.3g} ms"
    return f"{ns / 1e3:.3g} µs"


class _Track:
    """What the ensemble remembers about one source."""

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
class _RtcDiscipline:
    set_mono_ns: int
    set_error_ns: int  # |RTC − truth| at set_mono_ns, at most


@dataclass(frozen=True, slots=True)
class _Cache:
    assessment: Assessment
    combined: Evidence | None  # θ interval at assessment.mono_ns
    slope: SlopeRange
    version: int


class Ensemble:
    """Cross-checks the time sources; answers state, UTC and bound for any instant.

    Thread-safe: drivers may ``add`` from their threads while the TSA calls ``issue``.
    """

    def __init__(self, policy: Policy | None = None) -> None:
        self._p = policy if policy is not None else Policy()
        p = self._p
        self._lock = threading.Lock()
        self._tracks: dict[str, _Track] = {}
        self._version = 0
        self._anchor: Evidence | None = None
        self._anchor_version = -1
        self._window = OffsetWindow(p.frequency_window_points)
        self._freq: FrequencyEstimate | None = None
        self._slope = SlopeRange.symmetric(p.crystal_max_ppm)
        self._alarm = ""
        self._ever_synced = False
        self._leaps = LeapTable(p.leap_seconds)
        self._rtc: _RtcDiscipline | None = None
        self._rtc_requested_ns: int | None = None
        self._last_issued_ns: int | None = None
        self._cache: _Cache | None = None
        self._falsetickers: frozenset[str] = frozenset()
        self._last_state: ClockState | None = None
        self._stale_ns = {kind: p.stale_after_ns(kind) for kind in SourceKind}
        self._latency_settings = LatencySettings(
            samples=p.nmea_calibration_samples,
            jitter_margin_ns=int(p.nmea_jitter_margin_ms * 1e6),
            jump_tolerance_ns=int(p.nmea_latency_jump_ms * 1e6),
            jump_samples=p.nmea_latency_jump_samples,
        )

    @property
    def policy(self) -> Policy:
        return self._p

    # ------------------------------------------------------------------ samples in

    def add(self, sample: TimeSample) -> None:
        """One sample from a driver. Untrusted samples are shown, never used as evidence."""
        with self._lock:
            self._add(sample)

    def _add(self, sample: TimeSample) -> None:
        track = self._tracks.get(sample.source)
        if track is None:
            latency = NmeaLatency(self._latency_settings) if sample.kind is SourceKind.GPS else None
            track = self._tracks[sample.source] = _Track(sample.source, sample.kind, latency)
        elif track.kind is not sample.kind:
            raise ClockError(
                f"source {sample.source!r} changed kind from {track.kind.value} to "
                f"{sample.kind.value}"
            )
        track.samples += 1
        track.last_mono_ns = sample.mono_ns
        osf = bool(getattr(sample, "osf", False))
        if sample.kind is SourceKind.RTC and osf:
            # DS3231 datasheet, register 0Fh bit 7 (OSF): the oscillator stopped.
            self._rtc = None
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
            lo, hi = self._calibrate_nmea(track, sample, lo, hi)
        if sample.kind is SourceKind.RTC and self._rtc is not None and m >= self._rtc.set_mono_ns:
            # The RTC drifts at most rtc_max_ppm from the moment it was set (DS3231: ±2 ppm),
            # over true elapsed time, itself at most crystal_max_ppm longer than monotonic.
            age = m - self._rtc.set_mono_ns
            ppm = self._p.rtc_max_ppm * (1 + self._p.crystal_max_ppm * 1e-6)
            widen = self._rtc.set_error_ns + math.ceil(age * ppm * 1e-6)
            lo, hi = lo - widen, hi + widen
        track.evidence = Evidence(m, lo, hi)
        self._version += 1

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

    def _usable(self, track: _Track, m: int) -> Evidence | None:
        ev = track.evidence
        if track.problem is not None or ev is None:
            return None
        if abs(m - ev.mono_ns) > self._stale_ns[track.kind]:
            return None
        return ev

    def _reference(self, m: int) -> Evidence | None:
        """The best evidence at ``m`` that does not depend on NMEA: PPS, else NTP."""
        pps = [
            ev.at(m, self._slope)
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
            ev.at(m, self._slope)
            for t in self._tracks.values()
            if t.kind is SourceKind.NTP
            and t.name not in self._falsetickers
            and (ev := self._usable(t, m)) is not None
        ]
        if not ntp:
            return None
        ref = ntp[0]
        for ev in ntp[1:]:
            ref = ref.hull(ev)  # any one honest server is enough for the hull to hold
        return ref

    def _calibrate_nmea(
        self, track: _Track, sample: TimeSample, lo: int, hi: int
    ) -> tuple[int, int]:
        label = getattr(sample, "label_utc_ns", None)
        if not isinstance(label, int) or track.latency is None:
            return lo, hi
        m = sample.mono_ns
        label_theta = self._leaps.to_continuous(label) - m
        ref = self._reference(m)
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

    # ------------------------------------------------------------------ assessment

    def assess(self, mono_ns: int) -> Assessment:
        """State, UTC estimate, bound and every source's status at ``mono_ns``."""
        with self._lock:
            return self._assess(mono_ns).assessment

    def _grown(self, m: int) -> Evidence | None:
        return self._anchor.at(m, self._slope) if self._anchor is not None else None

    def _set_anchor(self, combined: Evidence, hull: Evidence) -> None:
        self._anchor = combined
        self._anchor_version = self._version
        last = self._window.last_mono_ns
        interval_ns = int(self._p.frequency_point_interval_s * NS_PER_S)
        if last is None or combined.mono_ns - last >= interval_ns:
            # The hull, not the combined interval: the frequency is measured, not assumed.
            self._window.add(hull)
            self._freq = self._window.estimate(
                self._p.crystal_wander_ppm * 1e-6, int(self._p.frequency_min_span_s * NS_PER_S)
            )
            self._slope = self._slope_range()

    def _slope_range(self) -> SlopeRange:
        worst = SlopeRange.symmetric(self._p.crystal_max_ppm)
        if self._freq is None:
            return worst
        wander = self._p.crystal_wander_ppm * 1e-6
        lo = max(worst.lo, self._freq.slope.lo - wander)
        hi = min(worst.hi, self._freq.slope.hi + wander)
        return SlopeRange(lo, hi) if lo <= hi else worst

    def _drop_model(self, why: str) -> None:
        log.warning("clock model dropped: %s", why)
        self._anchor = None
        self._anchor_version = -1
        self._window.clear()
        self._freq = None
        self._slope = SlopeRange.symmetric(self._p.crystal_max_ppm)
        self._alarm = ""

    def _assess(self, m: int) -> _Cache:
        p = self._p
        statuses: dict[str, tuple[SourceStatus, str]] = {}
        at_m: dict[str, Evidence] = {}
        members: dict[str, list[str]] = {}
        voter_ev: dict[str, Evidence] = {}
        for name in sorted(self._tracks):
            t = self._tracks[name]
            if t.evidence is not None:
                at_m[name] = t.evidence.at(m, self._slope)
            if t.problem is not None:
                statuses[name] = t.problem
                continue
            if t.evidence is None:
                statuses[name] = (SourceStatus.WAITING, t.note or "no trusted sample yet")
                if t.kind is SourceKind.RTC:
                    statuses[name] = (SourceStatus.WAITING, "waiting to be set from the consensus")
                continue
            age = m - t.evidence.mono_ns
            if abs(age) > self._stale_ns[t.kind]:
                statuses[name] = (SourceStatus.STALE, f"no trusted sample for {_ms(age)}")
                continue
            if t.kind is SourceKind.RTC and (
                self._rtc is None or t.evidence.mono_ns < self._rtc.set_mono_ns
            ):
                statuses[name] = (
                    SourceStatus.WAITING,
                    t.note or "waiting to be set from the consensus",
                )
                continue
            key = GNSS if t.kind in (SourceKind.GPS, SourceKind.PPS) else name
            members.setdefault(key, []).append(name)
            ev = at_m[name]
            if key in voter_ev:
                both = voter_ev[key].intersect(ev)
                if both is None:
                    log.warning("GPS and PPS disagree: using the hull of both")
                voter_ev[key] = both if both is not None else voter_ev[key].hull(ev)
            else:
                voter_ev[key] = ev

        voters = [Voter(k, ev.lo_ns, ev.hi_ns) for k, ev in voter_ev.items()]
        sel = select(voters, p.hidden_faults)
        classes = {self._class_of(k) for k in sel.truechimers} - {None}
        quorum = sel.majority and len(classes) >= p.quorum
        hull = (
            Evidence(m, sel.lo_ns, sel.hi_ns)
            if sel.lo_ns is not None and sel.hi_ns is not None
            else None
        )
        pred = self._grown(m)
        max_err = p.max_error_ns
        new_evidence = self._version != self._anchor_version

        if self._alarm and pred is not None and pred.half_width_ns > max_err:
            self._drop_model("the prediction that raised the alarm is now wider than max_error_s")
            pred = None

        combined: Evidence | None = None
        state: ClockState
        reason = ""
        voter_status: dict[str, tuple[SourceStatus, str]] = {}
        if quorum and hull is not None:
            if pred is not None:
                if hull.intersect(pred) is None:
                    if pred.half_width_ns <= max_err:
                        if not self._alarm:
                            log.error(
                                "ALARM: the agreeing sources (%s) jumped %s away from the "
                                "prediction; no tokens until they reconverge",
                                ", ".join(sorted(sel.truechimers)),
                                _ms(hull.distance_ns(pred)),
                            )
                        self._alarm = (
                            f"the agreeing sources ({', '.join(sorted(sel.truechimers))}) "
                            f"moved {_ms(hull.distance_ns(pred))} away from the prediction"
                        )
                    else:
                        self._drop_model("the sources are back after the holdover expired")
                        pred = None
                elif self._alarm:
                    log.warning("alarm cleared: the sources agree with the prediction again")
                    self._alarm = ""
            if self._alarm:
                state, combined = ClockState.ALARM, pred
            else:
                if new_evidence or pred is None:
                    combined = hull.intersect(pred) if pred is not None else hull
                    assert combined is not None
                    self._set_anchor(combined, hull)
                else:
                    combined = pred
                self._ever_synced = True
                state = ClockState.SYNCHRONISED
                for key in sel.truechimers:
                    voter_status[key] = (SourceStatus.SELECTED, "")
        elif self._alarm:
            state, combined = ClockState.ALARM, pred
        elif pred is not None:
            state, combined = ClockState.HOLDOVER, pred
            if p.hidden_faults == 0:  # only then may a single witness narrow the bound
                for key, ev in voter_ev.items():
                    if self._class_of(key) is None and (both := ev.intersect(combined)):
                        combined = both
                if new_evidence and combined != pred:
                    self._anchor, self._anchor_version = combined, self._version
        else:
            state = ClockState.UNSYNCHRONISED if self._ever_synced else ClockState.STARTING

        # Statuses of the voters not settled above.
        have = ", ".join(sorted(c for c in classes if c)) or "none"
        for key, ev in voter_ev.items():
            if key in voter_status:
                continue
            if sel.majority and key in sel.falsetickers:
                gap = hull.distance_ns(ev) if hull is not None else 0
                voter_status[key] = (
                    SourceStatus.FALSETICKER,
                    f"disagrees with the majority by {_ms(gap)}",
                )
            elif state is ClockState.ALARM and key in sel.truechimers:
                gap = pred.distance_ns(ev) if pred is not None else 0
                voter_status[key] = (
                    SourceStatus.ALARM,
                    f"jumped {_ms(gap)} away from the prediction",
                )
            elif combined is not None and ev.intersect(combined) is None:
                voter_status[key] = (
                    SourceStatus.FALSETICKER,
                    f"{_ms(combined.distance_ns(ev))} away from the prediction",
                )
            elif not sel.majority:
                voter_status[key] = (SourceStatus.WAITING, "no majority: the sources disagree")
            else:
                voter_status[key] = (
                    SourceStatus.WAITING,
                    f"agrees, but {p.quorum} independent sources are needed (have: {have})",
                )
            if (
                voter_status[key][0] is SourceStatus.FALSETICKER
                and self._class_of(key) is None
                and state in (ClockState.SYNCHRONISED, ClockState.HOLDOVER)
            ):
                # An RTC out of its own bound is a fault: it is no longer a reference.
                self._rtc = None
                voter_status[key] = (
                    SourceStatus.FALSETICKER,
                    f"drifted beyond its ±{p.rtc_max_ppm:g} ppm bound "
                    f"({voter_status[key][1]}); waiting to be set again",
                )
        for key, names in members.items():
            for name in names:
                status, why = voter_status[key]
                latency = self._tracks[name].latency
                note = latency.note if latency is not None else ""
                statuses[name] = (status, "; ".join(x for x in (why, note) if x))
        self._falsetickers = frozenset(
            n for n, (s, _) in statuses.items() if s is SourceStatus.FALSETICKER
        )

        # Why not issuing, in plain words.
        issuing = False
        if state is ClockState.ALARM:
            reason = f"alarm: {self._alarm}; no tokens until they agree with it again"
        elif state in (ClockState.STARTING, ClockState.UNSYNCHRONISED):
            if not voters:
                reason = "no usable time source"
            elif not sel.majority:
                reason = "the time sources disagree and no majority agrees"
            else:
                reason = (
                    f"waiting for {p.quorum} independent agreeing sources (have: {have})"
                    if not quorum
                    else ""
                )
            if self._ever_synced and not reason:
                reason = "holdover expired"
        elif combined is not None and combined.half_width_ns > max_err:
            if state is ClockState.HOLDOVER:
                reason = (
                    f"holdover expired: the bound ({_ms(combined.half_width_ns)}) exceeds "
                    f"{p.max_error_s:g} s"
                )
            else:
                reason = (
                    f"the sources agree only within {_ms(combined.half_width_ns)}, more than "
                    f"{p.max_error_s:g} s"
                )
            state = ClockState.UNSYNCHRONISED
        else:
            issuing = combined is not None

        utc_ns = bound_ns = None
        if combined is not None:
            lo = self._leaps.to_posix(m + combined.lo_ns)
            hi = self._leaps.to_posix(m + combined.hi_ns)
            if issuing:
                leap = self._leaps.in_window(lo, hi, int(p.leap_window_s * NS_PER_S))
                if leap is not None:
                    state, issuing = ClockState.LEAP_WINDOW, False
                    reason = (
                        f"within {p.leap_window_s:g} s of the leap second at "
                        f"{leap.at_posix_s} POSIX"
                    )
            utc_ns = (lo + hi) // 2
            bound_ns = max(hi - utc_ns, utc_ns - lo)

        if state is not self._last_state:
            level = logging.INFO if issuing else logging.WARNING
            log.log(level, "clock %s%s", state.value, f": {reason}" if reason else "")
            self._last_state = state

        reports = tuple(
            SourceReport(
                name=name,
                kind=self._tracks[name].kind,
                status=statuses[name][0],
                reason=statuses[name][1],
                offset_ns=(
                    at_m[name].mid_ns - combined.mid_ns
                    if name in at_m and combined is not None
                    else None
                ),
                bound_ns=at_m[name].half_width_ns if name in at_m else None,
                last_mono_ns=self._tracks[name].last_mono_ns,
                samples=self._tracks[name].samples,
            )
            for name in sorted(self._tracks)
        )
        frequency = skew = None
        if self._freq is not None:
            frequency = -self._freq.regression * 1e6
            skew = self._freq.slope.half_width * 1e6
        assessment = Assessment(
            mono_ns=m,
            state=state,
            issuing=issuing,
            reason="" if issuing else reason,
            utc_ns=utc_ns,
            bound_ns=bound_ns,
            frequency_ppm=frequency,
            skew_ppm=skew,
            sources=reports,
        )
        self._cache = _Cache(assessment, combined, self._slope, self._version)
        return self._cache

    @staticmethod
    def _class_of(key: str) -> str | None:
        """The independence class a voter counts for in the quorum (ADR 0003)."""
        if key == GNSS:
            return GNSS
        if key.startswith(SourceKind.NTP.value):
            return SourceKind.NTP.value
        return None  # the RTC learned its time from the others: a witness, not a source

    # ------------------------------------------------------------------ tokens

    def _fresh(self, m: int) -> _Cache:
        c = self._cache
        limit = int(self._p.reassess_after_s * NS_PER_S)
        if c is None or c.version != self._version or abs(m - c.assessment.mono_ns) > limit:
            c = self._assess(m)
        return c

    def issue(self, mono_ns: int) -> Issue:
        """The time for one token at ``mono_ns``, or ``TimeNotAvailable``.

        O(1) between samples: the cached assessment's interval is grown to ``mono_ns``.
        ``utc_ns`` never decreases from one call to the next (genTime, RFC 3161 §2.4.2).
        """
        with self._lock:
            window = self._issuing_window(mono_ns)
            lo, hi = window.lo_ns, window.hi_ns
            utc = (lo + hi) // 2
            if self._last_issued_ns is not None and utc < self._last_issued_ns:
                utc = self._last_issued_ns  # never backwards; the bound covers the step
            bound = max(hi - utc, utc - lo)
            if bound > self._p.max_error_ns:
                raise TimeNotAvailable(
                    f"the bound ({_ms(bound)}) exceeds {self._p.max_error_s:g} s",
                    window.state.value,
                )
            self._last_issued_ns = utc
            return Issue(utc, bound, window.state)

    def window(self, mono_ns: int) -> Window:
        """Where UTC lies at ``mono_ns`` while the clock issues, or ``TimeNotAvailable``.

        What :meth:`issue` starts from, without its guard against going backwards: for
        handing the time to another process (``appliance.workers``), which keeps its own.
        """
        with self._lock:
            return self._issuing_window(mono_ns)

    def _issuing_window(self, mono_ns: int) -> Window:
        c = self._fresh(mono_ns)
        a = c.assessment
        if not a.issuing or c.combined is None:
            raise TimeNotAvailable(a.reason or a.state.value, a.state.value)
        ev = c.combined.at(mono_ns, c.slope)
        lo = self._leaps.to_posix(mono_ns + ev.lo_ns)
        hi = self._leaps.to_posix(mono_ns + ev.hi_ns)
        leap = self._leaps.in_window(lo, hi, int(self._p.leap_window_s * NS_PER_S))
        if leap is not None:
            raise TimeNotAvailable(
                f"within {self._p.leap_window_s:g} s of the leap second at {leap.at_posix_s} POSIX",
                ClockState.LEAP_WINDOW.value,
            )
        return Window(mono_ns, lo, hi, a.state)

    # ------------------------------------------------------------------ the RTC

    def rtc_action(self, mono_ns: int) -> RtcAction | None:
        """When the RTC should be (re)set from the consensus, what to set it to."""
        with self._lock:
            if not any(t.kind is SourceKind.RTC for t in self._tracks.values()):
                return None
            c = self._fresh(mono_ns)
            if c.assessment.state is not ClockState.SYNCHRONISED or c.combined is None:
                return None
            rtc = self._rtc
            resync_ns = int(self._p.rtc_resync_s * NS_PER_S)
            ev = c.combined.at(mono_ns, c.slope)
            if (
                rtc is not None
                and mono_ns - rtc.set_mono_ns < resync_ns
                and rtc.set_error_ns <= 2 * ev.half_width_ns + RTC_RESET_GAIN_NS
            ):
                return None  # set recently, and setting it again would not make it better
            last = self._rtc_requested_ns
            if last is not None and 0 <= mono_ns - last < RTC_ACTION_RETRY_NS:
                return None
            self._rtc_requested_ns = mono_ns
            rate = self._freq.regression if self._freq is not None else 0.0
            utc = self._leaps.to_posix(mono_ns + ev.mid_ns)
            return RtcAction(mono_ns, utc, ev.half_width_ns, rate)

    def rtc_was_set(self, mono_ns: int, utc_ns: int, error_ns: int = 0) -> None:
        """The RTC was set: at ``mono_ns`` it read ``utc_ns``, give or take ``error_ns``.

        From now on its samples are evidence, widening at ``rtc_max_ppm`` from this moment.
        """
        if error_ns < 0:
            raise ClockError(f"error_ns must be >= 0, got {error_ns}")
        with self._lock:
            c = self._fresh(mono_ns)
            if c.combined is None or c.assessment.state is not ClockState.SYNCHRONISED:
                raise ClockError("the RTC can only be disciplined while synchronised")
            ev = c.combined.at(mono_ns, c.slope)
            theta = self._leaps.to_continuous(utc_ns) - mono_ns
            set_error = max(theta - ev.lo_ns, ev.hi_ns - theta) + error_ns
            self._rtc = _RtcDiscipline(mono_ns, set_error)
            self._rtc_requested_ns = None
            for t in self._tracks.values():
                if t.kind is SourceKind.RTC:
                    t.evidence = None
                    t.problem = None
            self._cache = None
            log.info("RTC set from the consensus (within %s)", _ms(set_error))
