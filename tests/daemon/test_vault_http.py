"""The vault's HTTP contract (DESIGN.md, "Vault HTTP"), end to end with a real appliance:
receipts and tokens, idempotency, isolation, refusals that write nothing, a TSA outage
and the backlog, checkpoints and proofs, the access journal; and a vault whose background
loop died still stops cleanly."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon import merkle
from daemon.errors import VaultError
from daemon.journal import check_chain
from daemon.note import Verifier, verify_checkpoint
from daemon.store import Reader
from daemon.vault import Vault, VaultConfig
from tests.waiting import eventually
from timestamping.verify import verify_reply, verify_with_openssl

from .conftest import EXAMPLE, VaultUnderTest, entry_now


async def wait_for(cond: Callable[[], Awaitable[Any]], *, deadline_s: float, what: str) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = await cond()
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"{what} did not happen within {deadline_s} s")


async def post(v: VaultUnderTest, body: Any, *, token: str, key: str) -> Any:
    return await v.client.post(
        "/v1/entries",
        data=json.dumps(body).encode() if not isinstance(body, bytes) else body,
        headers={**v.headers(token, key), "Content-Type": "application/json"},
    )


async def test_an_entry_is_sealed_in_its_receipt_and_reads_back(vault: VaultUnderTest) -> None:
    token = vault.token()
    resp = await post(vault, entry_now(), token=token, key="k-1")
    assert resp.status == 201, await resp.text()
    receipt = await resp.json()
    assert receipt["index"] == 0 and receipt["sealed"] is True
    reply = base64.b64decode(receipt["token"])
    leaf_hash = bytes.fromhex(receipt["leaf_hash"])
    verified = verify_reply(reply, message_imprint=leaf_hash, ca_pem=vault.appliance.ca_pem)
    assert verified.info.message_imprint == leaf_hash
    verify_with_openssl(reply, message_imprint=leaf_hash, ca_pem=vault.appliance.ca_pem)

    got = await (await vault.client.get("/v1/entries/0", headers=vault.headers(token))).json()
    leaf = base64.b64decode(got["leaf"])
    assert merkle.leaf_hash(leaf).hex() == receipt["leaf_hash"] == got["leaf_hash"]
    assert got["entry"]["student"] == {
        "ine": "0123456789M",
        "birth_date": "2004-05-17",
        "name": "Léa Dubois",
    }
    for secret in (b"0123456789M", b"2004-05-17", "Léa".encode(), b"Claire"):
        assert secret not in leaf  # personal data never enters the leaf


async def test_the_design_example_is_accepted_when_within_its_window(vault: VaultUnderTest) -> None:
    """The DESIGN.md example (a past session) is valid input; only its window refuses it."""
    resp = await post(vault, EXAMPLE, token=vault.token(), key="example")
    body = await resp.json()
    assert resp.status == 422
    assert body["type"] == "urn:horodate:problem:outside_signing_window"


async def test_idempotency_replays_conflicts_and_requires_a_key(vault: VaultUnderTest) -> None:
    token = vault.token()
    body = entry_now()  # one body: two calls to entry_now() may straddle a second
    first = await (await post(vault, body, token=token, key="same")).json()
    again = await post(vault, body, token=token, key="same")
    assert again.status == 201 and await again.json() == first
    assert vault.vault.store.reader().size() == 1
    other = await post(vault, entry_now(minutes_ago=1), token=token, key="same")
    assert other.status == 422
    assert (await other.json())["type"] == "urn:horodate:problem:idempotency_key_reused"
    missing = await vault.client.post(
        "/v1/entries",
        data=json.dumps(entry_now()),
        headers={**vault.headers(token), "Content-Type": "application/json"},
    )
    assert missing.status == 400
    assert vault.vault.store.reader().size() == 1


async def test_another_establishment_sees_nothing(vault: VaultUnderTest) -> None:
    lyon, paris = vault.token(), vault.token(est="CFA-PARIS-01")
    await post(vault, entry_now(), token=lyon, key="a")
    assert (await vault.client.get("/v1/entries/0", headers=vault.headers(paris))).status == 404
    listing = await (await vault.client.get("/v1/entries", headers=vault.headers(paris))).json()
    assert listing["entries"] == []
    wrong = await post(vault, entry_now(), token=paris, key="b")  # writes for Lyon
    assert wrong.status == 403
    assert (await vault.client.get("/v1/entries/0")).status == 401


async def test_refusals_write_nothing_and_say_where(vault: VaultUnderTest) -> None:
    token = vault.token()
    bad = entry_now()
    bad["student"]["ine"] = "0123456789A"  # wrong BEA key
    bad["colour"] = "blue"
    resp = await post(vault, bad, token=token, key="bad")
    assert resp.status == 422
    doc = await resp.json()
    assert resp.content_type == "application/problem+json"
    pointers = {e["pointer"] for e in doc["errors"]}
    assert {"/student/ine", "/colour"} <= pointers
    batch = {"entries": [entry_now(), entry_now(), bad]}
    resp = await post(vault, batch, token=token, key="batch")
    assert resp.status == 422
    assert any(e["pointer"].startswith("/entries/2/") for e in (await resp.json())["errors"])
    dup = b'{"establishment": "CFA-LYON-02", "establishment": "X"}'
    assert (await post(vault, dup, token=token, key="dup")).status == 422
    big = b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    assert (await post(vault, big, token=token, key="big")).status == 413
    text = await vault.client.post(
        "/v1/entries",
        data=b"{}",
        headers={**vault.headers(token, "t"), "Content-Type": "text/plain"},
    )
    assert text.status == 415
    assert vault.vault.store.reader().size() == 0


async def test_a_batch_is_all_or_nothing_and_dense(vault: VaultUnderTest) -> None:
    token = vault.token()
    batch = {"entries": [entry_now(minutes_ago=m) for m in (3, 2, 1)]}
    resp = await post(vault, batch, token=token, key="b1")
    assert resp.status == 201
    receipts = (await resp.json())["receipts"]
    assert [r["index"] for r in receipts] == [0, 1, 2]


async def test_a_moved_session_refuses_the_old_version(vault: VaultUnderTest) -> None:
    token = vault.token()
    assert (await post(vault, entry_now(), token=token, key="s1")).status == 201
    moved = entry_now("session_moved")
    moved["session"]["version"] = 2
    assert (await post(vault, moved, token=token, key="s2")).status == 201
    stale = await post(vault, entry_now(minutes_ago=1), token=token, key="s3")
    assert stale.status == 422
    assert (await stale.json())["type"] == "urn:horodate:problem:session_moved"
    cancelled = entry_now("session_cancelled")
    cancelled["session"]["version"] = 2
    assert (await post(vault, cancelled, token=token, key="s4")).status == 201
    late = entry_now(minutes_ago=1)
    late["session"]["version"] = 2
    resp = await post(vault, late, token=token, key="s5")
    assert (await resp.json())["type"] == "urn:horodate:problem:session_cancelled"


async def test_a_tsa_outage_gives_202_then_the_backlog_is_sealed_oldest_first(
    vault: VaultUnderTest,
) -> None:
    token = vault.token()
    vault.appliance.refusing[0] = True
    receipts = []
    bodies = [entry_now(minutes_ago=3 - n) for n in range(3)]  # replayed byte for byte below
    for n in range(3):
        resp = await post(vault, bodies[n], token=token, key=f"o{n}")
        assert resp.status == 202
        receipts.append(await resp.json())
    assert all(r["sealed"] is False and r["token"] is None for r in receipts)
    health = await (await vault.client.get("/health")).json()
    assert health["pending"] == 3
    vault.appliance.refusing[0] = False

    async def sealed() -> bool:
        return vault.vault.store.reader().pending_count() == 0

    await wait_for(sealed, deadline_s=10, what="the backlog sealed")
    got = await (await vault.client.get("/v1/entries/0", headers=vault.headers(token))).json()
    assert got["sealed"] is True
    reply = base64.b64decode(got["token"])
    verify_reply(
        reply, message_imprint=bytes.fromhex(got["leaf_hash"]), ca_pem=vault.appliance.ca_pem
    )
    replay = await post(vault, bodies[0], token=token, key="o0")
    assert replay.status == 201 and (await replay.json())["sealed"] is True


async def test_checkpoints_and_proofs_verify(vault: VaultUnderTest) -> None:
    token = vault.token()
    for n in range(5):
        assert (
            await post(vault, entry_now(minutes_ago=5 - n), token=token, key=f"c{n}")
        ).status == 201
    verifier = Verifier.from_key_string(
        (await (await vault.client.get("/v1/checkpoint/verifier")).text()).strip()
    )

    async def checkpoint_of_5() -> Any:
        note = await (await vault.client.get("/v1/checkpoint")).text()
        cp = verify_checkpoint(note, verifier)
        return cp if cp.size == 5 else None

    cp = await wait_for(checkpoint_of_5, deadline_s=10, what="a checkpoint of size 5")
    got = await (await vault.client.get("/v1/entries/3", headers=vault.headers(token))).json()
    proof = [bytes.fromhex(h) for h in got["inclusion"]["hashes"]]
    merkle.verify_inclusion(3, 5, bytes.fromhex(got["leaf_hash"]), proof, cp.root)
    public = await (await vault.client.get("/v1/proofs/inclusion?index=3&tree_size=5")).json()
    assert public["hashes"] == got["inclusion"]["hashes"]
    cons = await (await vault.client.get("/v1/proofs/consistency?first=2&second=5")).json()
    rows = vault.vault.store.reader().checkpoints()
    assert rows[-1].token is not None  # the checkpoint is itself time-stamped
    tree = merkle.InMemoryTree()
    for e in vault.vault.store.reader().entries(0, 5):
        tree.append(e.leaf_hash)
    merkle.verify_consistency(
        2, 5, tree_root(tree, 2), cp.root, [bytes.fromhex(h) for h in cons["hashes"]]
    )


def tree_root(tree: Any, size: int) -> bytes:
    return merkle.root(size, tree.node)


async def test_every_call_is_journaled_in_a_chain(vault: VaultUnderTest) -> None:
    token = vault.token()
    await post(vault, entry_now(), token=token, key="j1")
    await vault.client.get("/v1/entries/0", headers=vault.headers(token))
    await vault.client.get("/v1/entries/99", headers=vault.headers(token))
    await vault.client.get("/v1/entries/0")
    rows = vault.vault.store.reader().journal(0, 100)
    records = [json.loads(r[1]) for r in rows]
    calls = [r for r in records if r["role"] != "vault"]  # not its own: a checkpoint, a seal
    assert [(r["action"].split(" ")[0], r["status"]) for r in calls][-4:] == [
        ("POST", 201),
        ("GET", 200),
        ("GET", 404),
        ("GET", 401),
    ]
    check_chain(rows)
    page = await (await vault.client.get("/v1/journal", headers=vault.headers(token))).json()
    assert any(r["action"].startswith("POST") for r in page["records"])


async def test_technical_metadata_integrity_count_and_metrics(vault: VaultUnderTest) -> None:
    token = vault.token()
    await post(vault, entry_now(), token=token, key="m1")
    meta = await (
        await vault.client.get("/v1/entries/0/metadata", headers=vault.headers(token))
    ).json()
    assert meta["digest_algorithm"] == "sha-256" and "entry" not in meta
    check = await (
        await vault.client.get("/v1/entries/0/integrity", headers=vault.headers(token))
    ).json()
    assert check["checks"]["leaf_hash"] is True and check["checks"]["token"] is True
    count = await (await vault.client.get("/v1/entries/count", headers=vault.headers(token))).json()
    assert count == {"count": 1}
    text = await (await vault.client.get("/metrics")).text()
    assert "horodate_vault_entries 1.0" in text
    assert 'horodate_vault_request_seconds_count{route="/v1/entries"}' in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    seals = {s.labels["when"]: s.value for s in families["horodate_vault_seals"].samples}
    assert seals == {"inline": 1, "later": 0}
    seal_time = {s.name: s.value for s in families["horodate_vault_seal_seconds"].samples}
    assert seal_time["horodate_vault_seal_seconds_count"] == 1  # the one token, timed
    assert 0 < seal_time["horodate_vault_seal_seconds_sum"] < 2
    replication = {
        s.labels["state"]: s.value for s in families["horodate_vault_replication"].samples
    }
    assert replication == {"single_site": 1, "synchronous": 0, "degraded": 0}
    health = await (await vault.client.get("/health")).json()
    assert health["replication"] == "single_site"


async def test_a_student_is_found_by_ine_and_birth_date(vault: VaultUnderTest) -> None:
    token = vault.token()
    await post(vault, entry_now(), token=token, key="f1")
    other = entry_now(minutes_ago=2)
    other["student"] = {"ine": "1234567890A", "birth_date": "2003-01-02"}
    other["student"]["ine"] = next(
        f"{n:010d}{'ABCDEFGHJKLMNPRSTUVWXYZ'[n % 23]}" for n in [1234567890]
    )
    assert (await post(vault, other, token=token, key="f2")).status == 201
    q = "/v1/entries?ine=0123456789M&birth_date=2004-05-17"
    found = await (await vault.client.get(q, headers=vault.headers(token))).json()
    assert [e["index"] for e in found["entries"]] == [0]


async def test_stop_logs_a_loop_that_died_and_still_closes_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A background loop killed by an error it does not expect (a bug, not a VaultError)
    must not make stop() raise, nor leave the store open."""
    vault = Vault(VaultConfig(data_dir=tmp_path / "vault", checkpoint_interval_s=0.01))
    await vault.start()

    def broken(self: Reader) -> None:
        raise RuntimeError("an unexpected failure in the checkpoint loop")

    monkeypatch.setattr(Reader, "latest_checkpoint", broken)  # the loop's first read

    def checkpoint_loop_ended() -> bool:
        return "vault-checkpoints" not in {t.get_name() for t in asyncio.all_tasks()}

    await eventually(checkpoint_loop_ended, 10.0, "the checkpoint loop dying")
    with caplog.at_level(logging.ERROR, logger="horodate.vault"):
        await vault.stop()
    [death] = [r for r in caplog.records if r.getMessage() == "vault: vault-checkpoints had failed"]
    assert death.exc_info is not None and isinstance(death.exc_info[1], RuntimeError)
    with pytest.raises(VaultError, match="closed"):
        vault.store.reader().size()


