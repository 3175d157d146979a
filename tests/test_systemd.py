"""The unit files under ``systemd/``: every ``ExecStart`` is a ``horodate`` command line the
CLI accepts, every timer starts a unit that exists, and ``systemd-analyze verify`` finds
nothing wrong with them."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from horodate.cli import build_parser

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
INSTALLED = "/opt/horodate/.venv/bin/horodate"  # where README's install puts it


def directive(unit: Path, name: str) -> str:
    values = [
        line.split("=", 1)[1].strip()
        for line in unit.read_text().splitlines()
        if line.strip().startswith(f"{name}=")
    ]
    assert len(values) == 1, f"{unit.name}: {name}= {values}"
    return values[0]


SERVICES = sorted(SYSTEMD.glob("*.service"))


@pytest.mark.parametrize("unit", SERVICES, ids=[u.name for u in SERVICES])
def test_exec_start_is_a_command_line_the_cli_accepts(unit: Path) -> None:
    argv = shlex.split(directive(unit, "ExecStart"))
    assert argv[0] == INSTALLED
    args = build_parser().parse_args(argv[1:])  # exits (SystemExit) on a flag it lacks
    assert getattr(args, "func", None) is not None, f"{unit.name}: no command to run"


def test_the_issuance_log_check_is_read_only_and_daily() -> None:
    service = SYSTEMD / "horodate-issued-check.service"
    argv = shlex.split(directive(service, "ExecStart"))
    assert argv[1:3] == ["issued", "--check"]
    assert directive(service, "ProtectSystem") == "strict"  # it never writes the logs
    assert directive(service, "User") == directive(
        SYSTEMD / "horodate-appliance.service", "User"
    )  # the logs are the appliance user's, mode 0600
    timer = SYSTEMD / "horodate-issued-check.timer"
    assert directive(timer, "OnCalendar") == "daily"
    assert (SYSTEMD / timer.name.replace(".timer", ".service")).exists()


NO_ANALYZE = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="no systemd-analyze (`make system-deps`)"
)
DAEMONS = ["horodate-appliance.service", "horodate-vault.service", "horodate-witness.service"]


@NO_ANALYZE
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: the installed path (asserted above) is
    # replaced by this checkout's horodate, the same console script, and nothing else is.
    horodate = Path(sys.executable).with_name("horodate")
    assert horodate.exists()
    units = []
    for unit in [*SERVICES, *SYSTEMD.glob("*.timer")]:
        text = unit.read_text()
        assert text.count(INSTALLED) == text.count("ExecStart="), unit.name
        copy = tmp_path / unit.name
        copy.write_text(text.replace(INSTALLED, str(horodate)))
        units.append(str(copy))
    done = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60
    )
    ours = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if str(tmp_path) in line or "horodate" in line
    ]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


def exposure(unit: Path) -> float | None:
    """``systemd-analyze security --offline=yes``'s overall exposure; None where the
    offline mode is not available (systemd < 252)."""
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    return None if done.returncode != 0 or found is None else float(found.group(1))


@NO_ANALYZE
def test_the_vault_and_the_witness_are_exposed_at_most_2_0_ok() -> None:
    scores = {name: exposure(SYSTEMD / name) for name in DAEMONS[1:]}
    if None in scores.values():
        pytest.skip("systemd-analyze security --offline=yes does not work here")
    assert all(s is not None and s <= 2.0 for s in scores.values()), scores
    appliance = exposure(SYSTEMD / DAEMONS[0])  # needs its devices: README says 1.5
    assert appliance is not None and appliance <= 2.0


@pytest.mark.parametrize("name", DAEMONS)
def test_each_daemon_tells_systemd_it_is_ready_and_alive(name: str) -> None:
    unit = SYSTEMD / name
    assert directive(unit, "Type") == "notify"  # horodate/sd_notify.py
    assert directive(unit, "WatchdogSec").endswith("s")
    assert directive(unit, "Restart") == "on-failure"  # a watchdog kill is a failure


def test_every_service_user_is_declared_in_sysusers() -> None:
    declared = {
        line.split()[1]
        for line in (SYSTEMD / "horodate.sysusers").read_text().splitlines()
        if line.startswith("u ")
    }
    users = {directive(unit, "User") for unit in SERVICES}
    assert users <= declared
    assert len({directive(SYSTEMD / n, "User") for n in DAEMONS}) == 3  # one user each


def test_the_vault_has_no_device_and_no_network_but_loopback() -> None:
    unit = SYSTEMD / "horodate-vault.service"
    assert directive(unit, "User") == "horodate-vault"
    assert directive(unit, "PrivateDevices") == "yes"
    assert directive(unit, "DevicePolicy") == "closed"
    assert directive(unit, "IPAddressDeny") == "any"
    assert directive(unit, "IPAddressAllow") == "localhost"  # the peers: a commented line
    assert "#IPAddressAllow=" in unit.read_text()
    assert directive(unit, "ReadWritePaths") == "/var/lib/horodate/vault"
    assert directive(unit, "CapabilityBoundingSet") == ""


def test_the_vault_is_verified_daily_as_the_vault_user_without_network() -> None:
    service = SYSTEMD / "horodate-vault-verify.service"
    argv = shlex.split(directive(service, "ExecStart"))
    assert argv[1:3] == ["vault", "verify"]
    assert directive(service, "User") == "horodate-vault"
    assert directive(service, "PrivateNetwork") == "yes"
    assert directive(SYSTEMD / "horodate-vault-verify.timer", "OnCalendar") == "daily"


def test_reloading_the_appliance_sends_it_sighup() -> None:
    """`systemctl reload` must send what the appliance handles as a reload (SIGHUP: the
    key and certificate read again, tests/appliance/test_workers.py), never stop it."""
    argv = shlex.split(directive(SYSTEMD / "horodate-appliance.service", "ExecReload"))
    assert argv == ["/bin/kill", "-HUP", "$MAINPID"]
    assert Path(argv[0]).exists()


def test_the_purge_runs_daily_as_the_vault_user_writing_only_the_vault() -> None:
    service = SYSTEMD / "horodate-vault-purge.service"
    argv = shlex.split(directive(service, "ExecStart"))
    assert argv[1:3] == ["vault", "purge"] and "--dry-run" not in argv
    assert directive(service, "User") == "horodate-vault"
    assert directive(service, "ReadWritePaths") == "/var/lib/horodate/vault"
    assert directive(service, "PrivateNetwork") == "yes"  # it needs no TSA, no peer
    assert directive(SYSTEMD / "horodate-vault-purge.timer", "OnCalendar") == "daily"
