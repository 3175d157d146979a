"""The DS3231 driver, through the real adafruit_ds3231 driver, over the simulated I2C bus.

Most tests run on a :class:`VirtualClock` shared by the chip model and the driver, so a
one-second edge wait costs microseconds; a few run on the host's real raw-monotonic clock.
"""

from __future__ import annotations

import calendar
import errno
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import DriverError
from drivers.monotonic import mono_ns, paired_ns
from drivers.rtc import (
    OSF_REASON,
    Ds3231Clock,
    RtcConfig,
    RtcRegisterError,
    RtcSample,
    decode_time_registers,
    linear_utc,
    open_i2c_bus,
)
from drivers.sample import SourceKind
from drivers.sim import ds3231 as sim
from drivers.sim.ds3231 import DS3231_ADDRESS, SimDS3231, SimI2CBus, VirtualClock
from drivers.sim.faults import RtcFaults

NS = 1_000_000_000
MS = 1_000_000


def utc(*fields: int, frac_ns: int = 0) -> int:
    return calendar.timegm((*fields, 0, 0, 0)) * NS + frac_ns


class FaultBox:
    """The (faults, set instant) source the simulated world hands the chip."""

    def __init__(self, clock: Callable[[], int], now: int) -> None:
        self._clock = clock
        self.value: tuple[RtcFaults, int] = (RtcFaults(), now)

    def set(self, faults: RtcFaults, at_ns: int) -> None:
        self.value = (faults, at_ns)

    def __call__(self) -> tuple[RtcFaults, int]:
        return self.value


class Rig:
    def __init__(self, start: int, config: RtcConfig | None = None, **chip_kwargs: object):
        self.clock = VirtualClock()
        self.faults = FaultBox(self.clock, self.clock.now_ns)
        self.chip = SimDS3231(
            clock=self.clock,
            start_utc_ns=start,
            faults=self.faults,
            **chip_kwargs,  # type: ignore[arg-type]
        )
        self.bus = SimI2CBus({DS3231_ADDRESS: self.chip})
        self.rtc = Ds3231Clock(self.bus, config, clock=self.clock, sleep=self.clock.sleep)

    def fault(self, **kwargs: object) -> None:
        self.faults.set(RtcFaults(**kwargs), self.clock.now_ns)  # type: ignore[arg-type]

    def truth(self, mono: int) -> int:
        shown = self.chip.rtc_ns_at(mono)
        assert shown is not None
        return shown


def assert_within_error(sample: RtcSample, chip: SimDS3231) -> None:
    truth = chip.rtc_ns_at(sample.mono_ns)
    assert truth is not None
    assert abs(sample.utc_ns - truth) <= sample.error_ns, (sample.utc_ns - truth, sample)


# -- reading to sub-second -----------------------------------------------------------------


@pytest.mark.parametrize("phase_ms", [0, 1, 370, 999])
def test_read_places_the_second_within_its_error(phase_ms: int) -> None:
    rig = Rig(utc(2025, 6, 1, 12, 30, 15, frac_ns=phase_ms * MS))
    sample = rig.rtc.read()
    assert sample.trusted, sample.reason
    assert sample.kind is SourceKind.RTC and sample.source == "rtc0"
    assert sample.utc_ns % NS == 0  # the start of a second
    assert_within_error(sample, rig.chip)
    # Half a 1 ms poll plus a read or two of 20 µs, plus the countdown period.
    assert sample.error_ns < 700_000
    assert sample.register_time == datetime.fromtimestamp(sample.utc_ns // NS, tz=UTC)
    assert (sample.temperature_c, sample.aging_offset, sample.osf, sample.eosc) == (
        25.0,
        0,
        False,
        False,
    )
    assert len(sample.raw_registers) == 0x13


def test_read_in_real_time_is_within_its_error() -> None:
    # Real time (up to ~1.25 s): the host's raw monotonic clock, default polling.
    m, r = paired_ns()
    chip = SimDS3231(start_utc_ns=r + 123_456_789 + (mono_ns() - m))
    rtc = Ds3231Clock(SimI2CBus({DS3231_ADDRESS: chip}))
    started = mono_ns()
    sample = rtc.read()
    assert sample.trusted, sample.reason
    assert_within_error(sample, chip)
    assert sample.error_ns < 50 * MS  # a loaded shared machine; ~0.6 ms when idle
    assert started < sample.mono_ns <= mono_ns()
    assert mono_ns() - started < 1.5 * NS


def test_drift_shows_between_two_reads() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0, frac_ns=400 * MS))
    rig.fault(drift_ppm=1000.0)
    first = rig.rtc.read()
    rig.clock.advance(100 * NS)
    second = rig.rtc.read()
    gained = (second.utc_ns - first.utc_ns) - (second.mono_ns - first.mono_ns)
    assert abs(gained - 100 * MS) <= first.error_ns + second.error_ns
    assert_within_error(second, rig.chip)


