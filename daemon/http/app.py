"""The vault's HTTP API (DESIGN.md, "Vault HTTP"): ``create_app(vault)``.

Thin: authenticate the bearer token, read the body under its cap, parse it with the pure
rules, call :class:`daemon.vault.Vault`, answer JSON — or a problem document from
:mod:`daemon.http.problems`. Every call under ``/v1/`` and to the tlog-tiles routes
(:mod:`daemon.http.tiles`) is journaled, reads and refusals included; an accepted deposit
is journaled in the same transaction as its entries.
``/health`` and ``/metrics`` (probes, polled every few seconds) are not.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from daemon import ijson
from daemon.clock import parse_time, utc_now, utc_text
from daemon.errors import FieldError, InvalidEntry, VaultError
from daemon.http import tiles as tlog
from daemon.http.openapi import openapi_document, query_parameters
from daemon.http.problems import HttpProblem, from_error, problem
from daemon.http.status_page import add_status_page
from daemon.ine import check_ine
from daemon.keys import token_hash
from daemon.records import parse_batch, parse_date, parse_entry
from daemon.vault import SEAL_BUCKETS_S, Caller, Vault
from daemon.witnessing.metrics import WitnessCollector

log = logging.getLogger("horodate.vault.http")

VAULT: Final = web.AppKey("vault", Vault)

IN_FLIGHT: Final = web.AppKey("in_flight", set[tuple[str, str]])
CALLER: Final = web.RequestKey("caller", Caller)
JOURNALED: Final = web.RequestKey("journaled", bool)
_KEY_RE: Final = re.compile(r"[\x20-\x7e]{1,255}")  # Idempotency-Key: 1–255 printable ASCII
_JSON: Final = "application/json"
_MAX_LIMIT: Final = 1000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class VaultMetrics:
    """Prometheus metrics (prometheus-client): requests and latency by route, plus the
    vault's state read at scrape time."""

    def __init__(self, vault: Vault) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "horodate_vault_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "horodate_vault_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.registry.register(_StateCollector(vault))
        self.registry.register(WitnessCollector(vault.witnessing))


