"""``GET /status``: the vault's health as a page a technician reads at a glance.

A banner — green OK, amber DEGRADED (seals waiting, a checkpoint late), red REFUSING (the
disk is full: appends refused) — then the facts: entries, pending seals and the oldest's
age, the latest checkpoint and its age, the TSA, the witnesses, the replication. Counts
and ages only: no entry, no establishment, nothing personal. Not journaled, like
``/health`` (a probe, polled).

One HTML document, everything inline (no script, nothing fetched), refreshing itself every
``REFRESH_S`` seconds, every value escaped; English, as the appliance's ``/status`` and the
operators' texts are. Its look is the appliance's (``appliance.http.status_page``), written
again here: the vault may import nothing of the appliance (DESIGN.md, layout).
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any, Final

from aiohttp import web

from daemon.vault import Vault

REFRESH_S: Final = 10

# The store's replication state (Store.replication), in words: SQLite is one file on one
# host; PostgreSQL with synchronous streaming replication is the multi-site deployment
# (docs/multisite.md).
REPLICATION_WORDS: Final = {
    "single_site": ("single site (SQLite)", ""),
    "synchronous": ("synchronous standby: every commit on both sites", "good"),
    "degraded": ("DEGRADED: no standby answers; appends wait", "bad"),
}

# A checkpoint older than this many checkpoint intervals (and a minute) is late.
CHECKPOINT_LATE_INTERVALS: Final = 10

# Nothing may be fetched; inline style only.
CSP: Final = "default-src 'none'; style-src 'unsafe-inline'"

StatusOf = Callable[[Vault], dict[str, Any]]
PAGE: Final = web.AppKey("status_page", tuple[Vault, StatusOf])


def add_status_page(app: web.Application, vault: Vault, status_of: StatusOf) -> None:
    """``GET /status`` on ``app``; ``status_of(vault)`` is ``/health``'s document."""
    app[PAGE] = (vault, status_of)
    app.router.add_get("/status", status_page)


async def status_page(request: web.Request) -> web.Response:
    vault, status_of = request.app[PAGE]
    return web.Response(
        text=render_page(status_of(vault), vault),
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP},
    )


def verdict(status: dict[str, Any], checkpoint_late_s: float) -> tuple[str, list[str]]:
    """``ok``, ``degraded`` or ``refusing``, and why, in plain words."""
    why = []
    if status.get("disk_full"):
        why.append("the disk is full: new entries are refused (507)")
    pending = status.get("pending") or 0
    if pending:
        why.append(
            f"{pending:,} entr{'y' if pending == 1 else 'ies'} waiting for a seal, the oldest "
            f"for {_age(status.get('oldest_pending_age_s'))}"
        )
    age = status.get("checkpoint_age_s")
    if age is None:
        why.append("no checkpoint yet")
    elif age > checkpoint_late_s:
        why.append(f"the latest checkpoint is {_age(age)} old")
    failing = [
        str(w.get("name")) for w in status.get("witnesses") or () if w.get("state") == "failing"
    ]
    if failing:
        why.append(f"witness {', '.join(failing)} failing")
    if status.get("disk_full"):
        return "refusing", why
    return ("degraded" if why else "ok"), why


