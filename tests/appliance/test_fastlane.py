"""The fast lane (``appliance.http.fastlane``, ``appliance.http.group_commit``) and how the
appliance listens (``appliance.http.listening``).

- ``frame()`` on a table of requests: the one plain form it serves, and every other form it
  must leave to aiohttp;
- Hypothesis: ``frame()`` never raises and never frames past its buffer or cap, its decision
  does not depend on how the bytes arrive, and whatever it frames, aiohttp's own parser reads
  the same way (no request is split differently by the two servers);
- real sockets on 127.0.0.1: who answers what (the lane says ``Server: Horodate``, aiohttp
  says its own name; the lane's answer and the aiohttp route have different bodies),
  pipelining, the hand-over at a request boundary, errors, timeouts, half-close;
- a seeded random fuzz over real sockets: every connection gets whole HTTP answers or is
  closed, within a deadline, and the server keeps serving;
- a few of those on uvloop, the event loop the appliance runs on.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

import pytest
import uvloop
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.clock.timekeeper import Timekeeper
from appliance.http import fastlane, listening
from appliance.http.app import create_app
from appliance.http.app_keys import CONFIG, ServerConfig
from appliance.http.fastlane import (
    MAX_HEAD_BYTES,
    NOT_OURS,
    REQUEST_LINE,
    FastLane,
    Framed,
    LaneConfig,
    frame,
)
from appliance.http.group_commit import Flush
from appliance.issuance.issuer import TsaService
from tests.waiting import eventually
from timestamping import Digest, build_request, parse_reply

from .conftest import HOST, VirtualClock, feed_agreeing_sources
from .raw_http import DEADLINE_S, Response, connect, read_response

MAX_BODY = 1024
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TSQ = b"application/timestamp-query"


def post(
    body: bytes = b"hello",
    *,
    path: bytes = b"/tsa",
    version: bytes = b"HTTP/1.1",
    content_type: bytes | None = TSQ,
    length: bytes | None = None,
    extra: tuple[bytes, ...] = (),
) -> bytes:
    """A POST request; by default the plain form the lane serves."""
    lines = [b"POST " + path + b" " + version, b"Host: tsa.test"]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type)
    if length is not None or b"Transfer-Encoding: chunked" not in extra:
        lines.append(b"Content-Length: " + (length if length is not None else b"%d" % len(body)))
    lines += extra
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


PLAIN = post()
GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: tsa.test\r\n\r\n"


def head_with(*headers: bytes) -> bytes:
    """The request line, then exactly these header lines, then the blank line."""
    return REQUEST_LINE + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


BASE = (b"Host: tsa.test", b"Content-Type: application/timestamp-query")


# --- frame(): the one form the lane serves --------------------------------------------------


def test_plain_request_frames() -> None:
    assert frame(PLAIN, MAX_BODY) == Framed(head_len=len(PLAIN) - 5, body_len=5, close=False)


def test_plain_request_frames_before_its_body_arrives() -> None:
    head = PLAIN[:-5]
    assert frame(head, MAX_BODY) == Framed(head_len=len(head), body_len=5, close=False)


def test_frames_only_the_first_of_pipelined_requests() -> None:
    two = PLAIN + post(b"second")
    assert frame(two, MAX_BODY) == Framed(head_len=len(PLAIN) - 5, body_len=5, close=False)
    assert frame(bytearray(two), MAX_BODY) == frame(two, MAX_BODY)


def test_empty_body_and_body_at_the_cap_frame() -> None:
    assert frame(post(b""), MAX_BODY) == Framed(len(post(b"")), 0, False)
    at_cap = post(b"x" * MAX_BODY)
    assert frame(at_cap, MAX_BODY) == Framed(len(at_cap) - MAX_BODY, MAX_BODY, False)


def test_a_repeated_head_is_framed_from_the_cache_under_each_callers_cap() -> None:
    fastlane._heads.clear()
    buf = post(b"x" * 10)
    assert frame(buf, 100) == Framed(len(buf) - 10, 10, False)
    assert len(fastlane._heads) == 1
    assert frame(buf, 5) == NOT_OURS  # the same head, a smaller cap: aiohttp answers 413
    assert frame(buf, 100) == Framed(len(buf) - 10, 10, False)
    refused = post(content_type=b"text/plain")
    assert frame(refused, 100) == NOT_OURS
    assert frame(refused, 100) == NOT_OURS  # a refusal is remembered as one too


def test_the_head_cache_stays_bounded() -> None:
    fastlane._heads.clear()
    for i in range(1000):  # a client varying its head with every request
        assert isinstance(frame(post(extra=(b"X-N: %d" % i,)), MAX_BODY), Framed)
        assert len(fastlane._heads) <= 256
    fastlane._heads.clear()
    long_head = post(extra=(b"X-Pad: " + b"a" * 2000,))
    assert isinstance(frame(long_head, MAX_BODY), Framed)
    assert not fastlane._heads, "a long head is parsed, never kept"


def test_header_names_are_case_insensitive() -> None:
    buf = head_with(b"HOST: a", b"content-TYPE: Application/Timestamp-Query", b"CONTENT-length: 7")
    assert frame(buf, MAX_BODY) == Framed(len(buf), 7, False)


def test_optional_whitespace_around_values_is_ignored() -> None:
    buf = head_with(
        b"Host:a", b"Content-Type:\t application/timestamp-query \t", b"Content-Length:  3 "
    )
    assert frame(buf, MAX_BODY) == Framed(len(buf), 3, False)


@pytest.mark.parametrize(
    ("connection", "close"),
    [
        (b"Connection: close", True),
        (b"connection: CLOSE", True),
        (b"Connection: keep-alive", False),
        (b"Connection: keep-alive, close", True),
        (b"Connection: Keep-Alive , Close ", True),
    ],
)
def test_connection_header_sets_close(connection: bytes, close: bool) -> None:
    buf = head_with(*BASE, b"Content-Length: 1", connection)
    assert frame(buf, MAX_BODY) == Framed(len(buf), 1, close)


def test_connection_close_in_a_second_header_line_still_closes() -> None:
    buf = head_with(*BASE, b"Content-Length: 1", b"Connection: close", b"Connection: keep-alive")
    framed = frame(buf, MAX_BODY)
    assert isinstance(framed, Framed) and framed.close


@pytest.mark.parametrize("size", range(0, len(REQUEST_LINE) + 30, 3))
def test_need_more_while_the_head_is_incomplete(size: int) -> None:
    assert frame(PLAIN[:size], MAX_BODY) is None


def test_need_more_for_a_partial_head_up_to_the_head_cap() -> None:
    partial = REQUEST_LINE + b"X-Pad: " + b"a" * (MAX_HEAD_BYTES - len(REQUEST_LINE) - 7)
    assert len(partial) == MAX_HEAD_BYTES
    assert frame(partial, MAX_BODY) is None
    assert frame(partial + b"a", MAX_BODY) == NOT_OURS


@pytest.mark.parametrize("partial", [b"G", b"GET", b"POST /tsb", b"PUT ", b"\r\n", b"post"])
def test_a_partial_head_that_cannot_become_ours_is_not_ours_at_once(partial: bytes) -> None:
    assert frame(partial, MAX_BODY) == NOT_OURS


# --- frame(): everything else goes to aiohttp -----------------------------------------------

NOT_OURS_CASES = {
    "GET": b"GET /tsa HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /health": GET_HEALTH,
    "PUT": PLAIN.replace(b"POST", b"PUT", 1),
    "lower-case method": PLAIN.replace(b"POST", b"post", 1),
    "other path": post(path=b"/tsa/certs"),
    "path with query": post(path=b"/tsa?x=1"),
    "absolute form": post(path=b"http://tsa.test/tsa"),
    "HTTP/1.0": post(version=b"HTTP/1.0"),
    "HTTP/2.0": post(version=b"HTTP/2.0"),
    "two spaces in the request line": PLAIN.replace(b"POST /tsa", b"POST  /tsa", 1),
    "chunked": post(extra=(b"Transfer-Encoding: chunked",)),
    "chunked and length": post(length=b"5", extra=(b"Transfer-Encoding: chunked",)),
    "transfer-encoding identity": post(extra=(b"transfer-encoding: identity",)),
    "expect 100-continue": post(extra=(b"Expect: 100-continue",)),
    "upgrade": post(extra=(b"Upgrade: websocket", b"Connection: Upgrade")),
    "upgrade header alone": post(extra=(b"upgrade: h2c",)),
    "connection: upgrade": post(extra=(b"Connection: upgrade",)),
    "connection: keep-alive, upgrade": post(extra=(b"Connection: keep-alive, Upgrade",)),
    "connection: other token": post(extra=(b"Connection: x-custom",)),
    "connection: empty": post(extra=(b"Connection:",)),
    "duplicate content-length, same value": post(extra=(b"Content-Length: 5",)),
    "duplicate content-length, other value": post(extra=(b"content-length: 6",)),
    "content-length list": post(length=b"5, 5"),
    "content-length negative": post(length=b"-5"),
    "content-length plus sign": post(length=b"+5"),
    "content-length hex": post(length=b"0x5"),
    "content-length decimal": post(length=b"5.0"),
    "content-length empty": post(length=b""),
    "content-length inner space": post(length=b"1 2"),
    "content-length unicode digit": post(length="٥".encode()),
    "content-length superscript": post(length="²".encode()),
    "content-length ten digits": post(length=b"0000000005"),
    "content-length huge": post(length=b"99999999999999999999"),
    "body over max_body": post(b"x" * (MAX_BODY + 1)),
    "length over max_body": post(b"", length=b"%d" % (MAX_BODY + 1)),
    "missing content-length": head_with(*BASE),
    "missing content-type": post(content_type=None),
    "wrong content-type": post(content_type=b"application/octet-stream"),
    "content-type with parameters": post(content_type=TSQ + b"; charset=utf-8"),
    "content-type reply": post(content_type=b"application/timestamp-reply"),
    "duplicate content-type": post(extra=(b"Content-Type: application/timestamp-query",)),
    "bare LF ends a header": PLAIN.replace(b"Host: tsa.test\r\n", b"Host: tsa.test\n", 1),
    "bare LF inside a value": post(extra=(b"X-A: a\nb",)),
    "bare CR inside a value": post(extra=(b"X-A: a\rb",)),
    "NUL in a value": post(extra=(b"X-A: a\x00b",)),
    "NUL in a name": post(extra=(b"X-\x00A: b",)),
    "DEL in a value": post(extra=(b"X-A: a\x7fb",)),
    "ESC in a value": post(extra=(b"X-A: \x1b[0m",)),
    "control character in the request line": PLAIN.replace(b"/tsa", b"/ts\x01a", 1),
    "whitespace before the colon": post(extra=(b"X-A : b",)),
    "tab before the colon": post(extra=(b"X-A\t: b",)),
    "whitespace before content-length's colon": PLAIN.replace(
        b"Content-Length:", b"Content-Length :", 1
    ),
    "obs-fold continuation line": post(extra=(b"X-A: a", b" continued")),
    "obs-fold with tab": post(extra=(b"X-A: a", b"\tcontinued")),
    "obs-fold hiding a colon": post(extra=(b"X-A: a", b" Transfer-Encoding: chunked")),
    "header line without colon": post(extra=(b"X-A",)),
    "empty header name": post(extra=(b": b",)),
    "non-token header name": post(extra=(b"X(A): b",)),
    "non-ascii header name": post(extra=("Ä: b".encode(),)),
    "head over 8 KiB": post(extra=(b"X-Pad: " + b"a" * MAX_HEAD_BYTES,)),
    "leading empty line": b"\r\n" + PLAIN,
}


@pytest.mark.parametrize("buf", NOT_OURS_CASES.values(), ids=NOT_OURS_CASES.keys())
def test_not_ours(buf: bytes) -> None:
    assert frame(buf, MAX_BODY) == NOT_OURS
    assert frame(bytearray(buf), MAX_BODY) == NOT_OURS


def test_max_body_is_the_callers() -> None:
    assert frame(post(b"x" * 10), 10) == Framed(len(post(b"x" * 10)) - 10, 10, False)
    assert frame(post(b"x" * 11), 10) == NOT_OURS
    assert frame(post(b""), -1) == NOT_OURS  # listening.listening without a TSA: nothing is ours


# RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
# request message that lacks a Host header field and to any request message that contains
# more than one Host header field line". aiohttp does; the lane must leave such requests to it.


def test_missing_host_is_not_ours() -> None:
    buf = head_with(b"Content-Type: application/timestamp-query", b"Content-Length: 0")
    assert frame(buf, MAX_BODY) == NOT_OURS


def test_duplicate_host_is_not_ours() -> None:
    assert frame(post(extra=(b"Host: other.test",)), MAX_BODY) == NOT_OURS


# --- frame(): Hypothesis ------------------------------------------------------------------


def check_invariants(buf: bytes, max_body: int = MAX_BODY) -> Framed | str | None:
    """``frame(buf)`` never raises; when it frames, the frame lies inside ``buf`` and the cap.
    The answer parsed afresh is the answer from the cache of heads."""
    fastlane._heads.clear()
    framed = frame(buf, max_body)
    assert framed is None or framed == NOT_OURS or isinstance(framed, Framed)
    assert frame(bytearray(buf), max_body) == framed
    if isinstance(framed, Framed):
        assert framed.head_len <= len(buf)
        assert 0 <= framed.body_len <= max_body
        head = buf[: framed.head_len]
        assert head.startswith(REQUEST_LINE) and head.endswith(b"\r\n\r\n")
        assert head.count(b"\r\n\r\n") == 1
        assert all(b >= 0x20 or b == 0x09 for b in head.replace(b"\r\n", b""))
    if framed is None:
        assert len(buf) <= MAX_HEAD_BYTES
        assert REQUEST_LINE.startswith(buf[: len(REQUEST_LINE)])
    return framed


@st.composite
def mutated(draw: st.DrawFn, bases: tuple[bytes, ...]) -> bytes:
    """One of ``bases`` with a few bytes replaced, inserted, deleted, or cut short."""
    buf = bytearray(draw(st.sampled_from(bases)))
    interesting = st.sampled_from(list(b"\r\n\x00\t :,-0123456789aAzZ\x7f\x80\xff"))
    one_byte = interesting.map(lambda b: bytes([b]))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(buf)))
        op = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        if op == "replace" and at < len(buf):
            buf[at] = draw(st.one_of(interesting, st.integers(0, 255)))
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8) | one_byte)
        elif op == "delete":
            del buf[at : at + draw(st.integers(1, 8))]
        elif op == "cut":
            del buf[at:]
    return bytes(buf)


VALID = (
    PLAIN,
    post(b"x" * MAX_BODY, extra=(b"Connection: close",)),
    post(b"", extra=(b"Connection: keep-alive", b"Accept: */*", b"User-Agent: t")),
    PLAIN + post(b"again"),
    PLAIN + GET_HEALTH,
)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(buf: bytes) -> None:
    check_invariants(buf)
    check_invariants(REQUEST_LINE + buf)


@FUZZ
@given(st.integers(MAX_HEAD_BYTES - 80, MAX_HEAD_BYTES + 8), st.binary(max_size=40))
def test_fuzz_heads_near_the_cap(pad: int, tail: bytes) -> None:
    """A head around 8 KiB: framed only when its end lies inside the cap, else not ours."""
    head = REQUEST_LINE + b"Host: h\r\nContent-Length: 0\r\nContent-Type: " + TSQ + b"\r\nX: "
    buf = head + b"a" * (pad - len(head)) + tail
    framed = check_invariants(buf)
    check_invariants(buf + b"\r\n\r\n")
    if isinstance(framed, Framed):
        assert framed.head_len <= MAX_HEAD_BYTES + 4


@FUZZ
@given(mutated(VALID), st.sampled_from([MAX_BODY, 0, 5, -1]))
def test_fuzz_mutated_requests(buf: bytes, max_body: int) -> None:
    check_invariants(buf, max_body)


@FUZZ
@given(mutated(VALID), st.data())
def test_fuzz_the_decision_does_not_depend_on_how_bytes_arrive(buf: bytes, data: Any) -> None:
    """A prefix is either undecided or decided as the whole is (as the lane reads a stream)."""
    whole = frame(buf, MAX_BODY)
    cut = data.draw(st.integers(0, len(buf)))
    part = frame(buf[:cut], MAX_BODY)
    assert part is None or part == whole


def aiohttp_parse(buf: bytes) -> list[tuple[Any, bytes]]:
    """What aiohttp's own request parser (the one behind the Unix socket) reads in ``buf``."""
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(BaseProtocol(loop), loop, 2**16)
        messages, upgraded, _ = parser.feed_data(buf)
        assert not upgraded
        out = []
        for message, payload in messages:
            assert payload.is_eof()
            out.append((message, payload.read_nowait()))
        return out
    finally:
        loop.close()


