"""The witness's HTTP interface (c2sp.org/tlog-witness): ``create_app(witness)``.

- ``POST /add-checkpoint``: the body under a cap (413 above it), handed to
  :meth:`Witness.add_checkpoint`; 200 with the cosignature line(s), or the refusal's status
  from :func:`refusal` — the one place statuses are decided. Bodies are plain text, as the
  reference witnesses answer; a 409's is the known size, ``text/x.tlog.size``.
- ``GET /<origin hash>/checkpoint`` ("Monitor Retrieval Mechanism", a SHOULD): the latest
  cosigned checkpoint of the log whose origin's SHA-256 is the lowercase hex hash, with the
  log's signatures the witness verified and its own cosignature; 404 if it never cosigned
  one. Served as soon as it is cosigned (the specification allows an hour's delay).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Final

from aiohttp import web

from daemon.witness.protocol import (
    BadSignature,
    Conflict,
    Inconsistent,
    Malformed,
    UnknownLog,
    WitnessError,
)
from daemon.witness.state import StateError
from daemon.witness.witness import Witness

log = logging.getLogger("horodate.witness.http")

WITNESS: Final = web.AppKey("witness", Witness)
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"


class BodyTooLarge(WitnessError):
    """The request's body is over the witness's cap (413)."""


def _text(status: int, text: str, *, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=text, content_type="text/plain", charset="utf-8", headers=headers
    )


def refusal(e: WitnessError) -> web.Response:
    """The one mapping from the witness's refusals to HTTP (tlog-witness, add-checkpoint)."""
    if isinstance(e, Conflict):
        # "The response body MUST consist of the tree size of the latest cosigned
        # checkpoint in decimal, followed by a newline [...] a Content-Type of
        # text/x.tlog.size."
        return web.Response(
            status=409,
            body=f"{e.known_size}\n".encode(),
            headers={"Content-Type": SIZE_CONTENT_TYPE},
        )
    for kind, status in (
        (Malformed, 400),
        (BadSignature, 403),
        (UnknownLog, 404),
        (BodyTooLarge, 413),
        (Inconsistent, 422),
    ):
        if isinstance(e, kind):
            return _text(status, f"{e}\n")
    if isinstance(e, StateError):
        log.error("witness: %s", e)
        return _text(503, "the witness's state is unavailable\n", headers={"Retry-After": "5"})
    log.error("witness: %s", e)
    return _text(500, "the witness failed; see its log\n")


async def _body(request: web.Request, cap: int) -> bytes:
    if request.content_length is not None and request.content_length > cap:
        raise BodyTooLarge(f"the body is {request.content_length} bytes; the cap is {cap}")
    body = await request.content.read(cap + 1)
    if len(body) > cap:
        raise BodyTooLarge(f"the body exceeds the {cap}-byte cap")
    return body


async def add_checkpoint(request: web.Request) -> web.Response:
    witness = request.app[WITNESS]
    try:
        body = await _body(request, witness.config.body_max_bytes)
        lines = await witness.add_checkpoint(body)
    except WitnessError as e:
        return refusal(e)
    except Exception:
        log.exception("witness: add-checkpoint failed")
        return _text(500, "the witness failed; see its log\n")
    return _text(200, lines)


async def get_checkpoint(request: web.Request) -> web.Response:
    """``GET /<origin hash>/checkpoint``: the origin is found among the logs witnessed."""
    witness = request.app[WITNESS]
    wanted = request.match_info["origin_hash"]
    try:
        for entry in witness.state.logs():
            if hashlib.sha256(entry.origin.encode()).hexdigest() == wanted:
                if entry.latest is None:
                    break
                return _text(200, entry.latest.note)
    except WitnessError as e:
        return refusal(e)
    return _text(404, "this witness never cosigned a checkpoint of that log\n")


def create_app(witness: Witness) -> web.Application:
    """The witness's aiohttp application; closing it closes ``witness``'s state."""
    app = web.Application(client_max_size=witness.config.body_max_bytes + 1)
    app[WITNESS] = witness

    async def lifetime(app: web.Application) -> Any:
        yield
        witness.close()

    app.cleanup_ctx.append(lifetime)
    app.router.add_post("/add-checkpoint", add_checkpoint)
    app.router.add_get(r"/{origin_hash:[0-9a-f]{64}}/checkpoint", get_checkpoint)
    return app


__all__ = ["create_app", "refusal"]
