"""The vault's store on SQLite: the embedded default, one file in the data directory.

One writer connection (the committer's thread, :mod:`daemon.committer`) and one read-only
connection per reading thread; WAL lets them run side by side. Durability: WAL with
``synchronous=FULL`` (each COMMIT is fsynced before it returns: an acknowledged entry
survives a power cut), ``secure_delete`` so that destroyed personal data is overwritten in
the file, not only unlinked from the b-tree.

The stdlib ``sqlite3`` module rather than sqlite-utils: the vault needs exact control of
transactions (savepoints per request inside one group commit), of the PRAGMAs, and of the
errors (SQLITE_FULL becomes :class:`StoreFull`, a 507); sqlite-utils is built for the other
job, exploring and loading data.

The SQL is kept portable (no upsert, no RETURNING, no engine types): the PostgreSQL backend
of the multi-site deployment implements the same two classes.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from daemon.errors import VaultError
from daemon.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("horodate.vault.store")

DB_NAME: Final = "vault.sqlite3"
_BUSY_TIMEOUT_MS: Final = 10_000


class StoreError(VaultError):
    """The database failed; the message says how (never a raw ``sqlite3`` error)."""


class StoreFull(StoreError):
    """The disk (or the quota) is full: nothing was written; retry when space returns."""


class StoreTooNew(StoreError):
    """The database's schema is newer than this program: refuse rather than damage it."""


@dataclass(frozen=True, slots=True)
class EntryRow:
    idx: int
    establishment: str
    kind: str
    session_id: str
    occurred_at: str
    received_at: str
    corrects: int | None
    leaf: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class SealRow:
    idx: int
    token: bytes  # DER TimeStampResp
    gen_time: str
    sealed_at: str
    tsa: str | None = None  # the URL of the TSA that sealed it (v6; NULL before)


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    size: int
    note: str
    token: bytes | None
    created_at: str


@dataclass(frozen=True, slots=True)
class SessionRow:
    idx: int
    establishment: str
    session_id: str
    version: int
    start_at: str
    end_at: str
    cancelled: bool


@dataclass(frozen=True, slots=True)
class IdempotencyRow:
    scope: str
    key: str
    body_hash: bytes | None  # None once retention destroyed it
    first_idx: int
    count: int
    batch: bool
    created_at: str


@dataclass(frozen=True, slots=True)
class TokenRow:
    token_hash: bytes
    role: str
    establishment: str | None
    label: str
    created_at: str
    expires_at: str | None = None  # RFC 3339 UTC; None: never


def wrap(e: sqlite3.Error) -> StoreError:
    """A ``sqlite3`` error in our words (STYLE.md: foreign errors wrapped at the boundary)."""
    text = str(e)
    if isinstance(e, sqlite3.OperationalError) and (
        "database or disk is full" in text or "disk I/O error" in text
    ):
        return StoreFull(f"the disk is full: {text}")
    return StoreError(f"database error: {text}")


