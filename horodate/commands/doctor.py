"""``horodate doctor``: is this host fit to run the appliance, and what to type if not."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.doctor import Diagnosis

DEFAULT_CONFIG = "/etc/horodate/appliance.toml"
VAULT_DATA_DIR = "/var/lib/horodate/vault"  # systemd/horodate.tmpfiles
HEALTH_TIMEOUT_S = 3.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this host for the appliance, and print the fix for each problem",
        description="On a Raspberry Pi: the UART and serial console, the GPS's serial "
        "device, I2C and the DS3231, PPS; everywhere: NTP servers, the TSA key and "
        "certificates, the data directories' space and fsync time, the running "
        "appliance's clock. One line per check (ok, warn, FAIL, skip), the fix below. "
        "Exit status 1 when a check FAILs.",
    )
    p.add_argument(
        "--config",
        type=Path,
        help=f"the appliance's configuration (default {DEFAULT_CONFIG} when it exists)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document, for machines")
    p.add_argument(
        "--offline", action="store_true", help="do not ask the NTP servers nor the appliance"
    )
    p.add_argument(
        "--url", help="the running appliance (default: [appliance] listen of the configuration)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help=f"another data directory to check (the vault's, {VAULT_DATA_DIR}, when it exists)",
    )
    # The tests' fake sysfs/devfs/boot tree; every system path is read under it.
    p.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    from appliance.config import ConfigError, load_config
    from appliance.doctor import Finding, Host, Probes, Verdict, diagnose
    from appliance.doctor.peers import ntplib_query

    host = Host(args.root)
    notes: list[Finding] = []
    config_path = args.config
    if config_path is None and host.exists(DEFAULT_CONFIG):
        config_path = host.path(DEFAULT_CONFIG)
    elif config_path is None:
        notes.append(
            Finding(
                "config",
                Verdict.WARN,
                f"no {DEFAULT_CONFIG}: checking the defaults",
                ("sudo install -m 644 systemd/appliance.toml.example " + DEFAULT_CONFIG,),
            )
        )
    try:
        config = load_config(config_path)
    except ConfigError as e:
        print(f"horodate doctor: {e}", file=sys.stderr)
        return 2
    if config_path is not None:
        notes.append(Finding("config", Verdict.OK, str(config_path)))
    url = args.url or f"http://{_url_host(config.listen_host)}:{config.listen_port}"
    probes = (
        Probes(health_url=url)
        if args.offline
        else Probes(ntp=ntplib_query, health=lambda: _health(url), health_url=url)
    )
    extra = list(args.data_dir)
    if not extra and host.path(VAULT_DATA_DIR).is_dir():
        extra.append(Path(VAULT_DATA_DIR))
    diagnosis = diagnose(config, host, now=dt.datetime.now(dt.UTC), probes=probes, data_dirs=extra)
    diagnosis = type(diagnosis)(diagnosis.board, (*notes, *diagnosis.findings))
    if args.json:
        print(json.dumps(diagnosis.as_json(), indent=2, ensure_ascii=False))
    else:
        print(render(diagnosis, color=sys.stdout.isatty()))
    return 1 if diagnosis.failed else 0


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _health(url: str) -> dict[str, Any]:
    """The running appliance's ``/health`` (a 503, not issuing, still carries it)."""
    from appliance.doctor.peers import ProbeError
    from horodate.commands.status import fetch_health

    try:
        return fetch_health(url, HEALTH_TIMEOUT_S)
    except (OSError, ValueError) as e:
        raise ProbeError(str(getattr(e, "reason", None) or e)) from e


_COLOURS = {"ok": "32", "warn": "33", "FAIL": "31", "skip": "2"}


def render(diagnosis: Diagnosis, *, color: bool = False) -> str:
    """One line per check, its fix (and what it saw) indented below."""
    width = max((len(f.check) for f in diagnosis.findings), default=0)
    lines = [f"board  {diagnosis.board or 'not a Raspberry Pi'}"]
    for f in diagnosis.findings:
        word = f"{f.verdict.value:<4}"
        if color:
            word = f"\033[{_COLOURS[f.verdict.value]}m{word}\033[0m"
        lines.append(f"{word}  {f.check:<{width}}  {f.summary}")
        lines.extend(f"      {d}" for d in f.details)
        lines.extend(f"      fix: {fix}" for fix in f.fix)
    failed = sum(f.verdict.value == "FAIL" for f in diagnosis.findings)
    warned = sum(f.verdict.value == "warn" for f in diagnosis.findings)
    lines.append(
        f"{failed} FAIL, {warned} warn"
        if failed or warned
        else "all checks passed (skipped ones say what they could not check)"
    )
    return "\n".join(lines)
