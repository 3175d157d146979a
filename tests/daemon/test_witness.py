"""The witness (c2sp.org/tlog-witness): every answer of add-checkpoint over real HTTP.

The log is an :class:`InMemoryTree` whose checkpoints ``daemon.note`` signs, as the vault
does; the witness is its aiohttp app on a loopback socket (``aiohttp_client``), or the real
``horodate witness`` process for the kill -9 test. Cosignatures are checked by a verifier
written here from the byte layout of c2sp.org/tlog-cosignature, not by the witness's code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.merkle import EMPTY_ROOT, InMemoryTree, leaf_hash
from daemon.note import Checkpoint, Signer, sign_checkpoint, sign_note
from daemon.witness.app import create_app
from daemon.witness.protocol import EMPTY, Conflict, TreeHead
from daemon.witness.state import WitnessState
from daemon.witness.witness import STATE_FILE, Witness, WitnessConfig, init
from horodate.cli import main as horodate

ROOT = Path(__file__).resolve().parents[2]
LOG = "vault.example.test/horodate"
WITNESS = "witness.example.test/site-a"
SIZE_TYPE = "text/x.tlog.size"


# -- the log --------------------------------------------------------------------------------------


@dataclass
class Log:
    """A log as the vault keeps one: a Merkle tree, checkpoints signed with its note key."""

    origin: str = LOG
    signer: Signer = field(default_factory=lambda: Signer.generate(LOG))
    tree: InMemoryTree = field(default_factory=InMemoryTree)
    tag: str = "entry"

    def grow(self, size: int) -> Log:
        while self.tree.size < size:
            self.tree.append(leaf_hash(f"{self.tag} {self.tree.size}".encode()))
        return self

    def checkpoint(
        self, size: int, *, signer: Signer | None = None, root: bytes | None = None
    ) -> str:
        self.grow(size)
        cp = Checkpoint(origin=self.origin, size=size, root=root or self.tree.root(size))
        return sign_checkpoint(cp, signer or self.signer)

    def proof(self, old: int, size: int) -> list[bytes]:
        self.grow(size)
        return [] if old in (0, size) else self.tree.consistency_proof(old, size)

    def body(self, old: int, size: int, *, proof: Sequence[bytes] | None = None) -> bytes:
        proof = self.proof(old, size) if proof is None else proof
        return request_body(old, proof, self.checkpoint(size))


def request_body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    """tlog-witness: the old size line, the proof lines, an empty line, the checkpoint."""
    lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return f"old {old}\n{lines}\n{note}".encode()


def text_of(note: str) -> str:
    return note[: note.rfind("\n\n") + 1]


B64: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def loose(b64: str) -> str:
    """The base64 of 32 bytes written with a padding bit set: the same bytes, but not the
    canonical encoding."""
    assert len(b64) == 44 and b64.endswith("=")
    return b64[:42] + B64[B64.index(b64[42]) ^ 1] + "="


# -- an independent cosignature/v1 verifier, from the specification's bytes -----------------------


def verify_cosignature_v1(vkey: str, checkpoint_text: str, line: str) -> int:
    """c2sp.org/tlog-cosignature: the line is ``— <name> base64(key ID ‖ u64 timestamp ‖
    Ed25519 signature)``, the key ID ``SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4]``, the
    signature over ``cosignature/v1\\ntime <t>\\n`` and the checkpoint's text. Returns t."""
    name, hex_id, b64 = vkey.split("+", 2)
    key = base64.b64decode(b64, validate=True)
    assert len(key) == 33 and key[0] == 0x04, "a cosignature/v1 vkey is type 0x04"
    public = key[1:]
    assert (
        bytes.fromhex(hex_id) == hashlib.sha256(name.encode() + b"\x0a\x04" + public).digest()[:4]
    )
    prefix = "\u2014 " + name + " "
    assert line.startswith(prefix) and line.endswith("\n") and line.count("\n") == 1
    raw = base64.b64decode(line[len(prefix) : -1], validate=True)
    assert len(raw) == 4 + 8 + 64
    assert raw[:4] == bytes.fromhex(hex_id)
    (timestamp,) = struct.unpack(">Q", raw[4:12])
    assert 0 < timestamp <= 2**63 - 1
    message = b"cosignature/v1\n" + b"time " + str(timestamp).encode() + b"\n"
    Ed25519PublicKey.from_public_bytes(public).verify(raw[12:], message + checkpoint_text.encode())
    return int(timestamp)


