"""Tokens granted for a time: an auditor's expires (90 days unless told), and is refused
(401, saying when) once it has; a vault made before tokens could expire migrates in place."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from daemon.clock import utc_now, utc_text
from daemon.keys import new_token, token_hash
from daemon.schema import MIGRATIONS, SCHEMA_VERSION
from daemon.store import DB_NAME, Store, TokenRow
from horodate.cli import main as horodate

from .conftest import VaultUnderTest


def _create(data_dir: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    args = ["vault", "keys", "create", "--data-dir", str(data_dir), "--role", "auditor"]
    assert horodate([*args, "--establishment", "CFA-LYON-02", *extra]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_an_auditors_token_expires_in_90_days_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = utc_now()
    default = _create(tmp_path, capsys)
    short = _create(tmp_path, capsys, "--expires-days", "7")
    store = Store.open(tmp_path)
    try:
        for token, days in ((default, 90), (short, 7)):
            row = store.reader().api_token(token_hash(token))
            assert row is not None and row.expires_at is not None
            expires = dt.datetime.fromisoformat(row.expires_at)
            assert dt.timedelta(days=days) <= expires - before < dt.timedelta(days=days, minutes=1)
    finally:
        store.close()
    assert horodate(["vault", "keys", "create", "--data-dir", str(tmp_path), "--role", "auditor",
                     "--establishment", "X", "--expires-days", "0"]) == 2  # fmt: skip


async def test_an_expired_token_is_refused_and_says_when(vault: VaultUnderTest) -> None:
    store = Store.open(vault.data_dir)
    expired, valid = new_token(), new_token()
    now = utc_now()
    with store.transaction() as w:
        for token, at in (
            (expired, now - dt.timedelta(seconds=1)),
            (valid, now + dt.timedelta(days=1)),
        ):
            w.add_api_token(
                TokenRow(token_hash(token), "auditor", "CFA-LYON-02", "OPCO", utc_text(now),
                         utc_text(at))
            )  # fmt: skip
    store.close()
    resp = await vault.client.get("/v1/entries/count", headers=vault.headers(valid))
    assert resp.status == 200
    resp = await vault.client.get("/v1/entries/count", headers=vault.headers(expired))
    assert resp.status == 401
    assert "expired at" in (await resp.json())["detail"]


def test_a_version_1_vault_migrates_and_its_tokens_do_not_expire(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    token = new_token()
    conn.execute(
        "INSERT INTO api_tokens VALUES (?, 'establishment', 'CFA-LYON-02', 'school', ?)",
        (token_hash(token), utc_text(utc_now())),
    )
    conn.commit()
    conn.close()
    store = Store.open(tmp_path)
    try:
        row = store.reader().api_token(token_hash(token))
        assert row is not None and row.expires_at is None and row.label == "school"
        assert store.writer.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        store.close()
