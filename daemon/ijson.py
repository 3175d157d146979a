"""Strict I-JSON (RFC 7493) parsing of request bodies, under a size and a depth cap.

The stdlib parser accepts what I-JSON refuses — duplicate member names (the last wins,
silently: two parsers could read two different entries from one body), ``NaN`` and
``Infinity``, numbers beyond IEEE 754 doubles, lone surrogates — so each is refused here,
with a message a client can act on, before anything reads the value.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from daemon.errors import FieldError, InvalidEntry, VaultError

MAX_BODY_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 32
_BOM: Final = b"\xef\xbb\xbf"


class BodyTooLarge(VaultError):
    """The body is larger than the cap (HTTP 413)."""


class _Duplicate(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise _Duplicate(name)  # RFC 7493 §2.3: member names MUST be unique
        out[name] = value
    return out


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 7493 §2.2)")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")  # RFC 6901 §3


def _walk(value: Any, pointer: str, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise InvalidEntry([FieldError(pointer, f"nested deeper than {max_depth} levels")])
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEntry(
                [FieldError(pointer, "a string holds a lone surrogate (RFC 7493 §2.1)")]
            ) from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEntry(
                [FieldError(pointer, "a number beyond IEEE 754 double range (RFC 7493 §2.2)")]
            )
    elif isinstance(value, dict):
        for name, item in value.items():
            _walk(name, pointer, depth + 1, max_depth)
            _walk(item, f"{pointer}/{_escape(name)}", depth + 1, max_depth)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _walk(item, f"{pointer}/{n}", depth + 1, max_depth)


def parse(body: bytes, *, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``body``; :class:`InvalidEntry` (422) or :class:`BodyTooLarge`."""
    if len(body) > max_bytes:
        raise BodyTooLarge(f"the body is {len(body)} bytes; the cap is {max_bytes}")
    if body.startswith(_BOM):
        raise InvalidEntry(
            [FieldError("", "the body starts with a byte order mark (RFC 8259 §8.1)")]
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidEntry([FieldError("", f"the body is not UTF-8 (byte {e.start})")]) from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except _Duplicate as e:
        raise InvalidEntry(
            [FieldError("", f"duplicate member name {e.name!r} (RFC 7493 §2.3)")]
        ) from None
    except RecursionError:
        raise InvalidEntry([FieldError("", f"nested deeper than {max_depth} levels")]) from None
    except ValueError as e:
        raise InvalidEntry([FieldError("", f"not JSON: {e}")]) from None
    _walk(value, "", 0, max_depth)
    return value
