"""``horodate issued``: the tokens the appliance granted, from every issuance log.

    horodate issued [--data-dir DIR | --config FILE] [--serial N] [--imprint HEX]
                    [--since TIME] [--until TIME] [--json]
    horodate issued --check [--data-dir DIR | --config FILE]
    horodate issued --tsr FILE.tsr [--data-dir DIR | --config FILE]

Lists the records of ``issued.log`` and every worker's ``issued-wN.log`` as one sequence in
genTime order, or answers an auditor's question: was a token with this serial number (as
``openssl ts -reply -text`` prints it) or for this message imprint issued here? ``--check``
reads every record and checks the logs' integrity (CRCs, genTime order, serial numbers).
``--tsr`` takes a time-stamp reply a client holds and says whether the logs recorded that
token: its serial, and the same genTime, accuracy, imprint and nonce.

Exit status: 0 records found / the logs check / the token is recorded as it says; 1 none
matched / a check failed / the token is not recorded, or recorded otherwise; 2 bad input
(no issuance log in the directory, a log that cannot be read, a file that is no token).
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_NONE = 1
EXIT_INPUT = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "issued",
        help="list, find and check the tokens recorded in the issuance logs",
        description="The records of every issuance log of the appliance's data directory "
        "(issued.log, issued-wN.log), merged in genTime order: serial, genTime, accuracy, "
        "message imprint, nonce. Exit status: 0 found or checked, 1 nothing matched or a "
        "check failed, 2 bad input.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", type=Path, help="the appliance's data directory")
    where.add_argument("--config", type=Path, help="take the data directory from this TOML")
    p.add_argument(
        "--serial", type=_serial, metavar="N", help="only this serial number (decimal or 0x…)"
    )
    p.add_argument("--imprint", type=_hex, metavar="HEX", help="only this message imprint")
    p.add_argument("--since", type=_time, metavar="TIME", help="genTime at or after (RFC 3339)")
    p.add_argument("--until", type=_time, metavar="TIME", help="genTime before (RFC 3339)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--check",
        action="store_true",
        help="read every record and check the logs instead of listing them",
    )
    what.add_argument(
        "--tsr",
        type=Path,
        metavar="FILE.tsr",
        help="is this token (an RFC 3161 reply) recorded, with the same genTime, accuracy, "
        "imprint and nonce?",
    )
    p.set_defaults(func=run)


def _serial(text: str) -> int:
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a serial number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a serial number is a positive integer")
    return value


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hexadecimal: {text!r}") from None


def _time(text: str) -> int:
    """RFC 3339 (or a date) → POSIX ns; a time without an offset is UTC."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an RFC 3339 time: {text!r} (e.g. 2026-11-28T09:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _err(message: str) -> None:
    print(f"horodate issued: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.issuance.issued import log_paths

    listing = [
        flag
        for flag, value in (
            ("--serial", args.serial),
            ("--imprint", args.imprint),
            ("--since", args.since),
            ("--until", args.until),
            ("--json", args.json or None),
        )
        if value is not None
    ]
    if listing and (args.check or args.tsr is not None):
        mode = "--check" if args.check else "--tsr"
        _err(f"{', '.join(listing)} choose what to list; not with {mode}")
        return EXIT_INPUT
    data_dir: Path = args.data_dir
    if data_dir is None:
        try:
            data_dir = load_config(args.config).data_dir
        except ConfigError as e:
            _err(str(e))
            return EXIT_INPUT
    try:
        paths = log_paths(data_dir)
    except OSError as e:
        _err(f"cannot read {data_dir}: {e.strerror or e}")
        return EXIT_INPUT
    if not paths:
        _err(f"no issuance log (issued.log, issued-wN.log) in {data_dir}")
        return EXIT_INPUT
    if args.check:
        return _check(paths)
    if args.tsr is not None:
        return _find_token(paths, args.tsr)
    return _list(paths, args)


# --- listing --------------------------------------------------------------------------------


def _list(paths: list[Path], args: argparse.Namespace) -> int:
    from appliance.issuance.issued import merged
    from appliance.issuance.log import IssuanceLogError

    shown = 0
    try:
        for entry in _matching(merged(paths), args):
            rec = entry.record
            if args.json:
                print(json.dumps(_as_json(entry.log, rec)))
            else:
                if shown == 0:
                    print(f"{'GENTIME':<27}  {'ACCURACY':>12}  {'SERIAL':<42}  LOG")
                print(
                    f"{_rfc3339(rec.gen_time_ns):<27}  {_accuracy(rec.accuracy_us):>12}  "
                    f"{rec.serial:#x}  {entry.log}\n"
                    f"{'':<27}  {rec.hash_algorithm}:{rec.message_imprint.hex()}"
                    + ("" if rec.nonce is None else f"  nonce {_nonce(rec.nonce)}")
                )
            shown += 1
    except IssuanceLogError as e:
        _err(str(e))
        return EXIT_INPUT
    except BrokenPipeError:  # `| head`
        sys.stderr.close()
        return EXIT_OK
    filtered = any(v is not None for v in (args.serial, args.imprint, args.since, args.until))
    if not shown and filtered:
        _err("no record matches")
        return EXIT_NONE
    if not args.json:
        print(f"{shown:,} record{'' if shown == 1 else 's'} from {len(paths)} log(s)")
    return EXIT_OK


def _matching(entries: Iterator[Any], args: argparse.Namespace) -> Iterator[Any]:
    for entry in entries:
        rec = entry.record
        if args.serial is not None and rec.serial != args.serial:
            continue
        if args.imprint is not None and rec.message_imprint != args.imprint:
            continue
        if args.since is not None and rec.gen_time_ns < args.since:
            continue
        if args.until is not None and rec.gen_time_ns >= args.until:
            continue  # not `break`: a damaged log may not be in order (--check says so)
        yield entry


def _as_json(log: str, rec: Any) -> dict[str, Any]:
    return {
        "log": log,
        "serial": f"{rec.serial:#x}",
        "gen_time": _rfc3339(rec.gen_time_ns),
        "gen_time_ns": rec.gen_time_ns,
        "accuracy_us": rec.accuracy_us,
        "hash": rec.hash_algorithm,
        "imprint": rec.message_imprint.hex(),
        "nonce": None if rec.nonce is None else str(rec.nonce),  # up to 512 bits
        "ensemble": rec.ensemble_state,
        "token_sha256": None if rec.token_sha256 is None else rec.token_sha256.hex(),
    }


def _rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac // 1000:06d}Z"


def _nonce(nonce: int | None) -> str | None:
    """In hexadecimal, as ``openssl ts -reply -text`` prints it."""
    return None if nonce is None else f"{nonce:#x}"


def _accuracy(us: int) -> str:
    if us >= 1_000_000:
        return f"±{us / 1e6:g} s"
    if us >= 1_000:
        return f"±{us / 1e3:g} ms"
    return f"±{us} µs"


# --- one token ------------------------------------------------------------------------------


def _find_token(paths: list[Path], tsr: Path) -> int:
    """Is the token in ``tsr`` recorded, and does its record say what the token says?"""
    from appliance.issuance.issued import merged
    from appliance.issuance.log import IssuanceLogError
    from timestamping import TimestampingError, parse_reply

    try:
        reply = parse_reply(tsr.read_bytes())
    except OSError as e:
        _err(f"cannot read {tsr}: {e.strerror or e}")
        return EXIT_INPUT
    except TimestampingError as e:
        _err(f"{tsr}: {e}")
        return EXIT_INPUT
    info = reply.info
    if info is None:
        _err(f"{tsr} holds no token (a refusal: {'; '.join(reply.status_text) or reply.status})")
        return EXIT_INPUT
    try:
        found = [e for e in merged(paths) if e.record.serial == info.serial]
    except IssuanceLogError as e:
        _err(str(e))
        return EXIT_INPUT
    if not found:
        print(f"serial {info.serial:#x} is in no issuance log: this appliance did not record it")
        return EXIT_NONE
    entry = found[0]
    rec = entry.record
    token_ns = calendar.timegm(info.gen_time.utctimetuple()) * 1_000_000_000 + (
        info.gen_time.microsecond * 1000
    )
    said = {
        "genTime": (_rfc3339(token_ns), _rfc3339(rec.gen_time_ns)),
        "accuracy": (
            None if info.accuracy is None else _accuracy(info.accuracy.total_us),
            _accuracy(rec.accuracy_us),
        ),
        "hash": (None if info.digest is None else info.digest.hashlib_name, rec.hash_algorithm),
        "imprint": (info.message_imprint.hex(), rec.message_imprint.hex()),
        "nonce": (_nonce(info.nonce), _nonce(rec.nonce)),
    }
    if rec.token_sha256 is not None and reply.token_der is not None:
        # ECDSA signs differently each time: only the very token issued has this hash
        said["token"] = (
            "sha256:" + hashlib.sha256(reply.token_der).hexdigest(),
            "sha256:" + rec.token_sha256.hex(),
        )
    differ = [name for name, (token, logged) in said.items() if token != logged]
    print(f"serial {info.serial:#x} is recorded in {entry.log}")
    for name, (token, logged) in said.items():
        mark = "  DIFFERS" if name in differ else ""
        shown = token if name in differ else logged
        print(f"  {name:<9} {shown}" + (f" (the log says {logged}){mark}" if mark else ""))
    if "token" not in said:
        print("  token     not pinned: this record keeps no hash of the token it was made for")
    if len(found) > 1:
        print(f"  and {len(found) - 1} more record(s) with the same serial: run --check")
        return EXIT_NONE
    if differ:
        print("the log does NOT say what the token says: keep both as they are and investigate")
        return EXIT_NONE
    print("the log says what the token says (its signature: `horodate verify`)")
    return EXIT_OK


# --- checking -------------------------------------------------------------------------------


def _check(paths: list[Path]) -> int:
    from appliance.issuance.issued import check

    live = sys.stderr.isatty()
    last = [0.0]

    def progress(log: str, records: int) -> None:
        now = time.monotonic()
        if live and now - last[0] >= 0.5:
            last[0] = now
            print(f"\rchecking {log}: {records:,} records", end="", file=sys.stderr, flush=True)

    report = check(paths, progress)
    if live and last[0]:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    for log in report.logs:
        span = (
            "empty"
            if log.first_ns is None or log.last_ns is None
            else f"{_rfc3339(log.first_ns)} … {_rfc3339(log.last_ns)}"
        )
        verdict = "ok" if log.ok else "DAMAGED"
        records = f"{log.records:,} record{'' if log.records == 1 else 's'}"
        print(f"{log.path.name:<16} {records:>17}  {span}  {verdict}")
        if log.torn_bytes:
            print(
                f"{'':<16} a torn last record ({log.torn_bytes} bytes) ignored: a write a "
                "crash cut short, or one in progress (the appliance running); never "
                "acknowledged"
            )
        for problem in log.problems:
            print(f"{'':<16} {problem}")
        if log.more_problems:
            print(f"{'':<16} … and {log.more_problems:,} more problems")
    for problem in report.problems:
        print(problem)
    if report.ok:
        print(
            f"all {len(report.logs)} log(s) check: {report.records:,} records, whole, genTime "
            "never going back, serial numbers unique"
        )
        return EXIT_OK
    print("the issuance logs do NOT check: keep a copy of the data directory as it is")
    return EXIT_NONE
