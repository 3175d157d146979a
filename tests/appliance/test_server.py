"""The appliance's HTTP interface (DESIGN.md): /tsa, /tsa/certs, /health, /metrics,
/sim/faults — served as in production (the fast lane on a real socket answers plain
``POST /tsa``, aiohttp the rest), on a timekeeper with a virtual clock.

Tokens are checked by the real verifiers (rfc3161-client and ``openssl ts -verify``), the
issuance log by reading it back.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import logging
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import appliance.http.app as server_module
from appliance.clock.timekeeper import Timekeeper
from appliance.http.app import create_app
from appliance.http.app_keys import ServerConfig
from appliance.http.health import health_document
from appliance.issuance.issuer import TsaService
from appliance.issuance.log import (
    COMMIT_BUCKETS_S,
    IssuanceLog,
    IssuanceLogError,
    decode_payload,
    read_log,
)
from appliance.tsa import FailInfo
from appliance.tsa.credentials import load_credentials
from appliance.tsa.dev_pki import init_dev_pki
from appliance.tsa.request import parse_request
from drivers.sim.world import SimWorld
from tests.waiting import eventually
from timestamping import Digest, build_request, parse_reply
from timestamping.verify import verify_reply

from .conftest import Served, VirtualClock, feed_agreeing_sources

TSQ = {"Content-Type": "application/timestamp-query"}


def query(data: bytes = b"attendance 2026-11-28", *, nonce: int | None = 42) -> Any:
    return build_request(hashlib.sha256(data).digest(), digest=Digest.SHA256, nonce=nonce)


async def make_client(serve: Any, timekeeper: Timekeeper, **kw: Any) -> Served:
    config = kw.pop("config", ServerConfig(simulate="world" in kw))
    return await serve(create_app(config, timekeeper, **kw))


# --- /tsa --------------------------------------------------------------------------------


async def test_token_granted_verifies_and_is_logged(
    serve: Any,
    timekeeper: Timekeeper,
    clock: VirtualClock,
    tsa_service: Any,
    pki: Any,
    tmp_path: Path,
) -> None:
    feed_agreeing_sources(timekeeper, clock)
    service: TsaService = tsa_service()
    client = await make_client(serve, timekeeper, tsa=service)
    q = query()
    resp = await client.post("/tsa", data=q.der, headers=TSQ)
    assert resp.status == 200
    assert resp.headers["Server"] == "Horodate"  # answered by the fast lane, as in production
    assert resp.content_type == "application/timestamp-reply"
    der = await resp.read()
    reply = parse_reply(der)
    assert reply.granted and reply.info is not None
    assert reply.info.nonce == 42
    verified = verify_reply(
        der, message_imprint=q.message_imprint, ca_pem=pki.ca_cert.read_bytes(), nonce=42
    )
    assert verified.info.serial == reply.info.serial
    # The token's accuracy is the ensemble's bound at issuance, rounded up, plus what
    # truncating genTime to the precision that bound warrants (10 ms here) costs.
    bound_ns = timekeeper.assess().bound_ns
    assert bound_ns is not None
    assert reply.info.accuracy is not None
    assert bound_ns <= reply.info.accuracy.total_us * 1000 <= bound_ns + 11_000_000
    logged = list(read_log(tmp_path / "issued.log"))
    assert [r.serial for r in logged] == [reply.info.serial]
    assert logged[0].message_imprint == q.message_imprint
    assert logged[0].ensemble_state == "synchronised"
    assert reply.token_der is not None  # the exact token the client received is pinned
    assert logged[0].token_sha256 == hashlib.sha256(reply.token_der).digest()


async def test_openssl_query_to_openssl_verify(
    serve: Any,
    timekeeper: Timekeeper,
    clock: VirtualClock,
    tsa_service: Any,
    pki: Any,
    tmp_path: Path,
) -> None:
    feed_agreeing_sources(timekeeper, clock)
    client = await make_client(serve, timekeeper, tsa=tsa_service())
    data = tmp_path / "record.txt"
    data.write_bytes(b"session 12, teacher T, student S signed\n")
    tsq, tsr = tmp_path / "q.tsq", tmp_path / "r.tsr"
    subprocess.run(
        ["openssl", "ts", "-query", "-data", data, "-sha256", "-cert", "-out", tsq], check=True
    )
    resp = await client.post("/tsa", data=tsq.read_bytes(), headers=TSQ)
    tsr.write_bytes(await resp.read())
    for how in (["-queryfile", tsq], ["-data", data]):
        done = subprocess.run(
            ["openssl", "ts", "-verify", "-in", tsr, *how, "-CAfile", pki.ca_cert],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stderr


async def test_refuses_with_time_not_available_while_clock_cannot_prove_time(
    serve: Any, timekeeper: Timekeeper, tsa_service: Any, tmp_path: Path
) -> None:
    client = await make_client(serve, timekeeper, tsa=tsa_service())
    resp = await client.post("/tsa", data=query().der, headers=TSQ)
    assert resp.status == 200  # a refusal is an RFC 3161 answer, not an HTTP error
    reply = parse_reply(await resp.read())
    assert not reply.granted
    assert reply.fail_info == frozenset({FailInfo.timeNotAvailable})
    # The statusString tells the client why, in the ensemble's words.
    assert reply.status_text == (timekeeper.assess().reason,)
    assert list(read_log(tmp_path / "issued.log")) == []


async def test_garbage_request_gets_bad_data_format_not_an_http_error(
    serve: Any, timekeeper: Timekeeper, clock: VirtualClock, tsa_service: Any
) -> None:
    feed_agreeing_sources(timekeeper, clock)
    client = await make_client(serve, timekeeper, tsa=tsa_service())
    resp = await client.post("/tsa", data=b"\x30\x82garbage", headers=TSQ)
    assert resp.status == 200
    reply = parse_reply(await resp.read())
    assert reply.fail_info == frozenset({FailInfo.badDataFormat})


async def test_transport_errors_are_http_errors(
    serve: Any, timekeeper: Timekeeper, tsa_service: Any
) -> None:
    client = await make_client(
        serve, timekeeper, tsa=tsa_service(), config=ServerConfig(max_request_bytes=1024)
    )
    assert (await client.get("/tsa")).status == 405
    wrong_type = await client.post("/tsa", data=query().der, headers={"Content-Type": "text/plain"})
    assert wrong_type.status == 415
    too_big = await client.post("/tsa", data=b"\x30" * 4096, headers=TSQ)
    assert too_big.status == 413


async def test_a_token_that_cannot_be_logged_is_not_handed_out(
    serve: Any, timekeeper: Timekeeper, clock: VirtualClock, tsa_service: Any
) -> None:
    class FullDisk:
        def submit(self, records: object, on_durable: object) -> None:
            raise IssuanceLogError("No space left on device")

    feed_agreeing_sources(timekeeper, clock)
    service = tsa_service(issuance_log=FullDisk())
    client = await make_client(serve, timekeeper, tsa=service)
    reply = parse_reply(await (await client.post("/tsa", data=query().der, headers=TSQ)).read())
    assert not reply.granted
    assert reply.fail_info == frozenset({FailInfo.systemFailure})
    assert service.granted == 0 and service.refused == {"systemFailure": 1}


async def test_certs_serves_the_chain_in_pem(
    serve: Any, timekeeper: Timekeeper, tsa_service: Any, pki: Any
) -> None:
    client = await make_client(serve, timekeeper, tsa=tsa_service())
    resp = await client.get("/tsa/certs")
    assert resp.status == 200
    body = await resp.text()
    assert body.count("-----BEGIN CERTIFICATE-----") == 2
    assert pki.ca_cert.read_text().strip() in body


# --- /health -----------------------------------------------------------------------------


async def test_health_is_503_with_a_reason_until_a_quorum(
    serve: Any, timekeeper: Timekeeper, clock: VirtualClock
) -> None:
    client = await make_client(serve, timekeeper)
    resp = await client.get("/health")
    assert resp.status == 503
    doc = await resp.json()
    assert doc["issuing"] is False and doc["state"] == "starting" and doc["reason"]

    feed_agreeing_sources(timekeeper, clock)
    resp = await client.get("/health")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["issuing"] is True and doc["state"] == "synchronised"
    assert 0 < doc["bound_s"] <= 1.0
    by_name = {s["name"]: s for s in doc["sources"]}
    assert set(by_name) == {"gps0", "ntp:test"}
    for s in doc["sources"]:
        assert s["name"].startswith(("gps", "pps", "ntp", "rtc"))
        assert s["status"] == "selected"
        assert set(s) >= {"name", "status", "offset_s", "bound_s", "reason"}
    # The NTP sample (±2 ms) is 4 s old: its interval has widened at the crystal's
    # worst-case frequency error.
    widened = 0.002 + 4 * timekeeper.policy.crystal_max_ppm * 1e-6
    assert by_name["ntp:test"]["bound_s"] == pytest.approx(widened, abs=1e-5)


def test_health_document_offset_is_ensemble_utc_minus_host_clock(
    timekeeper: Timekeeper, clock: VirtualClock
) -> None:
    feed_agreeing_sources(timekeeper, clock)
    a = timekeeper.assess()
    assert a.utc_ns is not None
    doc = health_document(a, clock(), a.utc_ns - 250_000_000)
    assert doc["offset_s"] == pytest.approx(0.25)
    assert doc["utc"].endswith("Z") and doc["utc"].startswith("2027-01-15T")


def test_health_shows_what_only_the_drivers_know(
    timekeeper: Timekeeper, clock: VirtualClock
) -> None:
    feed_agreeing_sources(timekeeper, clock)
    notes = {"ntp:test": "access denied: DENY; no longer asked", "rtc0": "rtc0: no answer"}
    doc = health_document(timekeeper.assess(), clock(), 0, notes)
    by_name = {s["name"]: s for s in doc["sources"]}
    assert by_name["ntp:test"]["driver"] == "access denied: DENY; no longer asked"
    assert by_name["ntp:test"]["status"] == "selected"  # the clock's verdict is untouched
    assert by_name["gps0"]["driver"] is None
    # A configured source that never produced a sample is listed through its note.
    assert by_name["rtc0"]["status"] == "waiting" and by_name["rtc0"]["kind"] == "rtc"
    assert by_name["rtc0"]["driver"] == "rtc0: no answer"


# --- /metrics ----------------------------------------------------------------------------

_SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (-?[0-9.e+-]+|NaN)$')


async def test_metrics_are_prometheus_text_and_count_tokens(
    serve: Any, timekeeper: Timekeeper, clock: VirtualClock, tsa_service: Any
) -> None:
    feed_agreeing_sources(timekeeper, clock)
    client = await make_client(serve, timekeeper, tsa=tsa_service())
    for _ in range(3):
        await client.post("/tsa", data=query().der, headers=TSQ)
    await client.post("/tsa", data=b"junk", headers=TSQ)
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    families: list[str] = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.append(line.split()[2])
        elif not line.startswith("#"):
            assert _SAMPLE.match(line), line
            name = line.split("{")[0].split(" ")[0]
            assert name == families[-1] or (
                name.removeprefix(families[-1]) in ("_bucket", "_sum", "_count")
            ), "family split apart"
    assert len(families) == len(set(families))
    # Prometheus's own parser reads all of it, and the commit histogram is consistent.
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    commit_times = parsed["horodate_tsa_issuance_log_commit_seconds"]
    assert commit_times.type == "histogram"
    buckets = [s for s in commit_times.samples if s.name.endswith("_bucket")]
    assert [float(s.labels["le"]) for s in buckets] == [*COMMIT_BUCKETS_S, math.inf]
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)  # cumulative
    assert "horodate_clock_issuing 1" in text
    assert "horodate_tsa_tokens_granted_total 3" in text
    assert 'horodate_tsa_requests_refused_total{fail_info="badDataFormat"} 1' in text
    assert "horodate_tsa_self_check_failures_total 0" in text
    assert 'horodate_source_selected{source="gps0"} 1' in text
    assert "horodate_tsa_issuance_log_records_total 3" in text
    samples = {s.name: s.value for f in parsed.values() for s in f.samples if not s.labels}
    commits = int(samples["horodate_tsa_issuance_log_commits_total"])
    assert 1 <= commits <= 3
    # every successful commit is timed: the histogram counts exactly the commits
    assert buckets[-1].value == commits
    assert samples["horodate_tsa_issuance_log_commit_seconds_count"] == commits
    total = next(s.value for s in commit_times.samples if s.name.endswith("_sum"))
    assert 0 < total < 10
    written = int(samples["horodate_tsa_issuance_log_bytes_total"])
    assert written > 3 * 100  # three records of a hundred-odd bytes each
    assert "horodate_tsa_issuance_log_failures_total 0" in text
    assert "horodate_tsa_issuance_logs_stopped 0" in text
    health = await (await client.get("/health")).json()
    assert health["tsa"] == {
        "tokens_granted": 3,
        "requests_refused": 1,
        "issuance_logs_stopped": 0,
        "slow_commits": 0,
        "certificate_days_left": 100.0,
        "certificate_expiring": False,
    }


async def test_a_stopped_issuance_log_shows_on_health_and_metrics(
    serve: Any,
    timekeeper: Timekeeper,
    clock: VirtualClock,
    tsa_service: Any,
    tmp_path: Path,
) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    feed_agreeing_sources(timekeeper, clock)
    issuance_log = IssuanceLog(tmp_path / "eio.log", fsync=failing_fsync)
    issuance_log.start()
    try:
        client = await make_client(serve, timekeeper, tsa=tsa_service(issuance_log=issuance_log))
        assert (await client.get("/health")).status == 200
        reply = parse_reply(await (await client.post("/tsa", data=query().der, headers=TSQ)).read())
        assert reply.fail_info == frozenset({FailInfo.systemFailure})  # withheld

        resp = await client.get("/health")
        assert resp.status == 503
        doc = await resp.json()
        assert doc["issuing"] is False
        assert doc["state"] == "synchronised"  # the clock is fine; the log is not
        assert "issuance log" in doc["reason"] and "restart" in doc["reason"]
        assert doc["tsa"]["issuance_logs_stopped"] == 1
        text = await (await client.get("/metrics")).text()
        assert "horodate_tsa_issuance_logs_stopped 1" in text
        assert "horodate_tsa_issuance_log_failures_total 1" in text
        assert "horodate_tsa_issuance_log_records_total 0" in text
    finally:
        issuance_log.close()


# --- /sim/faults -------------------------------------------------------------------------


async def test_fault_routes_exist_only_with_simulate(serve: Any, timekeeper: Timekeeper) -> None:
    client = await make_client(serve, timekeeper)
    assert (await client.get("/sim/faults")).status == 404
    with pytest.raises(ValueError, match="simulate"):
        create_app(ServerConfig(simulate=False), timekeeper, world=object())


async def test_sim_faults_get_post_delete(serve: Any, timekeeper: Timekeeper) -> None:
    with SimWorld() as world:
        client = await make_client(serve, timekeeper, world=world)
        assert await (await client.get("/sim/faults")).json() == {"gps": {}, "ntp": {}, "rtc": {}}
        wanted = {
            "gps": {"offset_s": 5.0},
            "ntp": {"unsynchronised": True},
            "rtc": {"lost_power": True},
        }
        resp = await client.post("/sim/faults", json=wanted)
        assert resp.status == 200 and await resp.json() == wanted
        assert world.faults.gps.offset_s == 5.0 and world.faults.rtc.lost_power
        # A POST replaces the whole set.
        resp = await client.post("/sim/faults", json={"rtc": {"drift_ppm": 3}})
        assert await resp.json() == {"gps": {}, "ntp": {}, "rtc": {"drift_ppm": 3.0}}
        # Bad input is refused with the reason and changes nothing.
        for bad in ({"gps": {"ofset_s": 1}}, {"ntp": {"kod": "NOPE"}}, ["gps"]):
            resp = await client.post("/sim/faults", json=bad)
            assert resp.status == 400 and (await resp.json())["error"]
        resp = await client.post(
            "/sim/faults", data=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert resp.status == 400
        assert world.faults.rtc.drift_ppm == 3.0
        resp = await client.delete("/sim/faults")
        assert await resp.json() == {"gps": {}, "ntp": {}, "rtc": {}}


def _expired(service: TsaService) -> None:
    """The clock's time a day after the TSA certificate's notAfter, whatever the host's
    clock says (here: it reads a time the certificate covers, as a host clock set back
    would)."""
    after = service.authority.credentials.certificate.not_valid_after_utc + dt.timedelta(days=1)
    service.token_time = lambda: (int(after.timestamp()) * 10**9, 1_000_000)


async def test_no_token_once_the_certificate_has_expired_on_the_clocks_time(
    serve: Any,
    timekeeper: Timekeeper,
    clock: VirtualClock,
    tsa_service: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed_agreeing_sources(timekeeper, clock)
    service = tsa_service()
    client = await make_client(serve, timekeeper, tsa=service)
    cert = service.authority.credentials.certificate
    inside = cert.not_valid_before_utc + (cert.not_valid_after_utc - cert.not_valid_before_utc) / 2
    monkeypatch.setattr(time, "time_ns", lambda: int(inside.timestamp()) * 10**9)
    _expired(service)
    reply = parse_reply(await (await client.post("/tsa", data=query().der, headers=TSQ)).read())
    assert not reply.granted
    assert reply.fail_info == frozenset({FailInfo.systemFailure})
    assert "outside the validity of the TSA's certificates" in reply.status_text[0]
    assert "renew the certificate" in reply.status_text[0]
    assert service.granted == 0


async def test_requests_signed_together_each_get_their_own_record_and_count(
    serve: Any, timekeeper: Timekeeper, clock: VirtualClock, tsa_service: Any
) -> None:
    feed_agreeing_sources(timekeeper, clock)
    service: TsaService = tsa_service()
    await make_client(serve, timekeeper, tsa=service)  # wires the clock to it
    first, second = query(b"a"), query(b"b", nonce=None)
    answers = service.sign_all([first.der, b"junk", second.der])
    replies = [parse_reply(der) for der, _ in answers]
    assert [r.granted for r in replies] == [True, False, True]
    assert answers[1][1] is None and replies[1].fail_info == frozenset({FailInfo.badDataFormat})
    records = [decode_payload(record[8:]) for _, record in answers if record is not None]
    assert [r.serial for r in records] == [replies[0].info.serial, replies[2].info.serial]
    assert [r.message_imprint for r in records] == [first.message_imprint, second.message_imprint]
    assert {r.ensemble_state for r in records} == {"synchronised"}
    for reply, record in zip((replies[0], replies[2]), records, strict=True):
        assert reply.token_der is not None
        assert record.token_sha256 == hashlib.sha256(reply.token_der).digest()
    assert service.refused == {"badDataFormat": 1}  # the granted count waits for the commit

    _expired(service)  # each request of a batch is refused, and counted
    expired = service.sign_all([first.der, second.der])
    assert [record for _, record in expired] == [None, None]
    assert service.refused["systemFailure"] == 2


async def test_fuzzed_bodies_always_get_a_der_reply_never_a_500(
    serve: Any, timekeeper: Timekeeper, clock: VirtualClock, tsa_service: Any
) -> None:
    """Random bytes and mangled real requests through the whole HTTP path: every answer is
    HTTP 200 with a TimeStampResp that parses, granted only for a well-formed request."""
    import random

    feed_agreeing_sources(timekeeper, clock)
    client = await make_client(serve, timekeeper, tsa=tsa_service())
    rng = random.Random(3161)
    good = query().der
    bodies = [b"", b"\x00", b"\x30\x80\x00\x00", b"\x30\x84\xff\xff\xff\xff" + good]
    for _ in range(150):
        if rng.random() < 0.5:
            bodies.append(rng.randbytes(rng.randrange(1, 300)))
        else:
            mangled = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                mangled[rng.randrange(len(mangled))] = rng.randrange(256)
            bodies.append(bytes(mangled))
    for body in bodies:
        resp = await client.post("/tsa", data=body, headers=TSQ)
        assert resp.status == 200, body.hex()
        reply = parse_reply(await resp.read())
        if reply.granted:  # only a request the strict parser accepts, for its own imprint
            assert reply.info is not None
            assert reply.info.message_imprint == parse_request(body).imprint
        else:
            assert reply.fail_info, body.hex()


async def test_a_certificate_near_expiry_is_warned_about_each_day_and_on_health(
    serve: Any,
    timekeeper: Timekeeper,
    clock: VirtualClock,
    tsa_service: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An appliance that runs for months crosses the warning's threshold with no restart
    to log it: it checks again each day (here, every 50 ms) — on the clock's time, not the
    host's (the simulated sources' UTC is not the host's here)."""
    feed_agreeing_sources(timekeeper, clock)
    now = timekeeper.clock_now()
    assert abs((now - dt.datetime.now(dt.UTC)).total_seconds()) > 60  # two clocks indeed
    # A development PKI made 810 days ago: its TSA certificate (825 days) has 15 days left.
    old = init_dev_pki(tmp_path / "old-pki", now=now - dt.timedelta(days=810))
    creds = load_credentials(old.tsa_key, old.tsa_cert, old.chain, now=now)
    monkeypatch.setattr(server_module, "EXPIRY_CHECK_S", 0.05)
    caplog.set_level(logging.WARNING, logger="appliance.issuance.issuer")
    service: TsaService = tsa_service()
    service.adopt(creds)
    client = await make_client(serve, timekeeper, tsa=service)

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "appliance.issuance.issuer" and "expires in" in r.getMessage()
        ]

    await eventually(lambda: len(warnings()) >= 2, 5, "two daily expiry warnings (50 ms each)")
    assert "expires in 15.0 days" in warnings()[0] and "renew it" in warnings()[0]
    health = await (await client.get("/health")).json()
    assert health["tsa"]["certificate_expiring"] is True
    assert health["tsa"]["certificate_days_left"] == pytest.approx(15.0, abs=0.1)
    assert (await client.post("/tsa", data=query().der, headers=TSQ)).status == 200
