"""Every issuance log of a data directory, read together: for an audit or an operator.

An appliance with worker processes keeps one log per process (``issued.log``,
``issued-w1.log``, …; ADR 0007). :func:`log_paths` finds them, :func:`merged` reads them as
one sequence in genTime order, and :func:`check` verifies what the design promises:

- every record is whole and its CRC matches (a torn tail, the trace of a crash in the
  middle of a write that was never acknowledged, is reported, not counted as damage);
- within a log, genTime never goes back, and the counter part of the serial number always
  goes up for the same instance (ADR 0005: a process hands its counters out in order, and a
  restart resumes above every counter an earlier run reserved);
- no two logs share an instance id, so no serial number can be in two logs.

Memory does not grow with the logs: nothing is kept per record.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from appliance.issuance.log import IssuanceLogError, Issued, ScanEnd, read_log
from appliance.issuance.serials import split_serial

_LOG_NAME: Final = re.compile(r"issued(-w\d+)?\.log\Z")


_MAX_PROBLEMS_PER_LOG: Final = 20  # then only counted: one damaged log can hold millions


PROGRESS_EVERY: Final = 1 << 16  # records between two progress calls


@dataclass(frozen=True, slots=True)
class Entry:
    """One record and the log (file name) it came from."""

    log: str
    record: Issued


def log_paths(data_dir: Path) -> list[Path]:
    """The issuance logs in ``data_dir``: ``issued.log``, then the workers' in number order."""
    found = [p for p in data_dir.iterdir() if _LOG_NAME.match(p.name) and p.is_file()]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def merged(paths: Iterable[Path]) -> Iterator[Entry]:
    """The records of every log as one sequence in genTime order (each log already is).

    Raises :class:`IssuanceLogError` where a log cannot be read or is damaged."""
    streams = [_entries(path) for path in paths]
    return heapq.merge(*streams, key=lambda entry: entry.record.gen_time_ns)


def _entries(path: Path) -> Iterator[Entry]:
    name = path.name
    for rec in read_log(path):
        yield Entry(name, rec)


@dataclass(slots=True)
class LogReport:
    """What :func:`check` found in one log."""

    path: Path
    records: int = 0
    first_ns: int | None = None  # genTime of the first and last records
    last_ns: int | None = None
    instances: set[int] = field(default_factory=set)  # serial instance ids seen
    torn_bytes: int = 0  # a torn last record, ignored
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0  # beyond the first _MAX_PROBLEMS_PER_LOG

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS_PER_LOG:
            self.problems.append(text)
        else:
            self.more_problems += 1


@dataclass(slots=True)
class CheckReport:
    logs: list[LogReport]
    problems: list[str]  # between logs

    @property
    def ok(self) -> bool:
        return not self.problems and all(log.ok for log in self.logs)

    @property
    def records(self) -> int:
        return sum(log.records for log in self.logs)


def check(paths: Iterable[Path], progress: Callable[[str, int], None] | None = None) -> CheckReport:
    """Read every record of every log and check it (see the module's docstring).

    ``progress(log_name, records_so_far)`` is called every :data:`PROGRESS_EVERY` records.
    """
    logs = [_check_log(path, progress) for path in paths]
    problems: list[str] = []
    owner: dict[int, str] = {}
    for report in logs:
        for instance in sorted(report.instances):
            if instance in owner:
                problems.append(
                    f"{owner[instance]} and {report.path.name} share serial instance "
                    f"{instance:016x}: one serial state was copied to another process or "
                    "appliance, and their serial numbers are unique only by their run tags"
                )
            else:
                owner[instance] = report.path.name
    return CheckReport(logs=logs, problems=problems)


def _check_log(path: Path, progress: Callable[[str, int], None] | None) -> LogReport:
    report = LogReport(path)
    end = ScanEnd()
    last_gen: int | None = None
    last_counter: dict[int, tuple[int, int]] = {}  # instance → (counter, serial)
    try:
        for rec in read_log(path, end=end):
            n = report.records = report.records + 1
            gen = rec.gen_time_ns
            if report.first_ns is None:
                report.first_ns = gen
            if last_gen is not None and gen < last_gen:
                report.problem(
                    f"record #{n} (serial {rec.serial:#x}): genTime goes back "
                    f"{(last_gen - gen) / 1e9:.6f} s"
                )
            last_gen = gen
            report.last_ns = max(gen, report.last_ns or 0)
            instance, _, counter = split_serial(rec.serial)
            report.instances.add(instance)
            previous = last_counter.get(instance)
            if previous is not None and counter <= previous[0]:
                what = "repeats" if rec.serial == previous[1] else "does not go up from"
                report.problem(
                    f"record #{n}: serial {rec.serial:#x} {what} serial {previous[1]:#x}"
                )
            last_counter[instance] = (counter, rec.serial)
            if progress is not None and n % PROGRESS_EVERY == 0:
                progress(path.name, n)
    except IssuanceLogError as e:
        report.problem(str(e))
    report.torn_bytes = end.torn_bytes
    return report