# -- the witness under test -----------------------------------------------------------------------


def make_witness_dir(path: Path, *logs: Log) -> str:
    """An initialised witness witnessing ``logs``; its vkey."""
    vkey = init(path, WITNESS).verifier().key_string()
    state = WitnessState.open(path / STATE_FILE)
    for log in logs:
        state.add_log(log.origin, log.signer.verifier().key_string(), at="now")
    state.close()
    return vkey


@dataclass
class Under:
    client: TestClient
    witness: Witness
    vkey: str
    log: Log

    async def post(self, body: bytes) -> tuple[int, str, str]:
        async with self.client.post("/add-checkpoint", data=body) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()

    def head(self, origin: str = LOG) -> TreeHead:
        return self.witness.state.head(origin)


@pytest.fixture
async def w(aiohttp_client: Any, tmp_path: Path) -> Under:
    log = Log()
    vkey = make_witness_dir(tmp_path / "witness", log)
    witness = Witness(WitnessConfig(data_dir=tmp_path / "witness"))
    client = await aiohttp_client(create_app(witness))
    return Under(client=client, witness=witness, vkey=vkey, log=log)


# -- 200 ------------------------------------------------------------------------------------------


async def test_the_first_checkpoint_from_old_0_is_cosigned(w: Under) -> None:
    before = int(time.time())
    status, ctype, body = await w.post(w.log.body(0, 5))
    assert status == 200, body
    assert ctype.startswith("text/plain")
    timestamp = verify_cosignature_v1(w.vkey, text_of(w.log.checkpoint(5)), body)
    assert before <= timestamp <= int(time.time())
    assert w.head() == TreeHead(5, w.log.tree.root(5))


async def test_the_log_grows_with_valid_proofs_and_each_step_is_cosigned(w: Under) -> None:
    old = 0
    for size in (1, 2, 3, 4, 7, 8, 9, 16, 17, 31, 64, 100):
        status, _, body = await w.post(w.log.body(old, size))
        assert status == 200, (old, size, body)
        verify_cosignature_v1(w.vkey, text_of(w.log.checkpoint(size)), body)
        assert w.head() == TreeHead(size, w.log.tree.root(size))
        old = size


async def test_the_same_checkpoint_again_is_cosigned_again(w: Under) -> None:
    assert (await w.post(w.log.body(0, 5)))[0] == 200
    status, _, body = await w.post(w.log.body(5, 5))
    assert status == 200, body
    verify_cosignature_v1(w.vkey, text_of(w.log.checkpoint(5)), body)
    assert w.head().size == 5


async def test_the_empty_tree_is_cosigned_from_old_0(w: Under) -> None:
    status, _, body = await w.post(w.log.body(0, 0))
    assert status == 200, body
    assert w.head() == TreeHead(0, EMPTY_ROOT)


async def test_extension_lines_are_cosigned_with_the_rest(w: Under) -> None:
    w.log.grow(3)
    cp = Checkpoint(LOG, 3, w.log.tree.root(3), extensions=("time-stamped 2026-11-30",))
    note = sign_checkpoint(cp, w.log.signer)
    status, _, body = await w.post(request_body(0, [], note))
    assert status == 200, body
    verify_cosignature_v1(w.vkey, cp.text(), body)


