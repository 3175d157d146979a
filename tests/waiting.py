"""Waiting in tests: on a condition, with a deadline, failing with what was awaited.

A test never decides by ``sleep(x)`` and then asserts: it polls the condition until it holds
or the deadline passes, so a slow machine makes it slower, never red, and a real failure
says what never happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

POLL_S = 0.01


def wait_until(
    predicate: Callable[[], object], deadline_s: float, what: str, *, poll_s: float = POLL_S
) -> None:
    """Return once ``predicate()`` is true; fail the test after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() >= end:
            pytest.fail(f"{what}: not within {deadline_s} s")
        time.sleep(poll_s)


async def eventually(
    predicate: Callable[[], object], deadline_s: float, what: str, *, poll_s: float = POLL_S
) -> None:
    """:func:`wait_until` in an event loop (the loop runs while it waits)."""
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() >= end:
            pytest.fail(f"{what}: not within {deadline_s} s")
        await asyncio.sleep(poll_s)
