"""The running vault's claim on its data directory: an ``flock`` on ``DATA_DIR/vault.lock``.

SQLite's own locks do not tell whether a vault has the database open (in WAL mode an idle
connection holds none a second process could test without SQLite's internals), so the vault
takes this lock when it starts and holds it until it stops. A second vault on the same
directory is refused (two committers would interleave two sequences of indices), and so is
``horodate vault restore`` onto a directory a vault is serving. The kernel releases the
lock when the process dies, however it dies: no stale lock file to clean up. The file holds
the holder's pid, for the operator; the lock, not the file, is what counts.

The command-line tools that write through the store (``vault keys create``, retention) do
not take it: they run beside a live vault by design.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

from daemon.errors import VaultError

LOCK_NAME: Final = "vault.lock"


class DataDirInUse(VaultError):
    """Another process (a running vault, a restore) holds the data directory."""


class DataDirLock:
    """An exclusive, non-blocking ``flock`` on ``DATA_DIR/vault.lock``; :meth:`release` ends it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def take(cls, data_dir: Path) -> DataDirLock:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise VaultError(f"cannot open the lock file {path}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            raise DataDirInUse(
                f"{data_dir} is in use by another process{holder} (lock {path}): a vault "
                "runs there, or a restore"
            ) from e
        with contextlib.suppress(OSError):  # the pid is for people; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
        return f" (pid {pid})"
    return ""
