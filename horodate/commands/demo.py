"""``horodate demo``: the whole chain on simulated hardware, narrated.

A simulated GPS (NMEA into a pseudo-terminal), NTP server (loopback UDP) and DS3231 (an I2C
register model) are read by the real drivers; the appliance cross-checks them and serves
RFC 3161 tokens over HTTP; the vault seals a simulated school's morning of attendance with
them (:mod:`horodate.school`), each token checked by ``openssl ts -verify``. Faults are
injected on a schedule to show the appliance refusing rather than lying — the vault keeps
accepting, unsealed, and seals the backlog when tokens come back — and at the end
``horodate vault verify`` checks everything the vault holds.

``--data-dir D`` keeps it all: the appliance's data in ``D/appliance``, the vault's in
``D/vault``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
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

    from appliance.config import ApplianceConfig, ConfigError, parse_listen
    from appliance.http.listening import bind_public, listening
    from appliance.runtime.assembly import build_app

    out = Narrator()
    try:
        host, port = parse_listen(args.listen)
    except ConfigError as e:
        print(f"horodate demo: {e}", file=sys.stderr)
        return 2
    temporary = args.data_dir is None
    root = Path(tempfile.mkdtemp(prefix="horodate-demo-")) if temporary else args.data_dir
    data_dir = root / "appliance"
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
    verified = 1
    try:
        async with listening(app, public) as where, ClientSession() as http:
            url = f"http://{where.host}:{where.port}"
            out.say(f"appliance listening on {url}  (try: horodate status --url {url})")
            async with demo_vault(
                root / "vault", f"{url}/tsa", data_dir / "keys" / "ca.pem"
            ) as vault:
                out.say(f"vault listening on {vault.url}/v1/ (data in {root / 'vault'})")
                await _story(out, http, url, vault, deadline, args.no_faults, stats)
        verified = _verify_vault(out, root / "vault")
    finally:
        public.close()
        out.say(
            f"stopped: {stats['granted']} entries sealed, {stats['refused']} refused or pending"
            + ("" if temporary else f"; everything kept in {root}")
        )
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    return verified


async def _story(
    out: Narrator,
    http: Any,
    url: str,
    vault: DemoVault,
    deadline: float | None,
    no_faults: bool,
    stats: dict[str, int],
) -> None:
    from horodate.school import School

    def time_left() -> bool:
        return deadline is None or time.monotonic() < deadline

    last_key: tuple[Any, ...] = ()
    last_print = time.monotonic() - 10  # the first table 5 s in, once sources are heard
    issuing_since: float | None = None
    acts = [] if no_faults else list(SCRIPT)
    school: School | None = None
    phase = "before"
    try:
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
                if school is None:
                    school = School(http, vault.url, vault.token, out.say, vault.ca)
                    await school.morning()
                    phase = "morning"
                if acts and now - issuing_since >= acts[0].after_s:
                    act = acts.pop(0)
                    await http.post(f"{url}/sim/faults", json=act.faults)
                    out.say(f"FAULT: {act.says}  (POST /sim/faults {json.dumps(act.faults)})")
                if phase == "morning" and not doc.get("issuing"):
                    out.say("school: the appliance refuses tokens; the vault still accepts entries")
                    await school.during_outage()
                    phase = "outage"
                elif phase == "outage" and doc.get("issuing"):
                    pending = await school.pending()
                    if not pending:
                        out.say("the TSA answers again: the vault sealed its backlog, oldest first")
                        phase = "sealed"
            await asyncio.sleep(1.0 if time_left() else 0)
    finally:
        if school is not None:
            pending = await school.pending()
            stats["granted"] = len(school.receipts) - len(pending)
            stats["refused"] = len(school.refused) + len(pending)
            if pending:
                out.say(
                    f"still waiting for their seal: entries {pending} (the vault seals them later)"
                )


@dataclass(frozen=True)
class DemoVault:
    url: str
    token: str
    ca: Path


@contextlib.asynccontextmanager
async def demo_vault(data_dir: Path, tsa_url: str, ca: Path) -> AsyncIterator[DemoVault]:
    """The vault on a free loopback port, sealing with the demo's appliance, and a token
    for the school's establishment (as `horodate vault keys create` makes one)."""
    from aiohttp import web

    from daemon.clock import utc_now, utc_text
    from daemon.http.app import create_app
    from daemon.keys import new_token, token_hash
    from daemon.store import TokenRow
    from daemon.vault import Vault, VaultConfig
    from horodate.school import ESTABLISHMENT
    from timestamping.aio_client import AsyncTsaClient

    config = VaultConfig(
        data_dir=data_dir, tsa_urls=(tsa_url,), tsa_ca=ca, checkpoint_interval_s=2.0
    )
    async with AsyncTsaClient(config.tsa_urls, ca.read_bytes()) as tsa:
        vault = Vault(config, tsa=tsa)
        token = new_token()
        with vault.store.transaction() as w:
            w.add_api_token(
                TokenRow(
                    token_hash(token),
                    "establishment",
                    ESTABLISHMENT,
                    "demo school",
                    utc_text(utc_now()),
                )
            )
        runner = web.AppRunner(create_app(vault), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield DemoVault(url=f"http://127.0.0.1:{port}", token=token, ca=ca)
        finally:
            await runner.cleanup()


def _verify_vault(out: Narrator, data_dir: Path) -> int:
    """`horodate vault verify --data-dir D/vault`, as an operator would run it."""
    from horodate.commands.vault_verify import run as verify

    out.say(f"horodate vault verify --data-dir {data_dir}")
    code = verify(
        argparse.Namespace(
            data_dir=data_dir, tsa_ca=None, json=False, witness_vkey=None, witness_quorum=None
        )
    )
    out.say(
        "vault verify: PASSED — every leaf, node, checkpoint, token and journal record checks"
        if code == 0
        else "vault verify: FAILED"
    )
    return code


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


__all__: list[str] = ["register", "run"]
