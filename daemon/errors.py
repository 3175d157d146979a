"""The vault's error vocabulary: one root, and the refusals a client can act on.

Every refusal maps, in one place (``daemon.http.problems``), to an RFC 9457 problem
document: :class:`InvalidEntry` to 422 with one ``errors`` item per field (RFC 6901 JSON
Pointer), :class:`Refused` to its own problem ``type`` and status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PROBLEM_BASE: Final = "urn:horodate:problem:"  # RFC 9457 §3.1.1: a URI naming the problem


class VaultError(Exception):
    """Root of every error raised by ``daemon``."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One thing wrong with the input, at an RFC 6901 JSON Pointer (``""`` = the whole)."""

    pointer: str
    detail: str


class InvalidEntry(VaultError):
    """The body is not a valid entry: every field error found, not only the first."""

    def __init__(self, errors: list[FieldError] | tuple[FieldError, ...]) -> None:
        self.errors = tuple(errors)
        first = self.errors[0] if self.errors else FieldError("", "invalid")
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(f"{first.pointer or '/'}: {first.detail}{more}")


class Refused(VaultError):
    """A rule of the domain refuses the entry (a signature for a moved session, outside its
    signing window, a correction of an unknown entry…). ``code`` names the rule: it becomes
    the problem ``type`` (``urn:horodate:problem:<code>``)."""

    def __init__(self, code: str, title: str, detail: str, *, status: int = 422) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.title = title
        self.detail = detail
        self.status = status

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.code
