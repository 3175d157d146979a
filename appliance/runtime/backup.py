"""The appliance's half of ``horodate appliance backup`` and ``restore``: which files of its
data directory are its state, how to copy a live issuance log, what a copy must pass, and
what a restore must renew.

The data directory (``appliance.runtime.assembly``): ``issued.log`` and each worker's
``issued-wN.log`` (ADR 0007), ``serials.state`` and ``serials-wN.state``, ``keys/`` (the
TSA key, its certificate and chain; with ``--simulate`` the development CA too). Lock files
(``*.lock``) are not state.

- **A live issuance log** is appended by ``pwrite`` into zeros reserved ahead
  (``appliance.issuance.log``). A copy taken meanwhile may end in a record half-written, or
  (rarely: one ``pwrite`` is not atomic for a reader) hold a record not yet whole before
  one that is. :func:`log_extent` tells the first case (the copy is then cut at the end of
  the last whole record: a record not yet durable was never acknowledged) from the second
  (:class:`IssuanceLogCorrupt`: copy again).
- **The serial state is never restored as it was** (ADR 0005): the backup is older than the
  appliance it replaces, which went on issuing; resuming at the backup's high-water mark
  would hand out counters again, unique only by the run tag. :func:`renew_serial_states`
  gives each restored state a new random instance id instead, so that the restored
  appliance's serial numbers cannot meet any the lost one issued.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from appliance.config import ApplianceConfig
from appliance.issuance.issued import check, log_paths
from appliance.issuance.log import ScanEnd, read_log
from appliance.issuance.serials import SerialAllocator, SerialError, SerialState
from appliance.runtime.assembly import key_paths
from appliance.tsa.credentials import load_credentials
from appliance.tsa.errors import TsaError

_STATE_NAME: Final = re.compile(r"serials(-w\d+)?\.state\Z")
_STATE_MAX_BYTES: Final = 4096


@dataclass(slots=True)
class ApplianceCheck:
    """What :func:`check_copy` found: lines for the operator, the first failure, notes."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failure: str | None = None
    records: int = 0  # in every issuance log

    @property
    def ok(self) -> bool:
        return self.failure is None


def serial_state_paths(data_dir: Path) -> list[Path]:
    """``serials.state``, then the workers' ``serials-wN.state``, in number order."""
    found = [p for p in data_dir.iterdir() if _STATE_NAME.match(p.name) and p.is_file()]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def state_files(data_dir: Path) -> list[Path]:
    """The files of the appliance's state, in the order a backup copies them: the issuance
    logs first, then the serial states (so that each state's high-water mark is above
    every counter of the log copied before it)."""
    return [*log_paths(data_dir), *serial_state_paths(data_dir)]


def lock_files(data_dir: Path) -> list[Path]:
    """What a running appliance holds an ``flock`` on: each issuance log, each serial
    state's ``.lock`` (``SerialAllocator``)."""
    if not data_dir.is_dir():
        return []
    states = [p.with_name(p.name + ".lock") for p in serial_state_paths(data_dir)]
    return [*log_paths(data_dir), *(p for p in states if p.exists())]


def log_extent(path: Path) -> tuple[int, int]:
    """(records, end of the last whole record) of an issuance log copy; a torn tail is
    outside the extent. Raises :class:`IssuanceLogError` (:class:`IssuanceLogCorrupt` for a
    bad record followed by a good one)."""
    end = ScanEnd()
    records = sum(1 for _ in read_log(path, end=end))
    return records, end.valid_end


def check_copy(copy_dir: Path, *, now: dt.datetime) -> ApplianceCheck:
    """Every issuance log checks (``horodate issued --check``), every serial state reads,
    and the TSA key and certificates load as the appliance would load them at ``now``."""
    result = ApplianceCheck()
    logs = log_paths(copy_dir)
    report = check(logs)
    for log in report.logs:
        if not log.ok:
            result.failure = f"{log.path.name}: {log.problems[0]}"
            return result
    if report.problems:
        result.failure = report.problems[0]
        return result
    result.records = report.records
    result.lines.append(
        f"issuance logs: {len(logs)} log(s), {report.records:,} records, whole, genTime "
        "never going back, serial numbers unique"
    )
    states = serial_state_paths(copy_dir)
    for path in states:
        try:
            state = _read_state(path)
        except SerialError as e:
            result.failure = str(e)
            return result
        result.lines.append(
            f"{path.name}: instance {state.instance_id:016x}, high-water mark "
            f"{state.next_counter:,}"
        )
    if logs and not states:
        result.failure = "issuance logs without a serial state"
        return result
    paths = key_paths(ApplianceConfig(data_dir=copy_dir))
    if not paths.key.exists():
        result.warnings.append(
            f"no TSA key at {paths.key.relative_to(copy_dir)}: keep the configured key's own "
            "backup (it lives outside the data directory)"
        )
        return result
    chain = paths.chain if paths.chain is not None and paths.chain.exists() else None
    try:
        creds = load_credentials(paths.key, paths.cert, chain, now=now)
    except TsaError as e:
        result.failure = f"the TSA credentials do not load: {e}"
        return result
    result.lines.append(
        f"TSA key and certificate '{creds.certificate.subject.rfc4514_string()}': they "
        f"match, valid until {creds.certificate.not_valid_after_utc:%Y-%m-%d}"
    )
    return result


def renew_serial_states(data_dir: Path) -> list[tuple[str, int, int]]:
    """Replace each serial state of a restored data directory by a new one (a new random
    instance id, counters from 1): ``(file name, old instance, new instance)`` for each."""
    renewed = []
    for path in serial_state_paths(data_dir):
        old = _read_state(path).instance_id
        path.unlink()
        with SerialAllocator.init(path) as allocator:
            renewed.append((path.name, old, allocator.instance_id))
    return renewed


def _read_state(path: Path) -> SerialState:
    try:
        data = path.read_bytes()[: _STATE_MAX_BYTES + 1]
    except OSError as e:
        raise SerialError(f"cannot read serial state {path}: {e.strerror or e}") from e
    return SerialState.decode(data, source=f"serial state {path.name}")
