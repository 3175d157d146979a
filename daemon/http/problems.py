"""Every error the vault answers, in one place, as an RFC 9457 problem document.

``application/problem+json`` with ``type`` (a URN naming the problem), ``title``,
``status``, ``detail``, and for bad input ``errors: [{"pointer", "detail"}]`` (RFC 6901).
No traceback, no ``sqlite3`` text, ever reaches a client.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from daemon.errors import PROBLEM_BASE, InvalidEntry, Refused, VaultError
from daemon.ijson import BodyTooLarge
from daemon.store import StoreError, StoreFull
from daemon.vault import Forbidden, NotFound

CONTENT_TYPE: Final = "application/problem+json"


class HttpProblem(VaultError):
    """A refusal of the HTTP layer itself (auth, headers, media type, method…)."""

    def __init__(self, status: int, code: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode(),
        content_type=CONTENT_TYPE,
        headers=headers,
    )


def from_error(e: VaultError) -> web.Response:
    """The one mapping from the vault's errors to HTTP statuses."""
    if isinstance(e, HttpProblem):
        headers = {"WWW-Authenticate": 'Bearer realm="horodate-vault"'} if e.status == 401 else None
        return problem(e.status, e.code, e.title, e.detail, headers=headers)
    if isinstance(e, InvalidEntry):
        return problem(
            422,
            "invalid_entry",
            "Invalid entry",
            str(e),
            errors=[{"pointer": f.pointer, "detail": f.detail} for f in e.errors],
        )
    if isinstance(e, BodyTooLarge):
        return problem(413, "body_too_large", "Body too large", str(e))
    if isinstance(e, Refused):
        return problem(e.status, e.code, e.title, e.detail)
    if isinstance(e, NotFound):
        return problem(404, "not_found", "Not found", str(e))
    if isinstance(e, Forbidden):
        return problem(403, "forbidden", "Forbidden", str(e))
    if isinstance(e, StoreFull):
        return problem(507, "insufficient_storage", "Insufficient storage", str(e))
    if isinstance(e, StoreError):
        return problem(
            503, "store_unavailable", "Store unavailable", str(e), headers={"Retry-After": "5"}
        )
    return problem(500, "internal", "Internal error", "the vault failed; see its log")
