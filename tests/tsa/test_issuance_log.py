"""Issuance log: group commit, durability across a real kill -9, torn tail, corruption, ENOSPC.

Records go in as in production, through ``IssuanceLog.submit`` from an event loop (directly,
or through ``submit_durably``/``write_durably`` of ``tests/tsa/conftest.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import appliance.issuance.log as log_module
from appliance.issuance.log import (
    COMMIT_BUCKETS_S,
    GROW_BYTES,
    MAGIC,
    SLOW_COMMIT_S,
    IssuanceLog,
    IssuanceLogCorrupt,
    IssuanceLogError,
    Issued,
    encode_issued,
    encode_record,
    read_log,
)
from tests.tsa.conftest import submit_durably, write_durably

REPO = Path(__file__).resolve().parents[2]


def rec(serial: int, **kw: object) -> Issued:
    fields: dict[str, object] = {
        "serial": serial,
        "gen_time_ns": 1_700_000_000_123_456_789 + serial,
        "accuracy_us": 1500,
        "hash_algorithm": "sha256",
        "message_imprint": serial.to_bytes(32, "big"),
        "nonce": serial * 31,
        "ensemble_state": '{"state":"locked","quorum":2}',
        "token_sha256": bytes(32),
    }
    fields.update(kw)
    return Issued(**fields)  # type: ignore[arg-type]


class Gate:
    """An fsync that counts calls and can be held closed (to build a batch deterministically)."""

    def __init__(self) -> None:
        self.calls = 0
        self.returned = 0  # fsyncs done
        self.entered = threading.Event()
        self.open = threading.Event()
        self.open.set()

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        assert self.open.wait(20), "gate never opened"
        os.fdatasync(fd)
        self.returned += 1


def submit(issuance_log: IssuanceLog, serials: Iterable[int], outcomes: list[bool]) -> None:
    """submit() the records of ``serials`` as one group; its callback appends to ``outcomes``."""
    issuance_log.submit([encode_record(rec(i)) for i in serials], outcomes.append)


def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.001)


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """:func:`wait_until` in an event loop, which runs meanwhile (yielding at least once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        await asyncio.sleep(0.001)
        if cond():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")


def test_roundtrip_every_field(tmp_path: Path) -> None:
    path = tmp_path / "issued.log"
    records = [
        rec(1),
        rec(2, nonce=None, token_sha256=None, ensemble_state=""),
        rec(3, nonce=-99),  # an INTEGER: clients may send a negative nonce
        rec((1 << 159) + 5, hash_algorithm="sha512", message_imprint=b"\xff" * 64),
        rec(4, ensemble_state='quote " backslash \\ newline \n é ☃'),
    ]
    with IssuanceLog(path) as issuance_log:
        write_durably(issuance_log, records)
    assert list(read_log(path)) == records
    with IssuanceLog(path) as issuance_log:  # reopening appends after what is there
        write_durably(issuance_log, [rec(5)])
    assert [r.serial for r in read_log(path)] == [r.serial for r in records] + [5]


async def test_submit_calls_back_once_only_after_every_fsync_of_the_group(
    tmp_path: Path,
) -> None:
    gate = Gate()
    gate.open.clear()
    path = tmp_path / "l"
    issuance_log = IssuanceLog(path, max_batch=3, fsync=gate)  # 8 records: three batches
    issuance_log.start()
    try:
        calls: list[tuple[bool, int]] = []  # the outcome, and how many fsyncs had returned
        issuance_log.submit(
            [encode_record(rec(i)) for i in range(1, 9)],
            lambda ok: calls.append((ok, gate.returned)),
        )
        # The loop runs on while the writer is held in the first fsync: a callback made
        # before it (or at the write) would have run by now.
        await until(gate.entered.is_set, "the writer enters the first fsync")
        assert calls == [], "called back before the records were fsynced"
        gate.open.set()
        await until(lambda: bool(calls), "the group's callback")
        assert calls == [(True, 3)], "once for the whole group, after its last batch's fsync"
        # One writer, in order: a later group's callback comes after any late one of this.
        await submit_durably(issuance_log, [rec(9), rec(10)])
        assert calls == [(True, 3)], "called back once"
        assert gate.calls == 4
    finally:
        gate.open.set()
        issuance_log.close()
    assert [r.serial for r in read_log(path)] == list(range(1, 11))


async def test_group_commit_one_fsync_for_all_records_pending(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    path = tmp_path / "l"
    issuance_log = IssuanceLog(path, max_wait_s=0, fsync=gate)
    issuance_log.start()
    try:
        outcomes: list[bool] = []
        submit(issuance_log, [1], outcomes)
        # The event loop runs on while the writer is held in the first batch's fsync.
        await until(gate.entered.is_set, "the writer enters the first fsync")
        for i in range(2, 52):  # 50 groups of one, as 50 aiohttp requests hand them
            submit(issuance_log, [i], outcomes)
        assert issuance_log.pending == 50 and outcomes == []
        gate.open.set()
        await until(lambda: len(outcomes) == 51, "every group's callback")
        assert outcomes == [True] * 51
        assert issuance_log.stats.records == 51
    finally:
        gate.open.set()
        issuance_log.close()
    assert gate.calls == 2, "the 50 records pending during the first fsync share one fsync"
    assert sorted(r.serial for r in read_log(path)) == list(range(1, 52))


def test_many_submitters_in_several_event_loops_far_fewer_fsyncs(tmp_path: Path) -> None:
    gate = Gate()
    path = tmp_path / "l"
    loops, per_loop, per = 8, 4, 100  # 32 submitters; each waits for its record, then the next
    total = loops * per_loop * per
    with IssuanceLog(path, fsync=gate) as issuance_log:

        async def submitter(first: int) -> None:
            for serial in range(first, first + per):
                await submit_durably(issuance_log, [rec(serial)])

        async def one_loop(k: int) -> None:
            await asyncio.gather(
                *(submitter((k * per_loop + j) * per + 1) for j in range(per_loop))
            )

        with ThreadPoolExecutor(loops) as pool:  # an event loop per thread, as TSA workers
            list(pool.map(lambda k: asyncio.run(one_loop(k)), range(loops)))
        stats = issuance_log.stats
    assert stats.records == total
    assert stats.fsyncs == gate.calls
    assert gate.calls <= total / 5, f"{gate.calls} fsyncs for {total} records"
    assert sorted(r.serial for r in read_log(path)) == list(range(1, total + 1))


async def test_max_batch_caps_a_batch(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    path = tmp_path / "l"
    issuance_log = IssuanceLog(path, max_batch=10, max_wait_s=0, fsync=gate)
    issuance_log.start()
    try:
        outcomes: list[bool] = []
        submit(issuance_log, [1], outcomes)
        await until(gate.entered.is_set, "the writer enters the first fsync")
        first = 2
        for size in (3, 4, 7, 5, 6):  # 25 records, groups split across batches of 10
            submit(issuance_log, range(first, first + size), outcomes)
            first += size
        assert issuance_log.pending == 25
        gate.open.set()
        await until(lambda: len(outcomes) == 6, "every group's callback")
        assert outcomes == [True] * 6
    finally:
        gate.open.set()
        issuance_log.close()
    assert gate.calls == 1 + 3  # 25 pending records in batches of at most 10
    assert [r.serial for r in read_log(path)] == list(range(1, 27))


async def test_submit_times_out_once(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    path = tmp_path / "l"
    issuance_log = IssuanceLog(path, durable_timeout_s=0.3, fsync=gate)
    issuance_log.start()
    try:
        outcomes: list[bool] = []
        t0 = time.monotonic()
        submit(issuance_log, [1], outcomes)
        await until(lambda: bool(outcomes), "the callback at the deadline")
        assert outcomes == [False]
        assert time.monotonic() - t0 >= 0.29, "not before durable_timeout_s"
        gate.open.set()
        # One writer, in order: once a later group is durable, the late settle of the
        # first has reached this loop, and changed nothing.
        await submit_durably(issuance_log, [rec(2)])
        assert outcomes == [False], "the late fsync does not call back a second time"
    finally:
        gate.open.set()
        issuance_log.close()
    # The log may hold a record whose token was withheld, never the reverse.
    assert [r.serial for r in read_log(path)] == [1, 2]


def test_fsync_failure_fails_the_callers_and_stops_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulated: a failing disk (EIO on fsync) cannot be produced here for real.
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with IssuanceLog(tmp_path / "l", fsync=failing_fsync) as issuance_log:
        with pytest.raises(IssuanceLogError, match="not durable"):
            write_durably(issuance_log, [rec(1), rec(2)])
        assert "fsync failed, log stopped" in caplog.text
        assert issuance_log.stats.stopped
        with pytest.raises(IssuanceLogError, match="fsync failed, log stopped"):
            write_durably(issuance_log, [rec(3)])  # refused at once by submit
        assert issuance_log.stats.records == 0


class _Clocks:
    """The log module's ``time``: ``monotonic`` and ``perf_counter`` stand still until the
    test (or the simulated storage) moves them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.perf = 0.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.perf


def test_commits_are_timed_and_slow_ones_logged_once_a_report_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulated: slow storage is a real fdatasync that takes 0.12 s on the log's clock (a
    # worn SD card cannot be had here); the report interval passes on that clock too.
    clocks = _Clocks()
    delays = [0.0, 0.12, 0.12, 0.12, 0.12]

    def slow_fsync(fd: int) -> None:
        os.fdatasync(fd)
        clocks.perf += delays.pop(0)

    monkeypatch.setattr(log_module, "time", clocks)
    caplog.set_level(logging.WARNING, logger="appliance.issuance.log")
    with IssuanceLog(tmp_path / "l", fsync=slow_fsync) as issuance_log:
        write_durably(issuance_log, [rec(1)])  # fast
        stats = issuance_log.stats
        assert stats.slow_commits == 0 and sum(stats.commit_counts) == 1
        assert stats.commit_counts.index(1) < COMMIT_BUCKETS_S.index(SLOW_COMMIT_S)
        for serial in (2, 3, 4):
            write_durably(issuance_log, [rec(serial)])
        clocks.now += log_module._SLOW_REPORT_S  # the report interval has passed
        write_durably(issuance_log, [rec(5)])
        stats = issuance_log.stats

    assert sum(stats.commit_counts) == stats.fsyncs == 5
    assert len(stats.commit_counts) == len(COMMIT_BUCKETS_S) + 1
    assert stats.commit_counts[COMMIT_BUCKETS_S.index(0.25)] == 4  # 0.12 s lands here
    assert stats.slow_commits == 4
    assert stats.commit_seconds == pytest.approx(0.48)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # the first at once, then one after the interval
    assert "1 commit(s) took 100 ms or more since start, the slowest 0.120 s" in warnings[0]
    assert "3 commit(s) took 100 ms or more since the last report" in warnings[1]
    assert "storage is slow" in warnings[1]


def test_a_failed_commit_is_not_timed(tmp_path: Path) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with IssuanceLog(tmp_path / "l", fsync=failing_fsync) as issuance_log:
        with pytest.raises(IssuanceLogError, match="not durable"):
            write_durably(issuance_log, [rec(1)])
        stats = issuance_log.stats
    assert stats.failures == 1 and sum(stats.commit_counts) == 0 and stats.commit_seconds == 0


async def test_backlog_full_is_refused_not_queued_forever(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    path = tmp_path / "l"
    issuance_log = IssuanceLog(path, max_batch=4, max_pending=8, max_wait_s=0, fsync=gate)
    issuance_log.start()
    try:
        outcomes: list[bool] = []
        submit(issuance_log, [1], outcomes)
        await until(gate.entered.is_set, "the writer enters the first fsync")
        submit(issuance_log, range(2, 5), outcomes)
        submit(issuance_log, range(5, 9), outcomes)
        assert issuance_log.pending == 7
        with pytest.raises(IssuanceLogError, match="backlog full"):
            submit(issuance_log, [98, 99], outcomes)  # one place left: nothing of it queued
        assert issuance_log.pending == 7
        submit(issuance_log, [9], outcomes)
        with pytest.raises(IssuanceLogError, match="backlog full"):
            submit(issuance_log, [100], outcomes)
        gate.open.set()
        await until(lambda: len(outcomes) == 4, "every accepted group's callback")
        assert outcomes == [True] * 4
    finally:
        gate.open.set()
        issuance_log.close()
    assert sorted(r.serial for r in read_log(path)) == list(range(1, 10))


async def test_closed_log_refuses_and_close_flushes(tmp_path: Path) -> None:
    path = tmp_path / "l"
    issuance_log = IssuanceLog(path, max_wait_s=0.5)
    outcomes: list[bool] = []
    with pytest.raises(IssuanceLogError, match="not running"):
        submit(issuance_log, [1], outcomes)
    issuance_log.start()
    submit(issuance_log, [1], outcomes)
    issuance_log.close()  # must not wait out the 0.5 s linger, must write the record
    await until(lambda: bool(outcomes), "the callback of the record close() flushed")
    assert outcomes == [True]
    assert [r.serial for r in read_log(path)] == [1]
    with pytest.raises(IssuanceLogError, match="not running"):
        submit(issuance_log, [2], outcomes)


def test_second_writer_on_same_log_is_refused(tmp_path: Path) -> None:
    with IssuanceLog(tmp_path / "l"), pytest.raises(IssuanceLogError, match="in use"):
        IssuanceLog(tmp_path / "l").start()


def test_not_a_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l"
    path.write_bytes(b"SOMETHING ELSE ENTIRELY\n")
    with pytest.raises(IssuanceLogError, match="not a Horodate issuance log"):
        list(read_log(path))
    with pytest.raises(IssuanceLogError, match="not a Horodate issuance log"):
        IssuanceLog(path).start()
    assert path.read_bytes() == b"SOMETHING ELSE ENTIRELY\n"


def _write_log(path: Path, n: int) -> list[int]:
    """A log of n records; returns each record's end offset."""
    ends = []
    data = bytearray(MAGIC)
    for i in range(1, n + 1):
        data += encode_record(rec(i))
        ends.append(len(data))
    path.write_bytes(bytes(data))
    return ends


@pytest.mark.parametrize("cut", [1, 5, 8, 9, 40])
def test_torn_tail_tolerated_with_warning_then_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: int
) -> None:
    path = tmp_path / "l"
    ends = _write_log(path, 10)
    with open(path, "r+b") as f:
        f.truncate(ends[-1] - cut)  # the last record lost its last `cut` bytes
    with caplog.at_level(logging.WARNING):
        assert [r.serial for r in read_log(path)] == list(range(1, 10))
    assert "torn last record" in caplog.text
    with IssuanceLog(path) as issuance_log:
        data = path.read_bytes()
        # start() dropped the torn tail and reserved zeros where it was
        assert len(data) == ends[-2] + GROW_BYTES
        assert not data[ends[-2] :].strip(b"\0"), "start() truncates the torn tail"
        write_durably(issuance_log, [rec(11)])
    assert [r.serial for r in read_log(path)] == [*range(1, 10), 11]


def test_records_go_into_space_reserved_ahead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l"
    with IssuanceLog(path) as issuance_log:
        assert path.stat().st_size == len(MAGIC) + GROW_BYTES
        for serial in range(1, 6):
            write_durably(issuance_log, [rec(serial)])
        # written over the zeros: the file did not grow, so fdatasync had no size to journal
        assert path.stat().st_size == len(MAGIC) + GROW_BYTES
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert [r.serial for r in read_log(path)] == [1, 2, 3, 4, 5]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], "reserved zeros are the end of the log, not a torn tail"
    with IssuanceLog(path) as issuance_log:  # reopened: appends after the records, not the zeros
        write_durably(issuance_log, [rec(6)])
    assert [r.serial for r in read_log(path)] == [1, 2, 3, 4, 5, 6]


def test_a_restart_uses_the_zeros_left_and_does_not_grow_the_file(tmp_path: Path) -> None:
    """Restarting (a crash loop, an operator) must not add a reserve each time."""
    path = tmp_path / "l"
    for serial in range(1, 6):
        with IssuanceLog(path) as issuance_log:
            write_durably(issuance_log, [rec(serial)])
    assert path.stat().st_size == len(MAGIC) + GROW_BYTES
    assert [r.serial for r in read_log(path)] == [1, 2, 3, 4, 5]


def test_more_space_is_reserved_before_it_runs_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_module, "GROW_BYTES", 2048)
    monkeypatch.setattr(log_module, "_GROW_LOW_WATER", 1024)
    path = tmp_path / "l"
    sizes = set()
    with IssuanceLog(path) as issuance_log:
        for serial in range(1, 60):
            write_durably(issuance_log, [rec(serial)])
            sizes.add(path.stat().st_size)
        assert path.stat().st_size >= _log_end(path)
    assert len(sizes) > 3, "the reserve grew several times"
    assert [r.serial for r in read_log(path)] == list(range(1, 60))


def test_torn_record_before_reserved_zeros(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l"
    ends = _write_log(path, 4)
    with open(path, "r+b") as f:  # a crash mid-write: half a record, then the reserve
        f.seek(ends[-1])
        f.write(encode_record(rec(5))[:30] + bytes(GROW_BYTES))
    with caplog.at_level(logging.WARNING):
        assert [r.serial for r in read_log(path)] == [1, 2, 3, 4]
    assert "torn last record" in caplog.text
    with IssuanceLog(path) as issuance_log:
        write_durably(issuance_log, [rec(6)])
    assert [r.serial for r in read_log(path)] == [1, 2, 3, 4, 6]


def test_zeros_beyond_the_tail_scan_limit_are_still_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_module, "_TAIL_SCAN_MAX_BYTES", 512)
    path = tmp_path / "l"
    ends = _write_log(path, 3)
    with open(path, "ab") as f:  # more zeros than one read and the limit together
        f.write(bytes(3 << 20))
    assert [r.serial for r in read_log(path)] == [1, 2, 3]
    with open(path, "ab") as f:  # but bytes far past a bad record are corruption
        f.write(b"junk")
    with pytest.raises(IssuanceLogCorrupt, match=f"record #3 at byte {ends[-1]}"):
        list(read_log(path))


def _log_end(path: Path) -> int:
    return len(path.read_bytes().rstrip(b"\0"))


def test_zero_filled_tail_after_power_loss_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "l"
    _write_log(path, 5)
    with open(path, "ab") as f:
        f.write(bytes(3000))  # a file system that grew the file but lost the data
    assert len(list(read_log(path))) == 5


@pytest.mark.parametrize("where", ["length", "crc", "payload", "json"])
def test_corruption_in_the_middle_is_an_error(tmp_path: Path, where: str) -> None:
    path = tmp_path / "l"
    ends = _write_log(path, 10)
    start = ends[3]  # record #4 (0-based), serial 5
    data = bytearray(path.read_bytes())
    offset = {"length": start + 2, "crc": start + 5, "payload": start + 30, "json": start + 8}
    data[offset[where]] ^= 0x20
    path.write_bytes(bytes(data))
    got: list[int] = []
    with pytest.raises(IssuanceLogCorrupt, match=f"record #4 at byte {start}"):
        got.extend(r.serial for r in read_log(path))
    assert got == [1, 2, 3, 4]
    with pytest.raises(IssuanceLogCorrupt):
        IssuanceLog(path).start()
    assert path.read_bytes() == bytes(data), "a corrupt log is left untouched"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400), st.integers(0, 3))
