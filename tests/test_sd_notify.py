"""systemd's notifications (sd_notify(3)) from the real daemons: a real ``AF_UNIX`` datagram
socket stands for systemd's ``$NOTIFY_SOCKET``, and ``horodate vault`` and ``horodate
appliance --simulate`` run as the processes systemd would start.

READY=1 must come once the HTTP port answers, STATUS= carry the verdict, WATCHDOG=1 repeat
every half of ``$WATCHDOG_USEC`` — and stop while a worker (the appliance's TSA worker
process, the vault's committer thread) is dead, so that systemd's watchdog restarts a
daemon that only looks alive.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from horodate.sd_notify import LoopVitals, Notifier, supervisor_from_environment
from tests.appliance.test_workers import terminate, worker_pids
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
WATCHDOG_USEC = 400_000  # WATCHDOG=1 every 0.2 s
PERIOD_S = WATCHDOG_USEC / 2 / 1e6


@dataclass(frozen=True)
class Message:
    at: float  # time.monotonic() when received
    fields: dict[str, str]


class FakeSystemd:
    """The receiving end of ``$NOTIFY_SOCKET``: every datagram, in order, with its time."""

    def __init__(self, address: str) -> None:
        self.address = address  # as in $NOTIFY_SOCKET: a path or "@abstract"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self.messages.append(Message(time.monotonic(), fields))

    def received(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def first(self, key: str, value: str | None = None) -> Message | None:
        for m in self.received():
            if key in m.fields and (value is None or m.fields[key] == value):
                return m
        return None

    def statuses(self) -> list[str]:
        return [m.fields["STATUS"] for m in self.received() if "STATUS" in m.fields]

    def watchdogs(self, after: float = 0.0, before: float = float("inf")) -> list[float]:
        return [m.at for m in self.received() if "WATCHDOG" in m.fields and after < m.at < before]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    """The HTTP server answered (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def daemon(args: list[str], address: str, log: Path) -> subprocess.Popen[bytes]:
    """``python ARGS`` as systemd would start it: ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *args], env=notify_env(address), stdout=out, stderr=out, cwd=ROOT
        )


def notify_env(address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "JOURNAL_STREAM")}
    return {**env, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}


# --- the protocol, in-process --------------------------------------------------------------


def test_without_notify_socket_nothing_is_supervised() -> None:
    assert supervisor_from_environment({}) is None
    assert supervisor_from_environment({"NOTIFY_SOCKET": "vsock:2:1234"}) is None


def test_a_watchdog_meant_for_another_process_is_not_ours(tmp_path: Path) -> None:
    from horodate.sd_notify import watchdog_interval_s

    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None


def test_a_datagram_reaches_an_abstract_socket_and_a_status_stays_one_line() -> None:
    systemd = FakeSystemd(f"@horodate-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        notifier = Notifier(systemd.address)
        assert notifier.notify({"STATUS": "two\nlines", "READY": "1"})
        wait_until(lambda: systemd.first("READY"), 5, "the datagram")
        assert systemd.first("READY").fields == {"STATUS": "two lines", "READY": "1"}  # type: ignore[union-attr]
        notifier.close()
    finally:
        systemd.close()


async def test_a_failing_send_does_not_stop_the_daemon(tmp_path: Path) -> None:
    from horodate.sd_notify import supervised

    notifier = Notifier(str(tmp_path / "nobody-listens"))
    async with supervised(notifier, lambda: LoopVitals("fine"), watchdog_s=0.01):
        pass  # sendto fails (no such socket): logged once, nothing raised


# --- the vault ----------------------------------------------------------------------------

# The real command, with one thing planted: on SIGUSR1 the committer thread is handed a job
# that raises past its error handling (a BaseException), so the thread dies as a bug would
# kill it.
_VAULT_WITH_A_MORTAL_COMMITTER = """
import asyncio, signal, sys
import daemon.vault as vault_module
from horodate.cli import main

class Planted(BaseException):
    pass

def die(writer):
    raise Planted("the committer thread dies (planted by the test)")

real_start = vault_module.Vault.start

async def start(self):
    await real_start(self)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: loop.create_task(self.committer.run(die))
    )

vault_module.Vault.start = start
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def tsa_ca(tmp_path: Path) -> Path:
    from appliance.tsa.dev_pki import init_dev_pki

    return init_dev_pki(tmp_path / "pki", now=dt.datetime.now(dt.UTC)).ca_cert


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    systemd = FakeSystemd(str(tmp_path / "notify"))
    yield systemd
    systemd.close()