def render_page(status: dict[str, Any], vault: Vault) -> str:
    config = vault.config
    late_s = CHECKPOINT_LATE_INTERVALS * config.checkpoint_interval_s + 60
    word, why = verdict(status, late_s)
    headline = "; ".join(why) or "appending, sealing and checkpointing"
    sealing = vault.sealing
    size = status.get("checkpoint_size")
    stamped = status.get("checkpoint_time_stamped")
    rows: list[tuple[str, str, str]] = [
        ("Vault", str(status.get("name") or config.name), ""),
        ("Entries", f"{status.get('entries') or 0:,}", ""),
        (
            "Pending seals",
            f"{status.get('pending') or 0:,}"
            + (
                f", the oldest for {_age(status.get('oldest_pending_age_s'))}"
                if status.get("pending")
                else ""
            ),
            "warn" if status.get("pending") else "good",
        ),
        (
            "Sealed",
            f"{sealing.sealed_inline:,} with the append, {sealing.sealed_later:,} later; "
            f"{sealing.tsa_failures:,} TSA call(s) without a token",
            "",
        ),
        (
            "Checkpoint",
            "none yet"
            if size is None
            else f"tree size {size:,}, {_age(status.get('checkpoint_age_s'))} old, "
            + ("time-stamped" if stamped else "not time-stamped yet"),
            "warn" if size is None or (status.get("checkpoint_age_s") or 0) > late_s else "good",
        ),
        ("TSA", ", ".join(str(u) for u in status.get("tsa") or ()) or "none", ""),
    ]
    if status.get("tsa_last_failure"):
        rows.append(("TSA last failure", str(status["tsa_last_failure"]), "warn"))
    rows += [
        *_witnesses(status, config),
        ("Replication", *REPLICATION_WORDS[str(status.get("replication", "single_site"))]),
        (
            "Disk",
            "FULL: appends refused" if status.get("disk_full") else "room to append",
            "bad" if status.get("disk_full") else "good",
        ),
    ]
    cells = "".join(
        f'<tr><th>{escape(label)}</th><td class="{tone}" data-fact="{escape(label.lower())}">'
        f"{escape(text)}</td></tr>"
        for label, text, tone in rows
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Horodate vault {escape(word.upper())}</title><style>{STYLE}</style></head>"
        f'<body class="{word}"><header class="banner {word}" data-verdict="{word}">'
        f'<div class="verdict">{escape(word.upper())}</div>'
        f'<div class="headline">{escape(headline)}</div></header>'
        f'<main><table class="facts">{cells}</table></main>'
        f"<footer>Refreshes every {REFRESH_S} s. The same facts: "
        '<a href="health">/health</a> (JSON), <a href="metrics">/metrics</a>.</footer>'
        "</body></html>\n"
    )


def _witnesses(status: dict[str, Any], config: Any) -> list[tuple[str, str, str]]:
    """One row per witness: ``/health``'s ``witnesses`` (each one's state) where the vault
    follows some, else those the configuration names, else none."""
    followed = status.get("witnesses")
    if followed:
        rows = []
        for w in followed:
            state = str(w.get("state") or "?")
            size = w.get("cosigned_size")
            text = state + (
                f", cosigned tree size {size:,} {_age(w.get('cosigned_age_s'))} ago"
                if size is not None
                else ", nothing cosigned yet"
            )
            if w.get("last_failure"):
                text += f"; last failure: {w['last_failure']}"
            tone = "good" if state == "ok" else "bad" if state == "failing" else "warn"
            rows.append((f"Witness {w.get('name') or '?'}", text, tone))
        witnessed = status.get("checkpoint_witnessed")
        if witnessed:
            met = bool(witnessed.get("meets_policy"))
            rows.append(
                (
                    "Latest checkpoint witnessed",
                    f"by {len(witnessed.get('cosigned_by') or ())} of "
                    f"{witnessed.get('witnesses') or len(followed)}, quorum "
                    f"{witnessed.get('quorum')}: " + ("met" if met else "NOT met"),
                    "good" if met else "warn",
                )
            )
        return rows
    witnessing = getattr(config, "witnessing", None)
    configured = getattr(witnessing, "witnesses", None) or getattr(config, "witnesses", None) or ()
    names = [str(getattr(w, "name", w)) for w in configured]
    return [("Witnesses", ", ".join(names) + " (configured)" if names else "none configured", "")]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


STYLE: Final = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 "DejaVu Sans",system-ui,sans-serif;color:#1b1b1b;background:#f4f4f1}
.banner{display:flex;align-items:baseline;gap:24px;padding:18px 28px;color:#fff}
.banner.ok{background:#1e7b34}.banner.degraded{background:#c77800}
.banner.refusing{background:#b3261e}
.verdict{font-size:44px;font-weight:bold;letter-spacing:2px}
.headline{font-size:19px}
main{padding:12px 28px}
table{border-collapse:collapse;background:#fff}
table.facts th{text-align:left;padding:5px 16px 5px 10px;color:#555;font-weight:normal}
table.facts td{padding:5px 10px;font-weight:bold;border-top:1px solid #e4e4df}
td.good{color:#1e7b34}td.warn{color:#9a5d00}td.bad{color:#b3261e}
footer{padding:10px 28px 24px;color:#555;font-size:13px}
"""
