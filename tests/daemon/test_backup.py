"""``horodate vault backup`` and ``restore``: a consistent copy taken while the vault appends
(SQLite's online backup API), checked by ``vault verify``, and a restore that refuses what
does not check, a directory in use, and a non-empty one without ``--force``.

The vault is the real one (``conftest.vault``: its HTTP API, its committer, a real appliance
sealing every entry); the backup runs in a thread while a task keeps appending."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import daemon.backup
from daemon.note import Signer
from daemon.store import DB_NAME, Store
from daemon.verify import verify_vault
from horodate.backup import BackupError, VaultKind, backup, read_manifest, restore
from horodate.cli import main as horodate

from .conftest import VaultUnderTest, entry_now

NOW = dt.datetime(2026, 12, 3, 18, 0, tzinfo=dt.UTC)


def quiet(_: str) -> None:
    pass


async def append(v: VaultUnderTest, token: str, key: str, count: int = 1) -> list[int]:
    """``count`` entries in one deposit; their indices."""
    body = entry_now() if count == 1 else {"entries": [entry_now() for _ in range(count)]}
    resp = await v.client.post("/v1/entries", json=body, headers=v.headers(token, key))
    assert resp.status == 201, await resp.text()
    doc = await resp.json()
    return [r["index"] for r in doc.get("receipts", [doc])]


async def backed_up(v: VaultUnderTest, dest: Path, entries: int = 3) -> Path:
    token = v.token()
    await append(v, token, "first", entries)
    await asyncio.to_thread(backup, VaultKind(), v.data_dir, dest, now=NOW, say=quiet)
    return dest


def rewrite_manifest(backup_dir: Path) -> None:
    """Make the manifest match the files again: what someone who tampers with a backup and
    knows the format would do. Only the vault's own checks can then tell."""
    doc = json.loads((backup_dir / "MANIFEST.json").read_text())
    for f in doc["files"]:
        data = (backup_dir / f["path"]).read_bytes()
        f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (backup_dir / "MANIFEST.json").write_text(json.dumps(doc))


@pytest.mark.timeout(180)
async def test_a_backup_taken_under_load_restores_and_verifies(
    vault: VaultUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = vault.token()
    for n in range(6):  # a database of some pages, so that the copy takes many steps
        await append(vault, token, f"fill-{n}", 40)
    # Each step of the copy waits a little, so that appends land between the steps.
    steps: list[float] = []
    real = daemon.backup.backup_database

    def slow(data_dir: Path, dest: Path, *, progress: Any, pages_per_step: int) -> Any:
        def step(done: int, total: int) -> None:
            steps.append(time.monotonic())
            time.sleep(0.02)
            progress(done, total)

        return real(data_dir, dest, progress=step, pages_per_step=pages_per_step)

    monkeypatch.setattr(daemon.backup, "backup_database", slow)
    acknowledged: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def appender() -> None:
        n = 0
        while not stop.is_set():
            for index in await append(vault, token, f"load-{n}"):
                acknowledged.append((time.monotonic(), index))
            n += 1

    task = asyncio.create_task(appender())
    try:
        while len(acknowledged) < 3:
            await asyncio.sleep(0.01)
        dest = tmp_path / "backup"
        done = await asyncio.to_thread(
            backup, VaultKind(pages_per_step=2), vault.data_dir, dest, now=NOW, say=quiet
        )
        after = len(acknowledged)
        while len(acknowledged) < after + 3:
            await asyncio.sleep(0.01)  # the vault goes on appending after the copy
    finally:
        stop.set()
        await task

    assert len(steps) > 20, "the copy did not take many steps"
    during = [i for at, i in acknowledged if steps[0] < at < steps[-1]]
    assert during, "no entry was appended while the copy ran"
    assert done.verdict.ok, done.verdict.failure
    size = done.manifest.facts["tree_size"]
    total = acknowledged[-1][1] + 1
    assert 240 < size < total  # a snapshot: what was there at its start, not what came after
    assert done.manifest.facts["checkpoint"].startswith("horodate-vault\n")
    names = {f.path for f in done.manifest.files}
    assert names >= {DB_NAME, "keys/vault.key", "keys/vault.vkey", "keys/lookup.key"}
    assert "keys/tsa-ca.pem" in names
    modes = {f.path: f.mode for f in done.manifest.files}
    assert modes["keys/vault.key"] == modes["keys/lookup.key"] == 0o600
    assert (dest / "keys" / "vault.key").stat().st_mode & 0o777 == 0o600

    restored = tmp_path / "restored"
    result = await asyncio.to_thread(
        restore, VaultKind(), dest, restored, force=False, now=NOW, say=quiet
    )
    assert result.aside is None
    report = verify_vault(restored)
    assert report.ok, report.failure
    assert report.entries == size
    store = Store.open(restored)  # today's vault opens it (and would migrate an older one)
    try:
        assert store.reader().entry(size - 1) is not None
        assert store.reader().entry(size) is None
    finally:
        store.close()


async def test_a_restore_is_refused_when_a_byte_of_the_database_changed(
    vault: VaultUnderTest, tmp_path: Path
) -> None:
    dest = await backed_up(vault, tmp_path / "backup")
    db = dest / DB_NAME
    data = bytearray(db.read_bytes())
    at = data.index(b'"kind":"student_signed"') + len(b'"kind":"')
    data[at] ^= 0x01  # one bit of one leaf: "student_signed" becomes "rtudent_signed"
    db.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=r"vault\.sqlite3 does not have the SHA-256"):
        restore(VaultKind(), dest, tmp_path / "a", force=False, now=NOW, say=quiet)
    rewrite_manifest(dest)  # the hashes now match: vault verify still says no
    with pytest.raises(BackupError, match="does not check"):
        restore(VaultKind(), dest, tmp_path / "b", force=False, now=NOW, say=quiet)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


