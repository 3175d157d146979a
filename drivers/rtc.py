"""DS3231 real-time clock driver: the RTC's time to sub-second, against CLOCK_MONOTONIC_RAW.

The DS3231's time registers have 1-second resolution. To place the second, the driver
polls the seconds register (00h, one byte) until it changes: the change is the start of a
new second, timed on the host's raw monotonic clock. The whole register file (00h-12h) is
then read in one burst, which the chip serves from a coherent snapshot taken at the I2C
START (DS3231 datasheet, "Address Map"), so the sample says "at monotonic instant m (the
edge), the RTC showed hh:mm:ss.000".

``error_ns`` is the driver's *read* error only: half the span between the last read that
saw the old second and the first that saw the new one (a poll interval plus an I2C read),
plus one 32.768 kHz period for the chip's countdown chain. The chip's own drift
(±2 ppm from 0 to +40 °C, ±3.5 ppm to +85 °C; DS3231 datasheet, "Electrical
Characteristics") grows from the last time the RTC was set; the clock ensemble, which knows
when that was, adds it. The driver does not.

The chip is reached through the real ``adafruit_ds3231.DS3231`` driver over an injected
``busio.I2C`` (or :class:`drivers.sim.ds3231.SimI2CBus`). Its register descriptors set the
time, clear OSF and EOSC, and drive temperature conversions; the time itself is read as raw
registers through the same ``I2CDevice``, because the adafruit ``datetime`` getter masks
away the 12/24-hour bit and the century bit and does not check BCD, so a chip left in
12-hour mode or holding garbage would be misread silently. Its
``force_temperature_conversion`` spins without a deadline; this driver waits on BSY/CONV
with one.

The kernel must not own the chip: see ``docs/rtc.md`` (no ``dtoverlay=i2c-rtc,ds3231``).
"""

from __future__ import annotations

import calendar
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import adafruit_ds3231
from adafruit_bus_device.i2c_device import I2CDevice
from adafruit_register import i2c_bit, i2c_bits

from drivers.errors import DriverError
from drivers.monotonic import NS_PER_S, mono_ns
from drivers.sample import SourceKind, TimeSample

logger = logging.getLogger(__name__)

DS3231_ADDRESS = 0x68

# DS3231 datasheet, Figure 1 (register map).
_REG_SECONDS = 0x00
_REG_HOURS = 0x02
_REG_MONTH = 0x05
_REG_CONTROL = 0x0E
_REG_STATUS = 0x0F
_REG_AGING = 0x10
_REG_TEMP_MSB = 0x11
_REGISTER_COUNT = 0x13  # 00h-12h

_REGISTER_NAMES = ("seconds", "minutes", "hours", "day", "date", "month/century", "year")
# Bits shown as 0 in each timekeeping register 00h-06h.
_TIME_REGISTER_MASKS = (0x7F, 0x7F, 0x7F, 0x07, 0x3F, 0x9F, 0xFF)

_CONTROL_EOSC = 0x80  # register 0Eh bit 7: oscillator disabled on battery
_CONTROL_CONV = 0x20  # register 0Eh bit 5: force a temperature conversion
_CONTROL_INTCN = 0x04
_STATUS_OSF = 0x80  # register 0Fh bit 7: the oscillator stopped at some time
_STATUS_EN32KHZ = 0x08
_STATUS_BSY = 0x04  # register 0Fh bit 2: a TCXO conversion is running
_STATUS_A2F = 0x02
_STATUS_A1F = 0x01

# The seconds roll-over is derived from the 32.768 kHz countdown chain: one period of it is
# the chip's own contribution to the edge's uncertainty.
COUNTDOWN_PERIOD_NS = 30_518

OSF_REASON = "oscillator stopped (OSF): time lost since power failure"


