"""The appliance's configuration: a TOML file, every value with its unit in its name.

Command-line flags (``--simulate``, ``--data-dir``, ``--listen``) override the file. An
unknown key is an error, never ignored: a typo in a timing appliance's configuration must
not silently fall back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = ("127.0.0.1", 3180)
DEFAULT_DATA_DIR = Path("/var/lib/horodate/appliance")
# The policy under which tokens are issued by default: a UUID-based OID (ITU-T X.667,
# arc 2.25), which needs no registration. An operator sets the policy OID their
# certification declares (e.g. ETSI EN 319 421's 0.4.0.2023.1.1 for BTSP).
DEFAULT_POLICY_OID = "2.25.237310527960284189573395670102395883241"


class ConfigError(ValueError):
    """The configuration cannot be used (unreadable file, unknown key, bad value)."""


@dataclass(frozen=True, slots=True)
class GpsSection:
    device: str | None = "/dev/serial0"  # None: no GPS
    baudrate: int = 9600
    latency_s: float | None = None  # None: the driver's NMEA-only default
    uncertainty_s: float | None = None
    pps_device: str | None = None  # e.g. "/dev/pps0"


@dataclass(frozen=True, slots=True)
class NtpSection:
    servers: tuple[str, ...] = ()  # "host" or "host:port"
    poll_interval_s: float = 64.0
    timeout_s: float = 2.0


@dataclass(frozen=True, slots=True)
class RtcSection:
    i2c_bus: int | None = 1  # None: no RTC
    address: int = 0x68


@dataclass(frozen=True, slots=True)
class ClockSection:
    quorum: int = 2  # independent agreeing source classes needed to issue
    max_error_s: float = 1.0  # ETSI EN 319 421: refuse beyond this bound
    # Agreeing sources that may lie *within* the others' intervals without the bound losing
    # the truth (ADR 0003). 1: safe against one liar; 0: the plain intersection, which is
    # what lets PPS give a microsecond bound, trusting the receiver not to lie.
    hidden_faults: int = 1
    # The IERS/IETF leap-seconds.list (Debian's tzdata ships one); "" for none.
    leap_seconds_file: str = "/usr/share/zoneinfo/leap-seconds.list"


@dataclass(frozen=True, slots=True)
class TsaSection:
    key_file: str = "keys/tsa.key"  # relative paths are under the data directory
    cert_file: str = "keys/tsa.pem"
    chain_file: str | None = "keys/chain.pem"
    policy_oid: str = DEFAULT_POLICY_OID
    accepted_policies: tuple[str, ...] = ()
    max_request_bytes: int = 16 * 1024
    # Worker processes that also answer POST /tsa on the listening socket, beside the main
    # process (ADR 0007); 0: the main process alone. 1 serves the most on 2 cores.
    workers: int = 0


@dataclass(frozen=True, slots=True)
class LedsSection:
    """Status LEDs (docs/leds.md): each a GPIO pin by Blinka's board name ("D17" is GPIO 17,
    header pin 11), or None for no such LED. Green: issuing; amber: holdover; red: refusing."""

    green: str | None = None
    amber: str | None = None
    red: str | None = None

    def __post_init__(self) -> None:
        named = {k: getattr(self, k) for k in ("green", "amber", "red")}
        for key, pin in named.items():
            if pin is not None and not (isinstance(pin, str) and pin.isidentifier()):
                raise ConfigError(f'[leds] {key}: expected a pin name such as "D17"')
        pins = [p for p in named.values() if p is not None]
        if len(set(pins)) != len(pins):
            raise ConfigError("[leds]: two LEDs on one pin")


MAX_WORKERS = 32


@dataclass(frozen=True, slots=True)
class ApplianceConfig:
    listen_host: str = DEFAULT_LISTEN[0]
    listen_port: int = DEFAULT_LISTEN[1]
    data_dir: Path = DEFAULT_DATA_DIR
    simulate: bool = False
    gps: GpsSection = field(default_factory=GpsSection)
    ntp: NtpSection = field(default_factory=NtpSection)
    rtc: RtcSection = field(default_factory=RtcSection)
    clock: ClockSection = field(default_factory=ClockSection)
    tsa: TsaSection = field(default_factory=TsaSection)
    leds: LedsSection = field(default_factory=LedsSection)

    def path(self, relative: str) -> Path:
        """A path from the configuration, relative ones taken under the data directory."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else self.data_dir / candidate

    def with_overrides(
        self,
        *,
        simulate: bool | None = None,
        data_dir: Path | None = None,
        listen: str | None = None,
        workers: int | None = None,
    ) -> ApplianceConfig:
        config = self
        if workers is not None:
            config = replace(config, tsa=replace(config.tsa, workers=_workers(workers)))
        if simulate is not None:
            config = replace(config, simulate=simulate)
        if data_dir is not None:
            config = replace(config, data_dir=data_dir)
        if listen is not None:
            host, port = parse_listen(listen)
            config = replace(config, listen_host=host, listen_port=port)
        return config


def _workers(n: int) -> int:
    if not 0 <= n <= MAX_WORKERS:
        raise ConfigError(f"[tsa] workers: expected 0 to {MAX_WORKERS}, got {n}")
    return n


def parse_host_port(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, or, with a ``default_port``, a bare ``HOST`` or IPv6
    address (``2001:db8::1``, ``::1``) → (host, port)."""
    bare_ipv6 = text.count(":") > 1 and not text.startswith("[")
    if default_port is not None and (":" not in text or bare_ipv6):
        if not text:
            raise ConfigError("empty host")
        return text, default_port
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"address {text!r}: expected HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError as e:
        raise ConfigError(f"address {text!r}: port is not a number") from e
    if not 0 <= port <= 65535:
        raise ConfigError(f"address {text!r}: port out of range")
    return host, port


def parse_listen(text: str) -> tuple[str, int]:
    """A listening address: ``HOST:PORT`` (``[::1]:3180`` for IPv6)."""
    return parse_host_port(text)


def _section(cls: type[Any], name: str, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"[{name}] unknown key {key!r} (known: {', '.join(known)})")
        default = known[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"[{name}] {key}: expected true or false")
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[{name}] {key}: expected a list of strings")
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif (default is not None and not isinstance(value, type(default))) or (
            isinstance(value, bool) and not isinstance(default, bool)
        ):
            raise ConfigError(f"[{name}] {key}: expected {type(default).__name__}")
        values[key] = value
    return cls(**values)


def load_config(path: Path | None) -> ApplianceConfig:
    """Read a TOML configuration; ``None`` gives the defaults."""
    if path is None:
        return ApplianceConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    sections = {
        "gps": GpsSection,
        "ntp": NtpSection,
        "rtc": RtcSection,
        "clock": ClockSection,
        "tsa": TsaSection,
        "leds": LedsSection,
    }
    top = dict(data.pop("appliance", {}))
    unknown = set(data) - set(sections)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    config = ApplianceConfig(
        **{name: _section(cls, name, data[name]) for name, cls in sections.items() if name in data}
    )
    _workers(config.tsa.workers)
    for key, value in top.items():
        if key == "listen":
            host, port = parse_listen(str(value))
            config = replace(config, listen_host=host, listen_port=port)
        elif key == "data_dir":
            config = replace(config, data_dir=Path(str(value)))
        elif key == "simulate":
            if not isinstance(value, bool):
                raise ConfigError("[appliance] simulate: expected true or false")
            config = replace(config, simulate=value)
        else:
            raise ConfigError(
                f"[appliance] unknown key {key!r} (known: listen, data_dir, simulate)"
            )
    return config
