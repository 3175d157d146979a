"""A register-level model of the Maxim DS3231 RTC, behind the ``busio.I2C`` interface.

The real ``adafruit_ds3231`` driver (and :mod:`drivers.rtc`) talk to :class:`SimI2CBus`
exactly as they talk to a Linux ``busio.I2C``: ``try_lock``/``unlock``, ``writeto``,
``readfrom_into``, ``writeto_then_readfrom``. Behind the bus, :class:`SimDS3231` answers
register by register as the datasheet says (Maxim DS3231 datasheet, 19-5170 rev. 10,
"Figure 1. Timekeeping Registers" and "Special-Purpose Registers"):

====  ==========================================================================
00h   seconds, BCD 00-59 (bit 7 reads 0)
01h   minutes, BCD 00-59 (bit 7 reads 0)
02h   hours: bit 6 = 12/24 (1 = 12-hour), bit 5 = AM/PM (1 = PM) in 12-hour mode or the
      20-hour digit in 24-hour mode; BCD 1-12 or 00-23
03h   day of week 1-7, user-defined, increments at midnight
04h   date, BCD 01-31
05h   bit 7 = century (toggled when the year overflows 99 -> 00), month BCD 01-12
06h   year, BCD 00-99
07h-  alarm 1 (seconds, minutes, hours, day/date) and alarm 2 (minutes, hours,
0Dh   day/date), stored as written. Alarm *matching* (A1F/A2F being set) is not modelled:
      Horodate does not use alarms.
0Eh   control: EOSC BBSQW CONV RS2 RS1 INTCN A2IE A1IE, power-on value 1Ch
0Fh   status: OSF 0 0 0 EN32kHz BSY A2F A1F, power-on value 88h (OSF and EN32kHz set)
10h   aging offset, two's complement; ~0.1 ppm per LSB at 25 °C, positive slows the
      oscillator; applied at the next temperature conversion
11h   temperature MSB, two's complement integer °C
12h   temperature LSB: bits 7-6 are the fraction in 0.25 °C steps, bits 5-0 read 0
====  ==========================================================================

Time. The chip's oscillator is modelled as a counter of nanoseconds that runs at
``(1 + drift) x`` the host's ``CLOCK_MONOTONIC_RAW`` (drift = the fault's ``drift_ppm``
minus 0.1 ppm per aging LSB), so "RTC time = set value + (mono now - mono at set) x
(1 + drift)". The time registers hold the value last written (or reached by a roll-over)
plus the whole seconds the counter has counted since the countdown chain was last reset:
the seconds register therefore rolls over at well-defined monotonic instants. As the
datasheet says, "the countdown chain is reset whenever the seconds register is written":
writing 00h starts a fresh second at the instant of the write, which is what aligned
setting relies on.

Choices where the datasheet is silent or says "undefined", documented here:

* Power-on (the ``lost_power`` fault): the datasheet says the time registers' state "is not
  defined when power is first applied". The model resets them to 2000-01-01 00:00:00, day
  1, 24-hour mode (what most parts show), sets OSF and EN32kHz, control to 1Ch, aging to 0.
* Illogical time and date entries "result in undefined operation": the model then freezes
  the time registers (they stop advancing) until a valid time is written, so a test reads
  back exactly what it poked.
* Writes to registers beyond 12h: the register pointer is taken modulo 13h.
* Writing CONV while a conversion is already running: CONV reads 1 until that conversion
  ends, then both CONV and BSY clear.
* EOSC only stops the oscillator on battery power; the model is always on V\\ :sub:`CC`, so
  EOSC is stored and reported but never stops the clock.
* The chip treats every year 00 as a leap year (wrong for 2100); the model uses the
  Gregorian calendar throughout.

Faults come from a callable returning the current :class:`~drivers.sim.faults.RtcFaults`
and the monotonic instant they were set (the simulated world swaps fault sets atomically):

* ``offset_s``: when a new fault set is seen, the RTC is stepped by the *change* in
  ``offset_s`` at the set instant (so a fault set of ``offset_s=5`` keeps the RTC 5 s off
  the fault-free timeline, and clearing it steps it back).
* ``drift_ppm``: the oscillator runs this much fast from the set instant on. The time it
  gained stays gained after the fault is cleared (as on a real clock), until the time is set.
* ``lost_power``: when it becomes true, a power-on reset happens at the set instant (see
  above). It is an event, as on the chip: once the time is set and OSF cleared, the chip is
  healthy again even if the fault set still says ``lost_power``.
* ``silent``: the chip NACKs its address; every transfer raises ``OSError(EREMOTEIO)`` as
  Linux's i2c-dev does.
"""

