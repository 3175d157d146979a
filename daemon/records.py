"""Attendance entries: what each kind holds, checked field by field (DESIGN.md, the entry).

:func:`parse_entry` takes a parsed JSON value (``daemon.ijson``) and returns an
:class:`Entry`, or raises one :class:`~daemon.errors.InvalidEntry` carrying *every* field
error with its RFC 6901 pointer — a school fixes a rejected sheet in one round trip.
Unknown members are refused at every level; every string and number is bounded.

Times are RFC 3339 with an explicit offset; :func:`entry_to_json` renders them with
``datetime.isoformat()`` (the offset kept, ``Z`` written ``+00:00``, microseconds when
present), so that parsing the rendered form gives the same entry again and rendering is
deterministic: that form is what the leaf encodes (ADR 0008).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from daemon.errors import FieldError, InvalidEntry
from daemon.ine import check_ine


class Kind(StrEnum):
    ROLL_CALL_OPENED = "roll_call_opened"
    STUDENT_SIGNED = "student_signed"
    TEACHER_SIGNED = "teacher_signed"
    ABSENT = "absent"
    LATE = "late"
    LEFT_EARLY = "left_early"
    ABSENCE_JUSTIFIED = "absence_justified"
    SESSION_MOVED = "session_moved"
    SESSION_CANCELLED = "session_cancelled"
    CORRECTION = "correction"


class CaptureMethod(StrEnum):
    QR = "qr"
    TABLET = "tablet"
    WEB = "web"
    MOBILE = "mobile"
    NFC = "nfc"
    PAPER = "paper"
    MANUAL = "manual"


SIGNATURE_KINDS: Final = frozenset(
    {Kind.ROLL_CALL_OPENED, Kind.STUDENT_SIGNED, Kind.TEACHER_SIGNED}
)
NO_STUDENT: Final = frozenset(
    {Kind.ROLL_CALL_OPENED, Kind.TEACHER_SIGNED, Kind.SESSION_MOVED, Kind.SESSION_CANCELLED}
)
WITH_MINUTES: Final = frozenset({Kind.LATE, Kind.LEFT_EARLY})
MAX_BATCH: Final = 1000
MAX_SESSION: Final = dt.timedelta(hours=24)
MIN_AGE_YEARS: Final = 10
MAX_AGE_YEARS: Final = 100
FUTURE_SLACK: Final = dt.timedelta(minutes=2)  # clocks of tablets drift; more is refused

_TOP: Final = frozenset(
    {"establishment", "kind", "session", "teacher", "student", "occurred_at", "capture"}
    | {"minutes", "corrects", "reason", "author"}
)
_SESSION: Final = frozenset(
    {
        "id",
        "version",
        "training_action",
        "title",
        "start",
        "end",
        "place",
        "remote_tool",
        "capacity",
    }
)
_ESTABLISHMENT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII: \d would take any script's digits
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_INT: Final = 2**53 - 1  # RFC 7493 §2.2: integers beyond are not interoperable


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    version: int
    training_action: str
    start: dt.datetime
    end: dt.datetime
    title: str | None = None
    place: str | None = None
    remote_tool: str | None = None
    capacity: int | None = None


@dataclass(frozen=True, slots=True)
class Teacher:
    id: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Student:
    ine: str
    birth_date: dt.date
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Author:
    id: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Capture:
    method: CaptureMethod
    device: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    establishment: str
    kind: Kind
    session: Session
    occurred_at: dt.datetime
    teacher: Teacher | None = None
    student: Student | None = None
    capture: Capture | None = None
    minutes: int | None = None
    corrects: int | None = None
    reason: str | None = None
    author: Author | None = None


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")  # RFC 6901 §3


class _Fields:
    """Reads one JSON object's members, collecting errors instead of stopping at the first."""

    def __init__(
        self, value: object, pointer: str, errors: list[FieldError], allowed: frozenset[str]
    ) -> None:
        self.pointer = pointer
        self.errors = errors
        self.ok = isinstance(value, dict)
        self.value: dict[str, Any] = value if isinstance(value, dict) else {}
        if not self.ok:
            errors.append(FieldError(pointer, "expected an object"))
        for name in self.value:
            if name not in allowed:
                errors.append(FieldError(f"{pointer}/{_escape(name)}", f"unknown member {name!r}"))

    def at(self, name: str) -> str:
        return f"{self.pointer}/{name}"

    def has(self, name: str) -> bool:
        return name in self.value

    def absent(self, name: str, why: str) -> None:
        if name in self.value:
            self.errors.append(FieldError(self.at(name), why))

    def missing(self, name: str) -> None:
        self.errors.append(FieldError(self.at(name), "required"))

    def text(
        self,
        name: str,
        *,
        required: bool = True,
        max_len: int = 200,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str | None:
        if name not in self.value:
            if required:
                self.missing(name)
            return None
        v = self.value[name]
        if not isinstance(v, str):
            self.errors.append(FieldError(self.at(name), "expected a string"))
            return None
        if not v.strip() or len(v) > max_len:
            self.errors.append(FieldError(self.at(name), f"1 to {max_len} characters, not blank"))
            return None
        if _CONTROL.search(v):
            self.errors.append(FieldError(self.at(name), "control characters are not allowed"))
            return None
        if pattern is not None and not pattern.fullmatch(v):
            self.errors.append(
                FieldError(self.at(name), what or f"does not match {pattern.pattern}")
            )
            return None
        return v

    def integer(self, name: str, low: int, high: int, *, required: bool = True) -> int | None:
        if name not in self.value:
            if required:
                self.missing(name)
            return None
        v = self.value[name]
        if isinstance(v, bool) or not isinstance(v, int):
            self.errors.append(FieldError(self.at(name), "expected an integer"))
            return None
        if not low <= v <= high:
            self.errors.append(FieldError(self.at(name), f"from {low} to {high}"))
            return None
        return v

    def time(self, name: str) -> dt.datetime | None:
        raw = self.text(
            name,
            max_len=40,
            pattern=_TIME,
            what="an RFC 3339 time with its offset, e.g. 2026-11-30T09:03:12+01:00",
        )
        if raw is None:
            return None
        m = _TIME.fullmatch(raw)
        assert m is not None  # checked by text()
        fraction = (m.group(1) or "")[1:7]  # Python keeps microseconds: nanoseconds dropped
        offset = "+00:00" if m.group(2) == "Z" else m.group(2)
        text = raw[:19] + (f".{fraction.ljust(6, '0')}" if fraction else "") + offset
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            self.errors.append(FieldError(self.at(name), "not a valid date and time"))
            return None


def _session(value: object, pointer: str, errors: list[FieldError]) -> Session | None:
    f = _Fields(value, pointer, errors, _SESSION)
    sid = f.text("id", max_len=128)
    version = f.integer("version", 1, 1_000_000)
    action = f.text("training_action")
    title = f.text("title", required=False)
    start, end = f.time("start"), f.time("end")
    place = f.text("place", required=False)
    remote = f.text("remote_tool", required=False)
    capacity = f.integer("capacity", 1, 10_000, required=False)
    if start is not None and end is not None:
        if end <= start:
            errors.append(FieldError(f.at("end"), "the session ends after it starts"))
            return None
        if end - start > MAX_SESSION:
            errors.append(FieldError(f.at("end"), "a session lasts at most 24 hours"))
            return None
    if sid is None or version is None or action is None or start is None or end is None:
        return None
    return Session(sid, version, action, start, end, title, place, remote, capacity)


def _person(
    value: object, pointer: str, errors: list[FieldError], cls: type[Teacher] | type[Author]
) -> Any:
    f = _Fields(value, pointer, errors, frozenset({"id", "name"}))
    pid = f.text("id", max_len=128)
    name = f.text("name", required=False)
    return None if pid is None else cls(pid, name)


def _student(
    value: object, pointer: str, errors: list[FieldError], today: dt.date
) -> Student | None:
    f = _Fields(value, pointer, errors, frozenset({"ine", "birth_date", "name"}))
    ine = f.text("ine", max_len=43)
    if ine is not None and (why := check_ine(ine)) is not None:
        errors.append(FieldError(f.at("ine"), why))
        ine = None
    raw = f.text("birth_date", max_len=10, pattern=_DATE, what="a date, YYYY-MM-DD")
    birth = None
    if raw is not None:
        try:
            birth = dt.date.fromisoformat(raw)
        except ValueError:
            errors.append(FieldError(f.at("birth_date"), "not a valid date"))
        else:
            if birth > today:
                errors.append(FieldError(f.at("birth_date"), "the birth date is in the future"))
                birth = None
            elif not _age_between(birth, today, MIN_AGE_YEARS, MAX_AGE_YEARS):
                errors.append(
                    FieldError(
                        f.at("birth_date"),
                        f"not plausible: the student would be under {MIN_AGE_YEARS} "
                        f"or over {MAX_AGE_YEARS}",
                    )
                )
                birth = None
    name = f.text("name", required=False)
    return None if ine is None or birth is None else Student(ine, birth, name)


def parse_date(text: str) -> dt.date | None:
    """``YYYY-MM-DD`` naming a real day, or None (``fromisoformat`` alone would also take
    ``2000-W01-1`` or ``20000101``)."""
    if not _DATE.fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _age_between(birth: dt.date, today: dt.date, low: int, high: int) -> bool:
    age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    return low <= age <= high


def _capture(value: object, pointer: str, errors: list[FieldError]) -> Capture | None:
    f = _Fields(value, pointer, errors, frozenset({"method", "device"}))
    method = f.text("method", max_len=16)
    device = f.text("device", required=False, max_len=128)
    if method is None:
        return None
    try:
        return Capture(CaptureMethod(method), device)
    except ValueError:
        errors.append(
            FieldError(f.at("method"), f"one of {', '.join(m.value for m in CaptureMethod)}")
        )
        return None


def parse_entry(
    value: object, *, today: dt.date, received_at: dt.datetime, pointer: str = ""
) -> Entry:
    errors: list[FieldError] = []
    entry = _entry(value, pointer, errors, today, received_at)
    if errors or entry is None:
        raise InvalidEntry(errors or [FieldError(pointer, "invalid entry")])
    return entry


def _entry(
    value: object, pointer: str, errors: list[FieldError], today: dt.date, received_at: dt.datetime
) -> Entry | None:
    f = _Fields(value, pointer, errors, _TOP)
    if not f.ok:
        return None
    establishment = f.text(
        "establishment", max_len=64, pattern=_ESTABLISHMENT, what="1 to 64 of A-Z a-z 0-9 . _ -"
    )
    kind = None
    raw_kind = f.text("kind", max_len=32)
    if raw_kind is not None:
        try:
            kind = Kind(raw_kind)
        except ValueError:
            errors.append(FieldError(f.at("kind"), f"one of {', '.join(k.value for k in Kind)}"))
    session = None
    if f.has("session"):
        session = _session(f.value["session"], f.at("session"), errors)
    else:
        f.missing("session")
    occurred_at = f.time("occurred_at")
    if occurred_at is not None and occurred_at > received_at + FUTURE_SLACK:
        errors.append(
            FieldError(
                f.at("occurred_at"), "in the future (more than 2 minutes after the vault's clock)"
            )
        )
    teacher = student = capture = author = None
    if f.has("teacher"):
        teacher = _person(f.value["teacher"], f.at("teacher"), errors, Teacher)
    elif kind is not None and kind is not Kind.CORRECTION:
        f.missing("teacher")
    if kind in NO_STUDENT:
        f.absent("student", f"a {kind} entry has no student")
    elif f.has("student"):
        student = _student(f.value["student"], f.at("student"), errors, today)
    elif kind is not None and kind is not Kind.CORRECTION:
        f.missing("student")
    if f.has("capture"):
        capture = _capture(f.value["capture"], f.at("capture"), errors)
    minutes = corrects = reason = None
    if kind in WITH_MINUTES:
        minutes = f.integer("minutes", 1, 1440)
    else:
        f.absent("minutes", "only late and left_early entries have minutes")
    if kind is Kind.CORRECTION:
        corrects = f.integer("corrects", 0, MAX_INT)
        reason = f.text("reason", max_len=2000)
        if f.has("author"):
            author = _person(f.value["author"], f.at("author"), errors, Author)
        else:
            f.missing("author")
    else:
        for name in ("corrects", "reason", "author"):
            f.absent(name, "only a correction has corrects, reason and author")
    if errors or establishment is None or kind is None or session is None or occurred_at is None:
        return None
    return Entry(
        establishment,
        kind,
        session,
        occurred_at,
        teacher,
        student,
        capture,
        minutes,
        corrects,
        reason,
        author,
    )


def parse_batch(
    value: object, *, today: dt.date, received_at: dt.datetime, max_entries: int = MAX_BATCH
) -> list[Entry]:
    """``{"entries": [...]}``: every entry valid, or one InvalidEntry with every error."""
    errors: list[FieldError] = []
    f = _Fields(value, "", errors, frozenset({"entries"}))
    items = f.value.get("entries")
    if not isinstance(items, list):
        errors.append(FieldError("/entries", "expected an array of entries"))
        raise InvalidEntry(errors)
    if not 1 <= len(items) <= max_entries:
        raise InvalidEntry([FieldError("/entries", f"a batch holds 1 to {max_entries} entries")])
    out = [
        _entry(item, f"/entries/{n}", errors, today, received_at) for n, item in enumerate(items)
    ]
    if errors:
        raise InvalidEntry(errors)
    return [e for e in out if e is not None]


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def entry_to_json(e: Entry) -> dict[str, Any]:
    s = e.session
    out: dict[str, Any] = {
        "establishment": e.establishment,
        "kind": str(e.kind),
        "session": _drop_none(
            {
                "id": s.id,
                "version": s.version,
                "training_action": s.training_action,
                "title": s.title,
                "start": s.start.isoformat(),
                "end": s.end.isoformat(),
                "place": s.place,
                "remote_tool": s.remote_tool,
                "capacity": s.capacity,
            }
        ),
        "occurred_at": e.occurred_at.isoformat(),
    }
    if e.teacher is not None:
        out["teacher"] = _drop_none({"id": e.teacher.id, "name": e.teacher.name})
    if e.student is not None:
        out["student"] = _drop_none(
            {
                "ine": e.student.ine,
                "birth_date": e.student.birth_date.isoformat(),
                "name": e.student.name,
            }
        )
    if e.capture is not None:
        out["capture"] = _drop_none({"method": str(e.capture.method), "device": e.capture.device})
    if e.author is not None:
        out["author"] = _drop_none({"id": e.author.id, "name": e.author.name})
    return out | _drop_none({"minutes": e.minutes, "corrects": e.corrects, "reason": e.reason})
