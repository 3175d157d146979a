"""The simulated GPS receiver, read through a real pseudo-terminal with the real pyserial.

Truth is the host clock: every line is stamped with ``time.time_ns()`` when pyserial hands
it over, and the labels are checked against that. Sentences are checked with pynmea2 (an
independent NMEA implementation) with checksum verification on.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pynmea2
import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.monotonic import NS_PER_S, mono_ns
from drivers.sim.faults import GpsFaults
from drivers.sim.gps import (
    DEFAULT_POSITION,
    NMEA_SENTENCE_MAX_BYTES,
    Position,
    SimGps,
    SimGpsStats,
    UtcLabel,
    checksum,
    nmea_cycle,
    sentence,
    with_garbage,
)
from tests.waiting import wait_until

# Scheduling slack on a shared 2-core machine: a line can only arrive *after* it was written,
# so lower bounds are tight and upper bounds carry this much room.
LATE_S = 0.2
EARLY_S = 0.005


class FaultBox:
    """The ``faults`` callable a SimGps polls: settable from the test."""

    def __init__(self, faults: GpsFaults | None = None) -> None:
        self._value = (faults or GpsFaults(), mono_ns())

    def set(self, faults: GpsFaults) -> None:
        self._value = (faults, mono_ns())

    def __call__(self) -> tuple[GpsFaults, int]:
        return self._value


@dataclass(frozen=True)
class Line:
    raw: bytes
    arrival_ns: int  # host realtime when pyserial returned the line

    @property
    def ok(self) -> bool:
        return valid(self.raw)

    @property
    def msg(self) -> pynmea2.NMEASentence:
        return pynmea2.parse(self.raw.decode("ascii").strip(), check=True)


def valid(raw: bytes) -> bool:
    """Well framed, within the NMEA length limit, checksum right, pynmea2 parses it."""
    if not (raw.startswith(b"$") and raw.endswith(b"\r\n")) or len(raw) > NMEA_SENTENCE_MAX_BYTES:
        return False
    try:
        text = raw.decode("ascii").strip()
        pynmea2.parse(text, check=True)
    except (UnicodeDecodeError, pynmea2.ParseError, ValueError):
        return False
    return text[-2:] == checksum(text[1:-3])


def capture(port: serial.Serial, duration_s: float) -> list[Line]:
    """Read lines for ``duration_s``, each stamped with its arrival on the host clock."""
    lines: list[Line] = []
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        raw = port.readline()
        if raw:
            lines.append(Line(raw, time.time_ns()))
    return lines


def cycles(lines: list[Line]) -> dict[int, list[Line]]:
    """Good sentences grouped by their label (POSIX second of the ZDA/RMC time)."""
    out: dict[int, list[Line]] = {}
    label = None
    for line in lines:
        if not line.ok:
            continue
        msg = line.msg
        if msg.sentence_type == "RMC":
            hms, ddmmyy = msg.data[0], msg.data[8]  # raw fields: hhmmss.ss and ddmmyy
            label = UtcLabel(
                2000 + int(ddmmyy[4:6]),
                int(ddmmyy[2:4]),
                int(ddmmyy[0:2]),
                int(hms[0:2]),
                int(hms[2:4]),
                int(hms[4:6]),
            ).to_posix_s()
        if label is not None:
            out.setdefault(label, []).append(line)
    return out


def full_cycles(lines: list[Line]) -> dict[int, list[Line]]:
    return {k: v for k, v in cycles(lines).items() if len(v) == 4}


def rmc_phase_s(label: int, cycle: list[Line]) -> float:
    """Arrival of the cycle's first sentence minus its label, seconds."""
    return (cycle[0].arrival_ns - label * NS_PER_S) / NS_PER_S


@pytest.fixture
def box() -> FaultBox:
    return FaultBox()


def open_port(gps: SimGps) -> serial.Serial:
    return serial.Serial(gps.device, baudrate=9600, timeout=0.05)


# -- through the pty -------------------------------------------------------------------------
#
# Each scenario drives its own receiver for 2-3.5 s of real time. They run concurrently, once
# per module (a fixture), and each test asserts on its scenario's capture: the suite pays the
# real-time cost once instead of once per test.