def test_reader_fuzz_only_log_errors(tmp_path: Path, junk: bytes, keep: int) -> None:
    path = tmp_path / "fuzz.log"
    data = MAGIC + b"".join(encode_record(rec(i)) for i in range(1, keep + 1)) + junk
    path.write_bytes(data)
    try:
        got = [r.serial for r in read_log(path)]
    except IssuanceLogCorrupt:
        return
    assert got[:keep] == list(range(1, keep + 1))


def test_issued_rejects_out_of_range_fields() -> None:
    for bad in (
        {"serial": 0},
        {"serial": 1 << 160},
        {"accuracy_us": -1},
        {"message_imprint": b""},
        {"hash_algorithm": ""},
        {"ensemble_state": "x" * 2000},
        {"token_sha256": b"short"},
    ):
        fields = {"serial": 1, **bad}
        with pytest.raises(ValueError):
            rec(**fields)  # type: ignore[arg-type]
        # the hot path's encoder, which makes no Issued, refuses the same fields
        names = [f.name for f in dataclasses.fields(Issued)]  # field_values()'s order
        values = tuple(
            bad.get(name, value) for name, value in zip(names, rec(1).field_values(), strict=True)
        )
        with pytest.raises(ValueError):
            encode_issued(values)  # type: ignore[arg-type]


