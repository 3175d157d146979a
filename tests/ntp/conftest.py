"""Fixtures for the NTP tests: a real chronyd on loopback, the simulated server, fault boxes.

chronyd runs with ``-x`` (it never adjusts the system clock: the fixture checks that it says
so in its log before any test uses it), ``-d`` (foreground, log to a file in the test's own
temporary directory), a pid file in that directory, no command port and no Unix command
socket (so the system's ``/run/chrony`` is never touched), and a free UDP port on 127.0.0.1.
Every chronyd started is killed when the test ends, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.monotonic import mono_ns
from drivers.ntp import PACKET_BYTES, build_request
from drivers.sim.faults import NtpFaults
from drivers.sim.ntp_server import SimNtpServer

READY_TIMEOUT_S = 5.0  # chronyd answers within ~0.1 s here; this is the hard deadline
STOP_TIMEOUT_S = 5.0
START_ATTEMPTS = 3  # a free port can be taken by someone else between probe and bind


def chronyd_path() -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which("chronyd", path=search)
    if found is None:
        pytest.fail("chronyd not found: install the Debian package 'chrony' (make system-deps)")
    return found


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ntp_query(host: str, port: int, timeout_s: float) -> bytes | None:
    """One raw request; the raw reply, or None if nothing came back in time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect((host, port))
            s.send(build_request(0x0123456789ABCDEF))
            return s.recv(1024)
        except OSError:  # timeout, or ICMP port unreachable before chronyd has bound
            return None


@dataclass
class Chronyd:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def log(self) -> str:
        return (self.workdir / "chronyd.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)


def _start_chronyd(workdir: Path, extra: list[str]) -> Chronyd:
    workdir.mkdir(parents=True, exist_ok=True)
    last_log = ""
    for _attempt in range(START_ATTEMPTS):
        port = free_udp_port()
        conf = workdir / "chrony.conf"
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bindaddress 127.0.0.1",
                    "allow 127.0.0.1",
                    f"pidfile {workdir / 'chronyd.pid'}",
                    "cmdport 0",
                    "bindcmdaddress /",  # no Unix command socket, nothing under /run/chrony
                    *extra,
                ]
            )
            + "\n"
        )
        with (workdir / "chronyd.log").open("wb") as log:
            process = subprocess.Popen(
                [chronyd_path(), "-d", "-x", "-f", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = Chronyd(process=process, port=port, workdir=workdir)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            reply = ntp_query("127.0.0.1", port, 0.1)
            if reply is not None and len(reply) >= PACKET_BYTES:
                break
            time.sleep(0.05)
        else:
            last_log = server.log()
            server.stop()
            continue
        if "Disabled control of system clock" not in server.log():
            server.stop()
            pytest.fail(f"chronyd did not confirm -x (no clock control):\n{server.log()}")
        return server
    pytest.fail(f"chronyd did not answer on loopback within {READY_TIMEOUT_S} s:\n{last_log}")


@pytest.fixture
def chronyd(tmp_path: Path) -> Iterator[Callable[..., Chronyd]]:
    """A factory: ``chronyd(local_stratum=1)`` serves synchronised time at that stratum;
    ``chronyd(local_stratum=None)`` has no reference at all (it answers LI=3)."""
    started: list[Chronyd] = []

    def start(*, local_stratum: int | None) -> Chronyd:
        extra = [] if local_stratum is None else [f"local stratum {local_stratum}"]
        server = _start_chronyd(tmp_path / f"chronyd{len(started)}", extra)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


class FaultBox:
    """What the simulated world would hold: the current faults and when they were set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: tuple[NtpFaults, int] = (NtpFaults(), mono_ns())

    def set(self, faults: NtpFaults, *, since_mono_ns: int | None = None) -> None:
        with self._lock:
            self._value = (faults, mono_ns() if since_mono_ns is None else since_mono_ns)

    def __call__(self) -> tuple[NtpFaults, int]:
        with self._lock:
            return self._value


@pytest.fixture
def faults() -> FaultBox:
    return FaultBox()


@pytest.fixture
def sim_server(faults: FaultBox) -> Iterator[SimNtpServer]:
    with SimNtpServer(faults) as server:
        yield server
