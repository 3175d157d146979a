"""The simulated world: life cycle, the fault set and its JSON, and the three parts reached
through their production paths (a pty read by pyserial, UDP packets from ntplib and the real
NTP driver, register reads by the adafruit DS3231 driver over the I2C bus)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator

import adafruit_ds3231
import ntplib
import pytest
import serial

from drivers.errors import DriverError
from drivers.gps import GpsConfig, GpsReceiver, GpsSample
from drivers.monotonic import NS_PER_S, mono_ns, paired_ns
from drivers.ntp import NtpClient, NtpConfig, NtpServerConfig
from drivers.rtc import Ds3231Clock
from drivers.sim.faults import FaultError, Faults, GpsFaults, NtpFaults, RtcFaults
from drivers.sim.world import RTC_I2C_ADDRESS, SimWorld
from tests.test_sim_gps import capture, full_cycles, rmc_phase_s
from tests.waiting import wait_until

LATE_S = 0.2  # scheduling slack on a shared machine


def sim_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("sim-")}


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def ntp_query(world: SimWorld) -> ntplib.NTPStats:
    host, port = world.ntp_address
    return ntplib.NTPClient().request(host, port=port, version=4, timeout=1.0)


def truth_at(mono: int) -> int:
    """The host's real clock at raw-monotonic instant ``mono`` (truth of the simulation)."""
    m, r = paired_ns()
    return r + (mono - m)


# -- life cycle -----------------------------------------------------------------------------


def test_start_and_stop_leave_no_thread_or_fd_behind() -> None:
    threads_before, fds_before = sim_threads(), open_fds()
    for _ in range(2):
        world = SimWorld(gps_baud=None)
        with world:
            started = sim_threads() - threads_before
            assert "sim-gps" in started and any(n.startswith("sim-ntp") for n in started)
            assert os.path.islink(world.gps_device)
            device = world.gps_device
        assert sim_threads() == threads_before
        assert open_fds() <= fds_before
        assert not os.path.lexists(device)
        with pytest.raises(DriverError):
            world.start()  # a stopped world stays stopped
        world.stop()  # idempotent


# -- the fault set --------------------------------------------------------------------------
# These tests never start the world (no thread), but it holds a pty from construction: the
# fixture stops it.


@pytest.fixture
def world() -> Iterator[SimWorld]:
    w = SimWorld(gps_baud=None)
    try:
        yield w
    finally:
        w.stop()


def test_faults_json_round_trip(world: SimWorld) -> None:
    assert world.faults == Faults()
    assert world.faults_json() == {"gps": {}, "ntp": {}, "rtc": {}}
    text = json.dumps(
        {
            "gps": {"offset_s": 5.0, "fix": False, "garbage": True, "latency_s": 0.6},
            "ntp": {"unsynchronised": True, "drift_ppm": -12.5, "kod": "RATE"},
            "rtc": {"lost_power": True, "drift_ppm": 30, "silent": True},
        }
    )
    applied = world.set_faults_json(text)
    assert world.faults is applied
    assert applied.gps == GpsFaults(offset_s=5.0, fix=False, garbage=True, latency_s=0.6)
    assert applied.ntp == NtpFaults(unsynchronised=True, drift_ppm=-12.5, kod="RATE")
    assert applied.rtc == RtcFaults(lost_power=True, drift_ppm=30.0, silent=True)
    assert world.faults_json() == json.loads(text)
    # what GET returns, POSTed back, is the same set; bytes and parsed JSON are accepted too
    assert world.set_faults_json(json.dumps(world.faults_json()).encode()) == applied
    assert world.set_faults_json(world.faults_json()) == applied
    world.clear_faults()
    assert world.faults == Faults() and world.faults_json() == {"gps": {}, "ntp": {}, "rtc": {}}


