"""The simulated school of the demo: a morning's attendance sent through the vault's HTTP API.

Like python-tuf's repository simulator, it drives the real interface, nothing behind it:
``POST /v1/entries`` with a bearer token and an ``Idempotency-Key``, reading receipts and
problem documents as a school management system would. Two sessions run this morning
(times are built around *now*, so that every signature falls inside its signing window):
a QR roll call, students signing, a late arrival, an absence, the trainer's
counter-signature; a session moved to another room and hour, after which a signature of
the old version is refused; a correction by the secretary; and, during the appliance's
outage, entries the vault accepts unsealed (202) and seals when tokens come back.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ESTABLISHMENT = "CFA-LYON-02"
_BEA = "ABCDEFGHJKLMNPRSTUVWXYZ"


def bea_ine(number: int) -> str:
    """A BEA-form INE: 10 digits and the letter of their value mod 23."""
    return f"{number:010d}{_BEA[number % 23]}"


STUDENTS = (
    {"ine": bea_ine(123456789), "birth_date": "2004-05-17", "name": "Léa Dubois"},
    {"ine": bea_ine(234567891), "birth_date": "2005-02-03", "name": "Hugo Lefèvre"},
    {"ine": bea_ine(345678912), "birth_date": "2003-11-21", "name": "Inès Haddad"},
    {"ine": "123456789AB", "birth_date": "2004-09-30", "name": "Tom Girard"},  # RNIE form
)
TEACHERS = ({"id": "T-07", "name": "Claire Martin"}, {"id": "T-12", "name": "Karim Benali"})


@dataclass
class School:
    """Sends the morning; ``say`` narrates, ``openssl_ca`` checks each token received."""

    http: Any  # aiohttp.ClientSession
    url: str  # the vault, e.g. http://127.0.0.1:3190
    token: str
    say: Callable[[str], None]
    openssl_ca: Path
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now().astimezone())
    receipts: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def session(
        self, sid: str, *, version: int = 1, start_min: int, hours: float, place: str, title: str
    ) -> dict[str, Any]:
        start = (self.now + dt.timedelta(minutes=start_min)).replace(microsecond=0)
        return {
            "id": sid,
            "version": version,
            "training_action": "BTS SIO 2026-2028",
            "title": title,
            "start": start.isoformat(),
            "end": (start + dt.timedelta(hours=hours)).isoformat(),
            "place": place,
        }

    def entry(
        self,
        kind: str,
        session: dict[str, Any],
        teacher: dict[str, str],
        *,
        student: dict[str, str] | None = None,
        ago_s: float = 0,
        **extra: Any,
    ) -> dict[str, Any]:
        e: dict[str, Any] = {
            "establishment": ESTABLISHMENT,
            "kind": kind,
            "session": session,
            "teacher": teacher,
            "occurred_at": (dt.datetime.now().astimezone() - dt.timedelta(seconds=ago_s)).isoformat(
                timespec="seconds"
            ),
        }
        if student is not None:
            e["student"] = student
        e.update(extra)
        return e

    async def send(self, what: str, body: dict[str, Any]) -> dict[str, Any] | None:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Idempotency-Key": str(uuid.uuid4()),
            "Content-Type": "application/json",
        }
        async with self.http.post(
            f"{self.url}/v1/entries", data=json.dumps(body), headers=headers
        ) as resp:
            doc = await resp.json(content_type=None)
        if resp.status in (201, 202):
            self.receipts.append(doc)
            if doc["sealed"]:
                verdict = openssl_verify(
                    self.openssl_ca, doc["leaf_hash"], base64.b64decode(doc["token"])
                )
                self.say(
                    f"  entry {doc['index']}: {what} — 201 sealed, genTime {doc['gen_time']}; "
                    f"openssl ts -verify: {verdict}"
                )
            else:
                self.say(
                    f"  entry {doc['index']}: {what} — 202 accepted, durable, NOT sealed yet "
                    "(the TSA refuses)"
                )
            return dict(doc)
        self.refused.append(doc.get("type", ""))
        self.say(
            f"  refused ({resp.status} {doc.get('type', '').rsplit(':', 1)[-1]}): {what} — "
            f"{doc.get('detail')}"
        )
        return None

    async def morning(self) -> None:
        claire, karim = TEACHERS
        lea, hugo, ines, tom = STUDENTS
        maths = self.session(
            "S-MATH-0412", start_min=-20, hours=3, place="B12", title="Mathématiques"
        )
        self.say(
            f"school: {ESTABLISHMENT} sends the morning to the vault "
            f"({maths['title']} {maths['start'][11:16]}, Réseaux)"
        )
        await self.send(
            "Claire Martin opens the roll call by QR code",
            self.entry(
                "roll_call_opened",
                maths,
                claire,
                ago_s=600,
                capture={"method": "qr", "device": "tablet-B12"},
            ),
        )
        for s, ago in ((lea, 560), (hugo, 540)):
            await self.send(
                f"{s['name']} signs (QR)",
                self.entry(
                    "student_signed", maths, claire, student=s, ago_s=ago, capture={"method": "qr"}
                ),
            )
        absent = await self.send(
            f"{tom['name']} marked absent",
            self.entry("absent", maths, claire, student=tom, ago_s=500),
        )
        await self.send(
            f"{ines['name']} arrives 12 minutes late",
            self.entry("late", maths, claire, student=ines, ago_s=300, minutes=12),
        )
        await self.send(
            f"{ines['name']} signs",
            self.entry(
                "student_signed", maths, claire, student=ines, ago_s=290, capture={"method": "qr"}
            ),
        )
        await self.send(
            "Claire Martin counter-signs",
            self.entry("teacher_signed", maths, claire, ago_s=10, capture={"method": "tablet"}),
        )
        if absent is not None:
            await self.send(
                f"the secretary corrects entry {absent['index']}: {tom['name']} was there",
                self.entry(
                    "correction",
                    maths,
                    claire,
                    corrects=absent["index"],
                    reason="présent, badge oublié ; vérifié par la formatrice",
                    author={"id": "SEC-1", "name": "Nadia Roux"},
                ),
            )
        net = self.session("S-NET-0413", start_min=-10, hours=3, place="C04", title="Réseaux")
        await self.send(
            "Karim Benali opens Réseaux in C04",
            self.entry("roll_call_opened", net, karim, ago_s=120, capture={"method": "qr"}),
        )
        moved = self.session(
            "S-NET-0413", version=2, start_min=-5, hours=3, place="Labo 2", title="Réseaux"
        )
        await self.send(
            "Réseaux moves to Labo 2 (version 2)",
            self.entry("session_moved", moved, karim, ago_s=60),
        )
        await self.send(
            f"{hugo['name']} signs on the OLD version (a stale tablet)",
            self.entry("student_signed", net, karim, student=hugo, ago_s=30),
        )
        await self.send(
            f"{hugo['name']} signs on version 2",
            self.entry(
                "student_signed", moved, karim, student=hugo, ago_s=20, capture={"method": "qr"}
            ),
        )
        self.net = moved

    async def during_outage(self) -> None:
        karim = TEACHERS[1]
        lea = STUDENTS[0]
        await self.send(
            f"{lea['name']} signs Réseaux during the outage",
            self.entry("student_signed", self.net, karim, student=lea, capture={"method": "qr"}),
        )
        await self.send(
            "Karim Benali counter-signs during the outage",
            self.entry("teacher_signed", self.net, karim, capture={"method": "tablet"}),
        )

    async def pending(self) -> list[int]:
        """Indices of the receipts still unsealed, as the vault answers now."""
        out = []
        for r in self.receipts:
            async with self.http.get(
                f"{self.url}/v1/entries/{r['index']}",
                headers={"Authorization": f"Bearer {self.token}"},
            ) as resp:
                doc = await resp.json()
            if not doc["sealed"]:
                out.append(r["index"])
        return out


def openssl_verify(ca: Path, leaf_hash_hex: str, reply_der: bytes) -> str:
    """``openssl ts -verify -digest <leaf hash>``: the token is over the entry's leaf hash."""
    if shutil.which("openssl") is None:
        return "openssl not installed"
    with tempfile.TemporaryDirectory() as tmp:
        r = Path(tmp) / "reply.tsr"
        r.write_bytes(reply_der)
        done = subprocess.run(
            [
                "openssl",
                "ts",
                "-verify",
                "-digest",
                leaf_hash_hex,
                "-in",
                str(r),
                "-CAfile",
                str(ca),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    return "OK" if "Verification: OK" in done.stdout else f"FAILED {done.stderr.strip()[-120:]}"
