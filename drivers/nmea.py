"""NMEA 0183 for a timing appliance: framing, strict field checks and one sample per cycle.

Everything here is pure: bytes and the ``CLOCK_MONOTONIC_RAW`` instant of their arrival go
in, :class:`GpsSample` and :class:`GpsRejection` come out. The serial reader
(:mod:`drivers.gps`) and ``horodate gps read`` on a capture file are thin shells around
:class:`NmeaDecoder`.

Public API::

    config = GpsConfig(device="/dev/ttyAMA0")          # units in the names, bounds beside
    decoder = NmeaDecoder(config)
    for report in decoder.feed(chunk, mono_ns):         # GpsSample | GpsRejection
        ...
    decoder.poll(mono_ns)     # closes a cycle after ``cycle_quiet_s`` without any byte
    decoder.flush()           # closes the open cycle (end of capture, port lost)

Three layers:

1. :class:`NmeaFramer` cuts a byte stream into checksummed sentences. It resynchronises on
   ``$`` or ``!`` after garbage, accepts CR LF or a bare LF, refuses sentences longer than
   ``nmea_line_max_bytes`` and counts every byte it throws away. Each :class:`Frame` carries
   the arrival instant of the chunk that held its first byte (``$``).
2. :func:`parse_sentence` lets pynmea2 split the fields of RMC, GGA, ZDA and GSA, then checks
   every field itself (pynmea2 hands back raw strings for bad fields, takes ``2208-1`` for a
   date, maps ``220899`` to 1999 and crashes on a leap second ``23:59:60``).
3. :class:`NmeaDecoder` merges the sentences of one receiver cycle (all timed sentences
   labelling the same UTC second) into one :class:`GpsSample`, and decides whether it can be
   trusted: valid fix, a date inside the accepted window, a well-formed label that moves
   forward. A cycle whose UTC instant cannot be established at all (malformed time or date,
   a GGA with no dated sentence beside it) is not a sample: it becomes a
   :class:`GpsRejection` that says why.

See docs/gps.md (operators) and docs/adr/0002-gps-samples.md (why).
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
import re
from dataclasses import dataclass, field

import pynmea2

from drivers.sample import Leap, SourceKind, TimeSample

NS_PER_S = 1_000_000_000
SECONDS_PER_DAY = 86_400

# The day this release was cut. A receiver that reports an earlier date has lost track of
# its GPS week (10-bit week roll-over, 1999-08-22 and 2019-04-07) or is cold-starting from
# a stale almanac: the default date floor.
RELEASE_DATE = dt.date(2026, 11, 1)
# GPS broadcasts the week number modulo 1024 (IS-GPS-200 §20.3.3.3.1.1): a receiver can only
# place a date inside a 1024-week window. The accepted window starts at the floor.
GPS_WEEK_WINDOW = dt.timedelta(weeks=1024)

# NMEA 0183 v4.10 §5.3: a sentence is at most 82 characters from "$" to CR LF inclusive.
# Real receivers exceed it (27 of 86 captured receivers send 83 to 205 bytes), hence a
# configurable bound; 128 keeps every position/time sentence we have seen.
NMEA_STANDARD_LINE_MAX_BYTES = 82
DEFAULT_LINE_MAX_BYTES = 128

# Talker IDs seen in front of time sentences: GP GPS, GL GLONASS, GA Galileo, GB/BD BeiDou,
# GQ/QZ QZSS, GI NavIC, GN multi-constellation, IN integrated navigation (humminbird-M37).
# Any two letters are accepted except a leading "P", which marks a proprietary sentence
# (NMEA 0183 §5.2.3): the talker says who computed the time, not whether it is right.
TIMED_TYPES = frozenset({"RMC", "GGA", "GNS", "ZDA"})
PARSED_TYPES = TIMED_TYPES | {"GSA"}


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True, kw_only=True)
class GpsConfig:
    """One GPS receiver. Units are in the names; defaults are honest for NMEA alone.

    ``latency_s``: how long after the second it labels the receiver starts sending the first
    sentence of a cycle. DESIGN.md: 50–700 ms, receiver-dependent. ``uncertainty_s`` is
    the half-width of the interval the sample states (see docs/adr/0002-gps-samples.md):
    0.4 ± 0.45 s covers −50 ms … 850 ms, the whole published range plus margin for the
    arrival stamp (USB frames, scheduling).
    """

    device: str = ""
    name: str = "gps0"
    baudrate: int = 9600
    latency_s: float = 0.4
    uncertainty_s: float = 0.45
    date_floor: dt.date = RELEASE_DATE
    nmea_line_max_bytes: int = DEFAULT_LINE_MAX_BYTES
    cycle_quiet_s: float = 0.5  # a cycle ends after this long without any byte
    read_timeout_s: float = 0.2  # one serial read blocks at most this long
    read_max_bytes: int = 4096  # one serial read returns at most this much
    reopen_backoff_min_s: float = 0.5
    reopen_backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.name.startswith(SourceKind.GPS.value):
            raise ValueError(f"GPS source name must start with 'gps', got {self.name!r}")
        if not 0.0 <= self.latency_s < 1.0:
            raise ValueError(f"latency_s must be in [0, 1), got {self.latency_s}")
        if not 0.0 < self.uncertainty_s < 1.0:
            raise ValueError(f"uncertainty_s must be in (0, 1), got {self.uncertainty_s}")
        if not NMEA_STANDARD_LINE_MAX_BYTES <= self.nmea_line_max_bytes <= 4096:
            raise ValueError(f"nmea_line_max_bytes must be in [82, 4096], got {self}")
        if self.baudrate <= 0 or self.read_timeout_s <= 0 or self.read_max_bytes <= 0:
            raise ValueError("baudrate, read_timeout_s and read_max_bytes must be > 0")
        if not 0 < self.reopen_backoff_min_s <= self.reopen_backoff_max_s:
            raise ValueError("need 0 < reopen_backoff_min_s <= reopen_backoff_max_s")
        if self.cycle_quiet_s <= 0:
            raise ValueError("cycle_quiet_s must be > 0")

    @property
    def date_ceiling(self) -> dt.date:
        """First day no longer accepted: the floor plus one GPS week cycle (1024 weeks)."""
        return self.date_floor + GPS_WEEK_WINDOW


# --------------------------------------------------------------------------- framing


@dataclass(frozen=True, slots=True)
class Frame:
    """One checksummed sentence, from ``$``/``!`` to the checksum, without the line end.

    ``mono_ns`` is the arrival instant of the chunk that held the sentence's first byte.
    """

    text: str
    mono_ns: int


@dataclass(slots=True)
class FramerStats:
    frames: int = 0
    discarded_bytes: int = 0  # everything not part of a good sentence, line ends excepted
    bad_checksum: int = 0
    no_checksum: int = 0
    too_long: int = 0
    broken: int = 0  # interrupted by a new start, a control or non-ASCII byte


_START = b"$!"
_END = b"\r\n"
# NMEA 0183 §5.3: valid sentence characters are printable ASCII 0x20–0x7E.
_STOP = re.compile(rb"[\r\n$!]|[^\x20-\x7e]")
_CHECKSUM = re.compile(r"^([$!])([^*]*)\*([0-9A-Fa-f]{2})\Z")


def checksum(body: str) -> int:
    """NMEA 0183 §5.3.1: XOR of every character between ``$`` and ``*``, both excluded."""
    value = 0
    for char in body.encode("ascii"):
        value ^= char
    return value


class NmeaFramer:
    """Cuts arbitrary byte chunks into complete, checksummed sentences.

    Buffers are bounded: a sentence in progress never exceeds ``line_max_bytes``; past it
    the framer drops bytes until the next ``$`` or ``!``.
    """

    def __init__(self, line_max_bytes: int = DEFAULT_LINE_MAX_BYTES) -> None:
        self.line_max_bytes = line_max_bytes
        self.stats = FramerStats()
        self._buf = bytearray()
        self._in_sentence = False
        self._skipping = False  # the current sentence overflowed: drop until a new start
        self._start_mono_ns = 0

    def feed(self, data: bytes, mono_ns: int) -> list[Frame]:
        frames: list[Frame] = []
        i, n = 0, len(data)
        while i < n:
            if not self._in_sentence:
                j = _find_start(data, i)
                if j < 0:
                    self.stats.discarded_bytes += _junk(data[i:])
                    return frames
                self.stats.discarded_bytes += _junk(data[i:j])
                self._begin(data[j : j + 1], mono_ns)
                i = j + 1
                continue
            m = _STOP.search(data, i)
            stop = n if m is None else m.start()
            self._append(data[i:stop])
            if m is None:
                return frames
            byte = data[stop : stop + 1]
            if byte in (b"\r", b"\n"):
                frame = self._finish()
                if frame is not None:
                    frames.append(frame)
                i = stop + 1
            elif byte in (b"$", b"!"):
                self._abandon()
                self._begin(byte, mono_ns)
                i = stop + 1
            else:  # a control or non-ASCII byte inside a sentence: it is broken
                self._abandon()
                self.stats.discarded_bytes += 1
                i = stop + 1
        return frames

    def reset(self) -> None:
        """Forget the sentence in progress (its bytes count as discarded)."""
        if self._in_sentence:
            self._abandon()

    def _begin(self, start: bytes, mono_ns: int) -> None:
        self._buf[:] = start
        self._in_sentence = True
        self._skipping = False
        self._start_mono_ns = mono_ns

    def _append(self, part: bytes) -> None:
        if self._skipping:
            self.stats.discarded_bytes += len(part)
            return
        # CR LF are counted in the bound (NMEA 0183 §5.3), hence the 2.
        if len(self._buf) + len(part) + 2 > self.line_max_bytes:
            self.stats.too_long += 1
            self.stats.discarded_bytes += len(self._buf) + len(part)
            self._buf.clear()
            self._skipping = True
            return
        self._buf += part

    def _abandon(self) -> None:
        if not self._skipping:
            self.stats.broken += 1
            self.stats.discarded_bytes += len(self._buf)
        self._buf.clear()
        self._in_sentence = False
        self._skipping = False

    def _finish(self) -> Frame | None:
        raw = bytes(self._buf)
        skipping = self._skipping
        self._buf.clear()
        self._in_sentence = False
        self._skipping = False
        if skipping:
            return None
        text = raw.decode("ascii")  # _STOP let only printable ASCII in
        m = _CHECKSUM.match(text)
        if m is None:
            self.stats.no_checksum += 1
            self.stats.discarded_bytes += len(raw)
            return None
        if checksum(m.group(2)) != int(m.group(3), 16):
            self.stats.bad_checksum += 1
            self.stats.discarded_bytes += len(raw)
            return None
        self.stats.frames += 1
        return Frame(text=text, mono_ns=self._start_mono_ns)


def _find_start(data: bytes, i: int) -> int:
    a, b = data.find(b"$", i), data.find(b"!", i)
    if a < 0:
        return b
    if b < 0:
        return a
    return min(a, b)


def _junk(part: bytes) -> int:
    """Bytes outside a sentence, not counting line ends (a bare CR LF is not junk)."""
    return len(part) - part.count(b"\r") - part.count(b"\n")


# --------------------------------------------------------------------------- parsing


class FieldError(ValueError):
    """A field that is not what NMEA 0183 says it must be; the message quotes it."""


@dataclass(frozen=True, slots=True)
class TimeOfDay:
    """hhmmss[.s…] as received. ``second`` may be 60 (a leap second)."""

    hour: int
    minute: int
    second: int
    nanos: int  # the fraction of the second, in ns

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.hour, self.minute, self.second)

    def __str__(self) -> str:
        frac = f".{self.nanos:09d}".rstrip("0") if self.nanos else ""
        return f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}{frac}"


@dataclass(frozen=True, slots=True)
class Rmc:
    talker: str
    time: TimeOfDay | None
    status: str | None  # "A" valid, "V" void
    date: dt.date | None
    mode: str | None  # NMEA 2.3 mode indicator, None before 2.3


@dataclass(frozen=True, slots=True)
class Gga:
    talker: str
    time: TimeOfDay | None
    quality: int | None
    satellites: int | None
    hdop: float | None


@dataclass(frozen=True, slots=True)
class Gns:
    """NMEA 0183 v3/v4 GNSS fix data: GGA's successor, one mode letter per constellation."""

    talker: str
    time: TimeOfDay | None
    modes: str | None  # e.g. "AANN": GPS autonomous, GLONASS autonomous, Galileo/BeiDou none
    satellites: int | None
    hdop: float | None


