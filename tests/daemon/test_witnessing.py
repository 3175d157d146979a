"""The vault's witnesses end to end: a real vault (sealing with a real appliance, through
its HTTP API) and two real ``horodate witness`` applications, one per site, each on its
own loopback port — stopped, hung, restarted from an older state, forked against.

Cosignatures are checked here by the independent cosignature/v1 verifier of
``test_witness.py`` (written from the specification's bytes), the bundle by its own
``check.py`` (the system's python3 and openssl), by ``horodate audit verify`` and by the
shell commands of VERIFY.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer, unused_port

from daemon.audit.verify import verify_bundle
from daemon.keys import load_or_create
from daemon.merkle import InMemoryTree, leaf_hash
from daemon.note import Checkpoint, Verifier, sign_checkpoint, verify_checkpoint
from daemon.schema import MIGRATIONS, SCHEMA_VERSION
from daemon.store import DB_NAME, Store
from daemon.vault import VaultConfig
from daemon.verify import verify_vault
from daemon.witness.app import create_app as create_witness_app
from daemon.witness.cosignature import Cosigner
from daemon.witness.protocol import TreeHead
from daemon.witness.state import WitnessState
from daemon.witness.witness import STATE_FILE, Witness, WitnessConfig, init
from daemon.witnessing import Policy, WitnessingConfig, WitnessingError, default_quorum, from_table
from daemon.witnessing import Witness as WitnessEndpoint
from daemon.witnessing.client import request_body
from daemon.witnessing.cosignatures import CosignatureRow, add, of_checkpoint
from daemon.witnessing.policy import split_cosigned
from horodate.cli import main as horodate
from tests.waiting import eventually

from .conftest import Appliance, VaultUnderTest, entry_now, vault_serving
from .test_audit import _check_py as check_py
from .test_audit import _rezip as rezip
from .test_witness import verify_cosignature_v1

VAULT_NAME = "vault.example.test/horodate"
INE, BIRTH = "0123456789M", "2004-05-17"
DEADLINE_S = 20.0


# -- the two sites' witnesses ---------------------------------------------------------------------


@dataclass
class Site:
    """One site's witness: its data directory and key, served on a loopback port that stays
    the same across restarts (the vault is configured with its URL)."""

    name: str
    data_dir: Path
    vkey: str
    port: int
    serve: Callable[..., Any]  # aiohttp_server
    server: TestServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        witness = Witness(WitnessConfig(data_dir=self.data_dir))
        self.server = await self.serve(create_witness_app(witness), port=self.port)

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.close()  # its cleanup closes the witness's state
        self.server = None

    def head(self) -> TreeHead:
        state = WitnessState.open(self.data_dir / STATE_FILE)
        try:
            return state.head(VAULT_NAME)
        finally:
            state.close()

    async def post(self, body: bytes) -> tuple[int, str]:
        async with ClientSession() as s, s.post(f"{self.url}/add-checkpoint", data=body) as r:
            return r.status, await r.text()


@pytest.fixture
async def sites(tmp_path: Path, aiohttp_server: Any) -> list[Site]:
    """Site A's and site B's witnesses, each witnessing the vault's origin and key (made
    here, before the vault first starts, as an operator runs ``add-log`` with its vkey)."""
    keys_dir = tmp_path / "vault" / "keys"
    keys_dir.mkdir(parents=True)
    vault_vkey = load_or_create(keys_dir, VAULT_NAME).verifier_key
    out = []
    for letter in "ab":
        data_dir = tmp_path / f"witness-{letter}"
        name = f"witness.site-{letter}.example.test/horodate"
        vkey = init(data_dir, name).verifier().key_string()
        state = WitnessState.open(data_dir / STATE_FILE)
        state.add_log(VAULT_NAME, vault_vkey, at="2026-11-30T08:00:00Z")
        state.close()
        site = Site(name=name, data_dir=data_dir, vkey=vkey, port=unused_port(),
                    serve=aiohttp_server)  # fmt: skip
        await site.start()
        out.append(site)
    return out


def witnessing_of(sites: list[Site], **kwargs: Any) -> WitnessingConfig:
    return WitnessingConfig(
        witnesses=tuple(WitnessEndpoint.parse(s.url, s.vkey) for s in sites),
        timeout_s=2.0,
        retry_interval_s=0.2,
        **kwargs,
    )


@pytest.fixture
def vault_config(tmp_path: Path, appliance: Appliance, sites: list[Site]) -> VaultConfig:
    return VaultConfig(
        data_dir=tmp_path / "vault",
        name=VAULT_NAME,
        tsa_urls=(appliance.url,),
        tsa_ca=appliance.ca_path,
        checkpoint_interval_s=0.2,
        sealer_interval_s=0.1,
        witnessing=witnessing_of(sites),
    )


# -- helpers --------------------------------------------------------------------------------------


async def deposit(v: VaultUnderTest, token: str, key: str, **extra: Any) -> dict[str, Any]:
    resp = await v.client.post(
        "/v1/entries",
        data=json.dumps(entry_now(**extra)),
        headers={**v.headers(token, key), "Content-Type": "application/json"},
    )
    assert resp.status == 201, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


def cosigned_size(v: VaultUnderTest, name: str) -> int:
    p = next(p for p in v.vault.witnessing.progress if p.witness.name == name)
    return -1 if p.cosigned_size is None else p.cosigned_size


async def all_cosigned(v: VaultUnderTest, sites: list[Site], size: int) -> None:
    await eventually(
        lambda: all(cosigned_size(v, s.name) >= size for s in sites),
        DEADLINE_S,
        f"{', '.join(s.name for s in sites)} cosign checkpoint {size}",
    )


def signature_lines(note: str) -> list[str]:
    return note[note.rfind("\n\n") + 2 :].split("\n")[:-1]


def text_of(note: str) -> str:
    return note[: note.rfind("\n\n") + 1]


def policy_of(sites: list[Site], quorum: int | None = None) -> Policy:
    return Policy.of([s.vkey for s in sites], quorum)


async def health(v: VaultUnderTest) -> dict[str, Any]:
    resp = await v.client.get("/health")
    data: dict[str, Any] = await resp.json()
    return data


def by_name(h: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in h["witnesses"]}


async def audit_zip(v: VaultUnderTest, token: str) -> bytes:
    resp = await v.client.post(
        "/v1/audits",
        data=json.dumps({"student": {"ine": INE, "birth_date": BIRTH}}),
        headers={**v.headers(token), "Content-Type": "application/json"},
    )
    assert resp.status == 200, await resp.text()
    return await resp.read()


def files_of(data: bytes) -> dict[str, bytes]:
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def witness_flags(sites: list[Site]) -> list[str]:
    return [x for s in sites for x in ("--witness-vkey", s.vkey)]


# -- witnessed, stored, served, verified ----------------------------------------------------------


async def test_each_checkpoint_is_cosigned_by_both_witnesses_stored_served_and_verified(
    vault: VaultUnderTest, sites: list[Site], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = vault.token()
    for n in range(3):
        await deposit(vault, token, f"k{n}", minutes_ago=5 - n)
    size = (await vault.vault.make_checkpoint()).size
    assert size == 3
    await all_cosigned(vault, sites, size)

    # stored: one line per witness, and each witness holds that tree head
    rows = of_checkpoint(vault.vault.store.reader(), size)
    assert sorted(r.witness for r in rows) == sorted(s.name for s in sites)
    for s in sites:
        assert s.head().size == size

    # served: the vault's note, then both cosignatures, each checked independently
    resp = await vault.client.get("/v1/checkpoint")
    note = await resp.text()
    assert resp.headers["Horodate-Witnessed"] == "true"
    assert resp.headers["Horodate-Witness-Quorum"] == "1 of 2"
    verifier = Verifier.from_key_string(vault.vault.keys.verifier_key)
    assert verify_checkpoint(note, verifier).size == size
    lines = signature_lines(note)
    assert len(lines) == 3 and lines[0].startswith(f"\u2014 {VAULT_NAME} ")
    for s in sites:
        (line,) = [x for x in lines if x.startswith(f"\u2014 {s.name} ")]
        verify_cosignature_v1(s.vkey, text_of(note), line + "\n")

    # proofs carry the cosigned checkpoint they are against
    entry = await (await vault.client.get("/v1/entries/0", headers=vault.headers(token))).json()
    assert entry["checkpoint"] == note and entry["inclusion"]["tree_size"] == size
    assert entry["witnessing"] == {
        "cosigned_by": [s.name for s in sites],
        "witnesses": 2,
        "quorum": 1,
        "meets_policy": True,
    }
    proof = await (await vault.client.get(f"/v1/proofs/inclusion?index=0&tree_size={size}")).json()
    assert proof["checkpoint"] == note and proof["witnessing"]["meets_policy"]
    proof = await (await vault.client.get(f"/v1/proofs/consistency?first=1&second={size}")).json()
    assert proof["checkpoint"] == note
    proof = await (await vault.client.get("/v1/proofs/inclusion?index=0&tree_size=2")).json()
    assert proof["checkpoint"] is None  # no checkpoint was signed at size 2

    # /health and /metrics: per witness, its last cosigned size and age, its failures
    h = await health(vault)
    assert h["state"] == "ok" and h["checkpoint_witnessed"]["meets_policy"]
    for s in sites:
        w = by_name(h)[s.name]
        assert (w["state"], w["cosigned_size"], w["failures"]) == ("ok", size, 0), w
        assert 0 <= w["cosigned_age_s"] < 60 and w["url"] == s.url
    metrics = await (await vault.client.get("/metrics")).text()
    for s in sites:
        assert f'horodate_vault_witness_cosigned_size{{witness="{s.name}"}} {size}.0' in metrics
        assert f'horodate_vault_witness_up{{witness="{s.name}"}} 1.0' in metrics
        assert f'horodate_vault_witness_failures_total{{witness="{s.name}"}} 0.0' in metrics
    assert "horodate_vault_checkpoint_witnessed 1.0" in metrics

    # vault verify with the witnesses' keys: every stored cosignature checked
    report = verify_vault(vault.data_dir, witnesses=policy_of(sites))
    assert report.ok, report.failure
    assert size in report.witnessed and report.cosignatures >= 2
    capsys.readouterr()
    assert (
        horodate(["vault", "verify", "--data-dir", str(vault.data_dir), *witness_flags(sites)]) == 0
    )
    out = capsys.readouterr().out
    assert "meet the policy (1 of 2 witnesses)" in out, out

    # an audit trail carries the cosigned checkpoint, and the witnesses' keys
    zipped = await audit_zip(vault, token)
    files = files_of(zipped)
    assert files["checkpoint.txt"].decode() == note
    assert all(f.decode().endswith(note) for n, f in files.items() if n.startswith("proofs/"))
    assert files["witnesses.vkey"].decode().split() == [s.vkey for s in sites]
    assert json.loads(files["report.json"])["witnessing"]["meets_policy"] is True
    report_b = verify_bundle(zipped, witness_vkeys=[s.vkey for s in sites], witness_quorum=2)
    assert report_b.ok, report_b.checks
    assert any("cosigned by 2 of 2 witnesses" in what for _, what in report_b.checks)
    path = tmp_path / "trail.zip"
    path.write_bytes(zipped)
    done = check_py(path, *witness_flags(sites), "--witness-quorum", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cosigné par 2 témoin(s) sur 2" in done.stdout
    capsys.readouterr()
    assert horodate(["audit", "verify", str(path), *witness_flags(sites)]) == 0


async def test_the_commands_of_verify_md_check_the_cosignatures_by_hand(
    vault: VaultUnderTest, sites: list[Site], tmp_path: Path
) -> None:
    token = vault.token()
    await deposit(vault, token, "a")
    await all_cosigned(vault, sites, (await vault.vault.make_checkpoint()).size)
    folder = tmp_path / "by-hand"
    with zipfile.ZipFile(io_bytes(await audit_zip(vault, token))) as z:
        z.extractall(folder)
    blocks = re.findall(r"```sh\n(.*?)```", (folder / "VERIFY.md").read_text(), re.S)
    outputs = []
    for block in blocks[3:6]:  # the vault's signature, the checkpoint's token, the witnesses'
        script = "set -euo pipefail\n" + block
        done = subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, script + done.stdout + done.stderr
        outputs.append(done.stdout + done.stderr)
    assert "Signature Verified Successfully" in outputs[0]
    assert "Verification: OK" in outputs[1]
    assert outputs[2].count("Signature Verified Successfully") == 2, outputs[2]
    for s in sites:
        assert f"{s.name}, cosigné le" in outputs[2]
    # and a forged cosignature fails there too
    note = (folder / "checkpoint.txt").read_text().split("\n")
    sig = note[5].rsplit(" ", 1)
    note[5] = sig[0] + " " + flip(sig[1])
    (folder / "checkpoint.txt").write_text("\n".join(note))
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + blocks[5]], cwd=folder,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0, done.stdout


def io_bytes(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def flip(b64: str) -> str:
    """The base64 of a signature with one bit of its signature bytes changed."""
    import base64

    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# -- one witness down, or hung --------------------------------------------------------------------


async def test_with_one_witness_down_appends_and_checkpoints_go_on_and_1_of_2_counts(
    vault: VaultUnderTest, sites: list[Site]
) -> None:
    a, b = sites
    token = vault.token()
    await deposit(vault, token, "before")
    await all_cosigned(vault, sites, (await vault.vault.make_checkpoint()).size)
    await b.stop()
    for n in range(3):
        await deposit(vault, token, f"down-{n}")  # 201 each: sealed, durable
    started = time.monotonic()
    size = (await vault.vault.make_checkpoint()).size
    assert time.monotonic() - started < 1.0  # the witnesses' timeout is 2 s: not waited for
    await all_cosigned(vault, [a], size)
    await eventually(
        lambda: by_name_now(vault)[b.name]["state"] == "failing", DEADLINE_S, "B is seen down"
    )
    h = await health(vault)
    assert h["state"] == "degraded", h
    assert by_name(h)[a.name]["state"] == "ok" and by_name(h)[a.name]["cosigned_size"] == size
    down = by_name(h)[b.name]
    assert down["cosigned_size"] < size and down["failures"] >= 1
    assert down["last_status"] is None and "unreachable" in down["last_failure"], down
    assert h["checkpoint_witnessed"]["meets_policy"] and h["checkpoint_witnessed"][
        "cosigned_by"
    ] == [a.name]
    resp = await vault.client.get("/v1/checkpoint")
    assert resp.headers["Horodate-Witnessed"] == "true"
    assert resp.headers["Horodate-Cosigned-By"] == a.name
    metrics = await (await vault.client.get("/metrics")).text()
    assert f'horodate_vault_witness_up{{witness="{b.name}"}} 0.0' in metrics

    await b.start()  # back: it catches up with the latest checkpoint, a proof spanning the gap
    await all_cosigned(vault, [b], size)
    assert b.head().size == size
    await eventually(lambda: by_name_now(vault)[b.name]["state"] == "ok", DEADLINE_S, "B ok")
    assert (await health(vault))["state"] == "ok"


def by_name_now(v: VaultUnderTest) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in v.vault.witnessing.status()["witnesses"]}


async def test_a_witness_that_accepts_and_never_answers_holds_nothing_up(
    vault: VaultUnderTest, sites: list[Site]
) -> None:
    a, b = sites
    await b.stop()
    accepted: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing, never closes

    server = await asyncio.start_server(hang, "127.0.0.1", b.port, reuse_address=True)
    try:
        token = vault.token()
        await deposit(vault, token, "hung-0")
        started = time.monotonic()
        await deposit(vault, token, "hung-1")
        size = (await vault.vault.make_checkpoint()).size
        assert time.monotonic() - started < 1.5  # 2 s timeout per witness attempt: not waited
        await all_cosigned(vault, [a], size)
        await eventually(lambda: accepted, DEADLINE_S, "the vault reaches the hung witness")
        await eventually(
            lambda: by_name_now(vault)[b.name]["state"] == "failing",
            DEADLINE_S,
            "the hung witness is timed out",
        )
        assert "unreachable" in by_name_now(vault)[b.name]["last_failure"]
    finally:
        server.close()
        for w in accepted:
            w.close()
        await server.wait_closed()


# -- 409: a witness restarted from an older state ------------------------------------------------


async def test_a_witness_restarted_from_an_older_state_answers_409_and_the_vault_resubmits(
    vault: VaultUnderTest, sites: list[Site], tmp_path: Path
) -> None:
    a = sites[0]
    token = vault.token()
    await deposit(vault, token, "one")
    first = (await vault.vault.make_checkpoint()).size
    await all_cosigned(vault, [a], first)
    await a.stop()
    older = tmp_path / "witness-a-backup"
    shutil.copytree(a.data_dir, older)  # what the docs say never to restore
    await a.start()
    await deposit(vault, token, "two")
    await deposit(vault, token, "three")
    second = (await vault.vault.make_checkpoint()).size
    await all_cosigned(vault, [a], second)
    await a.stop()
    for f in a.data_dir.glob(f"{STATE_FILE}*"):
        f.unlink()
    for f in older.glob(f"{STATE_FILE}*"):
        shutil.copy2(f, a.data_dir / f.name)
    assert a.head().size == first  # it forgot checkpoint `second`
    await a.start()
    progress = next(p for p in vault.vault.witnessing.progress if p.witness.name == a.name)
    conflicts = progress.conflicts
    await deposit(vault, token, "four")
    third = (await vault.vault.make_checkpoint()).size
    await all_cosigned(vault, [a], third)  # "old second" got 409 "first", then from `first`
    assert progress.conflicts > conflicts
    assert a.head().size == third and progress.known_size == third


# -- a fork: a second tree of the same size, signed with the vault's key ------------------------


async def test_a_fork_is_refused_by_the_witnesses_and_detected_by_their_clients(
    vault: VaultUnderTest,
    sites: list[Site],
    tmp_path: Path,
    aiohttp_client: Any,
    appliance: Appliance,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = vault.token()
    for n in range(3):
        await deposit(vault, token, f"genuine-{n}", minutes_ago=5 - n)
    size = (await vault.vault.make_checkpoint()).size
    await all_cosigned(vault, sites, size)
    genuine = await (await vault.client.get("/v1/checkpoint")).text()
    genuine_root = {s.name: s.head().root for s in sites}

    # The compromised site signs another tree of the same size with the vault's own key.
    tree = InMemoryTree()
    for n in range(size):
        tree.append(leaf_hash(f"forged {n}".encode()))
    forged = sign_checkpoint(Checkpoint(VAULT_NAME, size, tree.root()), vault.vault.keys.signer)
    for s in sites:
        assert (await s.post(request_body(size, [], forged)))[0] == 422  # same size, other root
        assert await s.post(request_body(0, [], forged)) == (409, f"{size}\n")
        assert s.head() == TreeHead(size, genuine_root[s.name])  # nothing changed

    # The same site runs a vault of its own from the same key, with other entries: its
    # checkpoints are submitted to the same witnesses, which refuse them (422).
    keys = tmp_path / "fork" / "keys"
    shutil.copytree(vault.data_dir / "keys", keys)
    config = VaultConfig(
        data_dir=tmp_path / "fork", name=VAULT_NAME, tsa_urls=(appliance.url,),
        tsa_ca=appliance.ca_path, checkpoint_interval_s=0.2, sealer_interval_s=0.1,
        witnessing=witnessing_of(sites),
    )  # fmt: skip
    async with vault_serving(aiohttp_client, appliance, config) as fork:
        fork_token = fork.token()
        for n in range(3):
            await deposit(fork, fork_token, f"forked-{n}", minutes_ago=4 - n)
        assert (await fork.vault.make_checkpoint()).size == size
        await eventually(
            lambda: all(w["last_status"] == 422 for w in by_name_now(fork).values()),
            DEADLINE_S,
            "both witnesses refuse the forked checkpoint (422)",
        )
        for s in sites:
            assert s.head() == TreeHead(size, genuine_root[s.name])
        assert "a fork or a rollback" in caplog.text
        resp = await fork.client.get("/v1/checkpoint")
        assert resp.headers["Horodate-Witnessed"] == "false"
        assert len(signature_lines(await resp.text())) == 1
        fork_bundle = await audit_zip(fork, fork_token)
        await fork.client.close()  # the forger's vault stops: its files are closed

    # An auditor given the witnesses' keys refuses the forked trail...
    report = verify_bundle(fork_bundle, witness_vkeys=[s.vkey for s in sites])
    assert not report.ok
    assert any(not good and "cosigned by 0 of 2" in what for good, what in report.checks), (
        report.checks
    )
    assert verify_bundle(fork_bundle).ok  # without them, the fork is consistent: keys matter
    path = tmp_path / "fork-trail.zip"  # (check_py unzips beside it)
    path.write_bytes(fork_bundle)
    done = check_py(path, *witness_flags(sites))
    assert done.returncode == 1 and "n'est pas témoigné" in done.stdout, done.stdout

    # ... also when the genuine cosignatures are grafted onto the forked checkpoint.
    files = files_of(fork_bundle)
    note = files["checkpoint.txt"].decode()
    grafted = note + "".join(x + "\n" for x in signature_lines(genuine)[1:])
    for name in list(files):
        if name == "checkpoint.txt" or name.startswith("proofs/"):
            files[name] = files[name].decode().replace(note, grafted).encode()
    forged_zip = rezip(files, tmp_path / "grafted.zip")
    report = verify_bundle(forged_zip.read_bytes(), witness_vkeys=[s.vkey for s in sites])
    assert any(not good and "does not verify" in what for good, what in report.checks)
    done = check_py(forged_zip, *witness_flags(sites))
    assert done.returncode == 1 and "est fausse" in done.stdout, done.stdout

    # vault verify on the forked site's database, with the witnesses' keys, refuses it...
    report_v = verify_vault(config.data_dir, witnesses=policy_of(sites))
    assert not report_v.ok and "witnessed by no one" in (report_v.failure or "")
    assert verify_vault(config.data_dir).ok  # (alone it cannot tell)
    # ... and names the witness when the genuine cosignature rows are copied in.
    store = Store.open(config.data_dir)
    genuine_rows = of_checkpoint(vault.vault.store.reader(), size)
    with store.transaction() as w:
        for row in genuine_rows:
            add(w, row)
    store.close()
    report_v = verify_vault(config.data_dir, witnesses=policy_of(sites))
    assert not report_v.ok and "does not verify" in (report_v.failure or ""), report_v.failure
    assert sites[0].name in (report_v.failure or "")


# -- tampering ------------------------------------------------------------------------------------


def copy_without_triggers(src: Path, dst: Path) -> sqlite3.Connection:
    shutil.copytree(src, dst)
    conn = sqlite3.connect(dst / DB_NAME, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def mutate(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytes([value[0] ^ 0x01]) + value[1:]
    if isinstance(value, int):
        return value + 1
    i = len(value) - 10  # inside the line's base64 (its signature), or the name's tail
    return value[:i] + ("B" if value[i] != "B" else "C") + value[i + 1 :]


async def test_a_tampered_cosignature_in_the_store_is_caught_by_vault_verify(
    vault: VaultUnderTest, sites: list[Site], tmp_path: Path
) -> None:
    token = vault.token()
    await deposit(vault, token, "a")
    size = (await vault.vault.make_checkpoint()).size
    await all_cosigned(vault, sites, size)
    await vault.client.close()  # the vault stops; its files are closed
    policy = policy_of(sites)
    assert verify_vault(vault.data_dir, witnesses=policy).ok

    conn = sqlite3.connect(vault.data_dir / DB_NAME)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE cosignatures SET line = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM cosignatures")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(cosignatures)")]
    conn.close()
    escaped = []
    for col in columns:
        case = tmp_path / f"cosignatures-{col}"
        db = copy_without_triggers(vault.data_dir, case)
        rowid, value = db.execute(
            f"SELECT rowid, {col} FROM cosignatures WHERE size = ? LIMIT 1", (size,)
        ).fetchone()
        db.execute(f"UPDATE cosignatures SET {col} = ? WHERE rowid = ?", (mutate(value), rowid))
        db.close()
        report = verify_vault(case, witnesses=policy)
        if report.ok and col != "received_at":  # when the vault stored it: bookkeeping
            escaped.append(col)
        if col == "line":
            assert "witness" in (report.failure or ""), report.failure
    assert not escaped, f"changes vault verify did not notice: {escaped}"


async def test_a_tampered_cosignature_in_a_bundle_is_caught_by_both_checkers(
    vault: VaultUnderTest, sites: list[Site], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = vault.token()
    await deposit(vault, token, "a")
    await all_cosigned(vault, sites, (await vault.vault.make_checkpoint()).size)
    files = files_of(await audit_zip(vault, token))
    note = files["checkpoint.txt"].decode()
    lines = signature_lines(note)
    name, b64 = lines[-1][2:].split(" ")
    tampered = note.replace(lines[-1], f"\u2014 {name} {flip(b64)}")
    for n in list(files):
        if n == "checkpoint.txt" or n.startswith("proofs/"):
            files[n] = files[n].decode().replace(note, tampered).encode()
    path = rezip(files, tmp_path / "tampered.zip")
    for keys in ([s.vkey for s in sites], []):  # the witnesses' keys, or the bundle's own
        report = verify_bundle(path.read_bytes(), witness_vkeys=keys)
        assert not report.ok
        assert any(not ok and name in what for ok, what in report.checks), report.checks
    capsys.readouterr()
    assert horodate(["audit", "verify", str(path), *witness_flags(sites)]) == 1
    assert f"witness {name}" in capsys.readouterr().out
    done = check_py(path)
    assert done.returncode == 1 and f"la cosignature du témoin {name} est fausse" in done.stdout


async def test_the_quorum_options_of_audit_verify(
    vault: VaultUnderTest, sites: list[Site], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = sites
    await b.stop()
    token = vault.token()
    await deposit(vault, token, "a")
    size = (await vault.vault.make_checkpoint()).size
    await all_cosigned(vault, [a], size)
    await eventually(lambda: by_name_now(vault)[b.name]["attempts"] > 0, DEADLINE_S, "B tried")
    path = tmp_path / "trail.zip"
    path.write_bytes(await audit_zip(vault, token))
    capsys.readouterr()
    assert horodate(["audit", "verify", str(path), *witness_flags(sites)]) == 0  # 1 of 2
    assert horodate(["audit", "verify", str(path), "--witness-quorum", "2"]) == 1
    assert "cosigned by 1 of 2 witnesses" in capsys.readouterr().out
    assert horodate(["audit", "verify", str(path)]) == 0  # the bundle's keys: noted, not required
    assert check_py(path, "--witness-quorum", "2").returncode == 1
    assert check_py(path, "--witness-vkey", a.vkey).returncode == 0


# -- the table, its migration, the configuration, the policy --------------------------------------


def test_a_version_4_vault_migrates_and_its_cosignatures_are_append_only(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME)
    for m in MIGRATIONS[:4]:
        conn.executescript(m)
    conn.execute("PRAGMA user_version = 4")
    conn.execute("INSERT INTO checkpoints VALUES (0, 'note', NULL, 't')")
    conn.commit()
    conn.close()
    store = Store.open(tmp_path)  # v5 adds the cosignatures (later versions may follow)
    try:
        assert store.writer.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        row = CosignatureRow(0, "w", b"\x01\x02\x03\x04", "\u2014 w AAAA", 1, "t")
        with store.transaction() as w:
            assert add(w, row) and not add(w, row)  # once per witness key and size
        assert of_checkpoint(store.reader(), 0) == [row]
        for sql in ("UPDATE cosignatures SET line = 'x'", "DELETE FROM cosignatures"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                store.writer.conn.execute(sql)
    finally:
        store.close()


def test_the_configuration_names_the_witnesses_and_the_quorum() -> None:
    import tomllib

    vkeys = [Cosigner.generate(f"w{n}.example.test").verifier().key_string() for n in range(3)]
    conf = tomllib.loads(
        "[vault]\nwitness_timeout_s = 3\n"
        + "".join(
            f'[[vault.witnesses]]\nurl = "http://10.0.0.{n}:3191/"\nvkey = "{k}"\n'
            for n, k in enumerate(vkeys)
        )
    )["vault"]
    config = from_table(conf)
    assert [w.url for w in config.witnesses] == [f"http://10.0.0.{n}:3191" for n in range(3)]
    assert config.policy.quorum == 2 and config.timeout_s == 3.0  # half of 3, rounded up
    assert from_table({**conf, "witness_quorum": 3}).policy.quorum == 3
    assert from_table({}).witnesses == ()
    for bad in (
        {**conf, "witness_quorum": 4},
        {**conf, "witness_quorum": 0},
        {"witnesses": [{"url": "http://x", "vkey": vkeys[0], "name": "extra"}]},
        {"witnesses": [{"url": "ftp://x", "vkey": vkeys[0]}]},
        {"witnesses": [{"url": "http://x", "vkey": vkeys[0][:-2] + "AA"}]},
        {
            "witnesses": [
                {"url": "http://x", "vkey": vkeys[0]},
                {"url": "http://y", "vkey": vkeys[0]},
            ]
        },
        {"witnesses": [{"url": "http://x", "vkey": note_key()}]},  # not a cosignature key
    ):
        with pytest.raises(WitnessingError):
            from_table(bad)


def note_key() -> str:
    from daemon.note import Signer

    return Signer.generate("vault.example.test").verifier().key_string()


def test_the_default_quorum_is_half_the_witnesses_rounded_up() -> None:
    assert [default_quorum(n) for n in range(1, 7)] == [1, 1, 2, 2, 3, 3]


def test_the_policy_ignores_unknown_keys_and_names_a_bad_cosignature() -> None:
    a, b, stranger = (Cosigner.generate(f"{x}.example.test") for x in ("a", "b", "stranger"))
    text = Checkpoint(VAULT_NAME, 5, bytes(32)).text()
    lines = [c.cosign(text, 1_790_000_000).rstrip("\n") for c in (a, stranger)]
    policy = Policy.of([a.verifier().key_string(), b.verifier().key_string()])
    result = policy.check(text, lines)
    assert result.by == ["a.example.test"] and result.meets_policy and not result.bad
    other = Checkpoint(VAULT_NAME, 5, bytes([1]) * 32).text()
    result = policy.check(other, lines)  # a's line over another tree: not "absent", bad
    assert result.by == [] and result.bad and "a.example.test" in result.bad[0]
    assert not Policy.of([b.verifier().key_string()], 1).check(text, lines).meets_policy


def test_split_cosigned_gives_back_the_note_the_vault_signed() -> None:
    from daemon.note import Signer
    from daemon.witnessing.policy import cosigned_note

    signer = Signer.generate(VAULT_NAME)
    note = sign_checkpoint(Checkpoint(VAULT_NAME, 5, bytes(32)), signer)
    line = Cosigner.generate("a.example.test").cosign(text_of(note), 1_790_000_000).rstrip()
    cosigned = cosigned_note(note, [line, line])
    assert cosigned == note + line + "\n"
    text, signed, others = split_cosigned(cosigned, signer.verifier())
    assert (text, signed, others) == (text_of(note), note, [line])