async def test_a_restore_is_refused_when_a_key_file_changed(
    vault: VaultUnderTest, tmp_path: Path
) -> None:
    dest = await backed_up(vault, tmp_path / "backup")
    key = dest / "keys" / "vault.key"
    key.write_text(Signer.generate("horodate-vault").key_string() + "\n")  # another key
    with pytest.raises(BackupError, match=r"keys/vault\.key does not have the SHA-256"):
        restore(VaultKind(), dest, tmp_path / "a", force=False, now=NOW, say=quiet)
    rewrite_manifest(dest)
    with pytest.raises(BackupError, match="signing key was changed"):
        restore(VaultKind(), dest, tmp_path / "b", force=False, now=NOW, say=quiet)


async def test_a_restore_is_refused_on_a_non_empty_directory_without_force(
    vault: VaultUnderTest, tmp_path: Path
) -> None:
    dest = await backed_up(vault, tmp_path / "backup")
    target = tmp_path / "target"
    target.mkdir()
    (target / "something").write_text("the operator's\n")
    code = await asyncio.to_thread(
        horodate, ["vault", "restore", str(dest), "--data-dir", str(target)]
    )
    assert code == 1
    assert sorted(p.name for p in target.iterdir()) == ["something"]  # untouched
    code = await asyncio.to_thread(
        horodate, ["vault", "restore", str(dest), "--data-dir", str(target), "--force"]
    )
    assert code == 0
    assert verify_vault(target).ok
    (aside,) = tmp_path.glob("target.before-restore-*")
    assert (aside / "something").read_text() == "the operator's\n"  # set aside, not deleted


async def test_a_restore_is_refused_while_a_vault_runs_on_the_directory(
    vault: VaultUnderTest, tmp_path: Path
) -> None:
    dest = await backed_up(vault, tmp_path / "backup")
    with pytest.raises(BackupError, match="the vault is running on"):
        restore(VaultKind(), dest, vault.data_dir, force=True, now=NOW, say=quiet)
    assert (await vault.client.get("/v1/checkpoint")).status == 200  # it runs on, untouched


async def test_a_second_vault_on_the_same_directory_is_refused(
    vault: VaultUnderTest, aiohttp_client: Any
) -> None:
    from daemon.lockfile import DataDirInUse
    from daemon.vault import Vault

    other = Vault(vault.vault.config)
    with pytest.raises(DataDirInUse):
        await other.start()
    other.store.close()


async def test_a_backup_is_refused_into_a_non_empty_directory(
    vault: VaultUnderTest, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "old").write_text("x")
    with pytest.raises(BackupError, match="not empty"):
        backup(VaultKind(), vault.data_dir, dest, now=NOW, say=quiet)


async def test_a_manifest_path_that_leaves_the_backup_is_refused(
    vault: VaultUnderTest, tmp_path: Path
) -> None:
    dest = await backed_up(vault, tmp_path / "backup")
    doc = json.loads((dest / "MANIFEST.json").read_text())
    doc["files"][0]["path"] = "../../escaped"
    (dest / "MANIFEST.json").write_text(json.dumps(doc))
    with pytest.raises(BackupError, match="not a plain relative path"):
        read_manifest(dest)


async def test_the_backup_command_reports_and_its_copy_is_one_self_contained_file(
    vault: VaultUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await append(vault, vault.token(), "k", 2)
    dest = tmp_path / "backup"
    code = await asyncio.to_thread(
        horodate, ["vault", "backup", str(dest), "--data-dir", str(vault.data_dir)]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "the copy checks" in out and "pages copied" in err
    assert {p.name for p in dest.iterdir()} == {"MANIFEST.json", DB_NAME, "keys"}
    conn = sqlite3.connect(dest / DB_NAME)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()
