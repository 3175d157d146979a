"""``POST /tsa`` through production's own path, in a second or two.

The appliance is assembled by ``build_app`` (its ``TsaService``: the engine, serial numbers
and an issuance log on disk) and served by ``listening``, as ``horodate appliance`` serves
it: the fast lane on a real TCP socket, its group commit, aiohttp behind it. It is asked by
the standard library's HTTP client (keep-alive) and over raw sockets (pipelining, many
connections at once). Only the clock is not production's: no drivers, a timekeeper fed
agreeing samples on a virtual clock.

Each reply is checked as a client would (``verify_reply``, ``openssl ts -verify``), and its
token's record is looked for, as soon as the reply has arrived, in the part of the issuance
log that an fsync has made durable by then (each fsync takes 10 ms more here, as on a slow
disk, so that a reply sent before its record is durable is caught every time, not by luck).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.clock.timekeeper import Timekeeper
from appliance.config import ApplianceConfig, TsaSection
from appliance.http.app_keys import TSA
from appliance.http.listening import bind_public, listening
from appliance.issuance import log as log_module
from appliance.issuance.issuer import TsaService
from appliance.issuance.log import IssuanceLog, Issued, read_log
from appliance.runtime.assembly import ISSUANCE_LOG, build_app
from appliance.runtime.driver_threads import Appliance, Sources
from timestamping import Digest, TimeStampQuery, TsaReply, build_request, parse_reply
from timestamping.verify import verify_reply, verify_with_openssl

from .conftest import HOST, VirtualClock, feed_agreeing_sources
from .raw_http import connect, read_response

DEADLINE_S = 10.0  # each exchange here takes milliseconds


SLOW_FSYNC_S = 0.01


class WatchedLog(IssuanceLog):
    """The production issuance log, through its injectable ``pwrite`` and ``fsync``: it
    notes how many bytes of the file an fsync has made durable, and each fsync is slow."""

    def __init__(self, path: Path, **kw: Any) -> None:
        super().__init__(path, pwrite=self._pwrite_noted, fsync=self._fsync_noted, **kw)
        self._lock = threading.Lock()
        self._written = 0  # the end of what was written
        self.durable_bytes = 0  # the end of what was written before the last fsync

    def _pwrite_noted(self, fd: int, data: bytes, offset: int) -> int:
        n = os.pwrite(fd, data, offset)
        with self._lock:
            self._written = max(self._written, offset + n)
        return n

    def _fsync_noted(self, fd: int) -> None:
        with self._lock:
            written = self._written
        time.sleep(SLOW_FSYNC_S)
        os.fdatasync(fd)
        with self._lock:
            self.durable_bytes = max(self.durable_bytes, written)


@dataclass
class Assembled:
    """The appliance as production assembles and serves it."""

    port: int
    log: Path  # its issuance log
    ca_pem: bytes
    tsa: TsaService

    def records(self) -> dict[int, Issued]:
        """The records of the issuance log that are durable now, by serial."""
        issuance_log = self.tsa.issuance_log
        assert isinstance(issuance_log, WatchedLog)
        durable = self.log.read_bytes()[: issuance_log.durable_bytes]
        with tempfile.NamedTemporaryFile(suffix=".log") as f:
            f.write(durable)
            f.flush()
            return {r.serial: r for r in read_log(Path(f.name))}


@pytest.fixture
async def appliance(
    pki: Any,
    timekeeper: Timekeeper,
    clock: VirtualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Assembled]:
    monkeypatch.setattr(log_module, "IssuanceLog", WatchedLog)  # what build_tsa makes
    config = ApplianceConfig(
        data_dir=tmp_path / "appliance",
        tsa=TsaSection(
            key_file=str(pki.tsa_key), cert_file=str(pki.tsa_cert), chain_file=str(pki.chain)
        ),
    )
    feed_agreeing_sources(timekeeper, clock)
    app = build_app(config, appliance=Appliance(config, Sources(), timekeeper))
    async with listening(app, bind_public(HOST, 0)) as where:
        yield Assembled(
            port=where.port,
            log=config.data_dir / ISSUANCE_LOG,
            ca_pem=pki.ca_cert.read_bytes(),
            tsa=app[TSA],
        )


def query(i: int) -> TimeStampQuery:
    return build_request(
        hashlib.sha256(b"attendance record %d" % i).digest(), digest=Digest.SHA256, nonce=i
    )


def request_bytes(q: TimeStampQuery, *, extra: bytes = b"") -> bytes:
    return (
        b"POST /tsa HTTP/1.1\r\nHost: appliance\r\nContent-Type: application/timestamp-query\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (len(q.der), extra, q.der)
    )


def check_token(a: Assembled, q: TimeStampQuery, der: bytes, logged: dict[int, Issued]) -> TsaReply:
    """The reply is a granted token that verifies for ``q``, and ``logged`` (the issuance
    log as read when the reply arrived) holds this very token's record."""
    reply = parse_reply(der)
    assert reply.granted and reply.info is not None, reply.status_text
    verified = verify_reply(der, message_imprint=q.message_imprint, ca_pem=a.ca_pem, nonce=q.nonce)
    assert verified.info.serial == reply.info.serial
    record = logged.get(reply.info.serial)
    assert record is not None, f"serial {reply.info.serial:#x} not in the log when its reply came"
    assert record.message_imprint == q.message_imprint and record.nonce == q.nonce
    assert reply.token_der is not None
    assert record.token_sha256 == hashlib.sha256(reply.token_der).digest()
    return reply


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    logged: dict[int, Issued]  # the issuance log, read as soon as this answer had arrived