class I2CBus(Protocol):
    """The part of ``busio.I2C`` that ``adafruit_bus_device.I2CDevice`` uses."""

    def try_lock(self) -> bool: ...
    def unlock(self) -> None: ...
    def writeto(
        self, address: int, buffer: Any, *, start: int = 0, end: int | None = None
    ) -> None: ...
    def readfrom_into(
        self, address: int, buffer: Any, *, start: int = 0, end: int | None = None
    ) -> None: ...
    def writeto_then_readfrom(
        self,
        address: int,
        buffer_out: Any,
        buffer_in: Any,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcConfig:
    """How to reach and read one DS3231."""

    name: str = "rtc0"
    i2c_address: int = DS3231_ADDRESS
    edge_timeout_s: float = 1.25  # one second to the next roll-over, plus margin
    poll_interval_s: float = 0.001  # seconds-register polling; half of it is in error_ns
    conversion_timeout_s: float = 0.6  # BSY (tCONV max 200 ms) then CONV (another 200 ms)
    conversion_poll_s: float = 0.005
    set_timeout_s: float = 3.0  # set_time: up to ~1 s to a boundary, once more if late
    set_max_error_s: float = 0.005  # a write further than this from the boundary is retried
    set_spin_s: float = 0.002  # busy-wait this long before the boundary instead of sleeping

    def __post_init__(self) -> None:
        if not self.name.startswith(SourceKind.RTC.value):
            raise ValueError(f"an RTC source name must start with 'rtc', got {self.name!r}")
        if not 0x08 <= self.i2c_address <= 0x77:
            raise ValueError(f"i2c_address 0x{self.i2c_address:x} is not a 7-bit device address")
        if not 1.0 < self.edge_timeout_s <= 10.0:
            raise ValueError("edge_timeout_s must be in (1, 10]: a second must fit in it")
        if not 0.0 < self.poll_interval_s <= 0.1:
            raise ValueError("poll_interval_s must be in (0, 0.1]")
        if not 0.0 < self.conversion_timeout_s <= 10.0:
            raise ValueError("conversion_timeout_s must be in (0, 10]")
        if not 0.0 < self.conversion_poll_s <= self.conversion_timeout_s:
            raise ValueError("conversion_poll_s must be in (0, conversion_timeout_s]")
        if not 1.0 < self.set_timeout_s <= 30.0:
            raise ValueError("set_timeout_s must be in (1, 30]")
        if not 0.0 < self.set_max_error_s < 0.5:
            raise ValueError("set_max_error_s must be in (0, 0.5)")
        if not 0.0 <= self.set_spin_s < 0.1:
            raise ValueError("set_spin_s must be in [0, 0.1)")


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcSample(TimeSample):
    """One DS3231 reading. ``mono_ns`` is the seconds edge; ``utc_ns`` the second it began.

    When the time could not be read (illogical registers) ``utc_ns`` is 0 and
    ``register_time`` None; the sample is then untrusted and ``reason`` names the register.
    """

    temperature_c: float  # registers 11h-12h, 0.25 °C resolution
    aging_offset: int  # register 10h, -128..127, ~0.1 ppm per LSB, positive slows
    osf: bool  # register 0Fh bit 7
    eosc: bool  # register 0Eh bit 7
    register_time: datetime | None  # what registers 00h-06h said, UTC
    raw_registers: bytes  # 00h-12h as read


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcStatus:
    """Control, status, aging and temperature registers (0Eh-12h), decoded."""

    osf: bool
    eosc: bool
    busy: bool
    converting: bool
    en32khz: bool
    intcn: bool
    alarm1_flag: bool
    alarm2_flag: bool
    aging_offset: int
    temperature_c: float
    control: int
    status: int


class RtcRegisterError(DriverError):
    """The time registers hold something the datasheet does not allow."""


class _DS3231(adafruit_ds3231.DS3231):  # type: ignore[misc]
    """The adafruit driver at a configurable address, with the registers it keeps private.

    The adafruit constructor probes the bus (and raises ``ValueError`` when nobody
    answers); this one does not, so a driver can be built while the chip is unplugged and
    recover when it comes back.
    """

    busy = i2c_bit.ROBit(0x0F, 2)  # DS3231 datasheet, register 0Fh bit 2 (BSY)
    convert = i2c_bit.RWBit(0x0E, 5)  # register 0Eh bit 5 (CONV)
    aging = i2c_bits.RWBits(8, 0x10, 0, 1, signed=True)  # register 10h, two's complement

    def __init__(self, bus: I2CBus, address: int) -> None:
        self.i2c_device = I2CDevice(bus, address, probe=False)


def _bcd(regs: bytes, index: int, mask: int = 0xFF) -> int:
    value = regs[index] & mask
    hi, lo = value >> 4, value & 0x0F
    if hi > 9 or lo > 9:
        raise RtcRegisterError(
            f"register {index:02X}h ({_REGISTER_NAMES[index]}) = 0x{regs[index]:02X} is not BCD"
        )
    return hi * 10 + lo


def decode_time_registers(regs: bytes) -> datetime:
    """UTC from registers 00h-06h (DS3231 datasheet, Figure 1), or RtcRegisterError.

    Handles 12-hour mode (02h bit 6, PM = bit 5) and the century bit (05h bit 7: 21xx).
    """
    if len(regs) < 7:
        raise RtcRegisterError(f"expected registers 00h-06h, got {len(regs)} bytes")
    for index, mask in enumerate(_TIME_REGISTER_MASKS):
        if regs[index] & ~mask & 0xFF:
            raise RtcRegisterError(
                f"register {index:02X}h ({_REGISTER_NAMES[index]}) = 0x{regs[index]:02X}"
                " has bits set that the chip keeps at 0"
            )

    def check(ok: bool, index: int, what: str) -> None:
        if not ok:
            raise RtcRegisterError(
                f"register {index:02X}h ({_REGISTER_NAMES[index]}) = 0x{regs[index]:02X}: {what}"
            )

    second = _bcd(regs, 0)
    check(second <= 59, 0, "seconds above 59")
    minute = _bcd(regs, 1)
    check(minute <= 59, 1, "minutes above 59")
    hours = regs[_REG_HOURS]
    if hours & 0x40:  # 12-hour mode
        hour12 = _bcd(regs, _REG_HOURS, 0x1F)
        check(1 <= hour12 <= 12, _REG_HOURS, "12-hour mode hour not in 1-12")
        hour = hour12 % 12 + (12 if hours & 0x20 else 0)
    else:
        hour = _bcd(regs, _REG_HOURS, 0x3F)
        check(hour <= 23, _REG_HOURS, "hour above 23")
    check(1 <= regs[3] <= 7, 3, "day of week not in 1-7")
    date = _bcd(regs, 4)
    month = _bcd(regs, _REG_MONTH, 0x1F)
    check(1 <= month <= 12, _REG_MONTH, "month not in 1-12")
    year = 2000 + (100 if regs[_REG_MONTH] & 0x80 else 0) + _bcd(regs, 6)
    check(
        1 <= date <= calendar.monthrange(year, month)[1],
        4,
        f"no such day in {year:04d}-{month:02d}",
    )
    return datetime(year, month, date, hour, minute, second, tzinfo=UTC)


def decode_temperature(msb: int, lsb: int) -> float:
    """Registers 11h-12h: two's complement integer part, 12h bits 7-6 in 0.25 °C."""
    return _signed8(msb) + (lsb >> 6) * 0.25


def _signed8(value: int) -> int:
    return value - 256 if value & 0x80 else value


def linear_utc(mono_ns_at: int, utc_ns_at: int) -> Callable[[int], int]:
    """``utc_at`` for :meth:`Ds3231Clock.set_time` from one (monotonic, UTC) pair."""

    def utc_at(mono: int) -> int:
        return utc_ns_at + (mono - mono_ns_at)

    return utc_at


class Ds3231Clock:
    """One DS3231 on an I2C bus: sub-second reads, aligned setting, temperature, aging.

    ``bus`` is a ``busio.I2C`` (see :func:`open_i2c_bus`) or a
    :class:`drivers.sim.ds3231.SimI2CBus`. ``clock`` and ``sleep`` default to the host's
    raw monotonic clock and ``time.sleep``; tests may pass a virtual clock. Calls are
    serialised by a lock, so one instance may be shared between threads. Every bus error
    becomes a :class:`DriverError` naming the source and address.
    """

    def __init__(
        self,
        bus: I2CBus,
        config: RtcConfig | None = None,
        *,
        clock: Callable[[], int] = mono_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config or RtcConfig()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._chip = _DS3231(bus, self._config.i2c_address)
        self._last_reason: str | None = None

    @property
    def config(self) -> RtcConfig:
        return self._config

    # -- bus access --------------------------------------------------------------------

    def _no_answer(self, e: OSError) -> DriverError:
        c = self._config
        return DriverError(f"{c.name}: no answer on I2C bus at 0x{c.i2c_address:02x} ({e})")

    def _read(self, register: int, length: int) -> tuple[int, int, bytes]:
        """Registers from ``register`` on, with the monotonic instants just before and after."""
        out = bytearray((register,))
        buf = bytearray(length)
        try:
            with self._chip.i2c_device as device:
                t0 = self._clock()
                device.write_then_readinto(out, buf)
                t1 = self._clock()
        except OSError as e:
            raise self._no_answer(e) from e
        return t0, t1, bytes(buf)

    def _do(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except OSError as e:
            raise self._no_answer(e) from e

    def _sleep_until(self, deadline_ns: int) -> None:
        remaining = deadline_ns - self._clock()
        if remaining > 0:
            self._sleep(remaining / NS_PER_S)

    # -- reading the time --------------------------------------------------------------

    def read(self) -> RtcSample:
        """The RTC's time at the next seconds edge (waits up to ``edge_timeout_s``).

        Returns an untrusted sample, without waiting for an edge, when OSF is set or the
        registers are illogical; raises :class:`DriverError` when the chip does not answer.
        """
        with self._lock:
            t0, t1, regs = self._read(_REG_SECONDS, _REGISTER_COUNT)
            reason = self._problem(regs)
            if reason is not None:
                return self._sample(regs, (t0 + t1) // 2, 0, reason)
            edge = self._wait_for_edge(regs[_REG_SECONDS], t0)
            if edge is None:
                t0, t1, regs = self._read(_REG_SECONDS, _REGISTER_COUNT)
                reason = self._problem(regs) or (
                    f"seconds register stuck at 0x{regs[0]:02X} for"
                    f" {self._config.edge_timeout_s:g} s: oscillator not running"
                )
                return self._sample(regs, (t0 + t1) // 2, 0, reason)
            edge_ns, half_width_ns, regs, jump = edge
            reason = self._problem(regs) or jump
            return self._sample(regs, edge_ns, half_width_ns + COUNTDOWN_PERIOD_NS, reason)

    def _problem(self, regs: bytes) -> str | None:
        """Why the registers cannot give a trusted time, or None."""
        problems = []
        if regs[_REG_STATUS] & _STATUS_OSF:
            problems.append(OSF_REASON)
        try:
            decode_time_registers(regs[:7])
        except RtcRegisterError as e:
            problems.append(str(e))
        return "; ".join(problems) or None

    def _wait_for_edge(
        self, seconds: int, last_start_ns: int
    ) -> tuple[int, int, bytes, str | None] | None:
        """Poll 00h until it leaves ``seconds``; then burst-read 00h-12h in the new second.

        Returns (edge instant, half-width of its interval, registers, jump reason) or None
        when no edge came before the deadline. ``last_start_ns`` is when the read that saw
        ``seconds`` began: the edge lies between that and the end of the first read that
        sees the new value.
        """
        c = self._config
        deadline = self._clock() + round(c.edge_timeout_s * NS_PER_S)
        while self._clock() < deadline:
            self._sleep(c.poll_interval_s)
            t0, t1, (value,) = self._read(_REG_SECONDS, 1)
            if value == seconds:
                last_start_ns = t0
                continue
            edge_ns = (last_start_ns + t1) // 2
            half_width_ns = (t1 - last_start_ns + 1) // 2
            b0, _, regs = self._read(_REG_SECONDS, _REGISTER_COUNT)
            if regs[_REG_SECONDS] != value:
                # Descheduled across another edge: this burst belongs to a later second.
                seconds, last_start_ns = regs[_REG_SECONDS], b0
                continue
            jump = None
            old, new = seconds & 0x7F, value & 0x7F
            old_s, new_s = (old >> 4) * 10 + (old & 0xF), (new >> 4) * 10 + (new & 0xF)
            if new_s != (old_s + 1) % 60:
                jump = (
                    f"seconds register went from 0x{seconds:02X} to 0x{value:02X}"
                    " instead of counting by one (written or reset during the read?)"
                )
            return edge_ns, half_width_ns, regs, jump
        return None

    def _sample(self, regs: bytes, at_ns: int, error_ns: int, reason: str | None) -> RtcSample:
        c = self._config
        try:
            when: datetime | None = decode_time_registers(regs[:7])
        except RtcRegisterError:
            when = None
        utc_ns = calendar.timegm(when.timetuple()) * NS_PER_S if when is not None else 0
        if reason != self._last_reason:
            if reason:
                logger.warning("%s: RTC time untrusted: %s", c.name, reason)
            elif self._last_reason:
                logger.info("%s: RTC time readable again", c.name)
            self._last_reason = reason
        return RtcSample(
            source=c.name,
            kind=SourceKind.RTC,
            mono_ns=at_ns,
            utc_ns=utc_ns,
            error_ns=error_ns,
            trusted=reason is None,
            reason=reason or "",
            temperature_c=decode_temperature(regs[_REG_TEMP_MSB], regs[_REG_TEMP_MSB + 1]),
            aging_offset=_signed8(regs[_REG_AGING]),
            osf=bool(regs[_REG_STATUS] & _STATUS_OSF),
            eosc=bool(regs[_REG_CONTROL] & _CONTROL_EOSC),
            register_time=when,
            raw_registers=regs,
        )

    # -- setting the time --------------------------------------------------------------

    def set_time(self, utc_at: Callable[[int], int]) -> float:
        """Set the RTC so that its next second starts on a UTC second boundary.

        ``utc_at(mono_ns)`` gives UTC (POSIX ns) at a raw-monotonic instant (see
        :func:`linear_utc`). The driver waits until the next boundary B, writes the
        registers with B's second (writing 00h resets the chip's countdown chain, DS3231
        datasheet, "Clock and Calendar"), then clears EOSC and OSF. Returns the residual,
        in seconds: how long after B the write took effect (positive: the RTC is behind
        by that much), measured to within half the write's duration. A write off by more
        than ``set_max_error_s`` is redone at the next boundary; raises DriverError if
        ``set_timeout_s`` runs out.
        """
        c = self._config
        with self._lock:
            deadline = self._clock() + round(c.set_timeout_s * NS_PER_S)
            spin_ns = round(c.set_spin_s * NS_PER_S)
            while True:
                # Half a register transaction: aim the middle of the write at the boundary.
                t0, t1, _ = self._read(_REG_SECONDS, 1)
                lead_ns = (t1 - t0) // 2
                now = self._clock()
                utc = utc_at(now)
                boundary = (utc // NS_PER_S + 1) * NS_PER_S
                if boundary - utc < spin_ns + 5 * (t1 - t0) + 1_000_000:
                    boundary += NS_PER_S  # too close to prepare: take the next one
                target = now + (boundary - utc)
                if target > deadline:
                    raise DriverError(
                        f"{c.name}: could not set the time within {c.set_timeout_s:g} s"
                    )
                value = self._struct_time(boundary)
                self._sleep_until(target - spin_ns - lead_ns)
                while True:
                    t_spin = self._clock()
                    if utc_at(t_spin) >= boundary - lead_ns:
                        break
                    if t_spin > deadline:
                        raise DriverError(f"{c.name}: could not set the time before deadline")
                w0 = self._clock()
                self._do(functools.partial(setattr, self._chip, "datetime_register", value))
                w1 = self._clock()
                residual_ns = utc_at((w0 + w1) // 2) - boundary
                if abs(residual_ns) <= c.set_max_error_s * NS_PER_S:
                    break
                logger.warning(
                    "%s: time write landed %.1f ms from the second boundary; retrying",
                    c.name,
                    residual_ns / 1e6,
                )
            # What adafruit's datetime setter does after the registers: start the
            # oscillator on battery, and clear OSF (register 0Fh bit 7, written to 0).
            self._do(lambda: setattr(self._chip, "disable_oscillator", False))
            self._do(lambda: setattr(self._chip, "lost_power", False))
            logger.info(
                "%s: time set to %s (residual %+.3f ms)",
                c.name,
                datetime.fromtimestamp(boundary // NS_PER_S, tz=UTC).isoformat(),
                residual_ns / 1e6,
            )
            return residual_ns / NS_PER_S

    def _struct_time(self, utc_ns: int) -> time.struct_time:
        when = time.gmtime(utc_ns // NS_PER_S)
        if not 2000 <= when.tm_year <= 2099:
            # The adafruit register writes year - 2000 without the century bit.
            raise DriverError(
                f"{self._config.name}: cannot set year {when.tm_year}: the DS3231 driver"
                " supports 2000-2099"
            )
        return when

    # -- temperature, aging, status ----------------------------------------------------

    def temperature(self, force: bool = False) -> float:
        """Die temperature in °C (updated every 64 s; ``force`` converts now, bounded)."""
        with self._lock:
            if force:
                self._convert()
            _, _, regs = self._read(_REG_TEMP_MSB, 2)
            return decode_temperature(regs[0], regs[1])

    def _convert(self) -> None:
        """A temperature conversion with a deadline (DS3231 datasheet, 0Eh CONV, 0Fh BSY).

        The user "should check the status bit BSY before forcing the controller to start a
        new TCXO execution"; CONV "remains at a 1 from the time it is written until the
        conversion is finished, at which time both CONV and BSY go to 0".
        """
        c = self._config
        deadline = self._clock() + round(c.conversion_timeout_s * NS_PER_S)

        def wait(register: int, bit: int, what: str) -> None:
            while True:
                _, _, (value,) = self._read(register, 1)
                if not value & bit:
                    return
                if self._clock() >= deadline:
                    raise DriverError(
                        f"{c.name}: temperature conversion did not finish within"
                        f" {c.conversion_timeout_s:g} s ({what} stuck at 1)"
                    )
                self._sleep(c.conversion_poll_s)

        wait(_REG_STATUS, _STATUS_BSY, "BSY")
        self._do(lambda: setattr(self._chip, "convert", True))
        wait(_REG_CONTROL, _CONTROL_CONV, "CONV")

    @property
    def aging_offset(self) -> int:
        """Register 10h, -128..127: ~0.1 ppm per LSB at 25 °C, positive slows the clock."""
        with self._lock:
            return int(self._do(lambda: self._chip.calibration))

    @aging_offset.setter
    def aging_offset(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not -128 <= value <= 127:
            raise ValueError(f"aging offset must be an integer in -128..127, got {value!r}")
        with self._lock:
            self._do(lambda: setattr(self._chip, "aging", value))
            # The aging offset takes effect at the next conversion; force one (bounded).
            self._convert()

    def status(self) -> RtcStatus:
        """Registers 0Eh-12h in one read."""
        with self._lock:
            _, _, regs = self._read(_REG_CONTROL, 5)
        control, status, aging, msb, lsb = regs
        return RtcStatus(
            osf=bool(status & _STATUS_OSF),
            eosc=bool(control & _CONTROL_EOSC),
            busy=bool(status & _STATUS_BSY),
            converting=bool(control & _CONTROL_CONV),
            en32khz=bool(status & _STATUS_EN32KHZ),
            intcn=bool(control & _CONTROL_INTCN),
            alarm1_flag=bool(status & _STATUS_A1F),
            alarm2_flag=bool(status & _STATUS_A2F),
            aging_offset=_signed8(aging),
            temperature_c=decode_temperature(msb, lsb),
            control=control,
            status=status,
        )


def open_i2c_bus(bus_number: int = 1) -> I2CBus:
    """A ``busio.I2C`` on Linux bus ``/dev/i2c-<bus_number>`` (1 = the Pi's GPIO 2/3).

    Blinka is imported here only, so this module imports on any machine. Built the way
    ``adafruit-extended-bus`` does it: blinka's generic Linux I2C behind ``busio.I2C``.
    """
    path = Path(f"/dev/i2c-{bus_number}")
    if not path.exists():
        raise DriverError(
            f"I2C bus {bus_number}: {path} does not exist (enable I2C: raspi-config, or"
            " dtparam=i2c_arm=on in config.txt, then reboot)"
        )
    try:
        import busio
        from adafruit_blinka.microcontroller.generic_linux.i2c import I2C as LinuxI2C
    except (ImportError, RuntimeError, NotImplementedError) as e:
        raise DriverError(f"I2C bus {bus_number}: Blinka cannot drive it here ({e})") from e

    class _LinuxBus(busio.I2C):  # type: ignore[misc]
        def __init__(self, number: int) -> None:
            self._i2c = LinuxI2C(number, mode=LinuxI2C.MASTER)
            self._lock = threading.RLock()

    try:
        return _LinuxBus(bus_number)
    except (OSError, RuntimeError) as e:
        raise DriverError(f"I2C bus {bus_number}: cannot open {path} ({e})") from e
