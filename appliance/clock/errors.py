"""The one exception root of the clock ensemble."""

from __future__ import annotations


class ClockError(Exception):
    """The clock ensemble cannot do what was asked (bad policy, call out of order…)."""


class PolicyError(ClockError):
    """A policy value is out of range or inconsistent; the message names the field."""


class TimeNotAvailable(ClockError):
    """The ensemble cannot prove what time it is: the TSA answers ``timeNotAvailable``.

    ``reason`` says why in plain words (RFC 3161 §2.4.2 failInfo ``timeNotAvailable``).
    """

    def __init__(self, reason: str, state: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.state = state
