"""Start-up refuses clearly rather than half-starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.bootstrap import ISSUANCE_LOG, SERIAL_STATE, StartupError, build_app
from appliance.clock import Policy
from appliance.config import ApplianceConfig
from appliance.server import TSA
from appliance.service import Appliance, Sources
from appliance.timekeeper import Timekeeper
from horodate.cli import main as horodate


def quiet_appliance(config: ApplianceConfig) -> Appliance:
    """No hardware at all: start-up checks only."""
    return Appliance(config, Sources(), Timekeeper(Policy()))


def test_without_keys_the_appliance_says_how_to_make_them(tmp_path: Path) -> None:
    config = ApplianceConfig(data_dir=tmp_path)
    with pytest.raises(StartupError, match="horodate keys init"):
        build_app(config, appliance=quiet_appliance(config))


def test_an_issuance_log_without_its_serial_state_refuses_to_start(tmp_path: Path) -> None:
    config = ApplianceConfig(data_dir=tmp_path)
    assert horodate(["keys", "init", "--dir", str(tmp_path / "keys")]) == 0
    (tmp_path / ISSUANCE_LOG).write_bytes(b"")
    with pytest.raises(StartupError, match="serial numbers could repeat"):
        build_app(config, appliance=quiet_appliance(config))
    assert not (tmp_path / SERIAL_STATE).exists()  # nothing was re-created behind our back


def test_first_start_creates_the_serial_state_and_a_restart_reuses_it(tmp_path: Path) -> None:
    config = ApplianceConfig(data_dir=tmp_path)
    assert horodate(["keys", "init", "--dir", str(tmp_path / "keys")]) == 0
    app = build_app(config, appliance=quiet_appliance(config))
    state = (tmp_path / SERIAL_STATE).read_bytes()
    assert state
    app[TSA].serials.close()
    again = build_app(config, appliance=quiet_appliance(config))
    assert (tmp_path / SERIAL_STATE).read_bytes() != state  # the next block was reserved
    assert again[TSA].serials.instance_id == app[TSA].serials.instance_id
    again[TSA].serials.close()


def test_command_line_reports_startup_errors_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "appliance.toml"
    bad.write_text("[gps]\nbaud = 9600\n")
    assert horodate(["appliance", "--config", str(bad), "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'baud'" in err and "Traceback" not in err
