"""Shared fixtures for the TSA tests: development PKIs made by the real ``horodate keys init``.

``tsa_keys`` (session) is the ECDSA P-256 PKI most tests need; ``dev_pki(key_type)`` makes
(once per session) a PKI of another key type; ``credentials(key_type)`` loads one.

Records reach an issuance log in the tests as they do in production, through
``IssuanceLog.submit`` from an event loop: :func:`submit_durably` (in a running loop) and
:func:`write_durably` (from a thread without one) return once the log says they are durable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from appliance.issuance.log import IssuanceLog, IssuanceLogError, Issued, encode_record
from appliance.tsa.credentials import TsaCredentials, load_credentials
from appliance.tsa.dev_pki import DevPki
from horodate.cli import main as horodate_main

POLICY_OID = "1.3.6.1.4.1.99999.1.1"


async def submit_durably(
    issuance_log: IssuanceLog, records: Iterable[Issued], *, callback_within_s: float = 10.0
) -> None:
    """Submit ``records`` as one group, as ``TsaService.commit`` does, and return once
    ``on_durable(True)``. :class:`IssuanceLogError` if ``submit`` refuses them or the log
    calls back ``False``; a failed test if it does not call back within the deadline."""
    durable: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    issuance_log.submit([encode_record(r) for r in records], durable.set_result)
    try:
        async with asyncio.timeout(callback_within_s):
            ok = await durable
    except TimeoutError:
        pytest.fail(f"the issuance log did not call back within {callback_within_s} s")
    if not ok:
        raise IssuanceLogError("on_durable(False): the records are not durable")


def write_durably(
    issuance_log: IssuanceLog, records: Iterable[Issued], *, callback_within_s: float = 10.0
) -> None:
    """:func:`submit_durably` from a thread that runs no event loop (one for the call)."""
    asyncio.run(submit_durably(issuance_log, records, callback_within_s=callback_within_s))


def _paths(directory: Path) -> DevPki:
    return DevPki(
        ca_key=directory / "ca.key",
        ca_cert=directory / "ca.pem",
        tsa_key=directory / "tsa.key",
        tsa_cert=directory / "tsa.pem",
        chain=directory / "chain.pem",
    )


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], DevPki]:
    made: dict[str, DevPki] = {}

    def make(key_type: str = "ec-p256") -> DevPki:
        if key_type not in made:
            directory = tmp_path_factory.mktemp(f"pki-{key_type}")
            rc = horodate_main(["keys", "init", "--dir", str(directory), "--key-type", key_type])
            assert rc == 0, f"horodate keys init --key-type {key_type} failed"
            made[key_type] = _paths(directory)
        return made[key_type]

    return make


@pytest.fixture(scope="session")
def tsa_keys(dev_pki: Callable[[str], DevPki]) -> DevPki:
    """An ECDSA P-256 development PKI written by ``horodate keys init --dir``: its paths
    (``ca_cert``, ``ca_key``, ``tsa_key``, ``tsa_cert``, ``chain``)."""
    return dev_pki("ec-p256")


@pytest.fixture(scope="session")
def credentials(dev_pki: Callable[[str], DevPki]) -> Callable[[str], TsaCredentials]:
    def load(key_type: str = "ec-p256") -> TsaCredentials:
        p = dev_pki(key_type)
        return load_credentials(p.tsa_key, p.tsa_cert, p.chain, now=dt.datetime.now(dt.UTC))

    return load


@pytest.fixture(scope="session")
def openssl() -> str:
    path = shutil.which("openssl")
    assert path, "the openssl command is required (Debian package openssl: make system-deps)"
    return path
