"""The vault's OpenAPI 3.1 document, served at ``/v1/openapi.json``.

Written as data next to the routes it describes; the tests check that every route of
:func:`daemon.http.app.create_app` is in it and the reverse, validate it as OpenAPI 3.1,
validate the DESIGN.md example entry against its schema, and fuzz the running vault with it
(schemathesis).
"""

from __future__ import annotations

import functools
from typing import Any

from daemon.records import CaptureMethod, Kind

HEX32 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_STRING = {"type": ["string", "null"]}
TEXT = {"type": "string", "minLength": 1, "maxLength": 200}
# whether a checkpoint has the cosignatures the witness policy asks (null: no witnesses)
WITNESSING = {
    "oneOf": [
        {"type": "null"},
        {
            "type": "object",
            "properties": {
                "cosigned_by": {"type": "array", "items": {"type": "string"}},
                "witnesses": {"type": "integer"},
                "quorum": {"type": "integer"},
                "meets_policy": {"type": "boolean"},
            },
            "required": ["cosigned_by", "witnesses", "quorum", "meets_policy"],
            "additionalProperties": False,
        },
    ]
}


def _object(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


def _schemas() -> dict[str, Any]:
    person = _object(
        {"id": {"type": "string", "minLength": 1, "maxLength": 128}, "name": TEXT}, ["id"]
    )
    entry = _object(
        {
            "establishment": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
            "kind": {"enum": [k.value for k in Kind]},
            "session": _object(
                {
                    "id": {"type": "string", "minLength": 1, "maxLength": 128},
                    "version": {"type": "integer", "minimum": 1, "maximum": 1000000},
                    "training_action": TEXT,
                    "title": TEXT,
                    "start": TIME,
                    "end": TIME,
                    "place": TEXT,
                    "remote_tool": TEXT,
                    "capacity": {"type": "integer", "minimum": 1, "maximum": 10000},
                },
                ["id", "version", "training_action", "start", "end"],
            ),
            "teacher": person,
            "student": _object(
                {
                    "ine": {
                        "type": "string",
                        "description": "BEA \\d{10}[A-Z] (check letter verified), RNIE "
                        "\\d{9}[A-Z]{2}, apprentice \\d{4}A\\d{5}[A-Z], or EQ-[A-Z0-9-]{1,40}",
                        "maxLength": 43,
                    },
                    "birth_date": {"type": "string", "format": "date"},
                    "name": TEXT,
                },
                ["ine", "birth_date"],
            ),
            "occurred_at": TIME,
            "capture": _object(
                {"method": {"enum": [m.value for m in CaptureMethod]}, "device": TEXT}, ["method"]
            ),
            "minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
            "corrects": {"type": "integer", "minimum": 0},
            "reason": {"type": "string", "minLength": 1, "maxLength": 2000},
            "author": person,
        },
        ["establishment", "kind", "session", "occurred_at"],
    )
    receipt = _object(
        {
            "index": {"type": "integer", "minimum": 0},
            "leaf_hash": HEX32,
            "sealed": {"type": "boolean"},
            "gen_time": NULLABLE_STRING,
            "token": {"type": ["string", "null"], "contentEncoding": "base64"},
        },
        ["index", "leaf_hash", "sealed", "gen_time", "token"],
    )
    problem = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": _object(
                    {"pointer": {"type": "string"}, "detail": {"type": "string"}},
                    ["pointer", "detail"],
                ),
            },
        },
        "required": ["type", "title", "status", "detail"],
    }
    stored = {
        "type": "object",
        "properties": {
            "index": {"type": "integer"},
            "entry": {"type": "object"},
            "leaf": {"type": "string", "contentEncoding": "base64"},
            "leaf_hash": HEX32,
            "sealed": {"type": "boolean"},
            "gen_time": NULLABLE_STRING,
            "token": NULLABLE_STRING,
            "tsa": {**NULLABLE_STRING, "description": "the URL of the TSA that sealed it"},
            "inclusion": {
                "oneOf": [
                    {"type": "null"},
                    _object(
                        {
                            "tree_size": {"type": "integer"},
                            "hashes": {"type": "array", "items": HEX32},
                        },
                        ["tree_size", "hashes"],
                    ),
                ]
            },
            "checkpoint": NULLABLE_STRING,  # with the witnesses' cosignature lines
            "witnessing": WITNESSING,
            "corrections": {"type": "array", "items": {"type": "integer"}},
            "received_at": {"type": "string"},
        },
        "required": [
            "index",
            "entry",
            "leaf",
            "leaf_hash",
            "sealed",
            "gen_time",
            "token",
            "inclusion",
            "checkpoint",
        ],
    }
    audit: dict[str, Any] = {
        "type": "object",
        "properties": {
            "student": _object(
                {"ine": {"type": "string"}, "birth_date": {"type": "string", "format": "date"}},
                ["ine", "birth_date"],
            ),
            "session": TEXT,
            "training_action": TEXT,
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "funder": TEXT,
            "file_reference": TEXT,
            "language": {"enum": ["fr", "en"]},
        },
        "additionalProperties": False,
    }
    return {
        "Entry": entry,
        "Batch": _object(
            {
                "entries": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Entry"},
                    "minItems": 1,
                    "maxItems": 1000,
                }
            },
            ["entries"],
        ),
        "Receipt": receipt,
        "Receipts": _object(
            {"receipts": {"type": "array", "items": {"$ref": "#/components/schemas/Receipt"}}},
            ["receipts"],
        ),
        "StoredEntry": stored,
        "Problem": problem,
        "AuditRequest": audit,
        "CertificateRequest": {
            "type": "object",
            "properties": {
                **{k: v for k, v in audit["properties"].items() if k != "session"},
                "nature": {"enum": ["formation", "bilan", "vae", "apprentissage"]},
                "provider": {
                    "type": "object",
                    "properties": {k: TEXT for k in ("name", "nda", "signatory", "place")},
                    "required": ["name"],
                    "additionalProperties": False,
                },
            },
            "required": ["student", "training_action", "provider"],
            "additionalProperties": False,
        },
        "Hashes": _object(
            {
                "hashes": {"type": "array", "items": HEX32},
                # the cosigned checkpoint of that tree size, when the vault signed one
                "checkpoint": NULLABLE_STRING,
                "witnessing": WITNESSING,
            },
            ["hashes"],
        ),
    }