def test_set_faults_replaces_the_whole_set_and_restarts_only_changed_drift(
    world: SimWorld,
) -> None:
    t0 = world.faults_set_mono_ns
    world.set_faults_json({"gps": {"drift_ppm": 5.0}, "rtc": {"drift_ppm": 20.0}})
    t1 = world.faults_set_mono_ns
    assert t1["gps"] > t0["gps"] and t1["rtc"] > t0["rtc"] and t1["ntp"] == t0["ntp"]
    world.set_faults_json({"gps": {"drift_ppm": 5.0, "fix": False}, "ntp": {"offset_s": 1.0}})
    t2 = world.faults_set_mono_ns
    # POST replaces: the RTC fault is gone, not merged
    assert world.faults == Faults(
        gps=GpsFaults(drift_ppm=5.0, fix=False), ntp=NtpFaults(offset_s=1.0)
    )
    assert t2["ntp"] > t1["ntp"] and t2["rtc"] > t1["rtc"]
    assert t2["gps"] == t1["gps"]  # same drift, only the fix changed: it keeps accumulating
    world.set_faults_json({"gps": {"drift_ppm": 5.0}, "ntp": {"offset_s": 1.0, "kod": "DENY"}})
    t3 = world.faults_set_mono_ns
    assert t3 == t2
    world.set_faults_json({"gps": {"drift_ppm": 6.0}, "ntp": {"offset_s": 1.0, "kod": "DENY"}})
    assert world.faults_set_mono_ns["gps"] > t3["gps"]
    # what each part polls is the pair (its faults, that instant)
    assert world._gps_faults() == (GpsFaults(drift_ppm=6.0), world.faults_set_mono_ns["gps"])
    assert world._rtc_faults() == (RtcFaults(), t2["rtc"])


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"\xff\xfe{}",
        "[]",
        '"gps"',
        '{"gps": {"offset": 1}}',
        '{"gpx": {}}',
        '{"gps": {"offset_s": "5"}}',
        '{"gps": {"fix": 0}}',
        '{"gps": {"latency_s": 2}}',
        '{"gps": {"offset_s": NaN}}',
        '{"gps": {"offset_s": 1e12}}',
        '{"ntp": {"kod": "XXXX"}}',
        '{"rtc": {"lost_power": "yes"}}',
        '{"rtc": []}',
        "{" + " " * 70_000 + "}",
    ],
)
def test_invalid_fault_sets_are_refused_and_change_nothing(
    world: SimWorld, data: str | bytes
) -> None:
    world.set_faults(Faults(gps=GpsFaults(offset_s=1.0)))
    before, set_at = world.faults, world.faults_set_mono_ns
    with pytest.raises(FaultError):
        world.set_faults_json(data)
    assert world.faults is before and world.faults_set_mono_ns == set_at


def test_set_faults_refuses_what_is_not_a_fault_set(world: SimWorld) -> None:
    with pytest.raises(FaultError):
        world.set_faults({"gps": {}})  # type: ignore[arg-type]
    assert world.faults == Faults()


def test_fault_changes_are_logged_for_the_operator(
    world: SimWorld, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="drivers.sim.world"):
        world.set_faults_json({"gps": {"offset_s": 5.0}})
        world.clear_faults()
    messages = [r.getMessage() for r in caplog.records]
    assert 'sim: faults now {"gps": {"offset_s": 5.0}}' in messages
    assert "sim: faults now {} (healthy)" in messages


def test_concurrent_fault_swaps_are_atomic(world: SimWorld) -> None:
    sets = [
        Faults(gps=GpsFaults(offset_s=float(i)), ntp=NtpFaults(offset_s=float(i))) for i in range(8)
    ]
    stop = threading.Event()
    seen: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(300):
                world.set_faults(sets[(i + k) % len(sets)])
        except BaseException as e:  # surfaced below
            errors.append(e)

    def reader() -> None:
        while not stop.is_set():
            faults = world.faults  # one read: a set as written, never half of two
            seen.append((faults.gps.offset_s, faults.ntp.offset_s))

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(10)
    stop.set()
    for t in readers:
        t.join(10)
    assert not errors
    assert seen and all(g == n for g, n in seen)
    assert world.faults in sets


# -- the parts, through their production paths ------------------------------------------------


def test_each_part_answers_and_obeys_its_faults() -> None:
    with SimWorld(gps_latency_s=0.05, gps_jitter_s=0.0, gps_baud=None) as world:
        # GPS: a pty that pyserial opens and reads
        with serial.Serial(world.gps_device, timeout=0.05) as port:
            healthy = full_cycles(capture(port, 1.3))
            assert healthy
            for label, cycle in healthy.items():
                assert 0.05 - 0.005 <= rmc_phase_s(label, cycle) <= 0.05 + LATE_S
            # NTP: a raw NTPv4 request over loopback UDP
            reply = ntp_query(world)
            assert reply.stratum == 1 and reply.leap == 0 and abs(reply.offset) < 0.05
            # RTC: an I2C scan finds the DS3231; the adafruit driver reads the time
            bus = world.i2c_bus
            assert bus.try_lock()
            try:
                assert bus.scan() == [RTC_I2C_ADDRESS]
            finally:
                bus.unlock()
            chip = adafruit_ds3231.DS3231(bus)
            assert not chip.lost_power
            assert abs(time.mktime(chip.datetime) - time.mktime(time.gmtime())) <= 1.5

            world.set_faults_json(
                {
                    "gps": {"offset_s": 5.0},
                    "ntp": {"offset_s": -2.0, "unsynchronised": True},
                    "rtc": {"lost_power": True},
                }
            )
            shifted = full_cycles(capture(port, 2.2))
        reply = ntp_query(world)
        assert reply.leap == 3 and reply.offset == pytest.approx(-2.0, abs=0.05)
        assert chip.lost_power and chip.datetime.tm_year == 2000  # power-on reset
        assert shifted
        for label, cycle in shifted.items():
            # label − arrival = offset − latency: the ensemble sees a consistent +5 s
            assert -4.95 - 0.005 <= rmc_phase_s(label, cycle) <= -4.95 + LATE_S
        world.clear_faults()
        reply = ntp_query(world)
        assert reply.leap == 0 and abs(reply.offset) < 0.05


