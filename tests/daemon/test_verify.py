"""``vault verify`` catches any change to stored evidence — with the triggers dropped.

A vault is filled through its HTTP API with real tokens (students, a correction, a moved
session, an entry left pending during a TSA outage, checkpoints), then, in a fresh copy of
its database for each case: one byte of one column of one row of every evidence table is
changed, or a row deleted, or a row inserted, and verify must fail and name the table.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from daemon.schema import APPEND_ONLY_TABLES
from daemon.store import DB_NAME
from daemon.verify import verify_vault
from horodate.cli import main as horodate

from .conftest import VaultUnderTest, entry_now

# Columns that are not evidence, each with why a change there proves nothing.
NOT_EVIDENCE = {
    (
        "seals",
        "sealed_at",
    ): "when the vault stored the token: bookkeeping; the token's genTime is the proof",
    ("seals", "tsa"): "which configured TSA answered: bookkeeping; the token carries its "
    "signer's certificate, and verify checks that it chains to the roots kept",
    (
        "checkpoints",
        "created_at",
    ): "when the vault signed it: the checkpoint's token holds the proven time",
    ("idempotency", "created_at"): "bookkeeping of the replay guard",
    ("idempotency", "batch"): "the shape of a replayed answer, not evidence",
    ("idempotency", "key"): "the client's key, not evidence",
}
TABLES = (*APPEND_ONLY_TABLES, "disclosures")


async def fill(v: VaultUnderTest) -> None:
    token = v.token()
    h = {"Content-Type": "application/json"}

    async def post(body: Any, key: str) -> Any:
        resp = await v.client.post(
            "/v1/entries", data=json.dumps(body), headers={**v.headers(token, key), **h}
        )
        assert resp.status in (201, 202), await resp.text()
        return await resp.json()

    await post(entry_now("roll_call_opened", minutes_ago=9), "a")
    absent = await post(entry_now("absent", minutes_ago=8), "b")
    await post(
        {"entries": [entry_now(minutes_ago=7), entry_now("late", minutes_ago=6, minutes=12)]}, "c"
    )
    await post(
        entry_now(
            "correction",
            corrects=absent["index"],
            reason="badge oublié",
            author={"id": "SEC", "name": "Nadia Roux"},
        ),
        "d",
    )
    moved = entry_now("session_moved", minutes_ago=5)
    moved["session"]["version"] = 2
    await post(moved, "e")
    v.appliance.refusing[0] = True
    pending = entry_now(minutes_ago=1)
    pending["session"]["version"] = 2
    await post(pending, "f")  # 202, stays pending: the sealer is stopped below
    await v.vault.make_checkpoint()


@pytest.fixture
async def filled(vault: VaultUnderTest, tmp_path: Path) -> Path:
    await fill(vault)
    await v_stop(vault)
    copy = tmp_path / "evidence"
    shutil.copytree(vault.data_dir, copy)
    return copy


async def v_stop(v: VaultUnderTest) -> None:
    await v.client.close()  # runs the app's cleanup: the vault stops, its files are closed


def mutate(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytes([value[0] ^ 0x01]) + value[1:] if value else b"\x00"
    if isinstance(value, str):
        i = len(value) // 2
        return (
            value[:i] + ("X" if value[i : i + 1] != "X" else "Y") + value[i + 1 :] if value else "X"
        )
    if isinstance(value, int):
        return value + 1
    return 0  # NULL becomes a value


def copy_db(src: Path, dst: Path) -> sqlite3.Connection:
    shutil.copytree(src, dst)
    conn = sqlite3.connect(dst / DB_NAME, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")  # as an attacker would
    return conn


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def test_the_filled_vault_verifies_with_one_pending(filled: Path) -> None:
    report = verify_vault(filled)
    assert report.ok, report.failure
    assert report.entries == 7 and report.pending == 1 and report.sealed == 6
    assert report.checkpoints >= 1 and report.journal_records > 0


def test_every_column_of_every_evidence_table_is_covered(filled: Path, tmp_path: Path) -> None:
    escaped = []
    checked = 0
    for table in TABLES:
        conn = sqlite3.connect(filled / DB_NAME)
        cols = columns(conn, table)
        nrows = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        conn.close()
        assert nrows, f"the fixture left {table} empty: the test would prove nothing"
        for col in cols:
            if (table, col) in NOT_EVIDENCE:
                continue
            for row in sorted({0, nrows - 1}):
                case = tmp_path / f"{table}-{col}-{row}"
                db = copy_db(filled, case)
                rowid, value = db.execute(
                    f"SELECT rowid, {col} FROM {table} LIMIT 1 OFFSET {row}"
                ).fetchone()
                try:
                    db.execute(
                        f"UPDATE {table} SET {col} = ? WHERE rowid = ?", (mutate(value), rowid)
                    )
                except sqlite3.IntegrityError:
                    db.execute(
                        f"UPDATE {table} SET {col} = ? WHERE rowid = ?",
                        (value + 10**6 if isinstance(value, int) else mutate(mutate(value)), rowid),
                    )
                db.close()
                report = verify_vault(case)
                checked += 1
                if report.ok:
                    escaped.append(f"{table}.{col} row {row}")
                shutil.rmtree(case)
    assert not escaped, f"changes verify did not notice: {escaped}"
    assert checked > 40


@pytest.mark.parametrize("table", TABLES)
def test_a_deleted_or_inserted_row_is_caught(filled: Path, tmp_path: Path, table: str) -> None:
    db = copy_db(filled, tmp_path / "deleted")
    db.execute(f"DELETE FROM {table} WHERE rowid = (SELECT MIN(rowid) FROM {table})")
    db.close()
    report = verify_vault(tmp_path / "deleted")
    assert not report.ok, f"a deleted {table} row went unnoticed"

    db = copy_db(filled, tmp_path / "inserted")
    cols = columns(db, table)
    row = list(db.execute(f"SELECT * FROM {table} ORDER BY rowid DESC LIMIT 1").fetchone())
    key = {
        "entries": 0,
        "seals": 0,
        "nodes": 1,
        "checkpoints": 0,
        "journal": 0,
        "sessions": 0,
        "idempotency": 1,
        "disclosures": 0,
    }[table]
    row[key] = row[key] + 1000 if isinstance(row[key], int) else row[key] + "-forged"
    if table == "seals":  # a token for an entry that exists but was pending
        pending = db.execute(
            "SELECT e.idx FROM entries e LEFT JOIN seals s ON s.idx = e.idx WHERE s.idx IS NULL"
        ).fetchone()[0]
        row[0] = pending
    db.execute(
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row
    )
    db.close()
    report = verify_vault(tmp_path / "inserted")
    assert not report.ok, f"an inserted {table} row went unnoticed"


def test_the_command_says_what_it_checked_and_fails_loudly(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert horodate(["vault", "verify", "--data-dir", str(filled)]) == 0
    out = capsys.readouterr().out
    assert "leaves recomputed" in out and "1 pending" in out and "vault verify: OK" in out
    db = copy_db(filled, tmp_path / "bad")
    db.execute("UPDATE entries SET leaf_hash = zeroblob(32) WHERE idx = 2")
    db.close()
    assert horodate(["vault", "verify", "--data-dir", str(tmp_path / "bad")]) == 1
    assert "entry 2: leaf_hash does not match" in capsys.readouterr().err
    assert horodate(["vault", "verify", "--data-dir", str(tmp_path / "bad"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out.strip())["ok"] is False