class Reader:
    """The queries, on one connection (a reader's, or the writer's inside a transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def _one(self, sql: str, *args: Any) -> Any:
        try:
            return self.conn.execute(sql, args).fetchone()
        except sqlite3.Error as e:
            raise wrap(e) from e

    def _all(self, sql: str, *args: Any) -> list[Any]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise wrap(e) from e

    def size(self) -> int:
        row = self._one("SELECT MAX(idx) FROM entries")
        return 0 if row[0] is None else int(row[0]) + 1

    def node(self, level: int, idx: int) -> bytes | None:
        row = self._one("SELECT hash FROM nodes WHERE level = ? AND idx = ?", level, idx)
        return None if row is None else bytes(row[0])

    def nodes(self, level: int, start: int, end: int) -> list[bytes]:
        """The stored nodes of one level from index ``start`` to ``end`` (excluded), in
        order, in one range read (a C2SP tile, :mod:`daemon.tiles`); those not stored are
        missing from the list."""
        rows = self._all(
            "SELECT hash FROM nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
            level,
            start,
            end,
        )
        return [bytes(r[0]) for r in rows]

    def entry(self, idx: int) -> EntryRow | None:
        row = self._one("SELECT * FROM entries WHERE idx = ?", idx)
        return None if row is None else EntryRow(*row)

    def entries(self, start: int, end: int) -> list[EntryRow]:
        rows = self._all(
            "SELECT * FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", start, end
        )
        return [EntryRow(*r) for r in rows]

    def seal(self, idx: int) -> SealRow | None:
        row = self._one("SELECT * FROM seals WHERE idx = ?", idx)
        return None if row is None else SealRow(*row)

    def seals(self, start: int, end: int) -> dict[int, SealRow]:
        rows = self._all("SELECT * FROM seals WHERE idx >= ? AND idx < ?", start, end)
        return {r[0]: SealRow(*r) for r in rows}

    def pending(self, limit: int) -> list[tuple[int, bytes]]:
        """Entries without a token, oldest first: ``(idx, leaf_hash)``."""
        rows = self._all(
            "SELECT e.idx, e.leaf_hash FROM entries e LEFT JOIN seals s ON s.idx = e.idx "
            "WHERE s.idx IS NULL ORDER BY e.idx LIMIT ?",
            limit,
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    def pending_count(self) -> int:
        row = self._one(
            "SELECT COUNT(*) FROM entries e LEFT JOIN seals s ON s.idx = e.idx WHERE s.idx IS NULL"
        )
        return int(row[0])

    def disclosure(self, idx: int) -> str | None:
        row = self._one("SELECT body FROM disclosures WHERE idx = ?", idx)
        return None if row is None else str(row[0])

    def corrections_of(self, idx: int) -> list[int]:
        return [
            r[0] for r in self._all("SELECT idx FROM entries WHERE corrects = ? ORDER BY idx", idx)
        ]

    def latest_checkpoint(self) -> CheckpointRow | None:
        row = self._one("SELECT * FROM checkpoints ORDER BY size DESC LIMIT 1")
        return None if row is None else CheckpointRow(*row)

    def checkpoints(self) -> list[CheckpointRow]:
        return [CheckpointRow(*r) for r in self._all("SELECT * FROM checkpoints ORDER BY size")]

    def journal_head(self) -> tuple[int, bytes | None]:
        """``(next seq, last link)``; ``(0, None)`` for an empty journal."""
        row = self._one("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1")
        return (0, None) if row is None else (int(row[0]) + 1, bytes(row[1]))

    def journal(self, start: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        rows = self._all(
            "SELECT seq, record, hash FROM journal WHERE seq >= ? ORDER BY seq LIMIT ?",
            start,
            limit,
        )
        return [(int(r[0]), str(r[1]).encode(), bytes(r[2])) for r in rows]

    def sessions_latest(self) -> list[SessionRow]:
        rows = self._all(
            "SELECT s.* FROM sessions s JOIN (SELECT establishment, session_id, MAX(idx) AS m "
            "FROM sessions GROUP BY establishment, session_id) l ON s.idx = l.m"
        )
        return [SessionRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def idempotency(self, scope: str, key: str) -> IdempotencyRow | None:
        row = self._one(
            "SELECT i.scope, i.key, b.body_hash, i.first_idx, i.count, i.batch, i.created_at "
            "FROM idempotency i LEFT JOIN idempotency_bodies b USING (scope, key) "
            "WHERE i.scope = ? AND i.key = ?",
            scope,
            key,
        )
        if row is None:
            return None
        body = None if row[2] is None else bytes(row[2])
        return IdempotencyRow(row[0], row[1], body, row[3], row[4], bool(row[5]), row[6])

    def api_token(self, token_hash: bytes) -> TokenRow | None:
        row = self._one("SELECT * FROM api_tokens WHERE token_hash = ?", token_hash)
        return None if row is None else TokenRow(*row)

    def find(
        self,
        establishment: str,
        *,
        lookup: bytes | None = None,
        session_id: str | None = None,
        occurred_from: str | None = None,
        occurred_to: str | None = None,
        kind: str | None = None,
        after: int = -1,
        limit: int = 100,
    ) -> list[EntryRow]:
        """One establishment's entries matching the filters, in log order, in one query."""
        sql = "SELECT e.* FROM entries e"
        where = ["e.establishment = ?", "e.idx > ?"]
        args: list[Any] = [establishment, after]
        if lookup is not None:
            sql += " JOIN disclosures d ON d.idx = e.idx"
            where.append("d.establishment = ? AND d.lookup = ?")
            args += [establishment, lookup]
        if session_id is not None:
            where.append("e.session_id = ?")
            args.append(session_id)
        if occurred_from is not None:
            where.append("e.occurred_at >= ?")
            args.append(occurred_from)
        if occurred_to is not None:
            where.append("e.occurred_at < ?")
            args.append(occurred_to)
        if kind is not None:
            where.append("e.kind = ?")
            args.append(kind)
        sql += " WHERE " + " AND ".join(where) + " ORDER BY e.idx LIMIT ?"
        args.append(limit)
        return [EntryRow(*r) for r in self._all(sql, *args)]

    def establishment_entries(self, establishment: str) -> Iterator[EntryRow]:
        """Every entry of one establishment, in log order, read as they are consumed."""
        try:
            cursor = self.conn.execute(
                "SELECT * FROM entries WHERE establishment = ? ORDER BY idx", (establishment,)
            )
            for row in cursor:
                yield EntryRow(*row)
        except sqlite3.Error as e:
            raise wrap(e) from e

    def session_entries(
        self, establishment: str, session_id: str
    ) -> list[tuple[EntryRow, str | None]]:
        """A session's entries in log order, each with its token's genTime (None: pending),
        in one query (the audit's controls read every session in scope)."""
        rows = self._all(
            "SELECT e.*, s.gen_time FROM entries e LEFT JOIN seals s ON s.idx = e.idx "
            "WHERE e.establishment = ? AND e.session_id = ? ORDER BY e.idx",
            establishment,
            session_id,
        )
        return [(EntryRow(*r[:-1]), r[-1]) for r in rows]

    def student_count(self, establishment: str, session_id: str, kind: str) -> int:
        """How many distinct students (by keyed lookup) have an entry of ``kind`` in a
        session: a count, with nobody's data read."""
        # The kind is filtered here, not in SQL: with it in the WHERE clause the planner
        # may take the (establishment, kind, time) index and read every entry of that kind
        # of the establishment, slow on a large vault (benchmarks/RESULTS.md).
        rows = self._all(
            "SELECT e.kind, d.lookup FROM entries e JOIN disclosures d ON d.idx = e.idx "
            "WHERE e.establishment = ? AND e.session_id = ?",
            establishment,
            session_id,
        )
        return len({bytes(lookup) for k, lookup in rows if k == kind and lookup is not None})

    def count(self, establishment: str) -> int:
        return int(
            self._one("SELECT COUNT(*) FROM entries WHERE establishment = ?", establishment)[0]
        )

    def meta(self, name: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE name = ?", name)
        return None if row is None else str(row[0])


class Writer(Reader):
    """The inserts, on the writer connection; only the committer's thread calls them,
    inside :meth:`Store.transaction`."""

    def _run(self, sql: str, *args: Any) -> None:
        try:
            self.conn.execute(sql, args)
        except sqlite3.Error as e:
            raise wrap(e) from e

    def add_entry(self, r: EntryRow) -> None:
        self._run(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            r.idx, r.establishment, r.kind, r.session_id, r.occurred_at, r.received_at,
            r.corrects, r.leaf, r.leaf_hash,
        )  # fmt: skip

    def add_seal(self, r: SealRow) -> None:
        self._run(
            "INSERT INTO seals (idx, token, gen_time, sealed_at, tsa) VALUES (?, ?, ?, ?, ?)",
            *(r.idx, r.token, r.gen_time, r.sealed_at, r.tsa),
        )

    def add_node(self, level: int, idx: int, hash_: bytes) -> None:
        self._run("INSERT INTO nodes VALUES (?, ?, ?)", level, idx, hash_)

    def add_checkpoint(self, r: CheckpointRow) -> None:
        self._run(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?)", r.size, r.note, r.token, r.created_at
        )

    def add_journal(self, seq: int, record: bytes, link: bytes) -> None:
        self._run("INSERT INTO journal VALUES (?, ?, ?)", seq, record.decode(), link)

    def add_disclosure(self, idx: int, establishment: str, lookup: bytes | None, body: str) -> None:
        self._run("INSERT INTO disclosures VALUES (?, ?, ?, ?)", idx, establishment, lookup, body)

    def add_session(self, r: SessionRow) -> None:
        self._run(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
            r.idx, r.establishment, r.session_id, r.version, r.start_at, r.end_at, int(r.cancelled),
        )  # fmt: skip

    def add_idempotency(self, r: IdempotencyRow) -> None:
        self._run(
            "INSERT INTO idempotency (scope, key, first_idx, count, batch, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            r.scope, r.key, r.first_idx, r.count, int(r.batch), r.created_at,
        )  # fmt: skip
        if r.body_hash is not None:
            self._run("INSERT INTO idempotency_bodies VALUES (?, ?, ?)", r.scope, r.key,
                      r.body_hash)  # fmt: skip

    def add_api_token(self, r: TokenRow) -> None:
        self._run(
            "INSERT INTO api_tokens VALUES (?, ?, ?, ?, ?, ?)",
            r.token_hash, r.role, r.establishment, r.label, r.created_at, r.expires_at,
        )  # fmt: skip

    def set_meta(self, name: str, value: str) -> None:
        self._run("DELETE FROM meta WHERE name = ?", name)
        self._run("INSERT INTO meta VALUES (?, ?)", name, value)


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("PRAGMA foreign_keys = ON")
        else:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as e:
        raise wrap(e) from e
    return conn


