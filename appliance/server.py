"""The appliance's HTTP face (aiohttp): RFC 3161 over HTTP, health, metrics, sim faults.

``create_app`` takes the running services and wires the routes; it does not start any
hardware itself (``appliance.service`` does), so tests can hand it whatever they built.

Error mapping lives here, in one place:

- ``POST /tsa``: protocol problems are answered in the protocol — a DER ``TimeStampResp``
  with a PKIStatus and failInfo, HTTP 200 (RFC 3161 §3.4). Only transport problems get HTTP
  errors: 415 wrong content type, 413 body over ``max_request_bytes``, 405 wrong method.
- ``GET /health``: 200 while issuing, 503 otherwise, JSON either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from appliance.clock import Assessment
from appliance.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from appliance.metrics import Exposition, TsaTally
from appliance.timekeeper import Timekeeper
from appliance.tsa.errors import FailInfo
from appliance.tsa.journal import COMMIT_BUCKETS_S, encode_issued
from drivers.monotonic import NS_PER_S
from drivers.sample import SourceKind

log = logging.getLogger(__name__)

TSQ_CONTENT_TYPE = "application/timestamp-query"
TSR_CONTENT_TYPE = "application/timestamp-reply"


@dataclass
class TsaService:
    """What ``POST /tsa`` needs: the engine, serials, the issuance log, the chain PEM."""

    authority: Any  # appliance.tsa.TimeStampAuthority
    serials: Any  # appliance.tsa.serials.SerialAllocator
    journal: Any | None  # appliance.tsa.journal.IssuanceLog (None: no log, tests only)
    chain_pem: bytes = b""
    days_to_expiry: Callable[[], float] | None = None
    # The clock's time for the expiry countdown and warning (the ensemble's when it can
    # say, the host's otherwise); the engine itself refuses every token outside the
    # certificates' validity on the genTime it is about to sign.
    clock_now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    granted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by PKIFailureInfo name
    # The time of each token: (utc_ns, bound_ns) or the TSA's TimeNotAvailable.
    token_time: Callable[[], tuple[int, int]] | None = None
    issue_state: Callable[[], str] = str  # the clock's state behind the last token_time
    # Reads the key and certificate again, checked as at start (appliance.keys.
    # load_credentials on the files the service started with); raises CredentialsError.
    load_credentials: Callable[[], Any] | None = None
    reloads: Counter[str] = field(default_factory=Counter)  # "done" / "refused"
    credentials: Any | None = None  # appliance.keys.TsaCredentials in use (see adopt)

    def adopt(self, creds: Any) -> None:
        """Sign with ``creds`` (``appliance.keys.TsaCredentials``) from the next token on:
        the engine's key and certificate, the chain ``/tsa/certs`` serves, the expiry the
        metrics show and the instant signing stops. At start, and at each :meth:`reload`."""
        from appliance.keys import days_to_expiry

        authority = self.authority
        if authority.credentials is not creds:
            authority = authority.with_credentials(creds)
        chain_pem = creds.chain_pem()
        # all computed: now swap, with no await between (one step for the event loop)
        self.authority, self.credentials, self.chain_pem = authority, creds, chain_pem
        self.days_to_expiry = lambda: days_to_expiry(creds, self.clock_now())

    def reload(self) -> bool:
        """Read the key and certificate again (SIGHUP: a renewed certificate, a new key).
        If they pass the checks made at start, every token from the next on is signed with
        them, and the clock, serial numbers and issuance log carry on untouched; if not, the
        ones in use stay and the error is logged. Never raises."""
        if self.load_credentials is None:
            log.warning("tsa: reload asked, but this service has no key files to read")
            return False
        try:
            creds = self.load_credentials()
            self.adopt(creds)
        except Exception as e:  # CredentialsError, or a key the engine cannot use
            self.reloads["refused"] += 1
            log.error("tsa: reload refused, still signing with the certificate in use: %s", e)
            return False
        self.reloads["done"] += 1  # (load_credentials has logged any expiry warning)
        cert = creds.certificate
        log.info(
            "tsa: key and certificate reloaded: %s, certificate serial %#x, valid until %s",
            cert.subject.rfc4514_string(),
            cert.serial_number,
            cert.not_valid_after_utc.isoformat(),
        )
        return True

    def warn_if_expiring(self) -> str | None:
        """Log (and return) the expiry warning while a certificate in use expires within
        ``appliance.keys.EXPIRY_WARNING_DAYS`` (each day; loading the files warns too)."""
        from appliance.keys import expiry_warning

        if self.credentials is None:
            return None
        warning = expiry_warning(self.credentials, self.clock_now())
        if warning:
            log.warning("tsa: %s", warning)
        return warning

    def sign(self, body: bytes) -> tuple[bytes, bytes | None]:
        """Answer one request now: the ``TimeStampResp`` DER and, for a granted token, its
        issuance-log record (``encode_record``), which must be durable before the token
        leaves (:meth:`commit`). ``None``: nothing to log. Never raises.
        """
        return self.sign_all((body,))[0]

    def sign_all(self, bodies: Sequence[bytes]) -> list[tuple[bytes, bytes | None]]:
        """:meth:`sign` for requests at hand, together: one reading of the clock, the
        signatures back to back (``TimeStampAuthority.respond_all``). Never raises."""
        assert self.token_time is not None, "TsaService.token_time is not wired"
        replies = self.authority.respond_all(bodies, time=self.token_time, serial=self.serials.next)
        state = self.issue_state()  # the clock's, as the replies were timed
        return [self._answer(reply, state) for reply in replies]

    def _answer(self, reply: Any, state: str) -> tuple[bytes, bytes | None]:
        """The DER to send for ``reply`` (a ``Reply``), and the record to make durable
        first."""
        if not reply.granted:
            self.refused[reply.fail_info.name if reply.fail_info else "rejected"] += 1
            return bytes(reply.der), None
        if self.journal is None:
            self.granted += 1
            return bytes(reply.der), None
        try:
            record = issued_record(reply, state)
        except Exception:  # a bug: the token is withheld, never sent without its record
            log.exception("tsa: cannot record serial %s; withholding the token", reply.serial)
            self.refused[FailInfo.systemFailure.name] += 1
            return self.withheld(), None
        return bytes(reply.der), record

    def commit(self, records: list[bytes], done: Callable[[bool], None]) -> None:
        """Have the records of granted tokens made durable (the issuance log's writer
        groups them); ``done(True)`` in this event loop once they are, ``done(False)`` if
        not: then their tokens must be withheld."""
        assert self.journal is not None

        def settled(durable: bool) -> None:
            if durable:
                self.granted += len(records)
            else:
                log.error("tsa: issuance log failed; withholding %d tokens", len(records))
                self.refused[FailInfo.systemFailure.name] += len(records)
            done(durable)

        try:
            self.journal.submit(records, settled)
        except Exception:
            log.exception("tsa: issuance log unavailable")
            asyncio.get_running_loop().call_soon(settled, False)

    def withheld(self) -> bytes:
        """The answer in place of a token whose record could not be made durable."""
        return bytes(self.authority.reject(FailInfo.systemFailure, "issuance log unavailable"))

    async def answer(self, body: bytes) -> bytes:
        """:meth:`sign`, then :meth:`commit`, awaiting durability without blocking the
        loop (for the aiohttp route; the fast lane calls both itself). Never raises."""
        der, record = self.sign(body)
        if record is None:
            return der
        durable: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.commit([record], durable.set_result)
        return der if await durable else self.withheld()

    def tally(self) -> TsaTally:
        """This process's counts: tokens, refusals and its issuance log."""
        tally = TsaTally(granted=self.granted, refused=Counter(self.refused))
        if self.journal is not None:
            stats = self.journal.stats
            tally.log_records = stats.records
            tally.log_bytes = stats.bytes_written
            tally.log_failures = stats.failures
            tally.logs_stopped = int(stats.stopped)
            tally.log_commit_counts = list(stats.commit_counts)
            tally.log_commit_seconds = stats.commit_seconds
            tally.log_slow_commits = stats.slow_commits
        return tally

    def _refuse(self, fail_info: FailInfo, text: str) -> bytes:
        """A refusal the engine did not make itself (the service's own checks), counted."""
        self.refused[fail_info.name] += 1
        return bytes(self.authority.reject(fail_info, text))


