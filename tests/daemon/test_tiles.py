"""C2SP tlog-tiles: the path encoding (round trips, refusals, fuzzed), the largest leaf an
entry bundle must carry, and the log followed end to end by a small client written from
the specs (c2sp.org/tlog-tiles, tlog-checkpoint, signed-note) — not from ``daemon.tiles``:
it verifies the checkpoint's signature, recomputes every leaf hash and the root from the
tiles alone, finds nothing past the checkpoint, and no personal value in any bundle."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import random
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from daemon.leaf import make_leaf
from daemon.records import entry_to_json, parse_entry
from daemon.tiles import (
    MAX_ENTRY_BYTES,
    TILE_WIDTH,
    EntryTooLarge,
    Tile,
    TilePathError,
    encode_bundle,
    format_index,
    parse_tile_path,
)
from daemon.vault import VaultConfig

from .conftest import VaultUnderTest, entry_now
from .test_vault_http import post

# -- the path encoding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
)
def test_the_index_is_written_in_groups_of_three_digits(n: int, text: str) -> None:
    assert format_index(n) == text
    assert parse_tile_path(f"tile/0/{text}") == Tile(0, n)


@pytest.mark.parametrize(
    ("path", "tile"),
    [
        ("tile/0/000", Tile(0, 0)),
        ("tile/63/000", Tile(63, 0)),
        ("tile/1/x001/x234/067.p/5", Tile(1, 1234067, 5)),
        ("tile/entries/001.p/255", Tile(0, 1, 255, entries=True)),
        ("tile/entries/x999/x999/x999/x999/x999/999", Tile(0, 10**18 - 1, entries=True)),
    ],
)
def test_paths_parse_to_their_tile_and_back(path: str, tile: Tile) -> None:
    assert parse_tile_path(path) == tile
    assert tile.path == path


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",  # not zero-padded
        "tile/0/0001",
        "tile/00/000",  # a leading zero in the level
        "tile/64/000",  # levels are 0 to 63
        "tile/-1/000",
        "tile/data/000",
        "tile/0/x000/001",  # not canonical: 1 is 001
        "tile/0/x001",  # the last group has no x
        "tile/0/001/002",  # every group but the last has one
        "tile/0/x01/000",
        "tile/0/001/",
        "tile/0/000.p/0",  # a partial tile is 1 to 255 wide
        "tile/0/000.p/256",
        "tile/0/000.p/01",
        "tile/0/000.p/",
        "tile/0/000.p",
        "tile/0/000.p/1/2",
        "tile/0/000.p/1.p/2",
        "tile/0/x001/x002/x003/x004/x005/x006/007",  # more than 10^18
        "tile/0/\u0660\u0660\u0660",  # Arabic-Indic digits are not ASCII digits
        "tile/0/000\n",
        "tile/0/ 000",
        "tile/entries",
        "tile/entries/",
        "tiles/0/000",
        "/tile/0/000",
        "tile/0/" + "x001/" * 20 + "000",
    ],
)
def test_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(TilePathError):
        parse_tile_path(path)


tiles = st.builds(
    lambda level, index, width, entries: Tile(0 if entries else level, index, width, entries),
    st.integers(0, 63),
    st.integers(0, 10**18 - 1),
    st.integers(1, TILE_WIDTH),
    st.booleans(),
)


@given(tiles)
def test_every_tile_round_trips_through_its_path(tile: Tile) -> None:
    assert parse_tile_path(tile.path) == tile


path_text = st.lists(
    st.one_of(
        st.sampled_from(["tile", "entries", "x", ".p", "/", "0", "00", "000", "x000", "255"]),
        st.text(alphabet="tilex0123456789./pe", max_size=6),
        st.text(max_size=3),
    ),
    max_size=16,
).map("".join)


@given(path_text)
def test_the_parser_takes_canonical_paths_only_and_refuses_the_rest_cleanly(path: str) -> None:
    try:
        tile = parse_tile_path(path)
    except TilePathError:
        return
    assert tile.path == path  # one resource, one URL


def test_widths_follow_the_specs_example_of_a_tree_of_70000() -> None:
    # c2sp.org/tlog-tiles, "Partial Tiles": 273 full level-0 tiles, one partial of 112, one
    # full level-1 tile, one partial of 17, one partial level-2 tile of 1.
    size = 70_000
    assert [Tile(0, n).width_in(size) for n in (0, 272, 273, 274)] == [256, 256, 112, 0]
    assert [Tile(1, n).width_in(size) for n in (0, 1, 2)] == [256, 17, 0]
    assert [Tile(2, 0).width_in(size), Tile(3, 0).width_in(size)] == [1, 0]
    assert Tile(0, 273, 112).leaves_needed == size < Tile(0, 273, 113).leaves_needed
    assert Tile(1, 1, 17).leaves_needed == (256 + 17) * 256 <= size < Tile(1, 1, 18).leaves_needed
    assert [Tile(0, 0).width_in(256), Tile(1, 0).width_in(256)] == [256, 1]


def test_an_entry_bundle_prefixes_lengths_and_refuses_what_a_uint16_cannot_say() -> None:
    assert encode_bundle([b"ab", b"", b"c"]) == b"\x00\x02ab\x00\x00\x00\x01c"
    assert len(encode_bundle([b"x" * MAX_ENTRY_BYTES])) == 2 + 65535
    with pytest.raises(EntryTooLarge, match="entry 257 is 65536 bytes"):
        encode_bundle([b"x", b"x" * 65536], first=256)


def test_the_largest_leaf_the_rules_allow_fits_an_entry_bundle() -> None:
    """Every free-text member at its cap, in 4-byte UTF-8 characters (the most bytes per
    character once canonical: control characters are refused), every optional member
    present: the leaf stays far below the uint16 prefix's 65,535 bytes."""
    wide = "\U0001d11e"  # MUSICAL SYMBOL G CLEF: 4 bytes in UTF-8
    received = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    time = "2026-11-30T09:00:00.123456789+01:00"
    entry = {
        "establishment": "E" * 64,
        "kind": "correction",
        "session": {
            "id": wide * 128,
            "version": 1_000_000,
            "training_action": wide * 200,
            "title": wide * 200,
            "start": time,
            "end": "2026-11-30T12:00:00.123456789+01:00",
            "place": wide * 200,
            "remote_tool": wide * 200,
            "capacity": 10_000,
        },
        "teacher": {"id": wide * 128, "name": wide * 200},
        "student": {"ine": "EQ-" + "9" * 40, "birth_date": "2004-05-17", "name": wide * 200},
        "occurred_at": time,
        "capture": {"method": "manual", "device": wide * 128},
        "corrects": 2**53 - 1,
        "reason": wide * 2000,
        "author": {"id": wide * 128, "name": wide * 200},
    }
    parsed = parse_entry(entry, today=received.date(), received_at=received)
    leaf = make_leaf(entry_to_json(parsed), received_at="2026-11-30T12:00:00.123456Z")
    assert 3000 * 4 < len(leaf.data) < 16 * 1024 < MAX_ENTRY_BYTES


