"""TSA worker processes: more cores for ``POST /tsa``, one clock (ADR 0007).

With ``[tsa] workers = N`` the main process (drivers, clock ensemble, the aiohttp
application) starts N worker processes that accept on the same listening socket and answer
plain ``POST /tsa`` through the fast lane; every other request they pass through to the
main process's application, as the main process's own lane does.

What a worker shares with the main process, in shared memory (:class:`SharedClock`):

- **The time ticket.** Every 20 ms (and at once after each sample) the main process
  publishes the ensemble's window at one raw-monotonic instant: at ``m0`` UTC lay in
  ``[lo, hi]``; or that the clock does not issue, and why. A worker answers for its own
  instant ``m`` with ``[lo + (m − m0) − g, hi + (m − m0) + g]``, ``g = |m − m0| ×
  crystal_max_ppm``: the raw monotonic clock is one clock for every process on the host,
  and the policy bounds its frequency error, so the window still holds the truth whenever
  the ensemble's did. A ticket older than 200 ms is not used (timeNotAvailable): a main
  process that stopped publishing stops the workers' tokens too.
- **The genTime floor** (:class:`SharedGenTimeFloor`): genTime never goes backwards
  across all the tokens of the TSA, whichever process signs them.

Both are read and written under :class:`ProcessLock`, an ``flock`` the kernel releases if
its holder dies, so one worker killed at the wrong instant cannot stop the others.

What a worker keeps to itself: its serial-number state and its issuance log
(``serials-wN.state``, ``issued-wN.log``; each its own random instance id, so serials stay
unique), its engine and its counters, which it copies to shared memory each second for
``/metrics``. The main process restarts a worker that dies; a worker whose main process
is gone stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import multiprocessing
import os
import signal
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from appliance.clock import ClockState, Ensemble, Policy, Window
from appliance.clock import TimeNotAvailable as ClockTimeNotAvailable
from appliance.config import ApplianceConfig
from appliance.fastlane import NOT_ACCEPTING
from appliance.metrics import TsaTally
from appliance.tsa.errors import FailInfo
from appliance.tsa.errors import TimeNotAvailable as TsaTimeNotAvailable
from appliance.tsa.journal import COMMIT_BUCKETS_S
from drivers.monotonic import mono_ns

log = logging.getLogger(__name__)

TICKET_INTERVAL_S: Final = 0.02
TICKET_LIFE_NS: Final = 200_000_000
STATS_INTERVAL_S: Final = 1.0
_STATES: Final = tuple(ClockState)
_REASON_BYTES: Final = 240
# ticket slots
_MONO, _LO, _HI, _ISSUING, _STATE, _PUBLISHED = range(6)
_TICKET_READ: Final = struct.Struct("=5q")  # what a token needs: the slots up to _STATE
# counter slots per worker: granted, one per failInfo, then the issuance log's
_FAILS: Final = tuple(FailInfo)
_LOG_FIELDS: Final = ("log_records", "log_bytes", "log_failures", "log_slow_commits")
# then the commits by duration (one slot per bucket), their sum in microseconds
_COMMITS: Final = 1 + len(_FAILS) + len(_LOG_FIELDS)
_COMMIT_US: Final = _COMMITS + len(COMMIT_BUCKETS_S) + 1
_STOPPED: Final = _COMMIT_US + 1  # 1 while the worker's log is stopped
_PER_WORKER: Final = _STOPPED + 1


class ProcessLock:
    """A lock between processes that the kernel releases when its holder dies.

    ``flock`` on a file each process opens for itself (a POSIX semaphore, multiprocessing's
    ``Lock``, would stay taken by a worker killed while holding it, and every token of
    every process would wait forever). A thread lock in front serialises this process's
    own threads, which share one open file. A forked child opens the file again: a lock
    taken through the parent's open file would be the parent's too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch(mode=0o600, exist_ok=True)
        self._fd = -1
        self._threads = threading.Lock()
        _process_locks.add(self)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._fd, self._threads = -1, threading.Lock()
        _process_locks.add(self)

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            if self._fd < 0:  # first use in this process
                self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _forked(self) -> None:
        self._fd, self._threads = -1, threading.Lock()


