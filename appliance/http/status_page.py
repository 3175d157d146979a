"""``GET /status``: the clock's health as a page a technician reads at a glance.

A banner — green ISSUING, amber HOLDOVER, red REFUSING — then the facts ``horodate status``
prints (they come from the same ``/health`` document, worded by
:mod:`appliance.http.readout`), then the plots of the last hour and the last day
(:mod:`appliance.http.svg_plot`). One HTML document, everything inline: no script, no
stylesheet, font or image fetched from anywhere; it refreshes itself every
``REFRESH_S`` seconds (``<meta http-equiv="refresh">``). Every value is escaped. English,
as ``horodate status`` and the rest of the operators' texts are (the auditors' documents
are the French ones).

The plots' history (:class:`~appliance.clock.history.ClockHistory`) is recorded by this
application's own timer, every ``hour_step_s``, from the ensemble's assessment (a pure
read of the clock): reading the page records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from html import escape
from typing import Any, Final

from aiohttp import web

from appliance.clock.history import ClockHistory, Verdict, source_names
from appliance.http import readout, svg_plot
from appliance.http.app_keys import TIMEKEEPER
from appliance.http.health import health_report

REFRESH_S: Final = 10

HISTORY: Final = web.AppKey("clock_history", ClockHistory)


def add_status_page(app: web.Application, history: ClockHistory | None = None) -> None:
    """``GET /status`` on ``app``, and the timer that records the plots' history."""
    app[HISTORY] = history or ClockHistory()
    app.cleanup_ctx.append(_recording)
    app.router.add_get("/status", status_page)


async def _recording(app: web.Application) -> AsyncIterator[None]:
    history, timekeeper = app[HISTORY], app[TIMEKEEPER]

    async def record() -> None:
        while True:
            history.record(timekeeper.ensemble.assess(timekeeper.now_ns()))
            await asyncio.sleep(history.limits.hour_step_s)

    task = asyncio.get_running_loop().create_task(record(), name="status-history")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def status_page(request: web.Request) -> web.Response:
    app = request.app
    document = health_report(app)
    timekeeper = app[TIMEKEEPER]
    page = render_page(
        document,
        app[HISTORY],
        now_ns=timekeeper.now_ns(),
        max_error_s=timekeeper.policy.max_error_s,
    )
    return web.Response(
        text=page,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP},
    )


# Nothing may be fetched; inline style only.
CSP: Final = "default-src 'none'; style-src 'unsafe-inline'"


def render_page(
    document: dict[str, Any], history: ClockHistory, *, now_ns: int, max_error_s: float
) -> str:
    """The whole page for one ``/health`` document and the history up to ``now_ns``."""
    verdict = Verdict.of(str(document.get("state", "")), bool(document.get("issuing")))
    state = str(document.get("state") or "?")
    why = str(document.get("reason") or "")
    why_words = why.removeprefix(f"{state}: ")  # "clock alarm — alarm: …" says it twice
    headline = f"clock {state}" + (f" — {why_words}" if why else "")
    # One colour per source, the same in the table and on the plots.
    names = source_names([*history.day(now_ns), *history.hour(now_ns)])
    names += [n for s in document.get("sources") or [] if (n := str(s.get("name"))) not in names]
    body = [
        f'<header class="banner {verdict.value}" data-verdict="{verdict.value}">'
        f'<div class="verdict">{escape(verdict.value.upper())}</div>'
        f'<div class="headline">{escape(headline)}</div></header>',
        '<main><section class="facts">',
        _facts(document),
        "</section>",
        '<section class="sources"><h2>Sources</h2>',
        _sources(document.get("sources") or [], names),
        "</section>",
        _plots(history, names, now_ns, max_error_s),
        "</main>",
        f"<footer>Refreshes every {REFRESH_S} s. The same facts: <code>horodate status</code>, "
        '<a href="health">/health</a> (JSON), <a href="metrics">/metrics</a>. Plot times '
        "are counted on the appliance's raw monotonic clock, before now.</footer>",
    ]
    title = f"Horodate {verdict.value.upper()} — clock {state}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f'<body class="{verdict.value}">' + "".join(body) + "</body></html>\n"
    )


