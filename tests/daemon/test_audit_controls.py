"""The controls an auditor runs, one by one, on entries made to trip them (and on entries
made not to); the trainer-overlap sweep against the obvious quadratic comparison."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.audit.controls import Item, _trainer_overlap, run_controls

PARIS = dt.timezone(dt.timedelta(hours=1))


def _entry(kind: str, sid: str, start: dt.datetime, at: dt.datetime, **extra: Any) -> Any:
    e = {
        "kind": kind,
        "session": {"id": sid, "start": start.isoformat(),
                    "end": (start + dt.timedelta(hours=3)).isoformat()},
        "teacher": {"id": "T-07"},
        "occurred_at": at.isoformat(),
    }  # fmt: skip
    e.update(extra)
    return e


def _codes(items: list[Item], **context: Any) -> dict[str, list[int]]:
    ctx: dict[str, Any] = {"session_items": {}, "trainer_sessions": [], "signed_students": {}}
    ctx.update(context)
    return {f.code: f.entries for f in run_controls(items, **ctx)}


START = dt.datetime(2026, 3, 10, 9, tzinfo=PARIS)  # a Tuesday, no holiday


def test_a_clean_half_day_finds_nothing() -> None:
    items = [
        Item(0, _entry("student_signed", "S", START, START + dt.timedelta(minutes=2)),
             START + dt.timedelta(minutes=2, seconds=1)),
        Item(1, _entry("teacher_signed", "S", START, START + dt.timedelta(minutes=5)),
             START + dt.timedelta(minutes=5, seconds=1)),
    ]  # fmt: skip
    assert _codes(items, trainer_sessions=[items[1]]) == {}


def test_each_control_names_its_entries() -> None:
    m = dt.timedelta(minutes=1)
    may_day = dt.datetime(2026, 5, 1, 9, tzinfo=PARIS)
    items = [
        Item(0, _entry("student_signed", "S", START, START - 20 * m), START - 20 * m),  # early
        Item(1, _entry("student_signed", "S", START, START + m), START + 40 * m),  # late entry
        Item(2, _entry("student_signed", "H", may_day, may_day + m), may_day + m),  # holiday
        Item(3, _entry("teacher_signed", "H", may_day, may_day + 2 * m), may_day + 2 * m),
        Item(4, _entry("student_signed", "P", START, START + m), None),  # pending
    ]
    burst = [
        Item(10 + k, _entry("student_signed", "S", START, START + m,
                            capture={"method": "qr", "device": "TAB-1"}),
             START + m + dt.timedelta(milliseconds=100 * k))
        for k in range(5)
    ]  # fmt: skip
    capped = _entry("student_signed", "S", START, START + m)
    capped["session"]["capacity"] = 2
    codes = _codes(
        [*items, Item(5, capped, START + m)],
        session_items={"S": burst},
        signed_students={"S": 3},
    )
    assert codes["outside_session"] == [0]
    assert codes["entered_late"] == [1]
    assert codes["public_holiday"] == [2, 3]
    assert codes["batch"] == [10, 11, 12, 13, 14]
    assert codes["pending_seal"] == [4]
    assert codes["over_capacity"] == [0, 1, 5]
    assert codes["no_counter_signature"] == [0, 1, 5]  # S and P; P's one entry is pending
    four = _codes([], session_items={"S": burst[:4]})
    assert "batch" not in four  # four is not a burst


def test_a_trainer_in_two_places_at_once() -> None:
    a = Item(1, _entry("teacher_signed", "A", START, START), START)
    b = Item(2, _entry("teacher_signed", "B", START + dt.timedelta(hours=2), START), START)
    c = Item(3, _entry("teacher_signed", "C", START + dt.timedelta(hours=3), START), START)
    found = _trainer_overlap([a], [a, b, c])
    assert [f.entries for f in found] == [[1, 2]]  # C starts when A ends: no overlap


def _brute(items: list[Item], others: list[Item]) -> set[tuple[int, int]]:
    out = set()
    for a in items:
        if a.entry["kind"] != "teacher_signed":
            continue
        for b in others:
            same = b.index == a.index or b.entry["session"]["id"] == a.entry["session"]["id"]
            if same or b.entry["teacher"]["id"] != a.entry["teacher"]["id"]:
                continue
            a0, a1 = (dt.datetime.fromisoformat(a.entry["session"][k]) for k in ("start", "end"))
            b0, b1 = (dt.datetime.fromisoformat(b.entry["session"][k]) for k in ("start", "end"))
            if a0 < b1 and b0 < a1:
                out.add((min(a.index, b.index), max(a.index, b.index)))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 8), st.sampled_from("XY")),
                min_size=1, max_size=25))  # fmt: skip
def test_the_sweep_finds_what_comparing_every_pair_finds(
    spans: list[tuple[int, int, str]],
) -> None:
    others = []
    for n, (hour, length, teacher) in enumerate(spans):
        start = START + dt.timedelta(hours=hour)
        e = _entry("teacher_signed", f"S{n}", start, start)
        e["session"]["end"] = (start + dt.timedelta(hours=length)).isoformat()
        e["teacher"] = {"id": teacher}
        others.append(Item(n, e, start))
    mine = others[: max(1, len(others) // 2)]
    found = {tuple(f.entries) for f in _trainer_overlap(mine, others)}
    assert found == _brute(mine, others)
