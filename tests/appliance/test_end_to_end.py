"""The whole appliance on simulated hardware, through its production paths: the simulated
GPS writes NMEA into a pty read by pyserial, the simulated NTP server answers UDP packets,
the real adafruit driver reads the simulated DS3231, and the application assembled by
``build_app`` is served by ``listening`` as ``horodate appliance`` serves it (the fast lane on
a real TCP socket answers ``POST /tsa``, aiohttp behind it the rest). Faults go in through
``/sim/faults``; ``/health``, ``horodate status``, ``horodate stamp`` and ``horodate verify``
come out.

One story per test (the clock takes seconds of real time to settle), with deadlines.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ApplianceConfig
from appliance.runtime.assembly import build_app
from appliance.tsa import FailInfo
from horodate.cli import main as horodate
from timestamping import Digest, build_request, parse_reply

from .conftest import Served

pytestmark = pytest.mark.slow

TSQ = {"Content-Type": "application/timestamp-query"}


Health = dict[str, Any]


async def poll_health(
    client: Served, until: Callable[[int, Health], bool], *, deadline_s: float, what: str
) -> Health:
    """Poll /health until ``until(http_status, document)``, or fail with the last document."""
    end = time.monotonic() + deadline_s
    doc: Health = {}
    while time.monotonic() < end:
        resp = await client.get("/health")
        doc = await resp.json()
        if until(resp.status, doc):
            return doc
        await asyncio.sleep(0.5)
    pytest.fail(f"/health never showed {what} in {deadline_s} s; last: {doc}")


async def wait_for_health(
    client: Served, *, status: int, deadline_s: float, state: str | None = None
) -> Health:
    return await poll_health(
        client,
        lambda code, doc: code == status and state in (None, doc["state"]),
        deadline_s=deadline_s,
        what=f"HTTP {status} {state or ''}",
    )


async def wait_for_source(client: Served, prefix: str, status: str, deadline_s: float) -> Health:
    return await poll_health(
        client,
        lambda _, doc: source(doc, prefix)["status"] == status,
        deadline_s=deadline_s,
        what=f"{prefix} {status}",
    )


def source(doc: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(s for s in doc["sources"] if s["name"].startswith(prefix))


async def post_query(client: Served, data: bytes) -> Any:
    q = build_request(hashlib.sha256(data).digest(), digest=Digest.SHA256, nonce=7)
    resp = await client.post("/tsa", data=q.der, headers=TSQ)
    assert resp.status == 200
    assert resp.headers["Server"] == "Horodate"  # the fast lane's answer, as in production
    return parse_reply(await resp.read())


async def cli(*argv: str) -> int:
    """``horodate …`` in a thread: its blocking HTTP client talks to our event loop."""
    return await asyncio.to_thread(horodate, list(argv))


@pytest.fixture
async def appliance(serve: Any, tmp_path: Path) -> Served:
    config = ApplianceConfig(simulate=True, data_dir=tmp_path / "appliance")
    return await serve(build_app(config))


@pytest.mark.timeout(240)
async def test_faults_in_health_out_and_tokens_refused_then_resumed(
    appliance: Served, tmp_path: Path
) -> None:
    client = appliance
    url = client.url()
    ca = tmp_path / "appliance" / "keys" / "ca.pem"

    doc = await wait_for_health(client, status=200, deadline_s=60)
    assert doc["state"] == "synchronised"
    assert {"gps0", "ntp:sim"} <= {s["name"] for s in doc["sources"] if s["status"] == "selected"}
    assert await cli("status", "--url", url) == 0

    # Once synchronised, the DS3231 is set from the consensus and becomes evidence itself.
    doc = await wait_for_source(client, "rtc", "selected", 30)
    assert abs(source(doc, "rtc")["offset_s"]) <= doc["bound_s"]

    # A file stamped and verified with the command-line tools, against this appliance.
    record = tmp_path / "record.txt"
    record.write_bytes(b"2026-11-28 session 4 teacher T-17 student INE 123456789AB signed\n")
    tsr = tmp_path / "record.tsr"
    assert await cli("stamp", str(record), "--tsa", f"{url}/tsa", "-o", str(tsr)) == 0
    assert await cli("verify", str(record), str(tsr), "--ca", str(ca)) == 0
    first = await post_query(client, b"first")
    assert first.granted

    # GPS and NTP jump together by 2.5 s: an alarm, not a new truth.
    resp = await client.post(
        "/sim/faults", json={"gps": {"offset_s": 2.5}, "ntp": {"offset_s": 2.5}}
    )
    assert resp.status == 200
    doc = await wait_for_health(client, status=503, state="alarm", deadline_s=30)
    assert doc["issuing"] is False and "alarm" in doc["reason"]
    assert source(doc, "gps")["status"] == "alarm"
    refused = await post_query(client, b"during the alarm")
    assert not refused.granted
    assert refused.fail_info == frozenset({FailInfo.timeNotAvailable})
    assert await cli("status", "--url", url) == 1

    # Faults cleared: the evidence reconverges and tokens resume, genTime never going back.
    assert (await client.delete("/sim/faults")).status == 200
    await wait_for_health(client, status=200, state="synchronised", deadline_s=60)
    again = await post_query(client, b"after the alarm")
    assert again.granted and again.info is not None and first.info is not None
    assert again.info.gen_time >= first.info.gen_time
    assert again.info.serial != first.info.serial

    # The GPS loses its fix and the RTC its power: both are named, with the reason.
    await client.post("/sim/faults", json={"rtc": {"lost_power": True}, "gps": {"fix": False}})
    doc = await wait_for_source(client, "gps", "untrusted", 30)
    assert "fix" in source(doc, "gps")["reason"]
    # NTP alone is no quorum: the clock coasts in holdover, its bound still within 1 s.
    assert doc["state"] == "holdover" and doc["issuing"] is True and doc["bound_s"] < 1.0
    assert "2 independent sources are needed" in source(doc, "ntp")["reason"]
    await client.delete("/sim/faults")


@pytest.mark.timeout(120)
async def test_unknown_fault_is_refused_and_nothing_changes(appliance: Served) -> None:
    resp = await appliance.post("/sim/faults", json={"gps": {"offset": 5}})
    assert resp.status == 400
    assert "unknown fault 'offset'" in (await resp.json())["error"]
    assert await (await appliance.get("/sim/faults")).json() == {"gps": {}, "ntp": {}, "rtc": {}}


@pytest.mark.timeout(240)
async def test_a_lone_liar_is_named_and_outvoted(appliance: Served) -> None:
    """One source wrong at a time: the GPS 5 s off is a falseticker, an unsynchronised NTP
    server (LI=3) is named as such, a Kiss-o'-Death DENY stops the server; the clock keeps
    issuing where the evidence still allows it and says why where it does not."""
    client = appliance
    await wait_for_health(client, status=200, deadline_s=60)
    await wait_for_source(client, "rtc", "selected", 30)  # GPS, NTP and the RTC agree

    await client.post("/sim/faults", json={"gps": {"offset_s": 5.0}})
    doc = await wait_for_source(client, "gps", "falseticker", 30)
    assert doc["issuing"] is True  # NTP and the disciplined RTC carry on
    assert source(doc, "gps")["offset_s"] == pytest.approx(5.0, abs=0.5)
    reply = await post_query(client, b"while the GPS lies")
    assert reply.granted

    await client.post("/sim/faults", json={"ntp": {"unsynchronised": True}})
    doc = await wait_for_source(client, "ntp", "unsynchronised", 30)
    assert (
        "LI=3" in source(doc, "ntp")["reason"] or "unsynchronised" in source(doc, "ntp")["reason"]
    )

    # A Kiss-o'-Death DENY stops the driver asking that server (RFC 5905 §7.4): no more
    # samples, so only the driver can say why; /health shows it beside the clock's status.
    await client.post("/sim/faults", json={"ntp": {"kod": "DENY"}})
    doc = await poll_health(
        client, lambda _, d: bool(source(d, "ntp")["driver"]), deadline_s=30, what="ntp note"
    )
    assert "access denied" in source(doc, "ntp")["driver"]
    assert "no longer asked" in source(doc, "ntp")["driver"]
    await client.delete("/sim/faults")


@pytest.mark.timeout(180)
async def test_serial_cable_pulled_and_plugged_back(appliance: Served) -> None:
    """The simulated receiver's pty disappears (as a USB GPS unplugged): /health says the
    port is not open; plugged back, the same process reads it again."""
    from appliance.http.app_keys import WORLD

    client = appliance
    await wait_for_health(client, status=200, deadline_s=60)
    world = client.app[WORLD]
    world.gps.unplug()  # type: ignore[attr-defined]
    doc = await poll_health(
        client, lambda _, d: bool(source(d, "gps")["driver"]), deadline_s=30, what="gps note"
    )
    assert "not open" in source(doc, "gps")["driver"]
    world.gps.replug()  # type: ignore[attr-defined]
    doc = await poll_health(  # the driver's back-off is at most 30 s
        client,
        lambda _, d: (
            source(d, "gps")["driver"] is None
            and source(d, "gps")["status"] == "selected"
            and source(d, "gps")["age_s"] < 2
        ),
        deadline_s=60,
        what="gps read again, fresh, without a note",
    )
    assert source(doc, "gps")["driver"] is None
    assert source(doc, "gps")["status"] == "selected" and source(doc, "gps")["age_s"] < 2


@pytest.mark.timeout(180)
async def test_no_quorum_from_the_start_then_tokens_when_the_sources_recover(
    serve: Any, tmp_path: Path
) -> None:
    """Faulted before the first sample (GPS without a fix, the NTP server unsynchronised):
    no quorum, so every request is refused with timeNotAvailable; the faults cleared, tokens
    come."""
    from appliance.clock.timekeeper import Timekeeper
    from appliance.runtime.driver_threads import Appliance, build_sources, policy_for
    from drivers.sim.faults import Faults

    config = ApplianceConfig(simulate=True, data_dir=tmp_path / "appliance")
    sources = build_sources(config)
    assert sources.world is not None
    sources.world.set_faults(
        Faults.from_json({"gps": {"fix": False}, "ntp": {"unsynchronised": True}})
    )
    appliance = Appliance(config, sources, Timekeeper(policy_for(config)))
    client = await serve(build_app(config, appliance=appliance))

    # Both sources are heard (their samples arrive, untrusted) and the clock still refuses.
    doc = await poll_health(
        client,
        lambda _, d: (
            {s["name"]: s["status"] for s in d["sources"]}.items()
            >= {("gps0", "untrusted"), ("ntp:sim", "unsynchronised")}
        ),
        deadline_s=30,
        what="gps0 untrusted and ntp:sim unsynchronised",
    )
    statuses = {s["name"]: s["status"] for s in doc["sources"]}
    assert statuses.get("gps0") == "untrusted" and statuses.get("ntp:sim") == "unsynchronised"
    assert doc["issuing"] is False and doc["state"] == "starting"
    refused = await post_query(client, b"no quorum")
    assert refused.fail_info == frozenset({FailInfo.timeNotAvailable})
    assert refused.status_text and refused.status_text[0].strip()  # says why, in words
    assert doc["reason"]

    await client.delete("/sim/faults")
    await wait_for_health(client, status=200, deadline_s=60)
    granted = await post_query(client, b"quorum back")
    assert granted.granted