def test_encode_issued_writes_what_encode_record_writes() -> None:
    for record in (rec(1), rec(2, nonce=None, token_sha256=None), rec(3, nonce=-(1 << 500))):
        assert encode_issued(record.field_values()) == encode_record(record)


# -- a real kill -9 ------------------------------------------------------------------------

_CHILD = """
import asyncio, sys
from pathlib import Path
from appliance.issuance.log import IssuanceLog, Issued, encode_record
issuance_log = IssuanceLog(Path(sys.argv[1]))
issuance_log.start()
base = int(sys.argv[2])
async def lane(k):
    # A fast lane's groups: 1 to 7 tokens signed together, their replies sent once durable.
    loop = asyncio.get_running_loop()
    i = 0
    while True:
        serials = [base + k * 10_000_000 + i + j for j in range(1 + i % 7)]
        i += len(serials)
        durable = loop.create_future()
        issuance_log.submit([encode_record(Issued(serial=s, gen_time_ns=s, accuracy_us=1,
                                                  hash_algorithm="sha256",
                                                  message_imprint=bytes(32), nonce=s,
                                                  ensemble_state="child"))
                             for s in serials], durable.set_result)
        if not await durable:
            sys.exit("not durable")
        # printed only once durable: this is "a client received it"
        sys.stdout.write("".join(f"{s}\\n" for s in serials))
        sys.stdout.flush()
async def main():
    await asyncio.gather(*(lane(k) for k in range(8)))
asyncio.run(main())
"""


