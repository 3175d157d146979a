"""Issuance log: group commit, durability across a real kill -9, torn tail, corruption, ENOSPC."""

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
from collections.abc import Callable, Iterator
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
        self.entered = threading.Event()
        self.open = threading.Event()
        self.open.set()

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        assert self.open.wait(20), "gate never opened"
        os.fdatasync(fd)


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


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
        for r in records:
            issuance_log.append(r)
    assert list(read_log(path)) == records
    with IssuanceLog(path) as issuance_log:  # reopening appends after what is there
        issuance_log.append(rec(5))
    assert [r.serial for r in read_log(path)] == [r.serial for r in records] + [5]


def test_append_returns_only_after_fsync(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    with IssuanceLog(tmp_path / "l", max_wait_s=0, fsync=gate) as issuance_log:
        t = threading.Thread(target=issuance_log.append, args=(rec(1),))
        t.start()
        assert gate.entered.wait(10)
        time.sleep(0.05)
        assert t.is_alive(), "append returned before its record was fsynced"
        gate.open.set()
        t.join(10)
        assert not t.is_alive()


def test_group_commit_one_fsync_for_all_records_pending(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    path = tmp_path / "l"
    with IssuanceLog(path, max_wait_s=0, fsync=gate) as issuance_log:
        first = threading.Thread(target=issuance_log.append, args=(rec(1),))
        first.start()
        assert gate.entered.wait(10)  # the writer is inside the first batch's fsync
        others = [
            threading.Thread(target=issuance_log.append, args=(rec(i),)) for i in range(2, 52)
        ]
        for t in others:
            t.start()
        wait_until(lambda: issuance_log.pending == 50)
        gate.open.set()
        for t in [first, *others]:
            t.join(10)
        assert issuance_log.stats.records == 51
    assert gate.calls == 2, "the 50 records pending during the first fsync share one fsync"
    assert sorted(r.serial for r in read_log(path)) == list(range(1, 52))


def test_many_concurrent_appenders_far_fewer_fsyncs(tmp_path: Path) -> None:
    gate = Gate()
    path = tmp_path / "l"
    n_threads, per = 32, 100
    with IssuanceLog(path, fsync=gate) as issuance_log:

        def work(k: int) -> None:
            for i in range(per):
                issuance_log.append(rec(k * per + i + 1))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        stats = issuance_log.stats
    total = n_threads * per
    assert stats.records == total
    assert stats.fsyncs == gate.calls
    assert gate.calls <= total / 5, f"{gate.calls} fsyncs for {total} records"
    assert len({r.serial for r in read_log(path)}) == total


def test_max_batch_caps_a_batch(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    with IssuanceLog(tmp_path / "l", max_batch=10, max_wait_s=0, fsync=gate) as issuance_log:
        first = threading.Thread(target=issuance_log.append, args=(rec(1),))
        first.start()
        assert gate.entered.wait(10)
        others = [
            threading.Thread(target=issuance_log.append, args=(rec(i),)) for i in range(2, 27)
        ]
        for t in others:
            t.start()
        wait_until(lambda: issuance_log.pending == 25)
        gate.open.set()
        for t in [first, *others]:
            t.join(10)
    assert gate.calls == 1 + 3  # 25 pending records in batches of at most 10


async def test_append_async_group_commit_and_loop_stays_free(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    path = tmp_path / "l"
    issuance_log = IssuanceLog(path, max_wait_s=0, fsync=gate)
    issuance_log.start()
    try:
        tasks = [asyncio.create_task(issuance_log.append_async(rec(i))) for i in range(1, 201)]
        # While the writer is stuck in fsync, the event loop must keep running.
        t0 = time.monotonic()
        await asyncio.sleep(0.05)
        assert time.monotonic() - t0 < 1.0
        assert gate.entered.is_set()
        assert not any(t.done() for t in tasks), "an append finished before its fsync"
        gate.open.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
        assert gate.calls <= 3
    finally:
        issuance_log.close()
    assert len(list(read_log(path))) == 200


async def test_append_async_times_out_with_log_error(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    issuance_log = IssuanceLog(tmp_path / "l", append_timeout_s=0.2, fsync=gate)
    issuance_log.start()
    try:
        with pytest.raises(IssuanceLogError, match="not durable within"):
            await issuance_log.append_async(rec(1))
        with pytest.raises(IssuanceLogError, match="not durable within"):
            await asyncio.to_thread(issuance_log.append, rec(2))
    finally:
        gate.open.set()
        issuance_log.close()


async def submitted(issuance_log: IssuanceLog, serials: range) -> bool:
    """submit() a group; the outcome its callback gives, in this loop."""
    outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    issuance_log.submit([encode_record(rec(i)) for i in serials], outcome.set_result)
    async with asyncio.timeout(10):
        return await outcome


async def test_submit_calls_back_once_after_the_fsync(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    path = tmp_path / "l"
    issuance_log = IssuanceLog(path, max_batch=3, fsync=gate)  # 8 records: three batches
    issuance_log.start()
    try:
        calls: list[bool] = []
        issuance_log.submit([encode_record(rec(i)) for i in range(1, 9)], calls.append)
        await asyncio.sleep(0.05)
        assert gate.entered.is_set() and calls == []  # not before the fsync
        gate.open.set()
        async with asyncio.timeout(10):
            while not calls:
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        assert calls == [True]  # once, for the whole group, after its last batch
        assert gate.calls == 3
        assert await submitted(issuance_log, range(9, 11)) is True
    finally:
        issuance_log.close()
    assert [r.serial for r in read_log(path)] == list(range(1, 11))


async def test_submit_reports_a_failed_fsync_and_a_full_backlog(tmp_path: Path) -> None:
    def failing_fsync(fd: int) -> None:  # simulated: EIO cannot be produced here for real
        raise OSError(errno.EIO, "Input/output error")

    issuance_log = IssuanceLog(tmp_path / "l", fsync=failing_fsync)
    issuance_log.start()
    try:
        assert await submitted(issuance_log, range(1, 4)) is False
    finally:
        issuance_log.close()
    gate = Gate()
    gate.open.clear()
    issuance_log = IssuanceLog(tmp_path / "m", max_batch=4, max_pending=4, fsync=gate)
    issuance_log.start()
    try:
        issuance_log.submit([encode_record(rec(1))], lambda ok: None)
        assert gate.entered.wait(10)
        issuance_log.submit([encode_record(rec(i)) for i in range(2, 6)], lambda ok: None)
        with pytest.raises(IssuanceLogError, match="backlog full"):
            issuance_log.submit([encode_record(rec(9))], lambda ok: None)
    finally:
        gate.open.set()
        issuance_log.close()


async def test_submit_times_out_once(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    issuance_log = IssuanceLog(tmp_path / "l", append_timeout_s=0.2, fsync=gate)
    issuance_log.start()
    try:
        calls: list[bool] = []
        issuance_log.submit([encode_record(rec(1))], calls.append)
        await asyncio.sleep(0.4)
        assert calls == [False]
        gate.open.set()
        await asyncio.sleep(0.1)
        assert calls == [False]  # the late fsync does not call back a second time
    finally:
        gate.open.set()
        issuance_log.close()


def test_fsync_failure_fails_the_callers_and_stops_the_log(tmp_path: Path) -> None:
    # Simulated: a failing disk (EIO on fsync) cannot be produced here for real.
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with IssuanceLog(tmp_path / "l", fsync=failing_fsync) as issuance_log:
        with pytest.raises(IssuanceLogError, match="fsync failed"):
            issuance_log.append(rec(1))
        with pytest.raises(IssuanceLogError, match="fsync failed"):
            issuance_log.append(rec(2))
        assert issuance_log.stats.records == 0


def test_commits_are_timed_and_slow_ones_logged_once_a_report_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulated: slow storage is a real fdatasync after a sleep (a worn SD card cannot be
    # had here).
    delays = [0.0, 0.12, 0.12, 0.12, 0.12]

    def slow_fsync(fd: int) -> None:
        time.sleep(delays.pop(0))
        os.fdatasync(fd)

    monkeypatch.setattr(log_module, "_SLOW_REPORT_S", 0.5)
    caplog.set_level(logging.WARNING, logger="appliance.issuance.log")
    with IssuanceLog(tmp_path / "l", fsync=slow_fsync) as issuance_log:
        issuance_log.append(rec(1))  # fast
        stats = issuance_log.stats
        assert stats.slow_commits == 0 and sum(stats.commit_counts) == 1
        assert stats.commit_counts.index(1) < COMMIT_BUCKETS_S.index(SLOW_COMMIT_S)
        for serial in (2, 3, 4):
            issuance_log.append(rec(serial))
        time.sleep(0.5)  # past the report interval
        issuance_log.append(rec(5))
        stats = issuance_log.stats

    assert sum(stats.commit_counts) == stats.fsyncs == 5
    assert len(stats.commit_counts) == len(COMMIT_BUCKETS_S) + 1
    over_slow = COMMIT_BUCKETS_S.index(SLOW_COMMIT_S) + 1  # the buckets above 0.1 s
    assert sum(stats.commit_counts[over_slow:]) == 4
    assert stats.commit_counts[COMMIT_BUCKETS_S.index(0.25)] >= 1  # 0.12 s lands here
    assert stats.slow_commits == 4
    assert 0.48 <= stats.commit_seconds < 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # the first at once, then one after the interval
    assert "1 commit(s) took 100 ms or more since start, the slowest 0.1" in warnings[0]
    assert "3 commit(s) took 100 ms or more since the last report" in warnings[1]
    assert "storage is slow" in warnings[1]


def test_a_failed_commit_is_not_timed(tmp_path: Path) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with IssuanceLog(tmp_path / "l", fsync=failing_fsync) as issuance_log:
        with pytest.raises(IssuanceLogError):
            issuance_log.append(rec(1))
        stats = issuance_log.stats
    assert stats.failures == 1 and sum(stats.commit_counts) == 0 and stats.commit_seconds == 0


def test_backlog_full_is_refused_not_queued_forever(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.clear()
    with IssuanceLog(tmp_path / "l", max_batch=4, max_pending=8, max_wait_s=0, fsync=gate) as j:
        threads = [threading.Thread(target=j.append, args=(rec(1),))]
        threads[0].start()
        assert gate.entered.wait(10)
        for i in range(2, 10):
            threads.append(threading.Thread(target=j.append, args=(rec(i),)))
            threads[-1].start()
        wait_until(lambda: j.pending == 8)
        with pytest.raises(IssuanceLogError, match="backlog full"):
            j.append(rec(99))
        gate.open.set()
        for t in threads:
            t.join(10)
    assert sorted(r.serial for r in read_log(tmp_path / "l")) == list(range(1, 10))


def test_closed_log_refuses_and_close_flushes(tmp_path: Path) -> None:
    path = tmp_path / "l"
    issuance_log = IssuanceLog(path, max_wait_s=0.5)
    with pytest.raises(IssuanceLogError, match="not running"):
        issuance_log.append(rec(1))
    issuance_log.start()
    t = threading.Thread(target=issuance_log.append, args=(rec(1),))
    t.start()
    wait_until(lambda: issuance_log.pending == 1)
    issuance_log.close()  # must not wait out the 0.5 s linger, must write the record
    t.join(10)
    assert [r.serial for r in read_log(path)] == [1]
    with pytest.raises(IssuanceLogError, match="not running"):
        issuance_log.append(rec(2))


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
        issuance_log.append(rec(11))
    assert [r.serial for r in read_log(path)] == [*range(1, 10), 11]


def test_records_go_into_space_reserved_ahead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l"
    with IssuanceLog(path) as issuance_log:
        assert path.stat().st_size == len(MAGIC) + GROW_BYTES
        for serial in range(1, 6):
            issuance_log.append(rec(serial))
        # written over the zeros: the file did not grow, so fdatasync had no size to journal
        assert path.stat().st_size == len(MAGIC) + GROW_BYTES
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert [r.serial for r in read_log(path)] == [1, 2, 3, 4, 5]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], "reserved zeros are the end of the log, not a torn tail"
    with IssuanceLog(path) as issuance_log:  # reopened: appends after the records, not the zeros
        issuance_log.append(rec(6))
    assert [r.serial for r in read_log(path)] == [1, 2, 3, 4, 5, 6]


def test_more_space_is_reserved_before_it_runs_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_module, "GROW_BYTES", 2048)
    monkeypatch.setattr(log_module, "_GROW_LOW_WATER", 1024)
    path = tmp_path / "l"
    sizes = set()
    with IssuanceLog(path) as issuance_log:
        for serial in range(1, 60):
            issuance_log.append(rec(serial))
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
        issuance_log.append(rec(6))
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
import sys, threading
from pathlib import Path
from appliance.issuance.log import IssuanceLog, Issued
issuance_log = IssuanceLog(Path(sys.argv[1]))
issuance_log.start()
base = int(sys.argv[2])
out_lock = threading.Lock()
def work(k):
    i = 0
    while True:
        serial = base + k * 10_000_000 + i
        i += 1
        issuance_log.append(Issued(serial=serial, gen_time_ns=i, accuracy_us=1,
                              hash_algorithm="sha256", message_imprint=bytes(32),
                              nonce=i, ensemble_state="child"))
        with out_lock:  # printed only once durable: this is "a client received it"
            sys.stdout.write(f"{serial}\\n")
            sys.stdout.flush()
for k in range(8):
    threading.Thread(target=work, args=(k,), daemon=True).start()
threading.Event().wait()
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
            assert time.monotonic() < deadline, "child appended too slowly"
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
        issuance_log.append(rec(5_000_000_000))
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
    refused: list[str] = []
    lock = threading.Lock()

    def client(issuance_log: IssuanceLog, r: Issued) -> None:
        try:
            issuance_log.append(r)
        except IssuanceLogError as e:
            with lock:
                refused.append(str(e))
        else:
            with lock:
                acknowledged.add(r.serial)

    with IssuanceLog(path, max_wait_s=0.001) as issuance_log:
        serial = 1
        while not refused:
            assert serial < 10_000, "the 64 KiB file system never filled up"
            # 8 records at once, so that batches span several records and writes are partial
            threads = [
                threading.Thread(target=client, args=(issuance_log, rec(serial + k)))
                for k in range(8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            serial += 8
        assert all("No space left on device" in e for e in refused)
        # The log holds whole records only, and every acknowledged one.
        in_log = [r.serial for r in read_log(path)]
        assert acknowledged <= set(in_log)
        size = path.stat().st_size
        assert size == len(MAGIC) + sum(len(encode_record(rec(s))) for s in in_log)
        assert "cannot reserve" in caplog.text  # the 1 MiB reserve never fitted
        # Space comes back: the log carries on.
        filler.unlink()
        issuance_log.append(rec(100_000))
    assert [r.serial for r in read_log(path)][-1] == 100_000


def test_write_error_is_rolled_back_then_log_continues(tmp_path: Path) -> None:
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
        issuance_log.append(rec(1))
        fail.set()
        with pytest.raises(IssuanceLogError, match="No space left"):
            issuance_log.append(rec(2))
        issuance_log.append(rec(3))
    assert [r.serial for r in read_log(path)] == [1, 3]


def test_writer_crash_fails_waiters_at_once(tmp_path: Path) -> None:
    # Simulated: a bug in the commit path (an exception that is not an OSError).
    def buggy_fsync(fd: int) -> None:
        raise RuntimeError("bug")

    issuance_log = IssuanceLog(tmp_path / "l", append_timeout_s=30, fsync=buggy_fsync)
    issuance_log.start()
    t0 = time.monotonic()
    with pytest.raises(IssuanceLogError, match="crashed"):
        issuance_log.append(rec(1))
    assert time.monotonic() - t0 < 5, "waiters must not sit out their 30 s timeout"
    with pytest.raises(IssuanceLogError):
        issuance_log.append(rec(2))
    issuance_log.close()