def test_offset_fault_shifts_the_reading() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0, frac_ns=400 * MS))
    before = rig.rtc.read()
    rig.fault(offset_s=0.25)
    after = rig.rtc.read()
    shift = after.offset_ns - before.offset_ns
    assert abs(shift - 250 * MS) <= before.error_ns + after.error_ns


def test_a_seconds_jump_during_the_edge_wait_is_untrusted() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0, frac_ns=500 * MS))
    now = rig.clock.now_ns
    # The fault set changes 200 ms into the wait: the seconds register jumps by 5.
    rig.faults.set(RtcFaults(offset_s=5.0), now + 200 * MS)
    sample = rig.rtc.read()
    assert not sample.trusted
    assert "instead of counting by one" in sample.reason


# -- OSF, bad registers --------------------------------------------------------------------


def test_lost_power_gives_an_untrusted_sample_without_waiting() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0))
    rig.fault(lost_power=True)
    start = rig.clock.now_ns
    sample = rig.rtc.read()
    assert not sample.trusted
    assert sample.reason == OSF_REASON
    assert sample.osf
    assert sample.register_time == datetime(2000, 1, 1, tzinfo=UTC)
    assert rig.clock.now_ns - start < 10 * MS  # no edge wait for a time known to be lost
    assert rig.rtc.status().osf


def test_set_time_after_power_loss_makes_the_rtc_trusted_again() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0))
    rig.fault(lost_power=True)
    rig.chip.poke(0x0E, 0x9C)  # EOSC set too
    reference = linear_utc(rig.clock.now_ns, utc(2025, 6, 1, 12, 0, 0, frac_ns=123 * MS))
    rig.rtc.set_time(reference)
    status = rig.rtc.status()
    assert not status.osf and not status.eosc
    sample = rig.rtc.read()
    assert sample.trusted, sample.reason
    assert abs(sample.utc_ns - reference(sample.mono_ns)) <= sample.error_ns + MS


@pytest.mark.parametrize(
    ("register", "value", "reason"),
    [
        (0x01, 0x7A, "register 01h (minutes) = 0x7A is not BCD"),
        (0x05, 0x13, "register 05h (month/century) = 0x13: month not in 1-12"),
        (0x04, 0x31, "register 04h (date) = 0x31: no such day in 2025-06"),
        (0x02, 0x40, "register 02h (hours) = 0x40: 12-hour mode hour not in 1-12"),
        (0x02, 0x24, "register 02h (hours) = 0x24: hour above 23"),
        (0x03, 0x00, "register 03h (day) = 0x00: day of week not in 1-7"),
        (0x00, 0x80, "register 00h (seconds) = 0x80 has bits set that the chip keeps at 0"),
    ],
)
def test_illogical_registers_give_an_untrusted_sample(
    register: int, value: int, reason: str
) -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0))
    rig.chip.poke(register, value)
    sample = rig.rtc.read()
    assert not sample.trusted
    assert sample.reason == reason
    assert sample.register_time is None and sample.utc_ns == 0
    assert sample.raw_registers[register] == value


def test_osf_and_bad_registers_are_both_reported() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0))
    rig.chip.poke(0x0F, 0x88)
    rig.chip.poke(0x06, 0xAA)
    sample = rig.rtc.read()
    assert sample.reason == f"{OSF_REASON}; register 06h (year) = 0xAA is not BCD"


def test_twelve_hour_mode_and_century_are_read_right() -> None:
    # 2100-03-01 15:00:00.5 shown in 12-hour mode: 03 PM, century bit set.
    rig = Rig(utc(2100, 3, 1, 15, 0, 0, frac_ns=500 * MS))
    rig.chip.poke(0x02, 0x40 | 0x20 | 0x03)
    sample = rig.rtc.read()
    assert sample.trusted, sample.reason
    assert sample.register_time == datetime(2100, 3, 1, 15, 0, 1, tzinfo=UTC)
    assert_within_error(sample, rig.chip)
    # The adafruit getter masks the 12/24 bit and drops the century: why we decode raw.
    adafruit_view = rig.rtc._chip.datetime
    assert (adafruit_view.tm_year, adafruit_view.tm_hour) == (2000, 23)


