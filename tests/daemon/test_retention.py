"""Retention: periods and holds (pure), and the purge end to end on a vault filled through
its API by an establishment in 2021 and 2022 (the deposit path's clock set back, the only
way to have five-year-old sessions today; tokens are real, from the appliance).

The purge must destroy the 2021 sessions' personal data so that none of it — names, INEs,
the salts of the commitments — is left in the database file or its WAL, while ``vault
verify`` still passes; holds keep what they hold; a purge killed inside a transaction
resumes; a deposit's body hash goes with the data it hashed."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.ine import BEA_LETTERS
from daemon.journal import JournalRecord
from daemon.retention.rules import Disclosure, Hold, Period, RetentionError, parse_ranges, plan
from daemon.retention.rules import ranges as ranges_of
from daemon.store import DB_NAME, Store
from horodate.cli import main as horodate

from .conftest import VaultUnderTest

PARIS = dt.timezone(dt.timedelta(hours=1))
UTC = dt.UTC
LEA = {"ine": "0123456789M", "birth_date": "2004-05-17", "name": "Léa Dubois"}
HUGO = {"ine": "1234567890V", "birth_date": "2003-01-02", "name": "Hugo Petit"}
ROOT = Path(__file__).resolve().parents[2]


def _ine(n: int) -> str:
    digits = f"{n:010d}"
    return digits + BEA_LETTERS[int(digits) % 23]


# -- pure rules --------------------------------------------------------------------------


def test_periods_count_from_the_end_of_the_session() -> None:
    end = dt.datetime(2024, 2, 29, 12, tzinfo=UTC)
    assert Period(years=5).after(end) == dt.datetime(2029, 2, 28, 12, tzinfo=UTC)
    assert Period(years=4).after(end) == dt.datetime(2028, 2, 29, 12, tzinfo=UTC)
    assert Period(days=10).after(end) == dt.datetime(2024, 3, 10, 12, tzinfo=UTC)
    for bad in ({}, {"years": 1, "days": 1}, {"years": 0}, {"days": 0}, {"years": 101}):
        with pytest.raises(RetentionError):
            Period(**bad)


@given(st.sets(st.integers(0, 10_000), max_size=200))
def test_ranges_round_trip(indices: set[int]) -> None:
    assert parse_ranges(ranges_of(indices)) == indices


def test_a_students_hold_keeps_them_and_their_sessions_unnamed_entries() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=UTC)
    ends = {"S-1": dt.datetime(2020, 1, 1, tzinfo=UTC), "S-2": dt.datetime(2029, 6, 1, tzinfo=UTC)}
    lea, hugo = b"L" * 32, b"H" * 32
    d = [
        Disclosure(0, None, "S-1"),  # the trainer's counter-signature
        Disclosure(1, lea, "S-1"),
        Disclosure(2, hugo, "S-1"),
        Disclosure(3, lea, "S-2"),  # not expired
    ]
    free = plan("E", Period(years=5), d, ends, [], now)
    assert [x.idx for x in free.destroy] == [0, 1, 2] and free.held == 0
    hold = Hold(7, "E", lea, "contentieux", "t", "op")
    kept = plan("E", Period(years=5), d, ends, [hold], now)
    assert [x.idx for x in kept.destroy] == [2] and kept.held == 2 and kept.held_by == [7]
    whole = Hold(8, "E", None, "contrôle", "t", "op")
    assert plan("E", Period(years=5), d, ends, [whole], now).destroy == []
    released = Hold(7, "E", lea, "contentieux", "t", "op", released_at="t2")
    assert len(plan("E", Period(years=5), d, ends, [released], now).destroy) == 3
    other = Hold(9, "F", None, "another school's", "t", "op")
    assert len(plan("E", Period(years=5), d, ends, [other], now).destroy) == 3


# -- the purge, end to end ---------------------------------------------------------------


class Past:
    """The deposit path's clock, set to the moment each entry is received."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def _session(sid: str, start: dt.datetime) -> dict[str, Any]:
    return {
        "id": sid,
        "version": 1,
        "training_action": "BTS SIO",
        "start": start.isoformat(),
        "end": (start + dt.timedelta(hours=3)).isoformat(),
    }