class _StateCollector:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def collect(self) -> Any:
        status = vault_status(self.vault)
        for name, help_, value in (
            ("horodate_vault_entries", "Entries in the log", status["entries"]),
            ("horodate_vault_seals_pending", "Entries waiting for their token", status["pending"]),
            (
                "horodate_vault_oldest_pending_seconds",
                "Age of the oldest entry waiting for its token (0: none)",
                status["oldest_pending_age_s"] or 0,
            ),
            (
                "horodate_vault_checkpoint_age_seconds",
                "Age of the latest checkpoint",
                status["checkpoint_age_s"] or 0,
            ),
            (
                "horodate_vault_checkpoint_size",
                "Tree size of the latest checkpoint",
                status["checkpoint_size"] or 0,
            ),
            (
                "horodate_vault_disk_full",
                "1 while appends are refused for lack of space",
                int(status["disk_full"]),
            ),
            (
                "horodate_vault_tsa_failures",
                "TSA calls that gave no token",
                self.vault.sealing.tsa_failures,
            ),
        ):
            g = GaugeMetricFamily(name, help_)
            g.add_metric([], float(value))
            yield g
        sealing = self.vault.sealing
        sealed = CounterMetricFamily(
            "horodate_vault_seals", "Entries sealed: at the append, or later by the sealer",
            labels=["when"],
        )  # fmt: skip
        sealed.add_metric(["inline"], sealing.sealed_inline)
        sealed.add_metric(["later"], sealing.sealed_later)
        yield sealed
        replication = GaugeMetricFamily(
            "horodate_vault_replication", "1 for the store's replication state", labels=["state"]
        )
        for state in REPLICATION_STATES:
            replication.add_metric([state], float(state == status["replication"]))
        yield replication
        cumulative, buckets = 0, []
        for bound, count in zip((*SEAL_BUCKETS_S, math.inf), sealing.seal_counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
        yield HistogramMetricFamily(
            "horodate_vault_seal_seconds",
            "How long a token took at the append, asked to verified",
            buckets=buckets,
            sum_value=sealing.seal_seconds,
        )


# single_site: SQLite; synchronous / degraded: the PostgreSQL pair (docs/multisite.md)
REPLICATION_STATES: Final = ("single_site", "synchronous", "degraded")

METRICS: Final = web.AppKey("metrics", VaultMetrics)


def vault_status(vault: Vault) -> dict[str, Any]:
    reader = vault.store.reader()
    now = utc_now()
    pending = reader.pending(1)
    oldest_age = None
    if pending:
        row = reader.entry(pending[0][0])
        if row is not None:
            oldest_age = max(0.0, (now - parse_time(row.received_at)).total_seconds())
    cp = reader.latest_checkpoint()
    return {
        "name": vault.config.name,
        "entries": reader.size(),
        "pending": reader.pending_count() if pending else 0,
        "oldest_pending_age_s": oldest_age,
        "checkpoint_size": None if cp is None else cp.size,
        "checkpoint_age_s": None
        if cp is None
        else (now - parse_time(cp.created_at)).total_seconds(),
        "checkpoint_time_stamped": None if cp is None else cp.token is not None,
        "disk_full": vault.disk_full,
        "replication": vault.store.replication(),
        "tsa": list(vault.config.tsa_urls),
        "tsa_last_failure": vault.sealing.last_failure or None,
        **vault.witnessing.status(),  # "witnesses" (each one's state), "checkpoint_witnessed"
    }


def _caller(request: web.Request) -> Caller:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HttpProblem(401, "unauthorized", "Unauthorized", "send Authorization: Bearer <token>")
    row = request.app[VAULT].store.reader().api_token(token_hash(token.strip()))
    if row is None:
        raise HttpProblem(401, "unauthorized", "Unauthorized", "this bearer token is not known")
    if row.expires_at is not None and utc_text(utc_now()) >= row.expires_at:
        raise HttpProblem(
            401, "unauthorized", "Unauthorized", f"this bearer token expired at {row.expires_at}"
        )
    return Caller(role=row.role, establishment=row.establishment, label=row.label)


def _int_param(
    request: web.Request,
    name: str,
    default: int | None = None,
    *,
    low: int = 0,
    high: int = 2**62,
) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise HttpProblem(
                400, "bad_parameter", "Bad parameter", f"the parameter {name!r} is required"
            )
        return default
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or not low <= int(raw) <= high:
        raise HttpProblem(
            400,
            "bad_parameter",
            "Bad parameter",
            f"{name!r} must be an integer from {low} to {high}",
        )
    return int(raw)


def _refuse_unknown_parameters(request: web.Request, route: str) -> None:
    """A misspelt parameter (``?limt=5``) must not be silently ignored: the caller would
    get an answer to a question it did not ask."""
    method = "GET" if request.method == "HEAD" else request.method
    allowed = query_parameters().get((method, route))
    if allowed is None:  # no such route: the router answers 404 or 405
        return
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise HttpProblem(
            400,
            "bad_parameter",
            "Bad parameter",
            f"unknown query parameter {unknown[0]!r}; this route takes: {known}",
        )


async def _read_body(request: web.Request, cap: int) -> bytes:
    if request.content_type != _JSON:
        raise HttpProblem(
            415, "unsupported_media_type", "Unsupported media type", "send application/json"
        )
    if request.content_length is not None and request.content_length > cap:
        raise ijson.BodyTooLarge(f"the body is {request.content_length} bytes; the cap is {cap}")
    body = await request.content.read(cap + 1)
    if len(body) > cap:
        raise ijson.BodyTooLarge(f"the body exceeds the {cap}-byte cap")
    return body


@web.middleware
async def _errors_and_journal(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time the call, map every error to a problem document, journal the call."""
    started = time.perf_counter()
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    try:
        _refuse_unknown_parameters(request, route)
        response = await handler(request)
    except web.HTTPException as e:
        kept = {k: v for k, v in e.headers.items() if k in ("Allow", "Location", "Retry-After")}
        response = problem(
            e.status, "http_" + str(e.status), e.reason, e.text or e.reason, headers=kept
        )
    except VaultError as e:
        response = from_error(e)
        if response.status >= 500:
            log.error("vault: %s %s → %d: %s", request.method, request.path, response.status, e)
    except Exception:
        log.exception("vault: %s %s failed", request.method, request.path)
        response = problem(500, "internal", "Internal error", "the vault failed; see its log")
    caller = request.get(CALLER)
    metrics = request.app[METRICS]
    metrics.requests.labels(route, str(response.status)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - started)
    if request.path.startswith(("/v1/", *tlog.PATH_PREFIXES)) and not request.get(JOURNALED):
        outcome = "ok" if response.status < 400 else "refused" if response.status < 500 else "error"
        try:
            await request.app[VAULT].journal(
                caller or Caller.public(),
                f"{request.method} {route}",
                request.path_qs[:500],
                outcome,
                response.status,
            )
        except VaultError as e:  # the journal could not be written: the answer is not given
            log.error("vault: cannot journal %s %s: %s", request.method, request.path, e)
            return from_error(e)
    return response


def _authenticate(request: web.Request) -> Caller:
    caller = _caller(request)
    request[CALLER] = caller
    return caller


async def post_entries(request: web.Request) -> web.Response:
    vault = request.app[VAULT]
    caller = _authenticate(request)
    key = request.headers.get("Idempotency-Key")
    if key is None or not _KEY_RE.fullmatch(key):
        raise HttpProblem(
            400,
            "idempotency_key_required",
            "Idempotency-Key required",
            "send an Idempotency-Key header of 1 to 255 printable ASCII characters",
        )
    body = await _read_body(request, vault.config.body_max_bytes)
    value = ijson.parse(body, max_bytes=vault.config.body_max_bytes)
    received_at = utc_now()
    today = received_at.date()
    batch = isinstance(value, dict) and "entries" in value
    if batch:
        entries = parse_batch(
            value, today=today, received_at=received_at, max_entries=vault.config.batch_max_entries
        )
    else:
        entries = [parse_entry(value, today=today, received_at=received_at)]
    if not entries:
        raise InvalidEntry([FieldError("/entries", "a batch holds at least one entry")])
    flight = (f"{caller.role}:{caller.establishment}", key)
    in_flight = request.app[IN_FLIGHT]
    if flight in in_flight:
        raise HttpProblem(
            409,
            "idempotency_key_in_flight",
            "Request in progress",
            "a request with this Idempotency-Key is still being processed; retry later",
        )
    in_flight.add(flight)
    try:
        done = await vault.deposit(
            entries, body=value, batch=batch, key=key, caller=caller, received_at=received_at
        )
    finally:
        in_flight.discard(flight)
    request[JOURNALED] = True  # in the deposit's own transaction
    sealed = all(r.sealed for r in done.receipts)
    payload: Any = (
        {"receipts": [r.to_json() for r in done.receipts]}
        if done.batch
        else done.receipts[0].to_json()
    )
    headers = {"Idempotent-Replayed": "true"} if done.replayed else None
    return web.json_response(payload, status=201 if sealed else 202, headers=headers)


async def get_entry(request: web.Request) -> web.Response:
    caller = _authenticate(request)
    return web.json_response(
        request.app[VAULT].read_entry(int(request.match_info["index"]), caller)
    )


async def get_metadata(request: web.Request) -> web.Response:
    caller = _authenticate(request)
    return web.json_response(request.app[VAULT].metadata(int(request.match_info["index"]), caller))


async def get_integrity(request: web.Request) -> web.Response:
    caller = _authenticate(request)
    return web.json_response(
        request.app[VAULT].check_entry(int(request.match_info["index"]), caller)
    )


async def list_entries(request: web.Request) -> web.Response:
    caller = _authenticate(request)
    q = request.query
    ine, birth = q.get("ine"), q.get("birth_date")
    if (ine is None) != (birth is None):
        raise HttpProblem(400, "bad_parameter", "Bad parameter", "give ine and birth_date together")
    if ine is not None and (why := check_ine(ine)) is not None:
        raise HttpProblem(400, "bad_parameter", "Bad parameter", f"'ine': {why}")
    if birth is not None and parse_date(birth) is None:
        raise HttpProblem(400, "bad_parameter", "Bad parameter", "'birth_date' must be YYYY-MM-DD")
    bounds = {}
    for name in ("from", "to"):
        if name in q:
            try:
                bounds[name] = utc_text(parse_time(q[name]))
            except ValueError:
                raise HttpProblem(
                    400, "bad_parameter", "Bad parameter", f"{name!r} must be an RFC 3339 time"
                ) from None
    limit = _int_param(request, "limit", 100, low=1, high=_MAX_LIMIT)
    cursor = _int_param(request, "cursor", 0) - 1 if "cursor" in q else -1
    items, last = request.app[VAULT].list_entries(
        caller,
        ine=ine,
        birth_date=birth,
        session=q.get("session"),
        occurred_from=bounds.get("from"),
        occurred_to=bounds.get("to"),
        limit=limit,
        cursor=cursor,
    )
    return web.json_response(
        {"entries": items, "next_cursor": None if last is None else str(last + 1)}
    )


async def count_entries(request: web.Request) -> web.Response:
    caller = _authenticate(request)
    return web.json_response({"count": request.app[VAULT].count(caller)})


async def get_journal(request: web.Request) -> web.Response:
    caller = _authenticate(request)
    start = _int_param(request, "start", 0)
    limit = _int_param(request, "limit", 100, low=1, high=_MAX_LIMIT)
    return web.json_response(
        {"records": request.app[VAULT].journal_page(caller, start=start, limit=limit)}
    )


async def get_checkpoint(request: web.Request) -> web.Response:
    cp = request.app[VAULT].store.reader().latest_checkpoint()
    if cp is None:
        raise HttpProblem(503, "no_checkpoint", "No checkpoint yet", "the vault is starting")
    witnessing = request.app[VAULT].witnessing
    note, cosigned = witnessing.published(cp)  # the note, the witnesses' cosignatures appended
    headers = cosigned.http_headers() if witnessing.progress else None
    return web.Response(text=note, content_type="text/plain", charset="utf-8", headers=headers)


async def get_verifier(request: web.Request) -> web.Response:
    return web.Response(text=request.app[VAULT].keys.verifier_key + "\n", content_type="text/plain")


async def get_inclusion(request: web.Request) -> web.Response:
    index = _int_param(request, "index")
    size = _int_param(request, "tree_size", low=1)
    hashes = request.app[VAULT].inclusion(index, size)
    checkpoint, witnessing = request.app[VAULT].witnessing.published_at(size)
    return web.json_response(
        {"hashes": [h.hex() for h in hashes], "checkpoint": checkpoint, "witnessing": witnessing}
    )


async def get_consistency(request: web.Request) -> web.Response:
    first = _int_param(request, "first", low=1)
    second = _int_param(request, "second", low=1)
    hashes = request.app[VAULT].consistency(first, second)
    checkpoint, witnessing = request.app[VAULT].witnessing.published_at(second)
    return web.json_response(
        {"hashes": [h.hex() for h in hashes], "checkpoint": checkpoint, "witnessing": witnessing}
    )


async def get_token(request: web.Request) -> web.Response:
    """The entry's token alone, as ``application/timestamp-reply`` (for ``openssl ts``)."""
    caller = _authenticate(request)
    data = request.app[VAULT].read_entry(int(request.match_info["index"]), caller)
    if data["token"] is None:
        raise HttpProblem(404, "not_sealed", "Not sealed yet", "this entry waits for its token")
    return web.Response(
        body=base64.b64decode(data["token"]), content_type="application/timestamp-reply"
    )


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def get_health(request: web.Request) -> web.Response:
    status = vault_status(request.app[VAULT])
    healthy = not status["disk_full"]
    witness_down = any(w["state"] == "failing" for w in status["witnesses"])
    status["state"] = (
        "ok"
        if healthy and not status["pending"] and not witness_down
        else "degraded"
        if healthy
        else "refusing"
    )
    return web.json_response(status, status=200 if healthy else 503)


async def get_metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[METRICS].registry)
    return web.Response(
        body=data, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


async def post_audits(request: web.Request) -> web.Response:
    """An audit trail, answered as the zip (journaled with its hash, see daemon.audit)."""
    from daemon.audit.service import make_audit, parse_audit_request

    vault = request.app[VAULT]
    caller = _authenticate(request)
    body = await _read_body(request, vault.config.body_max_bytes)
    audit = parse_audit_request(ijson.parse(body, max_bytes=vault.config.body_max_bytes), caller)
    bundle = await make_audit(vault, caller, audit)
    request[JOURNALED] = True  # the trail's own journal record says who, what and its hash
    name = f"piste-{audit.scope.establishment}-{utc_now().date().isoformat()}.zip"
    return _document(bundle.data, "application/zip", name, bundle.sha256)


def _document(body: bytes, content_type: str, name: str, bundle_sha256: str) -> web.Response:
    """A document to save (the audit zip, the certificate PDF), with its trail's hash."""
    return web.Response(
        body=body,
        content_type=content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Bundle-SHA256": bundle_sha256,
        },
    )


async def post_certificates(request: web.Request) -> web.Response:
    """A certificate of completion, answered as the signed PDF carrying its audit trail."""
    from daemon.audit.service import make_certificate, parse_certificate_request

    vault = request.app[VAULT]
    caller = _authenticate(request)
    body = await _read_body(request, vault.config.body_max_bytes)
    asked = parse_certificate_request(
        ijson.parse(body, max_bytes=vault.config.body_max_bytes), caller
    )
    certificate = await make_certificate(vault, caller, asked)
    request[JOURNALED] = True
    name = f"certificat-{asked.audit.scope.establishment}-{utc_now().date().isoformat()}.pdf"
    return _document(certificate.pdf, "application/pdf", name, certificate.bundle.sha256)


def create_app(vault: Vault) -> web.Application:
    """The vault's aiohttp application; its lifetime starts and stops ``vault``."""
    app = web.Application(
        middlewares=[_errors_and_journal],
        client_max_size=vault.config.body_max_bytes + 1,
    )
    app[VAULT] = vault
    app[METRICS] = VaultMetrics(vault)
    app[IN_FLIGHT] = set()

    async def lifetime(app: web.Application) -> Any:
        await vault.start()
        yield
        await vault.stop()

    app.cleanup_ctx.append(lifetime)
    r = app.router
    r.add_post("/v1/entries", post_entries)
    r.add_get("/v1/entries", list_entries)
    r.add_get("/v1/entries/count", count_entries)
    r.add_get(r"/v1/entries/{index:\d{1,18}}", get_entry)
    r.add_get(r"/v1/entries/{index:\d{1,18}}/metadata", get_metadata)
    r.add_get(r"/v1/entries/{index:\d{1,18}}/integrity", get_integrity)
    r.add_get(r"/v1/entries/{index:\d{1,18}}/token", get_token)
    r.add_post("/v1/audits", post_audits)
    r.add_post("/v1/certificates", post_certificates)
    r.add_get("/v1/journal", get_journal)
    r.add_get("/v1/checkpoint", get_checkpoint)
    r.add_get("/v1/checkpoint/verifier", get_verifier)
    r.add_get("/v1/proofs/inclusion", get_inclusion)
    r.add_get("/v1/proofs/consistency", get_consistency)
    r.add_get("/v1/openapi.json", get_openapi)
    tiles = tlog.TileServer(vault)  # C2SP tlog-tiles: the log's public half, for standard tools
    r.add_get("/checkpoint", tlog.checkpoint(get_checkpoint))
    r.add_get(r"/tile/entries/{path:.+}", tiles.entries)
    r.add_get(r"/tile/{level:\d{1,2}}/{path:.+}", tiles.tile)
    r.add_get("/health", get_health)
    r.add_get("/metrics", get_metrics)
    add_status_page(app, vault, vault_status)  # GET /status: the same facts, for people
    return app


__all__ = ["create_app", "vault_status"]
