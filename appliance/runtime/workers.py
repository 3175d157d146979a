"""TSA worker processes (ADR 0007): what each one runs, and the pool that starts them,
restarts one that dies, and stops them.

A worker answers plain ``POST /tsa`` through the fast lane over its own engine, serials
and issuance log, on the clock the main process shares with it
(:mod:`appliance.runtime.shared_clock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.config import ApplianceConfig
from appliance.issuance.issuer import TsaTally
from appliance.runtime.shared_clock import STATS_INTERVAL_S, SharedClock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs; pickled into it."""

    index: int  # 0-based; files and logs say w{index + 1}
    config: ApplianceConfig
    public: socket.socket
    backend: str
    shared: SharedClock
    log_level: int
    parent_pid: int  # the main process: a worker outliving it stops
    # the main process's (journald's format under systemd); None: the plain one below
    log_formatter: logging.Formatter | None = None

    @property
    def name(self) -> str:
        return f"w{self.index + 1}"


def worker_main(spec: WorkerSpec) -> None:
    """A worker process: the fast lane over its own engine, serials and issuance log."""
    if spec.log_formatter is None:
        logging.basicConfig(
            level=spec.log_level,
            format=f"%(asctime)s %(levelname)-7s %(name)s[{spec.name}]: %(message)s",
        )
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(spec.log_formatter)
        handler.addFilter(_NameTag(f"[{spec.name}]"))
        logging.basicConfig(level=spec.log_level, handlers=[handler])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    from appliance.runtime.assembly import StartupError, build_tsa, ensure_dev_keys, key_paths
    from appliance.runtime.signals import remember_reloads

    remember_reloads()  # the main process passes its SIGHUP on, maybe while this one starts
    spec.shared.ready_for_reloads(spec.index)  # before the key files are read, not after

    config = spec.config
    try:
        paths = ensure_dev_keys(config) if config.simulate else key_paths(config)
        tsa = build_tsa(config, paths, instance=f"-{spec.name}", gen_floor=spec.shared.floor)
    except StartupError as e:
        log.error("worker %s cannot start: %s", spec.name, e)
        raise SystemExit(2) from e
    tsa.token_time = spec.shared.token_time
    tsa.issue_state = lambda: spec.shared.last_state
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(spec, tsa))
    else:
        uvloop.run(_serve(spec, tsa))


