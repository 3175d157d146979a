"""What a check finds, and the host it looks at: every path under one root.

A check reads the host through :class:`Host`, which maps the system path it names
(``/dev/i2c-1``, ``/boot/firmware/config.txt``) under ``root``: ``/`` on the appliance, a
fake sysfs/devfs/boot tree in the tests. Findings name the system path, never the
root-prefixed one, so that a fix can be copied as it is.
"""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

# A chain of symbolic links longer than this is reported, not followed (the kernel's own
# limit, MAXSYMLINKS, is 40; /dev/serial0 → ttyAMA0 is one).
MAX_SYMLINKS = 8


class Verdict(enum.Enum):
    """One check's outcome, worst last."""

    OK = "ok"
    SKIP = "skip"  # cannot be checked here; the summary says why
    WARN = "warn"
    FAIL = "FAIL"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Verdict.OK: 0, Verdict.SKIP: 0, Verdict.WARN: 1, Verdict.FAIL: 2}


@dataclass(frozen=True, slots=True)
class Finding:
    """``check``'s verdict, what was seen, and for a problem the fix: each line a line to
    add to a file or a command to run, to be printed as it is."""

    check: str
    verdict: Verdict
    summary: str
    fix: tuple[str, ...] = ()
    details: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "check": self.check,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "fix": list(self.fix),
            "details": list(self.details),
        }


def worst(verdicts: list[Verdict]) -> Verdict:
    return max(verdicts, key=lambda v: v.rank, default=Verdict.OK)


@dataclass(frozen=True, slots=True)
class Account:
    """A system user and the groups it is in (from ``/etc/passwd`` and ``/etc/group``)."""

    name: str
    groups: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Host:
    """The machine under ``root``."""

    root: Path = Path("/")

    def path(self, system_path: str | Path) -> Path:
        """Where ``system_path`` (absolute, as on the appliance) lies under the root."""
        return self.root / str(system_path).lstrip("/")

    def read_text(self, system_path: str | Path) -> str | None:
        """The file's text, or None when it is absent or unreadable."""
        try:
            return self.path(system_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def exists(self, system_path: str | Path) -> bool:
        return os.path.lexists(self.path(system_path))

    def resolve(self, system_path: str) -> str | None:
        """``system_path`` with its symbolic links followed inside the root (an absolute
        target is taken under the root too); None when a link is dangling or too deep."""
        current = system_path
        for _ in range(MAX_SYMLINKS):
            located = self.path(current)
            if not located.is_symlink():
                return current if located.exists() else None
            target = os.readlink(located)
            current = (
                target if target.startswith("/") else os.path.join(os.path.dirname(current), target)
            )
            current = os.path.normpath(current)
        return None

    def stat(self, system_path: str) -> os.stat_result | None:
        try:
            return self.path(system_path).stat()
        except OSError:
            return None

    def user_name(self, uid: int) -> str:
        return _names(self.read_text("/etc/passwd")).get(uid, str(uid))

    def group_name(self, gid: int) -> str:
        return _names(self.read_text("/etc/group")).get(gid, str(gid))

    def account(self, name: str, *, extra_groups: frozenset[str] = frozenset()) -> Account:
        """``name`` and its groups: its primary group (the group of its own name, as
        systemd-sysusers makes it), the groups listing it, and ``extra_groups`` (the unit's
        ``SupplementaryGroups=``)."""
        groups = {name, *extra_groups}
        for line in (self.read_text("/etc/group") or "").splitlines():
            parts = line.split(":")
            if len(parts) >= 4 and name in parts[3].split(","):
                groups.add(parts[0])
        return Account(name, frozenset(groups))


def _names(text: str | None) -> dict[int, str]:
    """``name:x:id:…`` lines (passwd(5), group(5)) → {id: name}."""
    found: dict[int, str] = {}
    for line in (text or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            found.setdefault(int(parts[2]), parts[0])
    return found


def may_open(host: Host, st: os.stat_result, account: Account, *, write: bool) -> bool:
    """Whether ``account`` may open a file of this owner and mode (owner, then group, then
    other bits, as the kernel decides; root may open anything)."""
    if account.name == "root":
        return True
    want_r, want_w = (stat.S_IRUSR, stat.S_IWUSR)
    if host.user_name(st.st_uid) == account.name:
        shift = 0
    elif host.group_name(st.st_gid) in account.groups:
        shift = 3
    else:
        shift = 6
    need = want_r >> shift | (want_w >> shift if write else 0)
    return st.st_mode & need == need


def describe(host: Host, st: os.stat_result) -> str:
    """``crw-rw---- root:dialout``, as ``ls -l`` shows it."""
    return f"{stat.filemode(st.st_mode)} {host.user_name(st.st_uid)}:{host.group_name(st.st_gid)}"
