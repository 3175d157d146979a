"""The clock core's parts, one by one: selection, frequency window, leap table, policy, API."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.clock import (
    ClockError,
    ClockState,
    Ensemble,
    LeapSecond,
    Policy,
    PolicyError,
    TimeNotAvailable,
    parse_leap_seconds_list,
)
from appliance.clock.interval import Evidence, SlopeRange
from appliance.clock.leap import LeapTable, next_month_start_s
from appliance.clock.selection import Voter, select
from appliance.clock.sourcestats import OffsetWindow
from drivers.sample import SourceKind, TimeSample

from .harness import checked_run
from .world import MS, NS, Fault, World, WorldConfig, run

# --------------------------------------------------------------------------- selection

honest = st.tuples(st.integers(0, 10_000), st.integers(0, 10_000))  # (below, above) truth
liar = st.tuples(st.integers(-50_000, 50_000), st.integers(0, 20_000))  # (centre, half-width)


@settings(settings.get_profile("clock"))
@given(
    honest_ones=st.lists(honest, min_size=2, max_size=5),
    liars=st.lists(liar, max_size=1),
    truth=st.integers(-1000, 1000),
)
def test_selection_bound_holds_the_truth_with_one_hidden_liar(
    honest_ones: list[tuple[int, int]], liars: list[tuple[int, int]], truth: int
) -> None:
    voters = [Voter(f"h{i}", truth - b, truth + a) for i, (b, a) in enumerate(honest_ones)]
    voters += [Voter(f"l{i}", c - w, c + w) for i, (c, w) in enumerate(liars)]
    sel = select(voters, hidden=1)
    assert sel.majority  # honest voters are a majority and all share the truth
    assert sel.lo_ns is not None and sel.hi_ns is not None
    assert sel.lo_ns <= truth <= sel.hi_ns
    assert {f"h{i}" for i in range(len(honest_ones))} <= sel.truechimers


def test_selection_a_liar_at_the_edge_is_why_hidden_faults_is_one() -> None:
    """Two honest sources [-10, 10] and a liar [9, 30]: all three share [9, 10]."""
    voters = [Voter("a", -10, 10), Voter("b", -10, 10), Voter("liar", 9, 30)]
    trusting = select(voters, hidden=0)
    assert (trusting.lo_ns, trusting.hi_ns) == (9, 10)  # excludes the truth, 0
    careful = select(voters, hidden=1)
    assert careful.lo_ns is not None and careful.hi_ns is not None
    assert careful.lo_ns <= 0 <= careful.hi_ns


def test_selection_falseticker_and_no_majority() -> None:
    sel = select([Voter("a", 0, 10), Voter("b", 5, 15), Voter("c", 100, 110)], hidden=1)
    assert sel.falsetickers == {"c"} and sel.truechimers == {"a", "b"}
    tie = select([Voter("a", 0, 10), Voter("b", 100, 110)], hidden=1)
    assert not tie.majority and tie.lo_ns is None
    assert not select([], hidden=1).majority


# --------------------------------------------------------------------------- frequency


@settings(settings.get_profile("clock"))
@given(
    ppb=st.integers(-100_000, 100_000),
    points=st.lists(
        st.tuples(st.integers(1 * NS, 300 * NS), st.integers(0, 5 * MS), st.integers(0, 5 * MS)),
        min_size=2,
        max_size=30,
    ),
)
def test_frequency_range_contains_the_true_slope(
    ppb: int, points: list[tuple[int, int, int]]
) -> None:
    window = OffsetWindow(64)
    m = 0
    for gap, below, above in points:
        m += gap
        theta = -(ppb * m) // NS
        window.add(Evidence(m, theta - below, theta + above))
    est = window.estimate(0.0, 0)
    assert est is not None
    assert est.slope.lo <= -ppb * 1e-9 <= est.slope.hi
    assert est.slope.lo <= est.regression <= est.slope.hi


def test_frequency_window_refuses_points_no_line_fits() -> None:
    window = OffsetWindow(8)
    window.add(Evidence(0, -1, 1))
    window.add(Evidence(NS, 1000, 1002))
    window.add(Evidence(2 * NS, -1, 1))
    assert window.estimate(0.0, 0) is None


def test_evidence_ages_outwards_both_ways() -> None:
    ev = Evidence(1000 * NS, -5, 5)
    slope = SlopeRange.symmetric(10.0)
    later, earlier = ev.at(1010 * NS, slope), ev.at(990 * NS, slope)
    assert later.lo_ns <= -5 - 100_000 and later.hi_ns >= 5 + 100_000
    assert earlier.lo_ns <= -5 - 100_000 and earlier.hi_ns >= 5 + 100_000


# --------------------------------------------------------------------------- leap seconds

LIST_EXCERPT = """\
# leap-seconds.list excerpt (IERS format: NTP seconds, TAI-UTC)
#@ 3960979200
3550089600\t35\t# 1 Jul 2012
3644697600\t36\t# 1 Jul 2015
3692217600\t37\t# 1 Jan 2017
"""


def test_leap_seconds_list_is_parsed() -> None:
    leaps = parse_leap_seconds_list(LIST_EXCERPT)
    assert leaps == (LeapSecond(1_435_708_800), LeapSecond(1_483_228_800))
    with pytest.raises(ClockError):
        parse_leap_seconds_list("2272060800 ten\n")
    with pytest.raises(ClockError):
        parse_leap_seconds_list("2272060800 10\n3644697600 12\n")


def test_leap_table_continuous_count() -> None:
    table = LeapTable((LeapSecond(1_483_228_800),))
    before, after = (1_483_228_800 - 10) * NS, (1_483_228_800 + 10) * NS
    assert table.to_continuous(before) == before
    assert table.to_continuous(after) == after + NS
    assert table.to_posix(table.to_continuous(after)) == after
    assert table.to_posix(before) == before
    assert table.in_window(after, after, 30 * NS) == LeapSecond(1_483_228_800)
    assert table.in_window(after + 60 * NS, after + 60 * NS, 30 * NS) is None
    assert next_month_start_s(1_782_000_000 * NS) == 1_782_864_000  # June → 1 July 2026
    assert next_month_start_s(1_798_000_000 * NS) == 1_798_761_600  # December → 1 Jan 2027


# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    "bad",
    [
        {"quorum": 0},
        {"max_error_s": 0.0},
        {"max_error_s": float("nan")},
        {"crystal_max_ppm": -1.0},
        {"crystal_wander_ppm": 500.0},
        {"leap_window_s": 0.5},
        {"hidden_faults": -1},
        {"frequency_window_points": 1},
    ],
)
def test_policy_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        Policy(**bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- API


def _synchronised(
    hidden: int = 1, pps: bool = False, until_s: float = 300
) -> tuple[World, Ensemble]:
    world = World(WorldConfig(pps=pps))
    ensemble = Ensemble(Policy(hidden_faults=hidden))
    for _ in checked_run(world, ensemble, until_s, step_s=5.0):
        pass
    return world, ensemble


def test_issue_is_cheap_and_monotone() -> None:
    world, ensemble = _synchronised()
    m = world.mono(300)
    start = time.perf_counter()
    issued = [ensemble.issue(m + i * 100_000) for i in range(10_000)]  # 10 000 tokens in 1 s
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"10 000 issues took {elapsed:.2f} s"
    utcs = [i.utc_ns for i in issued]
    assert utcs == sorted(utcs)
    assert all(i.state is ClockState.SYNCHRONISED for i in issued)


def test_rtc_action_sets_the_rtc_from_the_consensus() -> None:
    world, ensemble = _synchronised()
    m = world.mono(300)
    assert ensemble.rtc_action(m) is None  # set at start, since then nothing better
    fresh = Ensemble()
    with pytest.raises(ClockError):
        fresh.rtc_was_set(m, world.posix_ns(m))  # no consensus yet
    assert fresh.rtc_action(m) is None


def test_untrusted_samples_show_but_never_count() -> None:
    ensemble = Ensemble()
    for i in range(5):
        for name, kind in (("gps0", SourceKind.GPS), ("ntp:a", SourceKind.NTP)):
            ensemble.add(
                TimeSample(
                    source=name,
                    kind=kind,
                    mono_ns=i * NS,
                    utc_ns=1_782_000_000 * NS + i * NS,
                    error_ns=MS,
                    trusted=False,
                    reason="no fix" if kind is SourceKind.GPS else "Kiss-o'-Death RATE",
                )
            )
    a = ensemble.assess(5 * NS)
    assert not a.issuing and a.state is ClockState.STARTING
    assert {(s.name, s.status.value, s.reason) for s in a.sources} == {
        ("gps0", "untrusted", "no fix"),
        ("ntp:a", "untrusted", "Kiss-o'-Death RATE"),
    }
    with pytest.raises(TimeNotAvailable) as refused:
        ensemble.issue(5 * NS)
    assert "no usable time source" in refused.value.reason


def test_pps_with_hidden_faults_zero_reaches_microseconds() -> None:
    """Once the crystal's frequency is measured (before: it ages at 100 ppm, 100 µs/s)."""
    world, ensemble = _synchronised(hidden=0, pps=True, until_s=1500)
    a = ensemble.assess(world.mono(1500))
    assert a.issuing and a.bound_ns is not None and a.bound_ns <= 10_000
    assert a.frequency_ppm is not None and abs(a.frequency_ppm - 37.0) < 0.1