def _facts(doc: dict[str, Any]) -> str:
    """The lines of ``horodate status``, as a table."""
    rows: list[tuple[str, str, str]] = [
        ("Clock state", str(doc.get("state") or "?"), str(doc.get("state") or "")),
    ]
    if doc.get("reason"):
        rows.append(("Why", str(doc["reason"]), "refused" if not doc.get("issuing") else ""))
    rows.append(("UTC", f"{doc.get('utc') or '—'}  {readout.bound(doc.get('bound_s'))}", ""))
    rows.append(("Bound", readout.bound(doc.get("bound_s")), ""))
    offset = doc.get("offset_s")
    rows.append(
        ("Host clock", "—" if offset is None else f"{readout.duration(offset)} from UTC", "")
    )
    if doc.get("frequency_ppm") is not None:
        skew = doc.get("skew_ppm")
        rows.append(
            (
                "Crystal",
                f"{doc['frequency_ppm']:+.3f} ppm" + (f" ± {skew:.3f} ppm" if skew else ""),
                "",
            )
        )
    workers = doc.get("tsa_workers")
    if workers:
        alive, configured = workers.get("alive"), workers.get("configured")
        restarts = workers.get("restarts") or 0
        rows.append(
            (
                "TSA workers",
                f"{alive}/{configured} running" + (f", {restarts} restarted" if restarts else ""),
                "selected" if alive == configured else "alarm",
            )
        )
    tsa = doc.get("tsa")
    if tsa:
        stopped = tsa.get("issuance_logs_stopped") or 0
        slow = tsa.get("slow_commits") or 0
        text = (
            f"{readout.plural(tsa.get('tokens_granted') or 0, 'token')} issued, "
            f"{tsa.get('requests_refused') or 0:,} refused"
            + (f"; {stopped} issuance log(s) STOPPED" if stopped else "")
            + (f"; {readout.plural(slow, 'slow issuance-log commit')} (≥ 100 ms)" if slow else "")
        )
        rows.append(("Tokens", text, "alarm" if stopped else "slow" if slow else "selected"))
        days = tsa.get("certificate_days_left")
        if days is not None:
            expiring = bool(tsa.get("certificate_expiring"))
            if days <= 0:
                text, word = f"EXPIRED {-days:,.1f} days ago: no tokens", "alarm"
            else:
                text = f"expires in {days:,.1f} days" + ("; renew it" if expiring else "")
                word = "expiring" if expiring else "selected"
            rows.append(("TSA certificate", text, word))
    cells = "".join(
        f"<tr><th>{escape(label)}</th>"
        f'<td{_tone_class(word)} data-fact="{escape(label.lower())}">{escape(text)}</td></tr>'
        for label, text, word in rows
    )
    return f'<table class="facts">{cells}</table>'


def _sources(sources: list[dict[str, Any]], names: list[str]) -> str:
    if not sources:
        return '<p class="none">No sources configured.</p>'
    head = (
        "<tr><th>Source</th><th>Status</th><th class=num>Offset</th><th class=num>Bound</th>"
        "<th class=num>Age</th><th>Reason</th></tr>"
    )
    rows = []
    for s in sources:
        status = str(s.get("status") or "?")
        reason = "; ".join(str(part) for part in (s.get("reason"), s.get("driver")) if part)
        swatch = svg_plot.colour_of(names.index(str(s.get("name"))))
        rows.append(
            f'<tr><td><span class=swatch style="background:{swatch}"></span>'
            f"{escape(str(s.get('name') or '?'))}</td>"
            f'<td><span class="pill{_tone_class(status, bare=True)}">{escape(status)}</span></td>'
            f"<td class=num>{escape(readout.duration(s.get('offset_s')))}</td>"
            f"<td class=num>{escape(readout.bound(s.get('bound_s')))}</td>"
            f"<td class=num>{escape(readout.age(s.get('age_s')))}</td>"
            f"<td>{escape(reason)}</td></tr>"
        )
    return f'<table class="sources">{head}{"".join(rows)}</table>'


