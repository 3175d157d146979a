"""The fast lane behind a real nginx (Debian's ``nginx-light``), as a TLS-terminating proxy
would sit in front of it: nginx keeps its connections to the appliance alive and reuses
them, which is where two parsers reading one stream differently would let a request be
smuggled. Every ambiguous request of the fast lane's tests goes through nginx; each is
refused (by nginx, or by the appliance and then nginx), nothing smuggled is ever answered,
and the next plain request on a reused upstream connection gets its own answer."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.http import listening

from .raw_http import connect, read_response
from .test_fastlane import (  # noqa: F401 - served is a fixture
    _AMBIGUOUS,
    PLAIN,
    served,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DEADLINE_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nginx(served: listening.Listening, tmp_path: Path) -> Iterator[int]:  # noqa: F811
    """nginx on a free port, proxying to the appliance's public socket with keep-alive."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed (make test installs nginx-light)")
    port = _free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / d).mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    upstream appliance {{ server 127.0.0.1:{served.port}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://appliance;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path), "-e",
                             str(tmp_path / "error.log")], stderr=subprocess.PIPE)  # fmt: skip
    end = time.monotonic() + DEADLINE_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                proc.kill()
                _, err = proc.communicate()
                pytest.fail(f"nginx did not start: {err.decode(errors='replace')}")
            time.sleep(0.02)  # polling for the port, not waiting for an outcome
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _answers(port: int, data: bytes) -> bytes:
    async with connect(port) as (reader, writer):
        writer.write(data)
        try:
            return await asyncio.wait_for(reader.read(), DEADLINE_S)
        except ConnectionError:
            return b""


async def test_a_plain_request_through_nginx_is_answered_by_the_lane(nginx: int) -> None:
    async with connect(nginx) as (reader, writer):
        for _ in range(3):  # on one client connection, nginx reusing its upstream one
            writer.write(PLAIN)
            reply = await read_response(reader)
            assert reply.status == 200 and reply.body == b"lane:hello"


@pytest.mark.parametrize("request_bytes", list(_AMBIGUOUS.values()), ids=list(_AMBIGUOUS))
async def test_nothing_is_smuggled_through_nginx(nginx: int, request_bytes: bytes) -> None:
    data = await _answers(nginx, request_bytes)
    assert b"smuggled" not in data, data
    status = data.split(b"\r\n", 1)[0]
    assert status.split(b" ")[1:2] in ([b"400"], [b"502"], [b"501"], []), status
    async with connect(nginx) as (reader, writer):  # the upstream connections are clean
        for _ in range(2):
            writer.write(PLAIN)
            reply = await read_response(reader)
            assert reply.status == 200 and reply.body == b"lane:hello", reply
