"""The appliance's vitals for systemd (appliance/runtime/vitals.py): a driver loop stuck in a
call, or a thread gone, makes the appliance unhealthy (no WATCHDOG=1); the verdict line."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web

from appliance.clock import ClockState, Policy
from appliance.clock.timekeeper import Timekeeper
from appliance.config import ApplianceConfig
from appliance.http.app_keys import TIMEKEEPER
from appliance.runtime.driver_threads import DRIVER_STALL_S, Appliance, Sources
from appliance.runtime.vitals import APPLIANCE, ApplianceVitals, verdict_line
from drivers.monotonic import NS_PER_S, mono_ns
from drivers.nmea import GpsConfig
from tests.waiting import wait_until


class HungGps:
    """A receiver whose read never returns (a USB serial adapter that hangs): its loop
    stops coming round, ``alive_ns`` goes stale, the thread stays alive."""

    def __init__(self) -> None:
        self.config = GpsConfig(device="/dev/ttyUSB0")
        self.alive_ns = mono_ns()
        self.release = threading.Event()
        self.reading = threading.Event()
        self.port_open = threading.Event()
        self.port_open.set()

    def samples(self, stop: threading.Event) -> Iterator[object]:
        self.reading.set()
        self.release.wait(30)  # stuck in a read
        return iter(())

    def stop(self) -> None:
        self.release.set()


def running(gps: HungGps, tmp_path: Path) -> tuple[web.Application, Appliance]:
    """An appliance reading ``gps`` alone, started, in an app as the vitals see it."""
    timekeeper = Timekeeper(Policy())
    sources = Sources(gps=gps)  # type: ignore[arg-type]
    appliance = Appliance(ApplianceConfig(data_dir=tmp_path), sources, timekeeper)
    app = web.Application()
    app[TIMEKEEPER] = timekeeper
    app[APPLIANCE] = appliance
    appliance.start()
    return app, appliance


def test_a_driver_loop_stuck_in_a_call_is_unhealthy_though_its_thread_lives(
    tmp_path: Path,
) -> None:
    gps = HungGps()
    app, appliance = running(gps, tmp_path)
    try:
        wait_until(gps.reading.is_set, 5, "the GPS loop reading")
        vitals = ApplianceVitals(app, None)
        assert vitals().healthy  # quiet, but not for long yet
        assert appliance.stalled_threads(mono_ns() + int(DRIVER_STALL_S * NS_PER_S) // 2) == []
        later = mono_ns() + int((DRIVER_STALL_S + 1) * NS_PER_S)
        (stalled,) = appliance.stalled_threads(later)
        assert stalled.startswith("horodate-gps (stuck for ")
        assert appliance.dead_threads() == []  # alive: only the stall check sees it
        gps.alive_ns = later  # the loop came round again
        assert appliance.stalled_threads(later) == []
    finally:
        appliance.stop()


def test_a_driver_thread_that_ended_is_unhealthy(tmp_path: Path) -> None:
    gps = HungGps()
    gps.release.set()  # samples() returns at once: the thread ends
    app, appliance = running(gps, tmp_path)
    try:
        wait_until(lambda: appliance.dead_threads(), 5, "the GPS thread ending")
        vitals = ApplianceVitals(app, None)()
        assert not vitals.healthy
        assert vitals.status.startswith("NOT HEALTHY: thread horodate-gps ended | ")
    finally:
        appliance.stop()
    assert appliance.dead_threads() == []  # stopping: threads end, nothing is wrong


def test_the_verdict_line_says_the_state_and_the_bound() -> None:
    assert verdict_line(ClockState.SYNCHRONISED, True, 6_000_000, "") == "issuing, bound 6.0 ms"
    assert verdict_line(ClockState.SYNCHRONISED, True, 4_000, "") == "issuing, bound 4 µs"
    assert verdict_line(ClockState.HOLDOVER, True, 80_400_000, "") == (
        "issuing in holdover, bound 80 ms"
    )
    assert verdict_line(ClockState.UNSYNCHRONISED, False, None, "no quorum") == (
        "refusing (unsynchronised): no quorum"
    )
