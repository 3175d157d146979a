"""Every check, in the order a technician fixes things: the board and its firmware
settings, the devices, the network, the keys, the disk, then the running clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.config import ApplianceConfig, parse_host_port

from . import boot, credentials, devices, peers, storage
from .findings import Finding, Host, Verdict

# The appliance's system user and its unit's SupplementaryGroups= (systemd/horodate.sysusers,
# systemd/horodate-appliance.service): whose access to the devices and the key counts.
APPLIANCE_USER = "horodate-tsa"
APPLIANCE_GROUPS = frozenset({"dialout", "i2c", "gpio"})
HARDWARE_CHECKS = ("uart", "console", "gps-serial", "i2c", "ds3231", "pps", "leds")
NTP_TIMEOUT_MAX_S = 2.0  # the doctor asks once; it does not wait as long as a poll may


@dataclass(frozen=True, slots=True)
class Probes:
    """How to reach the peers; None: not asked (``--offline``)."""

    ntp: peers.NtpQuery | None = None
    health: peers.Health | None = None
    health_url: str = ""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    board: str | None  # the Raspberry Pi's model, None elsewhere
    findings: tuple[Finding, ...]

    @property
    def failed(self) -> bool:
        return any(f.verdict is Verdict.FAIL for f in self.findings)

    def as_json(self) -> dict[str, object]:
        return {
            "board": self.board,
            "failed": sum(f.verdict is Verdict.FAIL for f in self.findings),
            "warned": sum(f.verdict is Verdict.WARN for f in self.findings),
            "checks": [f.as_json() for f in self.findings],
        }


def diagnose(
    config: ApplianceConfig,
    host: Host,
    *,
    now: dt.datetime,
    probes: Probes,
    data_dirs: Sequence[Path] = (),
) -> Diagnosis:
    """The checks over ``host`` for this configuration; ``data_dirs`` beside the
    appliance's (the vault's, on a host that runs both)."""
    model = boot.raspberry_pi(host)
    findings = list(_hardware(config, host, model))
    findings += _network(config, probes)
    paths = _key_paths(config)
    findings.append(credentials.check_key(host, paths[0], APPLIANCE_USER))
    findings.append(credentials.check_certificates(host, "tsa-cert", paths[1], now))
    findings.append(credentials.check_certificates(host, "tsa-chain", paths[2], now))
    for directory in (config.data_dir, *data_dirs):
        findings.append(storage.check_space(host, str(directory)))
        findings.append(storage.check_fsync(host, str(directory)))
    if probes.health is None:
        findings.append(Finding("clock", Verdict.SKIP, "offline: the appliance not asked"))
    else:
        findings.append(peers.check_ensemble(probes.health, probes.health_url))
    return Diagnosis(None if model is None else model.text, tuple(findings))


def _hardware(config: ApplianceConfig, host: Host, model: boot.PiModel | None) -> list[Finding]:
    if config.simulate:
        return [
            Finding(c, Verdict.SKIP, "simulated hardware ([appliance] simulate)")
            for c in HARDWARE_CHECKS
        ]
    if model is None:
        seen = host.read_text(boot.MODEL_FILE)
        why = (
            f"not a Raspberry Pi ({boot.MODEL_FILE} absent)"
            if seen is None
            else f"not a Raspberry Pi ({boot.MODEL_FILE}: {seen.rstrip(chr(0)).strip()!r})"
        )
        what = {
            "uart": "config.txt's UART settings",
            "console": "the serial console in cmdline.txt",
            "gps-serial": f"the GPS's serial device ({config.gps.device})",
            "i2c": "the I2C bus",
            "ds3231": "whether the kernel holds the DS3231",
            "pps": "the PPS device",
            "leds": "the GPIO for the status LEDs",
        }
        return [Finding(c, Verdict.SKIP, f"{why}: cannot check {what[c]}") for c in HARDWARE_CHECKS]
    account = host.account(APPLIANCE_USER, extra_groups=APPLIANCE_GROUPS)
    config_txt = boot.boot_config(host, model)
    return [
        boot.check_uart(host, model),
        boot.check_console(host, model, config.gps.device),
        devices.check_serial(host, config.gps.device, account),
        devices.check_i2c(host, config.rtc.i2c_bus, account, config_txt),
        devices.check_rtc_free(host, config.rtc.i2c_bus, config.rtc.address, config_txt),
        devices.check_pps(host, config.gps.pps_device, account, config_txt),
        devices.check_leds(host, _led_pins(config), account),
    ]


def _led_pins(config: ApplianceConfig) -> dict[str, str]:
    leds = config.leds
    pins = {"green": leds.green, "amber": leds.amber, "red": leds.red}
    return {colour: pin for colour, pin in pins.items() if pin is not None}


def _network(config: ApplianceConfig, probes: Probes) -> list[Finding]:
    if probes.ntp is None:
        return [Finding("ntp", Verdict.SKIP, "offline: the NTP servers not asked")]
    if config.simulate:
        return [
            Finding("ntp", Verdict.SKIP, "simulated hardware: the NTP server is the simulator's")
        ]
    servers = [parse_host_port(s, default_port=123) for s in config.ntp.servers]
    return peers.check_ntp(servers, probes.ntp, min(config.ntp.timeout_s, NTP_TIMEOUT_MAX_S))


def _key_paths(config: ApplianceConfig) -> tuple[str, str, str | None]:
    chain = config.tsa.chain_file
    return (
        str(config.path(config.tsa.key_file)),
        str(config.path(config.tsa.cert_file)),
        None if chain is None else str(config.path(chain)),
    )
