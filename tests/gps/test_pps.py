"""PPS: kernel ABI (struct layout, ioctl numbers), realtime→monotonic mapping, pairing.

No PPS device exists on the build machine: the ioctl is checked against the kernel headers
compiled by the host's C compiler (a real peer for the ABI), the pairing logic is pure, and
the device test carries the ``hardware`` marker and runs only where /dev/pps0 exists.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from drivers.errors import DriverError
from drivers.nmea import GpsConfig, GpsSample, NmeaDecoder
from drivers.pps import (
    PPS_FDATA,
    PPS_FETCH,
    PPS_KINFO,
    PPS_KTIME,
    PpsConfig,
    PpsDevice,
    PpsPairer,
    PpsPulse,
    PpsReceiver,
    PpsTimeout,
    pack_fetch_request,
    pps_fetch_number,
    realtime_to_mono,
    unpack_fetch,
)
from drivers.sample import SourceKind
from tests.gps.support import cycle
from tests.waiting import wait_until

NS = 1_000_000_000


# -- ABI ----------------------------------------------------------------------------------


def test_ioctl_numbers_for_64_and_32_bit_userlands() -> None:
    # _IOWR('p', 0xa4, struct pps_fdata *): dir 3 << 30 | sizeof(pointer) << 16 | 'p' << 8 | 0xa4
    assert pps_fetch_number(8) == 0xC00870A4  # aarch64, x86-64
    assert pps_fetch_number(4) == 0xC00470A4  # armv7l (Raspberry Pi OS 32-bit)
    with pytest.raises(ValueError):
        pps_fetch_number(2)


def test_struct_sizes_and_offsets_match_eabi_and_lp64() -> None:
    assert PPS_KTIME.size == 16
    assert PPS_KINFO.size == 48  # 44 bytes of fields + 4 of tail padding (s64 aligned to 8)
    assert PPS_FDATA.size == 64

    # ARM EABI (AAPCS §4.1) and LP64 align __s64 to 8: the host's ctypes agrees on x86-64.
    class Ktime(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_int32), ("flags", ctypes.c_uint32)]

    class Kinfo(ctypes.Structure):
        _fields_ = [
            ("assert_sequence", ctypes.c_uint32),
            ("clear_sequence", ctypes.c_uint32),
            ("assert_tu", Ktime),
            ("clear_tu", Ktime),
            ("current_mode", ctypes.c_int),
        ]

    class Fdata(ctypes.Structure):
        _fields_ = [("info", Kinfo), ("timeout", Ktime)]

    assert ctypes.alignment(ctypes.c_int64) == 8
    assert (ctypes.sizeof(Ktime), ctypes.sizeof(Kinfo), ctypes.sizeof(Fdata)) == (16, 48, 64)
    assert Kinfo.assert_tu.offset == 8 and Kinfo.clear_tu.offset == 24
    assert Kinfo.current_mode.offset == 40 and Fdata.timeout.offset == 48


C_PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/pps.h>
int main(void) {
    printf("%lu %zu %zu %zu %zu %zu\n", (unsigned long)PPS_FETCH, sizeof(struct pps_ktime),
           sizeof(struct pps_kinfo), sizeof(struct pps_fdata),
           offsetof(struct pps_kinfo, current_mode), offsetof(struct pps_fdata, timeout));
    return 0;
}
"""


def test_layout_and_number_match_the_kernel_headers(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    header = Path("/usr/include/linux/pps.h")
    # `make system-deps` installs both (gcc, linux-libc-dev): their absence is a failure.
    assert cc is not None, "needs a C compiler (Debian package gcc: make system-deps)"
    assert header.exists(), "needs linux/pps.h (Debian package linux-libc-dev: make system-deps)"
    src = tmp_path / "probe.c"
    src.write_text(C_PROBE)
    exe = tmp_path / "probe"
    subprocess.run([cc, str(src), "-o", str(exe)], check=True, timeout=60)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=10)
    number, ktime, kinfo, fdata, mode_off, timeout_off = map(int, out.stdout.split())
    assert number == PPS_FETCH
    assert (ktime, kinfo, fdata) == (PPS_KTIME.size, PPS_KINFO.size, PPS_FDATA.size)
    assert (mode_off, timeout_off) == (40, 48)


def test_fetch_request_and_reply_round_trip() -> None:
    req = pack_fetch_request(1.25)
    assert len(req) == 64
    assert PPS_FDATA.unpack(req)[-3:] == (1, 250_000_000, 0)
    assert PPS_FDATA.unpack(pack_fetch_request(None))[-1] == 1  # PPS_TIME_INVALID: forever
    reply = PPS_FDATA.pack(
        7, 6, 1_700_000_000, 123, 1, 1_699_999_999, 900_000_000, 1, 0x1133, 0, 0, 0
    )
    f = unpack_fetch(reply)
    assert f.assert_sequence == 7 and f.assert_realtime_ns == 1_700_000_000 * NS + 123
    assert f.clear_realtime_ns == 1_699_999_999 * NS + 900_000_000 and f.current_mode == 0x1133


# -- realtime → monotonic ----------------------------------------------------------------


def test_mapping_moves_the_edge_by_the_realtime_monotonic_offset() -> None:
    mono, error = realtime_to_mono(
        1_000 * NS, pair_mono_ns=50 * NS + 100_000, pair_realtime_ns=1_000 * NS + 100_000
    )
    assert mono == 50 * NS
    # 100 µs old at 83 333 ppm of slew: 8.3 µs, plus 1 µs for the pairing
    assert error == 8_334 + 1_000


