"""Time-stamp token serial numbers: unique for the life of the TSA, across restarts and crashes.

RFC 3161 §2.4.2: ``serialNumber`` is a positive integer, unique for each token issued by a
given TSA, of at most 160 bits. Design (see ``docs/adr/0005-serial-numbers-and-issuance-log.md``):

    serial = instance_id << 96 | run_tag << 64 | counter        (at most 159 bits, always > 0)

* ``counter`` (64 bits) comes from blocks reserved ahead: the state file holds the high-water
  mark, the first counter value never handed out by any earlier run. Before the first serial
  of a block leaves this module, the new high-water mark is durably on disk (temp file,
  fsync, rename, fsync of the directory). After a crash the next run resumes at the persisted
  mark: the unused rest of the block becomes a gap; a counter value is never reused.
* ``instance_id`` (63 random bits, never 0) is drawn once, by :meth:`SerialAllocator.init`,
  so that two independently initialised appliances never need to coordinate.
* ``run_tag`` (32 random bits) is drawn at every start. It is defence in depth against the
  operator's mistakes the counter cannot see: a state file restored from a backup or copied
  to a second appliance. Two such runs collide only if their 32-bit tags are equal.

The state file is a few lines of text (``horodate-serials 1`` / ``instance`` / ``next`` /
``crc32``) so an operator can read it; a file that does not parse, or whose CRC does not
match, is refused — restarting at 1 could hand out a serial twice.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance.tsa.errors import TsaError

log = logging.getLogger(__name__)


MAX_SERIAL_BITS: Final = 160  # RFC 3161 §2.4.2: "integers up to 160 bits"


_COUNTER_BITS: Final = 64


_RUN_TAG_BITS: Final = 32


_INSTANCE_BITS: Final = 63  # 63 + 32 + 64 = 159 bits: positive and below the 160-bit cap


_COUNTER_MAX: Final = (1 << _COUNTER_BITS) - 1


_MAGIC: Final = "horodate-serials 1"


_STATE_MAX_BYTES: Final = 4096


def split_serial(serial: int) -> tuple[int, int, int]:
    """(instance_id, run_tag, counter) of a serial this module made."""
    return (
        serial >> (_RUN_TAG_BITS + _COUNTER_BITS),
        (serial >> _COUNTER_BITS) & ((1 << _RUN_TAG_BITS) - 1),
        serial & _COUNTER_MAX,
    )


class SerialError(TsaError):
    """The serial-number state cannot be used (missing, corrupt, locked, or not durable)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialState:
    """The persisted part of the allocator: instance id and high-water mark (pure codec)."""

    instance_id: int
    next_counter: int  # first counter value no run has been allowed to hand out

    def __post_init__(self) -> None:
        if not 0 < self.instance_id < (1 << _INSTANCE_BITS):
            raise SerialError(f"instance id {self.instance_id:#x} outside 1 .. 2^63-1")
        if not 0 < self.next_counter <= _COUNTER_MAX + 1:
            raise SerialError(f"high-water mark {self.next_counter} outside 1 .. 2^64")

    def encode(self) -> bytes:
        body = f"{_MAGIC}\ninstance {self.instance_id:016x}\nnext {self.next_counter}\n"
        crc = zlib.crc32(body.encode("ascii"))
        return f"{body}crc32 {crc:08x}\n".encode("ascii")

    @classmethod
    def decode(cls, data: bytes, *, source: str = "serial state") -> SerialState:
        def bad(why: str) -> SerialError:
            return SerialError(
                f"{source} is corrupt ({why}); refusing to guess a high-water mark, which "
                "could duplicate serial numbers. Initialise a new serial state instead: it "
                "gets a new random instance id, so its serials cannot meet the old ones."
            )

        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as e:
            raise bad("not ASCII text") from e
        lines = text.split("\n")
        if len(lines) != 5 or lines[4] != "" or lines[0] != _MAGIC:
            raise bad("unexpected layout")
        body = "\n".join(lines[:3]) + "\n"
        key_crc, _, crc_hex = lines[3].partition(" ")
        key_inst, _, inst_hex = lines[1].partition(" ")
        key_next, _, next_dec = lines[2].partition(" ")
        if (key_crc, key_inst, key_next) != ("crc32", "instance", "next"):
            raise bad("unexpected keys")
        try:
            crc = int(crc_hex, 16)
            instance_id = int(inst_hex, 16)
            next_counter = int(next_dec, 10)
        except ValueError as e:
            raise bad("a field is not a number") from e
        if len(crc_hex) != 8 or crc != zlib.crc32(body.encode("ascii")):
            raise bad("CRC mismatch")
        try:
            return cls(instance_id=instance_id, next_counter=next_counter)
        except SerialError as e:
            raise bad(str(e)) from e


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_state_durably(path: Path, state: SerialState) -> None:
    """Temp file, fsync, rename over, fsync the directory: after return the state survives
    power loss; before it, the old state is intact (rename is atomic, POSIX)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            data = state.encode()
            if os.write(fd, data) != len(data):
                raise OSError(errno.EIO, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        raise SerialError(f"cannot persist serial high-water mark to {path}: {e}") from e


class SerialAllocator:
    """Hands out unique token serial numbers; thread-safe; ≥ 10⁶ serials/s amortised.

    ``SerialAllocator(path)`` opens an existing state file (``SerialError`` if it is missing
    or corrupt). ``SerialAllocator(path, create=True)`` (or :meth:`init`) creates it when
    absent, with a fresh random instance id. A lock file beside the state (``<path>.lock``,
    ``flock``) keeps a second process from allocating from the same state at the same time.
    """

    def __init__(self, path: Path, *, block_size: int = 65536, create: bool = False) -> None:
        if not 1 <= block_size <= 1 << 32:
            raise ValueError(f"block_size must be in 1 .. 2^32, got {block_size}")
        self._path = Path(path)
        self._block_size = block_size
        self._lock = threading.Lock()
        self._lock_fd = self._take_file_lock()
        try:
            state = self._load(create=create)
            self._instance_id = state.instance_id
            self._run_tag = secrets.randbits(_RUN_TAG_BITS)
            self._base = (self._instance_id << (_RUN_TAG_BITS + _COUNTER_BITS)) | (
                self._run_tag << _COUNTER_BITS
            )
            self._next = state.next_counter  # next counter value to hand out
            self._limit = state.next_counter  # first counter value NOT yet reserved on disk
            self._closed = False
            self._reserve_block()  # on start: nothing is handed out before a reservation
        except BaseException:
            os.close(self._lock_fd)
            raise
        log.info(
            "serial numbers: instance %016x, run tag %08x, resuming at counter %d",
            self._instance_id,
            self._run_tag,
            self._next,
        )

    @classmethod
    def init(cls, path: Path, *, block_size: int = 65536) -> SerialAllocator:
        """Create a new state file (refuses to overwrite one) and open it."""
        if Path(path).exists():
            raise SerialError(f"{path} already exists; refusing to re-initialise serial state")
        return cls(path, block_size=block_size, create=True)

    @property
    def instance_id(self) -> int:
        return self._instance_id

    @property
    def run_tag(self) -> int:
        return self._run_tag

    def _take_file_lock(self) -> int:
        lock_path = self._path.with_name(self._path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise SerialError(f"cannot open lock file {lock_path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            raise SerialError(
                f"serial state {self._path} is in use by another process (lock {lock_path})"
            ) from e
        return fd

    def _load(self, *, create: bool) -> SerialState:
        try:
            with open(self._path, "rb") as f:
                data = f.read(_STATE_MAX_BYTES + 1)
        except FileNotFoundError as e:
            if not create:
                raise SerialError(
                    f"serial state {self._path} not found; initialise the TSA first "
                    "(it is created only on explicit initialisation, never implicitly)"
                ) from e
            state = SerialState(
                instance_id=secrets.randbits(_INSTANCE_BITS) or 1,
                next_counter=1,
            )
            _write_state_durably(self._path, state)
            log.warning("serial state created: %s, instance %016x", self._path, state.instance_id)
            return state
        except OSError as e:
            raise SerialError(f"cannot read serial state {self._path}: {e}") from e
        if len(data) > _STATE_MAX_BYTES:
            raise SerialError(f"serial state {self._path} is larger than {_STATE_MAX_BYTES} bytes")
        return SerialState.decode(data, source=f"serial state {self._path}")

    def _reserve_block(self) -> None:
        """Persist the end of the next block before any serial of it is handed out."""
        new_limit = self._limit + self._block_size
        if self._limit > _COUNTER_MAX:
            raise SerialError("serial counter exhausted (2^64 serials issued)")
        new_limit = min(new_limit, _COUNTER_MAX + 1)
        _write_state_durably(
            self._path, SerialState(instance_id=self._instance_id, next_counter=new_limit)
        )
        self._limit = new_limit

    def next(self) -> int:
        """The next serial number: positive, at most 159 bits, never handed out before."""
        with self._lock:
            if self._closed:
                raise SerialError("serial allocator is closed")
            counter = self._next
            if counter >= self._limit:
                self._reserve_block()
            self._next = counter + 1
        return self._base | counter

    def close(self) -> None:
        """Release the file lock. The unused rest of the block is abandoned (a gap)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._lock_fd)

    def __enter__(self) -> SerialAllocator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
