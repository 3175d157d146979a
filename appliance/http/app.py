"""The appliance's aiohttp application: its routes, what they share, RFC 3161 over HTTP.

``create_app`` takes the running services and wires the routes; it does not start any
hardware itself (``appliance.runtime.driver_threads`` does), so tests can hand it whatever
they built. The public socket is the fast lane's (``appliance.http.listening``); this
application answers what the lane hands over.

Error mapping lives here, in one place:

- ``POST /tsa``: protocol problems are answered in the protocol — a DER ``TimeStampResp``
  with a PKIStatus and failInfo, HTTP 200 (RFC 3161 §3.4). Only transport problems get HTTP
  errors: 415 wrong content type, 413 body over ``max_request_bytes``, 405 wrong method.
- ``GET /health``: 200 while issuing, 503 otherwise, JSON either way.
- ``GET /status``: the same facts as an HTML page for a technician, 200 either way
  (``appliance.http.status_page``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from appliance.clock.timekeeper import Timekeeper
from appliance.http.app_keys import (
    CONFIG,
    STARTED,
    TIMEKEEPER,
    TSA,
    WORLD,
    FaultControl,
    ServerConfig,
)
from appliance.http.health import health
from appliance.http.metrics import metrics
from appliance.http.status_page import add_status_page
from appliance.issuance.issuer import TsaService

log = logging.getLogger(__name__)


TSQ_CONTENT_TYPE = "application/timestamp-query"


TSR_CONTENT_TYPE = "application/timestamp-reply"


def create_app(
    config: ServerConfig,
    timekeeper: Timekeeper,
    *,
    tsa: TsaService | None = None,
    world: FaultControl | None = None,
    cleanup: list[Callable[[web.Application], Any]] | None = None,
) -> web.Application:
    """The appliance's aiohttp application.

    ``world`` is the simulated world (``drivers.sim.world.SimWorld``); the ``/sim/faults``
    routes exist only when it is given, i.e. only with ``--simulate``.
    """
    app = web.Application(client_max_size=config.max_request_bytes)
    app[CONFIG] = config
    app[TIMEKEEPER] = timekeeper
    app[STARTED] = time.monotonic()
    if tsa is not None:
        if tsa.token_time is None:
            tsa.token_time = timekeeper.token_time
            tsa.issue_state = lambda: timekeeper.last_issue_state
            tsa.clock_now = timekeeper.clock_now
        app[TSA] = tsa
        app.cleanup_ctx.append(_expiry_watch)
        app.router.add_route("*", "/tsa", tsa_endpoint)
        app.router.add_get("/tsa/certs", tsa_certs)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    add_status_page(app)  # GET /status, and the timer recording its plots' history
    if world is not None:
        if not config.simulate:
            raise ValueError("fault injection exists only with --simulate")
        app[WORLD] = world
        app.router.add_get("/sim/faults", get_faults)
        app.router.add_post("/sim/faults", post_faults)
        app.router.add_delete("/sim/faults", delete_faults)
    for ctx in cleanup or ():
        app.cleanup_ctx.append(ctx)
    return app


EXPIRY_CHECK_S = 86_400.0  # how often a running appliance re-checks its certificate's expiry


async def _expiry_watch(app: web.Application) -> AsyncIterator[None]:
    """Each day, the expiry warning again while it applies: an appliance that runs for
    months crosses the warning's threshold without a restart to log it."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            app[TSA].warn_if_expiring()

    task = asyncio.get_running_loop().create_task(watch())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def tsa_endpoint(request: web.Request) -> web.StreamResponse:
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["POST"], text="POST a timestamp-query\n")
    if request.content_type != TSQ_CONTENT_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"expected Content-Type: {TSQ_CONTENT_TYPE}\n")
    body = await request.read()  # over client_max_size: aiohttp answers 413 itself
    der = await request.app[TSA].answer(body)
    return web.Response(body=der, content_type=TSR_CONTENT_TYPE)


async def tsa_certs(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[TSA].chain_pem, content_type="application/pem-certificate-chain"
    )


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[WORLD].faults_json())


async def post_faults(request: web.Request) -> web.Response:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise web.HTTPBadRequest(text=f"body is not JSON: {e}\n") from e
    try:
        request.app[WORLD].set_faults_json(data)
    except ValueError as e:  # the world's FaultError: a fault it cannot apply
        return web.json_response({"error": str(e)}, status=400)
    return web.json_response(request.app[WORLD].faults_json())


async def delete_faults(request: web.Request) -> web.Response:
    request.app[WORLD].clear_faults()
    return web.json_response(request.app[WORLD].faults_json())
