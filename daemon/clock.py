"""The vault's reading of the host clock, and the one text form of a time it stores.

The vault does not prove time — its tokens do. It reads the host clock once per request
(:func:`utc_now`, at the edge, STYLE.md) for what it records as *received at*, and passes
that ``now`` down to the pure rules.
"""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def utc_text(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds and ``Z``: fixed width, so it sorts as text."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """The inverse of :func:`utc_text` (and any RFC 3339 time with an offset)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
