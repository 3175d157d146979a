"""Guards of the time rule that nothing else in the suite would miss (issue 13).

Each test below fails when its guard is removed from appliance/clock/, so a green build
means the guard is there and a red one names it:

- the holdover bound's allowance for the crystal wandering after its frequency was
  measured: ``crystal_wander_ppm`` added on each side of the slope range the frequency
  window allows (ADR 0001, point 4);
- the RTC's evidence widening with the time since it was set, at ``rtc_max_ppm``; it
  matters once ``hidden_faults = 0`` lets the RTC narrow a holdover bound (ADR 0001,
  point 6);
- ``Ensemble.issue`` refusing, on the bound it computes itself, a bound wider than
  ``max_error_s`` between reassessments, rather than leaving that to the TSA engine's cap.

Simulated time only (tests/clock/world.py): a day of holdover runs in seconds.
"""

from __future__ import annotations

import pytest

from appliance.clock import ClockState, Ensemble, Policy, SourceStatus, TimeNotAvailable

from .harness import checked_run
from .world import MS, NS, Fault, World, WorldConfig, crystal_ramp, run

H = 3600.0


def _lost(*sources: str, at_s: float) -> tuple[Fault, ...]:
    return tuple(Fault(source, at_s, silent=True) for source in sources)


def test_the_world_crystal_runs_along_its_path() -> None:
    """The harness's wandering crystal: its lead on the truth is the integral of its path."""
    world = World(WorldConfig(crystal_path=crystal_ramp(37.0, 36.0, 100.0, 200.0)))
    ahead = world.crystal.ahead_ns
    assert [world.crystal.ppm_at(t) for t in (0, 100, 150, 200, 900)] == [
        37.0,
        37.0,
        36.5,
        36.0,
        36.0,
    ]
    assert ahead(100 * NS) == 3_700_000  # 37 ppm for 100 s
    assert ahead(150 * NS) == 3_700_000 + 1_837_500  # mean 36.75 ppm over 50 s
    assert ahead(200 * NS) == 3_700_000 + 3_650_000
    assert ahead(300 * NS) == 7_350_000 + 3_600_000  # then held at 36 ppm
    steady = World(WorldConfig(crystal_ppm=37.0))
    for m in (world.mono(0), world.mono(99.5)):
        assert world.true_ns(m) == steady.true_ns(m)  # the same truth before the ramp
    later = world.mono(5 * H)
    assert abs(world.mono_at(world.true_ns(later)) - later) <= 1  # inverse, to the floor
    with pytest.raises(ValueError):
        World(WorldConfig(crystal_path=((10.0, 37.0), (10.0, 36.0))))


# -- 1. the allowance for the crystal's future wander ---------------------------------------

WANDER_POLICY = Policy(hidden_faults=0)  # PPS and the intersection: a microsecond window
WINDOW_S = WANDER_POLICY.frequency_window_points * WANDER_POLICY.frequency_point_interval_s
WANDER_SYNC_S = 7800.0  # the frequency window is full (59 × 120 s of points)
WANDER_HOLDOVER_S = 4 * H


@pytest.mark.parametrize("direction", [-1.0, 1.0], ids=["slowing", "quickening"])
def test_holdover_allows_for_the_crystal_wandering_after_its_frequency_was_measured(
    direction: float,
) -> None:
    """The crystal ramps steadily by ``crystal_wander_ppm`` per frequency window, through
    the window and for one window's time into holdover, then holds: never more than the
    allowance over the window, nor away from its value when the holdover began. The
    window's intervals allow its *current* frequency only to within the wander it had
    inside the window; the bound must also grow by what it may wander next."""
    p = WANDER_POLICY
    wander = p.crystal_wander_ppm
    ramp_end_s = WANDER_SYNC_S + WINDOW_S
    to_ppm = 37.0 + direction * wander * ramp_end_s / WINDOW_S
    path = crystal_ramp(37.0, to_ppm, 0.0, ramp_end_s)
    lost = _lost("gps", "ntp", at_s=WANDER_SYNC_S)
    world = World(WorldConfig(pps=True, rtc=False, crystal_path=path, faults=lost))
    # Within the allowance: over the window's span, and from where the holdover began.
    span_s = (p.frequency_window_points - 1) * p.frequency_point_interval_s
    end_s = WANDER_SYNC_S + WANDER_HOLDOVER_S
    lost_ppm = world.crystal.ppm_at(WANDER_SYNC_S)
    assert abs(lost_ppm - world.crystal.ppm_at(WANDER_SYNC_S - span_s)) <= wander
    assert abs(world.crystal.ppm_at(end_s) - lost_ppm) <= wander

    ensemble = Ensemble(p)
    steps = list(checked_run(world, ensemble, end_s + 1e-9, step_s=10.0))

    synced = next(s for s in steps if s.t_s >= WANDER_SYNC_S - 10).assessment
    assert synced.state is ClockState.SYNCHRONISED and synced.skew_ppm is not None
    assert synced.skew_ppm < wander  # the window pins the frequency to within the wander
    last = steps[-1]
    a = last.assessment
    assert a.state is ClockState.HOLDOVER and a.issuing and a.bound_ns is not None
    assert a.utc_ns is not None
    # Sharp: the bound less the allowance for wander would not hold the truth.
    off_ns = abs(a.utc_ns - last.truth_posix_ns)
    assert off_ns > a.bound_ns - wander * 1e-6 * WANDER_HOLDOVER_S * NS, (off_ns, a.bound_ns)


