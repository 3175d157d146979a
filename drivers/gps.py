"""The GPS receiver on a serial port: a thin, self-healing shell around :mod:`drivers.nmea`.

Public API (the appliance runs :meth:`GpsReceiver.samples` in a thread and hands each
sample to the clock ensemble)::

    from drivers.gps import GpsConfig, GpsReceiver

    receiver = GpsReceiver(GpsConfig(device="/dev/serial/by-id/usb-u-blox…", baudrate=9600))
    stop = threading.Event()
    for sample in receiver.samples(stop):     # blocks; GpsSample, trusted or not
        ensemble.add(sample)
    receiver.stop()                           # from another thread: the loop ends in
                                              # at most ``read_timeout_s``

``reports(stop)`` yields :class:`~drivers.nmea.GpsRejection` as well (cycles whose time
could not be established), for ``horodate gps read``.

The port is opened with pyserial (8N1, ``baudrate``, read timeout ``read_timeout_s``). Each
read returns what has arrived (at most ``read_max_bytes``) and is stamped with
``CLOCK_MONOTONIC_RAW`` as soon as it returns. When the port fails (cable pulled: the read
raises ``SerialException``/``OSError``; the device node vanished) the open cycle is closed,
the partial sentence dropped, and the port reopened with exponential back-off from
``reopen_backoff_min_s`` up to ``reopen_backoff_max_s``, for as long as the process runs.

Capture files (gpsd's regression format, ``../shared/data/nmea/*.log``) go through the same
decoder: :func:`parse_capture` and :func:`capture_reports`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import serial

from drivers.errors import DriverError
from drivers.monotonic import NS_PER_S, mono_ns
from drivers.nmea import (
    GPS_WEEK_WINDOW,
    RELEASE_DATE,
    GpsConfig,
    GpsRejection,
    GpsReport,
    GpsSample,
    NmeaDecoder,
)

__all__ = [
    "GPS_WEEK_WINDOW",
    "RELEASE_DATE",
    "Capture",
    "GpsConfig",
    "GpsReceiver",
    "GpsRejection",
    "GpsReport",
    "GpsSample",
    "SerialPort",
    "capture_floor",
    "capture_reports",
    "config_for_capture",
    "open_serial",
    "parse_capture",
]

log = logging.getLogger(__name__)


class SerialPort(Protocol):
    """What the receiver needs of a pyserial ``Serial``."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def close(self) -> None: ...


def open_serial(config: GpsConfig) -> SerialPort:
    """Open the device 8N1, raw, with a read timeout: every read has a deadline."""
    try:
        port: SerialPort = serial.Serial(
            config.device,
            baudrate=config.baudrate,
            timeout=config.read_timeout_s,
            exclusive=True,
        )
    except (serial.SerialException, OSError, ValueError) as e:
        raise DriverError(f"{config.name}: cannot open {config.device}: {e}") from e
    return port


class GpsReceiver:
    """Reads one receiver, forever, reconnecting; decoding is :class:`NmeaDecoder`'s job."""

    def __init__(
        self,
        config: GpsConfig,
        *,
        clock: Callable[[], int] = mono_ns,
        open_port: Callable[[GpsConfig], SerialPort] = open_serial,
    ) -> None:
        if not config.device:
            raise DriverError(f"{config.name}: no device configured")
        self.config = config
        self.decoder = NmeaDecoder(config)
        self.reopens = 0  # how many times the port was lost and reopened
        self.bytes_read = 0
        self._clock = clock
        self._open_port = open_port
        self._stop = threading.Event()
        # Set while the port is open (pyserial flushes the input queue when it opens).
        self.port_open = threading.Event()
        # The last instant the reading loop came round (each read returns within
        # ``read_timeout_s``, data or not): a loop stuck in a call shows as a stale value.
        self.alive_ns = clock()

    def stop(self) -> None:
        """Ask :meth:`reports`/:meth:`samples` to return (within ``read_timeout_s``)."""
        self._stop.set()

    def samples(self, stop: threading.Event | None = None) -> Iterator[GpsSample]:
        """Every sample, trusted or not, until ``stop`` is set or :meth:`stop` is called."""
        for report in self.reports(stop):
            if isinstance(report, GpsSample):
                yield report
            else:
                log.debug("%s: no sample: %s", self.config.name, report.reason)

    def reports(self, stop: threading.Event | None = None) -> Iterator[GpsReport]:
        """Samples and rejections, as :meth:`samples`."""
        cfg = self.config
        backoff_s = cfg.reopen_backoff_min_s
        lost_since: str | None = None

        def stopping() -> bool:
            return self._stop.is_set() or (stop is not None and stop.is_set())

        def wait(seconds: float) -> None:
            deadline = self._clock() + round(seconds * NS_PER_S)
            while not stopping() and self._clock() < deadline:
                self.alive_ns = self._clock()
                self._stop.wait(min(cfg.read_timeout_s, (deadline - self._clock()) / NS_PER_S))

        while not stopping():
            try:
                port = self._open_port(cfg)
            except DriverError as e:
                if lost_since is None:
                    lost_since = str(e)
                    log.warning("%s; retrying in %s s", e, round(backoff_s, 2))
                else:  # already reported as lost: keep the log readable
                    log.info("%s; retrying in %s s", e, round(backoff_s, 2))
                wait(backoff_s)
                backoff_s = min(backoff_s * 2, cfg.reopen_backoff_max_s)
                continue
            self.port_open.set()
            if lost_since is not None:
                self.reopens += 1
                log.warning("%s: %s is back", cfg.name, cfg.device)
                lost_since = None
            else:
                log.info("%s: reading %s at %d baud", cfg.name, cfg.device, cfg.baudrate)
            try:
                while not stopping():
                    waiting = port.in_waiting
                    data = port.read(max(1, min(waiting, cfg.read_max_bytes)))
                    now = self.alive_ns = self._clock()
                    if data:
                        self.bytes_read += len(data)
                        backoff_s = cfg.reopen_backoff_min_s  # the link works again
                        yield from self.decoder.feed(data, now)
                    else:
                        yield from self.decoder.poll(now)
            except (serial.SerialException, OSError) as e:
                self.port_open.clear()
                lost_since = str(e)
                log.warning(
                    "%s: %s lost (%s); retrying in %s s",
                    cfg.name,
                    cfg.device,
                    e,
                    round(backoff_s, 2),
                )
                yield from self.decoder.link_lost()
                _close(port)
                wait(backoff_s)
                backoff_s = min(backoff_s * 2, cfg.reopen_backoff_max_s)
                continue
            self.port_open.clear()
            _close(port)
        yield from self.decoder.link_lost()


