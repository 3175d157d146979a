"""Nothing acknowledged is ever lost: kill -9 under load, a disk that fills up.

The crash test runs the real processes — ``horodate appliance --simulate`` and
``horodate vault`` — kills the vault with SIGKILL while clients append, restarts it, and
checks every acknowledged receipt against what the vault then holds, and ``vault verify``.
The disk test puts the vault's data on a small tmpfs and fills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.vault import Vault, VaultConfig
from horodate.cli import main as horodate

from .conftest import Appliance, entry_now, make_token

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(url: str, *, deadline_s: float, ok: int = 200) -> None:
    end = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < end:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    if resp.status == ok:
                        return
            await asyncio.sleep(0.1)
    pytest.fail(f"{url} did not answer {ok} within {deadline_s} s")


@contextlib.contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "horodate", *args], stdout=out, stderr=out, cwd=ROOT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
async def real_appliance(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    port = free_port()
    data = tmp_path / "appliance"
    args = ["appliance", "--simulate", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"]
    with process(args, tmp_path / "appliance.log"):
        await wait_http(f"http://127.0.0.1:{port}/health", deadline_s=30)
        yield f"http://127.0.0.1:{port}/tsa", data / "keys" / "ca.pem"


def start_vault(tmp_path: Path, tsa: str, ca: Path, port: int) -> subprocess.Popen[bytes]:
    args = ["vault", "--data-dir", str(tmp_path / "vault"), "--listen", f"127.0.0.1:{port}"]
    args += ["--tsa", tsa, "--tsa-ca", str(ca)]
    log = (tmp_path / "vault.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "horodate", *args], stdout=log, stderr=log, cwd=ROOT
    )


def token_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = horodate(
        [
            "vault",
            "keys",
            "create",
            "--data-dir",
            str(tmp_path / "vault"),
            "--role",
            "establishment",
            "--establishment",
            "CFA-LYON-02",
        ]
    )
    assert code == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


async def appender(url: str, token: str, acked: dict[int, str], stop: asyncio.Event) -> None:
    """Append until ``stop``; record every receipt the vault acknowledged (201/202)."""
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            headers = {
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": str(uuid.uuid4()),
                "Content-Type": "application/json",
            }
            try:
                async with http.post(
                    f"{url}/v1/entries", data=json.dumps(entry_now(minutes_ago=1)), headers=headers
                ) as resp:
                    if resp.status in (201, 202):
                        receipt = await resp.json()
                        acked[receipt["index"]] = receipt["leaf_hash"]
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.01)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_kill_9_under_load_loses_no_acknowledged_entry(
    tmp_path: Path, real_appliance: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tsa, ca = real_appliance
    token = token_for(tmp_path, capsys)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    acked: dict[int, str] = {}
    for round_ in range(2):
        vault = start_vault(tmp_path, tsa, ca, port)
        try:
            await wait_http(f"{url}/health", deadline_s=30)
            stop = asyncio.Event()
            clients = [asyncio.create_task(appender(url, token, acked, stop)) for _ in range(8)]
            target = len(acked) + 150
            end = time.monotonic() + 60
            while len(acked) < target and time.monotonic() < end:
                await asyncio.sleep(0.02)
            os.kill(vault.pid, signal.SIGKILL)  # mid-stream: requests in flight
            vault.wait(10)
            stop.set()
            await asyncio.gather(*clients)
        finally:
            if vault.poll() is None:
                vault.kill()
                vault.wait()
        assert len(acked) >= target, f"round {round_}: only {len(acked)} acknowledged"

    vault = start_vault(tmp_path, tsa, ca, port)
    try:
        await wait_http(f"{url}/health", deadline_s=30)
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {token}"}
            for idx, leaf_hash in sorted(acked.items()):
                async with http.get(f"{url}/v1/entries/{idx}", headers=auth) as resp:
                    assert resp.status == 200, f"acknowledged entry {idx} is gone"
                    assert (await resp.json())["leaf_hash"] == leaf_hash, f"entry {idx} changed"
            size = (await (await http.get(f"{url}/health")).json())["entries"]
            headers = {**auth, "Idempotency-Key": "after", "Content-Type": "application/json"}
            async with http.post(
                f"{url}/v1/entries", data=json.dumps(entry_now()), headers=headers
            ) as resp:
                assert (await resp.json())["index"] == size  # no index reused
    finally:
        vault.terminate()
        vault.wait(20)
    capsys.readouterr()
    assert horodate(["vault", "verify", "--data-dir", str(tmp_path / "vault")]) == 0, (
        capsys.readouterr()
    )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (we are root in CI); the test is about a disk that really fills."""
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the suite runs as root): {done.stderr.decode()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_a_full_disk_refuses_with_507_loses_nothing_and_resumes(
    aiohttp_client: Any, appliance: Appliance, tmpfs: Path, tmp_path: Path
) -> None:
    from daemon.http.app import create_app
    from daemon.verify import verify_vault
    from timestamping.aio_client import AsyncTsaClient

    config = VaultConfig(
        data_dir=tmpfs / "vault",
        tsa_urls=(appliance.url,),
        tsa_ca=appliance.ca_path,
        min_free_bytes=0,
    )
    async with AsyncTsaClient(config.tsa_urls, appliance.ca_pem) as tsa:
        vault = Vault(config, tsa=tsa)
        client = await aiohttp_client(create_app(vault))
        token = make_token(vault, "establishment", "CFA-LYON-02")
        filler = tmpfs / "filler"
        free = shutil.disk_usage(tmpfs).free
        filler.write_bytes(b"\0" * max(0, free - 96 * 1024))
        acked: dict[int, str] = {}
        statuses = []
        for n in range(400):
            headers = {
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": f"k{n}",
                "Content-Type": "application/json",
            }
            resp = await client.post(
                "/v1/entries", data=json.dumps(entry_now(minutes_ago=1)), headers=headers
            )
            statuses.append(resp.status)
            if resp.status in (201, 202):
                r = await resp.json()
                acked[r["index"]] = r["leaf_hash"]
            elif resp.status == 507:
                doc = await resp.json()
                assert doc["type"] == "urn:horodate:problem:insufficient_storage"
                break
        assert 507 in statuses, "the disk never filled"
        assert acked, "nothing was accepted before the disk filled"
        filler.unlink()
        headers = {
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": "after",
            "Content-Type": "application/json",
        }
        resp = await client.post("/v1/entries", data=json.dumps(entry_now()), headers=headers)
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["index"] == len(acked)  # dense: the refused ones took no index
        reader = vault.store.reader()
        for idx, leaf_hash in acked.items():
            row = reader.entry(idx)
            assert row is not None and row.leaf_hash.hex() == leaf_hash
    report = verify_vault(config.data_dir, ca_pem=appliance.ca_pem)
    assert report.ok, report.failure
