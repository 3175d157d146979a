"""Issuance-log throughput: group commit vs one fsync per record, in the same run.

    .venv/bin/python benchmarks/issuance_log.py [--records N] [--threads T] [--dir DIR]

Three runs on the same file system (``--dir``, default a fresh temporary directory):

* ``group commit, async``: N records from T coroutines on one asyncio loop, as the aiohttp
  server calls :meth:`IssuanceLog.append_async`;
* ``group commit, threads``: N records from T threads calling :meth:`IssuanceLog.append`;
* ``fsync per record``: ``max_batch=1`` — every record written and fsynced alone (same code).

Records are built before the clock starts: what is timed is the log (encode, queue, write,
fsync, wake-up), not the making of the records. Every run reads its file back and checks
the count. Prints records/s, fsyncs, records per fsync and mean/p99 latency of an append.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.issuance.log import IssuanceLog, Issued, read_log


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


def run_threads(path: Path, name: str, records: int, threads: int, **kw: object) -> Result:
    latencies: list[float] = []
    lock = threading.Lock()
    with IssuanceLog(path, **kw) as issuance_log:  # type: ignore[arg-type]
        per = records // threads

        recs = [make_record(i + 1) for i in range(per * threads)]

        def work(base: int) -> None:
            mine: list[float] = []
            for rec in recs[base : base + per]:
                t = time.perf_counter()
                issuance_log.append(rec)
                mine.append(time.perf_counter() - t)
            with lock:
                latencies.extend(mine)

        pool = [threading.Thread(target=work, args=(k * per,)) for k in range(threads)]
        t0 = time.perf_counter()
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        elapsed = time.perf_counter() - t0
        fsyncs = issuance_log.stats.fsyncs
    return Result(
        name=name, records=per * threads, elapsed_s=elapsed, fsyncs=fsyncs, latencies_s=latencies
    )


def run_async(path: Path, name: str, records: int, tasks: int) -> Result:
    latencies: list[float] = []

    async def main(issuance_log: IssuanceLog) -> float:
        per = records // tasks
        recs = [make_record(i + 1) for i in range(per * tasks)]

        async def work(base: int) -> None:
            for rec in recs[base : base + per]:
                t = time.perf_counter()
                await issuance_log.append_async(rec)
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(work(k * per) for k in range(tasks)))
        return time.perf_counter() - t0

    with IssuanceLog(path) as issuance_log:
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
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        print(f"file system: {d}")
        a = timed(
            lambda: run_async(d / "a.log", "group commit, async", args.records, args.threads * 16)
        )
        t = timed(
            lambda: run_threads(d / "t.log", "group commit, threads", args.records, args.threads)
        )
        s = timed(
            lambda: run_threads(
                d / "s.log", "fsync per record", args.per_record, args.threads, max_batch=1
            )
        )
        for r, f in ((a, "a.log"), (t, "t.log"), (s, "s.log")):
            n = sum(1 for _ in read_log(d / f))
            assert n == r.records, f"{f}: {n} records read back, {r.records} appended"
        print(
            f"group commit (async) is {a.records / a.elapsed_s / (s.records / s.elapsed_s):.0f}x "
            "one fsync per record"
        )


if __name__ == "__main__":
    main()