_process_locks: weakref.WeakSet[ProcessLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lock in _process_locks:
        lock._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SharedGenTimeFloor:
    """The latest genTime of the TSA, in shared memory (``GenTimeFloor``'s interface)."""

    def __init__(self, lock: Any, cell: Any) -> None:
        self.lock = lock
        self._cell = cell

    @property
    def value(self) -> int:
        return int(self._cell.value)

    @value.setter
    def value(self, ns: int) -> None:
        self._cell.value = ns


class SharedClock:
    """The time ticket, the genTime floor and the workers' counters, in shared memory.

    Made by the main process before the workers start and handed to each (it pickles into
    a spawned process). Every read and write of the ticket holds one :class:`ProcessLock`,
    every use of the genTime floor another; their files live in ``lock_dir``.
    """

    def __init__(
        self, *, crystal_max_ppm: float, max_error_ns: int, workers: int, lock_dir: Path
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._lock = ProcessLock(lock_dir / "time-ticket.lock")
        self._ticket = ctx.RawArray(ctypes.c_int64, 6)
        self._reason = ctx.RawArray(ctypes.c_char, _REASON_BYTES)
        self._floor_lock = ProcessLock(lock_dir / "gentime-floor.lock")
        self._floor_cell = ctx.RawValue(ctypes.c_int64, 0)
        # one block per worker, then the tally of workers that died (restarted from zero)
        self._counters = ctx.RawArray(ctypes.c_int64, (workers + 1) * _PER_WORKER)
        # 1 once worker i survives a SIGHUP (it would end a process that is still booting)
        self._takes_reloads = ctx.RawArray(ctypes.c_int8, max(workers, 1))
        # open connections of each process that accepts on the public socket: worker i in
        # slot i, the main process in the last (appliance.fastlane.BalancedAcceptor)
        self.connection_counts = cast(
            MutableSequence[int], ctx.RawArray(ctypes.c_int64, [NOT_ACCEPTING] * (workers + 1))
        )
        self.workers = workers
        # growth of the window per ns of raw-monotonic time, in parts per 10^9
        self._rate_ppb = int(crystal_max_ppm * 1000) + 1
        self._max_error_ns = max_error_ns
        self.last_state = ""  # the state behind the last token_time of this process
        self.refuse("the clock has not published a time yet", ClockState.STARTING.value)

    @classmethod
    def for_policy(cls, policy: Policy, *, workers: int, lock_dir: Path) -> SharedClock:
        return cls(
            crystal_max_ppm=policy.crystal_max_ppm,
            max_error_ns=policy.max_error_ns,
            workers=workers,
            lock_dir=lock_dir,
        )

    @property
    def floor(self) -> SharedGenTimeFloor:
        return SharedGenTimeFloor(self._floor_lock, self._floor_cell)

    # -- the main process ----------------------------------------------------------------

    def publish(self, window: Window) -> None:
        with self._lock:
            t = self._ticket
            t[_MONO], t[_LO], t[_HI] = window.mono_ns, window.lo_ns, window.hi_ns
            t[_ISSUING], t[_STATE], t[_PUBLISHED] = 1, _STATES.index(window.state), 1
            self._reason.value = b""

    def refuse(self, reason: str, state: str) -> None:
        index = next((i for i, s in enumerate(_STATES) if s.value == state), 0)
        encoded = reason.encode("utf-8", "replace")[: _REASON_BYTES - 1]
        with self._lock:
            t = self._ticket
            t[_MONO], t[_ISSUING], t[_STATE], t[_PUBLISHED] = mono_ns(), 0, index, 1
            self._reason.value = encoded

    # -- a worker ------------------------------------------------------------------------

    def token_time(self) -> tuple[int, int]:
        """(utc_ns, bound_ns) now, from the ticket; raises the TSA's ``TimeNotAvailable``."""
        with self._lock:
            m0, lo, hi, issuing, state = _TICKET_READ.unpack_from(self._ticket)
            reason = self._reason.value if not issuing else b""
        m = mono_ns()  # after the ticket was read: m >= m0
        self.last_state = _STATES[state].value
        if not issuing:
            raise TsaTimeNotAvailable(reason.decode("utf-8", "replace") or "time not available")
        age = m - m0
        if not 0 <= age <= TICKET_LIFE_NS:
            raise TsaTimeNotAvailable(
                f"the clock's last word is {age / 1e6:.0f} ms old: the main process is not "
                "publishing the time"
            )
        grow = -(-age * self._rate_ppb // 1_000_000_000)
        lo, hi = lo + age - grow, hi + age + grow
        utc = (lo + hi) // 2
        bound = max(hi - utc, utc - lo)
        if bound > self._max_error_ns:
            raise TsaTimeNotAvailable(f"the bound ({bound / 1e6:.1f} ms) exceeds the maximum")
        return utc, bound

    def record_stats(self, index: int, tally: TsaTally) -> None:
        """Worker ``index``'s counts (:meth:`TsaService.tally`), for the main process."""
        base = index * _PER_WORKER
        c = self._counters
        c[base] = tally.granted
        for i, fail in enumerate(_FAILS, start=1):
            c[base + i] = tally.refused.get(fail.name, 0)
        for i, name in enumerate(_LOG_FIELDS, start=1 + len(_FAILS)):
            c[base + i] = getattr(tally, name)
        for i, n in enumerate(tally.log_commit_counts):
            c[base + _COMMITS + i] = n
        c[base + _COMMIT_US] = round(tally.log_commit_seconds * 1e6)
        c[base + _STOPPED] = tally.logs_stopped

    def retire(self, index: int) -> None:
        """Worker ``index`` died: keep its counts in the tally, its block starts from zero
        (a stopped log is not carried over: the next worker opens the log afresh)."""
        c, base, tally = self._counters, index * _PER_WORKER, self.workers * _PER_WORKER
        for i in range(_STOPPED):
            c[tally + i] += c[base + i]
        for i in range(_PER_WORKER):
            c[base + i] = 0
        self._takes_reloads[index] = 0
        self.connection_counts[index] = NOT_ACCEPTING  # its connections died with it

    def takes_reloads(self, index: int) -> bool:
        """Whether worker ``index`` may be sent SIGHUP (see :meth:`ready_for_reloads`)."""
        return bool(self._takes_reloads[index])

    def ready_for_reloads(self, index: int) -> None:
        """Worker ``index`` handles (or remembers) SIGHUP from now on, and has not read its
        key files yet: a reload before this would end it, and it reads the new files anyway."""
        self._takes_reloads[index] = 1

    def stats(self) -> TsaTally:
        """The workers' counts, all together (those of workers that died included)."""
        total = TsaTally()
        for w in range(self.workers + 1):
            total.add(self._tally_at(w * _PER_WORKER))
        return total

    def _tally_at(self, base: int) -> TsaTally:
        """The counts in the block at ``base`` (what :meth:`record_stats` wrote there)."""
        c = self._counters
        tally = TsaTally(
            granted=c[base],
            log_commit_counts=list(c[base + _COMMITS : base + _COMMIT_US]),
            log_commit_seconds=c[base + _COMMIT_US] / 1e6,
            logs_stopped=c[base + _STOPPED],
        )
        for i, fail in enumerate(_FAILS, start=1):
            if c[base + i]:
                tally.refused[fail.name] = c[base + i]
        for i, name in enumerate(_LOG_FIELDS, start=1 + len(_FAILS)):
            setattr(tally, name, c[base + i])
        return tally


class TicketPublisher:
    """The main process's thread that publishes the ensemble's window for the workers."""

    def __init__(self, ensemble: Ensemble, shared: SharedClock) -> None:
        self._ensemble = ensemble
        self._shared = shared
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="time-ticket", daemon=True)

    def start(self) -> None:
        self.publish_now()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self._shared.refuse("the appliance is stopping", ClockState.STARTING.value)

    def sample_arrived(self) -> None:
        """A new sample may change the verdict: publish without waiting for the tick."""
        self._wake.set()

    def publish_now(self) -> None:
        m = mono_ns()
        try:
            window = self._ensemble.window(m)
        except ClockTimeNotAvailable as e:
            self._shared.refuse(e.reason, e.state or "")
            return
        self._shared.publish(window)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(TICKET_INTERVAL_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.publish_now()
            except Exception:  # a bug; the ticket expires and the workers refuse
                log.exception("workers: publishing the time failed")


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

    @property
    def name(self) -> str:
        return f"w{self.index + 1}"


def worker_main(spec: WorkerSpec) -> None:
    """A worker process: the fast lane over its own engine, serials and issuance log."""
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)-7s %(name)s[{spec.name}]: %(message)s",
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    from appliance.bootstrap import StartupError, build_tsa, ensure_dev_keys, key_paths
    from appliance.serving import remember_reloads

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


async def _serve(spec: WorkerSpec, tsa: Any) -> None:
    from appliance.fastlane import BalancedAcceptor, FastLane, Flush, LaneConfig
    from appliance.serving import reload_was_asked

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, tsa.reload)
    if reload_was_asked():
        tsa.reload()
    lane = LaneConfig(max_body=spec.config.tsa.max_request_bytes, backend=spec.backend)
    assert tsa.journal is not None
    tsa.journal.start()
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
        tsa.journal.close()
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
        level = logging.getLogger().getEffectiveLevel()
        self._specs = [
            WorkerSpec(i, self._config, public, backend, self._shared, level, os.getpid())
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