def keep_alive(a: Assembled, queries: list[TimeStampQuery]) -> list[Answer]:
    """Each query in turn on one ``http.client`` connection (blocking: run in a thread)."""
    conn = http.client.HTTPConnection(HOST, a.port, timeout=DEADLINE_S)
    answers = []
    try:
        conn.connect()
        sock = conn.sock
        for q in queries:
            conn.request("POST", "/tsa", q.der, {"Content-Type": "application/timestamp-query"})
            resp = conn.getresponse()
            body = resp.read()
            answers.append(
                Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, a.records())
            )
            assert not resp.will_close and conn.sock is sock, "the connection was not kept"
    finally:
        conn.close()
    return answers


async def read_answer(a: Assembled, reader: asyncio.StreamReader) -> Answer:
    """The next answer on a raw connection, and the issuance log as read once it came."""
    r = await read_response(reader, deadline_s=DEADLINE_S)
    return Answer(r.status, r.headers, r.body, a.records())


def by_the_lane(answer: Answer) -> None:
    assert answer.status == 200, answer
    assert answer.headers["server"] == "Horodate"  # the lane's answer, not aiohttp's
    assert answer.headers["content-type"] == "application/timestamp-reply"


async def test_tokens_over_a_keep_alive_connection_verify_and_are_logged_before_they_leave(
    appliance: Assembled,
) -> None:
    queries = [query(i) for i in range(3)]
    answers = await asyncio.to_thread(keep_alive, appliance, queries)
    serials = []
    for q, answer in zip(queries, answers, strict=True):
        by_the_lane(answer)
        reply = check_token(appliance, q, answer.body, answer.logged)
        assert reply.info is not None
        serials.append(reply.info.serial)
    assert len(set(serials)) == 3
    # a second opinion, from OpenSSL
    assert "OK" in verify_with_openssl(
        answers[0].body, message_imprint=queries[0].message_imprint, ca_pem=appliance.ca_pem
    )
    assert set(appliance.records()) == set(serials)
    assert appliance.tsa.granted == 3


async def test_pipelined_requests_are_answered_in_order_each_logged_before_its_reply(
    appliance: Assembled,
) -> None:
    queries = [query(100 + i) for i in range(20)]
    async with connect(appliance.port, deadline_s=DEADLINE_S) as (reader, writer):
        writer.write(b"".join(request_bytes(q) for q in queries))  # all at once
        answers = [await read_answer(appliance, reader) for _ in queries]
    gen_times = []
    for q, answer in zip(queries, answers, strict=True):
        by_the_lane(answer)
        reply = check_token(appliance, q, answer.body, answer.logged)  # the nonce: in order
        assert reply.info is not None
        gen_times.append(reply.info.gen_time)
    assert gen_times == sorted(gen_times)
    assert len(appliance.records()) == 20


async def test_requests_arriving_together_are_committed_in_groups_and_each_logged_first(
    appliance: Assembled,
) -> None:
    """Ten connections, each sending a request in the same instant: one event-loop
    iteration of the server reads them all, and their records go to the log together."""
    connections = [await asyncio.open_connection(HOST, appliance.port) for _ in range(10)]
    queries = [query(200 + i) for i in range(10)]
    before = appliance.tsa.tally().log_commits
    try:
        for (_, writer), q in zip(connections, queries, strict=True):
            writer.write(request_bytes(q))  # no await between: they arrive together
        answers = [await read_answer(appliance, reader) for reader, _ in connections]
        for i, (reader, writer) in enumerate(connections):  # and again, the last one
            writer.write(request_bytes(query(1200 + i), extra=b"Connection: close\r\n"))
            last = await read_answer(appliance, reader)
            by_the_lane(last)
            assert last.headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), DEADLINE_S) == b""  # then closed
    finally:
        for _, writer in connections:
            writer.close()
    for q, answer in zip(queries, answers, strict=True):
        by_the_lane(answer)
        check_token(appliance, q, answer.body, answer.logged)
    tally = appliance.tsa.tally()
    assert tally.granted == tally.log_records == 20
    commits = tally.log_commits - before
    assert 1 <= commits < 20, f"{commits} commits for 20 tokens: no group was committed"


async def test_a_request_the_lane_hands_over_gets_a_logged_token_from_the_application(
    appliance: Assembled,
) -> None:
    """A chunked ``POST /tsa`` is not the lane's form: aiohttp's route answers it, with the
    same service, and its token is logged before it leaves too."""
    q = query(300)
    chunked = (
        b"POST /tsa HTTP/1.1\r\nHost: appliance\r\nContent-Type: application/timestamp-query\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(q.der), q.der)
    )
    async with connect(appliance.port, deadline_s=DEADLINE_S) as (reader, writer):
        writer.write(chunked)
        answer = await read_answer(appliance, reader)
    assert answer.status == 200 and "aiohttp" in answer.headers["server"]
    check_token(appliance, q, answer.body, answer.logged)
