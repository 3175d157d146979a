"""The unit files under ``systemd/``: every ``ExecStart`` is a ``horodate`` command line the
CLI accepts, every timer starts a unit that exists, and ``systemd-analyze verify`` finds
nothing wrong with them."""

from __future__ import annotations

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


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    # verify wants ExecStart to exist: point it at this checkout's horodate
    horodate = Path(sys.executable).with_name("horodate")
    assert horodate.exists()
    units = []
    for unit in [*SERVICES, *SYSTEMD.glob("*.timer")]:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED, str(horodate)))
        units.append(str(copy))
    done = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


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