def _problems(*codes: int) -> dict[str, Any]:
    words = {
        400: "bad request (a header or parameter)",
        401: "no valid bearer token",
        403: "the token's role may not do this",
        404: "not found, or not the caller's",
        409: "a request with this Idempotency-Key is in progress",
        413: "the body exceeds the cap",
        415: "not application/json",
        422: "invalid, or refused by a rule of the domain (its own problem type)",
        503: "the store or the vault is not available",
        507: "the disk is full: nothing written",
    }
    ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {str(c): {"description": words[c], "content": ref} for c in codes}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _post_document(summary: str, schema: str, media: str, description: str) -> dict[str, Any]:
    """A POST answering a document (the audit zip, the certificate PDF)."""
    return {
        "post": {
            "summary": summary,
            "security": AUTH,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(schema)}},
            },
            "responses": {
                "200": {
                    "description": description,
                    "content": {media: {"schema": {"type": "string", "contentMediaType": media}}},
                },
                **_problems(401, 403, 404, 413, 415, 422, 503),
            },
        }
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _query(name: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


INDEX = {
    "name": "index",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0, "maximum": 999999999999999999},
}
NONNEG = {"type": "integer", "minimum": 0, "maximum": 999999999999999999}
POSITIVE = {"type": "integer", "minimum": 1, "maximum": 999999999999999999}
AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
PUBLIC: list[dict[str, list[str]]] = []
# C2SP tlog-tiles (daemon.http.tiles): <L>, and <N>[.p/<W>] as one path parameter.
TILE_LEVEL = {
    "name": "level",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0, "maximum": 63},
}
TILE_PATH = {
    "name": "path",
    "in": "path",
    "required": True,
    "description": "<N> in 3-digit groups, all but the last prefixed by x (1234067 is "
    "x001/x234/067), then .p/<W> (1 to 255) for a partial tile",
    "schema": {"type": "string", "pattern": "^(x[0-9]{3}/){0,5}[0-9]{3}(\\.p/[1-9][0-9]{0,2})?$"},
}


def _get(
    summary: str,
    ok: dict[str, Any],
    *,
    errors: tuple[int, ...],
    params: list[dict[str, Any]] | None = None,
    auth: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": AUTH if auth else PUBLIC,
        "responses": {"200": ok, **_problems(*errors)},
    }
    if params:
        op["parameters"] = params
    return {"get": op}


