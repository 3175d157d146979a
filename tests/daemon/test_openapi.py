"""The OpenAPI 3.1 document: valid, complete, and true — schemathesis fuzzes the running
vault (sealing with a real appliance) from it: no 5xx, statuses, content types and bodies
as documented, whatever it sends."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from daemon.http.openapi import openapi_document
from daemon.keys import new_token

from .conftest import EXAMPLE

APP = Path(__file__).resolve().parents[2] / "daemon" / "http" / "app.py"


def test_every_route_is_documented_and_every_path_is_a_route() -> None:
    routes = set(re.findall(r'r\.add_(?:get|post)\(r?"([^"]+)"', APP.read_text()))
    routes = {re.sub(r"\{(\w+):[^/]+\}", r"{\1}", r) for r in routes}
    assert routes == set(openapi_document()["paths"])


def test_the_document_is_openapi_3_1_and_the_example_entry_fits_it() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    jsonschema.Draft202012Validator.check_schema(schemas["Entry"])
    validator = jsonschema.Draft202012Validator(schemas["Entry"])
    assert not list(validator.iter_errors(EXAMPLE))
    assert list(validator.iter_errors({**EXAMPLE, "colour": "blue"}))
    schemathesis.openapi.from_dict(doc)  # schemathesis reads it (it validates the document)


TOKEN = new_token()  # the live vault's, known before it starts: schemathesis asks for it early


class LiveVault:
    """The appliance and the vault on loopback ports, in a thread with its own loop
    (schemathesis' tests are synchronous)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.url = ""
        self.token = ""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by the fixture
            self.error = e
            self.ready.set()

    async def _main(self) -> None:
        import datetime as dt

        from aiohttp import web

        from appliance.clock import Policy
        from appliance.clock.timekeeper import Timekeeper
        from appliance.http.app import create_app as appliance_app
        from appliance.http.app_keys import ServerConfig
        from appliance.http.listening import bind_public, listening
        from appliance.issuance.issuer import TsaService
        from appliance.issuance.log import IssuanceLog
        from appliance.issuance.serials import SerialAllocator
        from appliance.tsa import TimeStampAuthority
        from appliance.tsa.credentials import load_credentials
        from appliance.tsa.dev_pki import init_dev_pki
        from daemon.http.app import create_app
        from daemon.vault import Vault, VaultConfig
        from tests.appliance.conftest import POLICY_OID, VirtualClock, feed_agreeing_sources
        from timestamping.aio_client import AsyncTsaClient

        from .conftest import make_token

        clock = VirtualClock()
        tk = Timekeeper(Policy(), clock=clock)
        feed_agreeing_sources(tk, clock)
        pki = init_dev_pki(self.tmp / "pki", now=dt.datetime.now(dt.UTC))
        creds = load_credentials(pki.tsa_key, pki.tsa_cert, pki.chain, now=dt.datetime.now(dt.UTC))
        log = IssuanceLog(self.tmp / "issued.log")
        log.start()
        service = TsaService(
            authority=TimeStampAuthority(creds, policy_oid=POLICY_OID),
            serials=SerialAllocator(self.tmp / "serials.state", create=True),
            issuance_log=log,
            chain_pem=creds.chain_pem(),
            days_to_expiry=lambda: 100.0,
        )
        tsa_app = appliance_app(ServerConfig(simulate=False), tk, tsa=service)
        async with (
            listening(tsa_app, bind_public("127.0.0.1", 0)) as tsa_where,  # as in production
            AsyncTsaClient(
                (f"http://127.0.0.1:{tsa_where.port}/tsa",), pki.ca_cert.read_bytes()
            ) as tsa,
        ):
            config = VaultConfig(data_dir=self.tmp / "vault", tsa_urls=tsa.urls, tsa_ca=pki.ca_cert)
            vault = Vault(config, tsa=tsa)
            runner = web.AppRunner(create_app(vault))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            self.token = make_token(vault, "establishment", "CFA-LYON-02", token=TOKEN)
            self.stop = asyncio.Event()
            self.loop = asyncio.get_running_loop()
            self.ready.set()
            await self.stop.wait()
            await runner.cleanup()
        log.close()
        service.serials.close()

    def close(self) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


@pytest.fixture(scope="module")
def live_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveVault]:
    live = LiveVault(tmp_path_factory.mktemp("live"))
    live.thread.start()
    assert live.ready.wait(60), "the vault did not start"
    if live.error is not None:
        raise live.error
    yield live
    live.close()


schema = schemathesis.openapi.from_dict(openapi_document())


@schema.auth()
class _Bearer:
    """Given to schemathesis as the API's authentication, so that it knows the token is
    real and still sends the cases that leave it out or spoil it."""

    def get(self, case: Any, context: Any) -> str:
        return TOKEN

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_holds_to_its_document_under_fuzzing(case: Any, live_vault: LiveVault) -> None:
    # Schemathesis revalidates what is really sent: no query parameter whose value is None
    # (requests drops those, and the request is then a valid one).
    if case.query:
        case.query = {k: v for k, v in case.query.items() if v is not None}
    response = case.call(base_url=live_vault.url)
    # Refusals the document cannot express (an INE whose key is wrong, a session's rules, a
    # birth date without its INE) are 4xx problems on schema-valid requests: that check aside,
    # every other holds — no 5xx, documented statuses, headers, content types and bodies.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