@dataclass(frozen=True, slots=True)
class Zda:
    talker: str
    time: TimeOfDay | None
    date: dt.date | None


@dataclass(frozen=True, slots=True)
class Gsa:
    talker: str
    mode: int | None  # 1 no fix, 2 2D, 3 3D
    hdop: float | None


@dataclass(frozen=True, slots=True)
class Malformed:
    """A sentence of a type we use, with at least one field we cannot prove well-formed."""

    talker: str
    sentence_type: str
    reason: str


Sentence = Rmc | Gga | Gns | Zda | Gsa | Malformed

_TIME = re.compile(r"^(\d\d)(\d\d)(\d\d)(?:\.(\d{1,9}))?\Z", re.ASCII)
_DDMMYY = re.compile(r"^(\d\d)(\d\d)(\d\d)\Z", re.ASCII)
_DIGITS = re.compile(r"^\d{1,3}\Z", re.ASCII)
_DECIMAL = re.compile(r"^\d{1,4}(?:\.\d{1,4})?\Z", re.ASCII)
_TWO_DIGITS = re.compile(r"^\d\d\Z", re.ASCII)
_YEAR = re.compile(r"^\d{4}\Z", re.ASCII)
_ADDRESS = re.compile(r"^\$([A-Z]{2})([A-Z]{3}),")