# -- 2. the RTC's evidence widening with the time since it was set --------------------------

RTC_POLICY = Policy(hidden_faults=0, rtc_resync_s=30 * 86400.0)  # set once, not hourly
RTC_SYNC_S = 1 * H
RTC_HOLDOVER_S = 24 * H


def test_rtc_evidence_widens_with_the_time_since_it_was_set() -> None:
    """A DS3231 1.8 ppm fast (inside its ±2 ppm), set in the first hour and never again,
    narrows a day of holdover (``hidden_faults = 0``). After a few hours it is further
    from the truth than its set and read errors: only its widening at ``rtc_max_ppm``
    since the set keeps the truth inside the bound it narrows."""
    p = RTC_POLICY
    lost = _lost("gps", "ntp", at_s=RTC_SYNC_S)
    world = World(WorldConfig(rtc_drift_ppm=1.8, faults=lost))
    ensemble = Ensemble(p)
    end_s = RTC_SYNC_S + RTC_HOLDOVER_S
    steps = list(checked_run(world, ensemble, end_s + 1e-9, step_s=10.0))

    assert world.rtc.set_true_ns <= world.true_ns(world.mono(RTC_SYNC_S))  # set early only
    last = steps[-1]
    a = last.assessment
    assert a.state is ClockState.HOLDOVER and a.issuing and a.bound_ns is not None
    rtc = next(s for s in a.sources if s.name == "rtc0")
    assert rtc.status is not SourceStatus.FALSETICKER and rtc.bound_ns is not None
    # The RTC, not the crystal, sets the bound: the crystal alone allows far wider.
    assert a.skew_ppm is not None
    crystal_alone_ns = (a.skew_ppm + p.crystal_wander_ppm) * 1e-6 * RTC_HOLDOVER_S * NS
    assert a.bound_ns <= rtc.bound_ns < crystal_alone_ns / 2
    # Sharp: by the end the RTC has drifted far beyond its set and read errors.
    set_s = world.t_s(world.mono_at(world.rtc.set_true_ns))
    synced = [s for s in steps if set_s - 1e-6 <= s.t_s < RTC_SYNC_S]
    at_set_ns = max(s.assessment.bound_ns or 0 for s in synced)
    unwidened_ns = at_set_ns + MS + world.cfg.rtc_read_error_s * NS
    drift_ns = 1.8e-6 * (world.true_ns(world.mono(end_s)) - world.rtc.set_true_ns)
    assert drift_ns > 10 * unwidened_ns, (drift_ns, unwidened_ns)


# -- 3. issue() refusing its own bound beyond max_error_s ------------------------------------


def _holdover_expiry(world: World, ensemble: Ensemble, from_s: float) -> int:
    """The first instant (ns) at which the holdover bound exceeds max_error_s."""
    max_error_ns = ensemble.policy.max_error_ns
    lo, hi = world.mono(from_s), world.mono(from_s + 60 * 86400.0)
    assert ensemble.assess(lo).issuing and not ensemble.assess(hi).issuing
    while hi - lo > 1:
        mid = (lo + hi) // 2
        bound = ensemble.assess(mid).bound_ns
        if bound is not None and bound <= max_error_ns:
            lo = mid
        else:
            hi = mid
    return hi


def test_issue_refuses_a_bound_beyond_max_error_between_reassessments() -> None:
    """Every source lost: the holdover bound passes max_error_s between two assessments.
    issue() grows the decision in force to its instant without reassessing (O(1) between
    samples), so it must refuse on the bound it computes itself."""
    lost = _lost("gps", "ntp", "rtc", at_s=1200.0)
    world = World(WorldConfig(faults=lost))
    ensemble = Ensemble()
    p = ensemble.policy
    for _ in run(world, ensemble, 1200.0):
        pass
    expiry = _holdover_expiry(world, ensemble, 1300.0)
    before, after = expiry - NS // 2, expiry + 4 * NS // 10

    a = ensemble.assess(before)
    assert a.state is ClockState.HOLDOVER and a.issuing
    assert a.bound_ns is not None and a.bound_ns <= p.max_error_ns
    ensemble.issue(before)
    with pytest.raises(TimeNotAvailable) as refused:
        ensemble.issue(after)
    assert f"exceeds {p.max_error_s:g} s" in refused.value.reason
    assert refused.value.state == ClockState.HOLDOVER.value

    late = ensemble.assess(after)
    assert not late.issuing and "holdover expired" in late.reason
    assert late.bound_ns is not None and late.bound_ns > p.max_error_ns  # still reported
