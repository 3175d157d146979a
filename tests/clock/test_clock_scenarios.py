"""Every fault DESIGN.md names, as a table of small scenarios on a virtual clock.

Each scenario runs a virtual world (tests/clock/world.py) through the ensemble; at every
step the runner checks that the truth is inside the bound whenever the ensemble issues,
that genTime never goes back and that a refusal says why. The expectations then pin the
state and the sources' statuses at chosen instants (or at some step within a span).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from appliance.clock import ClockState, Ensemble, LeapSecond, Policy, SourceStatus
from appliance.clock.assessment import Assessment

from .harness import checked_run
from .world import NS, Fault, World, WorldConfig

S = ClockState
ST = SourceStatus
ISSUING_STATES = (S.SYNCHRONISED, S.HOLDOVER)
LEAP_AT_S = 1_782_864_000  # 2026-07-01T00:00:00Z, after the inserted 2026-06-30T23:59:60


@dataclass(frozen=True, slots=True)
class Expect:
    """At ``at_s`` (or at some step up to ``until_s``): the state, issuing, and statuses."""

    at_s: float
    states: tuple[ClockState, ...]
    issuing: bool | None = None
    sources: tuple[tuple[str, SourceStatus], ...] = ()
    until_s: float | None = None
    reason: str = ""  # a word the state's or a source's reason must contain

    def met(self, a: Assessment) -> bool:
        if a.state not in self.states:
            return False
        if self.issuing is not None and a.issuing is not self.issuing:
            return False
        by_name = {s.name: s for s in a.sources}
        for name, status in self.sources:
            if name not in by_name or by_name[name].status is not status:
                return False
        if self.reason:
            texts = [a.reason, *(s.reason for s in a.sources)]
            if not any(self.reason in t for t in texts):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    until_s: float
    expects: tuple[Expect, ...]
    faults: tuple[Fault, ...] = ()
    config: WorldConfig = field(default_factory=WorldConfig)
    policy: Policy = field(default_factory=Policy)
    step_s: float = 1.0


TWO_NTP = WorldConfig(ntp=("ntp:a", "ntp:b"))
SYNCED = (S.SYNCHRONISED,)

SCENARIOS = (
    Scenario(
        "healthy: GPS, NTP and RTC agree",
        600,
        (
            Expect(60, SYNCED, True, (("gps0", ST.SELECTED), ("ntp:a", ST.SELECTED))),
            Expect(600, SYNCED, True, (("rtc0", ST.SELECTED),)),
        ),
    ),
    Scenario(
        "GPS jumps 2.5 s: falseticker within 30 s, holdover on NTP",
        1500,
        (
            Expect(1190, SYNCED, True, (("gps0", ST.SELECTED),)),
            Expect(1200, ISSUING_STATES, True, (("gps0", ST.FALSETICKER),), until_s=1230),
            Expect(1500, (S.HOLDOVER,), True, (("gps0", ST.FALSETICKER),)),
        ),
        faults=(Fault("gps", 1200, offset_s=2.5),),
    ),
    Scenario(
        "slow GPS spoofing drift (100 ppm): calibration dropped, then falseticker",
        9000,
        (
            Expect(1700, SYNCED, True, (("gps0", ST.SELECTED),)),
            Expect(1800, ISSUING_STATES, reason="latency changed", until_s=3000),
            Expect(3000, ISSUING_STATES, True, (("gps0", ST.FALSETICKER),), until_s=9000),
        ),
        faults=(Fault("gps", 1800, drift_ppm=100.0),),
        step_s=2.0,
    ),
    Scenario(
        "GPS fix lost, then back",
        1800,
        (
            Expect(1300, (S.HOLDOVER,), True, (("gps0", ST.UNTRUSTED),), reason="no fix"),
            Expect(1560, SYNCED, True, (("gps0", ST.SELECTED),)),
        ),
        faults=(Fault("gps", 1200, 1500, untrusted="no fix"),),
    ),
    Scenario(
        "receiver cold start with a wrong date: no token until it is right",
        1200,
        (
            Expect(30, (S.STARTING,), False, (("gps0", ST.FALSETICKER),)),
            Expect(590, (S.STARTING,), False),
            Expect(660, SYNCED, True, (("gps0", ST.SELECTED),)),
        ),
        faults=(Fault("gps", 0, 600, offset_s=-1024 * 7 * 86400.0),),
        config=TWO_NTP,
    ),
    Scenario(
        "NTP falseticker among two servers and the GPS",
        1800,
        (
            Expect(1300, SYNCED, True, (("ntp:b", ST.FALSETICKER), ("ntp:a", ST.SELECTED))),
            Expect(1800, SYNCED, True, (("ntp:b", ST.FALSETICKER), ("gps0", ST.SELECTED))),
        ),
        faults=(Fault("ntp:b", 1200, offset_s=0.8),),
        config=TWO_NTP,
    ),
    Scenario(
        "NTP servers unsynchronised (LI=3)",
        1800,
        (
            Expect(
                1300,
                (S.HOLDOVER,),
                True,
                (("ntp:a", ST.UNSYNCHRONISED), ("ntp:b", ST.UNSYNCHRONISED)),
                reason="LI=3",
            ),
            Expect(1700, SYNCED, True, (("ntp:a", ST.SELECTED),)),
        ),
        faults=(Fault("ntp", 1200, 1600, unsynchronised=True),),
        config=TWO_NTP,
    ),
    Scenario(
        "Kiss-o'-Death from one server",
        1800,
        (
            Expect(
                1300,
                SYNCED,
                True,
                (("ntp:a", ST.UNTRUSTED), ("ntp:b", ST.SELECTED)),
                reason="Kiss-o'-Death",
            ),
        ),
        faults=(Fault("ntp:a", 1200, untrusted="Kiss-o'-Death RATE"),),
        config=TWO_NTP,
    ),
    Scenario(
        "all NTP unreachable: stale, holdover",
        2400,
        (
            Expect(1250, SYNCED, True, (("ntp:a", ST.SELECTED),)),
            Expect(1600, (S.HOLDOVER,), True, (("ntp:a", ST.STALE),)),
        ),
        faults=(Fault("ntp", 1200, silent=True),),
    ),
    Scenario(
        "RTC lost power (OSF): unsynchronised, then set again from the consensus",
        2400,
        (
            Expect(1100, SYNCED, True, (("rtc0", ST.SELECTED),)),
            Expect(1200, SYNCED, True, (("rtc0", ST.UNSYNCHRONISED),), reason="OSF", until_s=1203),
            Expect(1400, SYNCED, True, (("rtc0", ST.SELECTED),), until_s=2400),
        ),
        faults=(Fault("rtc", 1200, 1201, lost_power=True),),
    ),
    Scenario(
        "RTC drifts beyond its ±2 ppm bound: falseticker, then set again",
        6000,
        (
            Expect(
                2000,
                SYNCED,
                True,
                (("rtc0", ST.FALSETICKER),),
                reason="beyond its ±2 ppm",
                until_s=6000,
            ),
        ),
        faults=(Fault("rtc", 1800, drift_ppm=300.0),),
        step_s=2.0,
    ),
    Scenario(
        "serial cable pulled and plugged back",
        1800,
        (
            Expect(1300, (S.HOLDOVER,), True, (("gps0", ST.STALE),)),
            Expect(1560, SYNCED, True, (("gps0", ST.SELECTED),)),
        ),
        faults=(Fault("gps", 1200, 1500, silent=True),),
    ),
    Scenario(
        "every source lost: holdover, then refusal",
        1800 + 30 * 86400,
        (
            Expect(1800 + 3600, (S.HOLDOVER,), True),
            Expect(1800 + 30 * 86400, (S.UNSYNCHRONISED,), False, reason="holdover expired"),
        ),
        faults=(
            Fault("gps", 1800, silent=True),
            Fault("ntp", 1800, silent=True),
            Fault("rtc", 1800, silent=True),
        ),
        step_s=300.0,
    ),
    Scenario(
        "leap second announced by NTP: no token in the window, right after it",
        3600,
        (
            Expect(1790, (S.LEAP_WINDOW,), False, reason="leap second"),
            Expect(1815, (S.LEAP_WINDOW,), False),
            Expect(1900, SYNCED, True, (("gps0", ST.SELECTED), ("ntp:a", ST.SELECTED))),
        ),
        config=WorldConfig(start_utc_ns=(LEAP_AT_S - 1800) * NS, leaps=(LeapSecond(LEAP_AT_S),)),
    ),
    Scenario(
        "leap second from the configured list, NTP silent about it",
        3600,
        (
            Expect(1795, (S.LEAP_WINDOW,), False),
            Expect(1900, SYNCED, True),
        ),
        config=WorldConfig(
            start_utc_ns=(LEAP_AT_S - 1800) * NS, leaps=(LeapSecond(LEAP_AT_S),), ntp=()
        ),
        policy=Policy(leap_seconds=(LeapSecond(LEAP_AT_S),), quorum=1),
    ),
    Scenario(
        "GPS and NTP jump 2.5 s together: alarm, not a new truth; back: reconverged",
        3600,
        (
            Expect(1790, SYNCED, True),
            Expect(
                1800, (S.ALARM,), False, (("gps0", ST.ALARM), ("ntp:a", ST.ALARM)), until_s=1830
            ),
            Expect(2390, (S.ALARM,), False, (("rtc0", ST.FALSETICKER),)),
            Expect(2450, SYNCED, True, (("gps0", ST.SELECTED), ("ntp:a", ST.SELECTED))),
        ),
        faults=(Fault("gps", 1800, 2400, offset_s=2.5), Fault("ntp", 1800, 2400, offset_s=2.5)),
    ),
    Scenario(
        "NMEA latency jumps from 120 ms to 400 ms: detected, calibration redone",
        3600,
        (
            Expect(1800, ISSUING_STATES, True, reason="latency changed", until_s=1830),
            Expect(3600, SYNCED, True, (("gps0", ST.SELECTED),), reason="calibrated"),
        ),
        faults=(Fault("gps", 1800, latency_s=0.400),),
    ),
)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    world = World(replace(scenario.config, faults=scenario.faults))
    ensemble = Ensemble(scenario.policy)
    pending = sorted(scenario.expects, key=lambda e: e.at_s)
    missed: list[str] = []
    seen: dict[int, Assessment] = {}
    for step in checked_run(world, ensemble, scenario.until_s + 1e-9, step_s=scenario.step_s):
        for i, e in enumerate(pending):
            if i in seen:
                continue
            end = e.until_s if e.until_s is not None else e.at_s
            if e.at_s <= step.t_s + 1e-6 and e.met(step.assessment):
                seen[i] = step.assessment
            elif step.t_s >= end - 1e-6 and step.t_s >= e.at_s - 1e-6 and i not in seen:
                a = step.assessment
                missed.append(
                    f"at {step.t_s:.0f} s expected {e}, got {a.state.value} "
                    f"issuing={a.issuing} reason={a.reason!r} "
                    + ", ".join(f"{s.name}={s.status.value} ({s.reason})" for s in a.sources)
                )
                seen[i] = a
    assert not missed, "\n".join(missed)
    assert len(seen) == len(pending), "some expectations were never reached"
