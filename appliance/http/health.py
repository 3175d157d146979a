"""``GET /health``: the clock's verdict as JSON, 200 while issuing and 503 otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from appliance.clock import Assessment
from appliance.http.app_keys import TIMEKEEPER, TSA, WORKERS, tsa_tally
from drivers.monotonic import NS_PER_S
from drivers.sample import SourceKind

log = logging.getLogger(__name__)


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
            "offset_s": seconds(s.offset_ns),
            "bound_s": seconds(s.bound_ns),
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
        "bound_s": seconds(assessment.bound_ns),
        "frequency_ppm": assessment.frequency_ppm,
        "skew_ppm": assessment.skew_ppm,
        "sources": sources,
    }


def _kind_of(name: str) -> str:
    return next((k.value for k in SourceKind if name.startswith(k.value)), "unknown")


def seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / NS_PER_S


def _rfc3339(utc_ns: int | None) -> str | None:
    if utc_ns is None:
        return None
    seconds, frac = divmod(utc_ns, NS_PER_S)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac // 1000:06d}Z"


async def health(request: web.Request) -> web.Response:
    document = health_report(request.app)
    return web.json_response(document, status=200 if document["issuing"] else 503)


def health_report(app: web.Application) -> dict[str, Any]:
    """Everything ``/health`` says now: the clock's document, the TSA workers and counts
    (``/status`` shows the same facts)."""
    timekeeper = app[TIMEKEEPER]
    mono_now, real_now = timekeeper.now_pair()
    assessment = timekeeper.assess(mono_now)
    document = health_document(assessment, mono_now, real_now, timekeeper.driver_notes())
    workers = app.get(WORKERS)
    if workers is not None:
        document["tsa_workers"] = {
            "configured": workers.size,
            "alive": workers.alive(),
            "restarts": workers.restarts,
        }
    if TSA in app:
        tally = tsa_tally(app)
        document["tsa"] = {
            "tokens_granted": tally.granted,
            "requests_refused": sum(tally.refused.values()),
            "issuance_logs_stopped": tally.logs_stopped,
            "slow_commits": tally.log_slow_commits,
        }
        service = app[TSA]
        if service.days_to_expiry is not None:
            from appliance.tsa.credentials import EXPIRY_WARNING_DAYS

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
    return document
