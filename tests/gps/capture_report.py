"""Per capture: what gpsd decoded, what Horodate's GPS driver trusts, and why they differ.

Run from the repository root: ``.venv/bin/python -m tests.gps.capture_report`` (add
``--markdown`` for the table in docs/gps.md). Seconds are compared whole: gpsd reports a
TPV per sentence (several per second), the driver one sample per receiver cycle.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import re
from pathlib import Path

from drivers.gps import GpsConfig, GpsSample, capture_reports, config_for_capture
from tests.gps.support import capture_paths, gpsd_reference, load

NS = 1_000_000_000
_TIME_FIELD = re.compile(rb"\$..(RMC|GGA|ZDA|GNS|GLL),([^*\r\n]*)")


def carriers(payload: bytes) -> dict[str, set[str]]:
    """hhmmss -> sentence types that carry it."""
    out: dict[str, set[str]] = collections.defaultdict(set)
    for m in _TIME_FIELD.finditer(payload):
        fields = m.group(2).split(b",")
        kind = m.group(1).decode()
        index = 4 if kind == "GLL" else 0
        if len(fields) > index and len(fields[index]) >= 6:
            out[fields[index][:6].decode("ascii", "replace")].add(kind)
    return out


def report(path: Path) -> tuple[str, int, int, int, collections.Counter[str]]:
    capture = load(path)
    ref = gpsd_reference(path)
    config = config_for_capture(capture, GpsConfig())
    samples = [r for r in capture_reports(capture, config) if isinstance(r, GpsSample)]
    trusted = {s.label_utc_ns // NS for s in samples if s.trusted}
    by_second: dict[int, GpsSample] = {}
    for s in samples:
        by_second.setdefault(s.label_utc_ns // NS, s)
    carried = carriers(capture.payload)
    gaps: collections.Counter[str] = collections.Counter()
    week = 1024 * 7 * 86400
    for second in sorted(ref.seconds):
        if second in trusted or second - week in trusted or second + week in trusted:
            continue
        sample = by_second.get(second) or by_second.get(second - week)
        if sample is not None:
            why = re.sub(r"\d{4}-\d\d-\d\d", "D", sample.reason.split("; ")[0])
            gaps[why] += 1
            continue
        hhmmss = dt.datetime.fromtimestamp(second, tz=dt.UTC).strftime("%H%M%S")
        kinds = "/".join(sorted(carried.get(hhmmss, set()))) or "no sentence we read"
        if kinds in ("GGA", "GLL", "GGA/GLL"):
            gaps[f"only {kinds} carries it: no date in the cycle"] += 1
        else:
            gaps[f"{kinds}: not a cycle's first label, or its cycle was refused"] += 1
    return path.name, len(ref.seconds), len(trusted), len(samples), gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.markdown:
        print("| capture | gpsd seconds | samples | trusted | gpsd seconds not trusted, why |")
        print("|---|---:|---:|---:|---|")
    for path in capture_paths():
        name, gpsd_n, trusted_n, samples_n, gaps = report(path)
        why = "; ".join(f"{n}× {k}" for k, n in gaps.most_common())
        if args.markdown:
            print(f"| {name} | {gpsd_n} | {samples_n} | {trusted_n} | {why} |")
        else:
            print(f"{name:34} gpsd={gpsd_n:4} samples={samples_n:4} trusted={trusted_n:4}  {why}")


if __name__ == "__main__":
    main()