from __future__ import annotations

import calendar
import errno
import os
import threading
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Protocol

from drivers.monotonic import mono_ns, paired_ns, realtime_ns
from drivers.sim.faults import RtcFaults

NS_PER_S = 1_000_000_000

DS3231_ADDRESS = 0x68  # DS3231 datasheet, "I2C Serial Data Bus": slave address 1101000

# DS3231 datasheet, Figure 1: the register map.
REG_SECONDS = 0x00
REG_MINUTES = 0x01
REG_HOURS = 0x02
REG_DAY = 0x03
REG_DATE = 0x04
REG_MONTH = 0x05
REG_YEAR = 0x06
REG_ALARM1_SECONDS = 0x07
REG_ALARM2_DAY_DATE = 0x0D
REG_CONTROL = 0x0E
REG_STATUS = 0x0F
REG_AGING = 0x10
REG_TEMP_MSB = 0x11
REG_TEMP_LSB = 0x12
REGISTER_COUNT = 0x13  # "when the address pointer reaches the end of the register space
#                        (12h), it wraps around to location 00h"
TIME_REGISTER_COUNT = 7

# Bits the datasheet shows as 0 in each timekeeping register (00h-06h).
TIME_REGISTER_MASKS = (0x7F, 0x7F, 0x7F, 0x07, 0x3F, 0x9F, 0xFF)

# Control register 0Eh
CONTROL_EOSC = 0x80
CONTROL_BBSQW = 0x40
CONTROL_CONV = 0x20
CONTROL_RS2 = 0x10
CONTROL_RS1 = 0x08
CONTROL_INTCN = 0x04
CONTROL_A2IE = 0x02
CONTROL_A1IE = 0x01
CONTROL_POWER_ON = CONTROL_RS2 | CONTROL_RS1 | CONTROL_INTCN  # 1Ch

# Status register 0Fh
STATUS_OSF = 0x80
STATUS_EN32KHZ = 0x08
STATUS_BSY = 0x04
STATUS_A2F = 0x02
STATUS_A1F = 0x01
STATUS_POWER_ON = STATUS_OSF | STATUS_EN32KHZ  # 88h

HOURS_12H = 0x40  # register 02h bit 6
HOURS_PM = 0x20  # register 02h bit 5 in 12-hour mode
MONTH_CENTURY = 0x80  # register 05h bit 7

AGING_PPB_PER_LSB = 100  # "one LSB typically provides about 0.1ppm change in frequency" (25 °C)
CONVERSION_NS = 125_000_000  # tCONV typical 125 ms (max 200 ms), Electrical Characteristics
BSY_DELAY_NS = 2_000_000  # "a user-initiated temperature conversion does not affect the
#                           BSY bit for approximately 2ms"
AUTO_CONVERSION_PERIOD_NS = 64 * NS_PER_S  # the TCXO converts every 64 seconds

MAX_TRANSFER_BYTES = 256  # a bound on one simulated I2C message

# Power-on time: 2000-01-01 00:00:00, day 1, 24-hour mode (a choice, see the module doc).
_POWER_ON_TIME = bytes((0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00))


def _remote_io_error(address: int) -> OSError:
    """What Linux's i2c-dev raises when nobody ACKs an address (i2c-bcm2835: -EREMOTEIO)."""
    return OSError(errno.EREMOTEIO, f"{os.strerror(errno.EREMOTEIO)} (I2C address 0x{address:02x})")


# --- BCD and calendar (the chip's view) -------------------------------------------------