def test_ntp_drift_accumulates_from_the_instant_the_fault_was_set() -> None:
    with SimWorld(gps_baud=None) as world:
        world.set_faults(Faults(ntp=NtpFaults(drift_ppm=200_000.0)))  # 0.2 s per second
        set_at = world.faults_set_mono_ns["ntp"]
        # The drift is the time passing (the offset grows from the instant the fault was
        # set): there is nothing else to wait on; the bounds use the time measured.
        time.sleep(0.5)
        reply = ntp_query(world)
        elapsed_s = (mono_ns() - set_at) / NS_PER_S
    assert 0.2 * 0.45 <= reply.offset <= 0.2 * elapsed_s + 0.02


def test_the_real_drivers_read_the_world_and_see_its_faults() -> None:
    """GPS, NTP and RTC samples from Horodate's own drivers, against truth (the host clock)."""
    faults = Faults(
        gps=GpsFaults(offset_s=5.0), ntp=NtpFaults(offset_s=-2.0), rtc=RtcFaults(offset_s=3.0)
    )
    with SimWorld(faults=faults, gps_latency_s=0.1, gps_jitter_s=0.0) as world:
        receiver = GpsReceiver(GpsConfig(device=world.gps_device, latency_s=0.1, cycle_quiet_s=0.3))
        gps_samples: list[GpsSample] = []
        stop = threading.Event()

        def read_gps() -> None:
            for sample in receiver.samples(stop):
                gps_samples.append(sample)
                if len(gps_samples) >= 2:
                    return

        reader = threading.Thread(target=read_gps)
        reader.start()
        host, port = world.ntp_address
        ntp = NtpClient(
            NtpConfig(servers=(NtpServerConfig(host=host, port=port, poll_interval_s=1.0),))
        )
        ntp_samples = ntp.poll_due(mono_ns())
        rtc_sample = Ds3231Clock(world.i2c_bus).read()
        reader.join(4.0)
        stop.set()
        receiver.stop()
        reader.join(1.0)
    assert not reader.is_alive()

    assert len(ntp_samples) == 1 and ntp_samples[0].trusted, ntp_samples
    ntp_error_s = (ntp_samples[0].utc_ns - truth_at(ntp_samples[0].mono_ns)) / NS_PER_S
    assert ntp_error_s == pytest.approx(-2.0, abs=0.01)

    assert rtc_sample.trusted, rtc_sample.reason
    rtc_error_s = (rtc_sample.utc_ns - truth_at(rtc_sample.mono_ns)) / NS_PER_S
    assert rtc_error_s == pytest.approx(3.0, abs=0.02)

    assert len(gps_samples) == 2, gps_samples
    for sample in gps_samples:
        assert sample.trusted, sample.reason
        assert sample.satellites == 8
        gps_error_s = (sample.utc_ns - truth_at(sample.mono_ns)) / NS_PER_S
        # the driver's latency matches the receiver's: only the arrival delay remains
        assert 5.0 - LATE_S <= gps_error_s <= 5.0 + 0.005
    a, b = gps_samples
    assert b.label_utc_ns - a.label_utc_ns == NS_PER_S


def test_gps_cable_pulled_and_replugged_under_the_real_driver() -> None:
    with SimWorld(gps_latency_s=0.05, gps_jitter_s=0.0, gps_baud=None) as world:
        receiver = GpsReceiver(
            GpsConfig(
                device=world.gps_device,
                latency_s=0.05,
                cycle_quiet_s=0.3,
                reopen_backoff_min_s=0.2,
                reopen_backoff_max_s=0.4,
            )
        )
        samples: list[GpsSample] = []
        stop = threading.Event()
        replugged = threading.Event()

        def read_gps() -> None:
            for sample in receiver.samples(stop):
                samples.append(sample)
                if replugged.is_set() and sample.trusted:
                    return

        reader = threading.Thread(target=read_gps)
        reader.start()
        deadline = time.monotonic() + 3.0
        while not samples and time.monotonic() < deadline:
            time.sleep(0.05)
        assert samples, "no sample before the cable was pulled"
        world.gps.unplug()
        wait_until(lambda: not receiver.port_open.is_set(), 5, "the driver seeing the loss")
        world.gps.replug()
        replugged.set()
        reader.join(4.0)
        stop.set()
        receiver.stop()
        reader.join(1.0)
    assert not reader.is_alive()
    assert receiver.reopens >= 1  # the driver saw the loss and came back
    assert samples[-1].trusted
