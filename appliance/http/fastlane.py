"""The fast lane: ``POST /tsa`` in its plain form, answered without the web framework.

aiohttp costs as much CPU per request as the token itself (benchmarks/RESULTS.md); a time-stamp
request is one small, fixed shape. So the public socket is served by :class:`FastLane`, an
``asyncio.Protocol`` that frames requests itself and answers exactly one form:

    POST /tsa HTTP/1.1, one Host, one Content-Length within the cap,
    Content-Type: application/timestamp-query, no Transfer-Encoding, Expect or Upgrade

Anything else — another path or method, HTTP/1.0, a chunked body, a header it does not
understand, a head over 8 KiB, a control character — is never half-answered: from that
request on, the connection's bytes are passed through untouched to the aiohttp
application listening on a private Unix socket (:class:`_Bridge`), which serves every
route with aiohttp's full HTTP semantics (and its 413/415/405 answers). The lane only
decides at a request boundary, with nothing of its own in flight, so replies keep their
order.

Requests on one connection are answered one at a time, in order (pipelining is allowed).
An idle keep-alive connection is closed after ``idle_timeout_s``.

Tokens are signed as requests arrive; the issuance-log records of a group of tokens — those
signed until an event-loop iteration brings no more requests, or for half a millisecond at
most — go to the log's writer thread together (:class:`Flush`: one hand-off and one
callback per group, not per token), which writes and fsyncs them with whatever else is
pending, and only then do the replies leave — the group commit of a database's
write-ahead log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from dataclasses import dataclass
from typing import Final, NamedTuple, cast

from appliance.http.group_commit import Flush

log = logging.getLogger(__name__)


MAX_HEAD_BYTES: Final = 8192


REQUEST_LINE: Final = b"POST /tsa HTTP/1.1\r\n"


QUERY_TYPE: Final = b"application/timestamp-query"


REPLY_TYPE: Final = b"application/timestamp-reply"


_END: Final = b"\r\n\r\n"


# A control character other than HT anywhere in the head (bare LF and CR included).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


class Framed(NamedTuple):
    """One request the lane serves: the head's length, the body's, and Connection: close."""

    head_len: int
    body_len: int
    close: bool


NOT_OURS: Final = "not ours"


def frame(buf: bytes | bytearray, max_body: int) -> Framed | str | None:
    """Frame the request at the start of ``buf``.

    Returns :class:`Framed` for a request the lane serves (its body may not be complete
    yet), ``None`` while more bytes are needed to decide, or :data:`NOT_OURS`.
    """
    end = buf.find(_END, 0, MAX_HEAD_BYTES + len(_END))
    if end < 0:
        prefix = bytes(buf[: len(REQUEST_LINE)])
        if len(buf) > MAX_HEAD_BYTES or not REQUEST_LINE.startswith(prefix):
            return NOT_OURS
        return None
    head = bytes(buf[: end + 2])  # the request line and the headers, each ending in CRLF
    try:
        framed = _heads[head]
    except KeyError:
        parsed = _parse_head(head)
        framed = None if parsed is None else Framed(end + len(_END), *parsed)
        if len(head) <= _HEAD_CACHE_MAX_BYTES:
            if len(_heads) >= _HEAD_CACHE_SIZE:
                _heads.clear()
            _heads[head] = framed
    if framed is None or framed.body_len > max_body:
        return NOT_OURS
    return framed


# A client sends the same head with every request of a connection (and clients of one kind
# the same as each other): what each recent head frames to is kept, keyed by its bytes.
_HEAD_CACHE_SIZE: Final = 256


_HEAD_CACHE_MAX_BYTES: Final = 1024


_heads: dict[bytes, Framed | None] = {}


def _parse_head(head: bytes) -> tuple[int, bool] | None:
    """(Content-Length, Connection: close) of a head the lane serves, else None."""
    if not head.startswith(REQUEST_LINE) or _CONTROL.search(head.replace(b"\r\n", b"")):
        return None
    length: int | None = None
    typed = close = False
    hosts = 0
    for line in head[len(REQUEST_LINE) : -2].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            return None  # no colon, whitespace before it, obsolete line folding
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"content-length":
            if length is not None or not value.isdigit() or len(value) > 9:
                return None
            length = int(value)
        elif name == b"content-type":
            if typed or value.lower() != QUERY_TYPE:
                return None
            typed = True
        elif name == b"connection":
            options = {o.strip(b" \t").lower() for o in value.split(b",")}
            if not options <= {b"keep-alive", b"close"}:
                return None
            close = close or b"close" in options
        elif name == b"host":
            hosts += 1
        elif name in (b"transfer-encoding", b"expect", b"upgrade"):
            return None
    if length is None or not typed or hosts != 1:  # RFC 9112 §3.2
        return None
    return length, close


class _HttpDate:
    """The Date header (RFC 9110 §6.6.1), formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
        return self._value


_date = _HttpDate()


def reply_head(body_len: int, *, close: bool) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nServer: Horodate\r\nDate: %s\r\nContent-Type: %s\r\n"
        b"Content-Length: %d\r\n%s\r\n"
        % (_date(), REPLY_TYPE, body_len, b"Connection: close\r\n" if close else b"")
    )


@dataclass(frozen=True, slots=True)
class LaneConfig:
    max_body: int  # the TimeStampReq size cap; larger requests go to aiohttp (413)
    backend: str  # Unix socket of the aiohttp application (a leading NUL: abstract)
    idle_timeout_s: float = 75.0  # aiohttp's keep-alive default


