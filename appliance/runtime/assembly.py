"""Putting the appliance together from its configuration: keys, serials, issuance log,
drivers, clock and HTTP server.

Startup refuses clearly rather than half-starts: a missing or invalid TSA key, a serial
state that exists without its issuance log (or the reverse) are errors an operator must
look at. Only with ``--simulate`` are development keys created on the fly.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from appliance.config import ApplianceConfig
from appliance.http.app import create_app
from appliance.http.app_keys import ServerConfig
from appliance.issuance.issuer import TsaService
from appliance.runtime.driver_threads import Appliance
from appliance.runtime.vitals import APPLIANCE

if TYPE_CHECKING:
    from appliance.tsa.credentials import TsaCredentials
    from appliance.tsa.engine import GenTimeFloor
log = logging.getLogger(__name__)


SERIAL_STATE = "serials.state"


ISSUANCE_LOG = "issued.log"


class StartupError(Exception):
    """The appliance cannot start with this configuration; the message says why."""


@dataclass(frozen=True, slots=True)
class KeyPaths:
    key: Path
    cert: Path
    chain: Path | None


def key_paths(config: ApplianceConfig) -> KeyPaths:
    chain = config.tsa.chain_file
    return KeyPaths(
        key=config.path(config.tsa.key_file),
        cert=config.path(config.tsa.cert_file),
        chain=None if chain is None else config.path(chain),
    )


def ensure_dev_keys(config: ApplianceConfig) -> KeyPaths:
    """With ``--simulate``: create a development PKI in the data directory if none is there."""
    from appliance.tsa.dev_pki import init_dev_pki

    paths = key_paths(config)
    if paths.key.exists():
        return paths
    keys_dir = config.data_dir / "keys"
    log.warning(
        "no TSA key in %s: creating a DEVELOPMENT CA and TSA key (simulation only)", keys_dir
    )
    pki = init_dev_pki(keys_dir, now=dt.datetime.now(dt.UTC))
    return KeyPaths(key=pki.tsa_key, cert=pki.tsa_cert, chain=pki.chain)


def build_tsa(
    config: ApplianceConfig,
    paths: KeyPaths,
    *,
    instance: str = "",
    gen_floor: GenTimeFloor | None = None,
) -> TsaService:
    """The RFC 3161 service: engine, serial numbers, issuance log.

    ``instance`` names a worker process's own serial state and issuance log
    (``serials-w1.state``, ``issued-w1.log``); ``gen_floor`` is the genTime floor shared by
    every process that signs (ADR 0007).
    """
    from appliance.issuance.log import IssuanceLog
    from appliance.issuance.serials import SerialAllocator, SerialError
    from appliance.tsa import TimeStampAuthority
    from appliance.tsa.credentials import load_credentials
    from appliance.tsa.errors import CredentialsError

    def load() -> TsaCredentials:
        return load_credentials(paths.key, paths.cert, paths.chain, now=dt.datetime.now(dt.UTC))

    try:
        creds = load()
    except CredentialsError as e:
        raise StartupError(
            f"{e} (create development keys with `horodate keys init --dir DIR`)"
        ) from e
    authority = TimeStampAuthority(
        creds,
        policy_oid=config.tsa.policy_oid,
        accepted_policies=frozenset(config.tsa.accepted_policies),
        max_accuracy_us=round(config.clock.max_error_s * 1_000_000),
        gen_floor=gen_floor,
    )
    serial_path = config.data_dir / instance_file(SERIAL_STATE, instance)
    log_path = config.data_dir / instance_file(ISSUANCE_LOG, instance)
    first_start = not serial_path.exists() and not log_path.exists()
    if not first_start and not serial_path.exists():
        raise StartupError(
            f"{log_path} exists but the serial state {serial_path} is missing: refusing to "
            "start, serial numbers could repeat (restore the state file from backup)"
        )
    try:
        serials = SerialAllocator(serial_path, create=first_start)
    except SerialError as e:
        raise StartupError(str(e)) from e
    issuance_log = IssuanceLog(log_path)
    service = TsaService(
        authority=authority, serials=serials, issuance_log=issuance_log, load_credentials=load
    )
    service.adopt(creds)
    return service


def instance_file(name: str, instance: str) -> str:
    """``serials.state`` → ``serials-w1.state`` for instance ``-w1``."""
    stem, dot, suffix = name.partition(".")
    return f"{stem}{instance}{dot}{suffix}"


def build_app(
    config: ApplianceConfig,
    *,
    appliance: Appliance | None = None,
    gen_floor: GenTimeFloor | None = None,
) -> web.Application:
    """The whole appliance as one aiohttp application; hardware starts with the app."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = ensure_dev_keys(config) if config.simulate else key_paths(config)
    appliance = appliance or Appliance.from_config(config)
    timekeeper = appliance.timekeeper
    try:
        tsa = build_tsa(config, paths, gen_floor=gen_floor)
    except BaseException:
        appliance.stop()
        raise

    issuance_log = tsa.issuance_log
    assert issuance_log is not None

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        issuance_log.start()
        appliance.start()
        try:
            yield
        finally:
            appliance.stop()
            issuance_log.close()
            tsa.serials.close()

    app = create_app(
        ServerConfig(max_request_bytes=config.tsa.max_request_bytes, simulate=config.simulate),
        timekeeper,
        tsa=tsa,
        world=appliance.sources.world,
        cleanup=[lifecycle],
    )
    app[APPLIANCE] = appliance  # its threads and sources, for the vitals systemd is told
    return app
