"""The clock ensemble: samples in, "what time is it, how sure are we" out.

Pure: no I/O and no clock reads; every method takes the raw-monotonic instant it is about.
The model (ADR 0001) is ``UTC(m) = m + θ(m)`` on ``CLOCK_MONOTONIC_RAW``; every source's
evidence is an interval for θ that widens with age (``sources``), selection is an interval
vote (``selection``), the quorum and the bound follow ADR 0003, the transitions are
``state.decide``'s and the words ``explanation``'s.

The clock changes its mind only when something happens: a sample arrives (``add``), the
RTC is set (``rtc_was_set``), or an instant a decision named comes (a counted source goes
stale, an alarm's prediction outgrows ``max_error_s``). Each such event is decided at its
own instant — a sample at its ``mono_ns``, or at the last decision's instant if it comes
late. Readers (``assess``, ``window``, ``issue``, ``rtc_action``) carry the decision in
force to the instant they ask about and write nothing back, so reading every millisecond
or never gives the same states, bounds and tokens. The ensemble's own timers are worked
out lazily, by whoever first asks past them, and kept: they depend only on what was
committed, so keeping them cannot change a later answer.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from drivers.sample import SourceKind, TimeSample

from . import explanation
from .assessment import Assessment, ClockState, Issue, RtcAction, Window
from .errors import ClockError, TimeNotAvailable
from .leap import NS_PER_S, LeapTable
from .policy import Policy
from .sources import RtcDiscipline, Sources, lost_power
from .state import Decision, Model, Projection, decide, project

log = logging.getLogger(__name__)

RTC_ACTION_RETRY_NS = 60 * NS_PER_S  # ask again at most this often if nobody acts
RTC_RESET_GAIN_NS = 1_000_000  # re-set early when that would tighten the RTC by more than this


class Ensemble:
    """Cross-checks the time sources; answers state, UTC and bound for any instant.

    Thread-safe: drivers may ``add`` from their threads while the TSA calls ``issue``.
    """

    def __init__(self, policy: Policy | None = None) -> None:
        self._p = policy if policy is not None else Policy()
        self._lock = threading.Lock()
        self._leaps = LeapTable(self._p.leap_seconds)
        self._sources = Sources(self._p, self._leaps)
        model = Model.initial(self._p)
        survey = self._sources.survey(0, slope=model.slope, rtc=None, rtc_fault=None)
        nothing_yet = replace(decide(model, survey, 0, 0, self._p), mono_ns=None)
        # The last committed decision, then the ones its own timers lead to (worked out
        # lazily, in order): what every reader carries to its instant.
        self._timeline: list[Decision] = [nothing_yet]
        self._logged_state: ClockState | None = None
        self._rtc_requested_ns: int | None = None  # rtc_action's memory of asking
        self._last_issued_ns: int | None = None  # issue()'s: genTime never goes back

    @property
    def policy(self) -> Policy:
        return self._p

    # ------------------------------------------------------------------ events

    def add(self, sample: TimeSample) -> None:
        """One sample from a driver. Untrusted samples are shown, never used as evidence."""
        with self._lock:
            m, now = self._event(sample.mono_ns)
            model = now.model
            if lost_power(sample):
                model = replace(model, rtc=None)
            self._sources.take(
                sample, slope=model.slope, rtc=model.rtc, falsetickers=now.falsetickers
            )
            self._commit(m, model)

    def rtc_was_set(self, mono_ns: int, utc_ns: int, error_ns: int = 0) -> None:
        """The RTC was set: at ``mono_ns`` it read ``utc_ns``, give or take ``error_ns``.

        From now on its samples are evidence, widening at ``rtc_max_ppm`` from this moment.
        """
        if error_ns < 0:
            raise ClockError(f"error_ns must be >= 0, got {error_ns}")
        with self._lock:
            m, now = self._event(mono_ns)
            p = self._project(mono_ns)
            if p.combined is None or p.state is not ClockState.SYNCHRONISED:
                raise ClockError("the RTC can only be disciplined while synchronised")
            ev = p.combined
            theta = self._leaps.to_continuous(utc_ns) - mono_ns
            set_error = max(theta - ev.lo_ns, ev.hi_ns - theta) + error_ns
            model = replace(now.model, rtc=RtcDiscipline(mono_ns, set_error), rtc_fault=None)
            self._rtc_requested_ns = None
            self._sources.forget_rtc()
            self._commit(m, model)
            log.info("RTC set from the consensus (within %s)", explanation.duration(set_error))

    def _event(self, mono_ns: int) -> tuple[int, Decision]:
        """The instant an event at ``mono_ns`` is decided at (never before the last
        decision), and the decision in force then, the ensemble's own timers included."""
        last = self._timeline[0].mono_ns
        m = mono_ns if last is None else max(mono_ns, last)
        return m, self._in_force(m)

    def _commit(self, m: int, model: Model) -> None:
        self._timeline = [self._decide(model, m)]

    def _decide(self, model: Model, m: int) -> Decision:
        """The state machine at ``m``, from ``model`` and the sources as they are now."""
        survey = self._sources.survey(
            m, slope=model.slope, rtc=model.rtc, rtc_fault=model.rtc_fault
        )
        d = decide(model, survey, m, self._sources.version, self._p)
        for event in d.events:
            log.log(*explanation.event_line(event, d))
        self._log_state(d)
        return d

    def _in_force(self, m: int) -> Decision:
        """The decision in force at ``m``: the last one, carried through its timers up to
        ``m``; before the last event, that event's decision (seen from the past)."""
        line = self._timeline
        while (due := line[-1].next_ns) is not None and due <= m:
            line.append(self._decide(line[-1].model, due))
        return next((d for d in reversed(line) if d.mono_ns is None or d.mono_ns <= m), line[0])

    def _project(self, m: int) -> Projection:
        return project(self._in_force(m), m, self._p, self._leaps)

    def _log_state(self, d: Decision) -> None:
        assert d.mono_ns is not None
        p = project(d, d.mono_ns, self._p, self._leaps)
        if p.state is not self._logged_state:
            why = explanation.reason(p, self._p)
            level = logging.INFO if p.issuing else logging.WARNING
            log.log(level, "clock %s%s", p.state.value, f": {why}" if why else "")
            self._logged_state = p.state

    # ------------------------------------------------------------------ readers

    def assess(self, mono_ns: int) -> Assessment:
        """State, UTC estimate, bound and every source's status at ``mono_ns``."""
        with self._lock:
            return explanation.assessment(self._project(mono_ns), self._sources, self._p)

    def issue(self, mono_ns: int) -> Issue:
        """The time for one token at ``mono_ns``, or ``TimeNotAvailable``.

        O(1) between samples: the decision in force, its interval grown to ``mono_ns``.
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
                    f"the bound ({explanation.duration(bound)}) exceeds {self._p.max_error_s:g} s",
                    window.state.value,
                )
            self._last_issued_ns = utc
            return Issue(utc, bound, window.state)

    def window(self, mono_ns: int) -> Window:
        """Where UTC lies at ``mono_ns`` while the clock issues, or ``TimeNotAvailable``.

        What :meth:`issue` starts from, without its guards against going backwards and
        against a bound beyond ``max_error_s``: for handing the time to another process
        (``appliance.runtime.workers``), which keeps its own.
        """
        with self._lock:
            return self._issuing_window(mono_ns)

    def _issuing_window(self, mono_ns: int) -> Window:
        p = self._project(mono_ns)
        state = p.decision.state
        if state not in (ClockState.SYNCHRONISED, ClockState.HOLDOVER) or p.lo_ns is None:
            raise TimeNotAvailable(explanation.reason(p, self._p) or p.state.value, p.state.value)
        if p.leap is not None:
            raise TimeNotAvailable(
                explanation.leap_words(p.leap.at_posix_s, self._p), ClockState.LEAP_WINDOW.value
            )
        assert p.hi_ns is not None
        return Window(mono_ns, p.lo_ns, p.hi_ns, state)

    # ------------------------------------------------------------------ the RTC

    def rtc_action(self, mono_ns: int) -> RtcAction | None:
        """When the RTC should be (re)set from the consensus, what to set it to.

        It remembers only that it asked, so as not to ask again within
        ``RTC_ACTION_RETRY_NS`` if nobody acts; that memory feeds no assessment.
        """
        with self._lock:
            if not self._sources.has(SourceKind.RTC):
                return None
            p = self._project(mono_ns)
            if p.state is not ClockState.SYNCHRONISED or p.combined is None:
                return None
            model = p.decision.model
            rtc = model.rtc
            resync_ns = int(self._p.rtc_resync_s * NS_PER_S)
            ev = p.combined
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
            rate = model.freq.regression if model.freq is not None else 0.0
            utc = self._leaps.to_posix(mono_ns + ev.mid_ns)
            return RtcAction(mono_ns, utc, ev.half_width_ns, rate)
