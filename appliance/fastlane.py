"""The fast lane: ``POST /tsa`` in its plain form, answered without the web framework.

aiohttp costs about 100 µs of CPU per request here, as much as the token itself; a time-stamp
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
import select
import socket
import time
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol, cast

log = logging.getLogger(__name__)

MAX_HEAD_BYTES: Final = 8192
# How long a group of tokens may wait for more requests before its records are committed.
GROUP_WAIT_S: Final = 0.0005
REQUEST_LINE: Final = b"POST /tsa HTTP/1.1\r\n"
QUERY_TYPE: Final = b"application/timestamp-query"
REPLY_TYPE: Final = b"application/timestamp-reply"
_END: Final = b"\r\n\r\n"
# A control character other than HT anywhere in the head (bare LF and CR included).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


class Tokens(Protocol):
    """What the lane needs of the TSA (``appliance.server.TsaService``)."""

    def sign_all(self, bodies: Sequence[bytes]) -> list[tuple[bytes, bytes | None]]:
        """For each request: (reply DER, issuance-log record that must be durable first,
        or None)."""
        ...

    def commit(self, records: list[bytes], done: Callable[[bool], None]) -> None:
        """Have the records made durable; then ``done(True)``, or ``done(False)``: withhold
        their tokens. ``done`` runs in the event loop."""
        ...

    def withheld(self) -> bytes:
        """The reply in place of a token whose record is not durable."""
        ...


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

    def _reply(self, der: bytes | None, close: bool) -> None:
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


class Flush:
    """Replies waiting for their tokens' records, made durable a group at a time.

    The requests an event-loop iteration brings are signed together once it has read them
    all (``Tokens.sign_all``: the signatures back to back, where the key's tables stay in
    the processor's caches). A group is handed to the issuance log once an iteration brings
    no more requests, or :data:`GROUP_WAIT_S` after its first tokens were signed: while
    requests pour in, fewer and fuller commits (each costs the system its wake-ups and
    flushes, whatever its size); a request that comes alone waits one iteration, a few
    microseconds (ADR 0007).
    """

    def __init__(self, tokens: Tokens | None, *, group_wait_s: float = GROUP_WAIT_S) -> None:
        """``tokens``: the TSA; ``None``, an application without one: every request goes
        to aiohttp."""
        self._tokens = tokens
        self._group_wait_s = group_wait_s
        self.lanes: set[FastLane] = set()  # the open connections, to close when stopping
        self._unsigned: list[tuple[FastLane, bytes, bool]] = []  # read, not yet signed
        self._pending: list[tuple[FastLane, bytes, bytes | None, bool]] = []  # signed
        self._scheduled = False
        self._seen = 0  # requests in the group at the last look
        self._first_at = 0.0  # when the group's first tokens were signed (monotonic)

    @property
    def serves_tokens(self) -> bool:
        return self._tokens is not None

    def add(self, lane: FastLane, body: bytes, close: bool) -> None:
        """Answer ``lane``'s request ``body`` once signed and durable."""
        assert self._tokens is not None, "the lane hands requests over when there is no TSA"
        self._unsigned.append((lane, body, close))
        if not self._scheduled:
            self._scheduled = True
            self._seen = 0
            asyncio.get_running_loop().call_soon(self._when_quiet)

    def close_all(self) -> None:
        """Close every connection (the server stops: nothing is answered after this)."""
        for lane in list(self.lanes):
            lane.close()

    def _when_quiet(self) -> None:
        """Sign what the last iteration brought; commit the group, unless that was more
        requests and the group may still wait: then look again after the next."""
        if self._unsigned:
            self._sign()
        count = len(self._pending)
        if count > self._seen and time.monotonic() - self._first_at < self._group_wait_s:
            self._seen = count
            asyncio.get_running_loop().call_soon(self._when_quiet)
            return
        self._run()

    def _sign(self) -> None:
        assert self._tokens is not None  # unsigned only fills through add()
        batch, self._unsigned = self._unsigned, []
        bodies = [body for _, body, _ in batch]
        try:
            answers: list[tuple[bytes, bytes | None] | None] = list(self._tokens.sign_all(bodies))
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers to {len(batch)} requests")
        except Exception:
            log.exception("tsa: answering %d requests failed; answering each alone", len(batch))
            answers = [self._sign_alone(body) for body in bodies]
        if not self._pending:
            self._first_at = time.monotonic()
        for (lane, _, close), answer in zip(batch, answers, strict=True):
            if answer is None:
                lane._reply(None, close=True)
            else:
                self._pending.append((lane, answer[0], answer[1], close))

    def _sign_alone(self, body: bytes) -> tuple[bytes, bytes | None] | None:
        """One request's answer, or None: it fails (the connection gets a 500)."""
        assert self._tokens is not None
        try:
            [answer] = self._tokens.sign_all([body])  # ValueError unless exactly one
        except Exception:
            log.exception("tsa: answering failed; closing the connection")
            return None
        return answer

    def _run(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        assert self._tokens is not None  # pending only fills through add()
        records = [record for _, _, record, _ in pending if record is not None]
        if not records:
            self._deliver(pending, True)
            return
        try:
            self._tokens.commit(records, lambda durable: self._deliver(pending, durable))
        except Exception:
            log.exception("tsa: the issuance log failed unexpectedly")
            self._deliver(pending, False)

    def _deliver(
        self, pending: list[tuple[FastLane, bytes, bytes | None, bool]], durable: bool
    ) -> None:
        assert self._tokens is not None
        withheld = None if durable else self._tokens.withheld()
        for lane, der, record, close in pending:
            lane._reply(der if durable or record is None else withheld, close)


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


# Connection counts of processes that do not accept (stopped, dead, not started yet).
NOT_ACCEPTING: Final = -1


class BalancedAcceptor:
    """Accepts on a listening socket that several processes share, only while this process
    holds no more connections than any other that accepts.

    The kernel hands a burst of new connections to whichever process wakes first, and
    that process takes all it can: 16 keep-alive clients came out 16/0 or 11/5 between two
    processes as often as 8/8, and a process with few connections makes small, costly
    group commits while the other is overloaded. Each process's count of open connections
    is kept in ``counts`` (shared memory, one slot each; :data:`NOT_ACCEPTING` for a
    process that does not accept), and a process accepts one connection at a time, while
    its count is the lowest; a process that is not stops reading the socket and looks again
    every ``tick_s`` (a process that reads it needs no timer: its count is refreshed at each
    accept, and one left high by connections since closed only lets the others accept).
    Counts are read without a lock: two processes may both accept at once, and the next
    connections even it out.

    A count left behind by a process that died (until the main process retires its slot)
    must not stop every accept: a connection that waits in the queue longer than
    ``stall_s`` is accepted whatever the counts say.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        connections: Callable[[], int],
        counts: MutableSequence[int],
        me: int,
        *,
        tick_s: float = 0.01,
        stall_s: float = 0.05,
    ) -> None:
        """``connections``: this process's open connections (e.g. ``len(flush.lanes)``);
        ``counts[me]`` is this process's slot."""
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._factory = protocol_factory
        self._connections = connections
        self._counts = counts
        self._me = me
        self._tick_s, self._stall_s = tick_s, stall_s
        self._connecting = 0  # accepted, transport not made yet
        self._reading = False
        self._closed = False
        self._ticking = False  # a look is scheduled (only while not reading)
        self._queued_since: float | None = None  # paused with connections waiting
        self._warn_after = 0.0
        self._poll = select.poll()  # not select(): no limit on the descriptor's number
        self._poll.register(sock, select.POLLIN)
        sock.setblocking(False)
        self._publish()
        self._tick()

    def close(self) -> None:
        """Stop accepting (connections already accepted stay open)."""
        self._closed = True
        self._pause()
        self._counts[self._me] = NOT_ACCEPTING

    async def wait_closed(self) -> None:
        """For the interface of ``asyncio.Server``: closing is immediate."""

    def _publish(self) -> int:
        mine = self._connections() + self._connecting
        if not self._closed:  # a closed acceptor's slot stays NOT_ACCEPTING
            self._counts[self._me] = mine
        return mine

    def _lowest(self) -> bool:
        mine = self._publish()
        return all(mine <= n for n in self._counts if n != NOT_ACCEPTING)

    def _tick(self) -> None:
        """While not reading the socket: read it again once this process holds the fewest
        connections, or take a connection that has waited too long; else look again."""
        self._ticking = False
        if self._closed or self._reading:
            return
        if self._lowest():
            self._queued_since = None
            self._resume()
            return
        if self._queued():
            now = self._loop.time()
            if self._queued_since is None:
                self._queued_since = now
            elif now - self._queued_since >= self._stall_s:
                self._accept()  # nobody else takes it
        else:
            self._queued_since = None
        self._look_again()

    def _look_again(self) -> None:
        if not self._ticking and not self._closed:
            self._ticking = True
            self._loop.call_later(self._tick_s, self._tick)

    def _queued(self) -> bool:
        """Whether connections wait in the queue (this process is not reading it)."""
        return bool(self._poll.poll(0))

    def _resume(self) -> None:
        if not self._reading and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
        self._look_again()  # only a paused acceptor looks on a timer

    def _readable(self) -> None:
        if self._lowest():
            self._accept()
        else:
            self._pause()  # and look again on a timer

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another process took it, or the client gave up
        except OSError as e:  # out of file descriptors: wait a tick rather than spin
            now = self._loop.time()
            if now >= self._warn_after:
                log.warning("cannot accept a connection: %s (said at most every 10 s)", e)
                self._warn_after = now + 10.0
            self._pause()
            return
        self._queued_since = None
        conn.setblocking(False)
        self._connecting += 1
        self._publish()
        made = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
        made.add_done_callback(self._made)

    def _made(self, task: asyncio.Task[Any]) -> None:
        self._connecting -= 1
        self._publish()
        if not task.cancelled() and task.exception() is not None:
            log.warning("cannot serve an accepted connection: %s", task.exception())
