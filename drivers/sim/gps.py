"""A simulated GPS receiver that writes NMEA 0183 to a pseudo-terminal.

The real GPS driver opens :attr:`SimGps.device` with pyserial exactly as it would open
``/dev/serial/by-id/usb-u-blox…``: the device is a symlink (in a private temp dir) to the
slave side of a pty, and this receiver writes raw bytes on the master side. Nothing in
between alters them: the slave is in raw mode.

Truth is the host's real clock (:func:`drivers.monotonic.realtime_ns`). The receiver's own
clock is ``truth + offset``, where ``offset`` comes from the current
:class:`~drivers.sim.faults.GpsFaults` (``offset_s`` plus ``drift_ppm`` accumulated since the
fault set was applied). Once per second of the receiver's clock it writes a cycle — RMC,
GGA, GSA, ZDA — labelled with second ``L``, and it starts writing at the instant its clock
crosses ``L + latency``. So a reader that stamps the arrival of label ``L`` sees
``label − arrival_truth = offset − latency``: a consistent offset, and an output latency of
``latency_s ± jitter_s`` (uniformly random, clamped to [0, 0.95] s), as real receivers show.

Faults: ``offset_s``/``drift_ppm`` shift the labels; ``fix=False`` keeps sending time
without a position (RMC status V, GGA quality 0, GSA mode 1, no satellites), as receivers
do; ``silent`` writes nothing; ``garbage`` interleaves binary noise and broken sentences
with the good ones (each good sentence still arrives whole, on its own line);
``latency_s`` replaces the receiver's base latency (a latency jump; the jitter remains).

:meth:`SimGps.unplug` and :meth:`SimGps.replug` simulate the cable being pulled and put
back: the pty is closed (readers get EOF/EIO, the device path disappears) and a new one is
opened behind the same path.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import fcntl
import logging
import os
import random
import select
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from drivers.errors import DriverError
from drivers.monotonic import NS_PER_S, mono_ns, realtime_ns
from drivers.sim.faults import GpsFaults
from drivers.sim.lifecycle import StartStop

log = logging.getLogger(__name__)

NMEA_SENTENCE_MAX_BYTES = 82  # NMEA 0183 §5.3: "$" to CR LF inclusive, at most 82 characters
LATENCY_MAX_S = 0.95  # a cycle must start within its own second
POLL_MAX_S = 0.1  # the writer thread re-reads the faults at least this often
BITS_PER_BYTE = 10  # 8N1 on a UART: start bit, 8 data bits, stop bit

FaultSource = Callable[[], tuple[GpsFaults, int]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """Where the simulated antenna is (WGS 84)."""

    lat_deg: float
    lon_deg: float
    alt_m: float  # above mean sea level
    geoid_sep_m: float  # geoid above the WGS 84 ellipsoid


# A rooftop antenna on a datacenter in the Paris region.
DEFAULT_POSITION = Position(lat_deg=48.835_412, lon_deg=2.359_871, alt_m=38.4, geoid_sep_m=46.2)
SATELLITES_IN_USE = (2, 5, 12, 15, 18, 24, 25, 29)


@dataclass(frozen=True, slots=True)
class UtcLabel:
    """A broken-down UTC label as a receiver prints it; ``second`` may be 60 (leap second)."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int
    centis: int = 0

    def __post_init__(self) -> None:
        if not (1 <= self.month <= 12 and 1 <= self.day <= 31 and 0 <= self.hour <= 23):
            raise ValueError(f"not a UTC date and hour: {self}")
        if not (0 <= self.minute <= 59 and 0 <= self.second <= 60 and 0 <= self.centis <= 99):
            raise ValueError(f"not a UTC minute and second: {self}")

    @classmethod
    def from_posix_s(cls, posix_s: int) -> UtcLabel:
        t = time.gmtime(posix_s)
        return cls(t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)

    def to_posix_s(self) -> int:
        """POSIX seconds of the label (a leap second ``:60`` maps onto the next second)."""
        return calendar.timegm(
            (self.year, self.month, self.day, self.hour, self.minute, self.second, 0, 0, 0)
        )

    @property
    def hhmmss(self) -> str:
        return f"{self.hour:02d}{self.minute:02d}{self.second:02d}.{self.centis:02d}"

    @property
    def ddmmyy(self) -> str:
        return f"{self.day:02d}{self.month:02d}{self.year % 100:02d}"


def checksum(body: str) -> str:
    """NMEA 0183 §5.3.1: XOR of every character between ``$`` and ``*``, two hex digits."""
    value = 0
    for byte in body.encode("ascii"):
        value ^= byte
    return f"{value:02X}"


def sentence(body: str) -> bytes:
    """``$body*HH`` CR LF, the framing of NMEA 0183 §5.3."""
    return f"${body}*{checksum(body)}\r\n".encode("ascii")