async def test_the_monitoring_endpoint_serves_the_latest_cosigned_checkpoint(w: Under) -> None:
    path = f"/{hashlib.sha256(LOG.encode()).hexdigest()}/checkpoint"
    async with w.client.get(path) as resp:
        assert resp.status == 404
    await w.post(w.log.body(0, 5))
    _, _, cosignature = await w.post(w.log.body(5, 9))
    async with w.client.get(path) as resp:
        assert resp.status == 200
        note = await resp.text()
    text = text_of(w.log.checkpoint(9))
    assert note.startswith(text + "\n")
    log_line = w.log.checkpoint(9)[len(text) + 1 :]  # Ed25519 signing is deterministic
    assert note == text + "\n" + log_line + cosignature


# -- 409 ------------------------------------------------------------------------------------------


async def test_an_old_size_that_is_not_the_known_one_is_409_with_the_known_size(w: Under) -> None:
    status, ctype, body = await w.post(w.log.body(3, 5))  # it knows nothing yet: 0
    assert (status, ctype, body) == (409, SIZE_TYPE, "0\n")
    assert (await w.post(w.log.body(0, 5)))[0] == 200
    for old, size in ((0, 8), (3, 8), (6, 8), (4, 4), (0, 0)):
        status, ctype, body = await w.post(w.log.body(old, size))
        assert (status, ctype, body) == (409, SIZE_TYPE, "5\n"), (old, size)
    assert w.head().size == 5


# -- 422 ------------------------------------------------------------------------------------------


def fork(size: int, *, diverging_at: int, signer: Signer) -> Log:
    """The same log (origin, key) with another history from leaf ``diverging_at`` on."""
    other = Log(signer=signer, tag="rewritten")
    original = Log(signer=signer)
    original.grow(diverging_at)
    for i in range(size):
        other.tree.append(
            original.tree.node(0, i) if i < diverging_at else leaf_hash(b"rewritten %d" % i)
        )
    return other


async def test_a_bad_consistency_proof_is_422_and_the_state_does_not_move(w: Under) -> None:
    assert (await w.post(w.log.body(0, 5)))[0] == 200
    good = w.log.proof(5, 13)
    flipped = [good[0][:-1] + bytes([good[0][-1] ^ 1]), *good[1:]]
    rewritten = fork(13, diverging_at=2, signer=w.log.signer)
    for proof in (flipped, good[:-1], [*good, good[0]], [], good[::-1]):
        status, _, body = await w.post(w.log.body(5, 13, proof=proof))
        assert status == 422, (proof, body)
    # a history rewritten before size 5, with its own valid proof from 5: inconsistent
    status, _, _ = await w.post(rewritten.body(5, 13))
    assert status == 422
    assert w.head() == TreeHead(5, w.log.tree.root(5))
    assert len(w.witness.state.evidence(LOG)) == 6  # signed by the log: kept as evidence


async def test_a_proof_from_old_0_is_422(w: Under) -> None:
    status, _, _ = await w.post(w.log.body(0, 5, proof=[bytes(32)]))
    assert status == 422
    assert w.head() == EMPTY


async def test_the_same_size_with_another_root_is_422(w: Under) -> None:
    assert (await w.post(w.log.body(0, 5)))[0] == 200
    rewritten = fork(5, diverging_at=3, signer=w.log.signer)
    status, _, _ = await w.post(rewritten.body(5, 5))
    assert status == 422  # tlog-witness since #280; it was 409 in v1.0.0
    assert w.head() == TreeHead(5, w.log.tree.root(5))


async def test_a_size_0_checkpoint_with_another_root_than_the_empty_trees_is_422(
    w: Under,
) -> None:
    note = w.log.checkpoint(0, root=hashlib.sha256(b"not empty").digest())
    status, _, _ = await w.post(request_body(0, [], note))
    assert status == 422
    assert w.witness.state.latest(LOG) is None


# -- 400 ------------------------------------------------------------------------------------------


async def test_a_checkpoint_smaller_than_the_old_size_is_400(w: Under) -> None:
    assert (await w.post(w.log.body(0, 8)))[0] == 200
    status, _, _ = await w.post(request_body(8, [], w.log.checkpoint(5)))
    assert status == 400  # "The old size MUST be equal to or lower than the checkpoint size"
    status, _, body = await w.post(w.log.body(5, 5))  # smaller, from a stale old size
    assert (status, body) == (409, "8\n")
    assert w.head().size == 8


