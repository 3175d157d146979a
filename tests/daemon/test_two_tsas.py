"""Two TSAs, one per site, each with a PKI of its own: the vault seals with whichever
answers, verifies each token against *that* TSA's roots, and records which sealed it. The
outage of one appliance (refusing: its clock lost every source; or down: its port closed)
costs no seal; the outage of both leaves entries pending, sealed once one comes back."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from appliance.clock import Policy
from appliance.clock.timekeeper import Timekeeper
from appliance.tsa.dev_pki import init_dev_pki
from daemon.http.app import create_app
from daemon.vault import Vault, VaultConfig
from daemon.verify import verify_vault
from tests.appliance.conftest import VirtualClock, close_tsa_service, make_tsa_service
from tests.daemon.conftest import Appliance, appliance_serving, entry_now, make_token
from tests.waiting import eventually
from timestamping.aio_client import AsyncTsaClient, ClientPolicy
from timestamping.errors import TsaUnreachable, VerificationFailed
from timestamping.reply import ReplyRejected
from timestamping.verify import verify_reply

QUICK = ClientPolicy(attempt_timeout_s=2.0, attempts_per_tsa=2, backoff_first_s=0.01)


@pytest.fixture
async def site_b(tmp_path: Path) -> AsyncIterator[Appliance]:
    """The other site's appliance: its own development PKI, clock and serials."""
    pki = init_dev_pki(tmp_path / "pki-b", now=dt.datetime.now(dt.UTC))
    (tmp_path / "site-b").mkdir()
    service = make_tsa_service(pki, tmp_path / "site-b")
    clock = VirtualClock()
    try:
        async with appliance_serving(pki, Timekeeper(Policy(), clock=clock), clock, service) as b:
            yield b
    finally:
        close_tsa_service(service)


def closed_port_url() -> str:
    """A loopback URL nothing listens on (a site whose appliance is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/tsa"


IMPRINT = hashlib.sha256(b"an entry").digest()


async def test_a_refusing_tsa_costs_no_seal_and_the_other_site_seals(
    appliance: Appliance, site_b: Appliance
) -> None:
    async with AsyncTsaClient(
        [appliance.url, site_b.url], [appliance.ca_pem, site_b.ca_pem], policy=QUICK
    ) as tsa:
        assert (await tsa.seal(IMPRINT)).tsa_url == appliance.url
        appliance.refusing[0] = True
        seal = await tsa.seal(IMPRINT)
        assert seal.tsa_url == site_b.url
        verify_reply(seal.reply_der, message_imprint=IMPRINT, ca_pem=site_b.ca_pem)
        with pytest.raises(VerificationFailed):  # site B's token does not chain to A's CA
            verify_reply(seal.reply_der, message_imprint=IMPRINT, ca_pem=appliance.ca_pem)
        appliance.refusing[0] = False
        # the one that answered last is asked first: B, while it answers
        assert (await tsa.seal(IMPRINT)).tsa_url == site_b.url


async def test_a_tsa_down_costs_no_seal(appliance: Appliance) -> None:
    down = closed_port_url()
    async with AsyncTsaClient(
        [down, appliance.url], [appliance.ca_pem, appliance.ca_pem], policy=QUICK
    ) as tsa:
        assert (await tsa.seal(IMPRINT)).tsa_url == appliance.url


async def test_each_token_is_checked_against_its_own_tsas_roots(
    appliance: Appliance, site_b: Appliance
) -> None:
    """Roots paired the wrong way round: each site's token is refused, each reason said."""
    async with AsyncTsaClient(
        [appliance.url, site_b.url], [site_b.ca_pem, appliance.ca_pem], policy=QUICK
    ) as tsa:
        with pytest.raises(VerificationFailed) as caught:
            await tsa.seal(IMPRINT)
    said = str(caught.value)
    assert said.startswith("no TSA gave a token")
    assert appliance.url in said and site_b.url in said