def _lat(deg: float) -> tuple[str, str]:
    hemi = "N" if deg >= 0 else "S"
    deg = abs(deg)
    whole = int(deg)
    return f"{whole:02d}{(deg - whole) * 60:08.5f}", hemi


def _lon(deg: float) -> tuple[str, str]:
    hemi = "E" if deg >= 0 else "W"
    deg = abs(deg)
    whole = int(deg)
    return f"{whole:03d}{(deg - whole) * 60:08.5f}", hemi


def nmea_cycle(
    label: UtcLabel,
    *,
    fix: bool = True,
    talker: str = "GP",
    position: Position = DEFAULT_POSITION,
    satellites: tuple[int, ...] = SATELLITES_IN_USE,
) -> list[bytes]:
    """One second's output of a u-blox-like receiver: RMC, GGA, GSA, ZDA (NMEA 0183 v2.3)."""
    t = label.hhmmss
    zda = f"{talker}ZDA,{t},{label.day:02d},{label.month:02d},{label.year:04d},00,00"
    if not fix:
        # What receivers send from their own clock while they have no fix: time, no position.
        return [
            sentence(f"{talker}RMC,{t},V,,,,,,,{label.ddmmyy},,,N"),
            sentence(f"{talker}GGA,{t},,,,,0,00,99.99,,,,,,"),
            sentence(f"{talker}GSA,A,1,{',' * 11},99.99,99.99,99.99"),
            sentence(zda),
        ]
    lat, ns = _lat(position.lat_deg)
    lon, ew = _lon(position.lon_deg)
    prns = [f"{p:02d}" for p in satellites[:12]]
    prn_fields = ",".join(prns + [""] * (12 - len(prns)))
    return [
        sentence(f"{talker}RMC,{t},A,{lat},{ns},{lon},{ew},0.012,,{label.ddmmyy},,,A"),
        sentence(
            f"{talker}GGA,{t},{lat},{ns},{lon},{ew},1,{len(prns):02d},0.92,"
            f"{position.alt_m:.1f},M,{position.geoid_sep_m:.1f},M,,"
        ),
        sentence(f"{talker}GSA,A,3,{prn_fields},1.61,0.92,1.32"),
        sentence(zda),
    ]


# Characters a garbled byte becomes: never a framing character ($ * CR LF), so a garbled
# sentence stays one line that fails its checksum.
_GARBLE_CHARS = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def _junk(rng: random.Random, good: bytes) -> bytes:
    """One piece of line noise or one broken sentence, always ending in CR LF."""
    kind = rng.randrange(5)
    if not (good.startswith(b"$") and b"*" in good and good.endswith(b"\r\n")):
        kind = 0  # not a well-formed sentence to break: plain noise instead
    body = good[1 : good.index(b"*")] if kind else b""
    if kind == 0:  # binary noise, as a UART with a bad baud rate or a loose wire produces
        return rng.randbytes(rng.randint(1, 24)) + b"\r\n"
    if kind == 1:  # a wrong checksum
        wrong = (int(good[-4:-2], 16) ^ rng.randint(1, 255)) & 0xFF
        return b"$" + body + b"*" + f"{wrong:02X}".encode() + b"\r\n"
    if kind == 2:  # cut short: no checksum at all
        return good[: rng.randint(2, max(2, len(body) - 1))] + b"\r\n"
    if kind == 3:  # one character garbled in transit, checksum left as sent (so it mismatches)
        i = rng.randrange(1, len(body))
        garbled = rng.choice([c for c in _GARBLE_CHARS if c != body[i]])
        return b"$" + body[:i] + bytes([garbled]) + body[i + 1 :] + good[good.index(b"*") :]
    # an over-long line, longer than NMEA 0183 allows
    return b"$" + bytes(rng.randint(0x20, 0x7E) for _ in range(rng.randint(90, 200))) + b"\r\n"


def with_garbage(lines: list[bytes], rng: random.Random) -> list[bytes]:
    """Interleave noise and broken sentences with ``lines``; at least one piece per cycle."""
    gaps = [rng.random() < 0.5 for _ in range(len(lines) + 1)]
    if not any(gaps):
        gaps[rng.randrange(len(gaps))] = True
    out: list[bytes] = []
    for i, good in enumerate([*lines, None]):
        if gaps[i]:
            out.append(_junk(rng, lines[min(i, len(lines) - 1)]))
        if good is not None:
            out.append(good)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SimGpsStats:
    cycles: int  # cycles the receiver produced (silent ones included)
    bytes_written: int  # bytes that reached the pty
    bytes_dropped: int  # bytes lost: unplugged, or nobody reading and the buffer full


