"""The checks a funder's controller runs on attendance sheets, run first and reported.

What controllers reject (French case law and their published practice): signatures made
after the fact or outside the session, in a batch, on a public holiday, by a trainer who was
elsewhere at the time, more signatures than the room holds, a half-day without the
trainer's counter-signature. Each finding names the entries it rests on; a finding is a
question the centre must be able to answer, not a verdict.

Times come from the tokens (``gen_time``) where the question is *when it was recorded*, and
from the entry (``occurred_at``) where it is *when it says it happened*.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import holidays

LATE_ENTRY: Final = dt.timedelta(minutes=15)  # recorded this long after it says it happened
SESSION_SLACK: Final = dt.timedelta(minutes=15)  # the default signing window around a session
BATCH_SECONDS: Final = 1.0
BATCH_SIZE: Final = 5  # this many signatures from one device within BATCH_SECONDS


@dataclass(frozen=True, slots=True)
class Item:
    """One entry as the controls see it: its index, the opened entry, its token's time."""

    index: int
    entry: Mapping[str, Any]
    gen_time: dt.datetime | None


@dataclass(slots=True)
class Finding:
    code: str
    title: str  # French: the report is read by a French controller
    detail: str
    entries: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "entries": self.entries,
        }


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _session_bounds(entry: Mapping[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    return _t(entry["session"]["start"]), _t(entry["session"]["end"])


def run_controls(
    items: Iterable[Item],
    *,
    session_items: Mapping[str, list[Item]],
    trainer_sessions: Iterable[Item],
    signed_students: Mapping[str, int],
) -> list[Finding]:
    """The findings over ``items`` (the entries in scope).

    ``session_items``: every entry of each session in scope, all students (for batches: no
    personal data is read from them); ``trainer_sessions``: the establishment's trainer
    counter-signatures over the scope's period (for a trainer in two places at once);
    ``signed_students``: distinct students who signed each session (for its capacity).
    """
    items = list(items)
    findings: list[Finding] = []
    findings += _late_or_outside(items)
    findings += _holidays(items)
    findings += _batches(session_items)
    findings += _capacity(items, signed_students)
    findings += _no_counter_signature(items)
    findings += _trainer_overlap(items, trainer_sessions)
    pending = [i.index for i in items if i.gen_time is None]
    if pending:
        findings.append(
            Finding(
                "pending_seal",
                "Entrées sans jeton d'horodatage",
                f"{len(pending)} entrée(s) attendent encore leur jeton : leur heure n'est pas "
                "encore prouvée",
                pending,
            )
        )
    return findings


_SIGNATURES: Final = ("student_signed", "teacher_signed")


def _late_or_outside(items: list[Item]) -> list[Finding]:
    late, outside = [], []
    for i in items:
        if i.entry["kind"] not in _SIGNATURES:
            continue
        at = _t(i.entry["occurred_at"])
        start, end = _session_bounds(i.entry)
        if not start - SESSION_SLACK <= at <= end + SESSION_SLACK:
            outside.append(i.index)
        if i.gen_time is not None and i.gen_time - at > LATE_ENTRY:
            late.append(i.index)
    out = []
    if outside:
        out.append(
            Finding(
                "outside_session",
                "Signatures hors de la séance",
                "signées plus de 15 minutes avant le début ou après la fin de la séance",
                outside,
            )
        )
    if late:
        out.append(
            Finding(
                "entered_late",
                "Signatures saisies après coup",
                "le jeton d'horodatage est postérieur de plus de 15 minutes à l'heure déclarée "
                "de la signature",
                late,
            )
        )
    return out


def _holidays(items: list[Item]) -> list[Finding]:
    years = {_t(i.entry["session"]["start"]).year for i in items}
    france = holidays.country_holidays("FR", years=sorted(years), language="fr")
    by_day: dict[dt.date, list[int]] = defaultdict(list)
    for i in items:
        if i.entry["kind"] in _SIGNATURES:
            by_day[_t(i.entry["session"]["start"]).date()].append(i.index)
    return [
        Finding(
            "public_holiday",
            "Signatures un jour férié",
            f"le {day.strftime('%d/%m/%Y')} est un jour férié en France ({france.get(day)})",
            found,
        )
        for day, found in sorted(by_day.items())
        if day in france
    ]


def _batches(session_items: Mapping[str, list[Item]]) -> list[Finding]:
    out = []
    for sid, items in sorted(session_items.items()):
        by_device: dict[str, list[Item]] = defaultdict(list)
        for i in items:
            device = (i.entry.get("capture") or {}).get("device")
            if i.entry["kind"] == "student_signed" and device and i.gen_time is not None:
                by_device[device].append(i)
        for device, signed in sorted(by_device.items()):
            signed.sort(key=lambda i: i.gen_time or dt.datetime.min)
            lo = 0
            for hi in range(len(signed)):
                while (signed[hi].gen_time - signed[lo].gen_time).total_seconds() > BATCH_SECONDS:  # type: ignore[operator]
                    lo += 1
                if hi - lo + 1 >= BATCH_SIZE:
                    burst = [i.index for i in signed[lo : hi + 1]]
                    out.append(
                        Finding(
                            "batch",
                            "Signatures en rafale",
                            f"séance {sid} : {len(burst)} signatures depuis l'appareil "
                            f"{device!r} en moins de {BATCH_SECONDS:g} seconde",
                            burst,
                        )
                    )
                    break
    return out


def _capacity(items: list[Item], signed_students: Mapping[str, int]) -> list[Finding]:
    out = []
    seen: set[str] = set()
    for i in items:
        session = i.entry["session"]
        sid, capacity = session["id"], session.get("capacity")
        if sid in seen or capacity is None:
            continue
        seen.add(sid)
        signed = signed_students.get(sid, 0)
        if signed > capacity:
            out.append(
                Finding(
                    "over_capacity",
                    "Plus de signatures que de places",
                    f"séance {sid} : {signed} stagiaires ont signé pour {capacity} places",
                    [j.index for j in items if j.entry["session"]["id"] == sid],
                )
            )
    return out


def _no_counter_signature(items: list[Item]) -> list[Finding]:
    signed: dict[str, list[int]] = defaultdict(list)
    countersigned: set[str] = set()
    cancelled: set[str] = set()
    for i in items:
        sid = i.entry["session"]["id"]
        kind = i.entry["kind"]
        if kind == "student_signed":
            signed[sid].append(i.index)
        elif kind == "teacher_signed":
            countersigned.add(sid)
        elif kind == "session_cancelled":
            cancelled.add(sid)
    return [
        Finding(
            "no_counter_signature",
            "Demi-journée sans contre-signature du formateur",
            f"séance {sid} : des stagiaires ont signé, le formateur n'a pas contre-signé",
            found,
        )
        for sid, found in sorted(signed.items())
        if sid not in countersigned and sid not in cancelled
    ]


def _trainer_overlap(items: list[Item], trainer_sessions: Iterable[Item]) -> list[Finding]:
    """Each of the scope's counter-signatures against the trainer's others, by interval:
    the trainer's sessions sorted by start once, each lookup a bisection (a year's trail
    against a large establishment's counter-signatures stays linear)."""
    by_teacher: dict[str, list[tuple[dt.datetime, dt.datetime, Item]]] = defaultdict(list)
    for b in trainer_sessions:
        start, end = _session_bounds(b.entry)
        by_teacher[b.entry["teacher"]["id"]].append((start, end, b))
    longest: dict[str, dt.timedelta] = {}
    for teacher, spans in by_teacher.items():
        spans.sort(key=lambda span: (span[0], span[2].index))
        longest[teacher] = max(end - start for start, end, _ in spans)
    out = []
    reported: set[tuple[int, int]] = set()
    for a in items:
        if a.entry["kind"] != "teacher_signed":
            continue
        teacher = a.entry["teacher"]["id"]
        spans = by_teacher.get(teacher, [])
        a_start, a_end = _session_bounds(a.entry)
        # candidates start before a ends, and no earlier than a's start minus the longest
        first = bisect.bisect_left(spans, a_start - longest.get(teacher, dt.timedelta()),
                                   key=lambda span: span[0])  # fmt: skip
        for b_start, b_end, b in spans[first:]:
            if b_start >= a_end:
                break
            if b.index == a.index or b.entry["session"]["id"] == a.entry["session"]["id"]:
                continue
            pair = (min(a.index, b.index), max(a.index, b.index))
            if a_start < b_end and pair not in reported:
                reported.add(pair)
                out.append(
                    Finding(
                        "trainer_overlap",
                        "Formateur présent à deux séances en même temps",
                        f"le formateur {teacher} a contre-signé les séances "
                        f"{a.entry['session']['id']} et {b.entry['session']['id']}, qui se "
                        "chevauchent",
                        list(pair),
                    )
                )
    return out