SEPARATORS = [b": ", b":", b":\t", b":  ", b" : "]
EXTRA_NAMES = [
    b"Accept",
    b"Accept-Language",
    b"X-A",
    b"Connection",
    b"connection",
    b"Transfer-Encoding",
    b"Expect",
    b"Upgrade",
    b"Content-Length",
    b"Content-Type",
]
EXTRA_VALUES = [
    b"*/*",
    b"close",
    b"keep-alive",
    b"Keep-Alive, close",
    b"upgrade",
    b"chunked",
    b"100-continue",
    b"",
    b"5",
    TSQ,
]


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """``POST /tsa`` with one Host, mostly a usable Content-Type and Content-Length, a few
    other headers (some that matter), in any order, with a body of any length."""
    sep, good_sep = st.sampled_from(SEPARATORS), st.sampled_from(SEPARATORS[:-1])
    token = st.text("abcxyzXYZ-_!#0123456789", min_size=1, max_size=6).map(str.encode)
    value = st.binary(max_size=8).filter(lambda v: b"\r" not in v and b"\n" not in v)
    lines = [b"Host: tsa.test"]
    if draw(st.integers(0, 9)):
        name = draw(st.sampled_from([b"Content-Type", b"content-type", b"CONTENT-TYPE"]))
        lines.append(name + draw(good_sep) + draw(st.sampled_from([TSQ, TSQ.upper(), TSQ + b" "])))
    if draw(st.integers(0, 9)):
        name = draw(st.sampled_from([b"Content-Length", b"content-length"]))
        form = draw(st.sampled_from([b"%d", b"0%d", b"%d ", b"\t%d"]))
        lines.append(name + draw(good_sep) + form % draw(st.integers(0, 20)))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(EXTRA_NAMES) | token)
        lines.append(name + draw(sep) + draw(st.sampled_from(EXTRA_VALUES) | value))
    draw(st.randoms()).shuffle(lines)
    head = REQUEST_LINE + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    return head + b"x" * draw(st.integers(0, 25))