class SimGps(StartStop):
    """A receiver on a pseudo-terminal. See the module docstring for what it writes when.

    ``faults`` returns the current GPS faults and the ``mono_ns`` instant they were applied
    (``drift_ppm`` accumulates from then). ``baud`` paces the bytes as a UART at that rate
    would (``None``: as fast as the pty takes them). If nobody reads, at most
    ``max_backlog_bytes`` wait in the pty; older output is dropped, as a real UART nobody
    listens to drops it, and counted.
    """

    def __init__(
        self,
        faults: FaultSource,
        *,
        latency_s: float = 0.25,
        jitter_s: float = 0.05,
        talker: str = "GP",
        baud: int | None = 9600,
        position: Position = DEFAULT_POSITION,
        seed: int | None = None,
        max_backlog_bytes: int = 2048,
        write_timeout_s: float = 0.05,
        device_name: str = "gps0",
    ) -> None:
        if not 0.0 <= latency_s <= LATENCY_MAX_S:
            raise ValueError(f"latency_s must be in [0, {LATENCY_MAX_S}], got {latency_s}")
        if not 0.0 <= jitter_s <= LATENCY_MAX_S:
            raise ValueError(f"jitter_s must be in [0, {LATENCY_MAX_S}], got {jitter_s}")
        if len(talker) != 2 or not talker.isalpha() or not talker.isupper():
            raise ValueError(f"talker must be two capital letters such as GP or GN, got {talker!r}")
        if baud is not None and baud <= 0:
            raise ValueError(f"baud must be positive, got {baud}")
        if max_backlog_bytes <= 0 or write_timeout_s < 0:
            raise ValueError("max_backlog_bytes must be > 0 and write_timeout_s >= 0")
        if not device_name or "/" in device_name:
            raise ValueError(f"device_name must be a plain file name, got {device_name!r}")
        self._faults = faults
        self._latency_s = latency_s
        self._jitter_s = jitter_s
        self._talker = talker
        self._baud = baud
        self._position = position
        self._rng = random.Random(seed)
        self._max_backlog_bytes = max_backlog_bytes
        self._write_timeout_s = write_timeout_s

        self._dir = tempfile.mkdtemp(prefix="horodate-simgps-")
        self._device = os.path.join(self._dir, device_name)
        self._fd_lock = threading.Lock()  # guards the fds against unplug/stop while writing
        self._master: int | None = None
        self._slave: int | None = None
        self._pty_path: str | None = None
        self._pending: list[bytes] | None = None  # emit_once() output for the next cycle
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._cycles = 0
        self._bytes_written = 0
        self._bytes_dropped = 0
        try:
            self._plug()
        except DriverError:
            os.rmdir(self._dir)
            raise

    # -- the cable ---------------------------------------------------------------------------

    @property
    def device(self) -> str:
        """The stable path a driver opens (a symlink to the current pty slave)."""
        return self._device

    @property
    def pty_path(self) -> str | None:
        """The current ``/dev/pts/N``, or None while unplugged."""
        return self._pty_path

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def _plug(self) -> None:
        try:
            master, slave = os.openpty()
        except OSError as e:
            raise DriverError(f"sim gps: cannot open a pseudo-terminal: {e}") from e
        try:
            tty.setraw(slave)  # raw: the line discipline passes bytes through untouched
            os.set_blocking(master, False)
            path = os.ttyname(slave)
            tmp = self._device + ".new"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(path, tmp)
            os.replace(tmp, self._device)  # atomic, as udev swaps a by-id link
        except OSError as e:
            os.close(master)
            os.close(slave)
            raise DriverError(f"sim gps: cannot set up the pseudo-terminal: {e}") from e
        with self._fd_lock:
            self._master, self._slave, self._pty_path = master, slave, path
        log.info("sim gps: plugged in at %s -> %s", self._device, path)

    def unplug(self) -> None:
        """Pull the cable: close the pty (readers see EOF/EIO) and remove the device path."""
        with self._fd_lock:
            master, slave = self._master, self._slave
            self._master = self._slave = self._pty_path = None
        if master is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._device)
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
        log.info("sim gps: unplugged (%s is gone)", self._device)

    def replug(self) -> None:
        """Put the cable back: a new pty behind the same :attr:`device` path."""
        if self._closed:
            raise DriverError("sim gps: closed")
        if self.plugged:
            return
        self._plug()

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            raise DriverError("sim gps: closed")
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-gps", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop writing, join the thread within ``timeout_s``, close the pty and the path."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.error("sim gps: writer thread did not stop within %.1f s", timeout_s)
        self.unplug()
        self._closed = True
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)

    @property
    def stats(self) -> SimGpsStats:
        return SimGpsStats(
            cycles=self._cycles,
            bytes_written=self._bytes_written,
            bytes_dropped=self._bytes_dropped,
        )

    def emit_once(self, lines: Iterable[bytes]) -> None:
        """Send ``lines`` instead of the next generated cycle, at its instant (e.g. a leap
        second: ``emit_once(nmea_cycle(UtcLabel(2016, 12, 31, 23, 59, 60)))``).

        Faults still apply: nothing is sent while silent, garbage is mixed in.
        """
        with self._pending_lock:
            self._pending = [bytes(line) for line in lines]

    # -- the receiver ------------------------------------------------------------------------

    def _draw_latency_ns(self, faults: GpsFaults) -> int:
        base = self._latency_s if faults.latency_s is None else faults.latency_s
        lat = self._rng.uniform(base - self._jitter_s, base + self._jitter_s)
        return round(min(max(lat, 0.0), LATENCY_MAX_S) * NS_PER_S)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a dying writer must say why; the pty simply falls quiet
            log.exception("sim gps: writer thread failed")

    def _loop(self) -> None:
        faults, applied = self._faults()
        lat_ns = self._draw_latency_ns(faults)
        receiver_ns = realtime_ns() + round(faults.offset_at(mono_ns() - applied) * NS_PER_S)
        last_label = (receiver_ns - lat_ns) // NS_PER_S  # first cycle: the next second
        key = (faults, applied)
        while not self._stop.is_set():
            faults, applied = self._faults()
            now = mono_ns()
            offset_ns = round(faults.offset_at(now - applied) * NS_PER_S)
            receiver_ns = realtime_ns() + offset_ns
            if (faults, applied) != key:
                old_faults, old_applied = key
                key = (faults, applied)
                stepped = abs(offset_ns - old_faults.offset_at(now - old_applied) * NS_PER_S) > 1e6
                if faults.latency_s != old_faults.latency_s:
                    lat_ns = self._draw_latency_ns(faults)
                    stepped = True
                due = (receiver_ns - lat_ns) // NS_PER_S
                # After a step forward or far back, resume on the new timescale at the next
                # second rather than emit now, out of phase. A small step back waits for the
                # clock. Faults that leave the clock alone (fix, garbage…) change nothing here.
                if stepped and (due > last_label or due < last_label - 1):
                    last_label = due
                    log.info("sim gps: receiver clock stepped, next label %d", due + 1)
            due = (receiver_ns - lat_ns) // NS_PER_S
            if due > last_label:
                self._cycle(due, faults)
                last_label = due
                lat_ns = self._draw_latency_ns(faults)
                continue
            if due < last_label - 1:  # the host clock was stepped back
                last_label = due
            wait_ns = (last_label + 1) * NS_PER_S + lat_ns - receiver_ns
            self._stop.wait(min(max(wait_ns / NS_PER_S, 0.0005), POLL_MAX_S))

    def _cycle(self, label_s: int, faults: GpsFaults) -> None:
        self._cycles += 1
        with self._pending_lock:
            lines, self._pending = self._pending, None
        if faults.silent:
            return
        if lines is None:
            lines = nmea_cycle(
                UtcLabel.from_posix_s(label_s),
                fix=faults.fix,
                talker=self._talker,
                position=self._position,
            )
        if faults.garbage:
            lines = with_garbage(lines, self._rng)
        self._trim_backlog()
        for line in lines:
            if self._stop.is_set():
                return
            self._write(line)
            if self._baud is not None:  # the UART takes this long to shift the bytes out
                self._stop.wait(len(line) * BITS_PER_BYTE / self._baud)

    def _trim_backlog(self) -> None:
        """Drop what nobody read: a UART with no listener does not keep old output."""
        with self._fd_lock:
            if self._slave is None:
                return
            try:
                queued = int.from_bytes(
                    fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0"), "little"
                )
                if queued > self._max_backlog_bytes:
                    termios.tcflush(self._slave, termios.TCIFLUSH)
                    self._bytes_dropped += queued
                    log.debug("sim gps: nobody reading, dropped %d queued bytes", queued)
            except (OSError, termios.error) as e:
                log.warning("sim gps: cannot check the pty backlog: %s", e)

    def _write(self, data: bytes) -> None:
        deadline = time.monotonic() + self._write_timeout_s
        view = memoryview(data)
        while view:
            with self._fd_lock:
                master = self._master
                if master is None:
                    break
                try:
                    n = os.write(master, view)
                except BlockingIOError:
                    n = 0
                except OSError as e:
                    if e.errno not in (errno.EIO, errno.EAGAIN):
                        raise
                    n = 0
            self._bytes_written += n
            view = view[n:]
            if not view:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with self._fd_lock:
                master = self._master
            if master is None:
                break
            try:
                select.select([], [master], [], min(remaining, POLL_MAX_S))
            except (OSError, ValueError):
                break
        self._bytes_dropped += len(view)