class _NameTag(logging.Filter):
    """``appliance.x`` → ``appliance.x[w1]``: which process said it."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self._tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        record.name += self._tag
        return True


async def _serve(spec: WorkerSpec, tsa: Any) -> None:
    from appliance.http.balancing import BalancedAcceptor
    from appliance.http.fastlane import FastLane, LaneConfig
    from appliance.http.group_commit import Flush
    from appliance.runtime.signals import reload_was_asked

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, tsa.reload)
    if reload_was_asked():
        tsa.reload()
    lane = LaneConfig(max_body=spec.config.tsa.max_request_bytes, backend=spec.backend)
    assert tsa.issuance_log is not None
    tsa.issuance_log.start()
    flush = Flush(tsa)
    server = BalancedAcceptor(
        spec.public,
        lambda: FastLane(flush, lane),
        lambda: len(flush.lanes),
        spec.shared.connection_counts,
        spec.index,
    )
    log.info("worker %s answering POST /tsa", spec.name)
    try:
        while not stop.is_set():
            spec.shared.record_stats(spec.index, tsa.tally())
            if os.getppid() != spec.parent_pid:
                # Killed without a word (kill -9, OOM): nobody publishes the time any more,
                # and this process would keep the port from the next start.
                log.error("worker %s: the main process is gone; stopping", spec.name)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATS_INTERVAL_S)
    finally:
        server.close()
        flush.close_all()
        await server.wait_closed()
        spec.shared.record_stats(spec.index, tsa.tally())
        tsa.issuance_log.close()
        tsa.serials.close()
        log.info("worker %s stopped: %d tokens granted", spec.name, tsa.granted)


class RestartBackoff:
    """How long to wait before restarting a worker that died: 1 s, doubling to 30 s while
    it keeps dying soon after each start, back to 1 s once it has run ``healthy_s``."""

    def __init__(self, first_s: float = 1.0, max_s: float = 30.0, healthy_s: float = 60.0) -> None:
        self._first_s, self._max_s, self._healthy_s = first_s, max_s, healthy_s
        self._next_s = first_s

    def delay(self, ran_s: float) -> float:
        """The wait before the next start, for a worker that ran ``ran_s`` seconds."""
        if ran_s >= self._healthy_s:
            self._next_s = self._first_s
        delay, self._next_s = self._next_s, min(self._next_s * 2, self._max_s)
        return delay


class WorkerPool:
    """Starts the worker processes, restarts the ones that die, stops them all."""

    def __init__(
        self,
        config: ApplianceConfig,
        shared: SharedClock,
        *,
        target: Callable[[WorkerSpec], None] = worker_main,
    ) -> None:
        self._config = config
        self._shared = shared
        self._target = target
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._specs: list[WorkerSpec] = []
        self._stopping = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="workers", daemon=True)
        self.restarts = 0

    @property
    def size(self) -> int:
        return len(self._specs)

    def alive(self) -> int:
        return sum(1 for p in self._procs if p.is_alive())

    def dead(self) -> list[str]:
        """The workers not running now (dead, or waiting for their restart): ``w1 (pid N,
        exit status S)``."""
        return [
            f"{spec.name} (pid {p.pid}, exit status {p.exitcode})"
            for spec, p in zip(self._specs, self._procs, strict=False)
            if not p.is_alive()
        ]

    def stats(self) -> TsaTally:
        return self._shared.stats()

    @property
    def pids(self) -> list[int | None]:
        return [p.pid for p in self._procs]

    def reload(self) -> int:
        """Have every running worker read the TSA key and certificate again (SIGHUP, which
        each handles as the main process does); returns how many were asked."""
        asked = 0
        for i, p in enumerate(self._procs):
            # one still booting is not signalled: it will read the files as they are now
            if p.is_alive() and p.pid is not None and self._shared.takes_reloads(i):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGHUP)
                    asked += 1
        return asked

    def start(self, public: socket.socket, backend: str) -> None:
        root = logging.getLogger()
        level = root.getEffectiveLevel()
        # the CLI's own handler (horodate.logs names it), not one a test harness added
        formatter = next((h.formatter for h in root.handlers if h.get_name() == "horodate"), None)
        self._specs = [
            WorkerSpec(
                i, self._config, public, backend, self._shared, level, os.getpid(), formatter
            )
            for i in range(self._shared.workers)
        ]
        self._procs = [self._spawn(spec) for spec in self._specs]
        self._monitor.start()
        log.info("started %d TSA worker processes", len(self._procs))

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self._monitor.is_alive():
            self._monitor.join(2)
        for p in self._procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker finishes what is in flight
        deadline = time.monotonic() + timeout_s
        for p in self._procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                log.error("worker pid %s did not stop in %.0f s; killing it", p.pid, timeout_s)
                p.kill()
                p.join(2)

    def _spawn(self, spec: WorkerSpec) -> Any:
        proc = self._ctx.Process(
            target=self._target, args=(spec,), name=f"horodate-tsa-{spec.name}", daemon=True
        )
        proc.start()
        return proc

    def _watch(self) -> None:
        backoff = [RestartBackoff() for _ in self._procs]
        started = [time.monotonic()] * len(self._procs)
        while not self._stopping.wait(0.5):
            for i, p in enumerate(self._procs):
                if p.is_alive() or self._stopping.is_set():
                    continue
                spec = self._specs[i]
                delay = backoff[i].delay(time.monotonic() - started[i])
                log.error(
                    "worker %s (pid %s) exited with status %s; restarting in %.0f s",
                    spec.name,
                    p.pid,
                    p.exitcode,
                    delay,
                )
                if self._stopping.wait(delay):
                    return
                self._shared.retire(i)
                self._procs[i] = self._spawn(spec)
                started[i] = time.monotonic()
                self.restarts += 1