async def test_when_every_tsa_fails_the_error_says_each_reason(
    appliance: Appliance, site_b: Appliance
) -> None:
    down = closed_port_url()
    appliance.refusing[0] = True
    async with AsyncTsaClient(
        [appliance.url, down], [appliance.ca_pem, site_b.ca_pem], policy=QUICK
    ) as tsa:
        with pytest.raises(ReplyRejected, match="timeNotAvailable") as refused:
            await tsa.seal(IMPRINT)
        assert down in str(refused.value)  # the unreachable one is named too
    async with AsyncTsaClient(
        [down, closed_port_url()], [appliance.ca_pem, site_b.ca_pem], policy=QUICK
    ) as tsa:
        with pytest.raises(TsaUnreachable, match="cannot reach"):
            await tsa.seal(IMPRINT)


def test_roots_must_be_one_for_all_or_one_per_tsa() -> None:
    with pytest.raises(Exception, match="2 TSAs and 3 sets of roots"):
        AsyncTsaClient(["http://a/tsa", "http://b/tsa"], [b"a", b"b", b"c"])


async def test_the_vault_seals_through_either_site_and_records_which(
    aiohttp_client: Any, appliance: Appliance, site_b: Appliance, tmp_path: Path
) -> None:
    config = VaultConfig(
        data_dir=tmp_path / "vault",
        tsa_urls=(appliance.url, site_b.url),
        tsa_cas=(appliance.ca_path, site_b.ca_path),
        checkpoint_interval_s=0.2,
        sealer_interval_s=0.1,
    )
    async with AsyncTsaClient(config.tsa_urls, config.tsa_roots(), policy=QUICK) as tsa:
        vault = Vault(config, tsa=tsa)
        client = await aiohttp_client(create_app(vault))
        token = make_token(vault, "establishment", "CFA-LYON-02")

        async def post(n: int) -> Any:
            resp = await client.post(
                "/v1/entries",
                data=json.dumps(entry_now(minutes_ago=10 - n * 0.1)),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Idempotency-Key": f"two-{n}",
                    "Content-Type": "application/json",
                },
            )
            return resp.status, await resp.json()

        async def read(index: int) -> dict[str, Any]:
            got = await client.get(
                f"/v1/entries/{index}", headers={"Authorization": f"Bearer {token}"}
            )
            return dict(await got.json())

        assert (await post(0))[0] == 201
        appliance.refusing[0] = True  # site A's clock lost its sources
        status, receipt = await post(1)
        assert status == 201 and receipt["sealed"] is True  # no seal lost: B sealed it
        site_b.refusing[0] = True  # both sites down: accepted, pending
        status, receipt = await post(2)
        assert status == 202 and receipt["sealed"] is False
        site_b.refusing[0] = False
        await eventually(
            lambda: vault.store.reader().pending_count() == 0, 10, "the backlog sealed by B"
        )
        by = {i: (await read(i))["tsa"] for i in range(3)}
        assert by == {0: appliance.url, 1: site_b.url, 2: site_b.url}
        metadata = await client.get(
            "/v1/entries/1/metadata", headers={"Authorization": f"Bearer {token}"}
        )
        assert (await metadata.json())["tsa"] == site_b.url
        for i, url in by.items():  # each token chains to its own site's roots, only
            der = base64.b64decode((await read(i))["token"])
            imprint = bytes.fromhex((await read(i))["leaf_hash"])
            own, other = (
                (appliance.ca_pem, site_b.ca_pem)
                if url == appliance.url
                else (site_b.ca_pem, appliance.ca_pem)
            )
            verify_reply(der, message_imprint=imprint, ca_pem=own)
            with pytest.raises(VerificationFailed):
                verify_reply(der, message_imprint=imprint, ca_pem=other)
        check = await client.get(
            "/v1/entries/1/integrity", headers={"Authorization": f"Bearer {token}"}
        )
        assert (await check.json())["checks"]["token"] is True
        # `vault verify` checks every token against both sites' roots, kept beside the log
        report = verify_vault(config.data_dir)
        assert report.ok, report.failure
        assert report.sealed == 3