async def _deposit(
    v: VaultUnderTest, past: Past, token: str, key: str, entries: list[dict[str, Any]]
) -> list[int]:
    past.now = max(dt.datetime.fromisoformat(e["occurred_at"]) for e in entries) + dt.timedelta(
        seconds=30
    )
    body = entries[0] if len(entries) == 1 else {"entries": entries}
    headers = {**v.headers(token, key), "Content-Type": "application/json"}
    resp = await v.client.post("/v1/entries", data=json.dumps(body), headers=headers)
    assert resp.status == 201, await resp.text()
    doc = await resp.json()
    receipts = doc.get("receipts", [doc])
    return [r["index"] for r in receipts]


def _entry(kind: str, session: dict[str, Any], at: dt.datetime, **extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "establishment": "CFA-LYON-02",
        "kind": kind,
        "session": session,
        "teacher": {"id": "T-07", "name": "Claire Martin"},
        "occurred_at": at.isoformat(),
    }
    e.update(extra)
    return e


@pytest.fixture
async def aged(vault: VaultUnderTest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """S-OLD (January 2021: its five years are over) with Léa, Hugo, the trainer's
    counter-signature and a correction by a named author; S-NEW (March 2022: not yet)."""
    past = Past()
    monkeypatch.setattr("daemon.http.app.utc_now", past)
    token = vault.token()
    old = _session("S-OLD", dt.datetime(2021, 1, 15, 9, tzinfo=PARIS))
    new = _session("S-NEW", dt.datetime(2022, 3, 10, 14, tzinfo=PARIS))
    t0 = dt.datetime(2021, 1, 15, 9, 2, tzinfo=PARIS)
    m = dt.timedelta(minutes=1)
    idx = await _deposit(vault, past, token, "a", [_entry("roll_call_opened", old, t0)])
    signed = [
        _entry("student_signed", old, t0 + m, student=LEA),
        _entry("student_signed", old, t0 + 2 * m, student=HUGO),
    ]
    idx += await _deposit(vault, past, token, "b", signed)
    idx += await _deposit(vault, past, token, "c", [_entry("teacher_signed", old, t0 + 3 * m)])
    idx += await _deposit(vault, past, token, "d", [
        _entry("correction", old, t0 + 4 * m, corrects=idx[2], reason="nom mal orthographié",
               author={"id": "A-1", "name": "Nadia Roux"}),
    ])  # fmt: skip
    t1 = dt.datetime(2022, 3, 10, 14, 5, tzinfo=PARIS)
    idx += await _deposit(vault, past, token, "e", [_entry("student_signed", new, t1, student=LEA)])
    await vault.vault.make_checkpoint()
    monkeypatch.undo()
    return {"token": token, "old": idx[:5], "new": idx[5:], "signed": signed}


def _disclosures(v: VaultUnderTest) -> dict[int, str]:
    store = Store.open(v.data_dir)
    try:
        conn = store.reader().conn
        return {int(i): str(b) for i, b in conn.execute("SELECT idx, body FROM disclosures")}
    finally:
        store.close()


def _journal(v: VaultUnderTest, action: str) -> list[JournalRecord]:
    store = Store.open(v.data_dir)
    try:
        rows = store.reader().journal(0, 100_000)
    finally:
        store.close()
    return [r for r in (JournalRecord.decode(b) for _, b, _ in rows) if r.action == action]


def _salts(body: str) -> list[str]:
    return [d["salt"] for d in json.loads(body).values()]


def _raw(v: VaultUnderTest) -> bytes:
    """Every byte the database keeps on disk: the file, its WAL, its shared memory."""
    db = v.data_dir / DB_NAME
    return b"".join(
        p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()
    )


async def _cli(*args: str) -> tuple[int, str]:
    """The command in its own process; the event loop (and the appliance it serves) runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "horodate", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_purge_leaves_nothing_of_the_data_and_the_vault_still_verifies(
    vault: VaultUnderTest, aged: dict[str, Any], tmp_path: Path
) -> None:
    data = str(vault.data_dir)
    before = _disclosures(vault)
    assert set(aged["old"]) | set(aged["new"]) <= set(before)
    secrets = [s.encode() for i in aged["old"] for s in _salts(before[i])]
    secrets += [b"Hugo Petit", HUGO["ine"].encode(), b"Nadia Roux", b"Claire Martin"]
    assert all(s in _raw(vault) for s in [b"Hugo Petit", HUGO["ine"].encode()])

    code, out = await _cli("vault", "purge", "--dry-run", "--data-dir", data)
    assert code == 0, out
    assert "would destroy the personal data of 5 entries (1 session(s); 5 years" in out
    assert _disclosures(vault) == before

    code, out = await _cli("vault", "purge", "--data-dir", data, "--batch", "2")
    assert code == 0, out
    assert "5 entries' personal data destroyed in 3 journaled batch(es); WAL truncated" in out
    after = _disclosures(vault)
    assert set(after) == set(aged["new"])  # S-NEW's five years are not over
    raw = _raw(vault)
    for s in secrets:  # the trainer's name stays only where S-NEW still discloses it
        if s == b"Claire Martin":
            continue
        assert s not in raw, s
    assert LEA["ine"].encode() in raw  # S-NEW keeps Léa's data, as it should

    records = _journal(vault, "retention purge")
    destroyed = set().union(*(parse_ranges(r.target.split("entries ")[1].split(" (")[0])
                              for r in records))  # fmt: skip
    assert destroyed == set(aged["old"]) and len(records) == 3
    assert all("5 years from the end of the session" in r.target for r in records)
    assert all("S-OLD" in r.target for r in records)

    code, out = await _cli("vault", "verify", "--data-dir", data)
    assert code == 0, out
    code, out = await _cli("vault", "purge", "--data-dir", data)  # nothing left to do
    assert code == 0 and "0 entries' personal data destroyed in 0" in out, out

    # the session's trail still proves every entry; it only no longer says who
    trail = tmp_path / "old.zip"
    where = ["--data-dir", data, "--establishment", "CFA-LYON-02"]
    code, out = await _cli("audit", "create", *where, "--session", "S-OLD", "--tsa",
                     vault.appliance.url, "-o", str(trail))  # fmt: skip
    assert code == 0, out
    assert horodate(["audit", "verify", str(trail)]) == 0
    code, out = await _cli("audit", "create", "--data-dir", data, "--establishment", "CFA-LYON-02",
                     "--ine", HUGO["ine"], "--birth-date", HUGO["birth_date"], "-o",
                     str(tmp_path / "hugo.zip"))  # fmt: skip
    assert code == 1 and "no entry" in out  # Hugo is no longer findable

    # the deposit's body hash went with the data: a replay of its key cannot be matched
    resp = await vault.client.post(
        "/v1/entries",
        data=json.dumps({"entries": aged["signed"]}),
        headers={**vault.headers(aged["token"], "b"), "Content-Type": "application/json"},
    )
    problem = await resp.json()
    assert resp.status == 422 and "retention" in problem["detail"], problem
    resp = await vault.client.get(f"/v1/entries/{aged['old'][1]}",
                                  headers=vault.headers(aged["token"]))  # fmt: skip
    assert resp.status == 200
    student = (await resp.json())["entry"]["student"]
    assert set(student) == {"commitment"}  # still proven, no longer opened


async def test_holds_keep_what_they_hold_until_released(
    vault: VaultUnderTest, aged: dict[str, Any]
) -> None:
    data = ["--data-dir", str(vault.data_dir)]
    lea_old = aged["old"][1]
    hugo_old = aged["old"][2]
    code, out = await _cli("vault", "retention", "hold", *data, "--establishment", "CFA-LYON-02",
                     "--ine", LEA["ine"], "--birth-date", LEA["birth_date"],
                     "--reason", "contentieux prud'homal 2026-118")  # fmt: skip
    assert code == 0 and "hold 1 placed" in out, out
    code, out = await _cli("vault", "retention", "show", *data)
    assert "hold 1 on student" in out and "contentieux prud'homal" in out, out
    assert "1 entries' personal data due for destruction, 4 held" in out
    code, out = await _cli("vault", "purge", *data)
    assert code == 0 and "kept by hold(s) 1" in out, out
    left = set(_disclosures(vault))
    assert hugo_old not in left  # another student of the session: purged
    assert {lea_old, aged["old"][0], aged["old"][3]} <= left  # Léa, the roll call, the trainer

    code, out = await _cli("vault", "retention", "hold", *data, "--establishment", "CFA-LYON-02",
                     "--reason", "contrôle OPCO")  # fmt: skip
    assert code == 0 and "hold 2 placed on the establishment" in out
    code, out = await _cli("vault", "retention", "release", *data, "--id", "1")
    assert code == 0, out
    code, out = await _cli("vault", "purge", *data)
    assert code == 0 and set(_disclosures(vault)) == left  # the establishment's hold
    code, out = await _cli("vault", "retention", "release", *data, "--id", "2")
    assert code == 0
    code, out = await _cli("vault", "retention", "release", *data, "--id", "2")
    assert code == 1 and "no active hold 2" in out

    code, out = await _cli("vault", "retention", "set", *data, "--establishment", "CFA-LYON-02",
                     "--years", "10")  # fmt: skip
    assert code == 0 and "kept 10 years" in out
    code, out = await _cli("vault", "purge", "--dry-run", *data)
    assert "would destroy the personal data of 0 entries" in out, out
    code, out = await _cli("vault", "retention", "set", *data, "--establishment", "CFA-LYON-02",
                     "--default")  # fmt: skip
    assert code == 0 and "5 years (the default)" in out
    code, out = await _cli("vault", "purge", *data)
    assert code == 0 and set(_disclosures(vault)) == set(aged["new"])
    actions = [r.action for r in _journal(vault, "retention hold")]
    assert actions == ["retention hold"] * 2
    assert len(_journal(vault, "retention release")) == 2
    assert len(_journal(vault, "retention set")) == 2
    code, out = await _cli("vault", "verify", *data)
    assert code == 0, out
    code, out = await _cli(
        "vault", "retention", "set", *data, "--establishment", "X", "--days", "0"
    )
    assert code == 1 and "0 days" in out


# The purge, killed inside its third transaction: its deletes done, not committed. Run in a
# process of its own (a kill -9 must hit a real process); test code wraps the delete to
# stop there until killed.
_KILLED_INSIDE = """
import sys
from pathlib import Path
from daemon.clock import utc_now
from daemon.retention import purge as P
from daemon.store import Store

real = P.RetentionTables.destroy
calls = [0]

def destroy(self, establishment, indices):
    n = real(self, establishment, indices)
    calls[0] += 1
    if calls[0] == 3:
        print("inside", flush=True)
        sys.stdin.readline()  # until killed
    return n

P.RetentionTables.destroy = destroy
P.purge(Store.open(Path(sys.argv[1])), utc_now, batch=1)
print("finished", flush=True)
"""


async def test_a_purge_killed_inside_a_transaction_resumes(
    vault: VaultUnderTest, aged: dict[str, Any]
) -> None:
    before = _disclosures(vault)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_INSIDE, str(vault.data_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=60), "the purge did not reach its third batch"
    assert proc.stdout.readline() == b"inside\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = _disclosures(vault)
    assert len(before) - len(left) == 2  # two batches committed, the third rolled back
    assert aged["old"][2] in left
    assert len(_journal(vault, "retention purge")) == 2  # each committed batch journaled
    code, out = await _cli("vault", "verify", "--data-dir", str(vault.data_dir))
    assert code == 0, out
    code, out = await _cli("vault", "purge", "--data-dir", str(vault.data_dir))
    assert code == 0 and "3 entries' personal data destroyed in" in out, out
    assert set(_disclosures(vault)) == set(aged["new"])
    records = _journal(vault, "retention purge")
    destroyed = [parse_ranges(r.target.split("entries ")[1].split(" (")[0]) for r in records]
    assert sorted(i for d in destroyed for i in d) == sorted(aged["old"])  # each once
    code, out = await _cli("vault", "verify", "--data-dir", str(vault.data_dir))
    assert code == 0, out


def test_a_version_2_vault_keeps_its_replay_guard(tmp_path: Path) -> None:
    """v3 moves the body hashes out of the deposit record: a v2 vault migrates in place."""
    from daemon.schema import MIGRATIONS, SCHEMA_VERSION

    conn = sqlite3.connect(tmp_path / DB_NAME)
    for m in MIGRATIONS[:2]:
        conn.executescript(m)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO idempotency VALUES ('establishment:E', 'k', ?, 0, 1, 0, 't')",
                 (b"\x01" * 32,))  # fmt: skip
    conn.commit()
    conn.close()
    store = Store.open(tmp_path)
    try:
        row = store.reader().idempotency("establishment:E", "k")
        assert row is not None and row.body_hash == b"\x01" * 32 and row.count == 1
        assert store.writer.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            store.writer.conn.execute("DELETE FROM idempotency")
    finally:
        store.close()
