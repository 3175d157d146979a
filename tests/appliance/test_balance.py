"""BalancedAcceptor: processes sharing a listening socket split new connections evenly.

Each acceptor here stands for one process; they share one listening socket (each its own
file descriptor, as processes have) and one list of counts, in one event loop. The real
appliance's split is checked in ``test_workers.py``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from appliance.http.balancing import NOT_ACCEPTING, BalancedAcceptor


class Open(asyncio.Protocol):
    """Counts the connections a process holds."""

    def __init__(self, held: set[Open]) -> None:
        self._held = held

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._held.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._held.discard(self)


@asynccontextmanager
async def processes(
    n: int, counts: list[int], **kw: float
) -> AsyncIterator[tuple[int, list[set[Open]], list[BalancedAcceptor]]]:
    """``n`` acceptors on one listening socket (slots 0..n-1 of ``counts``): its port,
    each one's open connections, the acceptors."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[set[Open]] = [set() for _ in range(n)]
    acceptors = [
        BalancedAcceptor(
            listener.dup(),
            lambda h=h: Open(h),  # type: ignore[misc]
            lambda h=h: len(h),  # type: ignore[misc]
            counts,
            i,
            **kw,
        )
        for i, h in enumerate(held)
    ]
    try:
        yield listener.getsockname()[1], held, acceptors
    finally:
        for a in acceptors:
            a.close()
        listener.close()


def connect(port: int, n: int) -> list[socket.socket]:
    """``n`` clients, connected by the kernel (queued until a process accepts them)."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]


async def settle(held: list[set[Open]], total: int, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while sum(len(h) for h in held) < total:
            await asyncio.sleep(0.005)


async def published(counts: list[int], held: list[set[Open]], timeout_s: float = 1.0) -> None:
    """Until each acceptor's slot says what it holds: a connection counts from its accept,
    and the slot follows once its transport is made (an iteration after the protocol's
    ``connection_made``)."""
    async with asyncio.timeout(timeout_s):
        while counts[: len(held)] != [len(h) for h in held]:
            await asyncio.sleep(0.005)


async def declined(acceptor: BalancedAcceptor, looks: int, timeout_s: float = 5.0) -> None:
    """Until ``acceptor`` has looked at the counts ``looks`` more times and found it does
    not hold the fewest: each look (``_lowest``) is where it would accept again."""
    answers: list[bool] = []
    lowest = acceptor._lowest

    def noted() -> bool:
        answer = lowest()
        answers.append(answer)
        return answer

    acceptor._lowest = noted  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(timeout_s):
            while answers.count(False) < looks:
                await asyncio.sleep(0.005)
    finally:
        acceptor._lowest = lowest  # type: ignore[method-assign]


async def test_a_process_accepts_only_while_it_holds_the_fewest() -> None:
    """Slot 1 stands for another process that holds 8 connections and is busy."""
    counts = [NOT_ACCEPTING, 8]
    async with processes(1, counts, stall_s=60) as (port, held, acceptors):
        clients = connect(port, 12)
        await settle(held, 9)  # up to the other's 8, then one more at a tie
        await declined(acceptors[0], looks=5)  # then it waits, the 3 others queued
        assert len(held[0]) == 9
        counts[1] = 11  # the other took three
        await settle(held, 12)  # the next look finds this one the fewest again
        assert len(held[0]) == 12
        for c in clients:
            c.close()


async def test_a_burst_of_connections_is_split_evenly() -> None:
    counts = [NOT_ACCEPTING] * 2
    async with processes(2, counts) as (port, held, _):
        clients = connect(port, 16)  # all queued before either process looks
        await settle(held, 16)
        assert sorted(len(h) for h in held) == [8, 8]
        await published(counts, held)
        for c in clients[:6]:  # six of them leave: the next come to whoever holds fewer
            c.close()
        async with asyncio.timeout(5):  # until both processes have seen them go
            while sum(len(h) for h in held) > 10:
                await asyncio.sleep(0.005)
        clients += connect(port, 6)
        await settle(held, 16)
        assert abs(len(held[0]) - len(held[1])) <= 1
        for c in clients:
            c.close()


async def test_three_processes_take_a_third_each() -> None:
    counts = [NOT_ACCEPTING] * 3
    async with processes(3, counts) as (port, held, _):
        clients = connect(port, 15)
        await settle(held, 15)
        assert [len(h) for h in held] == [5, 5, 5]
        for c in clients:
            c.close()


async def test_a_count_left_by_a_dead_process_does_not_stop_the_accepts() -> None:
    """Slot 1 says 0 connections for a process that no longer accepts (it died, and the
    main process has not retired its slot yet): the live one still takes every client,
    each within the stall time."""
    counts = [NOT_ACCEPTING, 0]
    async with processes(1, counts, stall_s=0.05) as (port, held, _):
        loop = asyncio.get_running_loop()
        started = loop.time()
        clients = connect(port, 3)
        await settle(held, 3, timeout_s=2.0)
        assert len(held[0]) == 3
        assert loop.time() - started >= 0.1  # the 2nd and 3rd waited out the stall time
        for c in clients:
            c.close()


async def test_a_closed_acceptor_takes_no_more_and_says_so() -> None:
    counts = [NOT_ACCEPTING] * 2
    async with processes(2, counts, tick_s=60) as (port, held, acceptors):
        acceptors[1].close()
        acceptors[0]._pause()  # not reading: the test decides when it accepts
        first = connect(port, 1)
        assert acceptors[0]._queued()  # the kernel has it queued (connect() has returned)
        acceptors[0]._readable()  # accepted; its transport is made after the close below
        acceptors[0].close()
        async with asyncio.timeout(5):  # until the transport is made and handed over
            while acceptors[0]._connecting or not held[0]:
                await asyncio.sleep(0.005)
        assert len(held[0]) == 1  # the connection it had accepted is served
        assert counts == [NOT_ACCEPTING, NOT_ACCEPTING]  # and does not bring its count back
        first[0].close()
    counts = [NOT_ACCEPTING] * 2
    async with processes(2, counts) as (port, held, acceptors):
        acceptors[0].close()
        assert counts[0] == NOT_ACCEPTING
        clients = connect(port, 4)
        await settle(held, 4)
        assert len(held[1]) == 4  # the other process takes them all
        for c in clients:
            c.close()
