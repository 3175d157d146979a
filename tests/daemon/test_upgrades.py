"""Upgrades: a vault left at any earlier schema version opens with today's code, which
migrates it at start; its data is all there and ``vault verify`` passes; a database newer
than the code is refused, untouched.

Each earlier version N comes from the migrations' own SQL (``MIGRATIONS[:N]``), whatever the
latest version is: the test follows ``daemon.schema``. Its data is a real vault's — entries
of several kinds sealed by a real appliance, a correction, a batch, tokens, checkpoints, the
access journal, retention rules and a legal hold — moved into the tables as they were at N:
the columns N has, and for a column a later version dropped, the value it had then
(:data:`THEN`). A migration that drops or renames a column adds its line there; the test
names the column when it is missing.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from daemon.schema import MIGRATIONS, SCHEMA_VERSION
from daemon.store import DB_NAME, Store, StoreTooNew
from daemon.verify import verify_vault
from horodate.cli import main as horodate

from .conftest import VaultUnderTest, entry_now

# (table, column) that version N had and today's schema no longer has: its value then, as an
# SQL expression over today's row ``s`` (the source database is attached as ``src``).
THEN: dict[tuple[str, str], str] = {
    # v3 moved the body hashes out of the append-only deposit record
    ("idempotency", "body_hash"): "(SELECT b.body_hash FROM src.idempotency_bodies b "
    "WHERE b.scope = s.scope AND b.key = s.key)",
}


def test_there_is_one_migration_per_version() -> None:
    assert len(MIGRATIONS) == SCHEMA_VERSION


async def fill(v: VaultUnderTest) -> None:
    """Entries of several kinds, a batch, a correction, an auditor's token, a retention rule
    and a legal hold, then a checkpoint over all of it."""
    token = v.token()
    v.token("auditor", "CFA-LYON-02")

    async def post(body: dict[str, Any], key: str) -> dict[str, Any]:
        resp = await v.client.post("/v1/entries", json=body, headers=v.headers(token, key))
        assert resp.status == 201, await resp.text()
        doc: dict[str, Any] = await resp.json()
        return doc

    await post(entry_now("roll_call_opened", minutes_ago=9), "a")
    late = await post(entry_now("late", minutes_ago=8, minutes=12), "b")
    await post({"entries": [entry_now(minutes_ago=7), entry_now("absent", minutes_ago=7)]}, "c")
    await post(entry_now("teacher_signed", minutes_ago=6), "d")
    correction = entry_now(
        "correction",
        minutes_ago=4,
        corrects=late["index"],
        reason="10 minutes, not 12",
        author={"id": "A-1", "name": "Secrétariat"},
    )
    await post(correction, "e")
    d = str(v.data_dir)
    for action, *rest in (
        ["set", "--years", "6"],
        ["hold", "--reason", "funder's control 2026-114"],
    ):
        argv = ["vault", "retention", action, "--data-dir", d, "--establishment", "CFA-LYON-02"]
        assert await asyncio.to_thread(horodate, [*argv, *rest]) == 0
    await v.vault.make_checkpoint()


def at_version(version: int, source: Path, target: Path) -> None:
    """``target``: the database as it would be at ``version``, holding ``source``'s data."""
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        for migration in MIGRATIONS[:version]:
            conn.executescript(migration)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{source}?mode=ro",))
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM main.sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        for table in tables:
            then = [r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")]
            now = {r[1] for r in conn.execute(f"PRAGMA src.table_info({table})")}
            assert now, f"table {table} of version {version} is gone today: say in THEN how"
            values = []
            for column in then:
                if column in now:
                    values.append(f"s.{column}")
                else:
                    assert (table, column) in THEN, (
                        f"{table}.{column} of version {version} is gone today: add its value "
                        "then to THEN"
                    )
                    values.append(THEN[(table, column)])
            conn.execute(
                f"INSERT INTO main.{table} ({', '.join(then)}) "
                f"SELECT {', '.join(values)} FROM src.{table} AS s"
            )
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()


def rows(db: Path, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall())
    finally:
        conn.close()


def columns_of(db: Path, table: str) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    finally:
        conn.close()


def tables_of(db: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Each table's columns and rows (sorted)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
    finally:
        conn.close()
    out = {}
    for name in names:
        columns = columns_of(db, name)
        out[name] = (columns, rows(db, name, columns))
    return out


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
async def test_a_vault_at_an_earlier_schema_opens_migrated_with_its_data_and_verifies(
    vault: VaultUnderTest, tmp_path: Path, version: int
) -> None:
    await fill(vault)
    source = vault.data_dir / DB_NAME
    old = tmp_path / f"at-v{version}"
    old.mkdir()
    shutil.copytree(vault.data_dir / "keys", old / "keys")
    at_version(version, source, old / DB_NAME)
    before = tables_of(old / DB_NAME)
    for table, (columns, old_rows) in before.items():  # the harness moved every row
        assert len(old_rows) == len(rows(source, table, columns[:1])), table
    assert before["entries"][1], "the old database holds no entry"
    # today's `vault verify` reads it as it is: a backup taken by an older horodate restores
    old_report = verify_vault(old)
    assert old_report.ok, old_report.failure

    store = Store.open(old)  # today's code: migrates at open
    try:
        version_now = store.writer.conn.execute("PRAGMA user_version").fetchone()[0]
        assert version_now == SCHEMA_VERSION
    finally:
        store.close()

    after = tables_of(old / DB_NAME)
    for table, (columns, old_rows) in before.items():  # every row of every table is there
        kept = [c for c in columns if c in after[table][0]]
        positions = [columns.index(c) for c in kept]
        then = sorted(tuple(row[i] for i in positions) for row in old_rows)
        assert rows(old / DB_NAME, table, kept) == then, table
    # the deposits' body hashes survive their move (v3): a replay is still told from a
    # reused key
    bodies = ["scope", "key", "body_hash"]
    assert rows(old / DB_NAME, "idempotency_bodies", bodies) == rows(
        source, "idempotency_bodies", bodies
    )
    report = verify_vault(old)
    assert report.ok, report.failure
    assert report.entries == len(before["entries"][1]) and report.pending == 0


def test_a_database_newer_than_the_code_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    conn = sqlite3.connect(db)
    for migration in MIGRATIONS:
        conn.executescript(migration)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    image = tables_of(db)
    with pytest.raises(StoreTooNew, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store.open(tmp_path)
    code = horodate(["vault", "keys", "create", "--data-dir", str(tmp_path), "--role", "admin"])
    assert code == 1  # the command line's tools refuse it too
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    finally:
        conn.close()
    assert tables_of(db) == image  # nothing written (the journal mode aside: WAL at open)