@FUZZ
@given(requests())
def test_fuzz_what_the_lane_frames_aiohttp_reads_the_same_way(buf: bytes) -> None:
    """No request smuggling between the two parsers: whatever the lane answers itself,
    aiohttp would read as the same single ``POST /tsa`` with the same body and keep-alive."""
    framed = check_invariants(buf)
    if not isinstance(framed, Framed):
        return
    end = framed.head_len + framed.body_len
    buf += b"x" * (end - len(buf))  # the rest of the body
    try:
        parsed = aiohttp_parse(buf[:end])
    except HttpProcessingError as e:
        raise AssertionError(f"the lane frames what aiohttp refuses: {e!r}") from e
    assert len(parsed) == 1
    message, body = parsed[0]
    assert (message.method, message.path, message.version[:]) == ("POST", "/tsa", (1, 1))
    assert not message.chunked and not message.upgrade
    assert body == buf[framed.head_len : end]
    assert message.should_close == framed.close
    assert message.headers.get("Content-Type", "").lower() == TSQ.decode()


def test_aiohttp_parse_is_a_real_oracle() -> None:
    """The oracle above refuses what aiohttp refuses (here: no Host header)."""
    with pytest.raises(HttpProcessingError):
        aiohttp_parse(head_with(b"Content-Type: application/timestamp-query", b"Content-Length: 0"))
    [(message, body)] = aiohttp_parse(PLAIN)
    assert (message.method, message.path, body) == ("POST", "/tsa", b"hello")


# --- real sockets ---------------------------------------------------------------------------