def test_decoders_agree_with_the_simulator() -> None:
    # Two independent implementations of the datasheet's Figure 1, compared exhaustively
    # on the registers that carry structure (hours, month/century) and sampled elsewhere.
    for hours in range(256):
        for month in range(256):
            regs = bytes((0x59, 0x59, hours, 0x03, 0x28, month, 0x24))
            model = sim.decode_time_registers(regs)
            try:
                ours = decode_time_registers(regs)
            except RtcRegisterError:
                assert model is None, regs.hex()
            else:
                assert model is not None and model.when == ours, regs.hex()


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=7, max_size=7))
def test_decoder_agrees_with_the_simulator_on_random_registers(regs: bytes) -> None:
    model = sim.decode_time_registers(regs)
    try:
        ours = decode_time_registers(regs)
    except RtcRegisterError as e:
        assert model is None
        assert str(e).startswith("register 0")
    else:
        assert model is not None and model.when == ours


@st.composite
def register_files(draw: st.DrawFn) -> bytes:
    """19 random bytes, half the time with a logical time in 00h-06h (12 or 24-hour)."""
    tail = draw(st.binary(min_size=0x13 - 7, max_size=0x13 - 7))
    if draw(st.booleans()):
        return draw(st.binary(min_size=7, max_size=7)) + tail
    when = draw(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2199, 12, 31, 23, 59))
    )
    regs = sim.encode_time_registers(
        when, day_of_week=draw(st.integers(1, 7)), twelve_hour=draw(st.booleans())
    )
    return regs + tail


@settings(max_examples=200, deadline=None)
@given(register_files())
def test_random_register_contents_never_crash_the_driver(contents: bytes) -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0), RtcConfig(poll_interval_s=0.01))
    for register, value in enumerate(contents):
        rig.chip.poke(register, value)
    sample = rig.rtc.read()
    assert isinstance(sample, RtcSample)
    assert -128.0 <= sample.temperature_c < 128.0
    assert -128 <= sample.aging_offset <= 127
    if sample.trusted:
        assert not sample.osf
        assert_within_error(sample, rig.chip)
    else:
        assert sample.reason
    rig.rtc.status()


# -- bus errors ----------------------------------------------------------------------------


def test_silent_chip_raises_a_clear_driver_error() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0))
    rig.fault(silent=True)
    calls: list[Callable[[], object]] = [
        rig.rtc.read,
        rig.rtc.status,
        lambda: rig.rtc.temperature(force=True),
        lambda: rig.rtc.aging_offset,
        lambda: rig.rtc.set_time(linear_utc(0, utc(2025, 6, 1))),
    ]
    for call in calls:
        with pytest.raises(DriverError, match=r"^rtc0: no answer on I2C bus at 0x68 \(") as info:
            call()
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.EREMOTEIO
    rig.fault()
    assert rig.rtc.read().trusted  # it recovers when the chip answers again


def test_missing_chip_is_a_driver_error_not_a_constructor_crash() -> None:
    rtc = Ds3231Clock(SimI2CBus({}), RtcConfig(name="rtc1"))
    with pytest.raises(DriverError, match="rtc1: no answer on I2C bus at 0x68"):
        rtc.read()


def test_open_i2c_bus_says_what_is_missing() -> None:
    with pytest.raises(DriverError, match="/dev/i2c-97 does not exist"):
        open_i2c_bus(97)


# -- temperature and aging -----------------------------------------------------------------


def test_forced_conversion_reads_the_new_temperature() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0))
    rig.chip.temperature_c = 31.5
    assert rig.rtc.temperature() == 25.0  # registers update only on a conversion
    assert rig.rtc.temperature(force=True) == 31.5


def test_forced_conversion_waits_out_an_automatic_one() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0))
    rig.clock.advance(64 * NS + 10 * MS)  # the 64-second conversion is running
    assert rig.rtc.status().busy
    rig.chip.temperature_c = -4.75
    assert rig.rtc.temperature(force=True) == -4.75