class FastLane(asyncio.Protocol):
    """One client connection on the public socket."""

    def __init__(self, flush: Flush, config: LaneConfig) -> None:
        self._flush = flush
        self._config = config
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False  # a request of ours is being answered
        self._closing = False
        self._eof = False  # the client half-closed: answer what it sent, then close
        self._write_paused = False  # the client is not reading our replies fast enough
        self._bridge: _Bridge | None = None
        self._last_active = 0.0
        self._idle: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._flush.lanes.add(self)
        self._last_active = self._loop.time()
        self._idle = self._loop.call_later(self._config.idle_timeout_s, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self._bridge is not None:
            self._bridge.to_backend(data)
            return
        self._last_active = self._loop.time()
        self._buf += data
        if not self._busy:
            self._next()
        elif len(self._buf) > MAX_HEAD_BYTES + self._config.max_body:
            assert self._transport is not None
            self._transport.pause_reading()  # a flood of pipelined requests: wait our turn

    def eof_received(self) -> bool:
        if self._bridge is not None:
            self._bridge.client_eof()  # aiohttp closes on EOF, as it does without the lane
            return True
        self._eof = True  # answer the requests already received, then close
        if not self._busy:
            self._next()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._flush.lanes.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._bridge is not None:
            self._bridge.close()

    def pause_writing(self) -> None:
        if self._bridge is not None:
            self._bridge.pause_backend()
            return
        self._write_paused = True  # no more requests until the client reads its replies
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._bridge is not None:
            self._bridge.resume_backend()
            return
        self._write_paused = False
        if self._transport is not None and not self._busy:
            self._transport.resume_reading()
            self._next()

    def close(self) -> None:
        """Close the connection now (the server is stopping)."""
        if self._transport is not None:
            self._transport.close()

    # -- requests --------------------------------------------------------------------------

    def _next(self) -> None:
        """Serve the request at the head of the buffer, if it is complete."""
        transport = self._transport
        if transport is None or self._closing or self._write_paused:
            return
        if not self._buf:
            if self._eof:
                transport.close()
            return
        framed = frame(self._buf, self._config.max_body)
        if framed is None:
            if self._eof:
                transport.close()  # an incomplete request will not be completed
            return
        if not isinstance(framed, Framed) or not self._flush.serves_tokens:
            self._hand_over()
            return
        end = framed.head_len + framed.body_len
        if len(self._buf) < end:
            if self._eof:
                transport.close()
            return
        body = bytes(self._buf[framed.head_len : end])
        del self._buf[:end]
        self._busy = True
        self._flush.add(self, body, framed.close)

    def reply(self, der: bytes | None, close: bool) -> None:
        """Send one answer (``None``: the TSA failed unexpectedly), then the next request."""
        self._busy = False
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if der is None:
            transport.write(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )
            transport.close()
            return
        transport.write(reply_head(len(der), close=close) + der)
        self._last_active = self._loop.time()
        if close or self._closing:
            transport.close()
            return
        if not self._write_paused:
            transport.resume_reading()
        self._next()

    def _hand_over(self) -> None:
        """From this request on, the connection belongs to the aiohttp application."""
        assert self._transport is not None
        self._bridge = _Bridge(self._transport, self._config.backend)
        data, self._buf = bytes(self._buf), bytearray()
        self._bridge.to_backend(data)
        if self._eof:  # the client half-closed before this request's turn came
            self._bridge.client_eof()

    def _check_idle(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing() or self._bridge is not None:
            return  # a bridged connection follows the backend's keep-alive
        idle = self._loop.time() - self._last_active
        if idle >= self._config.idle_timeout_s and not self._busy:
            transport.close()
            return
        self._idle = self._loop.call_later(
            max(0.1, self._config.idle_timeout_s - idle), self._check_idle
        )


class _Bridge:
    """Bytes both ways between a client connection and the aiohttp application."""

    def __init__(self, client: asyncio.Transport, backend: str) -> None:
        self._client = client
        self._backend: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._eof = False
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._connect(backend))

    async def _connect(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, path)
            transport, _ = await loop.create_unix_connection(
                lambda: _BackendSide(self._client), sock=sock
            )
        except OSError as e:
            sock.close()
            log.error("http: the application socket is not answering: %s", e)
            self._client.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )
            self._client.close()
            return
        if self._closed:
            transport.close()
            return
        backend = self._backend = transport
        for data in self._pending:
            backend.write(data)
        self._pending.clear()
        if self._eof and backend.can_write_eof():
            backend.write_eof()

    def to_backend(self, data: bytes) -> None:
        if self._backend is None:
            self._pending.append(data)
        else:
            self._backend.write(data)

    def client_eof(self) -> None:
        self._eof = True
        if self._backend is not None and self._backend.can_write_eof():
            self._backend.write_eof()

    def pause_backend(self) -> None:
        if self._backend is not None:
            self._backend.pause_reading()

    def resume_backend(self) -> None:
        if self._backend is not None:
            self._backend.resume_reading()

    def close(self) -> None:
        self._closed = True
        if self._backend is not None:
            self._backend.close()


class _BackendSide(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self._client = client
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self._client.write(data)

    def eof_received(self) -> bool:
        self._client.close()  # after what is buffered has been written
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._client.close()

    def pause_writing(self) -> None:
        self._client.pause_reading()  # the backend is slow: stop reading the client

    def resume_writing(self) -> None:
        self._client.resume_reading()