class LaneTokens:
    """The lane's TSA for these tests: answers ``lane:<body>``; ``raise`` fails to sign,
    ``slow`` takes 0.2 s to become durable, ``lost`` is never made durable (withheld)."""

    def sign_all(self, bodies: Sequence[bytes]) -> list[tuple[bytes, bytes | None]]:
        if b"raise" in bodies:
            raise RuntimeError("the answer failed (on purpose)")
        return [(b"lane:" + body, body if body in (b"slow", b"lost") else None) for body in bodies]

    def __init__(self) -> None:
        self.settled = 0  # commits whose outcome has been reported

    def commit(self, records: list[bytes], done: Callable[[bool], None]) -> None:
        loop = asyncio.get_running_loop()

        def settle(durable: bool) -> None:
            self.settled += 1
            done(durable)

        if b"lost" in records:
            loop.call_soon(settle, False)
        else:
            loop.call_later(0.2, settle, True)

    def withheld(self) -> bytes:
        return b"withheld"


def lane_flush() -> Flush:
    return Flush(LaneTokens())


async def via_aiohttp(request: web.Request) -> web.Response:
    if request.content_type != TSQ.decode():
        raise web.HTTPUnsupportedMediaType(text="expected a timestamp-query\n")
    body = await request.read()  # over client_max_size: aiohttp answers 413 itself
    return web.Response(body=b"via-aiohttp:" + body, content_type="application/timestamp-reply")


async def health(request: web.Request) -> web.Response:
    return web.Response(text="healthy")


SLOW_ANSWERED = web.AppKey("slow_answered", list)  # one entry per /slow answer written


async def slow_health(request: web.Request) -> web.Response:
    await asyncio.sleep(0.2)  # the route's own slowness, part of the scenario
    response = web.Response(text="slowly healthy")
    try:  # written here, not after the return, so that the test can know when it was
        await response.prepare(request)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client has left: aiohttp, writing after the return, is as quiet
    finally:
        request.app[SLOW_ANSWERED].append(True)
    return response


def make_app() -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[CONFIG] = ServerConfig(max_request_bytes=MAX_BODY)
    app.router.add_get("/health", health)
    app.router.add_get("/slow", slow_health)
    app[SLOW_ANSWERED] = []
    app.router.add_post("/tsa", via_aiohttp)
    return app


async def read_eof(reader: asyncio.StreamReader) -> bytes:
    """The bytes left until the server closes the connection (it must, within the deadline)."""
    return await asyncio.wait_for(reader.read(), DEADLINE_S)


async def exchange(port: int, data: bytes) -> Response:
    async with connect(port) as (reader, writer):
        writer.write(data)
        return await read_response(reader)


@pytest.fixture
async def served() -> AsyncIterator[listening.Listening]:
    public = listening.bind_public(HOST, 0)
    async with listening.listening(make_app(), public, tokens=LaneTokens()) as where:
        yield where