def garbage(log: Log) -> dict[str, bytes]:
    note = log.checkpoint(5)
    hashes = log.proof(3, 5)
    b64 = base64.b64encode(hashes[0]).decode()
    text, sigs = text_of(note), note[len(text_of(note)) + 1 :]
    root = base64.b64encode(log.tree.root(5)).decode()
    return {
        "empty": b"",
        "no old line": note.encode(),
        "no empty line": b"old 0\n" + note.encode(),
        "old with a leading zero": b"old 00\n\n" + note.encode(),
        "old negative": b"old -1\n\n" + note.encode(),
        "old in hex": b"old 0x0\n\n" + note.encode(),
        "old with a space after": b"old 0 \n\n" + note.encode(),
        "OLD": b"OLD 0\n\n" + note.encode(),
        "old above 2^63 - 1": b"old 9223372036854775808\n\n" + note.encode(),
        "a proof line not base64": b"old 3\nnot base64!\n\n" + note.encode(),
        "a proof line of 31 bytes": f"old 3\n{base64.b64encode(bytes(31)).decode()}\n\n".encode()
        + note.encode(),
        "a proof line in non-canonical base64": f"old 3\n{loose(b64)}\n\n".encode() + note.encode(),
        "64 proof lines": ("old 3\n" + f"{b64}\n" * 64 + "\n").encode() + note.encode(),
        "CRLF": request_body(0, [], note).replace(b"\n", b"\r\n"),
        "not UTF-8": b"old 0\n\n" + note.encode().replace(b"vault", b"\xff\xfe"),
        "a control character": b"old 0\n\n" + note.encode().replace(b"vault", b"va\x01lt"),
        "no signature": f"old 0\n\n{text}\n".encode(),
        "no blank line before the signatures": f"old 0\n\n{text}{sigs}".encode(),
        "a malformed signature line": f"old 0\n\n{text}\n— {LOG} !!!\n".encode(),
        "a signature line without the dash": f"old 0\n\n{text}\n- {sigs[2:]}".encode(),
        "two lines only": b"old 0\n\n" + sign_checkpoint_text(log, f"{LOG}\n5\n"),
        "a size with a leading zero": b"old 0\n\n"
        + sign_checkpoint_text(log, f"{LOG}\n05\n{root}\n"),
        "a size above 2^63 - 1": b"old 0\n\n"
        + sign_checkpoint_text(log, f"{LOG}\n9223372036854775808\n{root}\n"),
        "a root in non-canonical base64": b"old 0\n\n"
        + sign_checkpoint_text(log, f"{LOG}\n5\n{loose(root)}\n"),
        "a root of 31 bytes": b"old 0\n\n"
        + sign_checkpoint_text(log, f"{LOG}\n5\n{base64.b64encode(bytes(31)).decode()}\n"),
        "an empty extension line": b"old 0\n\n" + sign_checkpoint_text(log, f"{text}\nx\n"),
    }


def sign_checkpoint_text(log: Log, text: str) -> bytes:
    return sign_note(text, [log.signer]).encode()


@pytest.mark.parametrize("case", sorted(garbage(Log())))
async def test_malformed_bodies_are_400_and_the_state_does_not_move(w: Under, case: str) -> None:
    assert (await w.post(w.log.body(0, 3)))[0] == 200
    status, _, body = await w.post(garbage(w.log)[case])
    assert status == 400, (case, body)
    assert w.head() == TreeHead(3, w.log.tree.root(3))


