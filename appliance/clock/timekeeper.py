"""The appliance's shell around the clock ensemble: the one place where "now" is read.

Driver threads hand their samples in, the HTTP server asks for assessments and for the
time of each token. The ensemble is pure and locks itself; this shell reads the raw
monotonic clock, counts samples, logs the clock's state changes for operators and turns
the clock's refusal into the TSA's.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from appliance.clock import Assessment, ClockState, Ensemble, Policy, TimeNotAvailable
from appliance.tsa.errors import TimeNotAvailable as TsaTimeNotAvailable
from drivers.monotonic import mono_ns as _mono_ns
from drivers.monotonic import realtime_ns as _realtime_ns
from drivers.sample import TimeSample

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Counters:
    samples: int
    untrusted: int


class Timekeeper:
    """Feeds samples to the ensemble and answers for "now", safely across threads."""

    def __init__(self, policy: Policy, *, clock: Callable[[], int] = _mono_ns) -> None:
        self.ensemble = Ensemble(policy)  # thread-safe on its own
        self._clock = clock
        self._lock = threading.Lock()  # for the counters and the last logged state
        self._last_state: ClockState | None = None
        self._samples = 0
        self._untrusted = 0
        self.last_issue_state = ""  # the ensemble state of the last time handed to the TSA
        # What the drivers see that samples do not say, by source name (set by the service).
        self.driver_notes: Callable[[], Mapping[str, str]] = dict
        # Called after each sample (the worker processes' time publisher listens).
        self.on_sample: Callable[[], None] | None = None

    @property
    def policy(self) -> Policy:
        return self.ensemble.policy

    def now_ns(self) -> int:
        return self._clock()

    def now_pair(self) -> tuple[int, int]:
        """(raw monotonic, host realtime) now: realtime only to show the host clock's offset."""
        return self._clock(), _realtime_ns()

    def add(self, sample: TimeSample) -> None:
        self.ensemble.add(sample)
        with self._lock:
            self._samples += 1
            if not sample.trusted:
                self._untrusted += 1
        if self.on_sample is not None:
            self.on_sample()

    def assess(self, mono_ns: int | None = None) -> Assessment:
        assessment = self.ensemble.assess(self._clock() if mono_ns is None else mono_ns)
        self._note_state(assessment)
        return assessment

    def token_time(self) -> tuple[int, int]:
        """(utc_ns, bound_ns) for one token; raises the TSA's ``TimeNotAvailable``.

        Called on the event loop's thread only, once per token: no lock of its own.
        """
        try:
            issue = self.ensemble.issue(self._clock())
        except TimeNotAvailable as e:
            raise TsaTimeNotAvailable(str(e)) from e
        self.last_issue_state = issue.state.value
        return issue.utc_ns, issue.bound_ns

    def clock_now(self) -> dt.datetime:
        """The ensemble's time now when it can vouch for it (the middle of its window),
        else the host's: for counting down to a certificate's expiry, never for a token."""
        try:
            window = self.ensemble.window(self._clock())
        except TimeNotAvailable:
            return dt.datetime.now(dt.UTC)
        return dt.datetime.fromtimestamp((window.lo_ns + window.hi_ns) / 2 / 1e9, dt.UTC)

    def counters(self) -> Counters:
        with self._lock:
            return Counters(self._samples, self._untrusted)

    def _note_state(self, assessment: Assessment) -> None:
        with self._lock:
            if assessment.state is self._last_state:
                return
            previous, self._last_state = self._last_state, assessment.state
        if previous is None:
            log.info("clock: %s%s", assessment.state.value, _why(assessment))
        elif assessment.issuing:
            log.warning("clock: %s -> %s, issuing", previous.value, assessment.state.value)
        else:
            log.warning(
                "clock: %s -> %s, NOT issuing%s",
                previous.value,
                assessment.state.value,
                _why(assessment),
            )


def _why(assessment: Assessment) -> str:
    return f": {assessment.reason}" if assessment.reason else ""