def test_after_an_alarm_a_restart_starts_afresh_from_the_sources() -> None:
    """The operator's way out of an alarm (docs/clock.md, ADR 0003): check the sources, then
    restart the appliance; its new ensemble knows no prediction and follows them."""
    faults = (Fault("gps", 600, offset_s=-2.5), Fault("ntp", 600, offset_s=-2.5))
    world = World(WorldConfig(faults=faults))
    ensemble = Ensemble()
    *_, last = run(world, ensemble, 700)
    assert last.assessment.state is ClockState.ALARM
    restarted = Ensemble()
    steps = list(run(world, restarted, 760, from_s=700))
    assert steps[-1].assessment.state is ClockState.SYNCHRONISED
    assert steps[-1].assessment.issuing


def test_an_alarm_ends_on_the_clocks_own_timer_not_on_a_read() -> None:
    """GPS and NTP jump together (alarm), then every source falls silent. No sample comes
    again, yet the alarm ends: at the instant its prediction outgrows max_error_s, a timer
    of the ensemble's own (docs/clock.md, "When the state changes"). An ensemble read every
    hour and one read only at the end agree, then and at every instant asked later."""
    faults = (
        Fault("gps", 600, offset_s=-2.5),
        Fault("ntp", 600, offset_s=-2.5),
        *(Fault(source, 700, silent=True) for source in ("gps", "ntp", "rtc")),
    )
    watched, ignored = Ensemble(), Ensemble()
    for ensemble in (watched, ignored):
        *_, last = run(World(WorldConfig(faults=faults)), ensemble, 700)
        assert last.assessment.state is ClockState.ALARM
    world = World(WorldConfig(faults=faults))
    states = [watched.assess(world.mono(700 + h * 3600)).state for h in range(24 * 30)]
    assert states[0] is ClockState.ALARM and states[-1] is ClockState.UNSYNCHRONISED
    ended = states.index(ClockState.UNSYNCHRONISED)
    assert set(states[:ended]) == {ClockState.ALARM}
    assert set(states[ended:]) == {ClockState.UNSYNCHRONISED}
    for h in (24 * 30, ended, ended - 1, 0):  # later reads changed no earlier answer
        m = world.mono(700 + h * 3600)
        assert ignored.assess(m) == watched.assess(m)
        assert watched.assess(m).state is states[min(h, len(states) - 1)]
    a = ignored.assess(world.mono(700 + 24 * 30 * 3600))
    assert a.utc_ns is None and "no usable time source" in a.reason  # the model is dropped