def test_mapping_refuses_a_stepped_or_stale_clock() -> None:
    with pytest.raises(DriverError, match="future"):
        realtime_to_mono(1_000 * NS, pair_mono_ns=0, pair_realtime_ns=999 * NS)
    with pytest.raises(DriverError, match="too old"):
        realtime_to_mono(1_000 * NS, pair_mono_ns=0, pair_realtime_ns=1_002 * NS)


# -- pairing -----------------------------------------------------------------------------


def gps_at(arrival_mono_ns: int, time: str = "120000.00", date: str = "141126") -> GpsSample:
    decoder = NmeaDecoder(GpsConfig())
    (sample,) = decoder.feed(cycle(time, date), arrival_mono_ns) + decoder.flush()
    assert isinstance(sample, GpsSample)
    return sample


def test_pulse_is_paired_with_the_second_whose_sentence_follows_it() -> None:
    pairer = PpsPairer(PpsConfig())
    pairer.add_pulse(PpsPulse(sequence=1, mono_ns=10 * NS, error_ns=2_000))
    pairer.add_pulse(PpsPulse(sequence=2, mono_ns=11 * NS, error_ns=2_000))
    gps = gps_at(11 * NS + 350_000_000)  # labelled 12:00:00, arrived 350 ms after pulse 2
    (pps,) = pairer.add_gps(gps)
    assert pps.kind is SourceKind.PPS and pps.source == "pps0" and pps.trusted
    assert pps.mono_ns == 11 * NS and pps.utc_ns == gps.label_utc_ns
    assert pps.sequence == 2 and pps.lag_ns == 350_000_000
    assert pps.error_ns == 5_000 + 2_000  # edge jitter + mapping
    assert pairer.add_gps(gps) == []  # a pulse is used once


def test_no_pair_when_the_sentence_comes_too_late_after_the_pulse() -> None:
    # A 950 ms latency: the next pulse is 50 ms away; refuse rather than guess.
    pairer = PpsPairer(PpsConfig(max_lag_s=0.9))
    pairer.add_pulse(PpsPulse(sequence=1, mono_ns=10 * NS, error_ns=0))
    assert pairer.add_gps(gps_at(10 * NS + 950_000_000)) == []


def test_ambiguous_when_two_pulses_fit() -> None:
    pairer = PpsPairer(PpsConfig(min_lag_s=0.0, max_lag_s=0.9))
    pairer.add_pulse(PpsPulse(sequence=1, mono_ns=10 * NS, error_ns=0))
    pairer.add_pulse(PpsPulse(sequence=2, mono_ns=10 * NS + 400_000_000, error_ns=0))  # spurious
    assert pairer.add_gps(gps_at(10 * NS + 800_000_000)) == []
    assert pairer.ambiguous == 1


def test_untrusted_nmea_second_makes_an_untrusted_pps_sample() -> None:
    pairer = PpsPairer(PpsConfig())
    pairer.add_pulse(PpsPulse(sequence=1, mono_ns=10 * NS, error_ns=0))
    (pps,) = pairer.add_gps(gps_at(10 * NS + 300_000_000, date="220899"))
    assert not pps.trusted and "before floor" in pps.reason


def test_a_fractional_label_marks_no_pulse() -> None:
    pairer = PpsPairer(PpsConfig())
    pairer.add_pulse(PpsPulse(sequence=1, mono_ns=10 * NS, error_ns=0))
    assert pairer.add_gps(gps_at(10 * NS + 300_000_000, time="120000.50")) == []


def test_missing_device() -> None:
    with pytest.raises(DriverError, match="cannot open"):
        PpsDevice("/nonexistent/pps9")


@pytest.mark.hardware
@pytest.mark.skipif(not os.path.exists("/dev/pps0"), reason="needs a PPS source on /dev/pps0")
def test_real_pps_device_gives_pulses_a_second_apart() -> None:
    with PpsDevice("/dev/pps0") as device:
        a = device.fetch(timeout_s=2.0)
        b = device.fetch(timeout_s=2.0)
    assert b.sequence == a.sequence + 1
    assert abs((b.mono_ns - a.mono_ns) - NS) < 1_000_000  # 1 s ± 1 ms of crystal error


class FakePps:
    """Stands in for /dev/pps0, which no build machine has: a mock, by necessity.

    It hands out pulses one second apart on a synthetic monotonic timescale, then times
    out, as a real device does when the antenna is unplugged.
    """

    def __init__(self, pulses: list[PpsPulse]) -> None:
        self.pulses = list(pulses)
        self.closed = False

    def fetch(self, timeout_s: float = 1.5) -> PpsPulse:
        if self.pulses:
            return self.pulses.pop(0)
        raise PpsTimeout("no pulse within 0 s")

    def close(self) -> None:
        self.closed = True


def test_receiver_pairs_pulses_with_gps_samples_fed_from_another_thread() -> None:
    fake = FakePps([PpsPulse(sequence=i, mono_ns=(10 + i) * NS, error_ns=1_000) for i in range(3)])
    receiver = PpsReceiver(PpsConfig(), open_device=lambda path: fake)
    stop = threading.Event()
    got: list = []

    def run() -> None:
        for s in receiver.samples(stop):
            got.append(s)

    # GPS samples of the seconds marked by pulses 0 and 1 (arriving 300 ms after each).
    first = gps_at(10 * NS + 300_000_000, time="120000.00")
    second = gps_at(11 * NS + 300_000_000, time="120001.00")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while fake.pulses and time.monotonic() < deadline:
        time.sleep(0.01)
    receiver.add_gps(first)
    receiver.add_gps(second)
    wait_until(lambda: len(got) >= 2, 5, "the two pulses paired with their GPS seconds")
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and fake.closed
    assert [(s.sequence, s.utc_ns) for s in got] == [
        (0, first.label_utc_ns),
        (1, second.label_utc_ns),
    ]
