"""The vault under test, sealing with a real appliance: the appliance's RFC 3161 engine
and HTTP app (fed agreeing simulated time samples) served as in production (the fast lane
on a real loopback port, ``appliance.http.listening``), reached by the vault's aiohttp TSA
client; the vault's own app through ``aiohttp_client``."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from appliance.http.app import create_app as create_appliance_app
from appliance.http.app_keys import ServerConfig
from appliance.http.listening import bind_public, listening
from daemon.clock import utc_now, utc_text
from daemon.http.app import create_app
from daemon.keys import new_token, token_hash
from daemon.store import Store, TokenRow
from daemon.vault import Vault, VaultConfig
from tests.appliance.conftest import (  # noqa: F401 - fixtures
    VirtualClock,
    clock,
    feed_agreeing_sources,
    pki,
    timekeeper,
    tsa_service,
)
from timestamping.aio_client import AsyncTsaClient, ClientPolicy

EXAMPLE = {
    "establishment": "CFA-LYON-02",
    "kind": "student_signed",
    "session": {
        "id": "S-1042",
        "version": 1,
        "training_action": "BTS SIO",
        "title": "Réseaux",
        "start": "2026-11-30T09:00:00+01:00",
        "end": "2026-11-30T12:00:00+01:00",
        "place": "B12",
    },
    "teacher": {"id": "T-07", "name": "Claire Martin"},
    "student": {"ine": "0123456789M", "birth_date": "2004-05-17", "name": "Léa Dubois"},
    "occurred_at": "2026-11-30T09:03:12+01:00",
    "capture": {"method": "qr"},
}


# One start for the whole run (a session's times are its identity at a version); the
# session lasts 3 hours from an hour before the run began.
SESSION_START = (
    dt.datetime.now(dt.timezone(dt.timedelta(hours=1))) - dt.timedelta(hours=1)
).replace(microsecond=0)


def entry_now(
    kind: str = "student_signed", *, session: str = "S-1", minutes_ago: float = 5, **extra: Any
) -> dict[str, Any]:
    """An entry for a session running now (so that it is inside its signing window)."""
    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=1)))
    start = SESSION_START
    e: dict[str, Any] = {
        "establishment": "CFA-LYON-02",
        "kind": kind,
        "session": {
            "id": session,
            "version": 1,
            "training_action": "BTS SIO",
            "start": start.isoformat(timespec="seconds"),
            "end": (start + dt.timedelta(hours=3)).isoformat(timespec="seconds"),
        },
        "teacher": {"id": "T-07", "name": "Claire Martin"},
        "student": {"ine": "0123456789M", "birth_date": "2004-05-17", "name": "Léa Dubois"},
        "occurred_at": (now - dt.timedelta(minutes=minutes_ago)).isoformat(timespec="seconds"),
    }
    if kind in ("roll_call_opened", "teacher_signed", "session_moved", "session_cancelled"):
        del e["student"]
    e.update(extra)
    return e


@dataclass
class Appliance:
    url: str
    ca_pem: bytes
    ca_path: Path
    app: web.Application
    refusing: list[bool]


@pytest.fixture
async def appliance(
    pki: Any,  # noqa: F811 - the fixtures imported above
    timekeeper: Any,  # noqa: F811
    clock: VirtualClock,  # noqa: F811
    tsa_service: Any,  # noqa: F811
) -> AsyncIterator[Appliance]:
    """A real appliance on loopback; ``refusing[0] = True`` makes it answer
    timeNotAvailable (its clock loses every source), as in a GPS+NTP outage."""
    async with appliance_serving(pki, timekeeper, clock, tsa_service()) as a:
        yield a


@contextlib.asynccontextmanager
async def appliance_serving(
    dev_pki: Any,
    keeper: Any,
    virtual_clock: VirtualClock,
    service: Any,
) -> AsyncIterator[Appliance]:
    """The appliance of :func:`appliance` from its parts: another site's is built with a
    development PKI of its own (``tests.appliance.conftest.make_tsa_service``)."""
    feed_agreeing_sources(keeper, virtual_clock)
    refusing = [False]
    original = keeper.token_time

    def token_time() -> Any:
        if refusing[0]:
            from appliance.tsa.errors import TimeNotAvailable

            raise TimeNotAvailable("simulated outage: no source")
        return original()

    service.token_time = token_time
    service.issue_state = lambda: keeper.last_issue_state
    app = create_appliance_app(ServerConfig(simulate=False), keeper, tsa=service)
    async with listening(app, bind_public("127.0.0.1", 0)) as where:
        yield Appliance(
            url=f"http://127.0.0.1:{where.port}/tsa",
            ca_pem=dev_pki.ca_cert.read_bytes(),
            ca_path=dev_pki.ca_cert,
            app=app,
            refusing=refusing,
        )


def make_token(
    vault: Vault,
    role: str,
    establishment: str | None,
    label: str | None = None,
    *,
    token: str | None = None,
) -> str:
    """A bearer token (new, or the one given), written through a connection of its own (the
    vault's writer belongs to its committer thread), as ``horodate vault keys create`` does
    from its process."""
    token = token or new_token()
    store = Store.open(vault.config.data_dir)
    with store.transaction() as w:
        w.add_api_token(
            TokenRow(
                token_hash=token_hash(token),
                role=role,
                establishment=establishment,
                label=label or f"{role}:{establishment}",
                created_at=utc_text(utc_now()),
            )
        )
    store.close()
    return token


@dataclass
class VaultUnderTest:
    client: TestClient
    vault: Vault
    appliance: Appliance
    data_dir: Path
    token: Callable[..., str]

    def headers(self, token: str, key: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {token}"}
        if key is not None:
            h["Idempotency-Key"] = key
        return h


@pytest.fixture
def vault_config(tmp_path: Path, appliance: Appliance) -> VaultConfig:
    return VaultConfig(
        data_dir=tmp_path / "vault",
        tsa_urls=(appliance.url,),
        tsa_ca=appliance.ca_path,
        checkpoint_interval_s=0.2,
        sealer_interval_s=0.1,
        inline_seal_timeout_s=2.0,
    )


@pytest.fixture
async def vault(
    aiohttp_client: Any, appliance: Appliance, vault_config: VaultConfig
) -> AsyncIterator[VaultUnderTest]:
    async with vault_serving(aiohttp_client, appliance, vault_config) as v:
        yield v


@contextlib.asynccontextmanager
async def vault_serving(
    aiohttp_client: Any, appliance: Appliance, config: VaultConfig
) -> AsyncIterator[VaultUnderTest]:
    """The vault of :func:`vault`, for ``config`` (a second one: another site's, a forger's)."""
    policy = ClientPolicy(attempt_timeout_s=2.0, attempts_per_tsa=2, backoff_first_s=0.01)
    async with AsyncTsaClient(config.tsa_urls, appliance.ca_pem, policy=policy) as tsa:
        v = Vault(config, tsa=tsa)
        client = await aiohttp_client(create_app(v))
        yield VaultUnderTest(
            client=client,
            vault=v,
            appliance=appliance,
            data_dir=config.data_dir,
            token=lambda role="establishment", est="CFA-LYON-02", label=None: make_token(
                v, role, est, label
            ),
        )
