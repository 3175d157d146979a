"""The log's public half as C2SP tlog-tiles (c2sp.org/tlog-tiles), beside the ``/v1/`` API.

``GET /checkpoint`` (the latest checkpoint, as ``/v1/checkpoint`` publishes it),
``GET /tile/<L>/<N>[.p/<W>]`` (hash tiles, one range read of the stored complete subtrees)
and ``GET /tile/entries/<N>[.p/<W>]`` (entry bundles: the leaves, each uint16
length-prefixed), so that a witness, the other site's mirror or an auditor follows the tree
with standard tools. No personal data is in them: a leaf holds commitments, not the
student (:mod:`daemon.leaf`, ADR 0009).

Only what the latest checkpoint covers is served: a tile or bundle is available once its
last hash is in the tree of that size, and a partial tile of any width up to the latest's,
so every earlier checkpoint's partial tiles stay available (tlog-tiles: "Logs MUST serve
partial tiles corresponding to tree sizes for which a checkpoint was produced"); anything
beyond is 404, a malformed path 400. Public, like ``/v1/checkpoint``: no bearer token; each
call is journaled as ``/v1/`` calls are (:func:`daemon.http.app.create_app`'s middleware).

Caching (tlog-tiles: the checkpoint "SHOULD prevent caching beyond a few seconds", tiles
"SHOULD be long-lived"): full tiles and bundles are immutable; partial ones are short-lived
— never wrong, as their content cannot change, but superseded as the log grows; refusals
are not cached, since what is 404 now is served once a checkpoint covers it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.web import ContentCoding

from daemon import merkle
from daemon.http.problems import problem
from daemon.store import Reader, StoreError
from daemon.tiles import (
    HASH_BYTES,
    Tile,
    TileError,
    TilePathError,
    encode_bundle,
    parse_tile_path,
)
from daemon.vault import Vault

OCTETS: Final = "application/octet-stream"
CHECKPOINT_CACHE: Final = "no-cache"
FULL_CACHE: Final = "public, max-age=31536000, immutable"
PARTIAL_CACHE: Final = "public, max-age=60"
REFUSAL_CACHE: Final = "no-store"
# The paths this module serves: journaled like /v1/ (see daemon.http.app).
PATH_PREFIXES: Final = ("/checkpoint", "/tile/")

_Body = Callable[[Reader, Tile], bytes]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def checkpoint(published: _Handler) -> _Handler:
    """``GET /checkpoint``: what ``published`` (``GET /v1/checkpoint``) answers — the latest
    checkpoint as the vault publishes it, witnesses' cosignatures included — with
    ``Content-Type: text/plain; charset=utf-8`` and no caching (tlog-tiles: "SHOULD prevent
    caching beyond a few seconds")."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await published(request)
        response.headers["Cache-Control"] = CHECKPOINT_CACHE
        return response

    return handler


class TileServer:
    """The tlog-tiles handlers over one vault's store."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    async def tile(self, request: web.Request) -> web.Response:
        path = f"tile/{request.match_info['level']}/{request.match_info['path']}"
        return self._serve(path, request, self._hashes)

    async def entries(self, request: web.Request) -> web.Response:
        return self._serve(f"tile/entries/{request.match_info['path']}", request, self._bundle)

    def _serve(self, path: str, request: web.Request, body_of: _Body) -> web.Response:
        try:
            tile = parse_tile_path(path)
        except TilePathError as e:
            return _refusal(400, "bad_tile_path", "Bad tile path", str(e))
        reader = self.vault.store.reader()
        cp = reader.latest_checkpoint()
        size = 0 if cp is None else cp.size
        if tile.leaves_needed > size:
            have = tile.width_in(size)
            now = f"; it is {have} wide in that tree" if have else ""
            return _refusal(
                404,
                "tile_not_found",
                "No such tile",
                f"{tile.path} is beyond the latest checkpoint (tree size {size}){now}",
            )
        response = web.Response(
            body=body_of(reader, tile),
            content_type=OCTETS,
            headers={"Cache-Control": PARTIAL_CACHE if tile.partial else FULL_CACHE},
        )
        if tile.entries:  # tlog-tiles: "Entry bundles SHOULD be compressed at the HTTP layer"
            response.headers["Vary"] = "Accept-Encoding"
            if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
                response.enable_compression(ContentCoding.gzip)
        return response

    @staticmethod
    def _hashes(reader: Reader, tile: Tile) -> bytes:
        hashes = reader.nodes(tile.tree_level, tile.first, tile.end)
        if len(hashes) != tile.width or any(len(h) != HASH_BYTES for h in hashes):
            raise StoreError(
                f"tree nodes of level {tile.tree_level} from {tile.first} to {tile.end - 1} "
                "missing: run vault verify"
            )
        return b"".join(hashes)

    @staticmethod
    def _bundle(reader: Reader, tile: Tile) -> bytes:
        rows = reader.entries(tile.first, tile.end)
        if [r.idx for r in rows] != list(range(tile.first, tile.end)):
            raise StoreError(f"entries {tile.first} to {tile.end - 1} missing: run vault verify")
        leaves = reader.nodes(0, tile.first, tile.end)
        if len(leaves) != len(rows):
            raise StoreError(
                f"tree leaves {tile.first} to {tile.end - 1} missing: run vault verify"
            )
        for row, node in zip(rows, leaves, strict=True):
            # RFC 9162 §2.1.1: the bundle must hash to the level-0 tile clients check it by.
            if merkle.leaf_hash(row.leaf) != row.leaf_hash or row.leaf_hash != node:
                raise TileError(
                    f"entry {row.idx}'s leaf does not hash to its tree leaf: run vault verify"
                )
        return encode_bundle((r.leaf for r in rows), first=tile.first)


def _refusal(status: int, code: str, title: str, detail: str) -> web.Response:
    return problem(status, code, title, detail, headers={"Cache-Control": REFUSAL_CACHE})


def _accepts_gzip(header: str) -> bool:
    """Whether ``Accept-Encoding`` (RFC 9110 §12.5.3) takes gzip: named (or ``*``, when
    gzip is not named) with a non-zero q."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        q = next((p[2:] for p in params if p.lower().startswith("q=")), "1")
        try:
            weights[coding.lower()] = float(q)
        except ValueError:
            weights[coding.lower()] = 0.0
    named = weights.get("gzip", weights.get("x-gzip"))
    return (weights.get("*", 0.0) if named is None else named) > 0
