"""The thread-safe owner of the clock ensemble.

Driver threads hand their samples in, the HTTP server asks for assessments and for the
time of each token. The ensemble itself is pure and single-threaded; this shell adds a lock
and reads the raw monotonic clock, the one place where "now" is taken for the clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from appliance.clock import Assessment, ClockState, Ensemble, Issue, Policy, TimeNotAvailable
from drivers.monotonic import mono_ns as _mono_ns
from drivers.monotonic import realtime_ns as _realtime_ns
from drivers.sample import TimeSample

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Counters:
    samples: int
    untrusted: int
    issued: int
    refused: int


class Timekeeper:
    """Feeds samples to the ensemble and answers for "now", safely across threads."""

    def __init__(self, policy: Policy, *, clock: Callable[[], int] = _mono_ns) -> None:
        self._ensemble = Ensemble(policy)
        self._lock = threading.Lock()
        self._clock = clock
        self._last_state: ClockState | None = None
        self._samples = 0
        self._untrusted = 0
        self._issued = 0
        self._refused = 0
        self.last_issue_state = ""  # the ensemble state of the last time handed to the TSA
        # What the drivers see that samples do not say, by source name (set by the service).
        self.driver_notes: Callable[[], Mapping[str, str]] = dict

    @property
    def policy(self) -> Policy:
        return self._ensemble.policy

    def now_ns(self) -> int:
        return self._clock()

    def now_pair(self) -> tuple[int, int]:
        """(raw monotonic, host realtime) now: realtime only to show the host clock's offset."""
        return self._clock(), _realtime_ns()

    def add(self, sample: TimeSample) -> None:
        with self._lock:
            self._ensemble.add(sample)
            self._samples += 1
            if not sample.trusted:
                self._untrusted += 1

    def assess(self, mono_ns: int | None = None) -> Assessment:
        with self._lock:
            assessment = self._ensemble.assess(self._clock() if mono_ns is None else mono_ns)
            self._note_state(assessment)
            return assessment

    def issue(self) -> Issue:
        """The time for one token: raises ``TimeNotAvailable`` when it cannot be proven."""
        with self._lock:
            try:
                issue = self._ensemble.issue(self._clock())
            except TimeNotAvailable:
                self._refused += 1
                raise
            self._issued += 1
            return issue

    def token_time(self) -> tuple[int, int]:
        """(utc_ns, bound_ns) for the TSA engine; raises the TSA's ``TimeNotAvailable``."""
        from appliance.tsa.errors import TimeNotAvailable as TsaTimeNotAvailable

        try:
            issue = self.issue()
        except TimeNotAvailable as e:
            raise TsaTimeNotAvailable(str(e)) from e
        self.last_issue_state = issue.state.value
        return issue.utc_ns, issue.bound_ns

    def counters(self) -> Counters:
        with self._lock:
            return Counters(self._samples, self._untrusted, self._issued, self._refused)

    def with_ensemble(self, fn: Callable[[Ensemble, int], object]) -> object:
        """Run ``fn(ensemble, now)`` under the lock (for the RTC discipline loop)."""
        with self._lock:
            return fn(self._ensemble, self._clock())

    def _note_state(self, assessment: Assessment) -> None:
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
