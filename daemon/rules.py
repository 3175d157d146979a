"""The domain's rules: which entry the vault accepts, given what it knows of the session.

Pure: the latest state of the entry's session (:class:`SessionState`, per establishment and
session id, kept by the sequencer), the establishment's signing window, the time the vault
received the entry, and whether a correction's target exists. Each refusal is a
:class:`~daemon.errors.Refused` whose ``code`` is its problem type (DESIGN.md: "each
refusal of the domain … has its own problem type").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from daemon.errors import Refused
from daemon.records import SIGNATURE_KINDS, Entry, Kind


@dataclass(frozen=True, slots=True)
class SessionState:
    version: int
    start: dt.datetime
    end: dt.datetime
    cancelled: bool = False


def _window_words(window: dt.timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440} day(s)"
    if minutes % 60 == 0:
        return f"{minutes // 60} hour(s)"
    return f"{minutes} minute(s)"


def check(
    entry: Entry,
    *,
    state: SessionState | None,
    window: dt.timedelta,
    received_at: dt.datetime,
    correction_target_found: bool | None,
) -> None:
    """Raise :class:`Refused` when a rule refuses ``entry``; return when it may be appended."""
    s = entry.session
    kind = entry.kind
    if kind is Kind.CORRECTION:
        if correction_target_found is False:
            raise Refused(
                "unknown_entry",
                "Unknown entry",
                f"entry {entry.corrects} does not exist in establishment {entry.establishment}; "
                "a correction names an entry of its own establishment",
            )
        return
    if state is not None:
        if state.cancelled:
            raise Refused(
                "session_cancelled",
                "Session cancelled",
                f"session {s.id} was cancelled (version {state.version}); nothing more is "
                "recorded for it",
            )
        if kind is Kind.SESSION_MOVED:
            if s.version <= state.version:
                raise Refused(
                    "session_not_newer",
                    "Session version not newer",
                    f"session {s.id} is at version {state.version}; a move makes version "
                    f"{state.version + 1} or later, not {s.version}",
                )
            return
        if s.version < state.version:
            raise Refused(
                "session_moved",
                "Session moved",
                f"session {s.id} is at version {state.version} since it was moved; this entry is "
                f"for version {s.version}",
            )
        if s.version > state.version:
            raise Refused(
                "session_version_unknown",
                "Unknown session version",
                f"session {s.id} is at version {state.version}; version {s.version} was never "
                "announced by a session_moved entry",
            )
        if (s.start, s.end) != (state.start, state.end):
            raise Refused(
                "session_mismatch",
                "Session times differ",
                f"session {s.id} version {s.version} runs from {state.start.isoformat()} to "
                f"{state.end.isoformat()}; a change of times is a session_moved with a new version",
            )
    if kind in SIGNATURE_KINDS:
        start = state.start if state is not None else s.start
        end = state.end if state is not None else s.end
        opens, closes = start - window, end + window
        for what, moment in (
            ("it happened", entry.occurred_at),
            ("the vault received it", received_at),
        ):
            if not opens <= moment <= closes:
                raise Refused(
                    "outside_signing_window",
                    "Outside the signing window",
                    f"signing for session {s.id} is open from {opens.isoformat()} to "
                    f"{closes.isoformat()} (the session ± {_window_words(window)}); "
                    f"{what} at {moment.isoformat()}",
                )


def next_state(state: SessionState | None, entry: Entry) -> SessionState | None:
    """The session's state once ``entry`` is appended."""
    s = entry.session
    if entry.kind is Kind.CORRECTION:
        return state
    if entry.kind is Kind.SESSION_MOVED or state is None:
        return SessionState(s.version, s.start, s.end, entry.kind is Kind.SESSION_CANCELLED)
    if entry.kind is Kind.SESSION_CANCELLED:
        return SessionState(state.version, state.start, state.end, True)
    return state