@functools.cache
def openapi_document() -> dict[str, Any]:
    read_errors = (401, 403, 404, 503)
    text = {"description": "text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    octets = {
        "description": "bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Horodate vault",
            "version": "1",
            "description": "An append-only, tamper-evident store of attendance records, each "
            "sealed by an RFC 3161 token, in an RFC 9162 Merkle log with C2SP checkpoints.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
        "paths": {
            "/v1/entries": {
                "post": {
                    "summary": "Deposit one entry or a batch (all or nothing)",
                    "security": AUTH,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[\\x20-\\x7e]{1,255}$"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [_ref("Entry"), _ref("Batch")]}
                            }
                        },
                    },
                    "responses": {
                        "201": _json(
                            {"oneOf": [_ref("Receipt"), _ref("Receipts")]}, "stored and sealed"
                        ),
                        "202": _json(
                            {"oneOf": [_ref("Receipt"), _ref("Receipts")]}, "stored, not sealed yet"
                        ),
                        **_problems(400, 401, 403, 409, 413, 415, 422, 503, 507),
                    },
                },
                **_get(
                    "List the caller's entries",
                    _json(
                        _object(
                            {"entries": {"type": "array"}, "next_cursor": NULLABLE_STRING},
                            ["entries", "next_cursor"],
                        ),
                        "a page",
                    ),
                    errors=(400, 401, 403, 503),
                    params=[
                        _query("ine", {"type": "string"}),
                        _query("birth_date", {"type": "string", "format": "date"}),
                        _query("session", {"type": "string"}),
                        _query("from", TIME),
                        _query("to", TIME),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                        _query("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
                    ],
                ),
            },
            "/v1/audits": _post_document(
                "An audit trail (zip) of a student, a session or a training action",
                "AuditRequest",
                "application/zip",
                "the bundle (docs/audit.md)",
            ),
            "/v1/certificates": _post_document(
                "The certificate of completion of a trainee in an action (signed PDF)",
                "CertificateRequest",
                "application/pdf",
                "the certificate, its audit trail attached (docs/audit.md)",
            ),
            "/v1/entries/count": _get(
                "Count the caller's entries",
                _json(_object({"count": {"type": "integer"}}, ["count"]), "the count"),
                errors=(401, 403, 503),
            ),
            "/v1/entries/{index}": _get(
                "Read an entry, its token and its proof",
                _json(_ref("StoredEntry"), "the entry"),
                errors=read_errors,
                params=[INDEX],
            ),
            "/v1/entries/{index}/metadata": _get(
                "Technical metadata (no personal data)",
                _json({"type": "object"}, "metadata"),
                errors=read_errors,
                params=[INDEX],
            ),
            "/v1/entries/{index}/integrity": _get(
                "Check one entry's integrity now",
                _json({"type": "object"}, "the checks"),
                errors=read_errors,
                params=[INDEX],
            ),
            "/v1/entries/{index}/token": _get(
                "The entry's RFC 3161 TimeStampResp",
                {
                    "description": "DER",
                    "content": {
                        "application/timestamp-reply": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                errors=read_errors,
                params=[INDEX],
            ),
            "/v1/journal": _get(
                "Read the access journal",
                _json(_object({"records": {"type": "array"}}, ["records"]), "records"),
                errors=(400, 401, 403, 503),
                params=[
                    _query("start", NONNEG),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
            ),
            "/v1/checkpoint": _get(
                "The latest C2SP checkpoint (signed note)", text, errors=(503,), auth=False
            ),
            "/v1/checkpoint/verifier": _get(
                "The signed-note verifier key", text, errors=(), auth=False
            ),
            "/v1/proofs/inclusion": _get(
                "RFC 9162 §2.1.3 inclusion proof",
                _json(_ref("Hashes"), "the proof"),
                errors=(400, 404),
                params=[
                    _query("index", NONNEG, required=True),
                    _query("tree_size", POSITIVE, required=True),
                ],
                auth=False,
            ),
            "/v1/proofs/consistency": _get(
                "RFC 9162 §2.1.4 consistency proof",
                _json(_ref("Hashes"), "the proof"),
                errors=(400, 404),
                params=[
                    _query("first", POSITIVE, required=True),
                    _query("second", POSITIVE, required=True),
                ],
                auth=False,
            ),
            "/v1/openapi.json": _get(
                "This document", _json({"type": "object"}, "OpenAPI 3.1"), errors=(), auth=False
            ),
            "/checkpoint": _get(
                "C2SP tlog-tiles: the latest checkpoint (signed note)",
                text,
                errors=(503,),
                auth=False,
            ),
            "/tile/{level}/{path}": _get(
                "C2SP tlog-tiles: a hash tile (256 hashes of tree level 8·L, or W of them)",
                octets,
                errors=(400, 404),
                params=[TILE_LEVEL, TILE_PATH],
                auth=False,
            ),
            "/tile/entries/{path}": _get(
                "C2SP tlog-tiles: an entry bundle (the leaves, uint16 length-prefixed)",
                octets,
                errors=(400, 404),
                params=[TILE_PATH],
                auth=False,
            ),
            "/health": _get(
                "The vault's state",
                _json({"type": "object"}, "ok or degraded"),
                errors=(503,),
                auth=False,
            ),
            "/metrics": _get("Prometheus metrics", text, errors=(), auth=False),
        },
    }


@functools.cache
def query_parameters() -> dict[tuple[str, str], frozenset[str]]:
    """The query parameters each operation accepts, ``(METHOD, path) → names``: the API
    refuses any other, as the document's ``additionalProperties: false`` promises."""
    allowed: dict[tuple[str, str], frozenset[str]] = {}
    for path, operations in openapi_document()["paths"].items():
        for method, op in operations.items():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            allowed[method.upper(), path] = frozenset(names)
    return allowed
