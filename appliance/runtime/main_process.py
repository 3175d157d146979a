"""The main process's life: serve until SIGINT or SIGTERM, reload on SIGHUP, and run the TSA
worker processes and the time publisher beside the application when there are workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aiohttp import web

from appliance.config import ApplianceConfig
from appliance.http.app_keys import TIMEKEEPER, TSA, WORKERS
from appliance.http.listening import listening
from appliance.runtime.shared_clock import SharedClock, TicketPublisher
from appliance.runtime.signals import reload_was_asked
from appliance.runtime.vitals import ApplianceVitals, Vitals
from appliance.runtime.workers import WorkerPool

log = logging.getLogger(__name__)

Supervise = Callable[[Callable[[], Vitals]], AbstractAsyncContextManager[None]]


async def serve_forever(
    app: web.Application,
    public: socket.socket,
    *,
    config: ApplianceConfig | None = None,
    shared: SharedClock | None = None,
    supervise: Supervise | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; with ``shared``, beside ``shared.workers`` worker
    processes (``appliance.runtime.workers``) answering on the same socket. SIGHUP: every process
    reads the TSA key and certificate again (:meth:`TsaService.reload`). ``supervise``: what
    runs around serving once the appliance listens, given its vitals (systemd's
    notifications, ``horodate.sd_notify``)."""
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
        async with contextlib.AsyncExitStack() as serving:
            if pool is not None:
                assert shared is not None
                await serving.enter_async_context(
                    workers_running(app, pool, shared, public, where.backend)
                )
            if supervise is not None:
                await serving.enter_async_context(supervise(ApplianceVitals(app, pool)))
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