# RMC mode indicator (NMEA 0183 v2.3 §6.3): usable for time when a real fix backs it.
RMC_MODES_VALID = {"A": "autonomous", "D": "differential", "F": "RTK float", "R": "RTK",
                   "P": "precise"}  # fmt: skip
RMC_MODES_INVALID = {"N": "not valid", "E": "estimated (dead reckoning)",
                     "M": "manual input", "S": "simulator"}  # fmt: skip
# GGA fix quality (NMEA 0183 v4.10 GGA field 6).
GGA_QUALITY_VALID = {1: "GPS", 2: "DGPS", 3: "PPS", 4: "RTK", 5: "RTK float"}
GGA_QUALITY_INVALID = {0: "invalid", 6: "estimated (dead reckoning)", 7: "manual input",
                       8: "simulation"}  # fmt: skip


def parse_time(text: str) -> TimeOfDay | None:
    """``hhmmss[.s…]``; empty means "not known yet" (None); anything else malformed raises."""
    if text == "":
        return None
    m = _TIME.match(text)
    if m is None:
        raise FieldError(f"time field malformed: {text!r}")
    hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3))
    frac = m.group(4) or ""
    nanos = int(frac.ljust(9, "0")) if frac else 0
    if hour > 23 or minute > 59 or second > 60:
        raise FieldError(f"time field out of range: {text!r}")
    if second == 60 and (hour, minute) != (23, 59):
        raise FieldError(f"second 60 outside 23:59: {text!r}")
    return TimeOfDay(hour, minute, second, nanos)