Result = dict[str, Any]


def scenario_healthy() -> Result:
    box = FaultBox()
    with SimGps(box, latency_s=0.3, jitter_s=0.05, seed=7) as gps, open_port(gps) as port:
        links = (os.path.islink(gps.device), os.path.realpath(gps.device), gps.pty_path)
        lines = capture(port, 2.6)
        stats = gps.stats
    return {"gps": gps, "links": links, "lines": lines, "stats": stats}


def scenario_offset() -> Result:
    # Receiver clock = truth − 3.6 s: label L is written when truth reaches L + 3.6 + latency.
    box = FaultBox(GpsFaults(offset_s=-3.6))
    with SimGps(box, latency_s=0.1, jitter_s=0.0) as gps, open_port(gps) as port:
        return {"lines": capture(port, 2.4)}


def scenario_fix_loss_and_latency_jump() -> Result:
    box = FaultBox()
    with SimGps(box, latency_s=0.1, jitter_s=0.02, baud=None) as gps, open_port(gps) as port:
        before = capture(port, 1.2)
        box.set(GpsFaults(fix=False, latency_s=0.6))
        after = capture(port, 2.3)
    return {"before": before, "after": after}


def scenario_silent_then_resume() -> Result:
    box = FaultBox(GpsFaults(silent=True))
    with SimGps(box, latency_s=0.05, jitter_s=0.0, baud=None) as gps, open_port(gps) as port:
        quiet = capture(port, 1.6)
        cycles_while_quiet = gps.stats.cycles
        box.set(GpsFaults())
        resumed = capture(port, 1.3)
    return {"quiet": quiet, "cycles_while_quiet": cycles_while_quiet, "resumed": resumed}


def scenario_garbage() -> Result:
    box = FaultBox(GpsFaults(garbage=True))
    with SimGps(box, latency_s=0.05, jitter_s=0.0, baud=None, seed=3) as gps, open_port(gps) as p:
        return {"lines": capture(p, 2.3)}


def scenario_drift() -> Result:
    # +250 000 ppm: the receiver's second lasts 0.8 s of truth.
    box = FaultBox(GpsFaults(drift_ppm=250_000.0))
    with SimGps(box, latency_s=0.05, jitter_s=0.0, baud=None) as gps, open_port(gps) as port:
        return {"lines": capture(port, 2.9)}


LEAP = nmea_cycle(UtcLabel(2016, 12, 31, 23, 59, 60))


def scenario_leap_second() -> Result:
    with SimGps(FaultBox(), latency_s=0.05, jitter_s=0.0, baud=None) as gps, open_port(gps) as p:
        gps.emit_once(LEAP)
        return {"lines": capture(p, 2.2)}


def scenario_unplug_replug() -> Result:
    out: Result = {}
    with SimGps(FaultBox(), latency_s=0.05, jitter_s=0.0, baud=None) as gps:
        port = open_port(gps)
        gps.unplug()
        out["unplugged"] = (gps.plugged, gps.pty_path, os.path.lexists(gps.device))
        try:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                port.read(100)
            out["read_error"] = None
        except serial.SerialException as e:
            out["read_error"] = e
        port.close()
        try:
            serial.Serial(gps.device).close()
            out["open_error"] = None
        except serial.SerialException as e:
            out["open_error"] = e
        gps.replug()
        out["replugged"] = (gps.plugged, os.path.realpath(gps.device), gps.pty_path)
        with open_port(gps) as again:
            out["lines"] = capture(again, 1.3)
    return out


