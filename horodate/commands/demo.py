"""``horodate demo``: the whole chain on simulated hardware, narrated.

A simulated GPS (NMEA into a pseudo-terminal), NTP server (loopback UDP) and DS3231 (an I2C
register model) are read by the real drivers; the appliance cross-checks them and serves
RFC 3161 tokens over HTTP; sample attendance sign-offs are stamped and each token is checked
by ``openssl ts -verify``. Faults are injected on a schedule to show the appliance refusing
rather than lying, and recovering.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from horodate.commands.status import render


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole chain on simulated hardware",
        description="Run the simulated GPS, NTP server and DS3231, the appliance reading "
        "them through the real drivers, and a client stamping sample attendance records; "
        "inject faults on a schedule and narrate what happens.",
    )
    p.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    p.add_argument(
        "--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="default: a free port"
    )
    p.add_argument("--data-dir", type=Path, help="keep keys and logs here (default: temporary)")
    p.add_argument("--no-faults", action="store_true", help="do not inject faults")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Act:
    """One scheduled fault injection, seconds after the clock first issues."""

    after_s: float
    faults: dict[str, Any]
    says: str


SCRIPT = (
    Act(
        12,
        {"gps": {"offset_s": 2.5}, "ntp": {"offset_s": 2.5}},
        "GPS and NTP jump 2.5 s together — an alarm, not a new truth",
    ),
    Act(22, {}, "faults cleared — the evidence reconverges"),
    Act(
        32,
        {"gps": {"fix": False}, "rtc": {"lost_power": True}},
        "GPS loses its fix, the RTC its power — NTP alone: holdover",
    ),
    Act(42, {}, "faults cleared"),
)

RECORDS = (
    ("0750001A", "2026-11-28 09:00 Maths 3B", "T-017", "123456789AB", "present, signed"),
    ("0750001A", "2026-11-28 09:00 Maths 3B", "T-017", "223456789BC", "late 09:12, signed"),
    ("0750001A", "2026-11-28 10:00 Physique 1S", "T-042", "323456789CD", "absent"),
    ("0690042K", "2026-11-28 14:00 Anglais BTS", "T-003", "423456789DE", "present, signed"),
)


class Narrator:
    def __init__(self, stream: Any = sys.stdout) -> None:
        self._t0 = time.monotonic()
        self._stream = stream

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self._t0:6.1f}s] {text}", file=self._stream, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 0


async def _demo(args: argparse.Namespace) -> int:
    from aiohttp import ClientSession

    from appliance.bootstrap import build_app
    from appliance.config import ApplianceConfig, ConfigError, parse_listen
    from appliance.serving import bind_public, listening

    out = Narrator()
    try:
        host, port = parse_listen(args.listen)
    except ConfigError as e:
        print(f"horodate demo: {e}", file=sys.stderr)
        return 2
    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="horodate-demo-")) if temporary else args.data_dir
    config = ApplianceConfig(simulate=True, data_dir=data_dir, listen_host=host, listen_port=port)

    out.say("starting simulated hardware: GPS → pty, NTP → loopback UDP, DS3231 → I2C model")
    app = build_app(config)
    try:
        public = bind_public(host, port)
    except OSError as e:
        print(f"horodate demo: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    stats = {"granted": 0, "refused": 0}
    try:
        async with listening(app, public) as where, ClientSession() as http:
            url = f"http://{where.host}:{where.port}"
            out.say(f"appliance listening on {url}  (try: horodate status --url {url})")
            await _story(out, http, url, data_dir, deadline, args.no_faults, stats)
    finally:
        public.close()
        out.say(
            f"stopped: {stats['granted']} tokens granted, {stats['refused']} refused"
            + ("" if temporary else f"; keys and issuance log kept in {data_dir}")
        )
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


async def _story(
    out: Narrator,
    http: Any,
    url: str,
    data_dir: Path,
    deadline: float | None,
    no_faults: bool,
    stats: dict[str, int],
) -> None:
    def time_left() -> bool:
        return deadline is None or time.monotonic() < deadline

    last_key: tuple[Any, ...] = ()
    last_print = time.monotonic() - 10  # the first table 5 s in, once sources are heard
    issuing_since: float | None = None
    acts = [] if no_faults else list(SCRIPT)
    record_index = 0
    next_stamp = 0.0
    while time_left():
        doc = await _health(http, url)
        now = time.monotonic()
        # A line when the verdict, the state or a source's status changes; every 15 s the
        # whole table a technician would see (`horodate status`).
        key = (doc.get("issuing"), doc.get("state"), *(s["status"] for s in doc["sources"]))
        if key != last_key:
            out.say(_summary(doc))
            last_key = key
        if now - last_print >= 15:
            out.say("horodate status:\n" + textwrap.indent(render(doc), "    "))
            last_print = now
        if doc.get("issuing") and issuing_since is None:
            issuing_since = now
            out.say("the clock can prove the time: tokens are issued from now on")
        if issuing_since is not None:
            if acts and now - issuing_since >= acts[0].after_s:
                act = acts.pop(0)
                await http.post(f"{url}/sim/faults", json=act.faults)
                out.say(f"FAULT: {act.says}  (POST /sim/faults {json.dumps(act.faults)})")
            if now >= next_stamp:
                await _stamp(out, http, url, data_dir, RECORDS[record_index % len(RECORDS)], stats)
                record_index += 1
                next_stamp = now + 5.0
        await asyncio.sleep(1.0 if time_left() else 0)


async def _health(http: Any, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/health") as resp:
        result: dict[str, Any] = await resp.json()
        return result


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} µs"


def _summary(doc: dict[str, Any]) -> str:
    verdict = "ISSUING" if doc.get("issuing") else "NOT ISSUING"
    parts = [f"{verdict}: clock {doc.get('state')} ±{_ms(doc.get('bound_s'))}"]
    if doc.get("reason"):
        parts.append(f"({doc['reason']})")
    sources = ", ".join(f"{s['name']} {s['status']}" for s in doc.get("sources", []))
    return " ".join(parts) + f" | {sources}"


async def _stamp(
    out: Narrator,
    http: Any,
    url: str,
    data_dir: Path,
    record: tuple[str, ...],
    stats: dict[str, int],
) -> None:
    from timestamping import Digest, build_request, describe_failure, parse_reply

    establishment, session, teacher, ine, what = record
    text = (
        f"establishment={establishment}; session={session}; teacher={teacher}; "
        f"student INE={ine}; {what}\n"
    ).encode()
    query = build_request(hashlib.sha256(text).digest(), digest=Digest.SHA256, nonce=None)
    async with http.post(
        f"{url}/tsa", data=query.der, headers={"Content-Type": "application/timestamp-query"}
    ) as resp:
        der = await resp.read()
    reply = parse_reply(der)
    label = f"{session} / {ine} ({what})"
    if not reply.granted or reply.info is None:
        stats["refused"] += 1
        out.say(f"  refused: {label}: {describe_failure(reply)}")
        return
    stats["granted"] += 1
    info = reply.info
    verdict = await asyncio.to_thread(_openssl_verify, data_dir, text, der)
    out.say(
        f"  token #{stats['granted']}: {label}\n"
        f"           genTime {info.gen_time_text} accuracy {info.accuracy} "
        f"serial {info.serial:#x}; openssl ts -verify: {verdict}"
    )


def _openssl_verify(data_dir: Path, data: bytes, der: bytes) -> str:
    ca = data_dir / "keys" / "ca.pem"
    if shutil.which("openssl") is None:
        return "openssl not installed"
    with tempfile.TemporaryDirectory() as tmp:
        d, r = Path(tmp) / "record.txt", Path(tmp) / "reply.tsr"
        d.write_bytes(data)
        r.write_bytes(der)
        done = subprocess.run(
            ["openssl", "ts", "-verify", "-data", d, "-in", r, "-CAfile", ca],
            capture_output=True,
            text=True,
            timeout=30,
        )
    return "OK" if "Verification: OK" in done.stdout else f"FAILED {done.stderr.strip()[-120:]}"


__all__: list[str] = ["register", "run"]
