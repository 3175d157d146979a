"""The vault's ``GET /status``, read in a real headless Chromium: OK while it appends and
seals, DEGRADED while seals wait (the appliance refuses), REFUSING when the disk is full —
and never a word of personal data. A screenshot of each state is saved beside the
appliance's (the session's ``status-screenshots`` folder)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from daemon.vault import VaultConfig
from tests import chromium
from tests.appliance.test_status_page import screenshots  # noqa: F401 - the fixture

from .conftest import EXAMPLE, VaultUnderTest, entry_now

# What the entries carry that the page must never show (the establishment code included:
# the page counts, it does not list).
PERSONAL = ("0123456789M", "2004-05-17", "Léa Dubois", "Claire Martin", "CFA-LYON-02")
assert all(word in str(EXAMPLE) for word in PERSONAL)


@pytest.fixture
def vault_config(vault_config: VaultConfig, request: pytest.FixtureRequest) -> VaultConfig:
    """The conftest's configuration, with ``indirect`` overrides."""
    return dataclasses.replace(vault_config, **getattr(request, "param", {}))


async def deposit(vault: VaultUnderTest, key: str) -> int:
    resp = await vault.client.post(
        "/v1/entries",
        data=json.dumps(entry_now()),
        headers={**vault.headers(vault.token(), key), "Content-Type": "application/json"},
    )
    return resp.status


async def look(vault: VaultUnderTest, name: str, folder: Path) -> chromium.Dom:
    url = str(vault.client.make_url("/status"))
    dom = await chromium.load(url, screenshot=folder / f"vault-{name}.png")
    assert dom.external_references() == [] and dom.all("script") == []
    refresh = [m for m in dom.all("meta") if m.attrs.get("http-equiv") == "refresh"]
    assert [m.attrs["content"] for m in refresh] == ["10"]
    for word in PERSONAL:
        assert word not in dom.text
    return dom


def facts(dom: chromium.Dom) -> dict[str, str]:
    return {e.attrs["data-fact"]: "".join(e.text) for e in dom.all("td") if "data-fact" in e.attrs}


@pytest.mark.timeout(60)
async def test_ok_while_it_appends_and_seals(vault: VaultUnderTest, screenshots: Path) -> None:  # noqa: F811
    assert await deposit(vault, "ok-1") == 201
    dom = await look(vault, "ok", screenshots)
    banner = dom.one("header", "banner")
    assert banner.classes == {"banner", "ok"} and "OK" in "".join(banner.text)
    f = facts(dom)
    assert f["entries"] == "1" and f["pending seals"] == "0"
    assert f["checkpoint"].startswith("tree size ")
    assert f["witnesses"] == "none configured"
    assert f["replication"] == "single site (SQLite)"
    assert f["tsa"] == vault.appliance.url
    resp = await vault.client.get("/status")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


@pytest.mark.timeout(60)
async def test_degraded_while_seals_wait(vault: VaultUnderTest, screenshots: Path) -> None:  # noqa: F811
    vault.appliance.refusing[0] = True
    assert await deposit(vault, "wait-1") == 202
    assert await deposit(vault, "wait-2") == 202
    dom = await look(vault, "degraded", screenshots)
    banner = dom.one("header", "banner")
    assert banner.classes == {"banner", "degraded"}
    assert "2 entries waiting for a seal, the oldest for" in "".join(banner.text)
    assert facts(dom)["pending seals"].startswith("2, the oldest for ")
    vault.appliance.refusing[0] = False


@pytest.mark.timeout(60)
@pytest.mark.parametrize("vault_config", [{"min_free_bytes": 1 << 60}], indirect=True)
async def test_refusing_when_the_disk_is_full(vault: VaultUnderTest, screenshots: Path) -> None:  # noqa: F811
    assert await deposit(vault, "full-1") == 507
    dom = await look(vault, "refusing", screenshots)
    banner = dom.one("header", "banner")
    assert banner.classes == {"banner", "refusing"}
    assert "the disk is full" in "".join(banner.text)
    assert facts(dom)["disk"] == "FULL: appends refused" and facts(dom)["entries"] == "0"
