"""What a witness remembers, durably: the logs it witnesses and, per log, the latest
checkpoint it cosigned — ``DATA_DIR/witness.db``, SQLite.

Why SQLite rather than a file per log written to a temporary file, fsynced, renamed and
the directory fsynced: the state is read and changed by two processes — the running
witness, and ``horodate witness add-log`` adding a log while it runs — and one update must
compare and swap (tlog-witness: "checking the old size against the latest checkpoint and
persisting the new checkpoint must be performed atomically"). SQLite gives both in one
``BEGIN IMMEDIATE`` transaction: the write lock excludes every other writer, in this
process or another (a second witness started on the same directory by mistake cannot
accept a second checkpoint from the same old size either), and a COMMIT in WAL mode with
``synchronous=FULL`` has fsynced the write-ahead log before it returns, so a cosignature is
never handed out for a state a crash could lose. A hand-rolled rename protocol would need
its own lock file for the first property, and gets the second wrong on the first missed
fsync. The vault already runs on SQLite: no new dependency, the same PRAGMAs.

Append-only where it matters: triggers refuse to shrink a log's cosigned size and to
delete it, so a bug above cannot roll a log back (the attack a witness exists to stop).
Refused checkpoints that carried the log's valid signature are kept as evidence
(tlog-witness: the witness "MAY log the request [...] as it might be proof of log
misbehavior"), a bounded number per log.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from daemon.note import NoteError, Verifier
from daemon.witness.protocol import EMPTY, Conflict, TreeHead, WitnessError

SCHEMA_VERSION: Final = 1
EVIDENCE_MAX_PER_LOG: Final = 1000  # refused-but-signed checkpoints kept per log
_BUSY_TIMEOUT_MS: Final = 5000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS logs (
    origin   TEXT NOT NULL,
    vkey     TEXT NOT NULL,            -- a signed-note verifier key of the log
    added_at TEXT NOT NULL,
    PRIMARY KEY (origin, vkey)
);
CREATE TABLE IF NOT EXISTS cosigned (
    origin      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL CHECK (size >= 0),
    root        BLOB NOT NULL CHECK (length(root) = 32),
    note        TEXT NOT NULL,         -- the checkpoint, its log signatures, our cosignature
    cosigned_at INTEGER NOT NULL       -- POSIX seconds, the cosignature's timestamp
);
CREATE TRIGGER IF NOT EXISTS cosigned_never_shrinks BEFORE UPDATE ON cosigned
WHEN NEW.size < OLD.size OR NEW.origin IS NOT OLD.origin
BEGIN SELECT RAISE(ABORT, 'a cosigned log never shrinks'); END;
CREATE TRIGGER IF NOT EXISTS cosigned_never_deleted BEFORE DELETE ON cosigned
BEGIN SELECT RAISE(ABORT, 'a cosigned log is never forgotten'); END;
CREATE TABLE IF NOT EXISTS evidence (
    id          INTEGER PRIMARY KEY,
    origin      TEXT NOT NULL,
    received_at INTEGER NOT NULL,      -- POSIX seconds
    reason      TEXT NOT NULL,
    body        BLOB NOT NULL          -- the request as it came
);
CREATE INDEX IF NOT EXISTS evidence_by_origin ON evidence (origin);
"""


