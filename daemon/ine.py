"""The INE (identifiant national élève / étudiant), checked before it is committed to.

Forms (DESIGN.md):

- **BEA** ``\\d{10}[A-Z]``: the letter is the 10-digit number mod 23, indexed in
  ``ABCDEFGHJKLMNPRSTUVWXYZ`` (I, O, Q excluded) — checked strictly;
- **RNIE** ``\\d{9}[A-Z]{2}`` (universities) and **apprentice** ``\\d{4}A\\d{5}[A-Z]``
  (CFA) — by format only, their keys are not published;
- **equivalent id**, for a foreign or provisional student without an INE: ``EQ-`` then 1
  to 40 of ``[A-Z0-9-]``, the establishment's own identifier (it links the student's
  records across years within the establishment just as an INE does).

A wrong BEA letter is refused without saying which letter was expected: the message must
not help anyone make up a valid INE.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

BEA_LETTERS: Final = "ABCDEFGHJKLMNPRSTUVWXYZ"


class IneForm(StrEnum):
    BEA = "bea"
    RNIE = "rnie"
    APPRENTICE = "apprentice"
    EQUIVALENT = "equivalent"


_FORMS: Final = (
    (IneForm.BEA, re.compile(r"[0-9]{10}[A-Z]")),
    (IneForm.APPRENTICE, re.compile(r"[0-9]{4}A[0-9]{5}[A-Z]")),
    (IneForm.RNIE, re.compile(r"[0-9]{9}[A-Z]{2}")),
    (IneForm.EQUIVALENT, re.compile(r"EQ-[A-Z0-9-]{1,40}")),
)


def form_of(value: str) -> IneForm | None:
    for form, pattern in _FORMS:
        if pattern.fullmatch(value):
            return form
    return None


def check_ine(value: str) -> str | None:
    """None when ``value`` is a valid INE (or equivalent id); else why not, in words."""
    form = form_of(value)
    if form is None:
        if form_of(value.upper()) is not None:
            return "an INE is written in upper case"
        return (
            "not an INE: expected 10 digits and a letter (BEA), 9 digits and 2 letters (RNIE), "
            "4 digits, A, 5 digits and a letter (apprentice), or EQ-… (equivalent id)"
        )
    if form is IneForm.BEA and BEA_LETTERS[int(value[:10]) % 23] != value[10]:
        return "the INE's check letter does not match its number"
    return None
