"""Usage per establishment per month, for the hosting operator's usage-based billing.

Counted from the evidence itself (the entries, their seals and the access journal), so the
bill and the vault cannot disagree: entries deposited that month (sealed, and still
pending), reads (every journaled ``GET`` by the establishment or its auditors), audit trails
generated.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from daemon.errors import VaultError
from daemon.store import DB_NAME

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def usage(data_dir: Path, *, month: str | None = None) -> list[dict[str, Any]]:
    """Rows ``{month, establishment, entries_sealed, entries_pending, reads, audits}``."""
    if month is not None and not _MONTH.fullmatch(month):
        raise VaultError(f"--month {month!r}: expected YYYY-MM")
    path = data_dir / DB_NAME
    if not path.exists():
        raise VaultError(f"no vault database in {data_dir}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        table: dict[tuple[str, str], dict[str, Any]] = {}

        def row(m: str, est: str) -> dict[str, Any]:
            return table.setdefault(
                (m, est),
                {
                    "month": m,
                    "establishment": est,
                    "entries_sealed": 0,
                    "entries_pending": 0,
                    "reads": 0,
                    "audits": 0,
                },
            )

        for m, est, sealed, n in conn.execute(
            "SELECT substr(e.received_at, 1, 7), e.establishment, s.idx IS NOT NULL, COUNT(*) "
            "FROM entries e LEFT JOIN seals s ON s.idx = e.idx GROUP BY 1, 2, 3"
        ):
            row(m, est)["entries_sealed" if sealed else "entries_pending"] += n
        for (record,) in conn.execute("SELECT record FROM journal"):
            r = json.loads(record)
            est = r.get("establishment")
            if not est or r.get("outcome") != "ok":
                continue
            action = str(r.get("action", ""))
            if action.startswith("GET /v1/entries"):
                row(r["at"][:7], est)["reads"] += 1
            elif action.startswith("POST /v1/audits") or action == "audit create":
                row(r["at"][:7], est)["audits"] += 1
    except sqlite3.Error as e:
        raise VaultError(f"cannot read {path}: {e}") from e
    finally:
        conn.close()
    rows = sorted(table.values(), key=lambda r: (r["month"], r["establishment"]))
    return [r for r in rows if month is None or r["month"] == month]