class StateError(WitnessError):
    """The witness's database cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class Cosigned:
    """The latest checkpoint cosigned for a log."""

    head: TreeHead
    note: str
    cosigned_at: int


@dataclass(frozen=True, slots=True)
class Log:
    origin: str
    vkeys: tuple[str, ...]
    latest: Cosigned | None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WitnessState:
    """One connection, shared by the threads of one process under a lock; other processes
    are kept out by SQLite's own write lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> WitnessState:
        created = not path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StateError(f"{path} is of schema {version}; this witness knows 1")
            if version < SCHEMA_VERSION:  # one transaction; idempotent if two race here
                conn.executescript(
                    f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
                )
            if created:  # the database and its WAL are new names in the directory
                _fsync_dir(path.parent)
        except (sqlite3.Error, OSError) as e:
            raise StateError(f"cannot open the witness's state {path}: {e}") from e
        return cls(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT (fsynced); ROLLBACK when anything raises."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StateError(f"the witness's state is unavailable: {e}") from e
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StateError(f"the witness's state could not be written: {e}") from e
                raise

    def _read(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StateError(f"the witness's state cannot be read: {e}") from e

    # -- the logs it witnesses ------------------------------------------------------------

    def add_log(self, origin: str, vkey: str, *, at: str) -> bool:
        """Trust ``vkey`` for ``origin``; False if it was already. Several keys may sign
        for one origin (a log rotating its key)."""
        try:
            Verifier.from_key_string(vkey)
        except NoteError as e:
            raise WitnessError(f"the log's verifier key: {e}") from e
        if not origin or "\n" in origin:
            raise WitnessError("an origin is one non-empty line")
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO logs (origin, vkey, added_at) VALUES (?, ?, ?)",
                (origin, vkey.strip(), at),
            )
            return cur.rowcount == 1

    def verifiers(self, origin: str) -> tuple[Verifier, ...]:
        """The keys trusted for ``origin``; empty if the witness does not know the log."""
        rows = self._read("SELECT vkey FROM logs WHERE origin = ? ORDER BY vkey", origin)
        return tuple(Verifier.from_key_string(str(vkey)) for (vkey,) in rows)

    def logs(self) -> list[Log]:
        rows = self._read("SELECT origin, vkey FROM logs ORDER BY origin, vkey")
        keys: dict[str, list[str]] = {}
        for origin, vkey in rows:
            keys.setdefault(str(origin), []).append(str(vkey))
        return [Log(o, tuple(v), self.latest(o)) for o, v in keys.items()]

    # -- the latest cosigned checkpoint, the one compare-and-swap ---------------------------

    def latest(self, origin: str) -> Cosigned | None:
        rows = self._read(
            "SELECT size, root, note, cosigned_at FROM cosigned WHERE origin = ?", origin
        )
        if not rows:
            return None
        size, root, note, at = rows[0]
        return Cosigned(head=TreeHead(int(size), bytes(root)), note=str(note), cosigned_at=int(at))

    def head(self, origin: str) -> TreeHead:
        """The latest size and root cosigned for ``origin`` (the empty tree if none)."""
        latest = self.latest(origin)
        return EMPTY if latest is None else latest.head

    def advance(
        self, origin: str, *, expected: TreeHead, new: TreeHead, note: str, at: int
    ) -> None:
        """Record ``new`` as the latest cosigned head of ``origin`` if the stored head is
        still ``expected``; else :class:`Conflict` with the stored size. Durable on return."""
        if new.size < expected.size:
            raise WitnessError(f"refusing to roll {origin!r} back from {expected.size}")
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT size, root FROM cosigned WHERE origin = ?", (origin,)
            ).fetchone()
            current = EMPTY if row is None else TreeHead(int(row[0]), bytes(row[1]))
            if current != expected:
                raise Conflict(current.size)
            conn.execute(
                "INSERT INTO cosigned (origin, size, root, note, cosigned_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET "
                "size = excluded.size, root = excluded.root, note = excluded.note, "
                "cosigned_at = excluded.cosigned_at",
                (origin, new.size, new.root, note, at),
            )

    # -- evidence ----------------------------------------------------------------------------

    def keep_evidence(self, origin: str, reason: str, body: bytes, *, at: int) -> bool:
        """Keep a refused request the log signed; False once the log's quota is reached."""
        with self._transaction() as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM evidence WHERE origin = ?", (origin,)
            ).fetchone()
            if count >= EVIDENCE_MAX_PER_LOG:
                return False
            conn.execute(
                "INSERT INTO evidence (origin, received_at, reason, body) VALUES (?, ?, ?, ?)",
                (origin, at, reason, body),
            )
            return True

    def evidence(self, origin: str) -> list[tuple[int, str, bytes]]:
        rows = self._read(
            "SELECT received_at, reason, body FROM evidence WHERE origin = ? ORDER BY id", origin
        )
        return [(int(a), str(r), bytes(b)) for a, r, b in rows]
