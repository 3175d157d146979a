"""The data directories: free space, and how long an fsync takes there.

Every token waits for its issuance-log record to be fsync'd (appliance/issuance/log.py):
the disk's fsync time is the floor of the TSA's latency. An SD card that has worn out
shows it here first.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from .findings import Finding, Host, Verdict

FREE_FAIL_BYTES = 64 * 1024 * 1024  # below this an issuance log may not last the day
FREE_WARN_BYTES = 1024 * 1024 * 1024
FREE_WARN_FRACTION = 0.05
# The issuance log counts a commit of 100 ms or more as slow (horodate status shows them).
FSYNC_WARN_S = 0.1
FSYNC_FAIL_S = 1.0
FSYNC_PROBES = 3  # the median of three small writes, each fsync'd
FSYNC_PROBE_BYTES = 4096


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    raise AssertionError


def check_space(host: Host, directory: str) -> Finding:
    name = "space"
    try:
        fs = os.statvfs(host.path(directory))
    except FileNotFoundError:
        return Finding(
            name,
            Verdict.FAIL,
            f"{directory} does not exist",
            ("sudo systemd-tmpfiles --create   # systemd/horodate.tmpfiles makes it",),
        )
    except OSError as e:
        return Finding(name, Verdict.SKIP, f"cannot look at {directory}: {e.strerror}")
    free = fs.f_bavail * fs.f_frsize
    total = fs.f_blocks * fs.f_frsize
    fraction = free / total if total else 0.0
    summary = f"{directory}: {_size(free)} free of {_size(total)} ({fraction:.0%})"
    fix = (
        "free space: `sudo journalctl --vacuum-size=200M`; move old issuance logs and "
        "backups off the card; or a larger disk for the data directory",
    )
    if free < FREE_FAIL_BYTES:
        return Finding(name, Verdict.FAIL, summary, fix)
    if free < FREE_WARN_BYTES or fraction < FREE_WARN_FRACTION:
        return Finding(name, Verdict.WARN, summary, fix)
    return Finding(name, Verdict.OK, summary)


def check_fsync(
    host: Host, directory: str, *, clock: Callable[[], float] = time.perf_counter
) -> Finding:
    """Write, fsync and remove a small file in ``directory``, ``FSYNC_PROBES`` times."""
    name = "fsync"
    located = host.path(directory)
    if not located.is_dir():
        return Finding(name, Verdict.SKIP, f"{directory} does not exist")
    durations: list[float] = []
    probe = located / f".horodate-doctor-{os.getpid()}"
    try:
        for _ in range(FSYNC_PROBES):
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"\0" * FSYNC_PROBE_BYTES)
                start = clock()
                os.fsync(fd)
                durations.append(clock() - start)
            finally:
                os.close(fd)
    except PermissionError:
        return Finding(
            name,
            Verdict.SKIP,
            f"cannot write in {directory} as this user: run `sudo horodate doctor`",
        )
    except OSError as e:
        return Finding(
            name, Verdict.FAIL, f"cannot write in {directory}: {e.strerror}", ("`dmesg | tail`",)
        )
    finally:
        probe.unlink(missing_ok=True)
    median = statistics.median(durations)
    summary = f"{directory}: {median * 1e3:.1f} ms per fsync (median of {len(durations)})"
    fix = (
        "a slow or worn SD card: put the data directory on an SSD over USB 3, "
        "or a high-endurance (A2) card",
    )
    if median >= FSYNC_FAIL_S:
        return Finding(name, Verdict.FAIL, summary, fix)
    if median >= FSYNC_WARN_S:
        return Finding(name, Verdict.WARN, summary, fix)
    return Finding(name, Verdict.OK, summary)
