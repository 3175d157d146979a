"""The host's raw monotonic timescale, the only local clock Horodate measures against.

``CLOCK_MONOTONIC_RAW`` is never stepped nor slewed (not by an NTP daemon, an operator or a
test), so evidence tied to it cannot be corrupted by someone adjusting the system clock.
Read it here, at the edge, and pass the value in everywhere else.
"""

import time

NS_PER_S = 1_000_000_000


def mono_ns() -> int:
    """Now, on ``CLOCK_MONOTONIC_RAW``, in nanoseconds."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)


def realtime_ns() -> int:
    """Now, on the host's ``CLOCK_REALTIME`` (POSIX UTC), in nanoseconds.

    Used only by the simulator (whose truth is the host clock) and to map kernel
    timestamps that come in real time (PPS) onto the raw monotonic timescale.
    """
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


def paired_ns() -> tuple[int, int]:
    """A (monotonic raw, realtime) pair read as close together as Python allows.

    Reads realtime between two monotonic reads and keeps the midpoint, so the pairing
    error is at most half the (tiny) gap between the two monotonic reads.
    """
    m0 = mono_ns()
    r = realtime_ns()
    m1 = mono_ns()
    return (m0 + m1) // 2, r
