"""Shared fixtures for the TSA tests: development PKIs made by the real ``horodate keys init``.

``tsa_keys`` (session) is the ECDSA P-256 PKI most tests need; ``dev_pki(key_type)`` makes
(once per session) a PKI of another key type; ``credentials(key_type)`` loads one.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.tsa.credentials import TsaCredentials, load_credentials
from appliance.tsa.dev_pki import DevPki
from horodate.cli import main as horodate_main

POLICY_OID = "1.3.6.1.4.1.99999.1.1"


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
