"""The words: a decision, seen from an instant, as the ``Assessment`` people read.

Everything here is a pure function of a ``Projection`` and the sources' tracks: it says why
the clock does not issue, why each source has its status, and the log line of each
transition. No number is decided here; each is read from the decision or computed at the
asked instant (a source's age, its interval, the bound).
"""

from __future__ import annotations

import logging

from .assessment import Assessment, ClockState, SourceReport
from .leap import NS_PER_S
from .policy import Policy
from .sources import Finding, Sources, SourceVerdict, Track
from .state import Alarm, Decision, Event, Projection


def duration(ns: int) -> str:
    """A duration for people: 2.5 s, 12.3 ms, 40 µs."""
    if abs(ns) >= NS_PER_S:
        return f"{ns / 1e9:.4g} s"
    if abs(ns) >= 1_000_000:
        return f"{ns / 1e6:.3g} ms"
    return f"{ns / 1e3:.3g} µs"


def have(decision: Decision) -> str:
    """The independent classes among the agreeing sources, for a reason."""
    return ", ".join(decision.vote.classes) or "none"


def alarm_words(alarm: Alarm) -> str:
    return (
        f"the agreeing sources ({', '.join(alarm.sources)}) moved {duration(alarm.gap_ns)} "
        "away from the prediction"
    )


def reason(p: Projection, policy: Policy) -> str:
    """Why the clock does not issue at ``p.mono_ns``, in plain words; empty when it does."""
    d = p.decision
    if p.issuing:
        return ""
    if d.state is ClockState.ALARM:
        assert d.model.alarm is not None
        return f"alarm: {alarm_words(d.model.alarm)}; no tokens until they agree with it again"
    if d.state in (ClockState.STARTING, ClockState.UNSYNCHRONISED):
        words = ""
        if not d.vote.voters:
            words = "no usable time source"
        elif not d.vote.selection.majority:
            words = "the time sources disagree and no majority agrees"
        elif not d.vote.quorum:
            words = f"waiting for {policy.quorum} independent agreeing sources (have: {have(d)})"
        if d.model.ever_synced and not words:
            words = "holdover expired"
        return words
    if p.too_wide and p.combined is not None:
        width = duration(p.combined.half_width_ns)
        if d.state is ClockState.HOLDOVER:
            return f"holdover expired: the bound ({width}) exceeds {policy.max_error_s:g} s"
        return f"the sources agree only within {width}, more than {policy.max_error_s:g} s"
    if p.leap is not None:
        return leap_words(p.leap.at_posix_s, policy)
    return ""


def leap_words(at_posix_s: int, policy: Policy) -> str:
    return f"within {policy.leap_window_s:g} s of the leap second at {at_posix_s} POSIX"


def source_reason(
    v: SourceVerdict, track: Track, m: int, decision: Decision, policy: Policy
) -> str:
    """Why ``track`` has the status ``v`` at ``m``."""
    words = _finding_words(v.finding, v, track, m, decision, policy)
    if v.finding is Finding.RTC_DRIFTED:
        inner = _finding_words(v.cause or Finding.PREDICTION_GAP, v, track, m, decision, policy)
        words = (
            f"drifted beyond its ±{policy.rtc_max_ppm:g} ppm bound ({inner}); "
            "waiting to be set again"
        )
    if track.name in decision.voting and track.latency is not None:
        words = "; ".join(x for x in (words, track.latency.note) if x)
    return words


def _finding_words(
    f: Finding, v: SourceVerdict, track: Track, m: int, decision: Decision, policy: Policy
) -> str:
    if f is Finding.DRIVER:
        return v.text
    if f is Finding.NO_SAMPLE:
        return v.text or "no trusted sample yet"
    if f is Finding.RTC_NOT_SET:
        return v.text or "waiting to be set from the consensus"
    if f is Finding.STALE:
        since = track.evidence.mono_ns if track.evidence is not None else m
        return f"no trusted sample for {duration(m - since)}"
    if f is Finding.MAJORITY_GAP:
        return f"disagrees with the majority by {duration(v.gap_ns)}"
    if f is Finding.JUMPED:
        return f"jumped {duration(v.gap_ns)} away from the prediction"
    if f is Finding.PREDICTION_GAP:
        return f"{duration(v.gap_ns)} away from the prediction"
    if f is Finding.NO_MAJORITY:
        return "no majority: the sources disagree"
    if f is Finding.NO_QUORUM:
        return (
            f"agrees, but {policy.quorum} independent sources are needed (have: {have(decision)})"
        )
    return ""  # SELECTED; RTC_DRIFTED is worded around its cause


def assessment(p: Projection, sources: Sources, policy: Policy) -> Assessment:
    """Everything ``/health`` shows, at ``p.mono_ns``."""
    d, m = p.decision, p.mono_ns
    slope = d.model.slope
    reports = []
    for track in sources:
        v = d.verdicts[track.name]
        ev = track.evidence.at(m, slope) if track.evidence is not None else None
        reports.append(
            SourceReport(
                name=track.name,
                kind=track.kind,
                status=v.status,
                reason=source_reason(v, track, m, d, policy),
                offset_ns=(
                    ev.mid_ns - p.combined.mid_ns
                    if ev is not None and p.combined is not None
                    else None
                ),
                bound_ns=ev.half_width_ns if ev is not None else None,
                last_mono_ns=track.last_mono_ns,
                samples=track.samples,
            )
        )
    utc_ns = bound_ns = None
    if p.lo_ns is not None and p.hi_ns is not None:
        utc_ns = (p.lo_ns + p.hi_ns) // 2
        bound_ns = max(p.hi_ns - utc_ns, utc_ns - p.lo_ns)
    freq = d.model.freq
    return Assessment(
        mono_ns=m,
        state=p.state,
        issuing=p.issuing,
        reason=reason(p, policy),
        utc_ns=utc_ns,
        bound_ns=bound_ns,
        frequency_ppm=-freq.regression * 1e6 if freq is not None else None,
        skew_ppm=freq.slope.half_width * 1e6 if freq is not None else None,
        sources=tuple(reports),
    )


def event_line(event: Event, decision: Decision) -> tuple[int, str]:
    """The log level and line of one transition."""
    if event is Event.ALARM_RAISED and decision.model.alarm is not None:
        alarm = decision.model.alarm
        return logging.ERROR, (
            f"ALARM: the agreeing sources ({', '.join(alarm.sources)}) jumped "
            f"{duration(alarm.gap_ns)} away from the prediction; no tokens until they reconverge"
        )
    lines = {
        Event.ALARM_EXPIRED: "clock model dropped: the prediction that raised the alarm is now "
        "wider than max_error_s",
        Event.SOURCES_BACK: "clock model dropped: the sources are back after the holdover expired",
        Event.ALARM_CLEARED: "alarm cleared: the sources agree with the prediction again",
        Event.GNSS_SPLIT: "GPS and PPS disagree: using the hull of both",
    }
    return logging.WARNING, lines.get(event, event.value)