async def test_a_body_over_the_cap_is_413(w: Under) -> None:
    cap = w.witness.config.body_max_bytes
    status, _, _ = await w.post(b"old 0\n" + b"A" * cap)
    assert status == 413

    async def chunks() -> Any:  # no Content-Length: the cap holds on what is read
        for _ in range(cap // 1024 + 2):
            yield b"B" * 1024

    async with w.client.post("/add-checkpoint", data=chunks()) as resp:
        assert resp.status == 413


async def test_add_checkpoint_is_a_post(w: Under) -> None:
    async with w.client.get("/add-checkpoint") as resp:
        assert resp.status == 405


# -- 403, 404 -------------------------------------------------------------------------------------


async def test_a_checkpoint_no_trusted_key_signed_is_403(w: Under) -> None:
    impostor = Signer.generate(LOG)  # the log's name, another key: its key ID differs
    for signer in (impostor, Signer.generate("someone.example/else")):
        status, _, _ = await w.post(request_body(0, [], w.log.checkpoint(5, signer=signer)))
        assert status == 403
    assert w.witness.state.latest(LOG) is None


async def test_a_trusted_key_line_that_does_not_verify_is_403_even_beside_a_good_one(
    w: Under,
) -> None:
    note = w.log.checkpoint(5)
    key_id = w.log.signer.verifier().key_id
    forged = f"— {LOG} {base64.b64encode(key_id + os.urandom(64)).decode()}\n"
    for bad in (text_of(note) + "\n" + forged, note + forged):
        status, _, _ = await w.post(request_body(0, [], bad))
        assert status == 403
    # the text changed after signing: the log's signature no longer verifies
    tampered = note.replace("\n5\n", "\n6\n", 1)
    status, _, _ = await w.post(request_body(0, [], tampered))
    assert status == 403
    assert w.witness.state.latest(LOG) is None


async def test_signatures_of_unknown_keys_are_ignored(w: Under) -> None:
    note = w.log.checkpoint(5)
    stranger = Signer.generate("stranger.example/x")
    both = note + sign_note(text_of(note), [stranger])[len(text_of(note)) + 1 :]
    status, _, body = await w.post(request_body(0, [], both))
    assert status == 200, body


async def test_an_unknown_origin_is_404(w: Under) -> None:
    other = Log(origin="other.example/log", signer=Signer.generate("other.example/log"))
    status, _, _ = await w.post(other.body(0, 5))
    assert status == 404


async def test_a_log_added_while_the_witness_runs_is_witnessed_at_once(w: Under) -> None:
    other = Log(origin="site-b.example/vault", signer=Signer.generate("site-b.example/vault"))
    assert (await w.post(other.body(0, 2)))[0] == 404
    state = WitnessState.open(w.witness.config.data_dir / STATE_FILE)  # as add-log does
    state.add_log(other.origin, other.signer.verifier().key_string(), at="now")
    state.close()
    assert (await w.post(other.body(0, 2)))[0] == 200


# -- concurrency ----------------------------------------------------------------------------------


async def test_two_checkpoints_from_the_same_old_size_at_once_only_one_is_accepted(
    w: Under,
) -> None:
    assert (await w.post(w.log.body(0, 4)))[0] == 200
    sizes = [5, 6, 7, 8, 9, 10, 11, 12]
    answers = await asyncio.gather(*(w.post(w.log.body(4, s)) for s in sizes))
    accepted = [s for s, (status, _, _) in zip(sizes, answers, strict=True) if status == 200]
    assert len(accepted) == 1, answers
    winner = accepted[0]
    for s, (status, ctype, body) in zip(sizes, answers, strict=True):
        if s != winner:
            assert (status, ctype, body) == (409, SIZE_TYPE, f"{winner}\n")
    assert w.head() == TreeHead(winner, w.log.tree.root(winner))


def test_the_state_compare_and_swap_lets_one_of_two_threads_through(tmp_path: Path) -> None:
    """Even without the witness's lock (two processes on one data directory), the database
    accepts only one new head from the same expected one."""
    path = tmp_path / "witness.db"
    states = [WitnessState.open(path), WitnessState.open(path)]  # two connections
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def advance(state: WitnessState, size: int) -> None:
        start.wait()
        try:
            state.advance(LOG, expected=EMPTY, new=TreeHead(size, bytes(32)), note="n", at=1)
            outcomes.append("accepted")
        except Conflict as e:
            outcomes.append(f"conflict {e.known_size}")

    threads = [
        threading.Thread(target=advance, args=(s, n)) for s, n in zip(states, (5, 6), strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes)[0] == "accepted" and sorted(outcomes)[1].startswith("conflict")
    assert states[0].head(LOG).size in (5, 6)
    for s in states:
        s.close()


def test_the_database_refuses_to_roll_a_log_back(tmp_path: Path) -> None:
    state = WitnessState.open(tmp_path / "witness.db")
    state.advance(LOG, expected=EMPTY, new=TreeHead(5, bytes(32)), note="n", at=1)
    state.close()
    conn = sqlite3.connect(tmp_path / "witness.db")
    for sql in ("UPDATE cosigned SET size = 4", "DELETE FROM cosigned"):
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(sql)
    conn.close()


# -- fuzz -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def served_in_a_thread(witness: Witness) -> Iterator[int]:
    """The witness's app on a loopback port, its event loop in a thread (for Hypothesis,
    which drives synchronous tests); the port."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(witness))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = int(runner.addresses[0][1])
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def post(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/add-checkpoint", body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@st.composite
def mutants(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few bytes replaced, inserted, deleted, or lines shuffled, or cut."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "cut", "lines"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "replace" and data:
            data[at] = draw(st.sampled_from([*b"\n 0123456789+/=AZaz-\xe2\x80\x94\x00\xff"]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "cut":
            del data[at:]
        elif kind == "lines":
            lines = bytes(data).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@st.composite
def requests(draw: st.DrawFn, logs: Sequence[Log], largest: int) -> bytes:
    """Well-formed requests that mostly should be refused: any old size, a proof that is
    right, missing, reordered or made up, a checkpoint of the log, of a rewritten history
    signed with its key, of an impostor key, of a log the witness does not know."""
    log = draw(st.sampled_from(logs))
    size = draw(st.integers(0, largest))
    old = draw(st.integers(0, largest))
    right = log.proof(old, size) if old <= size else []
    proof = draw(
        st.sampled_from([right, [], right[::-1], right[:-1], [*right, bytes(32)], [bytes(32)] * 3])
    )
    return request_body(old, proof, log.checkpoint(size))


def test_fuzzed_bodies_never_get_a_500_and_a_refusal_never_moves_the_state(
    tmp_path: Path,
) -> None:
    log = Log().grow(40)
    rewritten = fork(40, diverging_at=2, signer=log.signer)
    impostor = Log(signer=Signer.generate(LOG)).grow(40)
    stranger = Log(origin="other.example/log", signer=Signer.generate("other.example/log"))
    vkey = make_witness_dir(tmp_path / "witness", log)
    witness = Witness(WitnessConfig(data_dir=tmp_path / "witness"))
    base = log.body(5, 13)
    allowed = {200, 400, 403, 404, 409, 413, 422}
    with served_in_a_thread(witness) as port:
        assert post(port, log.body(0, 5))[0] == 200

        @settings(
            max_examples=500,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            body=st.one_of(
                mutants(base),
                requests([log, rewritten, impostor, stranger], 40),
                st.binary(max_size=300),
                st.text(max_size=300).map(str.encode),
            )
        )
        def one(body: bytes) -> None:
            before = witness.state.head(LOG)
            status, answer = post(port, body)
            assert status in allowed, (status, answer)
            after = witness.state.head(LOG)
            if status != 200:
                assert after == before, (status, answer)
                return
            # accepted: only ever the log's own history, never shrinking, cosigned
            assert after.size >= before.size
            assert after.root == log.tree.root(after.size)
            text = Checkpoint(LOG, after.size, after.root).text()
            verify_cosignature_v1(vkey, text, answer.decode())

        one()


# -- the command line -----------------------------------------------------------------------------


def test_init_prints_the_vkey_and_never_replaces_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "w")
    assert horodate(["witness", "init", "--name", WITNESS, "--data-dir", d]) == 0
    vkey = capsys.readouterr().out.strip().splitlines()[-1]
    name, hex_id, b64 = vkey.split("+", 2)
    assert name == WITNESS
    public = base64.b64decode(b64)[1:]
    assert base64.b64decode(b64)[0] == 0x04
    assert bytes.fromhex(hex_id) == hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    assert (tmp_path / "w" / "witness.key").stat().st_mode & 0o077 == 0
    assert horodate(["witness", "init", "--name", WITNESS, "--data-dir", d]) == 1
    assert "keeps its key for life" in capsys.readouterr().err

    log = Log()
    args = ["witness", "add-log", "--origin", LOG, "--data-dir", d]
    assert horodate([*args, "--vkey", "not a key"]) == 1
    assert horodate([*args, "--vkey", log.signer.verifier().key_string()]) == 0
    assert horodate([*args, "--vkey", log.signer.verifier().key_string()]) == 0
    assert "already witnessing" in capsys.readouterr().out
    assert horodate(["witness", "show", "--data-dir", d]) == 0
    out = capsys.readouterr().out
    assert f"vkey {vkey}" in out and f"log {LOG}: nothing cosigned yet" in out


def test_add_log_needs_an_initialised_witness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vkey = Log().signer.verifier().key_string()
    args = ["--origin", LOG, "--vkey", vkey, "--data-dir", str(tmp_path / "none")]
    code = horodate(["witness", "add-log", *args])
    assert code == 1
    assert "horodate witness init" in capsys.readouterr().err


# -- kill -9 --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(argv: list[str], port: int, out: Path) -> subprocess.Popen[bytes]:
    """``horodate witness ARGV`` in its own process, once it answers on ``port``."""
    with out.open("ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "horodate", "witness", *argv],
            stdout=f,
            stderr=f,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/" + "0" * 64 + "/checkpoint")
            if conn.getresponse().status == 404:
                return proc
        assert proc.poll() is None, out.read_text()
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the witness did not start: {out.read_text()}")


@pytest.mark.slow
def test_a_witness_killed_with_sigkill_keeps_every_state_it_acknowledged(tmp_path: Path) -> None:
    log = Log()
    data = tmp_path / "witness"
    vkey = make_witness_dir(data, log)
    port = free_port()
    proc = start(["--data-dir", str(data), "--listen", f"127.0.0.1:{port}"], port, tmp_path / "log")
    acked: list[int] = []
    sent: list[int] = []
    try:
        killer = threading.Timer(0.8, lambda: os.kill(proc.pid, signal.SIGKILL))
        killer.start()
        old = 0
        while True:
            size = old + 1 + len(sent) % 5
            sent.append(size)
            try:
                status, body = post(port, log.body(old, size))
            except OSError:
                break  # killed mid-request, or before it
            assert status == 200, body
            verify_cosignature_v1(vkey, text_of(log.checkpoint(size)), body.decode())
            acked.append(size)
            old = size
        killer.join()
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 3, "the witness answered too few requests before the kill"

    config = tmp_path / "witness.toml"  # restarted from a configuration file this time
    config.write_text(f'[witness]\ndata_dir = "{data}"\nlisten = "127.0.0.1:{port}"\n')
    proc = start(["--config", str(config)], port, tmp_path / "log")
    try:
        status, body = post(port, log.body(0, sent[-1]))  # what does it know now?
        assert status == 409
        known = int(body.decode())
        # every acknowledged state survived; at most the one in flight went further
        assert known in (acked[-1], sent[-1]), (known, acked[-1], sent[-1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", f"/{hashlib.sha256(LOG.encode()).hexdigest()}/checkpoint")
        note = conn.getresponse().read().decode()
        assert note.startswith(text_of(log.checkpoint(known)))
        verify_cosignature_v1(vkey, text_of(log.checkpoint(known)), note.splitlines(True)[-1])
        status, body = post(port, log.body(known, known + 10))  # and it goes on from there
        assert status == 200, body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0
