"""``horodate doctor`` against a fake sysfs/devfs/boot tree in ``tmp_path``: a healthy
Raspberry Pi, each fault one at a time (its FAIL or warn, and its fix), a host that is not
a Pi (the hardware checks skip), and a real data directory for free space and fsync.

The network is answered by the test: an NTP query and the appliance's ``/health`` are
callables handed to the checks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from appliance.config import load_config
from appliance.doctor import Diagnosis, Finding, Host, Probes, Verdict, diagnose, storage
from appliance.doctor.boot import PiModel
from appliance.doctor.peers import NtpAnswer, ProbeError, check_ensemble
from appliance.tsa.dev_pki import init_dev_pki
from horodate.commands import doctor as doctor_command

DATA = "/var/lib/horodate/appliance"
CONFIG = f"""
[appliance]
data_dir = "{DATA}"
[gps]
device = "/dev/serial0"
pps_device = "/dev/pps0"
[ntp]
servers = ["ntp1.example", "ntp2.example:10123"]
timeout_s = 0.5
[rtc]
i2c_bus = 1
[leds]
green = "D17"
amber = "D27"
red = "D22"
"""
CONFIG_TXT = """\
# Raspberry Pi OS's own lines
dtparam=audio=on
[cm4]
otg_mode=1
[all]
enable_uart=1
dtoverlay=disable-bt
dtparam=i2c_arm=on
dtoverlay=pps-gpio,gpiopin=18
"""
CMDLINE = "console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
HEALTHY_HEALTH = {
    "state": "synchronised",
    "issuing": True,
    "bound_s": 0.0017,
    "sources": [
        {"name": "gps0", "status": "selected"},
        {"name": "ntp:ntp1.example", "status": "selected"},
        {"name": "rtc0", "status": "selected"},
    ],
}


class FakePi:
    """A Raspberry Pi 4 as the doctor sees it, healthy until a test breaks one thing."""

    def __init__(self, root: Path, model: str = "Raspberry Pi 4 Model B Rev 1.4") -> None:
        self.root = root
        self.write("/proc/device-tree/model", model + "\0")
        self.write("/boot/firmware/config.txt", CONFIG_TXT)
        self.write("/boot/firmware/cmdline.txt", CMDLINE)
        self.node("/dev/ttyAMA0")
        self.link("/dev/serial0", "ttyAMA0")
        self.node("/dev/i2c-1")
        self.node("/dev/pps0")
        self.node("/dev/gpiomem")
        self.write("/sys/class/pps/pps0/name", "pps@12.-1\n")
        # the tree's files are the test's: its uid is the appliance's user, its gid dialout
        uid, gid = os.getuid(), os.getgid()
        self.write("/etc/passwd", f"horodate-tsa:x:{uid}:{gid}::{DATA}:/usr/sbin/nologin\n")
        self.write("/etc/group", f"dialout:x:{gid}:horodate-tsa\n")
        self.write("/etc/horodate/appliance.toml", CONFIG)
        init_dev_pki(self.path(f"{DATA}/keys"), now=dt.datetime.now(dt.UTC))
        self.health: dict[str, Any] | None = dict(HEALTHY_HEALTH)
        self.ntp: dict[str, NtpAnswer | None] = {
            "ntp1.example": NtpAnswer(stratum=2, leap=0, offset_s=0.0004),
            "ntp2.example": NtpAnswer(stratum=1, leap=0, offset_s=-0.0002),
        }

    def path(self, system_path: str) -> Path:
        return self.root / system_path.lstrip("/")

    def write(self, system_path: str, text: str) -> None:
        path = self.path(system_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def node(self, system_path: str, mode: int = 0o660) -> None:
        """A device node stands in as a plain file: its owner, group and mode are what count."""
        self.write(system_path, "")
        self.path(system_path).chmod(mode)

    def link(self, system_path: str, target: str) -> None:
        path = self.path(system_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(target)

    def remove(self, system_path: str) -> None:
        path = self.path(system_path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()

    def edit(self, system_path: str, old: str, new: str) -> None:
        text = self.path(system_path).read_text()
        assert old in text, old
        self.write(system_path, text.replace(old, new))

    def query_ntp(self, host: str, port: int, timeout_s: float) -> NtpAnswer:
        answer = self.ntp.get(host)
        if answer is None:
            raise ProbeError("timed out")
        return answer

    def get_health(self) -> dict[str, Any]:
        if self.health is None:
            raise ProbeError("[Errno 111] Connection refused")
        return self.health

    def diagnose(self, now: dt.datetime | None = None) -> Diagnosis:
        config = load_config(self.path("/etc/horodate/appliance.toml"))
        return diagnose(
            config,
            Host(self.root),
            now=now or dt.datetime.now(dt.UTC),
            probes=Probes(ntp=self.query_ntp, health=self.get_health, health_url="http://x"),
        )


def by_check(diagnosis: Diagnosis) -> dict[str, Finding]:
    found: dict[str, Finding] = {}
    for f in diagnosis.findings:
        assert f.check not in found, f"two findings named {f.check}"
        found[f.check] = f
    return found


@pytest.fixture
def pi(tmp_path: Path) -> FakePi:
    return FakePi(tmp_path / "root")


def test_a_healthy_pi_passes_every_check(pi: FakePi) -> None:
    diagnosis = pi.diagnose()
    findings = by_check(diagnosis)
    not_ok = {name: f for name, f in findings.items() if f.verdict is not Verdict.OK}
    assert not not_ok
    assert not diagnosis.failed
    assert diagnosis.board == "Raspberry Pi 4 Model B Rev 1.4"
    assert set(findings) >= {
        "uart", "console", "gps-serial", "i2c", "ds3231", "pps", "leds", "ntp ntp1.example",
        "ntp ntp2.example:10123", "tsa-key", "tsa-cert", "tsa-chain", "space", "fsync", "clock",
    }  # fmt: skip
    assert "/dev/serial0 → /dev/ttyAMA0" in findings["gps-serial"].summary
    assert "pps@12.-1" in findings["pps"].summary
    assert "ms per fsync" in findings["fsync"].summary  # measured on the real disk


@dataclass(frozen=True)
class Fault:
    """One thing broken on a healthy Pi, and what the doctor must say."""

    check: str
    verdict: Verdict
    fix: str  # a piece of one of the fix lines
    breaks: Callable[[FakePi], object]


def _claim_rtc(pi: FakePi) -> None:
    pi.edit("/boot/firmware/config.txt", "[all]\n", "[all]\ndtoverlay=i2c-rtc,ds3231\n")
    pi.write("/sys/bus/i2c/drivers/rtc-ds1307/bind", "")
    pi.path("/sys/bus/i2c/devices/1-0068").mkdir(parents=True)
    pi.link("/sys/bus/i2c/devices/1-0068/driver", "../../drivers/rtc-ds1307")


def _tsa_cert_end(pi: FakePi) -> dt.datetime:
    pem = pi.path(f"{DATA}/keys/tsa.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def _key_owner(pi: FakePi) -> None:
    uid, gid = os.getuid(), os.getgid()
    pi.write("/etc/passwd", f"pi:x:{uid}:{gid}::/home/pi:/bin/bash\nhorodate-tsa:x:999:999::/:\n")


def _all_ntp_down(pi: FakePi) -> None:
    pi.ntp = {}


FAULTS: dict[str, Fault] = {
    "no enable_uart": Fault(
        "uart", Verdict.FAIL, "add the line `enable_uart=1`",
        lambda p: p.edit("/boot/firmware/config.txt", "enable_uart=1\n", ""),
    ),
    "enable_uart only under [cm4]": Fault(
        "uart", Verdict.FAIL, "`enable_uart=1` under [all]",
        lambda p: p.edit("/boot/firmware/config.txt", "otg_mode=1\n[all]\nenable_uart=1\n",
                         "otg_mode=1\nenable_uart=1\n[all]\n"),
    ),
    "bluetooth on the PL011": Fault(
        "uart", Verdict.WARN, "add the line `dtoverlay=disable-bt`",
        lambda p: p.edit("/boot/firmware/config.txt", "dtoverlay=disable-bt\n", ""),
    ),
    "no boot partition": Fault(
        "uart", Verdict.FAIL, "mount /boot/firmware", lambda p: p.remove("/boot/firmware")
    ),
    "serial console": Fault(
        "console", Verdict.FAIL, "remove `console=serial0,115200` from /boot/firmware/cmdline.txt",
        lambda p: p.write("/boot/firmware/cmdline.txt", "console=serial0,115200 " + CMDLINE),
    ),
    "login prompt on the UART": Fault(
        "console", Verdict.FAIL, "sudo systemctl disable --now serial-getty@ttyAMA0.service",
        lambda p: p.write(
            "/etc/systemd/system/getty.target.wants/serial-getty@ttyAMA0.service", ""
        ),
    ),
    "no serial device": Fault(
        "gps-serial", Verdict.FAIL, "enable_uart=1", lambda p: p.remove("/dev/ttyAMA0")
    ),
    "serial device closed to the appliance": Fault(
        "gps-serial", Verdict.FAIL, "sudo usermod -aG",
        lambda p: p.path("/dev/ttyAMA0").chmod(0o000),
    ),
    "no I2C": Fault(
        "i2c", Verdict.FAIL, "add the line `dtparam=i2c_arm=on`", lambda p: p.remove("/dev/i2c-1")
    ),
    "the kernel owns the DS3231": Fault(
        "ds3231", Verdict.FAIL, "remove the line `dtoverlay=i2c-rtc,ds3231`", _claim_rtc
    ),
    "no PPS device": Fault(
        "pps", Verdict.FAIL, "add the line `dtoverlay=pps-gpio,gpiopin=18`",
        lambda p: (
            p.remove("/dev/pps0"),
            p.edit("/boot/firmware/config.txt", "dtoverlay=pps-gpio,gpiopin=18\n", ""),
        ),
    ),
    "PPS overlay but no device": Fault(
        "pps", Verdict.FAIL, "sudo modprobe pps-gpio", lambda p: p.remove("/dev/pps0")
    ),
    "no GPIO for the LEDs": Fault(
        "leds", Verdict.FAIL, "ls -l /dev/gpio*", lambda p: p.remove("/dev/gpiomem")
    ),
    "GPIO closed to the appliance": Fault(
        "leds", Verdict.WARN, "sudo usermod -aG",
        lambda p: p.path("/dev/gpiomem").chmod(0o000),
    ),
    "key readable by others": Fault(
        "tsa-key", Verdict.FAIL, f"sudo chmod 600 {DATA}/keys/tsa.key",
        lambda p: p.path(f"{DATA}/keys/tsa.key").chmod(0o644),
    ),
    "key owned by another user": Fault(
        "tsa-key", Verdict.FAIL, f"sudo chown horodate-tsa:horodate-tsa {DATA}/keys/tsa.key",
        _key_owner,
    ),
    "no key": Fault(
        "tsa-key", Verdict.FAIL, "horodate keys csr", lambda p: p.remove(f"{DATA}/keys/tsa.key")
    ),
    "no data directory": Fault(
        "space", Verdict.FAIL, "sudo systemd-tmpfiles --create", lambda p: p.remove(DATA)
    ),
    "every NTP server unreachable": Fault(
        "ntp ntp1.example", Verdict.FAIL, "nc -uzv ntp1.example 123", _all_ntp_down
    ),
    "one NTP server unreachable": Fault(
        "ntp ntp2.example:10123", Verdict.WARN, "nc -uzv ntp2.example 10123",
        lambda p: p.ntp.pop("ntp2.example"),
    ),
    "an NTP server unsynchronised": Fault(
        "ntp ntp1.example", Verdict.WARN, "choose another server",
        lambda p: p.ntp.update({"ntp1.example": NtpAnswer(stratum=16, leap=3, offset_s=0.0)}),
    ),
    "the clock refuses": Fault(
        "clock", Verdict.FAIL, "horodate status",
        lambda p: p.health.update(  # type: ignore[union-attr]
            state="alarm", issuing=False, reason="gps0 jumped"
        ),
    ),
    "the clock in holdover": Fault(
        "clock", Verdict.WARN, "bring a source back",
        lambda p: p.health.update(state="holdover"),  # type: ignore[union-attr]
    ),
    "the appliance not running": Fault(
        "clock", Verdict.WARN, "systemctl status horodate-appliance",
        lambda p: setattr(p, "health", None),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_each_fault_gives_its_verdict_and_its_fix(pi: FakePi, name: str) -> None:
    fault = FAULTS[name]
    fault.breaks(pi)
    diagnosis = pi.diagnose()
    findings = by_check(diagnosis)
    finding = findings[fault.check]
    assert finding.verdict is fault.verdict, finding
    assert any(fault.fix in line for line in finding.fix), finding.fix
    assert diagnosis.failed is (fault.verdict is Verdict.FAIL)  # nothing else broke


def test_the_tsa_certificate_close_to_its_end_warns_and_after_it_fails(pi: FakePi) -> None:
    end = _tsa_cert_end(pi)
    near = by_check(pi.diagnose(end - dt.timedelta(days=10)))["tsa-cert"]
    assert near.verdict is Verdict.WARN and "expires in 10 days" in near.summary
    assert any("horodate keys csr" in line for line in near.fix)
    after = by_check(pi.diagnose(end + dt.timedelta(days=3)))["tsa-cert"]
    assert after.verdict is Verdict.FAIL and "EXPIRED 3 days ago" in after.summary
    before = by_check(pi.diagnose(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))["tsa-cert"]
    assert before.verdict is Verdict.FAIL and "not valid before" in before.summary


def test_the_clock_refusing_shows_the_sources_that_are_not_selected(pi: FakePi) -> None:
    assert pi.health is not None
    pi.health.update(state="unsynchronised", issuing=False, reason="no quorum")
    pi.health["sources"][0].update(status="stale", driver="/dev/serial0 not open")
    clock = by_check(pi.diagnose())["clock"]
    assert "NOT issuing: no quorum" in clock.summary
    assert clock.details == ("gps0: stale — /dev/serial0 not open",)


def test_not_a_pi_skips_the_hardware_and_says_what_it_cannot_check(pi: FakePi) -> None:
    pi.remove("/proc/device-tree/model")
    findings = by_check(pi.diagnose())
    for check in ("uart", "console", "gps-serial", "i2c", "ds3231", "pps"):
        assert findings[check].verdict is Verdict.SKIP
        assert "not a Raspberry Pi" in findings[check].summary
        assert "cannot check" in findings[check].summary
    assert findings["tsa-key"].verdict is Verdict.OK  # the rest is checked everywhere
    pi.write("/proc/device-tree/model", "Pine64 RockPro64 v2.1\0")
    assert "'Pine64 RockPro64 v2.1'" in by_check(pi.diagnose())["uart"].summary


def test_a_pi_5_wants_uart0_and_no_bluetooth_overlay(tmp_path: Path) -> None:
    pi = FakePi(tmp_path / "root", model="Raspberry Pi 5 Model B Rev 1.0")
    uart = by_check(pi.diagnose())["uart"]
    assert uart.verdict is Verdict.FAIL
    assert any("`dtparam=uart0=on`" in line for line in uart.fix)
    pi.edit("/boot/firmware/config.txt", "[all]\n", "[all]\ndtparam=uart0=on\n")
    assert by_check(pi.diagnose())["uart"].verdict is Verdict.OK
    pi.node("/dev/ttyAMA10")
    pi.link("/dev/serial0", "ttyAMA10")  # the Pi 5's serial0 is its debug UART
    serial = by_check(pi.diagnose())["gps-serial"]
    assert serial.verdict is Verdict.FAIL
    assert serial.fix == (
        'set `device = "/dev/ttyAMA0"` under [gps] in /etc/horodate/appliance.toml',
    )


def test_a_console_on_the_uart_is_no_fault_with_a_usb_receiver(pi: FakePi) -> None:
    pi.write("/boot/firmware/cmdline.txt", "console=serial0,115200 " + CMDLINE)
    pi.node("/dev/ttyACM0")
    pi.link("/dev/serial/by-id/usb-u-blox_GNSS_receiver-if00", "../../ttyACM0")
    pi.edit(
        "/etc/horodate/appliance.toml",
        '"/dev/serial0"',
        '"/dev/serial/by-id/usb-u-blox_GNSS_receiver-if00"',
    )
    findings = by_check(pi.diagnose())
    assert findings["console"].verdict is Verdict.OK
    assert findings["gps-serial"].verdict is Verdict.OK
    assert "→ /dev/ttyACM0" in findings["gps-serial"].summary


def test_boot_under_slash_boot_on_older_releases(pi: FakePi) -> None:
    pi.path("/boot/firmware").rename(pi.path("/boot.old"))
    pi.path("/boot").rmdir()
    pi.path("/boot.old").rename(pi.path("/boot"))
    pi.write("/boot/cmdline.txt", "console=ttyAMA0,115200 " + CMDLINE)
    findings = by_check(pi.diagnose())
    assert findings["uart"].verdict is Verdict.OK
    assert "/boot/config.txt" in findings["uart"].summary
    assert any("from /boot/cmdline.txt" in line for line in findings["console"].fix)


def test_little_free_space_fails_and_warns(pi: FakePi, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.statvfs(pi.path(DATA))

    def statvfs(free_bytes: int) -> Callable[[Any], Any]:
        fake = os.statvfs_result((real.f_bsize, 4096, 1 << 20, 0, free_bytes // 4096, *real[5:]))
        return lambda path: fake

    monkeypatch.setattr(storage.os, "statvfs", statvfs(10 * 1024 * 1024))
    space = storage.check_space(Host(pi.root), DATA)
    assert space.verdict is Verdict.FAIL and "10.0 MiB free" in space.summary
    assert any("journalctl --vacuum-size" in line for line in space.fix)
    monkeypatch.setattr(storage.os, "statvfs", statvfs(512 * 1024 * 1024))
    assert storage.check_space(Host(pi.root), DATA).verdict is Verdict.WARN


def test_a_slow_fsync_warns_and_a_very_slow_one_fails(pi: FakePi) -> None:
    def clock_taking(seconds: float) -> Callable[[], float]:
        ticks = iter(range(100))
        return lambda: next(ticks) / 2 * seconds  # each fsync: start, then end

    slow = storage.check_fsync(Host(pi.root), DATA, clock=clock_taking(0.4))
    assert slow.verdict is Verdict.WARN and "SSD" in slow.fix[0]
    worn = storage.check_fsync(Host(pi.root), DATA, clock=clock_taking(3.0))
    assert worn.verdict is Verdict.FAIL
    assert list(pi.path(DATA).glob(".horodate-doctor-*")) == []  # the probe file is gone


def run_command(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", dest="verbose", action="count", default=0)
    doctor_command.register(parser.add_subparsers())
    args = parser.parse_args(["doctor", *argv])
    return int(args.func(args))


def test_the_command_prints_one_line_per_check_and_the_fix_below(
    pi: FakePi, capsys: pytest.CaptureFixture[str]
) -> None:
    pi.edit("/boot/firmware/config.txt", "enable_uart=1\n", "")
    assert run_command("--root", str(pi.root), "--offline") == 1
    out = capsys.readouterr().out.splitlines()
    uart = next(i for i, line in enumerate(out) if line.split()[1:2] == ["uart"])
    assert out[uart].startswith("FAIL  uart")
    assert out[uart + 1].startswith("      fix: add the line `enable_uart=1` under [all]")
    assert any(line.startswith("ok    i2c") for line in out)
    assert any(line.startswith("skip  ntp") and "offline" in line for line in out)
    assert out[-1].startswith("1 FAIL")


def test_the_command_json_and_exit_status(pi: FakePi, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command("--root", str(pi.root), "--offline", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["board"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert document["failed"] == 0
    verdicts = {c["check"]: c["verdict"] for c in document["checks"]}
    assert verdicts["config"] == "ok" and verdicts["ds3231"] == "ok"
    assert verdicts["clock"] == "skip"
    assert all(
        set(c) == {"check", "verdict", "summary", "fix", "details"} for c in document["checks"]
    )


def test_the_running_appliances_health_is_read_even_when_it_answers_503() -> None:
    document = {"state": "alarm", "issuing": False, "reason": "gps0 jumped", "sources": []}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(document).encode()
            self.send_response(503 if self.path == "/health" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert doctor_command._health(url) == document
        finding = check_ensemble(lambda: doctor_command._health(url), url)
        assert finding.verdict is Verdict.FAIL and "NOT issuing: gps0 jumped" in finding.summary
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ProbeError):
        doctor_command._health(url)  # nobody listening any more


def test_doctor_is_a_horodate_command() -> None:
    from horodate import cli

    assert "doctor" in cli.COMMANDS


@pytest.mark.parametrize(
    ("model", "filters"),
    [
        ("Raspberry Pi 4 Model B Rev 1.5", {"all", "pi4"}),
        ("Raspberry Pi 400 Rev 1.0", {"all", "pi4", "pi400"}),
        ("Raspberry Pi Compute Module 4 Rev 1.0", {"all", "pi4", "cm4"}),
        ("Raspberry Pi 5 Model B Rev 1.0", {"all", "pi5"}),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", {"all", "pi3", "pi3+"}),
        ("Raspberry Pi Zero 2 W Rev 1.0", {"all", "pi02"}),
        ("Raspberry Pi Zero W Rev 1.1", {"all", "pi0", "pi0w"}),
        ("Raspberry Pi 2 Model B Rev 1.1", {"all", "pi2"}),
        ("Raspberry Pi Model B Rev 2", {"all", "pi1"}),
    ],
)
def test_the_config_txt_filters_of_each_model(model: str, filters: set[str]) -> None:
    assert PiModel(model).filters == filters


def test_a_key_it_may_not_look_at_is_skipped_not_reported_missing(
    pi: FakePi, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stat = Path.stat

    def stat(self: Path, **kw: Any) -> os.stat_result:
        if self.name == "tsa.key":  # as for a user other than root and horodate-tsa
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, **kw)

    monkeypatch.setattr(Path, "stat", stat)
    key = by_check(pi.diagnose())["tsa-key"]
    assert key.verdict is Verdict.SKIP and "sudo" in key.summary
