"""Every real capture: through a real pty into the real reader, and checked against gpsd.

gpsd's decoding (the ``.chk`` beside each capture) is the reference. A time the driver
trusts must be one gpsd decoded, or one gpsd decoded 1024 weeks away (gpsd "repairs" GPS
week roll-overs, not always rightly: rst39 comes out in 2033, tcp-torture in 2027), or one
the receiver sent with a valid fix on a day gpsd or the capture's ``# Date:`` names.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

from drivers.gps import (
    GpsConfig,
    GpsReceiver,
    GpsSample,
    capture_reports,
    config_for_capture,
)
from tests.gps.support import Pty, capture_paths, gpsd_reference, load

CAPTURES = capture_paths()


def decoded(path: Path) -> list[GpsSample]:
    capture = load(path)
    config = config_for_capture(capture, GpsConfig())
    return [r for r in capture_reports(capture, config) if isinstance(r, GpsSample)]


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_every_trusted_time_is_vouched_for_by_gpsd_or_the_receiver(path: Path) -> None:
    capture = load(path)
    reference = gpsd_reference(path)
    unexplained = [
        s.label.isoformat()
        for s in decoded(path)
        if s.trusted and reference.explains(s.label_utc_ns, capture.date) is None
    ]
    assert not unexplained, f"{path.name}: trusted times gpsd never saw: {unexplained}"


def test_the_captures_yield_many_trusted_samples() -> None:
    # Guards the test above against passing on a driver that trusts nothing.
    trusted = sum(s.trusted for p in CAPTURES for s in decoded(p))
    assert trusted > 1000


def test_week_rollover_captures_are_refused() -> None:
    by_name = {p.name: p for p in CAPTURES}
    for name in ("april6_2019.log", "gp-320fw-2019-04-07-coldboot.log"):
        samples = decoded(by_name[name])
        assert samples and not any(s.trusted and s.label.year == 1999 for s in samples), name


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_capture_through_a_real_pty_into_the_real_reader(path: Path) -> None:
    capture = load(path)
    pty = Pty()
    config = config_for_capture(capture, GpsConfig(device=pty.path, read_timeout_s=0.02))
    receiver = GpsReceiver(config)
    reports: queue.Queue[object] = queue.Queue()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for report in receiver.reports():
                reports.put(report)
        except BaseException as e:  # the test reports it below
            errors.append(e)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    try:
        assert receiver.port_open.wait(5), "the reader never opened the pty"
        pty.write_all(capture.payload)
        deadline = time.monotonic() + 10
        while receiver.bytes_read < len(capture.payload) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert receiver.bytes_read == len(capture.payload), "the reader stopped reading"
    finally:
        receiver.stop()
        reader.join(5)
        pty.close()
    assert not reader.is_alive()
    assert not errors, errors
    got = []
    while not reports.empty():
        r = reports.get()
        if isinstance(r, GpsSample):
            got.append((r.label_utc_ns, r.trusted, r.reason))
    want = [(s.label_utc_ns, s.trusted, s.reason) for s in decoded(path)]
    assert got == want