def to_bcd(value: int) -> int:
    """Two-digit binary-coded decimal, as every DS3231 time register holds."""
    if not 0 <= value <= 99:
        raise ValueError(f"cannot encode {value} in two BCD digits")
    return (value // 10) << 4 | value % 10


def from_bcd(value: int) -> int | None:
    """The value of a BCD byte, or None when a nibble is above 9."""
    hi, lo = value >> 4, value & 0x0F
    if hi > 9 or lo > 9:
        return None
    return hi * 10 + lo


@dataclass(frozen=True, slots=True)
class ChipTime:
    """What the time registers 00h-06h say, when they say something logical."""

    when: datetime  # UTC, tz-aware; year 2000-2199 from the century bit
    day_of_week: int  # 1-7
    twelve_hour: bool


def encode_time_registers(when: datetime, *, day_of_week: int, twelve_hour: bool) -> bytes:
    """Registers 00h-06h for ``when`` (DS3231 datasheet, Figure 1)."""
    offset_years = when.year - 2000
    century = (offset_years // 100) % 2  # toggled on each 99 -> 00 overflow
    if twelve_hour:
        hour12 = when.hour % 12 or 12
        hours = HOURS_12H | (HOURS_PM if when.hour >= 12 else 0) | to_bcd(hour12)
    else:
        hours = to_bcd(when.hour)
    return bytes(
        (
            to_bcd(when.second),
            to_bcd(when.minute),
            hours,
            day_of_week,
            to_bcd(when.day),
            (MONTH_CENTURY if century else 0) | to_bcd(when.month),
            to_bcd(when.year % 100),
        )
    )


def decode_time_registers(regs: bytes) -> ChipTime | None:
    """The time in registers 00h-06h, or None when any entry is illogical."""
    if len(regs) != TIME_REGISTER_COUNT:
        raise ValueError("expected the 7 time registers 00h-06h")
    if any(b & ~m & 0xFF for b, m in zip(regs, TIME_REGISTER_MASKS, strict=True)):
        return None
    second = from_bcd(regs[REG_SECONDS])
    minute = from_bcd(regs[REG_MINUTES])
    twelve_hour = bool(regs[REG_HOURS] & HOURS_12H)
    if twelve_hour:
        hour12 = from_bcd(regs[REG_HOURS] & 0x1F)
        if hour12 is None or not 1 <= hour12 <= 12:
            return None
        hour: int | None = hour12 % 12 + (12 if regs[REG_HOURS] & HOURS_PM else 0)
    else:
        hour = from_bcd(regs[REG_HOURS] & 0x3F)
    day = regs[REG_DAY]
    date = from_bcd(regs[REG_DATE])
    month = from_bcd(regs[REG_MONTH] & 0x1F)
    year = from_bcd(regs[REG_YEAR])
    if None in (second, minute, hour, date, month, year):
        return None
    assert second is not None and minute is not None and hour is not None
    assert date is not None and month is not None and year is not None
    if second > 59 or minute > 59 or hour > 23 or not 1 <= day <= 7 or not 1 <= month <= 12:
        return None
    full_year = 2000 + (100 if regs[REG_MONTH] & MONTH_CENTURY else 0) + year
    if not 1 <= date <= calendar.monthrange(full_year, month)[1]:
        return None
    when = datetime(full_year, month, date, hour, minute, second, tzinfo=UTC)
    return ChipTime(when=when, day_of_week=day, twelve_hour=twelve_hour)


def _advance_time_registers(regs: bytes, seconds: int) -> bytes:
    """The registers ``seconds`` later, as the chip's roll-over logic would count them."""
    if seconds == 0:
        return regs
    decoded = decode_time_registers(regs)
    if decoded is None:
        return regs  # illogical entries: the model freezes them (see the module doc)
    later = decoded.when + timedelta(seconds=seconds)
    if not 2000 <= later.year <= 2199:
        # The registers only hold 200 years: wrap as the century bit and year do.
        later = later.replace(year=2000 + (later.year - 2000) % 200)
    days = (later.date() - decoded.when.date()).days
    day_of_week = (decoded.day_of_week - 1 + days) % 7 + 1  # increments at midnight
    return encode_time_registers(later, day_of_week=day_of_week, twelve_hour=decoded.twelve_hour)


def _temperature_registers(celsius: float) -> tuple[int, int]:
    """Registers 11h-12h for a temperature: 10-bit two's complement, 0.25 °C per LSB."""
    quarters = max(-512, min(511, round(celsius * 4)))
    raw = quarters & 0x3FF
    return raw >> 2, (raw & 0x03) << 6


# --- the chip ------------------------------------------------------------------------


class I2CTarget(Protocol):
    """A device on :class:`SimI2CBus`: one transaction is a write, then a repeated-start read."""

    def transfer(self, write: bytes, read_length: int) -> bytes:
        """Write ``write`` (may be empty), then read ``read_length`` bytes; NACK -> OSError."""
        ...


FaultSource = Callable[[], tuple[RtcFaults, int]]


class SimDS3231:
    """A DS3231 at register level, whose time is the host's raw monotonic clock plus faults.

    ``faults()`` returns the current :class:`RtcFaults` and the monotonic instant (ns) they
    were set. ``clock`` is the monotonic clock (``drivers.monotonic.mono_ns`` or a
    :class:`VirtualClock`). ``start_utc_ns`` is the time the chip shows at construction
    (default: the host's real clock, so the simulated truth is the host's clock).
    All methods are thread-safe.
    """

    def __init__(
        self,
        *,
        faults: FaultSource | None = None,
        clock: Callable[[], int] = mono_ns,
        start_utc_ns: int | None = None,
        temperature_c: float = 25.0,
        conversion_ns: int = CONVERSION_NS,
    ) -> None:
        self._lock = threading.RLock()
        self._faults = faults
        self._clock = clock
        self._conversion_ns = conversion_ns
        now = clock()
        if start_utc_ns is None:
            if clock is mono_ns:
                pair_mono, pair_real = paired_ns()
                start_utc_ns = pair_real + (now - pair_mono)
            else:
                start_utc_ns = realtime_ns()
        # The oscillator: chip_ns(m) = anchor_chip + (m - anchor_mono) * (1 + rate_ppb/1e9).
        self._anchor_mono = now
        self._anchor_chip = 0
        self._drift_ppb = 0
        self._aging_effective = 0
        self._rate_ppb = 0
        self._seen_faults = RtcFaults()
        self._seen_set_ns: int | None = None
        self._pointer = 0
        # Time registers as of the last countdown-chain reset (or materialisation).
        whole, frac = divmod(start_utc_ns, NS_PER_S)
        start = datetime.fromtimestamp(whole, tz=UTC)
        self._time_regs = encode_time_registers(
            start, day_of_week=start.isoweekday(), twelve_hour=False
        )
        self._reset_chip_ns = -frac  # the chain was reset `frac` ns before now
        self._chain_reset_mono_ns = now - frac
        self._alarms = bytearray(REG_ALARM2_DAY_DATE - REG_ALARM1_SECONDS + 1)
        self._control = CONTROL_POWER_ON
        self._status = STATUS_EN32KHZ  # OSF clear: the chip starts "set and healthy"
        self._aging = 0
        self._temperature_c = temperature_c
        self._temp_regs = _temperature_registers(temperature_c)
        # Temperature conversion state (DS3231 datasheet, registers 0Eh CONV and 0Fh BSY).
        self._conv_user = False
        self._conv_bsy_from: int | None = None
        self._conv_done: int | None = None
        self._next_auto = now + AUTO_CONVERSION_PERIOD_NS
        self._stuck_busy = False

    # -- test and world hooks --------------------------------------------------------

    @property
    def temperature_c(self) -> float:
        """The die temperature the next conversion will measure."""
        with self._lock:
            return self._temperature_c

    @temperature_c.setter
    def temperature_c(self, value: float) -> None:
        with self._lock:
            self._temperature_c = value

    @property
    def stuck_busy(self) -> bool:
        """When True, the TCXO never finishes: BSY reads 1 and a forced CONV never clears."""
        with self._lock:
            return self._stuck_busy

    @stuck_busy.setter
    def stuck_busy(self, value: bool) -> None:
        with self._lock:
            self._sync(self._clock())
            self._stuck_busy = value

    def poke(self, register: int, value: int) -> None:
        """Force a raw byte into a register, bypassing the datasheet's write rules.

        For tests: a damaged or counterfeit chip can show anything. Poking a time register
        does not reset the countdown chain; OSF, BSY... are set or cleared as given.
        """
        if not 0 <= register < REGISTER_COUNT or not 0 <= value <= 0xFF:
            raise ValueError(f"poke({register:#x}, {value:#x}): out of range")
        with self._lock:
            now = self._clock()
            self._sync(now)
            self._materialise(now)
            if register < TIME_REGISTER_COUNT:
                regs = bytearray(self._time_regs)
                regs[register] = value
                self._time_regs = bytes(regs)
            elif register < REG_CONTROL:
                self._alarms[register - REG_ALARM1_SECONDS] = value
            elif register == REG_CONTROL:
                self._control = value & ~CONTROL_CONV
                self._conv_user = bool(value & CONTROL_CONV)
            elif register == REG_STATUS:
                self._status = value & ~STATUS_BSY
            elif register == REG_AGING:
                self._aging = value
            elif register == REG_TEMP_MSB:
                self._temp_regs = (value, self._temp_regs[1])
            else:
                self._temp_regs = (self._temp_regs[0], value)

    def registers(self) -> bytes:
        """All 19 registers 00h-12h as a read starting at 00h would return them now."""
        with self._lock:
            now = self._clock()
            self._sync(now)
            return self._image(now)

    def rtc_ns_at(self, mono: int) -> int | None:
        """The time the chip shows at monotonic instant ``mono``, as POSIX ns with its phase.

        The truth a test compares a driver's reading with. ``None`` when the registers
        are illogical. Valid for instants after the last fault change or register write.
        """
        with self._lock:
            self._sync(self._clock())
            elapsed_ns = self._chip_ns(mono) - self._reset_chip_ns
            whole, phase = divmod(elapsed_ns, NS_PER_S)
            decoded = decode_time_registers(_advance_time_registers(self._time_regs, whole))
            if decoded is None:
                return None
            return calendar.timegm(decoded.when.timetuple()) * NS_PER_S + phase

    def next_edge_mono_ns(self, after: int) -> int:
        """The first monotonic instant after ``after`` at which the seconds register rolls."""
        with self._lock:
            self._sync(self._clock())
            elapsed = self._chip_ns(after) - self._reset_chip_ns
            target_chip = self._reset_chip_ns + (elapsed // NS_PER_S + 1) * NS_PER_S
            return self._mono_for_chip(target_chip)

    @property
    def chain_reset_mono_ns(self) -> int:
        """Monotonic instant of the last countdown-chain reset (the last seconds write)."""
        with self._lock:
            return self._chain_reset_mono_ns

    # -- I2C ------------------------------------------------------------------------

    def transfer(self, write: bytes, read_length: int) -> bytes:
        """One I2C transaction addressed to the chip (see :class:`I2CTarget`)."""
        with self._lock:
            now = self._clock()
            self._sync(now)
            if self._seen_faults.silent:
                raise _remote_io_error(DS3231_ADDRESS)
            if write:
                # First byte: the register pointer; the rest are written with auto-increment.
                self._pointer = write[0] % REGISTER_COUNT
                if len(write) > 1:
                    self._materialise(now)
                    for value in write[1:]:
                        self._write_register(self._pointer, value, now)
                        self._pointer = (self._pointer + 1) % REGISTER_COUNT
            if read_length <= 0:
                return b""
            # "On an I2C START ... the current time is transferred to a second set of
            # registers": one snapshot serves the whole read.
            image = self._image(now)
            out = bytearray()
            for _ in range(read_length):
                out.append(image[self._pointer])
                self._pointer = (self._pointer + 1) % REGISTER_COUNT
            return bytes(out)

    # -- internals ------------------------------------------------------------------

    def _chip_ns(self, mono: int) -> int:
        delta = mono - self._anchor_mono
        return self._anchor_chip + delta + delta * self._rate_ppb // NS_PER_S

    def _mono_for_chip(self, chip: int) -> int:
        delta_chip = chip - self._anchor_chip
        # ceil(delta_chip * 1e9 / (1e9 + rate)), so that _chip_ns(result) >= chip
        return self._anchor_mono + -(-delta_chip * NS_PER_S // (NS_PER_S + self._rate_ppb))

    def _reanchor(self, mono: int) -> None:
        self._anchor_chip = self._chip_ns(mono)
        self._anchor_mono = mono

    def _set_rate(self, mono: int) -> None:
        self._reanchor(mono)
        # DS3231 datasheet, register 10h: positive aging values slow the oscillator.
        self._rate_ppb = self._drift_ppb - self._aging_effective * AGING_PPB_PER_LSB

    def _materialise(self, now: int) -> None:
        """Fold the whole seconds counted so far into the registers, keeping the phase."""
        whole = (self._chip_ns(now) - self._reset_chip_ns) // NS_PER_S
        if whole:
            self._time_regs = _advance_time_registers(self._time_regs, whole)
            self._reset_chip_ns += whole * NS_PER_S

    def _current_time_regs(self, now: int) -> bytes:
        whole = (self._chip_ns(now) - self._reset_chip_ns) // NS_PER_S
        return _advance_time_registers(self._time_regs, whole)

    def _busy(self, now: int) -> bool:
        if self._stuck_busy:
            return True
        return self._conv_bsy_from is not None and now >= self._conv_bsy_from

    def _image(self, now: int) -> bytes:
        control = self._control | (CONTROL_CONV if self._conv_user else 0)
        status = (self._status & ~STATUS_BSY & 0x8B) | (STATUS_BSY if self._busy(now) else 0)
        return (
            self._current_time_regs(now)
            + bytes(self._alarms)
            + bytes((control, status, self._aging))
            + bytes(self._temp_regs)
        )

    def _write_register(self, register: int, value: int, now: int) -> None:
        if register < TIME_REGISTER_COUNT:
            regs = bytearray(self._time_regs)
            regs[register] = value & TIME_REGISTER_MASKS[register]
            self._time_regs = bytes(regs)
            if register == REG_SECONDS:
                # "The countdown chain is reset whenever the seconds register is written."
                self._reset_chip_ns = self._chip_ns(now)
                self._chain_reset_mono_ns = now
        elif register < REG_CONTROL:
            self._alarms[register - REG_ALARM1_SECONDS] = value
        elif register == REG_CONTROL:
            self._control = value & ~CONTROL_CONV
            if value & CONTROL_CONV:
                self._conv_user = True
                if self._conv_done is None:  # "only ... when a conversion is not in progress"
                    self._start_conversion(now, bsy_delay_ns=BSY_DELAY_NS)
        elif register == REG_STATUS:
            # OSF, A2F, A1F can only be cleared ("written to logic 0"); EN32kHz is R/W;
            # BSY and bits 6-4 are read-only.
            keep_if_one = STATUS_OSF | STATUS_A2F | STATUS_A1F
            cleared = self._status & keep_if_one & value
            self._status = cleared | (value & STATUS_EN32KHZ)
        elif register == REG_AGING:
            self._aging = value
        # 11h-12h (temperature) are read-only.

    def _start_conversion(self, start: int, *, bsy_delay_ns: int) -> None:
        self._conv_bsy_from = start + bsy_delay_ns
        self._conv_done = start + self._conversion_ns

    def _finish_conversion(self, done: int) -> None:
        done = max(done, self._anchor_mono)
        # The TCXO applies the aging offset with the new capacitance setting.
        self._aging_effective = self._aging - 256 if self._aging & 0x80 else self._aging
        self._set_rate(done)
        self._temp_regs = _temperature_registers(self._temperature_c)
        self._conv_user = False
        self._conv_bsy_from = None
        self._conv_done = None

    def _advance_conversions(self, now: int) -> None:
        while True:
            done = None if self._stuck_busy else self._conv_done
            auto = self._next_auto
            if done is not None and done <= now and done <= auto:
                self._finish_conversion(done)
            elif auto <= now:
                if now - auto > 2 * AUTO_CONVERSION_PERIOD_NS:
                    auto = now - (now - auto) % AUTO_CONVERSION_PERIOD_NS
                if self._conv_done is None:
                    self._start_conversion(auto, bsy_delay_ns=0)
                self._next_auto = auto + AUTO_CONVERSION_PERIOD_NS
            else:
                return

    def _power_on_reset(self, at: int) -> None:
        self._time_regs = _POWER_ON_TIME
        self._reset_chip_ns = self._chip_ns(at)
        self._chain_reset_mono_ns = at
        self._alarms = bytearray(len(self._alarms))
        self._control = CONTROL_POWER_ON
        self._status = STATUS_POWER_ON
        self._aging = 0
        self._conv_user = False
        self._conv_bsy_from = None
        self._conv_done = None
        self._finish_conversion(at)  # a conversion runs at power-up

    def _sync(self, now: int) -> None:
        """Catch up with faults and conversions up to ``now``."""
        if self._faults is not None:
            faults, set_ns = self._faults()
            # A fault set stamped in the future is not in force yet.
            new = set_ns != self._seen_set_ns or faults != self._seen_faults
            if new and set_ns <= now:
                at = max(set_ns, self._anchor_mono)
                self._advance_conversions(at)
                self._reanchor(at)
                step_ns = round((faults.offset_s - self._seen_faults.offset_s) * NS_PER_S)
                self._anchor_chip += step_ns
                if faults.lost_power and not self._seen_faults.lost_power:
                    self._power_on_reset(at)
                self._drift_ppb = round(faults.drift_ppm * 1000)
                self._set_rate(at)
                self._seen_faults = faults
                self._seen_set_ns = set_ns
        self._advance_conversions(now)


# --- the bus ---------------------------------------------------------------------------


class SimI2CBus:
    """The ``busio.I2C`` interface over simulated devices keyed by 7-bit address.

    Exactly what ``adafruit_bus_device.I2CDevice`` calls. As on CircuitPython, every
    transfer requires the bus lock (``try_lock``); as on Linux, an address nobody answers
    raises ``OSError(EREMOTEIO)``.
    """

    def __init__(self, devices: Mapping[int, I2CTarget]) -> None:
        for address in devices:
            self._check_address(address)
        self._devices = dict(devices)
        self._lock = threading.Lock()
        self._deinited = False

    @staticmethod
    def _check_address(address: int) -> None:
        if not 0 <= address <= 0x7F:
            raise ValueError(f"I2C address 0x{address:x} is not a 7-bit address")

    def _target(self, address: int) -> I2CTarget:
        if self._deinited:
            raise ValueError("Object has been deinitialized and can no longer be used.")
        if not self._lock.locked():
            raise RuntimeError("Function requires lock")
        self._check_address(address)
        device = self._devices.get(address)
        if device is None:
            raise _remote_io_error(address)
        return device

    @staticmethod
    def _span(buffer: Sized, start: int, end: int | None) -> tuple[int, int]:
        length = len(buffer)
        stop = length if end is None else end
        if not 0 <= start <= stop <= length:
            raise ValueError(f"buffer slice [{start}:{end}] out of range for {length} bytes")
        if stop - start > MAX_TRANSFER_BYTES:
            raise ValueError(f"I2C transfer of {stop - start} bytes exceeds {MAX_TRANSFER_BYTES}")
        return start, stop

    def try_lock(self) -> bool:
        return self._lock.acquire(blocking=False)

    def unlock(self) -> None:
        if self._lock.locked():
            self._lock.release()

    def scan(self) -> list[int]:
        """Addresses that ACK a zero-length write, like ``i2cdetect``."""
        found = []
        for address in sorted(self._devices):
            try:
                self._target(address).transfer(b"", 0)
            except OSError:
                continue
            found.append(address)
        return found

    def writeto(
        self, address: int, buffer: bytes | bytearray, *, start: int = 0, end: int | None = None
    ) -> None:
        start, stop = self._span(buffer, start, end)
        self._target(address).transfer(bytes(buffer[start:stop]), 0)

    def readfrom_into(
        self, address: int, buffer: bytearray, *, start: int = 0, end: int | None = None
    ) -> None:
        start, stop = self._span(buffer, start, end)
        data = self._target(address).transfer(b"", stop - start)
        buffer[start:stop] = data

    def writeto_then_readfrom(
        self,
        address: int,
        buffer_out: bytes | bytearray,
        buffer_in: bytearray,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        out_start, out_stop = self._span(buffer_out, out_start, out_end)
        in_start, in_stop = self._span(buffer_in, in_start, in_end)
        data = self._target(address).transfer(
            bytes(buffer_out[out_start:out_stop]), in_stop - in_start
        )
        buffer_in[in_start:in_stop] = data

    def deinit(self) -> None:
        self._deinited = True

    def __enter__(self) -> SimI2CBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deinit()


# --- a virtual monotonic clock for fast, deterministic tests -----------------------------


class VirtualClock:
    """A monotonic clock that advances ``step_ns`` on every read and jumps on ``sleep``.

    Pass the same instance as ``clock`` to :class:`SimDS3231` and as ``clock``/``sleep`` to
    the driver: a one-second edge wait then costs microseconds of real time, and every read
    still takes (virtual) time, as a real I2C transaction does.
    """

    def __init__(self, start_ns: int = 1_000 * NS_PER_S, *, step_ns: int = 20_000) -> None:
        self._now = start_ns
        self._step = step_ns
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            now = self._now
            self._now += self._step
            return now

    @property
    def now_ns(self) -> int:
        """The current reading, without advancing the clock."""
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0, round(seconds * NS_PER_S))

    def advance(self, ns: int) -> None:
        with self._lock:
            self._now += ns
