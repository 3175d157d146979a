"""Property tests (Hypothesis) for the ensemble's promises.

- With at most one arbitrarily faulty source among three, the others honest about their
  own uncertainty, the truth is inside the bound whenever the ensemble issues.
- Without new evidence, the bound never shrinks.
- genTime never decreases from one token to the next.
- Reading changes nothing: one sample stream gives the same answers at the same instants
  however often, and by whichever reader, the ensemble was read in between (issue 13).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from hypothesis import given, settings, target
from hypothesis import strategies as st

from appliance.clock import Ensemble, Issue, Policy, TimeNotAvailable, Window
from drivers.sample import SourceKind, TimeSample

from .world import Fault, World, WorldConfig

NS = 1_000_000_000
MS = 1_000_000
THETA0 = 1_782_000_000 * NS - 5_000 * NS
M0 = 5_000 * NS
SOURCES = (("gps0", SourceKind.GPS), ("ntp:a", SourceKind.NTP), ("ntp:b", SourceKind.NTP))

# Short frequency windows, so the measured-frequency path is exercised too.
POLICY = Policy(frequency_point_interval_s=5.0, frequency_min_span_s=20.0)


@dataclass(frozen=True, slots=True)
class Truth:
    ppb: int  # the crystal's true frequency error, parts per billion (θ's slope is −ppb)

    def theta(self, m: int) -> int:
        return THETA0 - (self.ppb * (m - M0)) // NS

    def utc(self, m: int) -> int:
        return m + self.theta(m)


@dataclass(frozen=True, slots=True)
class Event:
    gap_ns: int  # time since the previous event
    source: int  # index into SOURCES
    error_ns: int  # the interval's half-width the source claims
    position: float  # where the reported value sits in its interval, -1..1 (honest sources)
    lie_ns: int  # what a faulty source reports instead, relative to the truth
    trusted: bool
    check_after_ns: int  # assess again this long after the sample, without new evidence


events = st.builds(
    Event,
    gap_ns=st.integers(1 * MS, 90 * NS),
    source=st.integers(0, 2),
    error_ns=st.one_of(st.integers(1_000, 20 * MS), st.integers(20 * MS, 600 * MS)),
    position=st.floats(-1.0, 1.0),
    lie_ns=st.one_of(
        st.integers(-3 * NS, 3 * NS), st.integers(-50 * MS, 50 * MS), st.integers(-10, 10)
    ),
    trusted=st.sampled_from([True, True, True, False]),
    check_after_ns=st.integers(0, 400 * NS),
)


def sample_for(truth: Truth, e: Event, m: int, faulty: bool, offset_ns: int = 0) -> TimeSample:
    """What source ``e.source`` reports at ``m``; a faulty one lies by ``offset + lie``."""
    name, kind = SOURCES[e.source]
    if faulty:
        utc = truth.utc(m) + offset_ns + e.lie_ns
    else:
        utc = truth.utc(m) + int(e.position * e.error_ns)
    return TimeSample(
        source=name,
        kind=kind,
        mono_ns=m,
        utc_ns=utc,
        error_ns=e.error_ns,
        trusted=e.trusted,
        reason="" if e.trusted else "driver refused it",
    )


truths = st.builds(Truth, ppb=st.integers(-100_000, 100_000))  # within crystal_max_ppm


@settings(settings.get_profile("clock"))
@given(
    truth=truths,
    faulty=st.sampled_from([None, 0, 1, 2]),
    offset_ns=st.integers(-3 * NS, 3 * NS),
    trail=st.lists(events, min_size=1, max_size=40),
)
def test_truth_inside_bound_with_one_faulty_source(
    truth: Truth, faulty: int | None, offset_ns: int, trail: list[Event]
) -> None:
    target(float(_truth_inside_bound(truth, faulty, offset_ns, trail)), label="issued instants")


def test_the_bound_property_is_not_vacuous() -> None:
    """The property above passes trivially for an ensemble that never issues: on honest
    sources sampled each second it must issue at (nearly) every instant it is asked."""
    trail = [Event(gap_ns=NS, source=k % 3, error_ns=10 * MS, position=((k * 7) % 11 - 5) / 5,
                   lie_ns=0, trusted=True, check_after_ns=0) for k in range(180)]  # fmt: skip
    issued = _truth_inside_bound(Truth(ppb=20_000), None, 0, trail)
    assert issued >= 0.8 * 2 * len(trail), issued  # two checks per event


def _truth_inside_bound(
    truth: Truth, faulty: int | None, offset_ns: int, trail: list[Event]
) -> int:
    """Feed ``trail``, checking the truth is inside the bound at every instant the ensemble
    issues; how many instants it issued at."""
    ensemble = Ensemble(POLICY)
    m = M0
    last_issued: int | None = None
    count = 0
    for e in trail:
        m += e.gap_ns
        ensemble.add(sample_for(truth, e, m, faulty == e.source, offset_ns))
        checks = (m, m + e.check_after_ns)
        m = checks[-1]  # instants only move forwards here; out-of-order is tested below
        for when in checks:
            a = ensemble.assess(when)
            if a.issuing:
                assert a.utc_ns is not None and a.bound_ns is not None
                assert abs(a.utc_ns - truth.utc(when)) <= a.bound_ns
                issued = ensemble.issue(when)
                assert abs(issued.utc_ns - truth.utc(when)) <= issued.bound_ns
                if last_issued is not None:
                    assert issued.utc_ns >= last_issued
                last_issued = issued.utc_ns
                count += 1
    return count


@settings(settings.get_profile("clock"))
@given(
    truth=truths,
    faulty=st.sampled_from([None, 0, 1, 2]),
    trail=st.lists(events, min_size=1, max_size=25),
    later=st.lists(st.integers(0, 600 * NS), min_size=1, max_size=6),
)
def test_bound_never_shrinks_without_new_evidence(
    truth: Truth, faulty: int | None, trail: list[Event], later: list[int]
) -> None:
    ensemble = Ensemble(POLICY)
    m = M0
    for e in trail:
        m += e.gap_ns
        ensemble.add(sample_for(truth, e, m, faulty == e.source))
    previous = ensemble.assess(m).bound_ns
    for dt in sorted(later):
        bound = ensemble.assess(m + dt).bound_ns
        if previous is not None and bound is not None:
            assert bound >= previous
        previous = bound if bound is not None else previous


@settings(settings.get_profile("clock"))
@given(
    truth=truths,
    faulty=st.sampled_from([None, 0, 1, 2]),
    trail=st.lists(events, min_size=1, max_size=30),
    jitter=st.lists(st.integers(-2 * NS, 2 * NS), min_size=30, max_size=30),
)
def test_gentime_never_decreases(
    truth: Truth, faulty: int | None, trail: list[Event], jitter: list[int]
) -> None:
    """Even when token requests arrive with instants slightly out of order (threads)."""
    ensemble = Ensemble(POLICY)
    m = M0
    issued: list[int] = []
    for e, j in zip(trail, jitter, strict=False):
        m += e.gap_ns
        ensemble.add(sample_for(truth, e, m, faulty == e.source))
        for when in (m, m + j, m + abs(j)):
            with contextlib.suppress(TimeNotAvailable):
                issued.append(ensemble.issue(when).utc_ns)
    assert issued == sorted(issued)


# --------------------------------------------------------------------------- reading


READERS = ("assess", "window", "issue", "rtc_action")


@dataclass(frozen=True, slots=True)
class Read:
    after_ns: int  # when, after the last sample (negative: a request timed just before it)
    call: str  # one of READERS


reads = st.builds(Read, after_ns=st.integers(-2 * NS, 400 * NS), call=st.sampled_from(READERS))


def _read(ensemble: Ensemble, call: str, when: int) -> object:
    """Call one reader; a refusal is an answer too."""
    try:
        return getattr(ensemble, call)(when)
    except TimeNotAvailable as e:
        return ("refused", e.reason, e.state)


@settings(settings.get_profile("clock"))
@given(
    truth=truths,
    faulty=st.sampled_from([None, 0, 1, 2]),
    offset_ns=st.integers(-3 * NS, 3 * NS),
    trail=st.lists(events, min_size=1, max_size=30),
    busy_reads=st.lists(st.lists(reads, max_size=8), min_size=30, max_size=30),
    compare=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_reading_changes_nothing(
    truth: Truth,
    faulty: int | None,
    offset_ns: int,
    trail: list[Event],
    busy_reads: list[list[Read]],
    compare: list[bool],
) -> None:
    """One sample stream, two ensembles: one read at many random moments by every reader,
    the other only where they are compared. They answer alike at every common instant.

    ``issue()`` also remembers the last genTime it handed out (never backwards, RFC 3161
    §2.4.2): that is the tokens' history, not the clock's, so its answers are compared
    where neither ensemble has handed out a genTime later than the window's midpoint.
    """
    busy, idle = Ensemble(POLICY), Ensemble(POLICY)
    last: dict[int, int] = {}  # id(ensemble) → its last genTime
    m = M0
    for e, extra, check in zip(trail, busy_reads, compare, strict=False):
        m += e.gap_ns
        sample = sample_for(truth, e, m, faulty == e.source, offset_ns)
        busy.add(sample)
        idle.add(sample)
        for r in extra:
            answer = _read(busy, r.call, m + r.after_ns)
            if isinstance(answer, Issue):
                last[id(busy)] = answer.utc_ns
        if not check:
            continue
        when = m + e.check_after_ns
        assert busy.assess(when) == idle.assess(when)
        window = _read(busy, "window", when)
        assert window == _read(idle, "window", when)
        issued = [_read(x, "issue", when) for x in (busy, idle)]
        if isinstance(window, Window):
            mid = (window.lo_ns + window.hi_ns) // 2
            if all(last.get(id(x), mid) <= mid for x in (busy, idle)):
                assert issued[0] == issued[1]
        else:
            assert issued[0] == issued[1] == window
        for x, answer in zip((busy, idle), issued, strict=True):
            if isinstance(answer, Issue):
                last[id(x)] = answer.utc_ns


WORLD_FAULTS = {
    "healthy": (),
    "GPS jumps 2.5 s": (Fault("gps", 300, offset_s=2.5),),
    "GPS and NTP jump together (alarm)": (
        Fault("gps", 300, 600, offset_s=2.5),
        Fault("ntp", 300, 600, offset_s=2.5),
    ),
    "GPS and NTP lost (stale, holdover)": (
        Fault("gps", 200, silent=True),
        Fault("ntp", 200, silent=True),
    ),
    "RTC drifts 300 ppm": (Fault("rtc", 200, drift_ppm=300.0),),
    "NMEA latency jumps": (Fault("gps", 300, latency_s=0.400),),
}
WORLD_STEP_S = 5.0
WORLD_UNTIL_S = 800.0
WORLD_STEPS = int(WORLD_UNTIL_S / WORLD_STEP_S)
# (when within a step, which reader): rtc_action is left out, see below
world_reads = st.tuples(st.integers(0, int(WORLD_STEP_S * NS) - 1), st.sampled_from(READERS[:3]))


@settings(settings.get_profile("clock"), max_examples=12)
@given(
    faults=st.sampled_from(sorted(WORLD_FAULTS)),
    pps=st.booleans(),
    seed=st.integers(0, 1000),
    busy_reads=st.lists(
        st.lists(world_reads, max_size=6), min_size=WORLD_STEPS, max_size=WORLD_STEPS
    ),
)
def test_reading_changes_nothing_in_a_simulated_world(
    faults: str, pps: bool, seed: int, busy_reads: list[list[tuple[int, str]]]
) -> None:
    """The same, on the simulated GPS (with its PPS), NTP and RTC, faults included: every
    few seconds both ensembles are compared, and both obey the same RTC actions (asked
    only then, so that ``rtc_action``'s memory of asking is the same in both)."""
    world = World(WorldConfig(seed=seed, pps=pps, faults=WORLD_FAULTS[faults]))
    busy, idle = Ensemble(), Ensemble()
    for k, extra in enumerate(busy_reads):
        m_from, m_to = world.mono(k * WORLD_STEP_S), world.mono((k + 1) * WORLD_STEP_S)
        pending = sorted(extra)
        for s in sorted(world.samples(m_from, m_to), key=lambda s: s.mono_ns):
            while pending and m_from + pending[0][0] < s.mono_ns:
                after, call = pending.pop(0)
                _read(busy, call, m_from + after)
            busy.add(s)
            idle.add(s)
        for after, call in pending:
            _read(busy, call, m_from + after)
        assert busy.assess(m_to) == idle.assess(m_to)
        assert _read(busy, "window", m_to) == _read(idle, "window", m_to)
        action = busy.rtc_action(m_to)
        assert action == idle.rtc_action(m_to)
        if action is not None:
            mono, utc = world.set_rtc(m_to, action.utc_at)
            for x in (busy, idle):
                x.rtc_was_set(mono, utc, error_ns=MS)
