"""The simulated DS3231 against its datasheet, register by register, through the I2C bus.

Expected register values are written out by hand from the DS3231 datasheet (Figure 1 and
"Special-Purpose Registers"), not computed with the model's own encoder. The real
``adafruit_ds3231`` driver is used wherever it exercises the same registers.
"""

from __future__ import annotations

import calendar
import errno
import threading
import time
from collections.abc import Callable

import adafruit_ds3231
import pytest

from drivers.monotonic import mono_ns, paired_ns
from drivers.sim.ds3231 import (
    DS3231_ADDRESS,
    SimDS3231,
    SimI2CBus,
    VirtualClock,
)
from drivers.sim.faults import RtcFaults

NS = 1_000_000_000
MS = 1_000_000


def utc(*fields: int, frac_ns: int = 0) -> int:
    return calendar.timegm((*fields, 0, 0, 0)) * NS + frac_ns


class FaultBox:
    """The (faults, set instant) source the simulated world hands the chip."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self.value: tuple[RtcFaults, int] = (RtcFaults(), clock.now_ns)

    def set(self, faults: RtcFaults, at_ns: int | None = None) -> None:
        self.value = (faults, self._clock.now_ns if at_ns is None else at_ns)

    def __call__(self) -> tuple[RtcFaults, int]:
        return self.value


def rig(start: int, **kwargs: object) -> tuple[VirtualClock, SimDS3231, SimI2CBus]:
    clock = VirtualClock()
    chip = SimDS3231(clock=clock, start_utc_ns=start, **kwargs)  # type: ignore[arg-type]
    return clock, chip, SimI2CBus({DS3231_ADDRESS: chip})


def read(bus: SimI2CBus, register: int, length: int) -> bytes:
    buf = bytearray(length)
    assert bus.try_lock()
    try:
        bus.writeto_then_readfrom(DS3231_ADDRESS, bytes((register,)), buf)
    finally:
        bus.unlock()
    return bytes(buf)


def write(bus: SimI2CBus, register: int, *data: int) -> None:
    assert bus.try_lock()
    try:
        bus.writeto(DS3231_ADDRESS, bytes((register, *data)))
    finally:
        bus.unlock()


# -- timekeeping registers 00h-06h ---------------------------------------------------------


def test_time_registers_hold_bcd_per_datasheet() -> None:
    # Thursday 2024-02-29 23:59:58.5 (a leap day); day-of-week 1 = Monday, so 4.
    _, _, bus = rig(utc(2024, 2, 29, 23, 59, 58, frac_ns=500 * MS))
    regs = read(bus, 0x00, 0x13)
    assert regs[:7] == bytes((0x58, 0x59, 0x23, 0x04, 0x29, 0x02, 0x24))
    assert regs[0x0E] == 0x1C  # control at power-on: RS2, RS1, INTCN
    assert regs[0x0F] == 0x08  # status: EN32kHz; OSF clear (a chip that was set)
    assert regs[0x10] == 0x00
    assert regs[0x11:0x13] == bytes((0x19, 0x00))  # 25.00 °C


def test_roll_over_through_leap_day_month_and_day_of_week() -> None:
    clock, _, bus = rig(utc(2024, 2, 29, 23, 59, 58, frac_ns=500 * MS))
    clock.advance(1_600 * MS)  # 23:59:58.5 -> 00:00:00.1
    assert read(bus, 0x00, 7) == bytes((0x00, 0x00, 0x00, 0x05, 0x01, 0x03, 0x24))


def test_century_bit_toggles_when_the_year_overflows() -> None:
    clock, _, bus = rig(utc(2099, 12, 31, 23, 59, 59, frac_ns=500 * MS))
    assert read(bus, 0x05, 2) == bytes((0x12, 0x99))
    clock.advance(600 * MS)
    # 2100-01-01 00:00:00: month register 81h = century | January, year 00.
    assert read(bus, 0x00, 7) == bytes((0x00, 0x00, 0x00, 0x05, 0x01, 0x81, 0x00))


@pytest.mark.parametrize(
    ("hours_before", "hours_after", "date_after"),
    [
        (0x71, 0x52, 0x02),  # 11 PM -> 12 AM (12-hour mode, bit 6; PM bit 5), next date
        (0x51, 0x72, 0x01),  # 11 AM -> 12 PM, same date
        (0x23, 0x00, 0x02),  # 24-hour mode: 23 -> 00 (bit 5 is the 20-hour digit)
    ],
)
def test_hours_register_in_12_and_24_hour_modes(
    hours_before: int, hours_after: int, date_after: int
) -> None:
    clock, _, bus = rig(utc(2025, 6, 1, 8, 0, 0))
    write(bus, 0x00, 0x59, 0x59, hours_before, 0x07, 0x01, 0x06, 0x25)
    clock.advance(1_001 * MS)
    regs = read(bus, 0x00, 7)
    assert regs[:3] == bytes((0x00, 0x00, hours_after))
    assert regs[4] == date_after
    assert regs[3] == (0x01 if date_after == 0x02 else 0x07)  # day 7 wraps to 1 at midnight


def test_writes_keep_the_bits_the_datasheet_shows_as_zero() -> None:
    _, _, bus = rig(utc(2025, 6, 1, 8, 0, 0))
    write(bus, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)
    assert read(bus, 0x01, 5) == bytes((0x7F, 0x7F, 0x07, 0x3F, 0x9F))


def test_register_pointer_auto_increments_and_wraps_after_12h() -> None:
    _, chip, bus = rig(utc(2025, 6, 1, 8, 0, 0, frac_ns=100 * MS))
    image = chip.registers()
    # A read starting at 11h runs 11h, 12h, then wraps to 00h.
    assert read(bus, 0x11, 9) == image[0x11:0x13] + image[0x00:0x07]
    # The pointer survives between transactions: a plain read continues where it was.
    write(bus, 0x0E)
    buf = bytearray(2)
    assert bus.try_lock()
    bus.readfrom_into(DS3231_ADDRESS, buf)
    assert bytes(buf) == bytes((0x1C, 0x08))
    bus.readfrom_into(DS3231_ADDRESS, buf, start=1)
    bus.unlock()
    assert buf[1] == 0x00  # aging offset, register 10h


def test_writing_seconds_resets_the_countdown_chain() -> None:
    clock, chip, bus = rig(utc(2025, 6, 1, 8, 0, 0, frac_ns=300 * MS))  # phase 0.3 s
    write(bus, 0x00, 0x10)
    written_at = chip.chain_reset_mono_ns
    assert chip.next_edge_mono_ns(written_at) == written_at + NS
    clock.advance(written_at + NS - MS - clock.now_ns)
    assert read(bus, 0x00, 1) == b"\x10"
    clock.advance(2 * MS)
    assert read(bus, 0x00, 1) == b"\x11"


def test_writing_minutes_alone_keeps_the_phase() -> None:
    clock, chip, bus = rig(utc(2025, 6, 1, 8, 0, 0, frac_ns=300 * MS))
    edge_before = chip.next_edge_mono_ns(clock.now_ns)
    write(bus, 0x01, 0x42)
    assert chip.next_edge_mono_ns(clock.now_ns) == edge_before
    assert read(bus, 0x01, 1) == b"\x42"


def test_real_adafruit_driver_round_trip() -> None:
    _, chip, bus = rig(utc(2025, 6, 1, 8, 0, 0))
    rtc = adafruit_ds3231.DS3231(bus)
    rtc.datetime = time.struct_time((2031, 7, 14, 9, 8, 7, 0, -1, -1))  # a Monday
    assert chip.registers()[:7] == bytes((0x07, 0x08, 0x09, 0x01, 0x14, 0x07, 0x31))
    got = rtc.datetime
    assert (got.tm_year, got.tm_mon, got.tm_mday, got.tm_hour, got.tm_min, got.tm_sec) == (
        2031,
        7,
        14,
        9,
        8,
        7,
    )
    assert got.tm_wday == 0


# -- status 0Fh: OSF, power loss -----------------------------------------------------------


def test_lost_power_sets_osf_and_resets_the_registers() -> None:
    clock = VirtualClock()
    box = FaultBox(clock)
    chip = SimDS3231(clock=clock, start_utc_ns=utc(2025, 6, 1, 8, 0, 0), faults=box)
    bus = SimI2CBus({DS3231_ADDRESS: chip})
    write(bus, 0x0E, 0x05)  # INTCN | A1IE, so the reset is visible
    box.set(RtcFaults(lost_power=True))
    regs = read(bus, 0x00, 0x13)
    assert regs[:7] == bytes((0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00))  # 2000-01-01
    assert regs[0x0E] == 0x1C
    assert regs[0x0F] == 0x88  # OSF | EN32kHz
    assert adafruit_ds3231.DS3231(bus).lost_power is True
    # The clock runs on from the reset.
    clock.advance(2 * NS)
    assert read(bus, 0x00, 1) == b"\x02"


def test_osf_is_cleared_by_writing_zero_and_never_set_by_writing_one() -> None:
    clock = VirtualClock()
    box = FaultBox(clock)
    chip = SimDS3231(clock=clock, start_utc_ns=utc(2025, 6, 1), faults=box)
    bus = SimI2CBus({DS3231_ADDRESS: chip})
    box.set(RtcFaults(lost_power=True))
    write(bus, 0x0F, 0x08)
    assert read(bus, 0x0F, 1) == b"\x08"
    write(bus, 0x0F, 0xFF)  # OSF/A2F/A1F can only be cleared; BSY is read-only
    assert read(bus, 0x0F, 1) == b"\x08"
    write(bus, 0x0F, 0x00)
    assert read(bus, 0x0F, 1) == b"\x00"  # EN32kHz is read/write


# -- aging 10h and temperature 11h-12h ------------------------------------------------------


@pytest.mark.parametrize(("aging", "register", "gain_ns"), [(-10, 0xF6, MS), (10, 0x0A, -MS)])
def test_aging_offset_is_signed_and_positive_slows(aging: int, register: int, gain_ns: int) -> None:
    clock, chip, bus = rig(utc(2025, 6, 1))
    rtc = adafruit_ds3231.DS3231(bus)
    rtc.calibration = aging  # the real driver forces a conversion: the offset applies then
    assert read(bus, 0x10, 1) == bytes((register,))
    assert rtc.calibration == aging
    m0 = clock.now_ns
    t0 = chip.rtc_ns_at(m0)
    assert t0 is not None
    m1 = m0 + 1000 * NS
    t1 = chip.rtc_ns_at(m1)
    assert t1 is not None
    # ~0.1 ppm per LSB: 10 LSB over 1000 s is 1 ms.
    assert (t1 - t0) - (m1 - m0) == gain_ns


def test_aging_offset_waits_for_the_next_conversion() -> None:
    clock, chip, bus = rig(utc(2025, 6, 1))
    write(bus, 0x10, 0xF6)  # no conversion forced
    m0 = clock.now_ns
    t0, t1 = chip.rtc_ns_at(m0), chip.rtc_ns_at(m0 + 10 * NS)
    assert t0 is not None and t1 is not None
    assert t1 - t0 == 10 * NS  # not yet applied
    clock.advance(65 * NS)  # the 64-second automatic conversion applies it
    m0 = clock.now_ns
    t0, t1 = chip.rtc_ns_at(m0), chip.rtc_ns_at(m0 + 1000 * NS)
    assert t0 is not None and t1 is not None
    assert t1 - t0 == 1000 * NS + MS


@pytest.mark.parametrize(
    ("celsius", "msb", "lsb"),
    [(25.75, 0x19, 0xC0), (-12.25, 0xF3, 0xC0), (0.5, 0x00, 0x80), (-0.25, 0xFF, 0xC0)],
)
def test_temperature_registers_are_twos_complement_quarter_degrees(
    celsius: float, msb: int, lsb: int
) -> None:
    _, chip, bus = rig(utc(2025, 6, 1))
    chip.temperature_c = celsius
    rtc = adafruit_ds3231.DS3231(bus)
    assert rtc.force_temperature_conversion() == celsius
    assert read(bus, 0x11, 2) == bytes((msb, lsb))


def test_conv_and_bsy_follow_the_datasheet_timing() -> None:
    clock, chip, bus = rig(utc(2025, 6, 1))
    chip.temperature_c = 30.0
    write(bus, 0x0E, 0x1C | 0x20)  # CONV
    assert read(bus, 0x0E, 2) == bytes((0x3C, 0x08))  # CONV set; BSY not yet (~2 ms)
    clock.advance(3 * MS)
    assert read(bus, 0x0E, 2) == bytes((0x3C, 0x0C))  # BSY set
    assert read(bus, 0x11, 1) == b"\x19"  # the old temperature until the end
    clock.advance(125 * MS)
    assert read(bus, 0x0E, 2) == bytes((0x1C, 0x08))  # both cleared
    assert read(bus, 0x11, 1) == b"\x1e"


def test_automatic_conversion_every_64_seconds_sets_bsy() -> None:
    clock, _, bus = rig(utc(2025, 6, 1))
    clock.advance(64 * NS + 50 * MS)
    assert read(bus, 0x0F, 1) == b"\x0c"
    clock.advance(100 * MS)
    assert read(bus, 0x0F, 1) == b"\x08"


def test_stuck_busy_never_finishes() -> None:
    clock, chip, bus = rig(utc(2025, 6, 1))
    chip.stuck_busy = True
    write(bus, 0x0E, 0x3C)
    clock.advance(10 * NS)
    assert read(bus, 0x0E, 2) == bytes((0x3C, 0x0C))


# -- faults ----------------------------------------------------------------------------


def test_offset_fault_steps_by_its_change_only() -> None:
    clock = VirtualClock()
    box = FaultBox(clock)
    chip = SimDS3231(clock=clock, start_utc_ns=utc(2025, 6, 1), faults=box)
    m = clock.now_ns + NS // 2

    def shown() -> int:
        value = chip.rtc_ns_at(m)
        assert value is not None
        return value

    base = shown()
    box.set(RtcFaults(offset_s=5.0))
    assert shown() - base == 5 * NS
    box.set(RtcFaults(offset_s=5.0, silent=False, drift_ppm=0.0), at_ns=clock.now_ns + 1)
    assert shown() - base == 5 * NS  # a new fault set with the same offset: no second step
    box.set(RtcFaults())
    assert shown() - base == 0  # cleared: stepped back


def test_drift_fault_accumulates_from_its_set_instant() -> None:
    clock = VirtualClock()
    box = FaultBox(clock)
    chip = SimDS3231(clock=clock, start_utc_ns=utc(2025, 6, 1), faults=box)
    set_at = clock.now_ns
    before = chip.rtc_ns_at(set_at)
    box.set(RtcFaults(drift_ppm=1000.0), at_ns=set_at)
    clock.advance(10 * NS)  # the chip only notices later; the drift still starts at set_at
    after = chip.rtc_ns_at(set_at + 10 * NS)
    assert before is not None and after is not None
    assert after - before == 10 * NS + 10 * MS


def test_silent_chip_nacks_like_linux_i2c() -> None:
    clock = VirtualClock()
    box = FaultBox(clock)
    chip = SimDS3231(clock=clock, faults=box)
    bus = SimI2CBus({DS3231_ADDRESS: chip})
    box.set(RtcFaults(silent=True))
    assert bus.try_lock()
    try:
        calls: list[Callable[[], None]] = [
            lambda: bus.writeto(DS3231_ADDRESS, b"\x00"),
            lambda: bus.readfrom_into(DS3231_ADDRESS, bytearray(1)),
            lambda: bus.writeto_then_readfrom(DS3231_ADDRESS, b"\x00", bytearray(1)),
        ]
        for call in calls:
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == errno.EREMOTEIO
        assert bus.scan() == []
    finally:
        bus.unlock()
    with pytest.raises(ValueError, match="No I2C device at address: 0x68"):
        adafruit_ds3231.DS3231(bus)  # the real driver's probe sees the NACK
    box.set(RtcFaults())
    assert bus.try_lock()
    assert bus.scan() == [DS3231_ADDRESS]
    bus.unlock()


# -- the bus -------------------------------------------------------------------------------


def test_bus_behaves_like_busio() -> None:
    bus = SimI2CBus({DS3231_ADDRESS: SimDS3231(clock=VirtualClock())})
    with pytest.raises(RuntimeError, match="requires lock"):
        bus.writeto(DS3231_ADDRESS, b"\x00")
    assert bus.try_lock()
    assert not bus.try_lock()  # not reentrant, as busio
    with pytest.raises(OSError) as info:
        bus.writeto(0x57, b"\x00")  # nobody at 0x57
    assert info.value.errno == errno.EREMOTEIO
    with pytest.raises(ValueError, match="7-bit"):
        bus.writeto(0x80, b"")
    with pytest.raises(ValueError, match="out of range"):
        bus.writeto(DS3231_ADDRESS, b"\x00", start=2)
    bus.unlock()
    with bus:
        pass
    with pytest.raises(ValueError, match="deinitialized"):
        assert bus.try_lock()
        bus.writeto(DS3231_ADDRESS, b"\x00")


# -- real time ---------------------------------------------------------------------------


def test_real_clock_seconds_edge_falls_where_the_model_says() -> None:
    # Real time (up to ~1 s): truth is the host's clock; the roll-over instant is predictable.
    chip = SimDS3231()
    bus = SimI2CBus({DS3231_ADDRESS: chip})
    m, r = paired_ns()
    shown = chip.rtc_ns_at(m)
    assert shown is not None
    assert abs(shown - r) < 2 * MS
    last_old_start = mono_ns()
    predicted = chip.next_edge_mono_ns(last_old_start)
    first = read(bus, 0x00, 1)
    deadline = last_old_start + 2 * NS
    while True:
        start = mono_ns()
        value = read(bus, 0x00, 1)
        end = mono_ns()
        if value != first:
            break
        last_old_start = start
        assert end < deadline
    # The roll-over lies between the last read that saw the old second and the end of the
    # first that saw the new one, however late the scheduler ran us.
    assert last_old_start <= predicted <= end


def test_concurrent_readers_share_the_bus_safely() -> None:
    chip = SimDS3231()
    bus = SimI2CBus({DS3231_ADDRESS: chip})
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            rtc = adafruit_ds3231.DS3231(bus)
            for _ in range(100):
                assert 2000 <= rtc.datetime.tm_year < 2100
                assert rtc.temperature == 25.0
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
