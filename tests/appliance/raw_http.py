"""HTTP/1.1 over a raw socket, for the tests that must choose the bytes a server reads
(pipelined requests, several requests in one write, byte-by-byte writes, half-close) and see
each answer as it comes, with the ``Server:`` header that tells who answered it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from .conftest import HOST

DEADLINE_S = 3.0  # an exchange on the loopback takes a small fraction of that


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated name keeps its last value
    body: bytes

    @property
    def by_lane(self) -> bool:
        """Answered by the fast lane (``appliance.http.fastlane``), not by aiohttp."""
        return self.headers.get("server") == "Horodate"


async def read_response(
    reader: asyncio.StreamReader, *, deadline_s: float = DEADLINE_S
) -> Response:
    """The next answer on the connection, whole: its head, then ``Content-Length`` bytes."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), deadline_s)
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        assert colon, line
        headers[name.strip().lower()] = value.strip()
    assert "transfer-encoding" not in headers
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), deadline_s)
    return Response(int(status), headers, body)


@asynccontextmanager
async def connect(
    port: int, *, deadline_s: float = DEADLINE_S
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TCP connection to ``HOST:port``, closed on leaving."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), deadline_s)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()