async def test_start_refuses_a_tree_or_checkpoint_changed_under_it(tmp_path: Path) -> None:
    """The vault checks its head before serving: the latest checkpoint verifies with its
    key and the stored tree still has that root; else it refuses to start, and says why."""
    import sqlite3

    from daemon.store import DB_NAME

    data = tmp_path / "vault"
    vault = Vault(VaultConfig(data_dir=data, checkpoint_interval_s=60))
    await vault.start()  # makes the first checkpoint (size 0)
    await vault.stop()
    again = Vault(VaultConfig(data_dir=data, checkpoint_interval_s=60))
    await again.start()  # an untouched vault starts
    await again.stop()

    db = sqlite3.connect(data / DB_NAME, isolation_level=None)
    db.execute("DROP TRIGGER checkpoints_no_update")  # as an attacker with the file would
    (note,) = db.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    forged = note.replace("\n0\n", "\n1\n", 1)  # another size, the signature kept
    db.execute("UPDATE checkpoints SET note = ? WHERE note = ?", (forged, note))
    db.close()
    broken = Vault(VaultConfig(data_dir=data, checkpoint_interval_s=60))
    with pytest.raises(VaultError, match="does not verify with this vault's key"):
        await broken.start()
    broken.store.close()
    # the lock was released: once the checkpoint is put back, the vault starts
    db = sqlite3.connect(data / DB_NAME, isolation_level=None)
    db.execute("UPDATE checkpoints SET note = ? WHERE note = ?", (note, forged))
    db.close()
    fixed = Vault(VaultConfig(data_dir=data, checkpoint_interval_s=60))
    await fixed.start()
    await fixed.stop()


