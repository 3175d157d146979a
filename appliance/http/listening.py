"""How the appliance listens: the fast lane on the public address, aiohttp behind it.

The aiohttp application (every route: ``/tsa``, ``/tsa/certs``, ``/health``, ``/metrics``,
``/sim/faults``) listens on a private, abstract Unix socket; the public TCP socket is
served by :class:`appliance.http.fastlane.FastLane`, which answers plain ``POST /tsa`` itself
and passes every other request through to the application (ADR 0007).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, MutableSequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from appliance.http.app_keys import CONFIG, TSA
from appliance.http.balancing import BalancedAcceptor
from appliance.http.fastlane import FastLane, LaneConfig
from appliance.http.group_commit import Flush, Tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Listening:
    """Where a running appliance answers."""

    host: str
    port: int
    backend: str  # the application's Unix socket (abstract: starts with NUL)


def abstract_socket_name(role: str) -> str:
    """A fresh name in Linux's abstract Unix socket namespace (no file to clean up)."""
    return f"\0horodate-{role}-{os.getpid()}-{secrets.token_hex(6)}"


def bind_public(host: str, port: int) -> socket.socket:
    """The public listening socket (``port`` 0: the kernel picks one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def listening(
    app: web.Application,
    public: socket.socket,
    *,
    tokens: Tokens | None = None,
    balance: tuple[MutableSequence[int], int] | None = None,
) -> AsyncIterator[Listening]:
    """Run ``app`` behind a fast lane on ``public`` until the context exits.

    ``tokens`` answers each plain ``POST /tsa`` on the lane (default: the app's own
    ``TsaService``; without a TSA every request goes to the application). ``balance``:
    the connection counts of the processes sharing ``public`` and this process's slot
    (:class:`~appliance.http.balancing.BalancedAcceptor`).
    """
    loop = asyncio.get_running_loop()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()  # the app's startup: hardware, issuance log
    server: asyncio.AbstractServer | BalancedAcceptor | None = None
    flush: Flush | None = None
    backend_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        name = abstract_socket_name("app")
        backend_sock.bind(name)
        backend_sock.listen(128)
        await web.SockSite(runner, backend_sock).start()
        if tokens is None and TSA in app:
            tokens = app[TSA]
        config = LaneConfig(max_body=app[CONFIG].max_request_bytes, backend=name)
        flush = Flush(tokens)  # no TSA: every request is handed over to the application
        lanes = flush.lanes
        if balance is None:
            server = await loop.create_server(lambda: FastLane(flush, config), sock=public)
        else:
            counts, me = balance
            server = BalancedAcceptor(
                public, lambda: FastLane(flush, config), lambda: len(lanes), counts, me
            )
        host, port = public.getsockname()[:2]
        yield Listening(host=host, port=port, backend=name)
    finally:
        if server is not None:
            server.close()
        if flush is not None:
            flush.close_all()  # asyncio's close() leaves accepted connections open
        await runner.cleanup()  # the app's cleanup: hardware stopped, log closed
        backend_sock.close()