@asynccontextmanager
async def bare_lane(config: LaneConfig) -> AsyncIterator[int]:
    """A FastLane server of its own (no aiohttp behind it unless ``config.backend`` has one)."""
    loop = asyncio.get_running_loop()
    flush = lane_flush()
    server = await loop.create_server(lambda: FastLane(flush, config), HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def nobody() -> str:
    return listening.abstract_socket_name("nobody-listens")


async def test_plain_post_is_answered_by_the_lane(served: listening.Listening) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(PLAIN)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        lines = head[:-4].split(b"\r\n")[1:]
        headers = dict(line.split(b": ", 1) for line in lines)
        assert len(headers) == len(lines)  # no header repeated
        assert headers[b"Content-Type"] == b"application/timestamp-reply"
        assert headers[b"Content-Length"] == b"%d" % len(b"lane:hello")
        assert headers[b"Server"] == b"Horodate"
        assert b"Connection" not in headers  # HTTP/1.1 keeps the connection by default
        date = email.utils.parsedate_to_datetime(headers[b"Date"].decode())
        assert abs(date.timestamp() - time.time()) < 5
        assert headers[b"Date"].endswith(b" GMT")
        assert await asyncio.wait_for(reader.readexactly(10), DEADLINE_S) == b"lane:hello"
        # and the connection stays open for the next one
        writer.write(post(b"again"))
        reply = await read_response(reader)
        assert reply.by_lane and reply.body == b"lane:again"


async def test_a_request_written_byte_by_byte_is_answered_by_the_lane(
    served: listening.Listening,
) -> None:
    async with connect(served.port) as (reader, writer):
        for i in range(len(PLAIN)):
            writer.write(PLAIN[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        reply = await read_response(reader)
        assert reply.by_lane and reply.body == b"lane:hello"


async def test_pipelined_posts_are_answered_in_order(served: listening.Listening) -> None:
    async with connect(served.port) as (reader, writer):
        # the first one's answer takes longest: the others must still come after it
        writer.write(post(b"slow") + post(b"two") + post(b"three"))
        replies = [await read_response(reader) for _ in range(3)]
        assert [r.body for r in replies] == [b"lane:slow", b"lane:two", b"lane:three"]
        assert all(r.by_lane and r.status == 200 for r in replies)


async def test_many_pipelined_posts_are_all_answered(served: listening.Listening) -> None:
    bodies = [b"n%d" % i for i in range(200)]
    async with connect(served.port) as (reader, writer):
        writer.write(b"".join(post(b) for b in bodies))
        replies = [await read_response(reader) for _ in bodies]
        assert [r.body for r in replies] == [b"lane:" + b for b in bodies]


async def test_get_after_post_goes_to_aiohttp_and_the_connection_keeps_working(
    served: listening.Listening,
) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(PLAIN)
        first = await read_response(reader)
        assert first.by_lane and first.body == b"lane:hello"
        writer.write(GET_HEALTH)
        second = await read_response(reader)
        assert second.status == 200 and second.body == b"healthy"
        assert "aiohttp" in second.headers["server"]
        # the connection is aiohttp's from now on, plain POSTs included
        writer.write(post(b"after"))
        third = await read_response(reader)
        assert third.status == 200 and third.body == b"via-aiohttp:after"
        writer.write(GET_HEALTH)
        assert (await read_response(reader)).body == b"healthy"


async def test_pipelined_post_then_get_keep_their_order(served: listening.Listening) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(post(b"slow") + GET_HEALTH + post(b"x"))
        replies = [await read_response(reader) for _ in range(3)]
        assert [r.body for r in replies] == [b"lane:slow", b"healthy", b"via-aiohttp:x"]
        assert [r.by_lane for r in replies] == [True, False, False]


async def test_a_hand_over_split_across_writes_reaches_aiohttp_whole(
    served: listening.Listening,
) -> None:
    request = post(b"", extra=(b"Transfer-Encoding: chunked",))
    async with connect(served.port) as (reader, writer):
        for part in (request[:3], request[3:40], request[40:]):
            writer.write(part)
            await writer.drain()
            # So that each part arrives in a read of its own. Nothing to wait on: the lane
            # answers nothing and hands nothing over until the head is whole.
            await asyncio.sleep(0.02)
        writer.write(b"5\r\nsplit\r\n0\r\n\r\n")
        reply = await read_response(reader)
        assert reply.body == b"via-aiohttp:split" and not reply.by_lane


async def test_chunked_post_goes_to_aiohttp(served: listening.Listening) -> None:
    request = (
        post(b"", extra=(b"Transfer-Encoding: chunked",)) + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    reply = await exchange(served.port, request)
    assert reply.status == 200 and reply.body == b"via-aiohttp:abcde" and not reply.by_lane


async def test_expect_continue_goes_to_aiohttp(served: listening.Listening) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(post(b"", length=b"5", extra=(b"Expect: 100-continue",)))
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        reply = await read_response(reader)
        assert reply.body == b"via-aiohttp:hello"


async def test_oversized_body_gets_413_from_aiohttp(served: listening.Listening) -> None:
    reply = await exchange(served.port, post(b"x" * (MAX_BODY + 1)))
    assert reply.status == 413 and not reply.by_lane


async def test_wrong_content_type_gets_415_from_aiohttp(served: listening.Listening) -> None:
    reply = await exchange(served.port, post(content_type=b"text/plain"))
    assert reply.status == 415 and not reply.by_lane


async def test_other_method_and_unknown_path_reach_aiohttp(served: listening.Listening) -> None:
    assert (await exchange(served.port, PLAIN.replace(b"POST", b"PUT", 1))).status == 405
    assert (await exchange(served.port, post(path=b"/nowhere"))).status == 404


async def test_http_1_0_post_goes_to_aiohttp(served: listening.Listening) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(post(version=b"HTTP/1.0"))
        data = await read_eof(reader)
    assert data.startswith(b"HTTP/1.0 200 OK\r\n") or data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"via-aiohttp:hello")


async def test_garbage_gets_400_from_aiohttp(served: listening.Listening) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(b"\x00\x01 not http at all\r\n\r\n")
        data = await read_eof(reader)
    # aiohttp answers in HTTP/1.0 when it could not read the request's version
    assert data.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert b"Server: Horodate" not in data


async def test_connection_close_gets_the_reply_then_eof(served: listening.Listening) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(post(extra=(b"Connection: close",)) + post(b"never answered"))
        reply = await read_response(reader)
        assert reply.by_lane and reply.body == b"lane:hello"
        assert reply.headers["connection"] == "close"
        assert await read_eof(reader) == b""


async def test_an_answer_that_raises_gets_500_and_the_connection_closes(
    served: listening.Listening, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(post(b"raise") + post(b"never answered"))
        reply = await read_response(reader)
        assert reply.status == 500 and reply.headers["connection"] == "close"
        assert await read_eof(reader) == b""
    assert "the answer failed" in caplog.text
    assert (await exchange(served.port, PLAIN)).body == b"lane:hello"  # the server lives on


async def test_a_client_leaving_while_answered_does_not_hurt_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens, app = LaneTokens(), make_app()
    async with listening.listening(app, listening.bind_public(HOST, 0), tokens=tokens) as where:
        async with connect(where.port) as (_, writer):
            writer.write(post(b"slow"))
            await writer.drain()
        async with connect(where.port) as (_, writer):
            writer.write(GET_HEALTH.replace(b"/health", b"/slow"))
            await writer.drain()
        # until both answers were made for clients no longer there (the lane's token
        # committed, aiohttp's /slow written or given up)
        await eventually(
            lambda: tokens.settled == 1 and app[SLOW_ANSWERED], DEADLINE_S, "both answers made"
        )
        assert (await exchange(where.port, PLAIN)).body == b"lane:hello"
        assert (await exchange(where.port, GET_HEALTH)).body == b"healthy"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_without_a_backend_other_requests_get_503() -> None:
    async with bare_lane(LaneConfig(max_body=MAX_BODY, backend=nobody())) as port:
        async with connect(port) as (reader, writer):
            writer.write(GET_HEALTH)
            reply = await read_response(reader)
            assert reply.status == 503 and reply.headers["connection"] == "close"
            assert await read_eof(reader) == b""
        async with connect(port) as (reader, writer):  # after a lane answer, too
            writer.write(PLAIN + GET_HEALTH)
            assert (await read_response(reader)).body == b"lane:hello"
            assert (await read_response(reader)).status == 503
            assert await read_eof(reader) == b""
        assert (await exchange(port, PLAIN)).body == b"lane:hello"


async def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    config = LaneConfig(max_body=MAX_BODY, backend=nobody(), idle_timeout_s=0.3)
    async with bare_lane(config) as port, connect(port) as (reader, _):
        start = time.monotonic()
        assert await read_eof(reader) == b""
        assert 0.25 <= time.monotonic() - start < 1.5


async def test_activity_postpones_the_idle_timeout() -> None:
    config = LaneConfig(max_body=MAX_BODY, backend=nobody(), idle_timeout_s=0.4)
    async with bare_lane(config) as port, connect(port) as (reader, writer):
        start = time.monotonic()
        for _ in range(3):  # 0.6 s in all, never 0.4 s idle
            # The time passing is the scenario (idle, but less than the timeout): nothing
            # happens that could be waited on.
            await asyncio.sleep(0.2)
            writer.write(PLAIN)
            assert (await read_response(reader)).body == b"lane:hello"
        idle_from = time.monotonic()
        assert idle_from - start > config.idle_timeout_s
        assert await read_eof(reader) == b""
        assert 0.35 <= time.monotonic() - idle_from < 2.0


async def test_a_bridged_connection_follows_aiohttps_keep_alive_not_the_lanes(
    served: listening.Listening,
) -> None:
    config = LaneConfig(max_body=MAX_BODY, backend=served.backend, idle_timeout_s=0.2)
    async with bare_lane(config) as port, connect(port) as (reader, writer):
        writer.write(GET_HEALTH)
        assert (await read_response(reader)).body == b"healthy"
        # More than twice the lane's idle timeout, which must not close a bridged
        # connection: nothing happens when it rightly does nothing, so time must pass.
        await asyncio.sleep(0.5)
        writer.write(GET_HEALTH)
        assert (await read_response(reader)).body == b"healthy"


async def test_a_token_whose_record_is_not_durable_is_withheld(
    served: listening.Listening,
) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(post(b"lost") + post(b"kept"))
        first, second = await read_response(reader), await read_response(reader)
    assert (first.status, first.body, first.by_lane) == (200, b"withheld", True)
    assert second.body == b"lane:kept"  # the connection goes on


async def test_a_slow_answer_is_not_cut_by_the_idle_timeout() -> None:
    config = LaneConfig(max_body=MAX_BODY, backend=nobody(), idle_timeout_s=0.1)
    async with bare_lane(config) as port, connect(port) as (reader, writer):
        writer.write(post(b"slow"))  # 0.2 s to answer: twice the idle timeout
        assert (await read_response(reader)).body == b"lane:slow"


async def test_half_close_after_a_post_still_gets_the_reply(served: listening.Listening) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(post(b"slow"))
        writer.write_eof()
        reply = await read_response(reader)
        assert reply.body == b"lane:slow"
        assert await read_eof(reader) == b""


async def test_half_close_after_a_get_through_the_bridge_ends_as_aiohttp_ends_it(
    served: listening.Listening,
) -> None:
    """aiohttp closes a connection on EOF (``RequestHandler.eof_received``), which may drop
    the response in progress; through the bridge the client sees what it sees from aiohttp
    directly — an end, with nothing or the whole response — never a hang or a fragment."""

    async def half_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(GET_HEALTH)
        writer.write_eof()
        try:
            return await read_eof(reader)  # within DEADLINE_S
        finally:
            writer.close()

    direct = await half_closed(*await asyncio.open_unix_connection(served.backend))
    async with connect(served.port) as (reader, writer):
        bridged = await half_closed(reader, writer)
    for data in (direct, bridged):
        assert data == b"" or (
            data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"healthy")
        ), data


async def test_half_close_after_pipelined_posts_still_gets_every_reply(
    served: listening.Listening,
) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(post(b"slow") + post(b"two") + post(b"three"))
        writer.write_eof()
        data = await read_eof(reader)
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.endswith(b"lane:three")


async def test_half_close_before_a_bridged_request_is_passed_on_not_left_hanging(
    served: listening.Listening,
) -> None:
    """The EOF came while the lane was answering; the next request goes to aiohttp with the
    EOF after it, so the connection ends (aiohttp's own way) instead of idling for 75 s."""
    async with connect(served.port) as (reader, writer):
        writer.write(post(b"slow") + GET_HEALTH)
        writer.write_eof()
        first = await read_response(reader)
        rest = await read_eof(reader)  # within DEADLINE_S, not aiohttp's keep-alive
    assert first.body == b"lane:slow"
    assert rest == b"" or rest.startswith(b"HTTP/1.1 200 OK")


async def test_without_a_tsa_everything_goes_to_aiohttp() -> None:
    async with listening.listening(make_app(), listening.bind_public(HOST, 0)) as where:
        reply = await exchange(where.port, PLAIN)
    assert reply.body == b"via-aiohttp:hello" and not reply.by_lane


async def test_the_default_answer_is_the_apps_tsa_service(
    timekeeper: Timekeeper, clock: VirtualClock, tsa_service: Any
) -> None:
    feed_agreeing_sources(timekeeper, clock)
    service: TsaService = tsa_service()
    app = create_app(ServerConfig(max_request_bytes=MAX_BODY), timekeeper, tsa=service)
    q = build_request(hashlib.sha256(b"fast lane").digest(), digest=Digest.SHA256, nonce=7)
    async with listening.listening(app, listening.bind_public(HOST, 0)) as where:
        reply = await exchange(where.port, post(q.der))
    assert reply.status == 200 and reply.by_lane
    token = parse_reply(reply.body)
    assert token.granted and token.info is not None and token.info.nonce == 7
    assert service.granted == 1


async def test_listening_reports_where_and_stops_listening_on_exit() -> None:
    public = listening.bind_public(HOST, 0)
    port = public.getsockname()[1]
    async with listening.listening(make_app(), public, tokens=LaneTokens()) as where:
        assert (where.host, where.port) == (HOST, port)
        assert where.backend.startswith("\0horodate-app-")
        backend = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with backend:  # the application answers on its private socket too
            backend.setblocking(False)
            await asyncio.get_running_loop().sock_connect(backend, where.backend)
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection(HOST, port), DEADLINE_S)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as backend, pytest.raises(OSError):
        backend.connect(where.backend)


async def test_bridged_connections_are_closed_when_listening_exits() -> None:
    async with listening.listening(
        make_app(), listening.bind_public(HOST, 0), tokens=LaneTokens()
    ) as w:
        reader, writer = await asyncio.open_connection(HOST, w.port)
        writer.write(GET_HEALTH)
        assert (await read_response(reader)).body == b"healthy"
    try:
        assert await read_eof(reader) == b""
    finally:
        writer.close()


async def test_lane_connections_are_not_answered_after_listening_exits() -> None:
    async with listening.listening(
        make_app(), listening.bind_public(HOST, 0), tokens=LaneTokens()
    ) as w:
        reader, writer = await asyncio.open_connection(HOST, w.port)
        writer.write(PLAIN)
        assert (await read_response(reader)).body == b"lane:hello"
    try:
        writer.write(post(b"after exit"))
        data = await asyncio.wait_for(reader.read(1000), DEADLINE_S)  # an answer, or EOF
        assert data == b"", data
    finally:
        writer.close()


async def test_a_client_that_never_reads_cannot_grow_the_write_buffer_without_bound() -> None:
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []

    class SmallSendBuffer(FastLane):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            transports.append(cast(asyncio.Transport, transport))
            super().connection_made(transport)

    config = LaneConfig(max_body=MAX_BODY, backend=nobody())
    flush = lane_flush()
    server = await loop.create_server(lambda: SmallSendBuffer(flush, config), HOST, 0)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        await loop.sock_connect(client, server.sockets[0].getsockname())
        data = post(b"x" * 100) * 10_000  # 2 MB of requests, never a reply read
        sent, peak, stalled_since = 0, 0, None
        while sent < len(data) and peak < 1_000_000:
            try:
                sent += client.send(data[sent : sent + 65536])
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or loop.time()
                if loop.time() - stalled_since > 0.5:
                    break  # the server stopped reading: back-pressure reached the client
            await asyncio.sleep(0.005)
            peak = max([peak, *(t.get_write_buffer_size() for t in transports)])
        # Let the lane answer what it has read, watching the buffers: a bound that must
        # hold over a while, not an event (nothing is read, so nothing else happens).
        for _ in range(20):
            await asyncio.sleep(0.01)
            peak = max([peak, *(t.get_write_buffer_size() for t in transports)])
        assert peak < 256 * 1024, f"{peak} bytes of replies buffered for a client not reading"
    finally:
        client.close()
        server.close()


def test_bind_public_makes_a_listening_nonblocking_socket() -> None:
    with listening.bind_public(HOST, 0) as sock:
        assert sock.family == socket.AF_INET and sock.getsockname()[1] != 0
        assert not sock.getblocking()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        with pytest.raises(OSError):
            listening.bind_public(HOST, sock.getsockname()[1])  # taken


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python build")
def test_bind_public_ipv6() -> None:
    with listening.bind_public("::1", 0) as sock:
        assert sock.family == socket.AF_INET6


def test_abstract_socket_names_are_fresh() -> None:
    a, b = listening.abstract_socket_name("x"), listening.abstract_socket_name("x")
    assert a != b and a.startswith("\0horodate-x-") and b.startswith("\0horodate-x-")


# --- a random fuzz over real sockets -------------------------------------------------------

SOCKET_FUZZ_CASES = 200
SEEDS = (
    PLAIN,
    post(b"x" * 20, extra=(b"Connection: close",)),
    GET_HEALTH,
    post(b"", extra=(b"Transfer-Encoding: chunked",)) + b"2\r\nab\r\n0\r\n\r\n",
    PLAIN + GET_HEALTH + PLAIN,
    post(b"x" * (MAX_BODY + 1)),
)


def socket_fuzz_cases(rng: random.Random) -> list[bytes]:
    alphabet = b"\r\n\x00\t :,-0123456789aAzZ\x7f\xff"
    cases = []
    for i in range(SOCKET_FUZZ_CASES):
        if i % 4 == 0:
            cases.append(rng.randbytes(rng.randrange(1, 200)))
            continue
        buf = bytearray(rng.choice(SEEDS))
        for _ in range(rng.randrange(1, 5)):
            at = rng.randrange(len(buf) + 1)
            op = rng.choice(["replace", "insert", "delete", "cut"])
            if op == "replace" and at < len(buf):
                buf[at] = rng.choice(alphabet)
            elif op == "insert":
                buf[at:at] = bytes([rng.choice(alphabet)]) * rng.randrange(1, 4)
            elif op == "delete":
                del buf[at : at + rng.randrange(1, 8)]
            elif op == "cut" and at > 0:
                del buf[at:]
        cases.append(bytes(buf))
    return cases


VERSIONS = (b"HTTP/1.1 ", b"HTTP/1.0 ", b"HTTP/0.9 ")


def split_responses(data: bytes) -> list[int]:
    """The statuses of the complete HTTP/1.x responses that make up ``data`` (all of it)."""
    statuses = []
    while data:
        head, end, data = data.partition(b"\r\n\r\n")
        assert end, head
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert (version + " ").encode() in VERSIONS, status_line
        statuses.append(int(status))
        if statuses[-1] < 200:
            continue
        headers = dict(line.split(": ", 1) for line in lines)
        length = int(headers["Content-Length"])
        assert len(data) >= length
        data = data[length:]
    return statuses


FUZZ_ANSWER_S = 0.1  # how long an answer may take before the client sends its EOF


async def fuzz_one(port: int, data: bytes) -> bytes:
    async with connect(port) as (reader, writer):
        writer.write(data)
        # Wait for the first answer (aiohttp drops its answer once it sees EOF), or, when
        # none comes in time (a request incomplete, waiting for more bytes), go on.
        try:
            first = await asyncio.wait_for(reader.read(65536), FUZZ_ANSWER_S)
        except TimeoutError:
            first = b""
        except ConnectionResetError:
            return b""
        with suppress(OSError):  # the server may have closed already
            writer.write_eof()  # the end, so that no incomplete request waits for more
        try:
            return first + await read_eof(reader)
        except ConnectionResetError:
            return first


async def test_socket_fuzz_every_connection_is_answered_or_closed(
    served: listening.Listening,
) -> None:
    cases = socket_fuzz_cases(random.Random(20261128))
    results: list[bytes | BaseException] = []
    for start in range(0, len(cases), 50):
        batch = cases[start : start + 50]
        results += await asyncio.gather(
            *(fuzz_one(served.port, data) for data in batch), return_exceptions=True
        )
    statuses = []
    for data, result in zip(cases, results, strict=True):
        assert not isinstance(result, BaseException), (data, result)
        # aiohttp answers in the version it read, HTTP/1.0 when it could not read one (and
        # "HTTP/0.9" for a request line without a version: aiohttp's, not the lane's, quirk)
        assert result == b"" or result.startswith(VERSIONS), (data, result)
        statuses += split_responses(result)
    assert 200 in statuses and 400 in statuses  # both the lane and aiohttp were exercised
    # and the server is none the worse
    assert (await exchange(served.port, PLAIN)).body == b"lane:hello"
    assert (await exchange(served.port, GET_HEALTH)).body == b"healthy"


# --- the same on uvloop, the appliance's event loop -----------------------------------------

UNDER_UVLOOP = {
    f.__name__.removeprefix("test_"): f
    for f in (
        test_plain_post_is_answered_by_the_lane,
        test_a_request_written_byte_by_byte_is_answered_by_the_lane,
        test_pipelined_posts_are_answered_in_order,
        test_get_after_post_goes_to_aiohttp_and_the_connection_keeps_working,
        test_pipelined_post_then_get_keep_their_order,
        test_a_hand_over_split_across_writes_reaches_aiohttp_whole,
        test_chunked_post_goes_to_aiohttp,
        test_oversized_body_gets_413_from_aiohttp,
        test_connection_close_gets_the_reply_then_eof,
        test_half_close_after_a_post_still_gets_the_reply,
        test_socket_fuzz_every_connection_is_answered_or_closed,
    )
}


@pytest.mark.parametrize("scenario", UNDER_UVLOOP.values(), ids=UNDER_UVLOOP.keys())
def test_under_uvloop(scenario: Any) -> None:
    """``horodate appliance`` runs on uvloop, whose transports differ from asyncio's."""

    async def run() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        public = listening.bind_public(HOST, 0)
        async with listening.listening(make_app(), public, tokens=LaneTokens()) as where:
            await scenario(where)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())


def test_bare_lane_under_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(test_without_a_backend_other_requests_get_503())
        runner.run(test_an_idle_connection_is_closed_after_the_idle_timeout())


# --- grouping the tokens' records -----------------------------------------------------------


class GroupedTokens:
    """A TSA that records the groups of records it is asked to make durable (at once)."""

    def __init__(self) -> None:
        self.groups: list[list[bytes]] = []
        self.signed: list[list[bytes]] = []  # the requests of each sign_all

    def sign_all(self, bodies: Sequence[bytes]) -> list[tuple[bytes, bytes | None]]:
        self.signed.append(list(bodies))
        return [(b"token:" + body, body) for body in bodies]

    def commit(self, records: list[bytes], done: Callable[[bool], None]) -> None:
        self.groups.append(records)
        asyncio.get_running_loop().call_soon(done, True)

    def withheld(self) -> bytes:
        return b"withheld"


class RepliedLane:
    """Stands for a connection: keeps the answers it is given."""

    def __init__(self) -> None:
        self.replies: list[bytes | None] = []

    def reply(self, der: bytes | None, close: bool) -> None:
        self.replies.append(der)

    def close(self) -> None:
        self.replies.append(b"closed")


async def iterations(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_requests_arriving_while_a_group_forms_are_committed_together() -> None:
    tokens, lane = GroupedTokens(), RepliedLane()
    flush = Flush(tokens, group_wait_s=10.0)
    for body in (b"1", b"2", b"3"):  # one request per event-loop iteration
        flush.add(cast(FastLane, lane), body, False)
        await iterations(1)
    assert tokens.groups == []  # still arriving: the group waits
    await iterations(3)
    assert tokens.groups == [[b"1", b"2", b"3"]]
    assert lane.replies == [b"token:1", b"token:2", b"token:3"]  # after the commit, in order


async def test_a_lone_request_waits_one_iteration_not_the_group_wait() -> None:
    tokens, lane = GroupedTokens(), RepliedLane()
    flush = Flush(tokens, group_wait_s=10.0)
    flush.add(cast(FastLane, lane), b"alone", False)
    await iterations(3)
    assert tokens.groups == [[b"alone"]] and lane.replies == [b"token:alone"]


async def test_the_requests_of_an_iteration_are_signed_together() -> None:
    tokens, lanes = GroupedTokens(), [RepliedLane() for _ in range(4)]
    flush = Flush(tokens, group_wait_s=10.0)
    for lane, body in zip(lanes[:3], (b"1", b"2", b"3"), strict=True):  # one iteration
        flush.add(cast(FastLane, lane), body, False)
    await iterations(1)
    flush.add(cast(FastLane, lanes[3]), b"4", False)  # the next
    await iterations(3)
    assert tokens.signed == [[b"1", b"2", b"3"], [b"4"]]
    assert tokens.groups == [[b"1", b"2", b"3", b"4"]]
    assert [lane.replies for lane in lanes] == [[b"token:%d" % i] for i in range(1, 5)]


async def test_a_batch_that_fails_is_answered_request_by_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lanes = [RepliedLane() for _ in range(3)]
    flush = Flush(LaneTokens(), group_wait_s=10.0)
    for lane, body in zip(lanes, (b"one", b"raise", b"two"), strict=True):
        flush.add(cast(FastLane, lane), body, False)
    await iterations(3)
    # only the request that fails gets the 500; its neighbours are answered
    assert [lane.replies for lane in lanes] == [[b"lane:one"], [None], [b"lane:two"]]
    assert "answering each alone" in caplog.text


class MiscountingTokens(GroupedTokens):
    """Answers one request too few when given several (a bug)."""

    def sign_all(self, bodies: Sequence[bytes]) -> list[tuple[bytes, bytes | None]]:
        answers = super().sign_all(bodies)
        return answers[:-1] if len(bodies) > 1 else answers


async def test_a_batch_answered_short_is_answered_request_by_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens, lanes = MiscountingTokens(), [RepliedLane() for _ in range(3)]
    flush = Flush(tokens, group_wait_s=10.0)
    for lane, body in zip(lanes, (b"1", b"2", b"3"), strict=True):
        flush.add(cast(FastLane, lane), body, False)
    await iterations(3)
    assert [lane.replies for lane in lanes] == [[b"token:1"], [b"token:2"], [b"token:3"]]
    assert "2 answers to 3 requests" in caplog.text


class SlowTokens(GroupedTokens):
    """Signing takes 20 ms a batch."""

    def sign_all(self, bodies: Sequence[bytes]) -> list[tuple[bytes, bytes | None]]:
        time.sleep(0.02)
        return super().sign_all(bodies)


async def test_the_group_wait_counts_from_the_first_tokens_signed() -> None:
    tokens, lane = SlowTokens(), RepliedLane()
    flush = Flush(tokens, group_wait_s=0.01)  # shorter than one signing
    flush.add(cast(FastLane, lane), b"1", False)
    await iterations(1)
    flush.add(cast(FastLane, lane), b"2", False)  # arrives while the group forms
    await iterations(4)
    # counted from the request's arrival, the wait would be over after the first signing
    # and "1" committed alone
    assert tokens.groups == [[b"1", b"2"]]


async def test_a_steady_stream_is_cut_into_groups_at_the_group_wait() -> None:
    tokens, lane = GroupedTokens(), RepliedLane()
    flush = Flush(tokens, group_wait_s=0.01)
    loop = asyncio.get_running_loop()
    end, sent = loop.time() + 0.1, 0
    while loop.time() < end:  # a request every iteration for 0.1 s: never quiet
        flush.add(cast(FastLane, lane), b"%d" % sent, False)
        sent += 1
        await iterations(1)
    await iterations(3)
    # cut by the wait (each group lasts 0.01 s at least: ~10), not one group for the stream
    assert 2 <= len(tokens.groups) <= 12
    assert [r for group in tokens.groups for r in group] == [b"%d" % i for i in range(sent)]
    assert lane.replies == [b"token:%d" % i for i in range(sent)]


# Request smuggling (RFC 9112 §6.3, §11.2): each of these is read differently by different
# parsers, or refused by a strict one. Through the real public socket none may be answered
# by the lane, each must get 400 and the connection closed, and the request smuggled
# behind it must never be answered.
_SMUGGLED = post(b"smuggled")
_AMBIGUOUS = {
    "content-length and transfer-encoding": head_with(
        b"Host: tsa.test", b"Content-Type: " + TSQ, b"Content-Length: 13",
        b"Transfer-Encoding: chunked",
    ) + b"0\r\n\r\n" + _SMUGGLED,
    "two content-lengths": head_with(
        b"Host: tsa.test", b"Content-Type: " + TSQ, b"Content-Length: 5",
        b"Content-Length: 13",
    ) + b"hello" + _SMUGGLED,
    "obsolete line folding": head_with(
        b"Host: tsa.test", b"Content-Type: " + TSQ, b"Content-Length: 5",
        b" Transfer-Encoding: chunked",
    ) + b"hello" + _SMUGGLED,
    "a bare LF": REQUEST_LINE + b"Host: tsa.test\nContent-Length: 0\r\nContent-Type: " + TSQ
    + b"\r\nContent-Length: 5\r\n\r\nhello" + _SMUGGLED,
    "space before the colon": head_with(
        b"Host: tsa.test", b"Content-Type: " + TSQ, b"Content-Length : 5",
    ) + b"hello" + _SMUGGLED,
    "a control byte in a name": head_with(
        b"Host: tsa.test", b"Content-Type: " + TSQ, b"Content-Length: 5", b"X-\x01: y",
    ) + b"hello" + _SMUGGLED,
    "an unknown transfer coding": head_with(
        b"Host: tsa.test", b"Content-Type: " + TSQ, b"Transfer-Encoding: xchunked",
    ) + b"5\r\nhello\r\n0\r\n\r\n" + _SMUGGLED,
    "a negative content-length": head_with(
        b"Host: tsa.test", b"Content-Type: " + TSQ, b"Content-Length: -5",
    ) + b"hello" + _SMUGGLED,
}  # fmt: skip


@pytest.mark.parametrize("request_bytes", list(_AMBIGUOUS.values()), ids=list(_AMBIGUOUS))
async def test_ambiguous_framing_gets_400_and_the_connection_closed(
    served: listening.Listening, request_bytes: bytes
) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(request_bytes)
        data = await read_eof(reader)
    assert data.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), data[:200]
    assert data.count(b"HTTP/1.") == 1, data  # one answer, then the connection closed
    assert b"smuggled" not in data and b"lane:" not in data
