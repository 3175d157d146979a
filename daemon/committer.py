"""Group commit: one thread owns the writer connection; every write of the vault goes here.

A caller on the event loop hands a *job* (a function of the :class:`~daemon.store.Writer`)
to :meth:`Committer.run` and awaits it. The thread takes every job waiting at that moment,
runs them in ONE transaction — each inside its own savepoint, so that a job that raises (a
refused entry) is undone alone — and COMMITs once: one fsync for the whole group, as the
appliance's issuance log does. Only after the COMMIT returns are the jobs' results handed
back: nothing is acknowledged before it is durable.

When the COMMIT itself fails (the disk is full, the database is gone), every job of the
group fails with that error and ``on_rollback`` runs on the thread before the next group,
so that the in-memory state that jobs advanced (the tree's size, the sessions) is reloaded
from what the database really holds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from daemon.errors import VaultError
from daemon.store import Store, Writer

log = logging.getLogger("horodate.vault.committer")

T = TypeVar("T")
MAX_GROUP: Final = 1024  # jobs per transaction; the rest wait for the next one
_STOP_TIMEOUT_S: Final = 30.0


@dataclass(slots=True)
class _Job:
    fn: Callable[[Writer], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class CommitStats:
    groups: int = 0
    jobs: int = 0
    failed_groups: int = 0
    last_commit_s: float = 0.0
    commit_seconds: list[float] = field(default_factory=list)  # the last few, for /metrics


class Committer:
    """The vault's one writer. ``async with`` starts and stops its thread."""

    def __init__(self, store: Store, *, on_rollback: Callable[[Writer], None]) -> None:
        self.store = store
        self.on_rollback = on_rollback
        self.stats = CommitStats()
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="vault-committer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT_S)

    def alive(self) -> bool:
        """The writer thread runs (started, not stopped, not dead of an error)."""
        return self._thread is not None and self._thread.is_alive()

    async def run(self, fn: Callable[[Writer], T]) -> T:
        """Run ``fn`` in the next group; its result once the group is durable."""
        loop = asyncio.get_running_loop()
        job = _Job(fn=fn, loop=loop, future=loop.create_future())
        with self._cond:
            if self._stopping:
                raise VaultError("the vault is stopping")
            self._queue.append(job)
            self._cond.notify()
        result: T = await job.future
        return result

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                group = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_GROUP))]
            self._commit(group)

    def _commit(self, group: list[_Job]) -> None:
        started = time.monotonic()
        try:
            with self.store.transaction():
                for job in group:
                    try:
                        with self.store.savepoint() as writer:
                            job.result = job.fn(writer)
                    except VaultError as e:
                        job.error = e
        except Exception as e:  # the COMMIT (or BEGIN) failed: nothing of the group is stored
            self.stats.failed_groups += 1
            log.error(
                "vault: a write of %d request(s) failed and was rolled back: %s", len(group), e
            )
            for job in group:
                job.error = e if isinstance(e, VaultError) else VaultError(str(e))
            try:
                self.on_rollback(self.store.writer)
            except Exception:  # reloading failed too: the next group will fail the same way
                log.exception("vault: cannot reload the state after a failed write")
        else:
            self.stats.groups += 1
            self.stats.jobs += len(group)
        elapsed = time.monotonic() - started
        self.stats.last_commit_s = elapsed
        self.stats.commit_seconds = [*self.stats.commit_seconds[-255:], elapsed]
        for job in group:
            job.loop.call_soon_threadsafe(_settle, job)


def _settle(job: _Job) -> None:
    if job.future.done():  # the caller went away (cancelled); the write stands
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.result)
