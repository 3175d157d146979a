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

import ctypes
import fcntl
import logging
import multiprocessing
import os
import struct
import threading
import weakref
from collections.abc import MutableSequence
from pathlib import Path
from typing import Any, Final, cast

from appliance.clock import ClockState, Ensemble, Policy, Window
from appliance.clock import TimeNotAvailable as ClockTimeNotAvailable
from appliance.http.balancing import NOT_ACCEPTING
from appliance.issuance.issuer import TsaTally
from appliance.issuance.log import COMMIT_BUCKETS_S
from appliance.tsa.errors import FailInfo
from appliance.tsa.errors import TimeNotAvailable as TsaTimeNotAvailable
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
        # slot i, the main process in the last (appliance.http.balancing.BalancedAcceptor)
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