async def test_start_refuses_a_stored_tree_that_lost_the_checkpoints_root(tmp_path: Path) -> None:
    import sqlite3

    from daemon.clock import utc_now
    from daemon.records import parse_entry
    from daemon.store import DB_NAME
    from daemon.vault import Caller

    data = tmp_path / "vault"
    vault = Vault(VaultConfig(data_dir=data, checkpoint_interval_s=60))
    await vault.start()
    caller = Caller(role="establishment", establishment="CFA-LYON-02", label="test")
    for n in range(3):
        body, now = entry_now(minutes_ago=3 - n), utc_now()
        entry = parse_entry(body, today=now.date(), received_at=now)
        await vault.deposit(
            [entry], body=body, batch=False, key=f"t{n}", caller=caller, received_at=now
        )
    assert (await vault.make_checkpoint()).size == 3
    await vault.stop()
    db = sqlite3.connect(data / DB_NAME, isolation_level=None)
    db.execute("DROP TRIGGER nodes_no_update")
    db.execute("UPDATE nodes SET hash = zeroblob(32) WHERE level = 0 AND idx = 2")
    db.close()
    broken = Vault(VaultConfig(data_dir=data, checkpoint_interval_s=60))
    with pytest.raises(VaultError, match="stored tree does not match the latest checkpoint"):
        await broken.start()
    broken.store.close()