def test_the_vault_is_ready_once_it_answers_pings_while_its_committer_lives_and_says_stopping(
    tmp_path: Path, tsa_ca: Path, fake_systemd: FakeSystemd
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["vault", "--data-dir", str(tmp_path / "vault"), "--listen", f"127.0.0.1:{port}"]
    args += ["--tsa", f"http://127.0.0.1:{free_port()}/tsa", "--tsa-ca", str(tsa_ca)]  # no TSA
    proc = daemon(
        ["-c", _VAULT_WITH_A_MORTAL_COMMITTER, *args], fake_systemd.address, tmp_path / "vault.log"
    )
    try:
        wait_until(lambda: fake_systemd.first("READY", "1"), 60, "READY=1 from the vault")
        assert answers(f"{base}/health"), "READY=1 before the HTTP port answers"
        ready = fake_systemd.first("READY", "1")
        assert ready is not None and ready.fields["STATUS"] == "0 entries, 0 pending seals"
        wait_until(
            lambda: len(fake_systemd.watchdogs(after=ready.at)) >= 3, 10, "WATCHDOG=1 repeating"
        )
        beats = fake_systemd.watchdogs(after=ready.at)
        assert all(b - a < 10 * PERIOD_S for a, b in itertools.pairwise(beats))

        proc.send_signal(signal.SIGUSR1)  # the committer thread dies
        wait_until(
            lambda: any("committer thread is dead" in s for s in fake_systemd.statuses()),
            20,
            "a STATUS saying the committer is dead",
        )
        dead = next(m for m in fake_systemd.received() if "dead" in m.fields.get("STATUS", ""))
        # Absence is observed over a window: five periods (systemd kills after two).
        window_end = dead.at + 5 * PERIOD_S
        wait_until(lambda: time.monotonic() > window_end, 5, "five watchdog periods")
        assert fake_systemd.watchdogs(after=dead.at) == [], "WATCHDOG=1 with a dead committer"
        assert proc.poll() is None  # the process still runs: only the watchdog can tell

        terminate(proc)
        assert fake_systemd.first("STOPPING", "1") is not None
    finally:
        terminate(proc)


# --- the appliance ------------------------------------------------------------------------


def test_the_appliance_is_ready_once_its_sources_are_read_and_no_ping_while_a_worker_is_dead(
    tmp_path: Path,
) -> None:
    systemd = FakeSystemd(f"@horodate-test-{os.getpid()}-{time.monotonic_ns()}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["appliance", "--simulate", "--workers", "1", "--data-dir", str(tmp_path / "a")]
    args += ["--listen", f"127.0.0.1:{port}"]
    proc = daemon(["-m", "horodate", *args], systemd.address, tmp_path / "appliance.log")
    try:
        wait_until(lambda: systemd.first("READY", "1"), 90, "READY=1 from the appliance")
        assert answers(f"{base}/health"), "READY=1 before the HTTP port answers"
        ready = systemd.first("READY", "1")
        assert ready is not None
        assert not ready.fields["STATUS"].startswith("starting"), ready.fields
        wait_until(
            lambda: any(s.startswith("issuing, bound ") for s in systemd.statuses()),
            90,
            "STATUS: issuing, bound …",
        )
        issuing = next(s for s in systemd.statuses() if s.startswith("issuing, bound "))
        assert issuing.endswith(", 1/1 workers"), issuing
        wait_until(lambda: len(systemd.watchdogs(after=ready.at)) >= 3, 10, "WATCHDOG=1 pings")

        wait_until(lambda: len(worker_pids(proc)) == 1, 30, "the worker process")
        (worker,) = worker_pids(proc)
        os.kill(worker, signal.SIGKILL)
        wait_until(
            lambda: any("worker w1" in s for s in systemd.statuses()),
            10,
            "a STATUS naming the dead worker",
        )
        dead = next(m for m in systemd.received() if "worker w1" in m.fields.get("STATUS", ""))
        assert dead.fields["STATUS"].startswith("NOT HEALTHY"), dead.fields
        # The pool restarts the worker (after 1 s): the pings come back with it.
        wait_until(
            lambda: systemd.watchdogs(after=dead.at), 60, "WATCHDOG=1 once the worker is back"
        )
        back = systemd.watchdogs(after=dead.at)[0]
        between = [m for m in systemd.received() if dead.at <= m.at < back]
        assert not any("WATCHDOG" in m.fields for m in between)
        # the restart waits 1 s (seen up to 0.5 s late): no ping for longer than systemd's
        # two periods all along
        assert back - dead.at >= 2 * PERIOD_S
        resumed = next(m for m in systemd.received() if m.at >= back)
        assert "NOT HEALTHY" not in resumed.fields.get("STATUS", "")

        terminate(proc)
        assert systemd.first("STOPPING", "1") is not None
    finally:
        terminate(proc)
        systemd.close()


# --- the witness --------------------------------------------------------------------------


def test_the_witness_is_ready_once_it_listens_and_pings_from_its_loop(
    tmp_path: Path, fake_systemd: FakeSystemd
) -> None:
    from horodate.cli import main as horodate

    data = tmp_path / "witness"
    assert horodate(["witness", "init", "--data-dir", str(data), "--name", "w.example/1"]) == 0
    port = free_port()
    args = ["-m", "horodate", "witness", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"]
    proc = daemon(args, fake_systemd.address, tmp_path / "witness.log")
    try:
        wait_until(lambda: fake_systemd.first("READY", "1"), 60, "READY=1 from the witness")
        assert answers(f"http://127.0.0.1:{port}/")
        ready = fake_systemd.first("READY", "1")
        assert ready is not None and ready.fields["STATUS"].startswith("witnessing as w.example/1")
        wait_until(lambda: len(fake_systemd.watchdogs(after=ready.at)) >= 3, 10, "WATCHDOG=1")
        terminate(proc)
        assert fake_systemd.first("STOPPING", "1") is not None
    finally:
        terminate(proc)