def parse_ddmmyy(text: str) -> dt.date | None:
    """RMC's ``ddmmyy``. yy ≥ 80 is 19yy, else 20yy: GPS time began on 1980-01-06."""
    if text == "":
        return None
    m = _DDMMYY.match(text)
    if m is None:
        raise FieldError(f"date field malformed: {text!r}")
    day, month, yy = int(m.group(1)), int(m.group(2)), int(m.group(3))
    year = 1900 + yy if yy >= 80 else 2000 + yy
    return _date(year, month, day, text)


def _date(year: int, month: int, day: int, text: str) -> dt.date:
    try:
        return dt.date(year, month, day)
    except ValueError as e:
        raise FieldError(f"date field out of range: {text!r}") from e


def _opt_int(text: str, what: str, lo: int, hi: int) -> int | None:
    if text == "":
        return None
    if _DIGITS.match(text) is None or not lo <= int(text) <= hi:
        raise FieldError(f"{what} malformed: {text!r}")
    return int(text)


def _opt_decimal(text: str, what: str) -> float | None:
    if text == "":
        return None
    if _DECIMAL.match(text) is None:
        raise FieldError(f"{what} malformed: {text!r}")
    return float(text)


def _field(data: list[str], index: int) -> str:
    return data[index] if index < len(data) else ""


def parse_sentence(text: str) -> Sentence | None:
    """One checksummed sentence → a checked record, or None for types we do not use.

    pynmea2 splits the fields; we check every one we use. Never raises.
    """
    m = _ADDRESS.match(text)
    if m is None:
        return None  # proprietary ($P…), AIS (!…) or a malformed address
    talker, kind = m.group(1), m.group(2)
    if kind not in PARSED_TYPES or talker.startswith("P"):
        return None
    try:
        msg = pynmea2.parse(text, check=True)
        data = [str(x) for x in msg.data]
    except (pynmea2.ParseError, ValueError, TypeError, AttributeError, IndexError) as e:
        return Malformed(talker, kind, f"{kind} not parseable: {e}")
    try:
        return _checked(talker, kind, data)
    except FieldError as e:
        return Malformed(talker, kind, f"{talker}{kind} {e}")


