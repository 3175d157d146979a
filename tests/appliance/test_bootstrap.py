"""Start-up refuses clearly rather than half-starts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from appliance.clock import Policy
from appliance.clock.timekeeper import Timekeeper
from appliance.config import ApplianceConfig
from appliance.http.app_keys import TSA
from appliance.runtime.assembly import ISSUANCE_LOG, SERIAL_STATE, StartupError, build_app
from appliance.runtime.driver_threads import Appliance, Sources
from horodate.cli import main as horodate
from timestamping import Digest, VerificationFailed, build_request
from timestamping.verify import verify_reply


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


def test_a_reload_adopts_renewed_keys_and_keeps_the_current_ones_when_the_new_are_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = ApplianceConfig(data_dir=tmp_path)
    keys, renewed = tmp_path / "keys", tmp_path / "renewed"
    assert horodate(["keys", "init", "--dir", str(keys)]) == 0
    first_cert = (keys / "tsa.pem").read_bytes()
    app = build_app(config, appliance=quiet_appliance(config))
    tsa = app[TSA]
    tsa.token_time = lambda: (time.time_ns(), 1_000_000)
    query = build_request(bytes(32), digest=Digest.SHA256, nonce=7)
    try:
        before = tsa.authority
        # The operator puts a renewed key and certificate (here from another CA) in place.
        assert horodate(["keys", "init", "--dir", str(renewed), "--key-type", "ec-p384"]) == 0
        for name in ("tsa.key", "tsa.pem", "chain.pem"):
            os.replace(renewed / name, keys / name)
        assert tsa.reload() is True
        assert tsa.authority is not before and tsa.reloads == {"done": 1}
        assert tsa.chain_pem == (keys / "tsa.pem").read_bytes() + (keys / "chain.pem").read_bytes()
        der, record = tsa.sign(query.der)
        assert record is not None
        verify_reply(der, message_imprint=bytes(32), ca_pem=(renewed / "ca.pem").read_bytes())
        with pytest.raises(VerificationFailed):
            verify_reply(der, message_imprint=bytes(32), ca_pem=(keys / "ca.pem").read_bytes())

        # A certificate that is not the key's: refused, and signing goes on as it was.
        (keys / "tsa.pem").write_bytes(first_cert)
        current, chain = tsa.authority, tsa.chain_pem
        assert tsa.reload() is False
        assert tsa.authority is current and tsa.chain_pem == chain
        assert tsa.reloads == {"done": 1, "refused": 1}
        assert "reload refused, still signing with the certificate in use" in caplog.text
        der, _ = tsa.sign(query.der)
        verify_reply(der, message_imprint=bytes(32), ca_pem=(renewed / "ca.pem").read_bytes())
    finally:
        tsa.serials.close()