def scenario_nobody_reads() -> Result:
    with SimGps(FaultBox(), latency_s=0.05, jitter_s=0.0, baud=None, max_backlog_bytes=100) as gps:
        wait_until(  # cycles of ~240 bytes produced, nobody reading: the backlog overflows
            lambda: gps.stats.cycles >= 2 and gps.stats.bytes_dropped > 0,
            10,
            "two cycles written and the backlog overflowing",
        )
        assert gps.pty_path is not None
        fd = os.open(gps.pty_path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            queued = os.read(fd, 65536)
        finally:
            os.close(fd)
        return {"queued": queued, "stats": gps.stats}


SCENARIOS: dict[str, Callable[[], Result]] = {
    f.__name__.removeprefix("scenario_"): f
    for f in (
        scenario_healthy,
        scenario_offset,
        scenario_fix_loss_and_latency_jump,
        scenario_silent_then_resume,
        scenario_garbage,
        scenario_drift,
        scenario_leap_second,
        scenario_unplug_replug,
        scenario_nobody_reads,
    )
}


@pytest.fixture(scope="module")
def runs() -> dict[str, Future[Result]]:
    pool = ThreadPoolExecutor(max_workers=len(SCENARIOS), thread_name_prefix="scenario")
    futures = {name: pool.submit(f) for name, f in SCENARIOS.items()}
    pool.shutdown(wait=True)
    return futures


def test_one_cycle_per_second_labelled_with_truth_after_the_latency(
    runs: dict[str, Future[Result]],
) -> None:
    run = runs["healthy"].result()
    is_link, target, pty_path = run["links"]
    assert is_link and target == pty_path
    lines: list[Line] = run["lines"]
    assert lines and all(line.ok for line in lines), [x.raw for x in lines if not x.ok]
    full = full_cycles(lines)
    assert len(full) >= 2, [x.raw for x in lines]
    labels = sorted(full)
    assert labels == list(range(labels[0], labels[0] + len(labels)))  # one per second, no gap
    for label, cycle in full.items():
        types = [line.msg.sentence_type for line in cycle]
        assert types == ["RMC", "GGA", "GSA", "ZDA"]
        rmc, gga, gsa, zda = (line.msg for line in cycle)
        # labels = truth's second: the cycle starts latency ± jitter after that second began
        assert 0.25 - EARLY_S <= rmc_phase_s(label, cycle) <= 0.35 + LATE_S
        assert rmc.status == "A" and rmc.mode_indicator == "A"
        assert int(gga.gps_qual) == 1 and int(gga.num_sats) == 8
        assert gsa.mode_fix_type == "3"
        assert zda.timestamp == rmc.timestamp == gga.timestamp
        hms = zda.data[0]
        zda_label = UtcLabel(
            int(zda.year), int(zda.month), int(zda.day), int(hms[:2]), int(hms[2:4]), int(hms[4:6])
        )
        assert zda_label.to_posix_s() == label
        assert rmc.latitude == pytest.approx(DEFAULT_POSITION.lat_deg, abs=1e-5)
        assert rmc.longitude == pytest.approx(DEFAULT_POSITION.lon_deg, abs=1e-5)
        assert float(gga.altitude) == pytest.approx(DEFAULT_POSITION.alt_m)
    # at 9600 baud RMC, GGA and GSA (~200 bytes) take ~0.21 s to shift out before ZDA starts
    # (a lower bound: arrival can only be later than the write)
    for label, cycle in full.items():
        paced = sum(len(line.raw) for line in cycle[:3]) * 10 / 9600
        assert (cycle[3].arrival_ns - label * NS_PER_S) / NS_PER_S >= 0.25 + paced - EARLY_S
    assert run["stats"].bytes_written > 0 and run["stats"].cycles >= 2
    # stopped: the path and its directory are gone
    gps: SimGps = run["gps"]
    assert not os.path.lexists(gps.device)
    assert not os.path.exists(os.path.dirname(gps.device))


def test_offset_fault_shifts_labels_and_keeps_a_consistent_phase(
    runs: dict[str, Future[Result]],
) -> None:
    full = full_cycles(runs["offset"].result()["lines"])
    assert len(full) >= 2
    for label, cycle in full.items():
        # label − arrival_truth = offset − latency = −3.7 s (arrival is only ever later)
        assert 3.7 - EARLY_S <= rmc_phase_s(label, cycle) <= 3.7 + LATE_S


def test_fix_loss_and_latency_jump_at_run_time(runs: dict[str, Future[Result]]) -> None:
    run = runs["fix_loss_and_latency_jump"].result()
    healthy = full_cycles(run["before"])
    assert healthy
    for label, cycle in healthy.items():
        assert cycle[0].msg.status == "A"
        assert 0.08 - EARLY_S <= rmc_phase_s(label, cycle) <= 0.12 + LATE_S
    after: list[Line] = run["after"]
    degraded = full_cycles(after)
    assert len(degraded) >= 1
    assert all(line.ok for line in after)
    for label, cycle in degraded.items():
        rmc, gga, gsa, zda = (line.msg for line in cycle)
        # still sending time, as receivers do without a fix
        assert rmc.status == "V" and rmc.lat == "" and rmc.mode_indicator == "N"
        assert int(gga.gps_qual) == 0 and int(gga.num_sats) == 0
        assert gsa.mode_fix_type == "1"
        assert zda.timestamp == rmc.timestamp
        assert 0.58 - EARLY_S <= rmc_phase_s(label, cycle) <= 0.62 + LATE_S


def test_silent_sends_nothing_then_resumes(runs: dict[str, Future[Result]]) -> None:
    run = runs["silent_then_resume"].result()
    assert run["quiet"] == []
    assert run["cycles_while_quiet"] >= 1  # the receiver kept its clock running
    assert full_cycles(run["resumed"]), [x.raw for x in run["resumed"]]


def test_garbage_is_mixed_in_but_every_good_sentence_arrives_whole(
    runs: dict[str, Future[Result]],
) -> None:
    lines: list[Line] = runs["garbage"].result()["lines"]
    junk = [line for line in lines if not line.ok]
    assert len(junk) >= 2  # at least one piece per cycle
    full = full_cycles(lines)
    assert len(full) >= 2
    for label, cycle in full.items():
        assert [line.msg.sentence_type for line in cycle] == ["RMC", "GGA", "GSA", "ZDA"]
        assert 0.05 - EARLY_S <= rmc_phase_s(label, cycle) <= 0.05 + LATE_S


def test_drift_makes_the_receiver_clock_run_fast(runs: dict[str, Future[Result]]) -> None:
    full = full_cycles(runs["drift"].result()["lines"])
    labels = sorted(full)
    assert len(labels) >= 3
    gaps = [
        (full[b][0].arrival_ns - full[a][0].arrival_ns) / NS_PER_S
        for a, b in itertools.pairwise(labels)
    ]
    # 0.8 s apart when written; each arrival may be late, which moves a gap either way (a
    # healthy receiver's 1.0 s stays outside)
    assert all(0.8 - 0.12 <= gap <= 0.8 + 0.12 for gap in gaps), gaps
    assert labels[-1] - labels[0] == len(labels) - 1


def test_leap_second_label_is_sent_in_place_of_the_next_cycle(
    runs: dict[str, Future[Result]],
) -> None:
    lines: list[Line] = runs["leap_second"].result()["lines"]
    raws = [line.raw for line in lines]
    assert raws[:4] == LEAP, raws
    assert all(line.ok for line in lines)
    assert b"235960.00" in raws[3] and b"31,12,2016" in raws[3]
    assert full_cycles(lines[4:])  # then back to truth's labels


def test_unplug_closes_the_port_and_replug_brings_it_back(runs: dict[str, Future[Result]]) -> None:
    run = runs["unplug_replug"].result()
    assert run["unplugged"] == (False, None, False)  # as /dev/serial/by-id/... vanishes
    assert isinstance(run["read_error"], serial.SerialException)  # the reader notices
    assert isinstance(run["open_error"], serial.SerialException)
    plugged, target, pty_path = run["replugged"]
    assert plugged and target == pty_path
    assert any(line.ok for line in run["lines"])


def test_unread_output_is_dropped_not_queued_forever(runs: dict[str, Future[Result]]) -> None:
    run = runs["nobody_reads"].result()
    queued: bytes = run["queued"]
    stats: SimGpsStats = run["stats"]
    assert stats.bytes_dropped > 0
    assert 0 < len(queued) <= 100 + 300  # the backlog limit plus at most one cycle
    assert queued.startswith(b"$GPRMC") and queued.endswith(b"\r\n")  # whole cycles only


def test_stop_joins_the_thread_and_closes_the_fds(box: FaultBox) -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    gps = SimGps(box, baud=None)
    gps.start()
    assert any(t.name == "sim-gps" for t in threading.enumerate())
    t0 = time.monotonic()
    gps.stop()
    assert time.monotonic() - t0 < 1.0
    assert not any(t.name == "sim-gps" for t in threading.enumerate())
    assert set(os.listdir("/proc/self/fd")) <= fds_before


# -- pure parts ------------------------------------------------------------------------------


def test_checksum_matches_a_real_receiver() -> None:
    # Lines from tests/data/nmea/ublox-8.log (a u-blox 8 receiver).
    assert checksum("GNZDA,000941.00,10,01,2017,00,00") == "70"
    assert checksum("GPGSA,A,1,28,04,02,,,,,,,,,,9.98,9.93,1.00") == "06"
    assert (
        sentence("GNZDA,000941.00,10,01,2017,00,00") == b"$GNZDA,000941.00,10,01,2017,00,00*70\r\n"
    )


def test_utc_label_accepts_a_leap_second_and_refuses_nonsense() -> None:
    assert UtcLabel(2016, 12, 31, 23, 59, 60).hhmmss == "235960.00"
    assert UtcLabel(2016, 12, 31, 23, 59, 60).to_posix_s() == 1483228800
    with pytest.raises(ValueError):
        UtcLabel(2016, 12, 31, 23, 59, 61)
    with pytest.raises(ValueError):
        UtcLabel(2016, 13, 1, 0, 0, 0)


@pytest.mark.parametrize(
    "kwargs",
    [{"latency_s": -0.1}, {"latency_s": 1.0}, {"jitter_s": -1}, {"talker": "gp"}, {"baud": 0}],
)
def test_bad_settings_are_refused(box: FaultBox, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SimGps(box, **kwargs)  # type: ignore[arg-type]


labels = st.builds(
    UtcLabel,
    st.integers(1980, 2099),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 60),
    st.integers(0, 99),
)
positions = st.builds(
    Position,
    lat_deg=st.floats(-89.99, 89.99),
    lon_deg=st.floats(-179.99, 179.99),
    alt_m=st.floats(-400, 9000),
    geoid_sep_m=st.floats(-100, 100),
)


@settings(max_examples=300, deadline=None)
@given(label=labels, fix=st.booleans(), position=positions, talker=st.sampled_from(["GP", "GN"]))
def test_every_generated_sentence_is_valid_nmea(
    label: UtcLabel, fix: bool, position: Position, talker: str
) -> None:
    lines = nmea_cycle(label, fix=fix, talker=talker, position=position)
    assert all(valid(line) for line in lines), lines
    msgs = [pynmea2.parse(line.decode().strip(), check=True) for line in lines]
    assert [m.talker for m in msgs] == [talker] * 4
    rmc, gga, gsa, zda = msgs
    assert rmc.data[0] == gga.data[0] == zda.data[0] == label.hhmmss
    assert rmc.data[8] == label.ddmmyy
    assert (int(zda.day), int(zda.month), int(zda.year)) == (label.day, label.month, label.year)
    if fix:
        assert rmc.latitude == pytest.approx(position.lat_deg, abs=1e-6)
        assert rmc.longitude == pytest.approx(position.lon_deg, abs=1e-6)
        assert gsa.mode_fix_type == "3" and rmc.status == "A"
    else:
        assert rmc.status == "V" and int(gga.gps_qual) == 0 and gsa.mode_fix_type == "1"


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), label=labels, fix=st.booleans())
def test_garbage_never_breaks_or_fakes_a_good_sentence(
    seed: int, label: UtcLabel, fix: bool
) -> None:

    good = nmea_cycle(label, fix=fix)
    mixed = with_garbage(good, random.Random(seed))
    assert [line for line in mixed if line in good] == good  # all there, in order, intact
    junk = [line for line in mixed if line not in good]
    assert junk
    for piece in junk:
        assert piece.endswith(b"\r\n")
        # no junk line may pass for a sentence: framing, length or checksum gives it away
        assert all(not valid(part + b"\n") for part in piece[:-1].split(b"\n"))
