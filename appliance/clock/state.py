"""The clock's state machine: what it remembers, and how evidence moves it.

``decide`` is the one transition: from the ``Model`` (what the clock remembers) and a
``Survey`` of the sources at an instant, the next model and the ``Decision`` at that
instant — synchronised, holdover, alarm, starting or unsynchronised, and every source's
verdict. It is pure, and the ensemble calls it only when something happens: a sample
arrives, the RTC is set, or one of the instants the decision itself names comes
(``Decision.next_ns``: a counted source goes stale, an alarm's prediction outgrows
``max_error_s``). Nobody's reading moves it.

``project`` carries a decision to a later (or earlier) instant without deciding anything:
the combined interval grows at the slope range, a holdover whose bound passes
``max_error_s`` stops issuing, and no token is given inside a leap-second window.

Memory (ADR 0001): the *anchor* is the last combined interval for θ; grown to any later
instant at the crystal's slope range it is the *prediction*. New evidence from a quorum is
intersected with the prediction (both hold the truth, so their intersection does); a
quorum that does not meet the prediction at all is a jump, hence an alarm, never a new
truth. Without new evidence the anchor is not touched, so the bound only grows.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .assessment import ClockState, SourceStatus
from .interval import Evidence, SlopeRange
from .leap import NS_PER_S, LeapSecond, LeapTable
from .policy import Policy
from .selection import Vote, class_of, vote
from .sources import Finding, RtcDiscipline, SourceVerdict, Survey
from .sourcestats import FrequencyEstimate, estimate


@dataclass(frozen=True, slots=True)
class Alarm:
    """The agreeing ``sources`` are ``gap_ns`` away from the prediction."""

    sources: tuple[str, ...]
    gap_ns: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Model:
    """What the clock carries from one decision to the next."""

    slope: SlopeRange  # dθ/dmono: the measured range, or the crystal's worst case
    anchor: Evidence | None = None
    anchor_version: int = -1  # the evidence count the anchor has absorbed
    points: tuple[Evidence, ...] = ()  # the frequency window (``sourcestats``)
    freq: FrequencyEstimate | None = None
    alarm: Alarm | None = None
    ever_synced: bool = False
    rtc: RtcDiscipline | None = None  # the RTC votes only while set from the consensus
    rtc_fault: SourceVerdict | None = None  # why it is no longer set, until set again

    @classmethod
    def initial(cls, policy: Policy) -> Model:
        return cls(slope=SlopeRange.symmetric(policy.crystal_max_ppm))

    def grown(self, m: int) -> Evidence | None:
        """The prediction at ``m``."""
        return self.anchor.at(m, self.slope) if self.anchor is not None else None

    def dropped(self, policy: Policy) -> Model:
        """The model forgotten, as at a cold start (the RTC's discipline is kept)."""
        return replace(
            self,
            anchor=None,
            anchor_version=-1,
            points=(),
            freq=None,
            slope=SlopeRange.symmetric(policy.crystal_max_ppm),
            alarm=None,
        )


class Event(enum.Enum):
    """A transition worth a line in the log."""

    ALARM_EXPIRED = "alarm-expired"  # the model is dropped: its prediction is too wide
    SOURCES_BACK = "sources-back"  # the model is dropped: the sources are back after expiry
    ALARM_RAISED = "alarm-raised"
    ALARM_CLEARED = "alarm-cleared"
    GNSS_SPLIT = "gnss-split"  # the GPS and its PPS disagree


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The state machine's verdict at ``mono_ns``, and the model after it."""

    mono_ns: int | None  # None: nothing has happened yet
    model: Model
    state: ClockState  # STARTING, SYNCHRONISED, HOLDOVER, UNSYNCHRONISED or ALARM
    verdicts: Mapping[str, SourceVerdict]  # every source
    voting: frozenset[str]  # the sources that voted
    vote: Vote
    next_ns: int | None  # when to decide again if nothing happens before
    events: tuple[Event, ...] = ()

    @property
    def falsetickers(self) -> frozenset[str]:
        return frozenset(
            n for n, v in self.verdicts.items() if v.status is SourceStatus.FALSETICKER
        )


def decide(prev: Model, survey: Survey, m: int, version: int, policy: Policy) -> Decision:
    """The state machine at instant ``m`` (ADR 0003); ``version`` counts the evidence."""
    v = vote(survey.voters, m, policy.hidden_faults, policy.quorum)
    events = [Event.GNSS_SPLIT] if survey.gnss_split else []
    model, state = _transition(prev, v, survey, m, version, policy, events)
    combined = model.grown(m)
    verdicts = dict(survey.verdicts)
    for key, ev in survey.voters.items():
        verdict = _voter_verdict(key, ev, v, state, combined)
        if (
            verdict.status is SourceStatus.FALSETICKER
            and class_of(key) is None
            and state in (ClockState.SYNCHRONISED, ClockState.HOLDOVER)
        ):
            # An RTC out of its own bound is a fault: it is no longer a reference.
            verdict = replace(verdict, finding=Finding.RTC_DRIFTED, cause=verdict.finding)
            model = replace(model, rtc=None, rtc_fault=verdict)
        for name in survey.members[key]:
            verdicts[name] = verdict
    next_ns = survey.stale_at_ns
    if model.alarm is not None and model.anchor is not None:
        expiry = _outgrows(model.anchor, model.slope, m, policy.max_error_ns)
        if expiry is not None and (next_ns is None or expiry < next_ns):
            next_ns = expiry
    return Decision(
        mono_ns=m,
        model=model,
        state=state,
        verdicts=verdicts,
        voting=frozenset(n for names in survey.members.values() for n in names),
        vote=v,
        next_ns=next_ns,
        events=tuple(events),
    )


def _transition(
    model: Model,
    v: Vote,
    survey: Survey,
    m: int,
    version: int,
    policy: Policy,
    events: list[Event],
) -> tuple[Model, ClockState]:
    """Synchronised, holdover, alarm or neither: the model after the evidence at ``m``."""
    pred = model.grown(m)
    max_err = policy.max_error_ns
    new_evidence = version != model.anchor_version
    if model.alarm is not None and pred is not None and pred.half_width_ns > max_err:
        model, pred = model.dropped(policy), None
        events.append(Event.ALARM_EXPIRED)
    hull = v.hull
    if v.quorum and hull is not None:
        if pred is not None:
            if hull.intersect(pred) is None:
                if pred.half_width_ns <= max_err:
                    if model.alarm is None:
                        events.append(Event.ALARM_RAISED)
                    alarm = Alarm(tuple(sorted(v.selection.truechimers)), hull.distance_ns(pred))
                    model = replace(model, alarm=alarm)
                else:
                    model, pred = model.dropped(policy), None
                    events.append(Event.SOURCES_BACK)
            elif model.alarm is not None:
                model = replace(model, alarm=None)
                events.append(Event.ALARM_CLEARED)
        if model.alarm is not None:
            return model, ClockState.ALARM
        if new_evidence or pred is None:
            combined = hull.intersect(pred) if pred is not None else hull
            assert combined is not None
            model = _anchored(model, combined, hull, version, policy)
        if not model.ever_synced:
            model = replace(model, ever_synced=True)
        return model, ClockState.SYNCHRONISED
    if model.alarm is not None:
        return model, ClockState.ALARM
    if pred is not None:
        if policy.hidden_faults == 0 and new_evidence:  # only then may one witness narrow it
            combined = pred
            for key, ev in survey.voters.items():
                if class_of(key) is None and (both := ev.intersect(combined)):
                    combined = both
            if combined != pred:
                model = replace(model, anchor=combined, anchor_version=version)
        return model, ClockState.HOLDOVER
    return model, ClockState.UNSYNCHRONISED if model.ever_synced else ClockState.STARTING


def _anchored(
    model: Model, combined: Evidence, hull: Evidence, version: int, policy: Policy
) -> Model:
    """The new anchor; every ``frequency_point_interval_s`` a point of the window too."""
    points, freq, slope = model.points, model.freq, model.slope
    last = points[-1].mono_ns if points else None
    if last is None or combined.mono_ns - last >= policy.frequency_point_interval_s * NS_PER_S:
        # The hull, not the combined interval: the frequency is measured, not assumed.
        points = (*points, hull)[-policy.frequency_window_points :]
        freq = estimate(
            points, policy.crystal_wander_ppm * 1e-6, int(policy.frequency_min_span_s * NS_PER_S)
        )
        slope = _slope_range(freq, policy)
    return replace(
        model, anchor=combined, anchor_version=version, points=points, freq=freq, slope=slope
    )


def _slope_range(freq: FrequencyEstimate | None, policy: Policy) -> SlopeRange:
    """The measured slope range plus the wander allowance, within the crystal's worst case."""
    worst = SlopeRange.symmetric(policy.crystal_max_ppm)
    if freq is None:
        return worst
    wander = policy.crystal_wander_ppm * 1e-6
    lo = max(worst.lo, freq.slope.lo - wander)
    hi = min(worst.hi, freq.slope.hi + wander)
    return SlopeRange(lo, hi) if lo <= hi else worst


def _voter_verdict(
    key: str, ev: Evidence, v: Vote, state: ClockState, combined: Evidence | None
) -> SourceVerdict:
    sel = v.selection
    if state is ClockState.SYNCHRONISED and key in sel.truechimers:
        return SourceVerdict(SourceStatus.SELECTED, Finding.SELECTED)
    if sel.majority and key in sel.falsetickers:
        gap = v.hull.distance_ns(ev) if v.hull is not None else 0
        return SourceVerdict(SourceStatus.FALSETICKER, Finding.MAJORITY_GAP, gap)
    if state is ClockState.ALARM and key in sel.truechimers:
        gap = combined.distance_ns(ev) if combined is not None else 0
        return SourceVerdict(SourceStatus.ALARM, Finding.JUMPED, gap)
    if combined is not None and ev.intersect(combined) is None:
        return SourceVerdict(
            SourceStatus.FALSETICKER, Finding.PREDICTION_GAP, combined.distance_ns(ev)
        )
    if not sel.majority:
        return SourceVerdict(SourceStatus.WAITING, Finding.NO_MAJORITY)
    return SourceVerdict(SourceStatus.WAITING, Finding.NO_QUORUM)


def _outgrows(anchor: Evidence, slope: SlopeRange, after_ns: int, limit_ns: int) -> int | None:
    """The first instant after ``after_ns`` at which the grown ``anchor`` is wider than
    ``limit_ns`` (found by bisection: it widens with time), or None if it never is."""

    def wide(m: int) -> bool:
        return anchor.at(m, slope).half_width_ns > limit_ns

    step = 1
    while not wide(after_ns + step):
        step *= 2
        if step > 1 << 62:
            return None
    lo, hi = after_ns + step // 2, after_ns + step  # not wide at lo, wide at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if wide(mid) else (mid, hi)
    return hi


# ---------------------------------------------------------------------- between decisions


@dataclass(frozen=True, slots=True)
class Projection:
    """A decision seen from ``mono_ns``: nothing decided, only time passed."""

    decision: Decision
    mono_ns: int
    combined: Evidence | None  # the prediction at mono_ns
    state: ClockState  # the decision's, or UNSYNCHRONISED / LEAP_WINDOW as time made it
    issuing: bool
    lo_ns: int | None = None  # POSIX UTC lies in [lo_ns, hi_ns]
    hi_ns: int | None = None
    leap: LeapSecond | None = None  # a leap second whose window [lo_ns, hi_ns] meets

    @property
    def too_wide(self) -> bool:
        """The bound passed max_error_s (the holdover expired, or the sources are too wide)."""
        return self.state is ClockState.UNSYNCHRONISED and self.decision.state in (
            ClockState.SYNCHRONISED,
            ClockState.HOLDOVER,
        )


def project(decision: Decision, m: int, policy: Policy, leaps: LeapTable) -> Projection:
    """``decision`` carried to ``m``: the bound grows; it may outgrow max_error_s or meet a
    leap-second window, which stop the tokens but change no state."""
    combined = decision.model.grown(m)
    if combined is None:
        return Projection(decision, m, None, decision.state, False)
    lo = leaps.to_posix(m + combined.lo_ns)
    hi = leaps.to_posix(m + combined.hi_ns)
    state, leap = decision.state, None
    if state in (ClockState.SYNCHRONISED, ClockState.HOLDOVER):
        leap = leaps.in_window(lo, hi, int(policy.leap_window_s * NS_PER_S))
        if combined.half_width_ns > policy.max_error_ns:
            state = ClockState.UNSYNCHRONISED
        elif leap is not None:
            state = ClockState.LEAP_WINDOW
    issuing = state is decision.state and state in (ClockState.SYNCHRONISED, ClockState.HOLDOVER)
    return Projection(decision, m, combined, state, issuing, lo, hi, leap)