def _plots(history: ClockHistory, names: list[str], now_ns: int, max_error_s: float) -> str:
    limits = history.limits
    hour, day = history.hour(now_ns), history.day(now_ns)
    hour_w = svg_plot.hour_window(now_ns, limits.hour_step_s)
    day_w = svg_plot.day_window(now_ns, limits.day_bucket_s)
    legend = "".join(
        f'<span class="key"><span class=swatch style="background:{svg_plot.colour_of(i)}">'
        f"</span>{escape(name)}</span>"
        for i, name in enumerate(names)
    )
    legend += (
        '<span class="key"><span class="swatch band"></span>±bound</span>'
        '<span class="key"><span class="swatch strip"></span>state: '
        '<b class="good">issuing</b> <b class="warn">holdover</b> '
        '<b class="bad">refusing</b></span>'
    )
    return (
        '<section class="plots"><h2>History</h2>'
        f'<p class="legend">{legend}</p><div class="charts">'
        + svg_plot.offset_plot(hour, names, hour_w, "Source offsets — last hour")
        + svg_plot.bound_plot(hour, max_error_s, hour_w, "Bound — last hour")
        + svg_plot.offset_plot(day, names, day_w, "Source offsets — last day (worst per 5 min)")
        + svg_plot.bound_plot(day, max_error_s, day_w, "Bound — last day (widest per 5 min)")
        + "</div></section>"
    )


def _tone_class(word: str, *, bare: bool = False) -> str:
    if not word:
        return ""
    name = readout.tone(word).value
    return f" {name}" if bare else f' class="{name}"'


STYLE: Final = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 "DejaVu Sans",system-ui,sans-serif;color:#1b1b1b;background:#f4f4f1}
.banner{display:flex;align-items:baseline;gap:24px;padding:18px 28px;color:#fff}
.banner.issuing{background:#1e7b34}.banner.holdover{background:#c77800}
.banner.refusing{background:#b3261e}
.verdict{font-size:44px;font-weight:bold;letter-spacing:2px}
.headline{font-size:19px}
main{padding:12px 28px}
h2{font-size:17px;margin:18px 0 6px}
table{border-collapse:collapse;background:#fff}
table.facts th{text-align:left;padding:3px 16px 3px 8px;color:#555;font-weight:normal;
white-space:nowrap}
table.facts td{padding:3px 8px;font-weight:bold}
table.sources{width:100%}
table.sources th{text-align:left;background:#e7e7e2;padding:4px 8px}
table.sources td{padding:4px 8px;border-top:1px solid #e4e4df;vertical-align:top}
.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.good,b.good{color:#1e7b34}td.warn,b.warn{color:#9a5d00}td.bad,b.bad{color:#b3261e}
.pill{display:inline-block;padding:0 8px;border-radius:9px;color:#fff;background:#9a5d00}
.pill.good{background:#1e7b34}.pill.bad{background:#b3261e}
.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;border-radius:2px;
vertical-align:-1px}
.swatch.band{background:#c9d6ea}.swatch.strip{background:#888;height:5px}
.legend .key{margin-right:18px;white-space:nowrap}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:10px}
svg.plot{background:#fff;max-width:100%;height:auto}
svg .area{fill:#fff;stroke:#bbb}svg .grid{stroke:#eee}
svg .title{font-size:13px;font-weight:bold;fill:#333}
svg .tick{font-size:11px;fill:#555}svg .empty{font-size:13px;fill:#777}
svg .band{fill:#c9d6ea;stroke:none}
svg .line{fill:none;stroke-width:1.6;stroke-linejoin:round}
svg .limit{stroke:#b3261e;stroke-dasharray:6 4;stroke-width:1.4}
svg .limit-label{font-size:11px;fill:#b3261e}
svg .strip-none{fill:#e4e4df}
footer{padding:10px 28px 24px;color:#555;font-size:13px}
"""
