"""Sharing one listening socket between processes fairly: accept only while this process
holds no more connections than any other.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
from collections.abc import Callable, MutableSequence
from typing import Any, Final

log = logging.getLogger(__name__)


# Connection counts of processes that do not accept (stopped, dead, not started yet).
NOT_ACCEPTING: Final = -1


class BalancedAcceptor:
    """Accepts on a listening socket that several processes share, only while this process
    holds no more connections than any other that accepts.

    The kernel hands a burst of new connections to whichever process wakes first, and
    that process takes all it can: keep-alive clients come out split unevenly, at times all
    on one process (benchmarks/RESULTS.md), and a process with few connections makes small, costly
    group commits while the other is overloaded. Each process's count of open connections
    is kept in ``counts`` (shared memory, one slot each; :data:`NOT_ACCEPTING` for a
    process that does not accept), and a process accepts one connection at a time, while
    its count is the lowest; a process that is not stops reading the socket and looks again
    every ``tick_s`` (a process that reads it needs no timer: its count is refreshed at each
    accept, and one left high by connections since closed only lets the others accept).
    Counts are read without a lock: two processes may both accept at once, and the next
    connections even it out.

    A count left behind by a process that died (until the main process retires its slot)
    must not stop every accept: a connection that waits in the queue longer than
    ``stall_s`` is accepted whatever the counts say.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        connections: Callable[[], int],
        counts: MutableSequence[int],
        me: int,
        *,
        tick_s: float = 0.01,
        stall_s: float = 0.05,
    ) -> None:
        """``connections``: this process's open connections (e.g. ``len(flush.lanes)``);
        ``counts[me]`` is this process's slot."""
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._factory = protocol_factory
        self._connections = connections
        self._counts = counts
        self._me = me
        self._tick_s, self._stall_s = tick_s, stall_s
        self._connecting = 0  # accepted, transport not made yet
        self._reading = False
        self._closed = False
        self._ticking = False  # a look is scheduled (only while not reading)
        self._queued_since: float | None = None  # paused with connections waiting
        self._warn_after = 0.0
        self._poll = select.poll()  # not select(): no limit on the descriptor's number
        self._poll.register(sock, select.POLLIN)
        sock.setblocking(False)
        self._publish()
        self._tick()

    def close(self) -> None:
        """Stop accepting (connections already accepted stay open)."""
        self._closed = True
        self._pause()
        self._counts[self._me] = NOT_ACCEPTING

    async def wait_closed(self) -> None:
        """For the interface of ``asyncio.Server``: closing is immediate."""

    def _publish(self) -> int:
        mine = self._connections() + self._connecting
        if not self._closed:  # a closed acceptor's slot stays NOT_ACCEPTING
            self._counts[self._me] = mine
        return mine

    def _lowest(self) -> bool:
        mine = self._publish()
        return all(mine <= n for n in self._counts if n != NOT_ACCEPTING)

    def _tick(self) -> None:
        """While not reading the socket: read it again once this process holds the fewest
        connections, or take a connection that has waited too long; else look again."""
        self._ticking = False
        if self._closed or self._reading:
            return
        if self._lowest():
            self._queued_since = None
            self._resume()
            return
        if self._queued():
            now = self._loop.time()
            if self._queued_since is None:
                self._queued_since = now
            elif now - self._queued_since >= self._stall_s:
                self._accept()  # nobody else takes it
        else:
            self._queued_since = None
        self._look_again()

    def _look_again(self) -> None:
        if not self._ticking and not self._closed:
            self._ticking = True
            self._loop.call_later(self._tick_s, self._tick)

    def _queued(self) -> bool:
        """Whether connections wait in the queue (this process is not reading it)."""
        return bool(self._poll.poll(0))

    def _resume(self) -> None:
        if not self._reading and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
        self._look_again()  # only a paused acceptor looks on a timer

    def _readable(self) -> None:
        if self._lowest():
            self._accept()
        else:
            self._pause()  # and look again on a timer

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another process took it, or the client gave up
        except OSError as e:  # out of file descriptors: wait a tick rather than spin
            now = self._loop.time()
            if now >= self._warn_after:
                log.warning("cannot accept a connection: %s (said at most every 10 s)", e)
                self._warn_after = now + 10.0
            self._pause()
            return
        self._queued_since = None
        conn.setblocking(False)
        self._connecting += 1
        self._publish()
        made = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
        made.add_done_callback(self._made)

    def _made(self, task: asyncio.Task[Any]) -> None:
        self._connecting -= 1
        self._publish()
        if not task.cancelled() and task.exception() is not None:
            log.warning("cannot serve an accepted connection: %s", task.exception())