def _checked(talker: str, kind: str, data: list[str]) -> Sentence:
    if kind == "RMC":
        # time, status, lat, N/S, lon, E/W, speed, track, ddmmyy, magvar, E/W, [mode]
        status = _field(data, 1)
        if status not in ("", "A", "V"):
            raise FieldError(f"status field malformed: {status!r}")
        mode = _field(data, 11)
        if mode not in ("", *RMC_MODES_VALID, *RMC_MODES_INVALID):
            raise FieldError(f"mode indicator malformed: {mode!r}")
        return Rmc(
            talker,
            parse_time(_field(data, 0)),
            status or None,
            parse_ddmmyy(_field(data, 8)),
            mode or None,
        )
    if kind == "GGA":
        # time, lat, N/S, lon, E/W, quality, satellites, HDOP, …
        return Gga(
            talker,
            parse_time(_field(data, 0)),
            _opt_int(_field(data, 5), "fix quality", 0, 8),
            _opt_int(_field(data, 6), "satellite count", 0, 255),
            _opt_decimal(_field(data, 7), "HDOP"),
        )
    if kind == "GNS":
        # time, lat, N/S, lon, E/W, mode letters, satellites, HDOP, …
        modes = _field(data, 5)
        if modes and re.match(r"^[ADEFMNPRS]{1,8}\Z", modes) is None:
            raise FieldError(f"mode indicator malformed: {modes!r}")
        return Gns(
            talker,
            parse_time(_field(data, 0)),
            modes or None,
            _opt_int(_field(data, 6), "satellite count", 0, 255),
            _opt_decimal(_field(data, 7), "HDOP"),
        )
    if kind == "ZDA":
        # time, day, month, year (4 digits), zone hours, zone minutes
        day, month, year = _field(data, 1), _field(data, 2), _field(data, 3)
        date: dt.date | None = None
        if day or month or year:
            text = f"{day},{month},{year}"
            if not (_TWO_DIGITS.match(day) and _TWO_DIGITS.match(month)):
                raise FieldError(f"date fields malformed: {text!r}")
            if not _YEAR.match(year):
                raise FieldError(f"year field malformed: {year!r}")
            date = _date(int(year), int(month), int(day), text)
        return Zda(talker, parse_time(_field(data, 0)), date)
    # GSA: selection A/M, mode 1/2/3, 12 satellite ids, PDOP, HDOP, VDOP[, system id]
    return Gsa(
        talker,
        _opt_int(_field(data, 1), "fix mode", 1, 3),
        _opt_decimal(_field(data, 15), "HDOP"),
    )


# --------------------------------------------------------------------------- samples


class Fix(enum.Enum):
    """What the cycle says about the receiver's fix, combined over RMC, GGA and GSA."""

    VALID = "valid"  # at least one indicator says valid and none says otherwise
    NONE = "no fix"  # an indicator says there is no (usable) fix
    UNKNOWN = "unknown"  # nothing in the cycle says (e.g. ZDA only)


