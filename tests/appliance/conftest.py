"""Fixtures for the appliance's HTTP tests: a timekeeper on a virtual clock fed with
synthetic samples, a TSA service built from a real development PKI, and ``serve``: an
application served as production serves it (``appliance.http.listening``: the fast lane on
a real TCP socket, aiohttp behind it), reached by a real HTTP client."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from appliance.clock import Policy
from appliance.clock.timekeeper import Timekeeper
from appliance.http.listening import Listening, bind_public, listening
from appliance.issuance.issuer import TsaService
from appliance.issuance.log import IssuanceLog
from appliance.issuance.serials import SerialAllocator
from appliance.tsa import TimeStampAuthority
from appliance.tsa.credentials import load_credentials
from appliance.tsa.dev_pki import init_dev_pki
from drivers.sample import SourceKind, TimeSample

NS = 1_000_000_000
POLICY_OID = "2.25.237310527960284189573395670102395883241"


class VirtualClock:
    def __init__(self, start_ns: int = 5_000 * NS) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * NS)


def feed_agreeing_sources(tk: Timekeeper, clock: VirtualClock, *, seconds: int = 5) -> None:
    """GPS every second and NTP at the start, both honest: enough for a quorum."""
    utc0 = 1_800_000_000 * NS
    for i in range(seconds):
        m = clock()
        utc = utc0 + (m - 5_000 * NS)
        tk.add(
            TimeSample(
                source="gps0",
                kind=SourceKind.GPS,
                mono_ns=m,
                utc_ns=utc,
                error_ns=450_000_000,
                trusted=True,
            )
        )
        if i == 0:
            tk.add(
                TimeSample(
                    source="ntp:test",
                    kind=SourceKind.NTP,
                    mono_ns=m,
                    utc_ns=utc,
                    error_ns=2_000_000,
                    trusted=True,
                )
            )
        if i < seconds - 1:
            clock.advance(1)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def timekeeper(clock: VirtualClock) -> Timekeeper:
    return Timekeeper(Policy(), clock=clock)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return init_dev_pki(tmp_path_factory.mktemp("pki"), now=dt.datetime.now(dt.UTC))


def make_tsa_service(pki, where: Path, *, issuance_log: object | None = None) -> TsaService:  # type: ignore[no-untyped-def]
    """A TSA service signing with ``pki``'s TSA key, its serials and log in ``where``;
    :func:`close_tsa_service` after."""
    creds = load_credentials(pki.tsa_key, pki.tsa_cert, pki.chain, now=dt.datetime.now(dt.UTC))
    if issuance_log is None:
        log = IssuanceLog(where / "issued.log")
        log.start()
        issuance_log = log
    return TsaService(
        authority=TimeStampAuthority(creds, policy_oid=POLICY_OID),
        serials=SerialAllocator(where / "serials.state", create=True),
        issuance_log=issuance_log,
        chain_pem=creds.chain_pem(),
        days_to_expiry=lambda: 100.0,
    )


def close_tsa_service(service: TsaService) -> None:
    if isinstance(service.issuance_log, IssuanceLog):
        service.issuance_log.close()
    service.serials.close()


@pytest.fixture
def tsa_service(pki, tmp_path: Path) -> Callable[..., TsaService]:  # type: ignore[no-untyped-def]
    made: list[TsaService] = []

    def make(*, issuance_log: object | None = None) -> TsaService:
        service = make_tsa_service(pki, tmp_path, issuance_log=issuance_log)
        made.append(service)
        return service

    yield make
    for service in made:
        close_tsa_service(service)


HOST = "127.0.0.1"


@dataclass
class Served:
    """An application behind the fast lane on a real socket, and HTTP clients for it.

    ``POST /tsa`` goes on a connection of its own each time (as a TSA client's, which only
    ever posts queries): the lane answers a plain one. Every other request goes on the
    other session's keep-alive connections, which the lane hands over to the application
    at their first request (from then on, aiohttp answers everything on them).
    """

    app: web.Application
    where: Listening
    session: aiohttp.ClientSession  # GET, DELETE, other POSTs
    tsa_session: aiohttp.ClientSession  # POST /tsa, a new connection each

    @property
    def port(self) -> int:
        return self.where.port

    def url(self, path: str = "") -> str:
        return f"http://{HOST}:{self.where.port}{path}"

    def get(self, path: str, **kw: Any) -> Any:
        return self.session.get(self.url(path), **kw)

    def post(self, path: str, **kw: Any) -> Any:
        session = self.tsa_session if path == "/tsa" else self.session
        return session.post(self.url(path), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.session.delete(self.url(path), **kw)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Awaitable[Served]]]:
    """``await serve(app)``: ``app`` listening as in production until the test ends."""
    async with AsyncExitStack() as stack:

        async def start(app: web.Application) -> Served:
            where = await stack.enter_async_context(listening(app, bind_public(HOST, 0)))
            session = await stack.enter_async_context(aiohttp.ClientSession())
            tsa_session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
            )
            return Served(app, where, session, tsa_session)

        yield start
