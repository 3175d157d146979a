"""``horodate gps read DEVICE_OR_CAPTURE``: what the GPS driver would hand the ensemble.

A character device (a serial port, a pty) is read live through :class:`GpsReceiver` until
Ctrl-C, ``--seconds`` or ``--count``; a regular file is read as a gpsd-style capture through
the same decoder. One line per receiver cycle: the labelled UTC, the fix, satellites, HDOP,
and trusted or why not. ``--json``: one JSON object per line.

Date floor: ``--floor`` if given; else, for a capture with a ``# Date:`` header, 512 weeks
before that date (see :func:`drivers.gps.capture_floor`); else the release date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import stat
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

from drivers.errors import DriverError
from drivers.gps import (
    GpsConfig,
    GpsReceiver,
    GpsRejection,
    GpsReport,
    GpsSample,
    capture_reports,
    config_for_capture,
    parse_capture,
)
from drivers.monotonic import NS_PER_S
from drivers.nmea import label_rfc3339

CAPTURE_MAX_BYTES = 64 * 1024 * 1024  # a capture larger than this is refused


def register(subparsers: Any) -> None:
    gps = subparsers.add_parser("gps", help="GPS receiver tools")
    gps_sub = gps.add_subparsers(dest="gps_command", metavar="SUBCOMMAND", required=True)
    read = gps_sub.add_parser(
        "read",
        help="read NMEA from a serial device or a capture file and print each sample",
        description="Read NMEA 0183 from a serial device or a capture file through the real "
        "GPS driver and print each sample it would hand the clock ensemble.",
    )
    read.add_argument("source", metavar="DEVICE_OR_CAPTURE")
    read.add_argument("--json", action="store_true", help="one JSON object per line")
    read.add_argument("--floor", type=_date, help="refuse dates before YYYY-MM-DD")
    read.add_argument("--baudrate", type=int, default=9600, help="serial speed (default 9600)")
    read.add_argument("--seconds", type=float, help="devices: stop after this long")
    read.add_argument("--count", type=int, help="devices: stop after this many reports")
    read.set_defaults(func=run_read)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from e


def run_read(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        return _run_read(args, out or sys.stdout)
    except BrokenPipeError:  # `horodate gps read … | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run_read(args: argparse.Namespace, out: TextIO) -> int:
    try:
        mode = os.stat(args.source).st_mode
    except OSError as e:
        print(f"horodate gps read: {args.source}: {e.strerror}", file=sys.stderr)
        return 1
    printer = _Printer(out, args.json)
    if stat.S_ISCHR(mode):
        config = GpsConfig(device=args.source, baudrate=args.baudrate)
        if args.floor is not None:
            config = GpsConfig(device=args.source, baudrate=args.baudrate, date_floor=args.floor)
        return _read_device(config, args, printer)
    if not stat.S_ISREG(mode):
        print(f"horodate gps read: {args.source}: not a device nor a file", file=sys.stderr)
        return 1
    try:
        with open(args.source, "rb") as f:
            data = f.read(CAPTURE_MAX_BYTES + 1)
    except OSError as e:
        print(f"horodate gps read: {args.source}: {e.strerror}", file=sys.stderr)
        return 1
    if len(data) > CAPTURE_MAX_BYTES:
        print(f"horodate gps read: {args.source}: larger than 64 MiB", file=sys.stderr)
        return 1
    capture = parse_capture(data)
    config = config_for_capture(capture, GpsConfig(baudrate=args.baudrate), args.floor)
    if not args.json:
        when = f"capture dated {capture.date}" if capture.date else "capture without # Date:"
        print(
            f"# {args.source}: {when}; dates accepted from {config.date_floor} "
            f"to {config.date_ceiling - dt.timedelta(days=1)}",
            file=out,
        )
    printer.print_all(capture_reports(capture, config))
    printer.summary()
    return 0


def _read_device(config: GpsConfig, args: argparse.Namespace, printer: _Printer) -> int:
    stop = threading.Event()
    timer = None
    if args.seconds is not None:
        timer = threading.Timer(args.seconds, stop.set)
        timer.daemon = True
        timer.start()
    try:
        receiver = GpsReceiver(config)
        for n, report in enumerate(receiver.reports(stop), start=1):
            printer.print(report)
            if args.count is not None and n >= args.count:
                break
    except DriverError as e:
        print(f"horodate gps read: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if timer is not None:
            timer.cancel()
    printer.summary()
    return 0


class _Printer:
    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.samples = self.trusted = self.rejected = 0
        self._header_done = False

    def print_all(self, reports: Iterable[GpsReport]) -> None:
        for report in reports:
            self.print(report)

    def print(self, report: GpsReport) -> None:
        if isinstance(report, GpsSample):
            self.samples += 1
            self.trusted += report.trusted
        else:
            self.rejected += 1
        if self.as_json:
            print(json.dumps(to_json(report)), file=self.out, flush=True)
            return
        if not self._header_done:
            print(
                f"{'UTC (label)':<26} {'fix':<8} {'sats':>4} {'hdop':>5}  "
                f"{'sentences':<18} verdict",
                file=self.out,
            )
            self._header_done = True
        print(human(report), file=self.out, flush=True)

    def summary(self) -> None:
        if not self.as_json:
            print(
                f"# {self.samples} samples, {self.trusted} trusted, "
                f"{self.rejected} cycles without a usable time",
                file=self.out,
            )


def to_json(report: GpsReport) -> dict[str, Any]:
    if isinstance(report, GpsRejection):
        return {
            "utc": None,
            "trusted": False,
            "sample": False,
            "reason": report.reason,
            "source": report.source,
            "sentences": list(report.sentences),
        }
    return {
        "utc": label_rfc3339(report),
        "trusted": report.trusted,
        "sample": True,
        "reason": report.reason,
        "source": report.source,
        "fix": report.fix.value,
        "fix_detail": report.fix_detail,
        "satellites": report.satellites,
        "hdop": report.hdop,
        "sentences": list(report.sentences),
        "leap_second": report.leap_second,
        "mono_ns": report.mono_ns,
        "utc_ns": report.utc_ns,
        "error_s": report.error_ns / NS_PER_S,
        "latency_s": report.latency_ns / NS_PER_S,
    }


def _types(sentences: tuple[str, ...]) -> str:
    return ",".join(dict.fromkeys(s[2:] for s in sentences))


def human(report: GpsReport) -> str:
    if isinstance(report, GpsRejection):
        return f"{'-':<26} {'':<8} {'':>4} {'':>5}  {_types(report.sentences):<18} " + (
            f"no sample: {report.reason}"
        )
    sats = "" if report.satellites is None else str(report.satellites)
    hdop = "" if report.hdop is None else f"{report.hdop:.1f}"
    verdict = "trusted" if report.trusted else f"untrusted: {report.reason}"
    return (
        f"{label_rfc3339(report):<26} {report.fix.value:<8} {sats:>4} {hdop:>5}  "
        f"{_types(report.sentences):<18} {verdict}"
    )
