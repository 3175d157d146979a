"""``GET /metrics``: the appliance's Prometheus exposition, built fresh at each scrape."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from appliance.http.app_keys import STARTED, TIMEKEEPER, TSA, WORKERS, tsa_tally
from appliance.http.exposition import CONTENT_TYPE as METRICS_CONTENT_TYPE
from appliance.http.exposition import Exposition
from appliance.http.health import seconds
from appliance.issuance.log import COMMIT_BUCKETS_S
from drivers.monotonic import NS_PER_S

log = logging.getLogger(__name__)


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
        seconds(a.bound_ns),
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
            seconds(s.offset_ns),
            labels,
        )
        e.add(
            "horodate_source_bound_seconds",
            "gauge",
            "Half-width of the source's interval",
            seconds(s.bound_ns),
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
        if service.issuance_log is not None:
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
