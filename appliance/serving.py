"""How the appliance listens: the fast lane on the public address, aiohttp behind it.

The aiohttp application (every route: ``/tsa``, ``/tsa/certs``, ``/health``, ``/metrics``,
``/sim/faults``) listens on a private, abstract Unix socket; the public TCP socket is
served by :class:`appliance.fastlane.FastLane`, which answers plain ``POST /tsa`` itself
and passes every other request through to the application (ADR 0007).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import AsyncIterator, MutableSequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from appliance.config import ApplianceConfig
from appliance.fastlane import BalancedAcceptor, FastLane, Flush, LaneConfig, Tokens
from appliance.server import CONFIG, TIMEKEEPER, TSA, WORKERS
from appliance.workers import SharedClock, TicketPublisher, WorkerPool

log = logging.getLogger(__name__)

_RELOAD_ASKED = threading.Event()  # a SIGHUP while the appliance was still starting


def remember_reloads() -> None:
    """From now until the event loop handles it, a SIGHUP (a reload) is remembered
    (:func:`reload_was_asked`) instead of ending the process, its default action. For the
    main process and each TSA worker, at the start of their start-up."""
    signal.signal(signal.SIGHUP, lambda signum, frame: _RELOAD_ASKED.set())


def reload_was_asked() -> bool:
    """Whether a SIGHUP came while starting (once: the request is then forgotten)."""
    asked = _RELOAD_ASKED.is_set()
    _RELOAD_ASKED.clear()
    return asked


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
    (:class:`~appliance.fastlane.BalancedAcceptor`).
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


async def serve_forever(
    app: web.Application,
    public: socket.socket,
    *,
    config: ApplianceConfig | None = None,
    shared: SharedClock | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; with ``shared``, beside ``shared.workers`` worker
    processes (``appliance.workers``) answering on the same socket. SIGHUP: every process
    reads the TSA key and certificate again (:meth:`TsaService.reload`)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    pool = None
    if shared is not None and shared.workers:
        assert config is not None
        pool = WorkerPool(config, shared)
        app[WORKERS] = pool  # before the app is frozen

    def reload() -> None:
        log.info("SIGHUP: reading the TSA key and certificate again")
        if TSA in app:
            app[TSA].reload()
        if pool is not None:
            pool.reload()

    loop.add_signal_handler(signal.SIGHUP, reload)
    if reload_was_asked():  # while starting: the files may have changed since they were read
        reload()
    balance = None if shared is None or pool is None else (shared.connection_counts, shared.workers)
    async with listening(app, public, balance=balance) as where:
        log.info("serving http://%s:%d", where.host, where.port)
        if pool is None:
            await stop.wait()
        else:
            assert shared is not None
            async with workers_running(app, pool, shared, public, where.backend):
                await stop.wait()
        log.info("stopping")


@asynccontextmanager
async def workers_running(
    app: web.Application,
    pool: WorkerPool,
    shared: SharedClock,
    public: socket.socket,
    backend: str,
) -> AsyncIterator[WorkerPool]:
    """The time publisher and the worker processes, for as long as the context lasts."""
    timekeeper = app[TIMEKEEPER]
    publisher = TicketPublisher(timekeeper.ensemble, shared)
    timekeeper.on_sample = publisher.sample_arrived
    publisher.start()
    try:
        await asyncio.to_thread(pool.start, public, backend)
        yield pool
    finally:
        await asyncio.to_thread(pool.stop)
        timekeeper.on_sample = None
        publisher.stop()
