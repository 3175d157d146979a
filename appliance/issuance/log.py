"""The issuance log: every granted token, durably recorded before the client receives it.

Group commit: there is one way in, :meth:`IssuanceLog.submit`. An event loop hands it a
group of encoded records (``appliance.issuance.issuer.TsaService.commit``: the tokens the
fast lane signed together, or the one token of an aiohttp request) and one callback, called
in that loop once they are all durable, or not. One writer thread takes every record
pending at that moment, writes them with one ``pwrite`` and makes them durable with ONE
``fdatasync``, then calls back every group they belong to. A token whose record is not
durable is never handed out: the server answers ``systemFailure`` instead. The log may
therefore hold a record for a token a client did not receive (its connection dropped, its
wait timed out), never the other way round.

File format (``docs/adr/0005-serial-numbers-and-issuance-log.md``)::

    file   = MAGIC record*                  MAGIC = b"HORODATE-ILOG-1\n" (16 bytes)
    record = length:u32be crc32:u32be payload[length]
    payload = compact JSON object (UTF-8), the fields of :class:`Issued`

CRC-32 (zlib, ISO-HDLC) of the payload guards each record. The records may be followed by
zero bytes: space the writer reserved ahead (:data:`GROW_BYTES` at a time), so that a
commit overwrites blocks the file already has and ``fdatasync`` has no metadata to journal
(less latency per commit, alone or beside other processes: benchmarks/RESULTS.md). A record
never starts with a zero length, so the first one ends the log. Reading
tolerates a torn *tail* — bad bytes after which no valid record follows, the trace of a
crash mid-write — and logs a warning; :meth:`IssuanceLog.start` truncates it before
appending. A bad record that
is followed by a valid one is corruption: :class:`IssuanceLogCorrupt`, and the log refuses to
start until an operator has looked at it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from appliance.tsa.errors import TsaError

log = logging.getLogger(__name__)


MAGIC: Final = b"HORODATE-ILOG-1\n"


_FRAME: Final = struct.Struct(">II")  # length, CRC-32 of the payload


MAX_RECORD_BYTES: Final = 8192


_TAIL_SCAN_MAX_BYTES: Final = 64 * 1024 * 1024  # a torn tail is at most one batch


# Zero-filled space reserved ahead of the records, and when to reserve more. Only speed
# depends on it: a record written past the reserved space is as durable, fdatasync then
# also records the file's new size.
GROW_BYTES: Final = 1024 * 1024


_GROW_LOW_WATER: Final = GROW_BYTES // 4


_GROW_RETRY_S: Final = 10.0  # after a failure to reserve (a full disk), wait before retrying


# How long commits take (write + fdatasync of one group): the upper bounds, in seconds, of
# the histogram /metrics shows. Every token of a group waits for its commit, and a storage
# that grows slow (a worn SD card) shows here first.
COMMIT_BUCKETS_S: Final = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0
)  # fmt: skip


SLOW_COMMIT_S: Final = 0.1  # a commit this long is slow: logged, and counted on /health


_SLOW_REPORT_S: Final = 60.0  # slow commits are logged at most this often


_ENSEMBLE_MAX_CHARS: Final = 1024


_HASH_NAME_MAX_CHARS: Final = 32


_IMPRINT_MAX_BYTES: Final = 64  # SHA-512


_NONCE_MAX_BITS: Final = 512


_SERIAL_MAX_BITS: Final = 160  # RFC 3161 §2.4.2


_KEYS: Final = frozenset(
    {"serial", "gen_time_ns", "accuracy_us", "hash", "imprint", "nonce", "ensemble", "token"}
)


class IssuanceLogError(TsaError):
    """The issuance log cannot record (disk full, I/O error, closed, overloaded) or be read."""


class IssuanceLogCorrupt(IssuanceLogError):
    """A record in the middle of the log fails its checks: valid records follow a bad one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Issued:
    """One granted token, as the issuance log keeps it."""

    serial: int  # RFC 3161 §2.4.2 serialNumber
    gen_time_ns: int  # genTime, nanoseconds since the Unix epoch, UTC
    accuracy_us: int  # the token's accuracy field, in microseconds
    hash_algorithm: str  # messageImprint hash, e.g. "sha256"
    message_imprint: bytes  # messageImprint hashedMessage
    nonce: int | None = None  # the request's nonce, if any
    ensemble_state: str = ""  # short summary of the clock ensemble at issuance
    token_sha256: bytes | None = None  # SHA-256 of the TimeStampToken DER, if known

    def __post_init__(self) -> None:
        _check(self.field_values())

    def field_values(self) -> IssuedFields:
        """The fields in order (:data:`IssuedFields`)."""
        return (
            self.serial,
            self.gen_time_ns,
            self.accuracy_us,
            self.hash_algorithm,
            self.message_imprint,
            self.nonce,
            self.ensemble_state,
            self.token_sha256,
        )