@dataclass(frozen=True)
class ServerConfig:
    max_request_bytes: int = 16 * 1024  # a TimeStampReq is < 200 bytes; 16 KiB is generous
    simulate: bool = False


TIMEKEEPER = web.AppKey("timekeeper", Timekeeper)
TSA = web.AppKey("tsa", TsaService)
CONFIG = web.AppKey("server_config", ServerConfig)


class FaultControl(Protocol):
    """What ``/sim/faults`` needs of the simulated world (drivers.sim.world.SimWorld)."""

    def faults_json(self) -> dict[str, Any]: ...

    def set_faults_json(self, data: Any) -> Any: ...

    def clear_faults(self) -> None: ...


WORLD = web.AppKey("sim_world", FaultControl)


class WorkerStatus(Protocol):
    """What ``/metrics`` needs of the TSA worker processes (appliance.workers.WorkerPool)."""

    @property
    def size(self) -> int: ...

    @property
    def restarts(self) -> int: ...

    def alive(self) -> int: ...

    def stats(self) -> TsaTally: ...


WORKERS = web.AppKey("tsa_workers", WorkerStatus)
STARTED = web.AppKey("started_monotonic", float)


def create_app(
    config: ServerConfig,
    timekeeper: Timekeeper,
    *,
    tsa: TsaService | None = None,
    world: FaultControl | None = None,
    cleanup: list[Callable[[web.Application], Any]] | None = None,
) -> web.Application:
    """The appliance's aiohttp application.

    ``world`` is the simulated world (``drivers.sim.world.SimWorld``); the ``/sim/faults``
    routes exist only when it is given, i.e. only with ``--simulate``.
    """
    app = web.Application(client_max_size=config.max_request_bytes)
    app[CONFIG] = config
    app[TIMEKEEPER] = timekeeper
    app[STARTED] = time.monotonic()
    if tsa is not None:
        if tsa.token_time is None:
            tsa.token_time = timekeeper.token_time
            tsa.issue_state = lambda: timekeeper.last_issue_state
            tsa.clock_now = timekeeper.clock_now
        app[TSA] = tsa
        app.cleanup_ctx.append(_expiry_watch)
        app.router.add_route("*", "/tsa", tsa_endpoint)
        app.router.add_get("/tsa/certs", tsa_certs)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    if world is not None:
        if not config.simulate:
            raise ValueError("fault injection exists only with --simulate")
        app[WORLD] = world
        app.router.add_get("/sim/faults", get_faults)
        app.router.add_post("/sim/faults", post_faults)
        app.router.add_delete("/sim/faults", delete_faults)
    for ctx in cleanup or ():
        app.cleanup_ctx.append(ctx)
    return app


