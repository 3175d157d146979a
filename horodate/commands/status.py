"""``horodate status``: the clock's health for a technician, at a glance."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from appliance.http.readout import Tone, tone
from appliance.http.readout import bound as _bound
from appliance.http.readout import duration as _duration

DEFAULT_URL = "http://127.0.0.1:3180"
MAX_REPLY_BYTES = 1 << 20


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="clock health of a running appliance",
        description="Ask a running appliance for its clock health and print it for a "
        "technician. Exit status: 0 issuing, 1 not issuing, 2 appliance unreachable.",
    )
    p.add_argument("--url", default=DEFAULT_URL, help=f"appliance base URL (default {DEFAULT_URL})")
    p.add_argument("--json", action="store_true", help="print the raw /health JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    p.set_defaults(func=run)


def fetch_health(url: str, timeout_s: float) -> dict[str, Any]:
    """GET ``/health``; a 503 still carries the JSON document."""
    target = url.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as reply:
            body = reply.read(MAX_REPLY_BYTES)
    except urllib.error.HTTPError as e:
        if e.code != 503:
            raise
        body = e.read(MAX_REPLY_BYTES)
    document: dict[str, Any] = json.loads(body)
    return document


def run(args: argparse.Namespace) -> int:
    try:
        document = fetch_health(args.url, args.timeout)
    except (OSError, ValueError) as e:
        print(f"horodate status: cannot read {args.url}/health: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(render(document, color=sys.stdout.isatty()))
    return 0 if document.get("issuing") else 1


def _paint(text: str, word: str, color: bool) -> str:
    if not color:
        return text
    code = {Tone.GOOD: "32", Tone.BAD: "31", Tone.WARN: "33"}[tone(word)]
    return f"\033[{code}m{text}\033[0m"


def render(document: dict[str, Any], *, color: bool = False) -> str:
    state = str(document.get("state", "?"))
    issuing = bool(document.get("issuing"))
    verdict = "ISSUING" if issuing else "NOT ISSUING"
    lines = [
        _paint(f"{verdict:12}", "selected" if issuing else "alarm", color)
        + f" clock {state}"
        + (f" — {document['reason']}" if document.get("reason") else ""),
        f"UTC          {document.get('utc') or '—'}  {_bound(document.get('bound_s'))}",
        f"host clock   {_duration(document.get('offset_s'))} from UTC"
        if document.get("offset_s") is not None
        else "host clock   —",
    ]
    if document.get("frequency_ppm") is not None:
        skew = document.get("skew_ppm")
        lines.append(
            f"crystal      {document['frequency_ppm']:+.3f} ppm"
            + (f" ± {skew:.3f} ppm" if skew is not None else "")
        )
    workers = document.get("tsa_workers")
    if workers:
        alive, configured = workers.get("alive"), workers.get("configured")
        restarts = workers.get("restarts") or 0
        lines.append(
            _paint(f"{'TSA workers':12}", "selected" if alive == configured else "alarm", color)
            + f" {alive}/{configured} running"
            + (f", {restarts} restarted" if restarts else "")
        )
    tsa = document.get("tsa")
    if tsa:
        stopped = tsa.get("issuance_logs_stopped") or 0
        granted = tsa.get("tokens_granted") or 0
        slow = tsa.get("slow_commits") or 0
        lines.append(
            _paint(f"{'TSA':12}", "alarm" if stopped else "slow" if slow else "selected", color)
            + f" {granted:,} token{'' if granted == 1 else 's'} granted,"
            + f" {tsa.get('requests_refused') or 0:,} refused"
            + (f"; {stopped} issuance log(s) STOPPED" if stopped else "")
            + (
                f"; {slow:,} slow issuance-log commit{'' if slow == 1 else 's'} (≥ 100 ms)"
                if slow
                else ""
            )
        )
        days = tsa.get("certificate_days_left")
        if days is not None:
            word = "alarm" if days <= 0 else "expiring" if tsa.get("certificate_expiring") else ""
            lines.append(
                _paint(f"{'TSA cert':12}", word or "selected", color)
                + (
                    f" EXPIRED {-days:,.1f} days ago: no tokens"
                    if days <= 0
                    else f" expires in {days:,.1f} days" + ("; renew it" if word else "")
                )
            )
    sources = document.get("sources") or []
    lines.append("")
    lines.append(f"{'SOURCE':<24} {'STATUS':<14} {'OFFSET':>12} {'BOUND':>12} {'AGE':>7}  REASON")
    for s in sources:
        status = str(s.get("status", "?"))
        age = s.get("age_s")
        lines.append(
            f"{s.get('name', '?')!s:<24} "
            + _paint(f"{status:<14}", status, color)
            + f" {_duration(s.get('offset_s')):>12} {_bound(s.get('bound_s')):>12} "
            + f"{'—' if age is None else f'{age:.0f}s':>7}  "
            + "; ".join(part for part in (s.get("reason"), s.get("driver")) if part)
        )
    if not sources:
        lines.append("(no sources configured)")
    return "\n".join(lines)