def node_lookup(reader: Reader) -> Callable[[int, int], bytes]:
    """The tree's stored node (level, index) for :mod:`daemon.merkle`; a missing one is an
    error that says to run ``vault verify`` (every complete subtree is stored)."""

    def node(level: int, idx: int) -> bytes:
        h = reader.node(level, idx)
        if h is None:
            raise StoreError(f"tree node ({level}, {idx}) missing: run vault verify")
        return h

    return node


class Store:
    """The vault's database: :attr:`writer` for the committer, :meth:`reader` for the rest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer = Writer(_connect(path, readonly=False))
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        migrate(self.writer.conn)

    @classmethod
    def open(cls, data_dir: Path) -> Store:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / DB_NAME)

    def reader(self) -> Reader:
        """This thread's read-only connection (WAL: it sees the last committed state)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return Reader(conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Writer]:
        """BEGIN IMMEDIATE … COMMIT on the writer; ROLLBACK when anything raises."""
        conn = self.writer.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise wrap(e) from e
        try:
            yield self.writer
            conn.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise wrap(e) from e
            raise

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[Writer]:
        """A nested unit inside :meth:`transaction`: undone alone when it raises."""
        conn = self.writer.conn
        conn.execute("SAVEPOINT unit")
        try:
            yield self.writer
        except BaseException:
            conn.execute("ROLLBACK TO unit")
            conn.execute("RELEASE unit")
            raise
        conn.execute("RELEASE unit")

    def replication(self) -> str:
        """The store's replication state, as ``/health``, ``/metrics`` and ``/status`` say
        it: ``single_site`` for SQLite (one file on one host; the PostgreSQL pair of
        docs/multisite.md will say ``synchronous`` or ``degraded``)."""
        return "single_site"

    def close(self) -> None:
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self.writer.conn.close()


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database to :data:`SCHEMA_VERSION`, one migration per transaction; refuse a
    database newer than this code (a downgrade would write rows it does not understand)."""
    try:
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise StoreTooNew(
                f"the database is at schema version {version}, this horodate knows up to "
                f"{SCHEMA_VERSION}: upgrade horodate, do not run an older one on it"
            )
        while version < SCHEMA_VERSION:
            log.info("vault schema: migrating from version %d to %d", version, version + 1)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            version += 1
    except sqlite3.Error as e:
        raise wrap(e) from e


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would COMMIT on its own)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
