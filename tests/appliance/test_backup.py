"""``horodate appliance backup`` and ``restore``: the appliance's data directory (issuance
log, serial state, keys) copied while it issues tokens, checked, and restored with a new
serial instance (ADR 0005); a tampered backup and a directory in use are refused.

The appliance is the real RFC 3161 engine and HTTP app (fed agreeing time samples) on a
loopback port, its data directory laid out as ``horodate appliance`` lays it."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from pathlib import Path

import aiohttp
import pytest

from appliance.http.app import create_app
from appliance.http.app_keys import ServerConfig
from appliance.http.listening import bind_public, listening
from appliance.issuance.issued import check, log_paths
from appliance.issuance.log import IssuanceLog
from appliance.issuance.serials import SerialAllocator, SerialState
from appliance.tsa.dev_pki import init_dev_pki
from horodate.backup import ApplianceKind, BackupError, read_manifest, restore
from horodate.cli import main as horodate
from timestamping import Digest, build_request

from .conftest import VirtualClock, close_tsa_service, feed_agreeing_sources, make_tsa_service

TSQ = {"Content-Type": "application/timestamp-query"}


def instance(path: Path) -> int:
    return SerialState.decode(path.read_bytes()).instance_id


@pytest.mark.timeout(120)
async def test_the_appliances_backup_taken_while_it_issues_restores_and_checks(
    tmp_path: Path, timekeeper: object, clock: VirtualClock
) -> None:
    data = tmp_path / "appliance"
    data.mkdir(mode=0o700)
    pki = init_dev_pki(data / "keys", now=dt.datetime.now(dt.UTC))
    service = make_tsa_service(pki, data)
    feed_agreeing_sources(timekeeper, clock)  # type: ignore[arg-type]
    app = create_app(ServerConfig(simulate=False), timekeeper, tsa=service)  # type: ignore[arg-type]
    dest = tmp_path / "backup"
    granted = 0
    stop = asyncio.Event()
    try:
        async with listening(app, bind_public("127.0.0.1", 0)) as where:
            url = f"http://127.0.0.1:{where.port}/tsa"

            async def issue() -> None:
                nonlocal granted
                connector = aiohttp.TCPConnector(force_close=True)
                async with aiohttp.ClientSession(connector=connector) as session:
                    n = 0
                    while not stop.is_set():
                        digest = hashlib.sha256(b"%d" % n).digest()
                        query = build_request(digest, digest=Digest.SHA256, nonce=n + 1)
                        async with session.post(url, data=query.der, headers=TSQ) as resp:
                            assert resp.status == 200
                            await resp.read()
                        granted += 1
                        n += 1

            task = asyncio.create_task(issue())
            try:
                while granted < 20:
                    await asyncio.sleep(0.01)
                code = await asyncio.to_thread(
                    horodate, ["appliance", "backup", str(dest), "--data-dir", str(data)]
                )
                assert code == 0
                with pytest.raises(BackupError, match="the appliance is running on"):
                    restore(
                        ApplianceKind(now=dt.datetime.now(dt.UTC)),
                        dest,
                        data,
                        force=True,
                        now=dt.datetime.now(dt.UTC),
                        say=print,
                    )
                after = granted
                while granted < after + 5:
                    await asyncio.sleep(0.01)
            finally:
                stop.set()
                await task
    finally:
        close_tsa_service(service)

    manifest = read_manifest(dest)
    names = {f.path for f in manifest.files}
    assert {"issued.log", "serials.state", "keys/tsa.key", "keys/tsa.pem"} <= names
    assert {f.path: f.mode for f in manifest.files}["keys/tsa.key"] == 0o600
    copied = manifest.facts["issuance_records"]
    assert 20 <= copied < granted  # what was there when the log was copied
    assert (dest / "issued.log").stat().st_size < (data / "issued.log").stat().st_size

    restored = tmp_path / "restored"
    code = await asyncio.to_thread(
        horodate, ["appliance", "restore", str(dest), "--data-dir", str(restored)]
    )
    assert code == 0
    report = check(log_paths(restored))
    assert report.ok and report.records == copied
    assert instance(restored / "serials.state") != instance(data / "serials.state")
    # the restored directory is one the appliance starts on
    SerialAllocator(restored / "serials.state").close()
    log = IssuanceLog(restored / "issued.log")
    log.start()
    log.close()
    assert (restored / "keys" / "tsa.key").stat().st_mode & 0o777 == 0o600

    # one byte of the backup's issuance log changed: refused
    tampered = bytearray((dest / "issued.log").read_bytes())
    tampered[-3] ^= 0x01
    (dest / "issued.log").write_bytes(bytes(tampered))
    code = await asyncio.to_thread(
        horodate, ["appliance", "restore", str(dest), "--data-dir", str(tmp_path / "again")]
    )
    assert code == 1
    assert not (tmp_path / "again").exists()
