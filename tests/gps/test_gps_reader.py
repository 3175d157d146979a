"""The serial reader on a real pty: cable pulled and re-plugged, stop, missing device."""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import threading
import time
from pathlib import Path

import pytest

from drivers.errors import DriverError
from drivers.gps import GpsConfig, GpsReceiver, GpsSample
from tests.gps.support import Pty, cycle
from tests.waiting import wait_until


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def fast_config(device: str) -> GpsConfig:
    return GpsConfig(
        device=device,
        read_timeout_s=0.02,
        cycle_quiet_s=0.05,
        reopen_backoff_min_s=0.05,
        reopen_backoff_max_s=0.2,
        date_floor=dt.date(2026, 1, 1),
    )


class Running:
    """The receiver in a thread, its samples in a queue."""

    def __init__(self, receiver: GpsReceiver) -> None:
        self.receiver = receiver
        self.samples: queue.Queue[GpsSample] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for s in self.receiver.samples():
            self.samples.put(s)

    def take(self, n: int, timeout_s: float = 5.0) -> list[GpsSample]:
        deadline = time.monotonic() + timeout_s
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(out)} of {n} samples in {timeout_s} s"
            try:
                out.append(self.samples.get(timeout=left))
            except queue.Empty:
                continue
        return out

    def stop(self) -> None:
        self.receiver.stop()
        self.thread.join(5)
        assert not self.thread.is_alive(), "the reader did not stop within its deadline"


def test_cable_pulled_and_replugged_behind_a_symlink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.gps")
    link = tmp_path / "gps-by-id"  # as /dev/serial/by-id/… is a symlink
    first = Pty()
    link.symlink_to(first.path)
    running = Running(GpsReceiver(fast_config(str(link))))
    try:
        assert running.receiver.port_open.wait(5)
        first.write_all(cycle("120000.00", "141126") + cycle("120001.00", "141126"))
        labels = [s.label.second for s in running.take(2)]
        assert labels == [0, 1]

        first.close()  # cable pulled: the reader's read fails (EIO, hang-up)
        link.unlink()  # and the device node vanishes
        wait_until(lambda: not running.receiver.port_open.is_set(), 5, "the port seen lost")
        wait_until(  # a few failed reopen attempts, with back-off
            lambda: sum("No such file or directory" in m for m in messages(caplog)) >= 2,
            5,
            "two failed reopen attempts logged",
        )

        second = Pty()  # plugged back: a new tty behind the same path
        link.symlink_to(second.path)
        assert running.receiver.port_open.wait(5), "not reopened"
        second.write_all(cycle("120010.00", "141126") + cycle("120011.00", "141126"))
        after = running.take(2)
        assert [s.label.second for s in after] == [10, 11]
        assert all(s.trusted for s in after)
        assert running.receiver.reopens == 1
    finally:
        running.stop()
        first.close()
    messages_ = messages(caplog)
    assert any(f"{link} lost (" in m and "retrying in" in m for m in messages_), messages_
    assert any("No such file or directory" in m for m in messages_), messages_
    assert any(f"{link} is back" in m for m in messages_), messages_
    second.close()


def test_a_receiver_repeating_the_previous_second_gives_no_trusted_sample() -> None:
    """Through the real reader on a pty: the receiver sends 12:00:00, then, in its next
    cycle, 12:00:00 again, then 12:00:01. The repeat is read as a cycle of its own (the
    first was closed by the quiet after it: its sample is taken before the repeat is
    written) and comes out untrusted."""
    pty = Pty()
    running = Running(GpsReceiver(fast_config(pty.path)))
    try:
        assert running.receiver.port_open.wait(5)
        taken = []
        for label in ("120000.00", "120000.00", "120001.00"):
            pty.write_all(cycle(label, "141126"))
            taken += running.take(1)  # its cycle closed: the next is a later one
        verdicts = [(s.label.second, s.trusted) for s in taken]
        assert verdicts == [(0, True), (0, False), (1, True)], [s.reason for s in taken]
        assert "repeated or backwards" in taken[1].reason
    finally:
        running.stop()
        pty.close()


def test_backoff_grows_to_its_bound_and_stop_is_prompt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.gps")
    running = Running(GpsReceiver(fast_config(str(tmp_path / "absent"))))

    def retries() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "retrying in" in r.getMessage()]

    wait_until(lambda: len(retries()) >= 5, 5, "five failed opens")
    t0 = time.monotonic()
    running.stop()
    assert time.monotonic() - t0 < 0.5  # waits are sliced by read_timeout_s
    tried = retries()[:5]
    delays = [float(r.getMessage().split("retrying in ")[1].split(" s")[0]) for r in tried]
    assert delays[:4] == [0.05, 0.1, 0.2, 0.2]  # doubles, then stays at the bound
    for record, delay, after in zip(tried, delays, tried[1:], strict=False):
        # each attempt came after the wait announced before it (10 ms of timer slack)
        assert after.created - record.created >= delay - 0.01, (delay, after.created)


def test_missing_device_configuration_is_an_error() -> None:
    with pytest.raises(DriverError):
        GpsReceiver(GpsConfig())


def test_garbage_and_partial_sentence_across_a_replug_are_not_glued(tmp_path: Path) -> None:
    first = Pty()
    running = Running(GpsReceiver(fast_config(first.path)))
    try:
        assert running.receiver.port_open.wait(5)
        first.write_all(b"\xff\x00junk" + cycle("120000.00", "141126") + b"$GPRMC,1200")
        assert [s.label.second for s in running.take(1)] == [0]
    finally:
        running.stop()
        first.close()
    assert running.receiver.decoder.framer.stats.discarded_bytes >= 6
    assert not running.receiver.decoder.framer._in_sentence  # dropped when stopping


@pytest.mark.hardware
@pytest.mark.skipif(not os.path.exists("/dev/ttyAMA0"), reason="needs a GPS on /dev/ttyAMA0")
def test_real_receiver_on_the_pi_uart() -> None:
    running = Running(GpsReceiver(GpsConfig(device="/dev/ttyAMA0")))
    try:
        assert running.take(3, timeout_s=10)
    finally:
        running.stop()