def test_stuck_busy_hits_the_conversion_deadline_in_real_time() -> None:
    # Real time (~0.2 s): the deadline holds on the host's clock.
    chip = SimDS3231()
    chip.stuck_busy = True
    rtc = Ds3231Clock(SimI2CBus({DS3231_ADDRESS: chip}), RtcConfig(conversion_timeout_s=0.2))
    started = time.monotonic()
    with pytest.raises(DriverError, match=r"did not finish within 0.2 s \(BSY stuck at 1\)"):
        rtc.temperature(force=True)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.7


def test_a_conversion_that_never_ends_hits_the_deadline_on_conv() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0), conversion_ns=10 * NS)
    started = rig.clock.now_ns
    with pytest.raises(DriverError, match=r"\(CONV stuck at 1\)"):
        rig.rtc.temperature(force=True)
    assert rig.clock.now_ns - started < 0.7 * NS


def test_aging_offset_round_trip_and_effect() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0))
    rig.rtc.aging_offset = -20
    assert rig.rtc.aging_offset == -20
    assert rig.chip.registers()[0x10] == 0xEC
    m0 = rig.clock.now_ns
    assert rig.truth(m0 + 1000 * NS) - rig.truth(m0) == 1000 * NS + 2 * MS  # 2 ppm fast
    for bad in (128, -129, True, 1.5):
        with pytest.raises(ValueError, match=r"-128\.\.127"):
            rig.rtc.aging_offset = bad  # type: ignore[assignment]
    assert rig.rtc.aging_offset == -20


def test_status_reports_control_and_status_bits() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0, frac_ns=200 * MS))
    rig.chip.poke(0x0E, 0x80 | 0x1C)  # EOSC
    rig.chip.poke(0x0F, 0x08 | 0x02)  # A2F
    status = rig.rtc.status()
    assert (status.eosc, status.intcn, status.alarm2_flag, status.alarm1_flag) == (
        True,
        True,
        True,
        False,
    )
    assert (status.control, status.status) == (0x9C, 0x0A)
    sample = rig.rtc.read()
    assert sample.eosc and sample.trusted  # EOSC only matters on battery: reported, trusted


# -- setting the time ----------------------------------------------------------------------


@pytest.mark.parametrize("phase_ms", [0, 123, 998])
def test_set_time_lands_on_the_utc_second_boundary(phase_ms: int) -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0))
    reference = linear_utc(rig.clock.now_ns, utc(2026, 1, 2, 3, 4, 5, frac_ns=phase_ms * MS))
    residual_s = rig.rtc.set_time(reference)
    assert abs(residual_s) < 0.001
    reset_at = rig.chip.chain_reset_mono_ns  # where the countdown chain restarted
    utc_at_reset = reference(reset_at)
    boundary = round(utc_at_reset / NS) * NS
    assert abs(utc_at_reset - boundary) < MS
    assert rig.truth(reset_at) == boundary  # the chip shows exactly that second
    sample = rig.rtc.read()
    assert abs(sample.utc_ns - reference(sample.mono_ns)) <= sample.error_ns + MS


def test_set_time_in_real_time_aligns_within_a_few_ms() -> None:
    # Real time (~1 s): sleeping and spinning on the host's clock.
    chip = SimDS3231()
    rtc = Ds3231Clock(SimI2CBus({DS3231_ADDRESS: chip}))
    m, r = paired_ns()
    reference = linear_utc(m, r + 12_345_678_901)
    started = mono_ns()
    residual_s = rtc.set_time(reference)
    assert mono_ns() - started < 2.5 * NS
    utc_at_reset = reference(chip.chain_reset_mono_ns)
    # Within set_max_error_s (5 ms) of the boundary, plus half a write on a loaded machine.
    assert abs(utc_at_reset - round(utc_at_reset / NS) * NS) < 10 * MS
    assert abs(residual_s) <= 0.005


def test_set_time_refuses_years_the_registers_cannot_hold() -> None:
    rig = Rig(utc(2025, 6, 1, 12, 0, 0))
    before = rig.chip.registers()[:7]
    with pytest.raises(DriverError, match="cannot set year 2100"):
        rig.rtc.set_time(linear_utc(rig.clock.now_ns, utc(2100, 1, 1, 0, 0, 0)))
    assert rig.chip.registers()[:7] == before


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "gps0"},
        {"i2c_address": 0x80},
        {"edge_timeout_s": 0.9},
        {"poll_interval_s": 0.0},
        {"conversion_timeout_s": -1.0},
        {"set_max_error_s": 0.6},
    ],
)
def test_config_refuses_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RtcConfig(**kwargs)  # type: ignore[arg-type]
