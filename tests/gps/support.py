"""Shared helpers of the GPS tests: where the captures are, gpsd's reference, NMEA builders."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import threading
import tty
from dataclasses import dataclass
from pathlib import Path

from drivers.gps import GPS_WEEK_WINDOW, Capture, parse_capture
from drivers.nmea import checksum

NMEA_DIR = Path(__file__).resolve().parents[1] / "data" / "nmea"


def capture_paths() -> list[Path]:
    paths = sorted(NMEA_DIR.glob("*.log"))
    # Fail loudly, never skip: the captures are part of the test data.
    assert paths, f"no NMEA captures found in {NMEA_DIR.resolve()} (tests/data/nmea)"
    return paths


def load(path: Path) -> Capture:
    return parse_capture(path.read_bytes())


@dataclass(frozen=True)
class GpsdReference:
    """What gpsd decoded from a capture (its ``.chk`` file): TPV times, to the second."""

    seconds: frozenset[int]
    days: frozenset[dt.date]

    def explains(self, label_utc_ns: int, header_date: dt.date | None) -> str | None:
        """Why a trusted label is acceptable, or None when nothing explains it."""
        second = label_utc_ns // 1_000_000_000
        week_s = int(GPS_WEEK_WINDOW.total_seconds())
        if second in self.seconds:
            return "gpsd decoded this second"
        if second + week_s in self.seconds or second - week_s in self.seconds:
            return "gpsd decoded it 1024 weeks away (its roll-over repair)"
        day = dt.datetime.fromtimestamp(second, tz=dt.UTC).date()
        if day in self.days:
            return "valid fix on a day gpsd decoded"
        if day == header_date:
            return "valid fix on the capture's # Date:"
        return None


def gpsd_reference(path: Path) -> GpsdReference:
    chk = path.with_name(path.name + ".chk")
    assert chk.exists(), f"missing gpsd reference {chk}"
    seconds: set[int] = set()
    for line in chk.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            continue
        if report.get("class") == "TPV" and "time" in report:
            when = dt.datetime.fromisoformat(report["time"].replace("Z", "+00:00"))
            seconds.add(int(when.timestamp()))
    days = {dt.datetime.fromtimestamp(s, tz=dt.UTC).date() for s in seconds}
    return GpsdReference(frozenset(seconds), frozenset(days))


def sentence(body: str) -> bytes:
    """``$body*HH\\r\\n`` with the right checksum."""
    return f"${body}*{checksum(body):02X}\r\n".encode()


def rmc(time: str = "123456.00", date: str = "141126", status: str = "A", mode: str = "A") -> bytes:
    return sentence(f"GPRMC,{time},{status},4807.038,N,01131.000,E,0.1,0.0,{date},,,{mode}")


def gga(time: str = "123456.00", quality: str = "1", sats: str = "08", hdop: str = "0.9") -> bytes:
    return sentence(f"GPGGA,{time},4807.038,N,01131.000,E,{quality},{sats},{hdop},545.4,M,46.9,M,,")


def gsa(mode: str = "3") -> bytes:
    return sentence(f"GPGSA,A,{mode},04,05,,09,12,,,24,,,,,2.5,1.3,2.1")


def zda(time: str = "123456.00", day: str = "14", month: str = "11", year: str = "2026") -> bytes:
    return sentence(f"GPZDA,{time},{day},{month},{year},00,00")


def cycle(time: str = "123456.00", date: str = "141126") -> bytes:
    return rmc(time, date) + gga(time) + gsa()


class Pty:
    """A pseudo-terminal pair in raw mode; the test writes the receiver's side (master)."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF translation: bytes arrive as written
        self.path = os.ttyname(self.slave)

    def write_all(self, data: bytes, timeout_s: float = 10.0) -> None:
        """Write in a thread (a pty holds only a few KiB until the reader drains it)."""
        done = threading.Event()

        def run() -> None:
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.master, view) :]
            except OSError:
                pass
            done.set()

        threading.Thread(target=run, daemon=True).start()
        assert done.wait(timeout_s), "the reader did not drain the pty in time"

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def first_match(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    assert m is not None, f"{pattern!r} not in {text!r}"
    return m.group(0)
