"""The pure rules of the vault: I-JSON, the INE, the entry's fields, the domain's rules.

Scenario tables for the rules (one small dataclass per case, python-tuf style) and
Hypothesis for the parsers: whatever the bytes, the answer is an entry or an InvalidEntry
naming where — never another exception (a 500)."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import ijson
from daemon.errors import InvalidEntry, Refused
from daemon.ine import BEA_LETTERS, IneForm, check_ine, form_of
from daemon.records import Kind, entry_to_json, parse_batch, parse_entry
from daemon.rules import SessionState, check, next_state

from .conftest import EXAMPLE

RECEIVED = dt.datetime(2026, 11, 30, 9, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))
TODAY = RECEIVED.date()


def parse(value: Any) -> Any:
    return parse_entry(value, today=TODAY, received_at=RECEIVED)


def pointers(value: Any) -> set[str]:
    with pytest.raises(InvalidEntry) as e:
        parse(value)
    return {f.pointer for f in e.value.errors}


# -- INE ----------------------------------------------------------------------------------


def bea(n: int) -> str:
    return f"{n:010d}" + "ABCDEFGHJKLMNPRSTUVWXYZ"[n % 23]  # independent of daemon.ine


@pytest.mark.parametrize("n", [0, 1, 22, 23, 123456789, 999999999, 4_294_967_295, 9_999_999_999])
def test_bea_ines_with_their_letter_pass_and_every_other_letter_fails(n: int) -> None:
    good = bea(n)
    assert check_ine(good) is None and form_of(good) is IneForm.BEA
    for letter in BEA_LETTERS:
        if letter != good[-1]:
            why = check_ine(good[:-1] + letter)
            assert why is not None and "check letter" in why
            assert good[-1] not in why.split()  # the expected letter is not revealed


@pytest.mark.parametrize(
    ("ine", "form"),
    [
        ("123456789AB", IneForm.RNIE),
        ("2024A12345K", IneForm.APPRENTICE),
        ("EQ-ERASMUS-2026-17", IneForm.EQUIVALENT),
    ],
)
def test_other_forms_pass_by_format(ine: str, form: IneForm) -> None:
    assert check_ine(ine) is None and form_of(ine) is form


@pytest.mark.parametrize(
    "ine",
    ["0123456789m", "123456789ab", "012345678M", "01234567890M", "", "EQ-", "0123456789I", "EQ-é"],
)
def test_malformed_ines_are_refused(ine: str) -> None:
    assert check_ine(ine) is not None
    if ine.upper() != ine and form_of(ine.upper()):
        assert "upper case" in (check_ine(ine) or "")


def test_the_design_example_ine_is_a_valid_bea() -> None:
    assert check_ine("0123456789M") is None


# -- I-JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"a": 1, "a": 2}', "duplicate member name 'a'"),
        (b'{"a": {"b": 1, "b": 1}}', "duplicate member name 'b'"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b'{"a": 1e999}', "IEEE 754"),
        (b'{"a": "\\ud800"}', "lone surrogate"),
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b"[" * 40 + b"]" * 40, "nested deeper"),
        (b"{", "not JSON"),
    ],
)
def test_ijson_refuses_what_rfc_7493_refuses(body: bytes, words: str) -> None:
    with pytest.raises(InvalidEntry) as e:
        ijson.parse(body)
    assert words in str(e.value.errors[0].detail)


def test_ijson_caps_the_body() -> None:
    with pytest.raises(ijson.BodyTooLarge):
        ijson.parse(b" " * 11, max_bytes=10)


# -- entries ------------------------------------------------------------------------------


def test_the_design_example_parses_and_round_trips() -> None:
    e = parse(EXAMPLE)
    assert (
        e.kind is Kind.STUDENT_SIGNED and e.student is not None and e.student.name == "Léa Dubois"
    )
    assert parse(entry_to_json(e)) == e
    assert entry_to_json(parse(entry_to_json(e))) == entry_to_json(e)


def test_every_error_is_reported_at_its_pointer() -> None:
    bad = copy.deepcopy(EXAMPLE)
    bad["student"]["ine"] = "0123456789A"
    bad["student"]["birth_date"] = "2030-01-01"
    bad["session"]["end"] = "2026-11-30T08:00:00+01:00"
    bad["session"]["colour"] = "red"
    bad["capture"]["method"] = "telepathy"
    bad["extra"] = 1
    del bad["teacher"]
    assert pointers(bad) == {
        "/student/ine",
        "/student/birth_date",
        "/session/end",
        "/session/colour",
        "/capture/method",
        "/extra",
        "/teacher",
    }


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"occurred_at": "2026-11-30T09:03:12"}, "/occurred_at"),  # no offset
        ({"occurred_at": "2026-11-30T10:00:00+01:00"}, "/occurred_at"),  # the future
        ({"kind": "teleported"}, "/kind"),
        ({"establishment": "CFA LYON"}, "/establishment"),
        ({"minutes": 5}, "/minutes"),  # not a late entry
        ({"session": {**EXAMPLE["session"], "version": 1.0}}, "/session/version"),
        ({"session": {**EXAMPLE["session"], "version": True}}, "/session/version"),
        ({"session": {**EXAMPLE["session"], "end": "2026-12-01T12:00:00+01:00"}}, "/session/end"),
        ({"student": {**EXAMPLE["student"], "birth_date": "1900-01-01"}}, "/student/birth_date"),
        ({"student": {**EXAMPLE["student"], "name": "x" * 201}}, "/student/name"),
        ({"teacher": {"id": "T\x00"}}, "/teacher/id"),
    ],
)
def test_one_wrong_field_is_named(change: dict[str, Any], pointer: str) -> None:
    assert pointer in pointers({**EXAMPLE, **change})


def test_kinds_have_their_own_fields() -> None:
    roll = {k: v for k, v in EXAMPLE.items() if k != "student"} | {"kind": "roll_call_opened"}
    assert parse(roll).student is None
    assert "/student" in pointers(EXAMPLE | {"kind": "teacher_signed"})
    assert "/minutes" in pointers(EXAMPLE | {"kind": "late"})
    assert parse(EXAMPLE | {"kind": "late", "minutes": 12}).minutes == 12
    correction = EXAMPLE | {
        "kind": "correction",
        "corrects": 3,
        "reason": "badge",
        "author": {"id": "SEC"},
    }
    assert parse(correction).corrects == 3
    assert {"/corrects", "/reason", "/author"} <= pointers(EXAMPLE | {"kind": "correction"})


def test_a_batch_reports_errors_by_position() -> None:
    bad = copy.deepcopy(EXAMPLE)
    bad["student"]["ine"] = "nope"
    with pytest.raises(InvalidEntry) as e:
        parse_batch({"entries": [EXAMPLE, bad]}, today=TODAY, received_at=RECEIVED)
    assert [f.pointer for f in e.value.errors] == ["/entries/1/student/ine"]
    with pytest.raises(InvalidEntry):
        parse_batch({"entries": []}, today=TODAY, received_at=RECEIVED)


# -- fuzz ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(body: bytes) -> None:
    with contextlib.suppress(InvalidEntry, ijson.BodyTooLarge):  # anything else fails the test
        parse(ijson.parse(body))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_entries_give_an_entry_or_field_errors(data: st.DataObject) -> None:
    value = copy.deepcopy(EXAMPLE)
    for _ in range(data.draw(st.integers(1, 3))):
        target: Any = value
        path = data.draw(st.sampled_from([[], ["session"], ["student"], ["teacher"], ["capture"]]))
        for p in path:
            target = target.get(p) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        key = data.draw(st.sampled_from([*target.keys(), "unknown"]))
        target[key] = data.draw(json_values)
    try:
        entry = parse(json.loads(json.dumps(value)))
    except InvalidEntry as e:
        assert e.errors and all(f.pointer == "" or f.pointer.startswith("/") for f in e.errors)
    else:
        assert parse(entry_to_json(entry)) == entry


# -- the rules ----------------------------------------------------------------------------

WINDOW = dt.timedelta(minutes=15)
BASE = parse(EXAMPLE)
S = BASE.session
STATE = SessionState(1, S.start, S.end)


def at(kind: str = "student_signed", *, version: int = 1, minutes: float = 3, **extra: Any) -> Any:
    e = replace(BASE, kind=Kind(kind), occurred_at=S.start + dt.timedelta(minutes=minutes), **extra)
    if kind in ("roll_call_opened", "teacher_signed", "session_moved", "session_cancelled"):
        e = replace(e, student=None)
    return replace(e, session=replace(S, version=version))


@dataclass(frozen=True)
class Case:
    name: str
    entry: Any
    state: SessionState | None
    refused: str | None  # the problem code, or None: accepted
    received_at: dt.datetime = S.start + dt.timedelta(minutes=4)
    target_found: bool | None = None


CASES = [
    Case("a signature in the session", at(), STATE, None),
    Case("a first-seen session", at(version=3), None, None),
    Case(
        "a signature 14 min before the start",
        at(minutes=-14),
        STATE,
        None,
        received_at=S.start - dt.timedelta(minutes=14),
    ),
    Case("a signature 16 min before the start", at(minutes=-16), STATE, "outside_signing_window"),
    Case(
        "received 16 min after the end",
        at(minutes=170),
        STATE,
        "outside_signing_window",
        received_at=S.end + dt.timedelta(minutes=16),
    ),
    Case(
        "an absence justified a week later",
        at("absence_justified"),
        STATE,
        None,
        received_at=S.end + dt.timedelta(days=7),
    ),
    Case(
        "a signature of the old version", at(version=1), replace(STATE, version=2), "session_moved"
    ),
    Case("a version never announced", at(version=3), STATE, "session_version_unknown"),
    Case("a move to a new version", at("session_moved", version=2), STATE, None),
    Case("a move that is not newer", at("session_moved", version=1), STATE, "session_not_newer"),
    Case(
        "times changed without a move",
        replace(at(), session=replace(S, end=S.end + dt.timedelta(hours=1))),
        STATE,
        "session_mismatch",
    ),
    Case(
        "anything for a cancelled session",
        at("absent"),
        replace(STATE, cancelled=True),
        "session_cancelled",
    ),
    Case(
        "a correction for a cancelled session",
        at("correction", corrects=1, reason="r"),
        replace(STATE, cancelled=True),
        None,
        target_found=True,
    ),
    Case(
        "a correction of an unknown entry",
        at("correction", corrects=99, reason="r"),
        STATE,
        "unknown_entry",
        target_found=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rules(case: Case) -> None:
    def run() -> None:
        check(
            case.entry,
            state=case.state,
            window=WINDOW,
            received_at=case.received_at,
            correction_target_found=case.target_found,
        )

    if case.refused is None:
        run()
    else:
        with pytest.raises(Refused) as e:
            run()
        assert e.value.code == case.refused
        assert e.value.type_uri == f"urn:horodate:problem:{case.refused}"


def test_the_session_state_follows_moves_and_cancellations() -> None:
    first = next_state(None, at())
    assert first == STATE
    moved = next_state(first, at("session_moved", version=2))
    assert moved is not None and moved.version == 2
    cancelled = next_state(moved, at("session_cancelled", version=2))
    assert cancelled is not None and cancelled.cancelled and cancelled.version == 2
    assert next_state(cancelled, at("correction", corrects=0, reason="r")) == cancelled