# Issued's fields, in order, as a tuple: what the TSA's hot path encodes (encode_issued).
IssuedFields = tuple[int, int, int, str, bytes, int | None, str, bytes | None]


def _check(fields: IssuedFields) -> None:
    """What a record must be to be read back (:class:`Issued`'s fields); ``ValueError``."""
    serial, gen_time_ns, accuracy_us, hash_algorithm, imprint, nonce, state, token = fields
    if not 0 < serial < 1 << _SERIAL_MAX_BITS:
        raise ValueError(f"serial {serial} is not a positive integer of ≤ 160 bits")
    if gen_time_ns < 0:
        raise ValueError("gen_time_ns must not be negative")
    if accuracy_us < 0:
        raise ValueError("accuracy_us must not be negative")
    if not 0 < len(hash_algorithm) <= _HASH_NAME_MAX_CHARS:
        raise ValueError("hash_algorithm must be a short name such as 'sha256'")
    if not 0 < len(imprint) <= _IMPRINT_MAX_BYTES:
        raise ValueError(f"message_imprint must be 1 .. {_IMPRINT_MAX_BYTES} bytes")
    # A nonce is an INTEGER: a client may send a negative one, and the token echoes it.
    if nonce is not None and not abs(nonce) < 1 << _NONCE_MAX_BITS:
        raise ValueError(f"nonce must be within ±2^{_NONCE_MAX_BITS}")
    if len(state) > _ENSEMBLE_MAX_CHARS:
        raise ValueError(f"ensemble_state is longer than {_ENSEMBLE_MAX_CHARS} characters")
    if token is not None and len(token) != 32:
        raise ValueError("token_sha256 must be 32 bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuanceLogStats:
    """Counters since :meth:`IssuanceLog.start` (for ``/metrics`` and the benchmark)."""

    records: int
    fsyncs: int  # successful commits (write + fdatasync), as many as commit_counts adds up to
    bytes_written: int
    failures: int
    stopped: bool = False  # a failed fsync (or a writer crash): every record is refused
    # Successful commits by duration: count per bucket of COMMIT_BUCKETS_S (a commit
    # counts in the first bucket whose bound it does not exceed), then those over the last.
    commit_counts: tuple[int, ...] = (0,) * (len(COMMIT_BUCKETS_S) + 1)
    commit_seconds: float = 0.0  # their durations added up
    slow_commits: int = 0  # commits of SLOW_COMMIT_S or more


# Hash names and ensemble states repeat from token to token: encode each once.
_json_str = functools.lru_cache(maxsize=1024)(json.JSONEncoder(ensure_ascii=False).encode)


def encode_record(rec: Issued) -> bytes:
    """One framed record: ``length ‖ crc32 ‖ JSON payload`` (keys in a fixed order)."""
    return _encode(rec.field_values())


def encode_issued(fields: IssuedFields) -> bytes:
    """``encode_record(Issued(...))`` without making the :class:`Issued` (one record per
    token: the TSA's hot path). The same checks; ``ValueError`` on a field out of range."""
    _check(fields)
    return _encode(fields)


def _encode(fields: IssuedFields) -> bytes:
    serial, gen_time_ns, accuracy_us, hash_algorithm, imprint, nonce, state, token = fields
    nonce_text = "null" if nonce is None else str(nonce)
    token_text = "null" if token is None else f'"{token.hex()}"'
    payload = (
        f'{{"serial":{serial},"gen_time_ns":{gen_time_ns},'
        f'"accuracy_us":{accuracy_us},"hash":{_json_str(hash_algorithm)},'
        f'"imprint":"{imprint.hex()}","nonce":{nonce_text},'
        f'"ensemble":{_json_str(state)},"token":{token_text}}}'
    ).encode()
    if len(payload) > MAX_RECORD_BYTES:  # unreachable with Issued's limits; kept as a guard
        raise IssuanceLogError(f"record for serial {serial} exceeds {MAX_RECORD_BYTES} bytes")
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _int_field(obj: dict[str, object], key: str, *, optional: bool = False) -> int | None:
    value = obj[key]
    if value is None and optional:
        return None
    if type(value) is not int:
        raise ValueError(f"{key} is not an integer")
    return value


def _str_field(obj: dict[str, object], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value


def decode_payload(payload: bytes) -> Issued:
    """Parse and validate one record's payload; ``ValueError`` on anything unexpected."""
    obj = json.loads(payload.decode("utf-8"))
    if not isinstance(obj, dict) or obj.keys() != _KEYS:
        raise ValueError("unexpected record fields")
    token = obj["token"]
    if token is not None and not isinstance(token, str):
        raise ValueError("token is not a string")
    serial = _int_field(obj, "serial")
    gen_time_ns = _int_field(obj, "gen_time_ns")
    accuracy_us = _int_field(obj, "accuracy_us")
    assert serial is not None and gen_time_ns is not None and accuracy_us is not None
    return Issued(
        serial=serial,
        gen_time_ns=gen_time_ns,
        accuracy_us=accuracy_us,
        hash_algorithm=_str_field(obj, "hash"),
        message_imprint=bytes.fromhex(_str_field(obj, "imprint")),
        nonce=_int_field(obj, "nonce", optional=True),
        ensemble_state=_str_field(obj, "ensemble"),
        token_sha256=None if token is None else bytes.fromhex(token),
    )


_PAYLOAD_START: Final = b'{"serial":'


def _parse_frame(buf: bytes, pos: int) -> tuple[Issued, int] | None:
    """The record starting at ``pos`` in ``buf`` and its end offset, or None if not valid."""
    if len(buf) - pos < _FRAME.size:
        return None
    length, crc = _FRAME.unpack_from(buf, pos)
    end = pos + _FRAME.size + length
    if not 0 < length <= MAX_RECORD_BYTES or end > len(buf):
        return None
    payload = buf[pos + _FRAME.size : end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        return decode_payload(payload), end
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _frame_bytes_needed(buf: bytes, pos: int) -> int | None:
    """Bytes the frame at ``pos`` spans (header alone if not yet read); None if impossible."""
    if len(buf) - pos < _FRAME.size:
        return _FRAME.size
    length: int = _FRAME.unpack_from(buf, pos)[0]
    if not 0 < length <= MAX_RECORD_BYTES:
        return None
    return _FRAME.size + length


@dataclass(slots=True)
class ScanEnd:
    """Where a scan stopped: the end of the last valid record, and bytes of torn tail."""

    valid_end: int = len(MAGIC)
    torn_bytes: int = 0


def _valid_record_after(rest: bytes) -> int | None:
    """Offset in ``rest`` (≥ 1) where a valid record starts, or None (then it is a torn tail)."""
    pos = rest.find(_PAYLOAD_START, _FRAME.size + 1)
    while pos != -1:
        if _parse_frame(rest, pos - _FRAME.size) is not None:
            return pos - _FRAME.size
        pos = rest.find(_PAYLOAD_START, pos + 1)
    return None


def _scan(f: BinaryIO, path: Path, end: ScanEnd) -> Iterator[Issued]:
    head = f.read(len(MAGIC))
    if head != MAGIC:
        raise IssuanceLogError(f"{path} is not a Horodate issuance log (bad header)")
    offset = len(MAGIC)  # file offset of buf[pos]
    index = 0
    chunk_bytes = 1 << 20
    buf = b""
    pos = 0
    while True:
        need = _frame_bytes_needed(buf, pos)
        if need is None:
            break  # impossible length: a bad record
        if len(buf) - pos < need:
            more = f.read(max(chunk_bytes, need))
            if not more:
                break  # EOF: clean end (pos == len(buf)) or an incomplete record
            buf = buf[pos:] + more
            pos = 0
            continue
        parsed = _parse_frame(buf, pos)
        if parsed is None:
            break  # CRC or content mismatch: a bad record
        rec, rec_end = parsed
        yield rec
        index += 1
        offset += rec_end - pos
        pos = rec_end
        end.valid_end = offset
    # What follows the last valid record: zeros reserved ahead, maybe after a torn write.
    rest = (buf[pos:] + f.read(_TAIL_SCAN_MAX_BYTES)).rstrip(b"\0")
    while more := f.read(1 << 20):
        if more.strip(b"\0"):
            raise IssuanceLogCorrupt(
                f"{path}: record #{index} at byte {offset} is corrupt and more than "
                f"{_TAIL_SCAN_MAX_BYTES} bytes follow it: not a torn tail"
            )
    if not rest:
        return
    found = _valid_record_after(rest)
    if found is not None:
        raise IssuanceLogCorrupt(
            f"{path}: record #{index} at byte {offset} is corrupt, yet a valid record follows "
            f"at byte {offset + found}; the log has been damaged (not a crash mid-write)"
        )
    end.torn_bytes = len(rest)
    log.warning(
        "%s: ignoring a torn last record (%d bytes at byte %d): a write a crash cut short, "
        "or one still in progress if the appliance is running; never acknowledged",
        path,
        len(rest),
        offset,
    )


def read_log(path: Path, *, end: ScanEnd | None = None) -> Iterator[Issued]:
    """Every record of the log, validated, in order.

    Stops with :class:`IssuanceLogCorrupt` at a corrupted record in the middle (after yielding
    the records before it); ignores a torn last record with a warning. ``end``, if given,
    says once the records are read where they ended and how many torn bytes followed.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the generator below
    except OSError as e:
        raise IssuanceLogError(f"cannot open issuance log {path}: {e}") from e
    with f:
        try:
            yield from _scan(f, Path(path), ScanEnd() if end is None else end)
        except OSError as e:
            raise IssuanceLogError(f"cannot read issuance log {path}: {e}") from e


class _Batch:
    """Records committed together, and the groups they belong to (in part or whole)."""

    __slots__ = ("first_enqueued", "frames", "groups")

    def __init__(self, now: float) -> None:
        self.frames: list[bytes] = []
        self.first_enqueued = now
        self.groups: list[tuple[asyncio.AbstractEventLoop, _Group]] = []

    def settle(self, durable: bool) -> None:
        """Tell each group, in its own event loop (the writer's thread)."""
        for loop, group in self.groups:
            # RuntimeError: that event loop is closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(group.part_settled, durable)


class _Group:
    """Records submitted together (:meth:`IssuanceLog.submit`): one callback when every
    batch they went into has settled. Runs in the submitter's event loop."""

    __slots__ = ("ok", "on_durable", "parts", "timer")

    def __init__(self, on_durable: Callable[[bool], None]) -> None:
        self.on_durable: Callable[[bool], None] | None = on_durable
        self.parts = 0
        self.ok = True
        self.timer: asyncio.TimerHandle | None = None

    def part_settled(self, ok: bool) -> None:
        self.ok = self.ok and ok
        self.parts -= 1
        if self.parts <= 0:
            self._finish(self.ok)

    def expire(self) -> None:
        log.error("issuance log: records not durable in time; their tokens are withheld")
        self._finish(False)

    def _finish(self, ok: bool) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        callback, self.on_durable = self.on_durable, None
        if callback is not None:  # once: a late settle after the deadline changes nothing
            callback(ok)


def _caller_error(error: IssuanceLogError) -> IssuanceLogError:
    """A fresh exception per refused submitter (the stored one, raised in several threads,
    would share and grow one traceback)."""
    exc = IssuanceLogError(str(error))
    exc.__cause__ = error
    return exc


class IssuanceLog:
    """Append-only, group-committed issuance log (see the module docstring).

    ``max_batch``: records per write+fsync at most. ``max_wait_s``: how long the first record
    of a batch may wait for companions before the batch is written (default 0: none; the
    next batch forms by itself while the current one's fsync runs, and a linger only adds
    latency to every token). ``max_pending``: records
    queued at most; beyond, :meth:`submit` fails at once with :class:`IssuanceLogError`
    (back-pressure: the server answers ``systemFailure`` rather than queue without bound).
    ``durable_timeout_s``: how long a group may wait to be durable; past it, its callback
    says it is not (its records may still reach the log later).
    ``fsync`` and ``pwrite`` are injectable for tests (count fsyncs, simulate EIO).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_batch: int = 4096,
        max_wait_s: float = 0.0,
        max_pending: int = 65536,
        durable_timeout_s: float = 10.0,
        fsync: Callable[[int], None] = os.fdatasync,
        pwrite: Callable[[int, bytes, int], int] = os.pwrite,
    ) -> None:
        if max_batch < 1 or max_pending < max_batch:
            raise ValueError("need 1 <= max_batch <= max_pending")
        if not 0 <= max_wait_s <= 1:
            raise ValueError("max_wait_s must be within 0 .. 1 s")
        self._path = Path(path)
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._max_pending = max_pending
        self._durable_timeout_s = durable_timeout_s
        self._fsync = fsync
        self._pwrite = pwrite
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Batch] = deque()
        self._pending = 0
        self._fd = -1
        self._end = 0  # file offset after the last durable record
        self._size = 0  # the file's size: zeros reserved from _end on
        self._grow_after = 0.0  # monotonic time before which reserving is not retried
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._stopping = False
        self._failed: IssuanceLogError | None = None
        self._records = self._bytes = self._failures = 0
        self._commit_counts = [0] * (len(COMMIT_BUCKETS_S) + 1)
        self._commit_seconds = 0.0
        self._slow_commits = 0
        self._slow_reported = 0  # slow commits already logged
        self._slowest_s = 0.0  # the slowest commit since the last report
        self._slow_report_after = 0.0  # monotonic time before which none is logged

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Open (or create) the log, drop a torn tail, start the writer thread."""
        if self._thread is not None:
            raise IssuanceLogError("issuance log already started")
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise IssuanceLogError(f"cannot open issuance log {self._path}: {e}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                raise IssuanceLogError(
                    f"issuance log {self._path} is in use by another process"
                ) from e
            self._end = self._recover(fd)
            self._size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if self._size - self._end < _GROW_LOW_WATER:  # zeros left by the last run serve
            self._reserve()
        self._accepting = True
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="issuance-log", daemon=True)
        self._thread.start()

    def _recover(self, fd: int) -> int:
        """Validate the existing log; truncate a torn tail; return the end offset."""
        try:
            size = os.fstat(fd).st_size
            if size < len(MAGIC):
                # New, or a crash while creating it (the header is the only content).
                with open(fd, "rb", closefd=False) as f:
                    head = f.read()
                if not MAGIC.startswith(head):
                    raise IssuanceLogError(f"{self._path} is not a Horodate issuance log")
                os.ftruncate(fd, 0)
                self._write_all(fd, MAGIC, 0)
                os.fsync(fd)
                dfd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
                return len(MAGIC)
            end = ScanEnd()
            count = 0
            with open(fd, "rb", closefd=False) as f:
                for _ in _scan(f, self._path, end):
                    count += 1
            if end.torn_bytes:
                log.warning(
                    "%s: truncating the torn tail (%d bytes) after %d valid records",
                    self._path,
                    end.torn_bytes,
                    count,
                )
                os.ftruncate(fd, end.valid_end)
                os.fsync(fd)
            log.info("issuance log %s: %d records", self._path, count)
            return end.valid_end
        except OSError as e:
            raise IssuanceLogError(f"cannot prepare issuance log {self._path}: {e}") from e

    def close(self, *, timeout_s: float = 10.0) -> None:
        """Stop accepting, write and fsync what is pending, stop the writer (deadline-bound)."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
        thread.join(timeout_s)
        if thread.is_alive():
            raise IssuanceLogError(
                f"issuance log writer did not finish within {timeout_s} s (disk stalled?)"
            )
        self._thread = None
        os.close(self._fd)
        self._fd = -1
        commits = sum(self._commit_counts)
        if commits:
            log.info(
                "issuance log %s closed: %d records in %d commits since start (%.1f per "
                "fsync; a commit took %.2f ms on average, %d took %d ms or more)",
                self._path.name,
                self._records,
                commits,
                self._records / commits,
                self._commit_seconds / commits * 1000,
                self._slow_commits,
                SLOW_COMMIT_S * 1000,
            )

    def __enter__(self) -> IssuanceLog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Records queued for the writer (not counting the batch being committed)."""
        return self._pending

    @property
    def stats(self) -> IssuanceLogStats:
        return IssuanceLogStats(
            records=self._records,
            fsyncs=sum(self._commit_counts),
            bytes_written=self._bytes,
            failures=self._failures,
            stopped=self._failed is not None,
            commit_counts=tuple(self._commit_counts),
            commit_seconds=self._commit_seconds,
            slow_commits=self._slow_commits,
        )

    # -- callers --------------------------------------------------------------------------

    def _enqueue(self, frames: list[bytes]) -> list[_Batch]:
        """Add frames to the open batch, opening others as each fills; return the batches
        they went into. Nothing is queued if one cannot be. Caller holds ``self._cond``."""
        if not self._accepting:
            raise IssuanceLogError("issuance log is not running")
        if self._failed is not None:
            raise _caller_error(self._failed)
        if self._pending + len(frames) > self._max_pending:
            raise IssuanceLogError(
                f"issuance log backlog full ({self._pending} records waiting for the disk)"
            )
        batches: list[_Batch] = []
        taken = 0
        while taken < len(frames):
            if not self._queue or len(self._queue[-1].frames) >= self._max_batch:
                self._queue.append(_Batch(time.monotonic()))
            batch = self._queue[-1]
            had = len(batch.frames)
            batch.frames += frames[taken : taken + self._max_batch - had]
            taken += len(batch.frames) - had
            # wake an idle or lingering writer, no more often
            if had == 0 or len(batch.frames) >= self._max_batch:
                self._cond.notify()
            batches.append(batch)
        self._pending += len(frames)
        return batches

    def submit(self, frames: list[bytes], on_durable: Callable[[bool], None]) -> None:
        """Queue ``frames`` (from :func:`encode_record` or :func:`encode_issued`) for the
        writer; call ``on_durable(True)`` once in the running event loop when they are all
        durable, or ``on_durable(False)`` if any is not (a failed write or fsync) or not
        within ``durable_timeout_s``. Thread-safe: several event loops may submit at once.

        One call and one callback per group (``appliance.http.group_commit`` hands over the
        tokens an event-loop iteration signed). Raises :class:`IssuanceLogError` at once if
        the log is not running, has stopped, or its backlog is full (nothing of ``frames``
        is queued then).
        """
        loop = asyncio.get_running_loop()
        group = _Group(on_durable)
        with self._cond:
            batches = self._enqueue(frames)
            group.parts = len(batches)
            for batch in batches:
                batch.groups.append((loop, group))
        group.timer = loop.call_later(self._durable_timeout_s, group.expire)

    # -- the writer -----------------------------------------------------------------------

    def _take_batch(self) -> _Batch | None:
        """The next batch to commit (after lingering up to max_wait_s), or None to stop."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait(1.0)  # idle; re-checks stop flag at least every second
            batch = self._queue[0]
            linger_until = batch.first_enqueued + self._max_wait_s
            while len(batch.frames) < self._max_batch and not self._stopping:
                remaining = linger_until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._queue.popleft()
            self._pending -= len(batch.frames)
            return batch

    def _run(self) -> None:
        batch: _Batch | None = None
        try:
            while True:
                batch = self._take_batch()
                if batch is None:
                    return
                batch.settle(self._commit(batch.frames) is None)
                batch = None
                if self._size - self._end < _GROW_LOW_WATER:
                    self._reserve()
        except BaseException as e:  # a bug: fail every group now, not at its deadline
            self._failed = IssuanceLogError(f"issuance log writer crashed: {e!r}")
            log.critical("%s", self._failed, exc_info=True)
            with self._cond:
                self._accepting = False
                failed = [batch] if batch is not None else []
                failed += self._queue
                self._queue.clear()
                self._pending = 0
            for b in failed:
                b.settle(False)

    def _write_all(
        self,
        fd: int,
        data: bytes,
        offset: int,
        pwrite: Callable[[int, bytes, int], int] | None = None,
    ) -> None:
        pwrite = pwrite or self._pwrite
        written = 0
        while written < len(data):
            n = pwrite(fd, data[written:] if written else data, offset + written)
            if n <= 0:
                raise OSError(errno.EIO, "write returned 0")
            written += n

    def _reserve(self) -> None:
        """Zero-fill :data:`GROW_BYTES` more after the records, durably (the writer's
        thread, or start()). On failure (a full disk) the zeros written are given back, and
        records go on extending the file as they come until a retry succeeds."""
        if time.monotonic() < self._grow_after:
            return
        size = self._size
        try:  # not through the injectable pwrite/fsync: those stand for record commits
            self._write_all(self._fd, bytes(GROW_BYTES), size, pwrite=os.pwrite)
            os.fdatasync(self._fd)
        except OSError as e:
            self._grow_after = time.monotonic() + _GROW_RETRY_S
            log.warning(
                "issuance log %s: cannot reserve %d KiB ahead (%s); records still go to the "
                "end of the file",
                self._path,
                GROW_BYTES // 1024,
                e,
            )
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
            return
        self._size = size + GROW_BYTES

    def _timed(self, seconds: float) -> None:
        """Count a successful commit of ``seconds`` (the writer's thread); log slow ones,
        at most once a minute, with how many there were since the last report."""
        self._commit_counts[bisect.bisect_left(COMMIT_BUCKETS_S, seconds)] += 1
        self._commit_seconds += seconds
        if seconds < SLOW_COMMIT_S:
            return
        self._slow_commits += 1
        self._slowest_s = max(self._slowest_s, seconds)
        now = time.monotonic()
        if now < self._slow_report_after:
            return
        log.warning(
            "issuance log %s: %d commit(s) took %d ms or more since %s, the slowest %.3f s: "
            "the storage is slow to flush, and every token waits for its commit",
            self._path.name,
            self._slow_commits - self._slow_reported,
            SLOW_COMMIT_S * 1000,
            "the last report" if self._slow_reported else "start",
            self._slowest_s,
        )
        self._slow_reported, self._slowest_s = self._slow_commits, 0.0
        self._slow_report_after = now + _SLOW_REPORT_S

    def _commit(self, frames: list[bytes]) -> IssuanceLogError | None:
        if self._failed is not None:
            return self._failed
        data = b"".join(frames)
        started = time.perf_counter()
        try:
            self._write_all(self._fd, data, self._end)
        except OSError as e:
            self._failures += 1
            error = IssuanceLogError(
                f"issuance log write failed, {len(frames)} records not recorded: {e}"
            )
            log.error("%s", error)
            try:  # undo a partial write so the log stays a sequence of whole records
                os.ftruncate(self._fd, self._end)
                self._size = self._end
            except OSError as e2:
                self._failed = IssuanceLogError(
                    f"issuance log write failed and could not be rolled back: {e2}"
                )
                log.critical("%s; refusing all further records", self._failed)
            return error
        try:
            self._fsync(self._fd)
        except OSError as e:
            # After a failed fsync the kernel may have dropped the dirty pages: what is on
            # disk is unknown, so no later fsync can vouch for these records. Stop for good.
            self._failures += 1
            self._failed = IssuanceLogError(f"issuance log fsync failed, log stopped: {e}")
            log.critical("%s", self._failed)
            return self._failed
        self._timed(time.perf_counter() - started)
        self._end += len(data)
        self._size = max(self._size, self._end)
        self._records += len(frames)
        self._bytes += len(data)
        return None
