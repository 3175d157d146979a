"""The facts of an audit trail, as ``report.json`` states them and ``report.pdf`` sets them.

Per session and student: the half-day (date and slot from the session's own local times),
the trainer, the status (present, late with minutes, left early, absent, justified, no
signature), each signature's time from its token with the token's stated accuracy, the
capture method, the trainer's counter-signature, and the session's history (moves,
cancellation) and every correction. Then the hours planned, attended and missed.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from daemon.audit.controls import Item

_NOON = dt.time(13, 0)  # a session starting before 13:00 is the morning's


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a token says about an entry: when, how precisely, under which serial."""

    gen_time: dt.datetime
    accuracy_s: float | None
    serial: int


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _hours(start: dt.datetime, end: dt.datetime) -> float:
    return (end - start).total_seconds() / 3600


def _student_key(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """INE and birth date; for a student whose data retention destroyed, the commitment
    (the entry still counts, nobody is named)."""
    student = entry.get("student")
    if not isinstance(student, dict):
        return None
    if "ine" not in student:
        return "", str(student.get("commitment"))
    return student["ine"], student["birth_date"]


def _student(entry: Mapping[str, Any]) -> dict[str, Any]:
    student: dict[str, Any] = entry["student"]
    if "ine" not in student:  # destroyed by retention
        return {"ine": None, "birth_date": None, "name": None, "destroyed": True}
    return student


def half_days(
    items: Iterable[Item], seals: Mapping[int, Sealed]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One row per (session, student) and the totals over them."""
    by_session: dict[str, list[Item]] = defaultdict(list)
    for i in items:
        by_session[i.entry["session"]["id"]].append(i)
    rows: list[dict[str, Any]] = []
    planned = attended = 0.0
    for sid, its in sorted(by_session.items(), key=lambda kv: kv[1][0].entry["session"]["start"]):
        its.sort(key=lambda i: i.index)
        latest = its[-1].entry["session"]  # a move's entry carries the session as it now is
        for i in its:
            if i.entry["kind"] == "session_moved":
                latest = i.entry["session"]
        start, end = _t(latest["start"]), _t(latest["end"])
        cancelled = any(i.entry["kind"] == "session_cancelled" for i in its)
        counter = [i for i in its if i.entry["kind"] == "teacher_signed"]
        history = [
            _history(i)
            for i in its
            if i.entry["kind"] in ("session_moved", "session_cancelled", "correction")
        ]
        students: dict[tuple[str, str], list[Item]] = defaultdict(list)
        for i in its:
            key = _student_key(i.entry)
            if key is not None:
                students[key].append(i)
        for _key, mine in sorted(students.items()):
            status, minutes_missed = _status(mine, cancelled)
            hours = 0.0 if cancelled else _hours(start, end)
            present = status["code"] in ("present", "late", "left_early")
            got = max(0.0, hours - minutes_missed / 60) if present else 0.0
            planned += hours
            attended += got
            signature = next((i for i in mine if i.entry["kind"] == "student_signed"), None)
            student = _student(mine[0].entry)
            teacher = (counter[0] if counter else mine[0]).entry.get("teacher") or {}
            rows.append(
                {
                    "session": sid,
                    "version": latest["version"],
                    "training_action": latest["training_action"],
                    "title": latest.get("title"),
                    "date": start.date().isoformat(),
                    "slot": "morning" if start.time() < _NOON else "afternoon",
                    "start": latest["start"],
                    "end": latest["end"],
                    "place": latest.get("place") or latest.get("remote_tool"),
                    "trainer": {"id": teacher.get("id"), "name": teacher.get("name")},
                    "student": student,
                    "status": status,
                    "signature": _signed(signature, seals),
                    "counter_signature": _signed(counter[0] if counter else None, seals),
                    "hours_planned": round(hours, 2),
                    "hours_attended": round(got, 2),
                    "entries": [i.index for i in mine] + [i.index for i in counter],
                    "history": history,
                }
            )
    totals = {
        "hours_planned": round(planned, 2),
        "hours_attended": round(attended, 2),
        "hours_missed": round(planned - attended, 2),
    }
    return rows, totals


def _status(mine: list[Item], cancelled: bool) -> tuple[dict[str, Any], int]:
    kinds = {i.entry["kind"]: i.entry for i in mine}
    if cancelled:
        return {"code": "cancelled"}, 0
    if "absence_justified" in kinds:
        return {"code": "justified"}, 0
    if "absent" in kinds and "student_signed" not in kinds:
        return {"code": "absent"}, 0
    if "student_signed" not in kinds:
        return {"code": "no_signature"}, 0
    late = kinds.get("late", {}).get("minutes", 0)
    early = kinds.get("left_early", {}).get("minutes", 0)
    if late:
        return {"code": "late", "minutes": late, "left_early_minutes": early or None}, late + early
    if early:
        return {"code": "left_early", "minutes": early}, early
    return {"code": "present"}, 0


def _signed(item: Item | None, seals: Mapping[int, Sealed]) -> dict[str, Any] | None:
    if item is None:
        return None
    seal = seals.get(item.index)
    capture = item.entry.get("capture") or {}
    return {
        "entry": item.index,
        "occurred_at": item.entry["occurred_at"],
        "gen_time": None if seal is None else seal.gen_time.isoformat().replace("+00:00", "Z"),
        "accuracy_s": None if seal is None else seal.accuracy_s,
        "token_serial": None if seal is None else f"{seal.serial:x}",
        "capture": capture.get("method"),
        "device": capture.get("device"),
    }


def _history(i: Item) -> dict[str, Any]:
    e = i.entry
    out: dict[str, Any] = {"entry": i.index, "kind": e["kind"], "occurred_at": e["occurred_at"]}
    if e["kind"] == "session_moved":
        out["now"] = {
            "version": e["session"]["version"],
            "start": e["session"]["start"],
            "end": e["session"]["end"],
        }
    if e["kind"] == "correction":
        out.update(corrects=e.get("corrects"), reason=e.get("reason"), author=e.get("author"))
    return out
