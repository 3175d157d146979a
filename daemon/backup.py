"""The vault's half of ``horodate vault backup`` and ``restore``: a consistent copy of the
database while the vault runs and appends, and the checks a copy must pass.

The copy goes through SQLite's online backup API (``sqlite3_backup_step``, here
:meth:`sqlite3.Connection.backup`), a few pages a step so that a large vault copies with
progress and without holding a lock for long. The source connection first opens one read
transaction and keeps it until the last step: in WAL mode the vault's appends go on beside
it, every step copies from the same snapshot, and the backup is never restarted by a write
(it would be, step after step, under a steady load, if each step opened a fresh read). The
tree's size and latest checkpoint are read in that same transaction, so they describe the
copy exactly. The copy is then switched out of WAL (``journal_mode = DELETE``): one
self-contained file, which ``vault verify`` opens read-only without creating anything beside
it; the vault switches it back to WAL when it starts on it.

A copy is good when :func:`daemon.verify.verify_vault` passes on it and it is the vault the
backup described: its tree has the recorded size and checkpoint, and its signing key is the
one whose verifier key signed the checkpoints (``verify`` checks the signatures against
``vault.vkey``; only this check ties ``vault.key`` to it).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from daemon.errors import VaultError
from daemon.note import NoteError, Signer
from daemon.store import DB_NAME
from daemon.verify import VerifyReport, verify_vault

PAGES_PER_STEP: Final = 1024  # 4 MiB a step at SQLite's default page size
_BUSY_TIMEOUT_MS: Final = 10_000

Progress = Callable[[int, int], None]  # (pages copied, pages in all), after each step


class BackupFailed(VaultError):
    """The copy could not be made (the message says why; no raw ``sqlite3`` error)."""


@dataclass(frozen=True, slots=True)
class TreeState:
    """What the copied database holds, read in the snapshot it was copied from."""

    size: int  # entries (leaves)
    checkpoint_size: int | None  # the latest signed checkpoint's tree size (≤ size)
    checkpoint: str | None  # that checkpoint, the C2SP signed note
    schema_version: int


def backup_database(
    data_dir: Path,
    dest_dir: Path,
    *,
    progress: Progress | None = None,
    pages_per_step: int = PAGES_PER_STEP,
) -> TreeState:
    """Copy ``data_dir``'s database into ``dest_dir`` (same file name), consistently, while
    the vault may be appending; fsynced before it returns."""
    source = data_dir / DB_NAME
    target = dest_dir / DB_NAME
    if not source.is_file():
        raise BackupFailed(f"no vault database in {data_dir}")
    if target.exists():
        raise BackupFailed(f"{target} exists: refusing to overwrite it")
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)
        try:
            dst = sqlite3.connect(target, isolation_level=None)
            try:
                src.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
                src.execute("BEGIN")  # the snapshot: held until the last step (module doc)
                state = tree_state(src)
                src.backup(
                    dst,
                    pages=pages_per_step,
                    progress=None
                    if progress is None
                    else lambda _status, remaining, total: progress(total - remaining, total),
                )
                src.execute("COMMIT")
                dst.execute("PRAGMA journal_mode = DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        _fsync(target)
    except sqlite3.Error as e:
        raise BackupFailed(f"cannot copy the vault's database: {e}") from e
    except OSError as e:
        raise BackupFailed(f"cannot write {target}: {e.strerror or e}") from e
    return state


def tree_state(conn: sqlite3.Connection) -> TreeState:
    """The tree's size and latest checkpoint as ``conn`` sees them."""
    (last,) = conn.execute("SELECT max(idx) FROM entries").fetchone()
    row = conn.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return TreeState(
        size=0 if last is None else int(last) + 1,
        checkpoint_size=None if row is None else int(row[0]),
        checkpoint=None if row is None else str(row[1]),
        schema_version=int(version),
    )


def check_copy(
    copy_dir: Path, expected: TreeState, *, progress: Callable[[str], None] | None = None
) -> VerifyReport:
    """``vault verify`` on the copy, then: is it the vault the backup described?"""
    report = verify_vault(copy_dir, progress=progress)
    if not report.ok:
        return report
    try:
        conn = sqlite3.connect(f"file:{copy_dir / DB_NAME}?mode=ro", uri=True)
        try:
            found = tree_state(conn)
        finally:
            conn.close()
    except sqlite3.Error as e:
        report.failure = f"cannot read the copy: {e}"
        return report
    if found != expected:
        report.failure = (
            f"the copy holds {found.size} entries, checkpoint at {found.checkpoint_size}, "
            f"schema {found.schema_version}; its manifest says {expected.size}, "
            f"{expected.checkpoint_size}, {expected.schema_version}"
        )
        return report
    key_file, vkey_file = copy_dir / "keys" / "vault.key", copy_dir / "keys" / "vault.vkey"
    try:
        signer = Signer.from_key_string(key_file.read_text().strip())
        vkey = vkey_file.read_text().strip()
    except (OSError, ValueError, NoteError) as e:
        report.failure = f"cannot read the vault's signing key: {e}"
        return report
    if signer.verifier().key_string() != vkey:
        report.failure = (
            f"{key_file} is not the key of {vkey_file} (whose signatures the checkpoints "
            "carry): the signing key was changed"
        )
    return report


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
