"""Leap seconds: the table of known ones, and the continuous count the ensemble works in.

POSIX time (what every source reports) repeats a second when a leap second is inserted and
skips one when it is deleted. The ensemble works internally on a *continuous* count, POSIX
plus one second per inserted leap already passed (minus one per deleted), so its model of
``θ = UTC − mono`` does not jump at a leap. Samples taken within the leap window are never
used as evidence, so the conversion is never asked about the ambiguous second itself.

A leap second is announced for the end of the current UTC month (RFC 5905 §7.3, LI bits;
the IERS schedules them at the end of June or December).
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from dataclasses import dataclass

from .errors import ClockError

NS_PER_S = 1_000_000_000
NTP_TO_POSIX_S = 2_208_988_800  # RFC 5905 §6: seconds from 1900-01-01 to 1970-01-01


@dataclass(frozen=True, slots=True, order=True)
class LeapSecond:
    """A leap second ending the UTC day before ``at_posix_s`` (the next day's midnight)."""

    at_posix_s: int
    insert: bool = True

    @property
    def delta_ns(self) -> int:
        return NS_PER_S if self.insert else -NS_PER_S


def next_month_start_s(posix_ns: int) -> int:
    """POSIX seconds of 00:00:00 UTC on the first day of the month after ``posix_ns``."""
    try:
        day = dt.datetime.fromtimestamp(posix_ns // NS_PER_S, tz=dt.UTC)
    except (OverflowError, OSError, ValueError) as e:
        raise ClockError(f"time {posix_ns} ns is out of range") from e
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return int(dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp())


def parse_leap_seconds_list(text: str) -> tuple[LeapSecond, ...]:
    """Leap seconds from the IERS/IETF ``leap-seconds.list`` text.

    Each data line is ``<NTP seconds> <TAI−UTC>``: from that instant TAI−UTC takes the new
    value; an increase is an inserted second, a decrease a deleted one. Comments start
    with ``#``. The first line (1972) sets the initial offset and is not a leap.
    """
    entries: list[tuple[int, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ClockError(f"leap-seconds list line {number}: expected two numbers")
        try:
            entries.append((int(parts[0]), int(parts[1])))
        except ValueError as e:
            raise ClockError(f"leap-seconds list line {number}: not a number") from e
    leaps: list[LeapSecond] = []
    for (_, before), (ntp_s, after) in itertools.pairwise(entries):
        if after == before:
            continue
        if abs(after - before) != 1:
            raise ClockError(f"leap-seconds list: TAI-UTC changes by {after - before} s")
        leaps.append(LeapSecond(at_posix_s=ntp_s - NTP_TO_POSIX_S, insert=after > before))
    return tuple(leaps)


class LeapTable:
    """Known leap seconds, and the POSIX ↔ continuous conversion they imply."""

    def __init__(self, leaps: tuple[LeapSecond, ...] = ()) -> None:
        self._leaps: list[LeapSecond] = []
        self._starts_ns: list[int] = []  # POSIX ns of each leap, sorted
        self._cumulative_ns: list[int] = []  # continuous − POSIX from each leap on
        for leap in leaps:
            self.add(leap)

    def add(self, leap: LeapSecond) -> bool:
        """Learn a leap second; False if it was already known."""
        if any(known.at_posix_s == leap.at_posix_s for known in self._leaps):
            return False
        self._leaps.append(leap)
        self._leaps.sort()
        self._starts_ns = [x.at_posix_s * NS_PER_S for x in self._leaps]
        total = 0
        self._cumulative_ns = []
        for x in self._leaps:
            total += x.delta_ns
            self._cumulative_ns.append(total)
        return True

    def __len__(self) -> int:
        return len(self._leaps)

    def to_continuous(self, posix_ns: int) -> int:
        i = bisect.bisect_right(self._starts_ns, posix_ns)
        return posix_ns + (self._cumulative_ns[i - 1] if i else 0)

    def to_posix(self, continuous_ns: int) -> int:
        # Walk back from the last leap whose continuous start is not after the instant.
        for i in range(len(self._leaps) - 1, -1, -1):
            if continuous_ns >= self._starts_ns[i] + self._cumulative_ns[i]:
                return continuous_ns - self._cumulative_ns[i]
        return continuous_ns

    def in_window(self, lo_posix_ns: int, hi_posix_ns: int, window_ns: int) -> LeapSecond | None:
        """A leap second whose window overlaps ``[lo, hi]``, if any."""
        i = bisect.bisect_left(self._starts_ns, lo_posix_ns - window_ns)
        if i < len(self._starts_ns) and self._starts_ns[i] - window_ns <= hi_posix_ns:
            return self._leaps[i]
        return None