def _close(port: SerialPort) -> None:
    try:
        port.close()
    except (serial.SerialException, OSError) as e:  # already gone: nothing to release
        log.debug("closing a lost port: %s", e)


# --------------------------------------------------------------------------- captures

_HEADER = re.compile(rb"^#\s*([A-Za-z][A-Za-z -]*?)\s*[:=]\s*(.*?)\s*$")
_HEADER_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})")


@dataclass(frozen=True, slots=True)
class Capture:
    """A gpsd-style capture: ``#`` header lines, then the receiver's bytes.

    ``chunks`` are the payload cut as it was written: one line each, or, when the header
    declares a ``Delay-Cookie`` (gpsd's way of marking write boundaries inside a line),
    one piece between cookies each. Line ends are kept.
    """

    header: tuple[tuple[str, str], ...]
    date: dt.date | None  # the header's ``# Date:``, when it parses
    chunks: tuple[bytes, ...]

    @property
    def payload(self) -> bytes:
        return b"".join(self.chunks)


def parse_capture(data: bytes) -> Capture:
    header: list[tuple[str, str]] = []
    payload: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"#"):
            m = _HEADER.match(line)
            if m is not None:
                header.append((m.group(1).decode("ascii"), m.group(2).decode("latin-1")))
        else:
            payload.append(line)
    keys = {k.lower(): v for k, v in header}
    cookie = keys.get("delay-cookie", "").split()
    if cookie:
        payload = [piece for line in payload for piece in line.split(cookie[0].encode()) if piece]
    date = None
    dm = _HEADER_DATE.match(keys.get("date", ""))
    if dm is not None:
        try:
            date = dt.date(int(dm.group(1)), int(dm.group(2)), int(dm.group(3)))
        except ValueError:
            date = None
    return Capture(header=tuple(header), date=date, chunks=tuple(payload))


def capture_floor(capture_date: dt.date) -> dt.date:
    """The date floor for a capture: 512 weeks before its ``# Date:``.

    The accepted window (floor to floor + 1024 weeks) is then centred on the capture date:
    a week roll-over error (exactly 1024 weeks) always falls outside it, while a capture
    recorded years before it was submitted still reads as its receiver said.
    """
    return capture_date - GPS_WEEK_WINDOW / 2


def capture_reports(capture: Capture, config: GpsConfig) -> Iterator[GpsReport]:
    """Decode a capture with the real decoder.

    A capture has no arrival times: each chunk is stamped with the instant its last byte
    would have arrived at ``config.baudrate`` (10 bits a byte, 8N1), starting at 0. So
    ``mono_ns`` in these samples is an offset into the capture, not a clock reading.
    """
    decoder = NmeaDecoder(config)
    ns_per_byte = 10 * NS_PER_S // config.baudrate
    at = 0
    for chunk in capture.chunks:
        at += len(chunk) * ns_per_byte
        yield from decoder.feed(chunk, at)
    yield from decoder.flush()


def config_for_capture(
    capture: Capture, config: GpsConfig, floor: dt.date | None = None
) -> GpsConfig:
    """``config`` with the date floor a capture is judged by: ``floor`` if given, else
    :func:`capture_floor` of the capture's date, else the config's own floor."""
    if floor is not None:
        return replace(config, date_floor=floor)
    if capture.date is not None:
        return replace(config, date_floor=capture_floor(capture.date))
    return config
