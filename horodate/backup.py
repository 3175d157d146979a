"""Backups of the vault and of the appliance, and their restore.

A backup is a directory: the copy, laid out as the data directory it came from, and
``MANIFEST.json`` — each file's path, size, mode and SHA-256, what the copy holds (the
vault's tree size and checkpoint, the appliance's issuance records and serial instances) and
the verdict of the check run on the copy before the backup was declared good::

    {"format": "horodate-backup/1", "kind": "vault", "created_at": "2026-12-03T18:00:00Z",
     "source": "/var/lib/horodate/vault", "horodate": "0.1.0",
     "facts": {"tree_size": 1234, "checkpoint_size": 1230, "checkpoint": "…", …},
     "checked": {"ok": true, "failure": null},
     "files": [{"path": "vault.sqlite3", "size": 1085440, "mode": "0644", "sha256": "…"}, …],
     "dirs": {"keys": "0700"}}

What both daemons share is here: a destination must be empty; ``keys/`` is copied with its
modes (a ``*.key`` never wider than 0600); a restore checks that the backup holds exactly
the files its manifest lists, with their hashes, runs the daemon's own check on it, refuses
a directory a daemon is running on (its ``flock``) and a non-empty one without ``force``,
then copies into a staging directory beside the target and renames it into place, the old
directory set aside (``DIR.before-restore-<UTC time>``), never deleted. What differs — a
consistent copy of the state and its check — is each daemon's: :mod:`daemon.backup`,
:mod:`appliance.runtime.backup`, behind :class:`Kind`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Protocol

from horodate import __version__

FORMAT: Final = "horodate-backup/1"
MANIFEST_NAME: Final = "MANIFEST.json"
KEYS_DIR: Final = "keys"
_CHUNK_BYTES: Final = 1 << 20
_LOG_COPY_ATTEMPTS: Final = 3  # a live issuance log caught mid-write is copied again

Say = Callable[[str], None]


class BackupError(Exception):
    """A backup or a restore refused or failed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class FileRecord:
    path: str  # relative, POSIX separators
    size: int
    mode: int
    sha256: str  # hex

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "mode": f"{self.mode:04o}",
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """A daemon's check of a copy: ``vault verify``, or the appliance's."""

    failure: str | None
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True, slots=True)
class Manifest:
    kind: str
    created_at: str
    source: str
    facts: dict[str, Any]
    files: tuple[FileRecord, ...]
    checked: dict[str, Any]
    dirs: dict[str, int] = field(default_factory=dict)  # modes of the directories (keys/)
    horodate: str = __version__

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "kind": self.kind,
            "created_at": self.created_at,
            "source": self.source,
            "horodate": self.horodate,
            "facts": self.facts,
            "checked": self.checked,
            "files": [f.to_json() for f in self.files],
            "dirs": {path: f"{mode:04o}" for path, mode in self.dirs.items()},
        }
        return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, not {FORMAT}")
            files = tuple(
                FileRecord(
                    path=_safe_path(str(f["path"])),
                    size=int(f["size"]),
                    mode=int(str(f["mode"]), 8),
                    sha256=str(f["sha256"]),
                )
                for f in doc["files"]
            )
            return cls(
                kind=str(doc["kind"]),
                created_at=str(doc["created_at"]),
                source=str(doc["source"]),
                facts=dict(doc["facts"]),
                files=files,
                checked=dict(doc["checked"]),
                dirs={_safe_path(str(k)): int(str(v), 8) for k, v in doc.get("dirs", {}).items()},
                horodate=str(doc.get("horodate", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BackupError(f"{MANIFEST_NAME} is not a Horodate backup manifest: {e}") from e


@dataclass(frozen=True, slots=True)
class Taken:
    """What a :class:`Kind` copied of its state: files (relative paths) and facts."""

    paths: list[str]
    facts: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


class Kind(Protocol):
    """One daemon's part of a backup."""

    name: str  # "vault", "appliance": the command's and the manifest's word

    def take(self, data_dir: Path, dest: Path, say: Say) -> Taken:
        """Copy the state (not ``keys/``) consistently into ``dest``, a daemon running."""
        ...

    def check(self, copy_dir: Path, facts: dict[str, Any], say: Say) -> Verdict: ...

    def lock_files(self, data_dir: Path) -> list[Path]:
        """The files a running daemon holds an ``flock`` on."""
        ...

    def transient(self, name: str) -> bool:
        """Whether a file of the data directory is not state (a lock, SQLite's WAL)."""
        ...

    def settle(self, data_dir: Path) -> list[str]:
        """What a restored directory needs before the daemon starts on it; lines to say."""
        ...


@dataclass(frozen=True, slots=True)
class BackupDone:
    manifest: Manifest
    verdict: Verdict
    warnings: list[str]


@dataclass(frozen=True, slots=True)
class RestoreDone:
    manifest: Manifest
    verdict: Verdict
    aside: Path | None  # where the directory that was there went
    lines: list[str]


# -- the two flows ---------------------------------------------------------------------------


def backup(kind: Kind, data_dir: Path, dest: Path, *, now: dt.datetime, say: Say) -> BackupDone:
    """Copy ``data_dir`` into the empty or new ``dest``, check the copy, write the manifest."""
    if not data_dir.is_dir():
        raise BackupError(f"no {kind.name} data directory {data_dir}")
    if _non_empty(dest):
        raise BackupError(f"{dest} is not empty: a backup goes into a new or empty directory")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(dest, 0o700)  # it holds private keys
    taken = kind.take(data_dir, dest, say)
    records = [_record_of(dest, rel) for rel in taken.paths]
    dirs: dict[str, int] = {}
    records += _copy_tree(data_dir / KEYS_DIR, dest / KEYS_DIR, KEYS_DIR, dirs)
    copied = {rel.split("/")[0] for rel in taken.paths} | {KEYS_DIR}
    warnings = [*taken.warnings] + [
        f"{p.name} in {data_dir} is not in the backup (not part of the {kind.name}'s state)"
        for p in sorted(data_dir.iterdir())
        if p.name not in copied and not kind.transient(p.name)
    ]
    say(f"{kind.name} backup: checking the copy")
    verdict = kind.check(dest, taken.facts, say)
    manifest = Manifest(
        kind=kind.name,
        created_at=now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source=str(data_dir.resolve()),
        facts=taken.facts,
        files=tuple(records),
        checked={"ok": verdict.ok, "failure": verdict.failure},
        dirs=dirs,
    )
    _write_new(dest / MANIFEST_NAME, manifest.to_json(), 0o600)
    _fsync_dir(dest)
    return BackupDone(manifest=manifest, verdict=verdict, warnings=warnings)


def restore(
    kind: Kind, src: Path, data_dir: Path, *, force: bool, now: dt.datetime, say: Say
) -> RestoreDone:
    """Put the backup ``src`` in place of ``data_dir``; refused unless it checks."""
    manifest = read_manifest(src)
    if manifest.kind != kind.name:
        raise BackupError(f"{src} is a backup of a {manifest.kind}, not of a {kind.name}")
    with _holding(kind.lock_files(data_dir), data_dir, kind.name):
        if _non_empty(data_dir) and not force:
            raise BackupError(
                f"{data_dir} is not empty: restore into a new directory, or give --force to "
                "set the one there aside (it is kept, renamed, not deleted)"
            )
        problems = check_files(src, manifest)
        if problems:
            raise BackupError(
                f"the backup {src} does not match its manifest: {problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            )
        say(f"{kind.name} restore: {len(manifest.files)} files match the manifest; checking")
        verdict = kind.check(src, manifest.facts, say)
        if not verdict.ok:
            raise BackupError(f"the backup {src} does not check: {verdict.failure}")
        aside = _install(src, manifest, data_dir, now)
        lines = kind.settle(data_dir)
    return RestoreDone(manifest=manifest, verdict=verdict, aside=aside, lines=lines)


def read_manifest(src: Path) -> Manifest:
    try:
        data = (src / MANIFEST_NAME).read_bytes()
    except OSError as e:
        raise BackupError(
            f"no {MANIFEST_NAME} in {src}: not a backup, or one that did not finish "
            f"({e.strerror or e})"
        ) from e
    return Manifest.from_json(data)


def check_files(src: Path, manifest: Manifest) -> list[str]:
    """Whether ``src`` holds exactly the manifest's files, of its sizes and hashes."""
    problems = []
    listed = {f.path for f in manifest.files}
    for f in manifest.files:
        path = src / f.path
        if path.is_symlink() or not path.is_file():
            problems.append(f"{f.path} is missing (or not a plain file)")
        elif path.stat().st_size != f.size:
            problems.append(f"{f.path} is {path.stat().st_size} bytes, the manifest says {f.size}")
        elif _sha256(path) != f.sha256:
            problems.append(f"{f.path} does not have the SHA-256 the manifest gives: it changed")
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if not path.is_dir() and rel not in listed and rel != MANIFEST_NAME:
            problems.append(f"{rel} is in the backup but not in its manifest")
    return problems


# -- files -----------------------------------------------------------------------------------


def copy_file(src: Path, dst: Path, mode: int) -> tuple[int, str]:
    """Copy ``src`` into the new file ``dst`` with ``mode``, fsynced: (size, SHA-256 hex)."""
    digest = hashlib.sha256()
    size = 0
    with src.open("rb") as f:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have removed bits
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    return size, digest.hexdigest()


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` at ``size`` bytes, durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_tree(src: Path, dst: Path, prefix: str, dirs: dict[str, int]) -> list[FileRecord]:
    """Copy the plain files under ``src`` (links followed) into ``dst``, modes kept (a
    ``*.key`` never wider than 0600); each directory's mode into ``dirs``."""
    if not src.is_dir():
        return []
    dirs[prefix] = stat.S_IMODE(src.stat().st_mode)
    _make_dir(dst, dirs[prefix])
    records = []
    for path in sorted(src.iterdir()):
        rel = f"{prefix}/{path.name}"
        if path.is_dir():
            records += _copy_tree(path, dst / path.name, rel, dirs)
        elif path.is_file():
            mode = _file_mode(path.name, stat.S_IMODE(path.stat().st_mode))
            size, digest = copy_file(path, dst / path.name, mode)
            records.append(FileRecord(path=rel, size=size, mode=mode, sha256=digest))
    _fsync_dir(dst)
    return records


def _file_mode(name: str, mode: int) -> int:
    return mode & 0o600 if name.endswith(".key") else mode


def _record_of(root: Path, rel: str) -> FileRecord:
    path = root / rel
    mode = stat.S_IMODE(path.stat().st_mode)
    return FileRecord(path=rel, size=path.stat().st_size, mode=mode, sha256=_sha256(path))


def _install(src: Path, manifest: Manifest, target: Path, now: dt.datetime) -> Path | None:
    """Copy the manifest's files into a staging directory beside ``target``, checking each
    hash again as it is written, then rename it into place; the old directory is set aside
    (returned) when it held anything."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{target.name}.restoring-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)  # a restore that died half-way
    old = target.stat() if target.exists() else None
    staging.mkdir(mode=0o700 if old is None else stat.S_IMODE(old.st_mode))
    aside = None
    try:
        for f in manifest.files:
            dst = staging / f.path
            for sub in reversed(PurePosixPath(f.path).parents[:-1]):
                if not (staging / sub).is_dir():
                    _make_dir(staging / sub, manifest.dirs.get(sub.as_posix(), 0o700))
            size, digest = copy_file(src / f.path, dst, _file_mode(dst.name, f.mode))
            if (size, digest) != (f.size, f.sha256):
                raise BackupError(f"{f.path} changed while it was being restored")
        for directory in sorted(
            {p.parent for p in staging.rglob("*")}, key=lambda p: -len(p.parts)
        ):
            _fsync_dir(directory)
        if old is not None:
            with os.scandir(target) as it:
                empty = next(it, None) is None
            if empty:
                target.rmdir()
            else:
                stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
                aside = target.with_name(f"{target.name}.before-restore-{stamp}")
                os.rename(target, aside)
        os.rename(staging, target)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None and os.geteuid() == 0:  # the daemon's own user keeps its directory
        for path in [target, *target.rglob("*")]:
            os.chown(path, old.st_uid, old.st_gid, follow_symlinks=False)
    return aside


@contextlib.contextmanager
def _holding(paths: list[Path], data_dir: Path, what: str) -> Iterator[None]:
    """Each lock file's ``flock``, or refusal: a running daemon holds them."""
    fds: list[int] = []
    try:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                raise BackupError(
                    f"the {what} is running on {data_dir} (it holds {path.name}): stop it first"
                ) from e
        yield
    finally:
        for fd in fds:
            os.close(fd)


def _safe_path(rel: str) -> str:
    """A manifest's path, refused if it could leave the backup (absolute, ``..``)."""
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or ".." in p.parts or p.as_posix() != rel or "\\" in rel:
        raise ValueError(f"path {rel!r} is not a plain relative path")
    return rel


def _make_dir(path: Path, mode: int) -> None:
    path.mkdir(mode=mode)
    os.chmod(path, mode)  # the umask may have removed bits


def _non_empty(path: Path) -> bool:
    if not path.exists():
        return False
    if not path.is_dir():
        raise BackupError(f"{path} is not a directory")
    with os.scandir(path) as it:
        return next(it, None) is not None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the two daemons -------------------------------------------------------------------------


class _Throttled:
    """At most one progress line a second (and the last one)."""

    def __init__(self, say: Say, every_s: float = 1.0) -> None:
        self._say, self._every_s, self._last = say, every_s, 0.0

    def __call__(self, text: str, *, last: bool = False) -> None:
        now = time.monotonic()
        if last or now - self._last >= self._every_s:
            self._last = now
            self._say(text)


class VaultKind:
    """The vault: its database through SQLite's online backup API (:mod:`daemon.backup`)."""

    name = "vault"

    def __init__(self, *, pages_per_step: int | None = None) -> None:
        self.pages_per_step = pages_per_step

    def take(self, data_dir: Path, dest: Path, say: Say) -> Taken:
        from daemon.backup import PAGES_PER_STEP, BackupFailed, backup_database
        from daemon.store import DB_NAME

        throttled = _Throttled(say)

        def progress(done: int, total: int) -> None:
            throttled(
                f"vault backup: {done:,} of {total:,} pages copied "
                f"({100 * done // max(total, 1)}%)",
                last=done == total,
            )

        try:
            state = backup_database(
                data_dir,
                dest,
                progress=progress,
                pages_per_step=self.pages_per_step or PAGES_PER_STEP,
            )
        except BackupFailed as e:
            raise BackupError(str(e)) from e
        facts = {
            "tree_size": state.size,
            "checkpoint_size": state.checkpoint_size,
            "checkpoint": state.checkpoint,
            "schema_version": state.schema_version,
        }
        return Taken(paths=[DB_NAME], facts=facts)

    def check(self, copy_dir: Path, facts: dict[str, Any], say: Say) -> Verdict:
        from daemon.backup import TreeState, check_copy

        try:
            expected = TreeState(
                size=int(facts["tree_size"]),
                checkpoint_size=facts["checkpoint_size"],
                checkpoint=facts["checkpoint"],
                schema_version=int(facts["schema_version"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            return Verdict(failure=f"the manifest's facts are incomplete: {e}")
        report = check_copy(copy_dir, expected, progress=lambda t: say(f"vault verify: {t}"))
        return Verdict(failure=report.failure, lines=report.lines(), warnings=report.warnings)

    def lock_files(self, data_dir: Path) -> list[Path]:
        from daemon.lockfile import LOCK_NAME

        return [data_dir / LOCK_NAME]

    def transient(self, name: str) -> bool:
        from daemon.lockfile import LOCK_NAME
        from daemon.store import DB_NAME

        return name == LOCK_NAME or name in {f"{DB_NAME}-{s}" for s in ("wal", "shm", "journal")}

    def settle(self, data_dir: Path) -> list[str]:
        return ["the vault brings the schema up to date when it starts on it (migrations)"]


class ApplianceKind:
    """The appliance: issuance logs, serial states (:mod:`appliance.runtime.backup`)."""

    name = "appliance"

    def __init__(self, *, key_paths: list[Path] | None = None, now: dt.datetime) -> None:
        self.key_paths = key_paths or []  # the configured key files, to warn when outside
        self.now = now

    def take(self, data_dir: Path, dest: Path, say: Say) -> Taken:
        from appliance.issuance.log import IssuanceLogCorrupt, IssuanceLogError
        from appliance.runtime.backup import log_extent, serial_state_paths, state_files

        paths: list[str] = []
        records = 0
        states = set(serial_state_paths(data_dir))
        for src in state_files(data_dir):
            dst = dest / src.name
            for attempt in range(1, _LOG_COPY_ATTEMPTS + 1):
                copy_file(src, dst, 0o600)
                if src in states:
                    break
                try:
                    n, end = log_extent(dst)
                except IssuanceLogCorrupt as e:
                    dst.unlink()
                    if attempt == _LOG_COPY_ATTEMPTS:
                        raise BackupError(f"{src.name} does not copy whole: {e}") from e
                    continue  # caught mid-write: again
                except IssuanceLogError as e:
                    raise BackupError(str(e)) from e
                truncate(dst, end)  # the torn tail, the zeros reserved ahead
                records += n
                say(f"appliance backup: {src.name}: {n:,} records")
                break
            paths.append(src.name)
        outside = [
            f"{p} is outside the data directory: back it up with its own care"
            for p in self.key_paths
            if not p.resolve().is_relative_to(data_dir.resolve())
        ]
        return Taken(paths=paths, facts={"issuance_records": records}, warnings=outside)

    def check(self, copy_dir: Path, facts: dict[str, Any], say: Say) -> Verdict:
        from appliance.runtime.backup import check_copy

        result = check_copy(copy_dir, now=self.now)
        failure = result.failure
        if failure is None and result.records != facts.get("issuance_records"):
            failure = (
                f"the issuance logs hold {result.records:,} records, the manifest says "
                f"{facts.get('issuance_records')}"
            )
        return Verdict(failure=failure, lines=result.lines, warnings=result.warnings)

    def lock_files(self, data_dir: Path) -> list[Path]:
        from appliance.runtime.backup import lock_files

        return lock_files(data_dir)

    def transient(self, name: str) -> bool:
        return name.endswith((".lock", ".tmp"))

    def settle(self, data_dir: Path) -> list[str]:
        from appliance.runtime.backup import renew_serial_states

        return [
            f"{name}: a new serial instance {new:016x} (the backup's was {old:016x}): the "
            "restored appliance's serial numbers cannot meet those the old one issued after "
            "the backup (ADR 0005)"
            for name, old, new in renew_serial_states(data_dir)
        ]
