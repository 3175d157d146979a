"""Issuance-log throughput on the path production takes, against one fsync per record.

    .venv/bin/python benchmarks/issuance_log.py [--records N] [--connections C] [--dir DIR]

Three runs on the same file system (``--dir``, default a fresh temporary directory), each
one event loop handing records to :meth:`IssuanceLog.submit` as ``TsaService.commit`` does:

* ``group commit, fast lane``: C connections with one request in flight each; the records
  of the tokens an event-loop iteration brings are grouped by the fast lane's own
  ``appliance.http.group_commit.Flush``, one ``submit`` a group;
* ``group commit, groups of 1``: C coroutines each submitting its record alone and awaiting
  it, as the aiohttp route does (``TsaService.answer``);
* ``fsync per record``: the same with ``max_batch=1`` — every record written and fsynced
  alone (same code).

Records are encoded before the clock starts: what is timed is the log (queue, write, fsync,
callback) and the lane's grouping, not the signing. Every run reads its file back and checks
the count. Prints records/s, fsyncs, records per fsync and mean/p99 latency of a record
(from its request to its callback), then each group commit's ratio to one fsync per record.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.http.group_commit import Flush
from appliance.issuance.log import IssuanceLog, Issued, encode_record, read_log

RUN_DEADLINE_S = 600.0  # a run that takes longer has stalled


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    name: str
    records: int
    elapsed_s: float
    fsyncs: int
    latencies_s: list[float]

    def line(self) -> str:
        lat = sorted(self.latencies_s)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"{self.name:<26} {self.records / self.elapsed_s:>10,.0f} records/s  "
            f"{self.fsyncs:>6} fsyncs  {self.records / max(1, self.fsyncs):>7.1f} rec/fsync  "
            f"latency mean {statistics.fmean(lat) * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms"
        )

    @property
    def rate(self) -> float:
        return self.records / self.elapsed_s


def make_record(serial: int) -> Issued:
    return Issued(
        serial=serial,
        gen_time_ns=1_700_000_000_000_000_000 + serial,
        accuracy_us=1000,
        hash_algorithm="sha256",
        message_imprint=hashlib.sha256(serial.to_bytes(8, "big")).digest(),
        nonce=serial * 7919,
        ensemble_state='{"state":"locked","sources":3}',
        token_sha256=hashlib.sha256(b"token" + serial.to_bytes(8, "big")).digest(),
    )


def make_frames(records: int) -> list[bytes]:
    return [encode_record(make_record(i + 1)) for i in range(records)]


class _Tokens:
    """The TSA as the lane sees it (``group_commit.Tokens``): a request's body is its
    record, already encoded; ``commit`` hands a group to the log as ``TsaService.commit``."""

    def __init__(self, issuance_log: IssuanceLog) -> None:
        self._log = issuance_log

    def sign_all(self, bodies: Sequence[bytes]) -> list[tuple[bytes, bytes | None]]:
        return [(b"token", body) for body in bodies]

    def commit(self, records: list[bytes], done: Callable[[bool], None]) -> None:
        self._log.submit(records, done)

    def withheld(self) -> bytes:
        return b"withheld"


class _Connection:
    """A client of the fast lane (``group_commit.Lane``): one request in flight, the next
    sent once the reply is in."""

    def __init__(
        self,
        flush: Flush,
        frames: list[bytes],
        latencies: list[float],
        finished: Callable[[bool], None],
    ) -> None:
        self._flush = flush
        self._frames = frames
        self._latencies = latencies
        self._finished = finished
        self._sent = 0.0

    def send(self) -> None:
        if not self._frames:
            self._finished(True)
            return
        self._sent = time.perf_counter()
        self._flush.add(self, self._frames.pop(), False)

    def reply(self, der: bytes | None, close: bool) -> None:
        self._latencies.append(time.perf_counter() - self._sent)
        if der != b"token":  # withheld: its record is not durable
            self._finished(False)
            return
        asyncio.get_running_loop().call_soon(self.send)  # the next request, a turn later

    def close(self) -> None:
        pass


def run_lane(path: Path, name: str, records: int, connections: int) -> Result:
    latencies: list[float] = []

    async def main(issuance_log: IssuanceLog) -> float:
        frames = make_frames(records)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        left = connections

        def finished(ok: bool) -> None:
            nonlocal left
            left -= 1
            if not ok and not done.done():
                done.set_exception(RuntimeError("a record was not durable"))
            elif left == 0 and not done.done():
                done.set_result(None)

        flush = Flush(_Tokens(issuance_log))
        clients = [
            _Connection(flush, frames[k::connections], latencies, finished)
            for k in range(connections)
        ]
        t0 = time.perf_counter()
        for client in clients:
            client.send()
        async with asyncio.timeout(RUN_DEADLINE_S):
            await done
        return time.perf_counter() - t0

    with IssuanceLog(path) as issuance_log:
        elapsed = asyncio.run(main(issuance_log))
        fsyncs = issuance_log.stats.fsyncs
    return Result(
        name=name, records=len(latencies), elapsed_s=elapsed, fsyncs=fsyncs, latencies_s=latencies
    )


def run_groups_of_one(path: Path, name: str, records: int, submitters: int, **kw: object) -> Result:
    latencies: list[float] = []

    async def main(issuance_log: IssuanceLog) -> float:
        frames = make_frames(records)
        loop = asyncio.get_running_loop()

        async def submitter(mine: list[bytes]) -> None:
            for frame in mine:
                t = time.perf_counter()
                durable: asyncio.Future[bool] = loop.create_future()
                issuance_log.submit([frame], durable.set_result)
                if not await durable:
                    raise RuntimeError("a record was not durable")
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        async with asyncio.timeout(RUN_DEADLINE_S):
            await asyncio.gather(*(submitter(frames[k::submitters]) for k in range(submitters)))
        return time.perf_counter() - t0

    with IssuanceLog(path, **kw) as issuance_log:  # type: ignore[arg-type]
        elapsed = asyncio.run(main(issuance_log))
        fsyncs = issuance_log.stats.fsyncs
    return Result(
        name=name, records=len(latencies), elapsed_s=elapsed, fsyncs=fsyncs, latencies_s=latencies
    )


def timed(fn: Callable[[], Result]) -> Result:
    result = fn()
    print(result.line(), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument(
        "--per-record",
        type=int,
        default=2_000,
        help="records for the fsync-per-record run (it is slow)",
    )
    parser.add_argument("--connections", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        print(f"file system: {d}")
        lane = timed(
            lambda: run_lane(
                d / "lane.log", "group commit, fast lane", args.records, args.connections
            )
        )
        ones = timed(
            lambda: run_groups_of_one(
                d / "ones.log", "group commit, groups of 1", args.records, args.connections
            )
        )
        single = timed(
            lambda: run_groups_of_one(
                d / "single.log",
                "fsync per record",
                args.per_record,
                args.connections,
                max_batch=1,
            )
        )
        for r, f in ((lane, "lane.log"), (ones, "ones.log"), (single, "single.log")):
            n = sum(1 for _ in read_log(d / f))
            assert n == r.records, f"{f}: {n} records read back, {r.records} made durable"
        for r, what in ((lane, "fast lane"), (ones, "groups of 1")):
            print(f"group commit ({what}) is {r.rate / single.rate:.0f}x one fsync per record")


if __name__ == "__main__":
    main()