# --- RFC 3161 --------------------------------------------------------------------------

EXPIRY_CHECK_S = 86_400.0  # how often a running appliance re-checks its certificate's expiry


async def _expiry_watch(app: web.Application) -> AsyncIterator[None]:
    """Each day, the expiry warning again while it applies: an appliance that runs for
    months crosses the warning's threshold without a restart to log it."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            app[TSA].warn_if_expiring()

    task = asyncio.get_running_loop().create_task(watch())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def tsa_endpoint(request: web.Request) -> web.StreamResponse:
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["POST"], text="POST a timestamp-query\n")
    if request.content_type != TSQ_CONTENT_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"expected Content-Type: {TSQ_CONTENT_TYPE}\n")
    body = await request.read()  # over client_max_size: aiohttp answers 413 itself
    der = await request.app[TSA].answer(body)
    return web.Response(body=der, content_type=TSR_CONTENT_TYPE)


def issued_record(reply: Any, state: str) -> bytes:
    """The issuance-log record (``encode_record``'s framing) of a granted ``Reply``, the
    clock's ``state`` beside it."""
    return encode_issued(
        (
            reply.serial,
            reply.gen_time_ns,
            reply.accuracy_us,
            reply.hash_alg,
            reply.imprint,
            reply.nonce,
            state,
            # the exact token: ECDSA signatures differ each time, so only this one matches
            hashlib.sha256(reply.token_der).digest(),
        )
    )


async def tsa_certs(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[TSA].chain_pem, content_type="application/pem-certificate-chain"
    )


# --- health ----------------------------------------------------------------------------


def health_document(
    assessment: Assessment,
    mono_now: int,
    realtime_now: int,
    driver_notes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``/health`` JSON for one assessment (DESIGN.md: state, issuing, offset_s,
    bound_s, sources[name, status, offset_s, bound_s, reason]).

    ``offset_s`` is the ensemble's UTC minus the host's system clock: how far off the
    host's own clock is. A source's ``offset_s`` is its UTC minus the ensemble's. A
    source's ``driver`` is what its driver alone can see (a port not open, an NTP server
    not answering); a configured source with no sample yet is listed through it, waiting.
    """
    notes = dict(driver_notes or {})
    offset_s = None
    if assessment.utc_ns is not None:
        offset_s = (assessment.utc_ns - realtime_now) / NS_PER_S
    sources: list[dict[str, Any]] = [
        {
            "name": s.name,
            "kind": s.kind.value,
            "status": s.status.value,
            "offset_s": _seconds(s.offset_ns),
            "bound_s": _seconds(s.bound_ns),
            "reason": s.reason,
            "driver": notes.pop(s.name, None),
            "age_s": None if s.last_mono_ns is None else (mono_now - s.last_mono_ns) / NS_PER_S,
            "samples": s.samples,
        }
        for s in assessment.sources
    ]
    for name, note in sorted(notes.items()):
        sources.append(
            {
                "name": name,
                "kind": _kind_of(name),
                "status": "waiting",
                "offset_s": None,
                "bound_s": None,
                "reason": "no sample yet",
                "driver": note,
                "age_s": None,
                "samples": 0,
            }
        )
    return {
        "state": assessment.state.value,
        "issuing": assessment.issuing,
        "reason": assessment.reason,
        "utc": _rfc3339(assessment.utc_ns),
        "offset_s": offset_s,
        "bound_s": _seconds(assessment.bound_ns),
        "frequency_ppm": assessment.frequency_ppm,
        "skew_ppm": assessment.skew_ppm,
        "sources": sources,
    }


def _kind_of(name: str) -> str:
    return next((k.value for k in SourceKind if name.startswith(k.value)), "unknown")


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / NS_PER_S


def _rfc3339(utc_ns: int | None) -> str | None:
    if utc_ns is None:
        return None
    seconds, frac = divmod(utc_ns, NS_PER_S)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac // 1000:06d}Z"


async def health(request: web.Request) -> web.Response:
    timekeeper = request.app[TIMEKEEPER]
    mono_now, real_now = timekeeper.now_pair()
    assessment = timekeeper.assess(mono_now)
    document = health_document(assessment, mono_now, real_now, timekeeper.driver_notes())
    workers = request.app.get(WORKERS)
    if workers is not None:
        document["tsa_workers"] = {
            "configured": workers.size,
            "alive": workers.alive(),
            "restarts": workers.restarts,
        }
    if TSA in request.app:
        tally = tsa_tally(request.app)
        document["tsa"] = {
            "tokens_granted": tally.granted,
            "requests_refused": sum(tally.refused.values()),
            "issuance_logs_stopped": tally.logs_stopped,
            "slow_commits": tally.log_slow_commits,
        }
        service = request.app[TSA]
        if service.days_to_expiry is not None:
            from appliance.keys import EXPIRY_WARNING_DAYS

            days = service.days_to_expiry()
            document["tsa"]["certificate_days_left"] = round(days, 1)
            document["tsa"]["certificate_expiring"] = days <= EXPIRY_WARNING_DAYS
        if tally.logs_stopped and document["issuing"]:
            # The clock could, but a process whose log stopped withholds every token.
            document["issuing"] = False
            document["reason"] = (
                f"{tally.logs_stopped} issuance log(s) stopped after a failed fsync: their "
                "tokens are withheld; see the appliance's log, check the disk, restart"
            )
    return web.json_response(document, status=200 if document["issuing"] else 503)


# --- metrics ---------------------------------------------------------------------------


def tsa_tally(app: web.Application) -> TsaTally:
    """The counts of every process that answers ``POST /tsa``: this one and its workers."""
    tally = app[TSA].tally()
    workers = app.get(WORKERS)
    if workers is not None:
        tally.add(workers.stats())
    return tally


async def metrics(request: web.Request) -> web.Response:
    timekeeper = request.app[TIMEKEEPER]
    mono_now, real_now = timekeeper.now_pair()
    a = timekeeper.assess(mono_now)
    e = Exposition()
    e.add("horodate_clock_issuing", "gauge", "1 while the clock can prove the time", a.issuing)
    for state in type(a.state):
        e.add(
            "horodate_clock_state",
            "gauge",
            "1 for the ensemble's current state",
            state is a.state,
            {"state": state.value},
        )
    e.add(
        "horodate_clock_bound_seconds",
        "gauge",
        "Error bound of the ensemble's UTC",
        _seconds(a.bound_ns),
    )
    e.add(
        "horodate_clock_offset_seconds",
        "gauge",
        "Ensemble UTC minus the host's system clock",
        None if a.utc_ns is None else (a.utc_ns - real_now) / NS_PER_S,
    )
    e.add(
        "horodate_clock_frequency_ppm",
        "gauge",
        "Estimated local crystal frequency error",
        a.frequency_ppm,
    )
    e.add("horodate_clock_skew_ppm", "gauge", "Uncertainty of the frequency estimate", a.skew_ppm)
    for s in a.sources:
        labels = {"source": s.name}
        e.add(
            "horodate_source_selected",
            "gauge",
            "1 when the source is a truechimer in use",
            s.status.value == "selected",
            labels,
        )
        e.add(
            "horodate_source_status",
            "gauge",
            "1 for the source's current status",
            1,
            {"source": s.name, "status": s.status.value},
        )
        e.add(
            "horodate_source_offset_seconds",
            "gauge",
            "Source UTC minus ensemble UTC",
            _seconds(s.offset_ns),
            labels,
        )
        e.add(
            "horodate_source_bound_seconds",
            "gauge",
            "Half-width of the source's interval",
            _seconds(s.bound_ns),
            labels,
        )
        e.add(
            "horodate_source_samples_total",
            "counter",
            "Samples received from the source",
            s.samples,
            labels,
        )
    counters = timekeeper.counters()
    e.add(
        "horodate_samples_total", "counter", "Samples received from all drivers", counters.samples
    )
    e.add(
        "horodate_samples_untrusted_total",
        "counter",
        "Samples refused by their driver",
        counters.untrusted,
    )
    if TSA in request.app:
        service = request.app[TSA]
        tally = tsa_tally(request.app)
        workers = request.app.get(WORKERS)
        if workers is not None:
            e.add(
                "horodate_tsa_workers",
                "gauge",
                "TSA worker processes configured",
                workers.size,
            )
            e.add(
                "horodate_tsa_workers_alive",
                "gauge",
                "TSA worker processes running",
                workers.alive(),
            )
            e.add(
                "horodate_tsa_worker_restarts_total",
                "counter",
                "TSA worker processes restarted after they died",
                workers.restarts,
            )
        e.add(
            "horodate_tsa_tokens_granted_total",
            "counter",
            "Time-stamp tokens granted, by every process",
            tally.granted,
        )
        for reason, count in sorted(tally.refused.items()):
            e.add(
                "horodate_tsa_requests_refused_total",
                "counter",
                "Time-stamp requests refused, by PKIFailureInfo",
                count,
                {"fail_info": reason},
            )
        e.add(
            "horodate_tsa_issuance_log_records_total",
            "counter",
            "Issuance-log records made durable, by every process",
            tally.log_records,
        )
        e.add(
            "horodate_tsa_issuance_log_commits_total",
            "counter",
            "Issuance-log commits (one write and one fdatasync for a group of records)",
            tally.log_commits,
        )
        if service.journal is not None:
            e.histogram(
                "horodate_tsa_issuance_log_commit_seconds",
                "Issuance-log commits by duration (write + fdatasync of a group; every token "
                "of the group waits for it), every process",
                COMMIT_BUCKETS_S,
                tally.log_commit_counts or [0] * (len(COMMIT_BUCKETS_S) + 1),
                tally.log_commit_seconds,
            )
        e.add(
            "horodate_tsa_issuance_log_bytes_total",
            "counter",
            "Bytes written to the issuance logs",
            tally.log_bytes,
        )
        e.add(
            "horodate_tsa_issuance_log_failures_total",
            "counter",
            "Issuance-log commits that failed (their tokens were withheld)",
            tally.log_failures,
        )
        e.add(
            "horodate_tsa_issuance_logs_stopped",
            "gauge",
            "Issuance logs refusing every record after a failed fsync (restart needed)",
            tally.logs_stopped,
        )
        engine = service.authority.stats()
        e.add(
            "horodate_tsa_self_check_failures_total",
            "counter",
            "Tokens withheld because their signature did not verify",
            engine["self_check_failures"],
        )
        if service.days_to_expiry is not None:
            e.add(
                "horodate_tsa_certificate_expiry_days",
                "gauge",
                "Days until the TSA certificate expires",
                service.days_to_expiry(),
            )
        for result in ("done", "refused"):
            e.add(
                "horodate_tsa_credential_reloads_total",
                "counter",
                "Reloads of the TSA key and certificate (SIGHUP) by the main process, by result",
                service.reloads[result],
                {"result": result},
            )
    e.add(
        "horodate_uptime_seconds",
        "gauge",
        "Seconds since the server started",
        time.monotonic() - request.app[STARTED],
    )
    return web.Response(text=e.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


# --- simulated hardware faults (only with --simulate) -----------------------------------


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[WORLD].faults_json())


async def post_faults(request: web.Request) -> web.Response:
    from drivers.sim.faults import FaultError

    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise web.HTTPBadRequest(text=f"body is not JSON: {e}\n") from e
    try:
        request.app[WORLD].set_faults_json(data)
    except FaultError as e:
        return web.json_response({"error": str(e)}, status=400)
    return web.json_response(request.app[WORLD].faults_json())


async def delete_faults(request: web.Request) -> web.Response:
    request.app[WORLD].clear_faults()
    return web.json_response(request.app[WORLD].faults_json())