def _kill_mid_run(path: Path, base: int, at_least: int) -> set[int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(base)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    got: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while len(got) < at_least:
            assert time.monotonic() < deadline, "the child recorded too slowly"
            line = proc.stdout.readline()
            assert line.endswith(b"\n"), f"child died: rc={proc.poll()}"
            got.add(int(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait(10)
    got.update(int(x) for x in rest.split(b"\n")[:-1])  # a partial last line was not received
    assert proc.returncode == -signal.SIGKILL
    return got


def test_every_acknowledged_record_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "issued.log"
    acknowledged = _kill_mid_run(path, 1, at_least=1500)
    in_log = {r.serial for r in read_log(path)}
    missing = acknowledged - in_log
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    # Restart after the crash: recovery, then more appends, then a second crash.
    acknowledged |= _kill_mid_run(path, 1_000_000_000, at_least=1500)
    with IssuanceLog(path) as issuance_log:
        write_durably(issuance_log, [rec(5_000_000_000)])
    serials = [r.serial for r in read_log(path)]
    assert len(serials) == len(set(serials))
    assert acknowledged | {5_000_000_000} <= set(serials)


# -- a real full disk ----------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real ENOSPC. Needs root (mount); the sandbox and CI run as root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root, so there it always runs)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, f"cannot mount a 64 KiB tmpfs as root: {r.stderr.strip()}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_fails_callers_and_keeps_log_consistent(
    small_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = small_tmpfs / "issued.log"
    filler = small_tmpfs / "filler"
    filler.write_bytes(bytes(48 * 1024))
    acknowledged: set[int] = set()
    refused = 0

    async def round_of_groups(issuance_log: IssuanceLog, first: int) -> None:
        # Two groups of 4 in one loop iteration: batches of several records, partial writes.
        nonlocal refused
        groups = [range(first, first + 4), range(first + 4, first + 8)]
        outcomes: list[list[bool]] = [[], []]
        for serials, outcome in zip(groups, outcomes, strict=True):
            submit(issuance_log, serials, outcome)
        await until(lambda: all(outcomes), "both groups' callbacks")
        for serials, outcome in zip(groups, outcomes, strict=True):
            if outcome == [True]:
                acknowledged.update(serials)
            else:
                refused += 1

    with IssuanceLog(path, max_wait_s=0.001) as issuance_log:
        serial = 1
        while not refused:
            assert serial < 10_000, "the 64 KiB file system never filled up"
            asyncio.run(round_of_groups(issuance_log, serial))
            serial += 8
        assert "No space left on device" in caplog.text
        assert not issuance_log.stats.stopped, "a failed write does not stop the log"
        # The log holds whole records only, and every acknowledged one.
        in_log = [r.serial for r in read_log(path)]
        assert acknowledged <= set(in_log)
        size = path.stat().st_size
        assert size == len(MAGIC) + sum(len(encode_record(rec(s))) for s in in_log)
        assert "cannot reserve" in caplog.text  # the 1 MiB reserve never fitted
        # Space comes back: the log carries on.
        filler.unlink()
        write_durably(issuance_log, [rec(100_000)])
    assert [r.serial for r in read_log(path)][-1] == 100_000


def test_write_error_is_rolled_back_then_log_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulated: a write that fails half-way (as on ENOSPC) through an injected pwrite,
    # so that this path is covered even where the tmpfs test above cannot mount.
    fail = threading.Event()

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if fail.is_set():
            os.pwrite(fd, data[: len(data) // 2], offset)
            fail.clear()
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.pwrite(fd, data, offset)

    path = tmp_path / "l"
    with IssuanceLog(path, pwrite=pwrite) as issuance_log:
        write_durably(issuance_log, [rec(1)])
        fail.set()
        with pytest.raises(IssuanceLogError, match="not durable"):
            write_durably(issuance_log, [rec(2)])
        assert "write failed, 1 records not recorded: [Errno 28] No space left" in caplog.text
        write_durably(issuance_log, [rec(3)])
    assert [r.serial for r in read_log(path)] == [1, 3]


def test_writer_crash_fails_waiters_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulated: a bug in the commit path (an exception that is not an OSError).
    def buggy_fsync(fd: int) -> None:
        raise RuntimeError("bug")

    issuance_log = IssuanceLog(tmp_path / "l", durable_timeout_s=30, fsync=buggy_fsync)
    issuance_log.start()
    try:
        with pytest.raises(IssuanceLogError, match="not durable"):
            # called back within 5 s, not at its 30 s deadline
            write_durably(issuance_log, [rec(1)], callback_within_s=5)
        assert "issuance log writer crashed" in caplog.text
        with pytest.raises(IssuanceLogError, match="not running"):
            write_durably(issuance_log, [rec(2)])
    finally:
        issuance_log.close()
