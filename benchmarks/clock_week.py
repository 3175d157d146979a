"""The clock ensemble over a simulated week: honesty, bounds, holdover, detection.

    .venv/bin/python benchmarks/clock_week.py [--days D] [--quick]

Runs the pure ensemble against the virtual world of tests/clock/world.py (truth known, the
Pi's crystal 37 ppm fast, a DS3231 0.8 ppm off, NMEA latency 120 ± 4 ms, NTP ± 10 ms, PPS
± 5 µs) and prints:

1. a week of mixed faults (every fault DESIGN.md names, one after the other): instants
   where the truth was outside the bound while issuing (must be 0), time issuing, states;
2. the median bound for NMEA-only (after calibration against NTP), NMEA+NTP, and with PPS
   (default policy, and ``hidden_faults=0``);
3. holdover: how long after every source is lost until the bound passes 1 s;
4. detection: how long after a 2.5 s GPS jump it is flagged, and after GPS and NTP jump
   together, the alarm.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.clock import ClockState, Ensemble, Policy, SourceStatus, TimeNotAvailable
from tests.clock.world import Fault, World, WorldConfig, run

H = 3600.0
D = 86400.0
NTP2 = ("ntp:a", "ntp:b")


def week_faults(days: float) -> tuple[Fault, ...]:
    """One fault after another, spread evenly over the run; each slot may hold several."""
    plan: list[list[tuple[str, float, dict[str, object]]]] = [
        [("gps", 0.5 * H, {"offset_s": 2.5})],  # GPS jump
        [("ntp:b", 2 * H, {"offset_s": 0.8})],  # NTP falseticker
        [("gps", 0.5 * H, {"untrusted": "no fix"})],  # fix loss
        [("ntp", 1 * H, {"unsynchronised": True})],  # LI=3
        [("gps", 0.3 * H, {"silent": True})],  # serial cable pulled
        [("gps", 3 * H, {"drift_ppm": 100.0})],  # slow spoofing drift
        [("rtc", 6 * H, {"drift_ppm": 50.0})],  # RTC drift
        [("ntp", 4 * H, {"silent": True})],  # all NTP unreachable
        [("gps", 4 * H, {"latency_s": 0.400})],  # NMEA latency jump
        [("rtc", 60.0, {"lost_power": True})],  # RTC lost power
        [("ntp:a", 1 * H, {"untrusted": "Kiss-o'-Death RATE"})],  # KoD
        [("gps", 0.25 * H, {"offset_s": 2.5}), ("ntp", 0.25 * H, {"offset_s": 2.5})],  # joint
        [(s, 2 * H, {"silent": True}) for s in ("gps", "ntp", "rtc")],  # every source lost
    ]
    slot = days * D / (len(plan) + 1)
    return tuple(
        Fault(source, (i + 1) * slot, (i + 1) * slot + length, **kw)  # type: ignore[arg-type]
        for i, faults in enumerate(plan)
        for source, length, kw in faults
    )


def mixed_week(days: float) -> None:
    world = World(WorldConfig(ntp=NTP2, faults=week_faults(days)))
    ensemble = Ensemble()
    outside = issued = steps = 0
    states: Counter[str] = Counter()
    last_utc: int | None = None
    backwards = 0
    for step in run(world, ensemble, days * D, step_s=10.0):
        a = step.assessment
        steps += 1
        states[a.state.value] += 1
        if a.issuing:
            assert a.utc_ns is not None and a.bound_ns is not None
            if abs(a.utc_ns - step.truth_posix_ns) > a.bound_ns:
                outside += 1
            try:
                token = ensemble.issue(world.mono(step.t_s))
            except TimeNotAvailable:
                continue
            issued += 1
            if abs(token.utc_ns - step.truth_posix_ns) > token.bound_ns:
                outside += 1
            if last_utc is not None and token.utc_ns < last_utc:
                backwards += 1
            last_utc = token.utc_ns
    print(f"1. {days:g} simulated days of mixed faults ({len(week_faults(days))} faults)")
    print(f"   truth outside the bound while issuing: {outside}   (must be 0)")
    print(f"   genTime going backwards:               {backwards}   (must be 0)")
    print(f"   assessments: {steps}, tokens issued: {issued} ({100 * issued / steps:.1f} %)")
    print(
        "   states: " + ", ".join(f"{k} {100 * v / steps:.1f} %" for k, v in states.most_common())
    )


def median_bound(
    config: WorldConfig, policy: Policy, warm_s: float, until_s: float, source: str = ""
) -> tuple[float, str]:
    world = World(config)
    ensemble = Ensemble(policy)
    bounds: list[int] = []
    states: Counter[str] = Counter()
    for step in run(world, ensemble, until_s, step_s=10.0):
        if step.t_s < warm_s:
            continue
        a = step.assessment
        states[a.state.value] += 1
        if source:
            rep = next(s for s in a.sources if s.name == source)
            if rep.bound_ns is not None and rep.status is SourceStatus.SELECTED:
                bounds.append(rep.bound_ns)
        elif a.issuing and a.bound_ns is not None:
            bounds.append(a.bound_ns)
    return (statistics.median(bounds) if bounds else float("nan")), states.most_common(1)[0][0]


def bounds(hours: float) -> None:
    warm, end = 1 * H, (1 + hours) * H
    print(f"2. median bound over {hours:g} h, after 1 h of warm-up")
    lost_ntp = (Fault("ntp", warm, silent=True),)
    rows = [
        (
            "NMEA-only (GPS interval, calibrated vs NTP, NTP then gone)",
            WorldConfig(faults=lost_ntp),
            Policy(quorum=1),
            "gps0",
        ),
        (
            "NMEA-only, quorum=1 (ensemble, NTP gone)",
            WorldConfig(faults=lost_ntp),
            Policy(quorum=1),
            "",
        ),
        ("NMEA+NTP (ensemble)", WorldConfig(), Policy(), ""),
        ("with PPS, hidden_faults=1 (default)", WorldConfig(pps=True), Policy(), ""),
        ("with PPS, hidden_faults=0", WorldConfig(pps=True), Policy(hidden_faults=0), ""),
    ]
    for name, config, policy, source in rows:
        median, state = median_bound(config, policy, warm, end, source)
        print(f"   {name:<62} {median / 1e6:10.3f} ms   ({state})")


def holdover(sync_h: float) -> None:
    print(f"3. holdover: every source lost after {sync_h:g} h synchronised; time until bound > 1 s")
    for name, config, policy in (
        ("NMEA+NTP, default policy", WorldConfig(), Policy()),
        ("with PPS, default policy", WorldConfig(pps=True), Policy()),
        (
            "NMEA+NTP, hidden_faults=0 (the DS3231 narrows it)",
            WorldConfig(),
            Policy(hidden_faults=0),
        ),
    ):
        t_lost = sync_h * H
        faults = tuple(Fault(s, t_lost, silent=True) for s in ("gps", "ntp"))
        if policy.hidden_faults:
            faults += (Fault("rtc", t_lost, silent=True),)
        world = World(replace(config, faults=faults))
        ensemble = Ensemble(policy)
        expired = None
        for step in run(world, ensemble, t_lost + 60 * D, step_s=60.0):
            a = step.assessment
            if step.t_s > t_lost and not a.issuing:
                expired = step.t_s - t_lost
                break
        text = f"{expired / H:8.1f} h" if expired is not None else "   > 60 days"
        print(f"   {name:<62} {text}")


def detection(trials: int) -> None:
    print(f"4. detection (median and worst of {trials} trials, after 1 h synchronised)")
    gps_lat: list[float] = []
    alarm_lat: list[float] = []
    for trial in range(trials):
        t0 = 1 * H + 37.3 * trial
        for joint, out in ((False, gps_lat), (True, alarm_lat)):
            faults: tuple[Fault, ...] = (Fault("gps", t0, offset_s=2.5),)
            if joint:
                faults += (Fault("ntp", t0, offset_s=2.5),)
            world = World(WorldConfig(seed=trial, ntp=NTP2, faults=faults))
            ensemble = Ensemble()
            for step in run(world, ensemble, t0 + 300, step_s=1.0):
                if step.t_s < t0:
                    continue
                a = step.assessment
                gps = next(s for s in a.sources if s.name == "gps0")
                hit = (
                    a.state is ClockState.ALARM if joint else gps.status is SourceStatus.FALSETICKER
                )
                if hit:
                    out.append(step.t_s - t0)
                    break
    for name, lat in (
        ("GPS 2.5 s off -> gps0 falseticker", gps_lat),
        ("GPS and NTP 2.5 s off together -> alarm", alarm_lat),
    ):
        print(f"   {name:<62} median {statistics.median(lat):5.1f} s  worst {max(lat):5.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0, help="length of the mixed run")
    parser.add_argument("--quick", action="store_true", help="1 day, shorter runs")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    days = 1.0 if args.quick else args.days
    start = time.perf_counter()
    mixed_week(days)
    bounds(2.0 if args.quick else 6.0)
    holdover(6.0)
    detection(3 if args.quick else 5)
    print(f"(ran in {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