@dataclass(frozen=True, slots=True, kw_only=True)
class GpsSample(TimeSample):
    """One receiver cycle: at ``mono_ns`` UTC was ``utc_ns ± error_ns``.

    ``mono_ns`` is the arrival of the chunk holding the ``$`` of the cycle's first timed
    sentence. ``label_utc_ns`` is the instant the cycle labels, as sent (POSIX ns);
    ``utc_ns = label_utc_ns + latency_ns`` so the ensemble can re-calibrate the latency.
    A leap second ``23:59:60`` is labelled as 23:59:59 + 1 s (the POSIX count cannot
    name it), with ``leap_second=True`` and ``leap=Leap.INSERT``.
    """

    label_utc_ns: int
    latency_ns: int
    leap_second: bool = False
    fix: Fix = Fix.UNKNOWN
    fix_detail: str = ""  # e.g. "RMC A, GGA 1 (GPS), GSA 3D"
    satellites: int | None = None
    hdop: float | None = None
    sentences: tuple[str, ...] = ()  # e.g. ("GNRMC", "GNGGA", "GNGSA"), each once

    @property
    def label(self) -> dt.datetime:
        """The labelled instant as an aware UTC datetime (23:59:60 shows as next 00:00:00)."""
        return dt.datetime.fromtimestamp(self.label_utc_ns / NS_PER_S, tz=dt.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class GpsRejection:
    """A cycle whose UTC instant could not be established: not a sample, only a report."""

    source: str
    mono_ns: int
    reason: str
    sentences: tuple[str, ...] = ()


GpsReport = GpsSample | GpsRejection


@dataclass(slots=True)
class _Cycle:
    key: tuple[int, int, int]
    first_time: TimeOfDay
    first_mono_ns: int
    last_mono_ns: int
    sentences: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dates: dict[str, dt.date] = field(default_factory=dict)  # "RMC"/"ZDA" -> date
    rmc_status: set[str] = field(default_factory=set)
    rmc_modes: set[str] = field(default_factory=set)
    gga_quality: set[int] = field(default_factory=set)
    gsa_modes: set[int] = field(default_factory=set)
    gns_modes: set[str] = field(default_factory=set)
    undated: set[str] = field(default_factory=set)  # RMC/ZDA seen with an empty date
    satellites: int | None = None
    hdop: float | None = None


@dataclass(slots=True)
class DecoderStats:
    sentences: int = 0
    samples: int = 0
    trusted: int = 0
    rejections: int = 0


class NmeaDecoder:
    """Bytes in, one report per receiver cycle out. Pure: the caller supplies every instant.

    A cycle is every sentence from the first timed sentence (RMC, GGA, ZDA) labelling a UTC
    second to the first timed sentence labelling another second; untimed GSA joins the
    open cycle. The cycle closes when the next one starts, after ``cycle_quiet_s`` without
    any byte (checked by :meth:`feed` and :meth:`poll`), or on :meth:`flush`.
    """

    def __init__(self, config: GpsConfig) -> None:
        self.config = config
        self.framer = NmeaFramer(config.nmea_line_max_bytes)
        self.stats = DecoderStats()
        self._cycle: _Cycle | None = None
        self._last_rx_ns: int | None = None  # arrival of the last bytes, whatever they were
        self._last_label_ns: int | None = None
        self._latency_ns = round(config.latency_s * NS_PER_S)
        self._error_ns = round(config.uncertainty_s * NS_PER_S)
        self._quiet_ns = round(config.cycle_quiet_s * NS_PER_S)

    def feed(self, data: bytes, mono_ns: int) -> list[GpsReport]:
        """Bytes that arrived at ``mono_ns`` (``CLOCK_MONOTONIC_RAW``)."""
        out = self.poll(mono_ns)
        self._last_rx_ns = mono_ns
        for frame in self.framer.feed(data, mono_ns):
            out.extend(self._sentence(frame))
        return out

    def poll(self, mono_ns: int) -> list[GpsReport]:
        """Close the open cycle if no byte at all arrived for ``cycle_quiet_s``."""
        last = self._last_rx_ns
        if self._cycle is not None and last is not None and mono_ns - last >= self._quiet_ns:
            return self.flush()
        return []

    def flush(self) -> list[GpsReport]:
        """Close the open cycle now (end of a capture, port lost, stopping)."""
        c, self._cycle = self._cycle, None
        return [] if c is None else [self._close(c)]

    def link_lost(self) -> list[GpsReport]:
        """The byte stream broke (port lost, reopened): close the cycle, drop any partial
        sentence, so nothing read before the break is glued to what comes after."""
        self.framer.reset()
        return self.flush()

    def _sentence(self, frame: Frame) -> list[GpsReport]:
        parsed = parse_sentence(frame.text)
        if parsed is None:
            return []
        self.stats.sentences += 1
        name = f"{parsed.talker}{_kind(parsed)}"
        time = getattr(parsed, "time", None)
        out: list[GpsReport] = []
        c = self._cycle
        if isinstance(parsed, Rmc | Gga | Gns | Zda):
            if time is None:
                return [self._reject(frame.mono_ns, _timeless(parsed), (name,))]
            if c is None or c.key != time.key:
                out.extend(self.flush())
                c = self._cycle = _Cycle(time.key, time, frame.mono_ns, frame.mono_ns)
        elif isinstance(parsed, Malformed) and parsed.sentence_type in TIMED_TYPES:
            # We cannot tell which second it labels: it closes nothing and joins nothing.
            return [self._reject(frame.mono_ns, parsed.reason, (name,))]
        if c is None:
            return out  # a GSA before any timed sentence: no cycle to join
        c.last_mono_ns = frame.mono_ns
        c.sentences.append(name)
        _merge(c, parsed)
        return out

    def _reject(self, mono_ns: int, reason: str, sentences: tuple[str, ...]) -> GpsRejection:
        self.stats.rejections += 1
        return GpsRejection(
            source=self.config.name, mono_ns=mono_ns, reason=reason, sentences=sentences
        )

    def _close(self, c: _Cycle) -> GpsReport:
        sentences = tuple(dict.fromkeys(c.sentences))  # each name once, in arrival order
        date = _cycle_date(c)
        if date is None:
            if c.undated:
                empty = " and ".join(sorted(c.undated))
                why = f"no date for {c.first_time} ({empty} date field empty)"
            else:
                why = f"no date for {c.first_time} (no RMC or ZDA in the cycle)"
            extra = c.problems + _fix(c)[2]
            return self._reject(c.first_mono_ns, "; ".join([why, *extra]), sentences)
        t = c.first_time
        leap_second = t.second == 60
        midnight = calendar.timegm(date.timetuple())
        label_s = midnight + t.hour * 3600 + t.minute * 60 + min(t.second, 59)
        label_ns = (label_s + (1 if leap_second else 0)) * NS_PER_S + t.nanos

        reasons = list(c.problems)
        fix, fix_detail, fix_reasons = _fix(c)
        reasons.extend(fix_reasons)
        if len(set(c.dates.values())) > 1:
            reasons.append(
                "dates disagree: " + ", ".join(f"{k} {v}" for k, v in sorted(c.dates.items()))
            )
        floor, ceiling = self.config.date_floor, self.config.date_ceiling
        if date < floor:
            reasons.append(f"date {date} before floor {floor} (week roll-over?)")
        elif date >= ceiling:
            reasons.append(
                f"date {date} not before {ceiling}, 1024 weeks after floor {floor} "
                "(week roll-over?)"
            )
        if leap_second and (date + dt.timedelta(days=1)).day != 1:
            # ITU-R TF.460-6 §2.2: a leap second ends a UTC month, never another day.
            reasons.append(f"second 60 on {date}, not the last day of a month")
        # A label must move forward from the last plausible one. A jump back costs one
        # sample, then the new timeline is followed: judging which timeline is right is the
        # ensemble's job (it has NTP and the RTC), and a receiver must not be locked out
        # forever by one bad label in the future.
        last = self._last_label_ns
        if not reasons:
            self._last_label_ns = label_ns
            if last is not None and label_ns <= last:
                reasons.append(
                    f"label {date} {t} does not move forward from {_fmt_ns(last)} "
                    "(repeated or backwards)"
                )
        trusted = not reasons
        if trusted:
            self.stats.trusted += 1
        self.stats.samples += 1
        return GpsSample(
            source=self.config.name,
            kind=SourceKind.GPS,
            mono_ns=c.first_mono_ns,
            utc_ns=label_ns + self._latency_ns,
            error_ns=self._error_ns,
            trusted=trusted,
            reason="; ".join(reasons),
            leap=Leap.INSERT if leap_second else Leap.NONE,
            label_utc_ns=label_ns,
            latency_ns=self._latency_ns,
            leap_second=leap_second,
            fix=fix,
            fix_detail=fix_detail,
            satellites=c.satellites,
            hdop=c.hdop,
            sentences=sentences,
        )


def _kind(s: Sentence) -> str:
    if isinstance(s, Malformed):
        return s.sentence_type
    return type(s).__name__.upper()


def _timeless(s: Rmc | Gga | Gns | Zda) -> str:
    name = f"{s.talker}{_kind(s)}"
    if isinstance(s, Rmc) and s.status == "V":
        return f"{name} carries no time (status V: receiver has no fix yet)"
    if isinstance(s, Gga) and s.quality == 0:
        return f"{name} carries no time (quality 0: receiver has no fix yet)"
    return f"{name} carries no time"


def _merge(c: _Cycle, s: Sentence) -> None:
    if isinstance(s, Malformed):
        c.problems.append(s.reason)
    elif isinstance(s, Rmc):
        if s.date is not None:
            _add_date(c, "RMC", s.date)
        else:
            c.undated.add("RMC")
        if s.status is not None:
            c.rmc_status.add(s.status)
        if s.mode is not None:
            c.rmc_modes.add(s.mode)
    elif isinstance(s, Gga):
        if s.quality is not None:
            c.gga_quality.add(s.quality)
        if s.satellites is not None:
            c.satellites = s.satellites
        if s.hdop is not None:
            c.hdop = s.hdop
    elif isinstance(s, Gns):
        if s.modes is not None:
            c.gns_modes.add(s.modes)
        if s.satellites is not None:
            c.satellites = s.satellites
        if s.hdop is not None:
            c.hdop = s.hdop
    elif isinstance(s, Zda):
        if s.date is not None:
            _add_date(c, "ZDA", s.date)
        else:
            c.undated.add("ZDA")
    else:
        if s.mode is not None:
            c.gsa_modes.add(s.mode)
        if c.hdop is None and s.hdop is not None:
            c.hdop = s.hdop


def _add_date(c: _Cycle, kind: str, date: dt.date) -> None:
    previous = c.dates.get(kind)
    if previous is not None and previous != date:
        c.problems.append(f"two {kind} in one cycle disagree: {previous}, {date}")
    c.dates[kind] = date


def _cycle_date(c: _Cycle) -> dt.date | None:
    return c.dates.get("RMC") or c.dates.get("ZDA")


def _fix(c: _Cycle) -> tuple[Fix, str, list[str]]:
    """Combine RMC status and mode, GGA quality and GSA mode: any "no" wins."""
    detail: list[str] = []
    bad: list[str] = []
    good = False
    for status in sorted(c.rmc_status):
        detail.append(f"RMC {status}")
        if status == "A":
            good = True
        else:
            bad.append("no fix (RMC status V)")
    for mode in sorted(c.rmc_modes):
        if mode in RMC_MODES_INVALID:
            detail.append(f"RMC mode {mode}")
            what = "no fix" if mode == "N" else f"no usable fix: {RMC_MODES_INVALID[mode]}"
            bad.append(f"{what} (RMC mode {mode})")
    for q in sorted(c.gga_quality):
        if q in GGA_QUALITY_VALID:
            detail.append(f"GGA {q} ({GGA_QUALITY_VALID[q]})")
            good = True
        else:
            detail.append(f"GGA {q}")
            what = "no fix" if q == 0 else f"no usable fix: {GGA_QUALITY_INVALID[q]}"
            bad.append(f"{what} (GGA quality {q})")
    for modes in sorted(c.gns_modes):
        detail.append(f"GNS {modes}")
        if any(m in RMC_MODES_VALID for m in modes):
            good = True  # one constellation with a real fix is a fix
        elif all(m == "N" for m in modes):
            bad.append(f"no fix (GNS mode {modes})")
        else:
            bad.append(f"no usable fix (GNS mode {modes})")
    if c.gsa_modes:
        gsa_mode = max(c.gsa_modes)  # one GSA per constellation: the best tells the fix
        detail.append("GSA no fix" if gsa_mode == 1 else f"GSA {gsa_mode}D")
        if gsa_mode == 1:
            bad.append("no fix (GSA mode 1)")
        else:
            good = True
    if bad:
        return Fix.NONE, ", ".join(detail), bad
    if not good:
        return Fix.UNKNOWN, ", ".join(detail), ["no fix information in this cycle"]
    return Fix.VALID, ", ".join(detail), []


def _fmt_ns(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns // NS_PER_S, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def rfc3339(ns: int) -> str:
    """POSIX ns → RFC 3339 UTC with ``Z`` and only as many fraction digits as needed."""
    seconds, nanos = divmod(ns, NS_PER_S)
    base = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{base}{frac}Z"


def label_rfc3339(sample: GpsSample) -> str:
    """The label as the receiver wrote it, ``…T23:59:60Z`` for a leap second."""
    if not sample.leap_second:
        return rfc3339(sample.label_utc_ns)
    text = rfc3339(sample.label_utc_ns - NS_PER_S)  # 23:59:59[.f]
    return text[:17] + "60" + text[19:]