# -- a client written from the specs --------------------------------------------------------


def tile_index(n: int) -> str:
    """c2sp.org/tlog-tiles <N>: 3-digit path elements, all but the last prefixed by x."""
    elements = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        elements.insert(0, f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(elements)


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH over a list of subtree hashes (leaf hashes at the bottom)."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:])).digest()


def open_checkpoint(note: str, vkey: str) -> tuple[str, int, bytes]:
    """c2sp.org/signed-note and tlog-checkpoint: the origin, size and root of a note that
    the key ``<name>+<hex id>+<base64(0x01 ‖ Ed25519 key)>`` signed."""
    name, key_id_hex, key_b64 = vkey.strip().split("+", 2)
    raw = base64.b64decode(key_b64)
    assert raw[0] == 0x01 and len(raw) == 33
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert key_id.hex() == key_id_hex
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    verified = False
    for line in signatures.splitlines():
        assert line.startswith("\u2014 ")
        signer, sig_b64 = line[2:].split(" ")
        sig = base64.b64decode(sig_b64)
        if signer == name and sig[:4] == key_id:
            try:
                Ed25519PublicKey.from_public_bytes(raw[1:]).verify(sig[4:], text.encode())
            except InvalidSignature:
                pytest.fail("the checkpoint's signature does not verify")
            verified = True
    assert verified, "the vault's key did not sign the checkpoint"
    origin, size, root, *_extensions = text.splitlines()
    return origin, int(size), base64.b64decode(root)


class Follower:
    """Follows the log through /checkpoint, /tile/… and /tile/entries/… alone."""

    def __init__(self, v: VaultUnderTest, vkey: str) -> None:
        self.v, self.vkey = v, vkey
        self.bundles: list[bytes] = []

    async def get(self, path: str) -> bytes:
        resp = await self.v.client.get(f"/{path}")
        assert resp.status == 200, (path, await resp.text())
        assert resp.content_type == "application/octet-stream"
        cache = resp.headers["Cache-Control"]
        assert ("immutable" in cache) == (".p/" not in path), (path, cache)
        return await resp.read()

    async def follow(self) -> tuple[int, bytes]:
        """The checkpoint's size and root, once every tile and bundle it covers checks."""
        resp = await self.v.client.get("/checkpoint")
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-cache"
        note = await resp.text()
        assert note == await (await self.v.client.get("/v1/checkpoint")).text()
        _origin, size, root = open_checkpoint(note, self.vkey)
        levels: list[list[bytes]] = []  # every hash the tiles hold, level by level
        while size >> (8 * len(levels)):
            count = size >> (8 * len(levels))
            hashes: list[bytes] = []
            for n in range((count + 255) // 256):
                w = min(256, count - 256 * n)
                data = await self.get(
                    f"tile/{len(levels)}/{tile_index(n)}" + (f".p/{w}" if w < 256 else "")
                )
                assert len(data) == 32 * w
                hashes += [data[i : i + 32] for i in range(0, len(data), 32)]
            if levels:  # a hash of level L is the MTH of a full tile of level L − 1
                for j, h in enumerate(hashes):
                    assert h == mth(levels[-1][256 * j : 256 * (j + 1)])
            levels.append(hashes)
        leaves: list[bytes] = []
        self.bundles = []
        for n in range((size + 255) // 256):
            w = min(256, size - 256 * n)
            bundle = await self.get(
                f"tile/entries/{tile_index(n)}" + (f".p/{w}" if w < 256 else "")
            )
            self.bundles.append(bundle)
            pos = 0
            while pos < len(bundle):  # big-endian uint16 length-prefixed entries
                length = int.from_bytes(bundle[pos : pos + 2], "big")
                entry = bundle[pos + 2 : pos + 2 + length]
                assert len(entry) == length
                leaves.append(hashlib.sha256(b"\x00" + entry).digest())  # RFC 6962 §2.1
                pos += 2 + length
        assert leaves == (levels[0] if levels else [])
        # The root from the tiles: the tree's complete subtrees, each the MTH of a run of
        # hashes of one tile level, combined from the right.
        parts, start = [], 0
        for k in reversed(range(size.bit_length())):
            if size >> k & 1:
                level, height = divmod(k, 8)
                first = start >> (8 * level)
                parts.append(mth(levels[level][first : first + (1 << height)]))
                start += 1 << k
        from_tiles = parts[-1] if parts else hashlib.sha256(b"").digest()
        for left in reversed(parts[:-1]):
            from_tiles = hashlib.sha256(b"\x01" + left + from_tiles).digest()
        assert from_tiles == root
        assert leaves == [] or mth(leaves) == root
        return size, root


# -- end to end -----------------------------------------------------------------------------


@pytest.fixture
def vault_config(vault_config: VaultConfig) -> VaultConfig:
    """conftest's, with checkpoints only when the test makes them: the log may run ahead of
    the latest."""
    return dataclasses.replace(vault_config, checkpoint_interval_s=3600)


BEA_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def students(first: int, count: int) -> list[dict[str, str]]:
    out = []
    for n in range(first, first + count):
        number = 1_000_000_000 + 7919 * n
        birth = dt.date(2004, 1, 1) + dt.timedelta(days=5 * n)
        out.append(
            {
                "ine": f"{number}{BEA_LETTERS[number % 23]}",
                "birth_date": birth.isoformat(),
                "name": f"Élève{n:03d} Dubois",
            }
        )
    return out


async def deposit(v: VaultUnderTest, token: str, people: list[dict[str, str]], key: str) -> None:
    entries: list[dict[str, Any]] = [entry_now(minutes_ago=4, student=p) for p in people]
    entries[1] = entry_now("late", minutes_ago=4, minutes=7, student=people[1])
    entries[2] = entry_now(
        "correction",
        minutes_ago=3,
        student=people[2],
        corrects=0,
        reason="retard de 7 minutes",
        author={"id": "A-1", "name": "Secrétariat Perrin"},
    )
    resp = await post(v, {"entries": entries}, token=token, key=key)
    assert resp.status in (201, 202), await resp.text()


async def test_the_log_is_followed_with_tiles_alone(vault: VaultUnderTest) -> None:
    token = vault.token()
    vkey = await (await vault.client.get("/v1/checkpoint/verifier")).text()
    follower = Follower(vault, vkey)
    assert await follower.follow() == (0, hashlib.sha256(b"").digest())
    assert (await vault.client.get("/tile/0/000.p/1")).status == 404

    people = students(0, 300) + students(300, 300)
    await deposit(vault, token, people[:300], "t1")
    await vault.vault.make_checkpoint()
    size, root = await follower.follow()
    assert size == 300
    # More entries, stored but not yet under a checkpoint: nothing of them is served.
    await deposit(vault, token, people[300:], "t2")
    assert vault.vault.store.reader().size() == 600
    for path in ("tile/0/001", "tile/0/001.p/45", "tile/entries/001.p/45", "tile/1/000.p/2"):
        resp = await vault.client.get(f"/{path}")
        assert resp.status == 404, path
        assert resp.headers["Cache-Control"] == "no-store"
        assert "tree size 300" in (await resp.json())["detail"]
    assert await follower.follow() == (300, root)
    old_partial = await follower.get("tile/0/001.p/44")

    await vault.vault.make_checkpoint()
    size, root = await follower.follow()  # 2 full level-0 tiles, one of 88; level 1: 2 wide
    assert size == 600 and len(follower.bundles) == 3
    # The earlier checkpoint's partial tile is still served, a prefix of the full one.
    assert (await follower.get("tile/0/001"))[: 44 * 32] == old_partial
    for path in (
        "tile/0/002",
        "tile/0/002.p/89",
        "tile/0/003.p/1",
        "tile/1/000",
        "tile/1/000.p/3",
        "tile/2/000.p/1",
        "tile/entries/002",
        "tile/entries/003.p/1",
        "tile/63/x999/x999/x999/x999/x999/999",
    ):
        assert (await vault.client.get(f"/{path}")).status == 404, path

    # No personal value is in any bundle: the leaves hold commitments.
    data = b"".join(follower.bundles)
    personal = [b"Dubois", b"Claire Martin", "Secrétariat Perrin".encode()]
    for p in people:
        personal += [p["ine"].encode(), p["birth_date"].encode(), p["name"].encode()]
    assert [v for v in personal if v in data] == []
    bundle = follower.bundles[0]
    first = json.loads(bundle[2 : 2 + int.from_bytes(bundle[:2], "big")])
    assert set(first["student"]) == set(first["teacher"]["name"]) == {"commitment"}

    # Public, journaled like /v1/checkpoint; bundles compressed when asked.
    resp = await vault.client.get("/tile/entries/000", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip" and resp.headers["Vary"] == "Accept-Encoding"
    assert await resp.read() == follower.bundles[0]
    records = [json.loads(r[1]) for r in vault.vault.store.reader().journal(0, 10_000)]
    tile_reads = [r for r in records if r["action"] == "GET /tile/entries/{path}"]
    assert tile_reads and tile_reads[-1]["role"] == "public" and tile_reads[-1]["status"] == 200
    assert any(r["action"] == "GET /checkpoint" for r in records)


BAD_HTTP_PATHS = {
    "/tile/0/1": 400,
    "/tile/0/0001": 400,
    "/tile/00/000": 400,
    "/tile/64/000": 400,
    "/tile/0/x000/001": 400,
    "/tile/0/000.p/0": 400,
    "/tile/0/000.p/256": 400,
    "/tile/0/000.p/": 400,
    "/tile/0/000.p": 400,
    "/tile/entries/000.p/1/": 400,
    "/tile/0/x001/x002/x003/x004/x005/x006/007": 400,
    "/tile/0/%D9%A0%D9%A0%D9%A0": 400,
    "/tile/0/000?width=3": 400,
    "/tile/0/000%0A": 404,  # the router's pattern takes no newline
    "/tile/100/000": 404,
    "/tile/-1/000": 404,
    "/tile/entries": 404,
    "/tile/0/": 404,
    "/tile/": 404,
    "/tile/0/000": 404,
    "/tile/entries/000.p/1": 404,
}


async def test_bad_tile_paths_are_400_or_404_never_500(vault: VaultUnderTest) -> None:
    for path, status in BAD_HTTP_PATHS.items():
        resp = await vault.client.get(path)
        assert resp.status == status, (path, await resp.text())
        assert resp.content_type == "application/problem+json"
    # Mutations of valid paths over a log of 3: every answer is a tile, a 400 or a 404.
    await deposit(vault, vault.token(), students(0, 3), "f")
    await vault.vault.make_checkpoint()
    rng = random.Random(16)
    valid = ["tile/0/000.p/3", "tile/entries/000.p/2", "tile/1/x001/x234/067.p/5", "tile/63/999"]
    alphabet = "x0123456789./pe\u0660"
    statuses = set()
    for _ in range(150):
        chars = list(rng.choice(valid))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(chars) + 1)
            op = rng.choice(("delete", "insert", "replace"))
            if op == "insert" or not chars:
                chars.insert(at, rng.choice(alphabet))
            elif at < len(chars):
                chars[at : at + 1] = [] if op == "delete" else [rng.choice(alphabet)]
        mutated = "/" + "".join(chars).lstrip("/")  # not //host/…
        resp = await vault.client.get(mutated)
        assert resp.status in (200, 400, 404), (mutated, resp.status, await resp.text())
        statuses.add(resp.status)
    assert statuses == {200, 400, 404}
