"""One student's audit trail over a year from a large vault, and its offline verification.

    python benchmarks/audit_trail.py [--entries 1000000] [--data-dir DIR] [--rounds 3]

The target (issue "Audit trails for funders…"): a trail of ≈ 700 entries from a vault of
1 M, in < 2 s including the signed PDF; ``horodate audit verify`` of it in < 2 s.

The vault is built through the vault's own sequencer (leaves, commitments, disclosures,
keyed lookups, tree nodes, session states, deposits and journal, as deposits write them),
not through HTTP: 1 M sealed appends at the vault's HTTP rate would take hours. The
student's 350 half-days (her signature and the trainer's counter-signature: 700 entries)
each get their own token from ``horodate appliance --simulate``; the other entries carry a
copy of one real token — the student's trail never reads their tokens (the controls read
their sessions' entries and the seals' genTime column only), and nothing here runs
``vault verify``. Each half-day has 20 students, and the student's establishment is one of
ten. ``--data-dir`` keeps the vault for the next run (it takes minutes to build).

Printed per round: ``horodate audit create`` (the command, as an operator runs it: start,
checkpoint, scope, proofs, report, PDF signed and time-stamped, zip, journal) and
``horodate audit verify`` wall times; beside them the same trail from a vault holding only
that student's sessions (7,350 entries), built in the same run: the ratio is what the
vault's size costs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tsa_http import start_appliance, stop  # noqa: E402

from daemon.clock import utc_text  # noqa: E402
from daemon.ine import BEA_LETTERS  # noqa: E402
from daemon.journal import JournalRecord  # noqa: E402
from daemon.keys import VaultKeys, load_or_create  # noqa: E402
from daemon.leaf import make_leaf, student_lookup  # noqa: E402
from daemon.records import entry_to_json, parse_entry  # noqa: E402
from daemon.sequencer import Deposit, Prepared, Sequencer, body_hash  # noqa: E402
from daemon.store import SealRow, Store  # noqa: E402
from timestamping.http_client import post_query  # noqa: E402
from timestamping.reply import parse_reply  # noqa: E402
from timestamping.request import build_request, random_nonce  # noqa: E402

PARIS = dt.timezone(dt.timedelta(hours=1))
HOME = "CFA-BENCH-00"  # the student's establishment
STUDENT = {"ine": "0123456789M", "birth_date": "2004-05-17", "name": "Léa Dubois"}
PER_SESSION = 20  # students a half-day
HALF_DAYS = 350  # the student's, over 2026
BUILD_FORMAT = 2


def ine(n: int) -> str:
    digits = f"{n:010d}"
    return digits + BEA_LETTERS[int(digits) % 23]


def session_of(est: str, n: int, start: dt.datetime) -> dict[str, object]:
    return {
        "id": f"{est}-S{n}",
        "version": 1,
        "training_action": "BTS SIO",
        "title": f"Module {n % 12}",
        "start": start.isoformat(),
        "end": (start + dt.timedelta(hours=3)).isoformat(),
        "place": f"Salle {n % 9}",
    }


def half_day_starts(count: int, first: dt.date) -> list[dt.datetime]:
    """``count`` half-days on working days from ``first``, morning then afternoon."""
    out: list[dt.datetime] = []
    day = first
    while len(out) < count:
        if day.weekday() < 5:
            for hour in (9, 14):
                out.append(dt.datetime.combine(day, dt.time(hour), PARIS))
        day += dt.timedelta(days=1)
    return out[:count]


class Builder:
    """Deposits written by the sequencer straight into the store, many a transaction."""

    def __init__(self, store: Store, keys: VaultKeys, tsa: str | None, filler: SealRow) -> None:
        self.store, self.keys, self.tsa, self.filler = store, keys, tsa, filler
        self.seq = Sequencer()
        self.seq.load(store.reader())
        self.pending: list[Deposit] = []
        self.deposits = 0

    def _seal(self, leaf_hash: bytes, real: bool, at: dt.datetime) -> SealRow:
        if not real or self.tsa is None:  # the shared token, its genTime column plausible
            when = utc_text(at + dt.timedelta(seconds=2))
            return SealRow(idx=-1, token=self.filler.token, gen_time=when, sealed_at=when)
        query = build_request(leaf_hash, nonce=random_nonce(), cert_req=True)
        der = post_query(self.tsa, query.der)
        info = parse_reply(der).info
        assert info is not None
        return SealRow(
            idx=-1, token=der, gen_time=utc_text(info.gen_time), sealed_at=utc_text(info.gen_time)
        )

    def half_day(
        self,
        est: str,
        n: int,
        start: dt.datetime,
        students: list[dict[str, str]],
        real: bool,
        teacher: str = "T-07",
    ) -> None:
        session = session_of(est, n, start)
        received = start + dt.timedelta(minutes=20)
        entries: list[dict[str, object]] = []
        for k, student in enumerate(students):
            entries.append(
                {
                    "establishment": est,
                    "kind": "student_signed",
                    "session": session,
                    "teacher": {"id": teacher, "name": f"Formateur {teacher}"},
                    "student": student,
                    "capture": {"method": "qr", "device": "T1"},
                    "occurred_at": (start + dt.timedelta(seconds=30 + 7 * k)).isoformat(),
                }
            )
        entries.append(
            {
                "establishment": est,
                "kind": "teacher_signed",
                "session": session,
                "teacher": {"id": teacher, "name": f"Formateur {teacher}"},
                "occurred_at": (start + dt.timedelta(minutes=12)).isoformat(),
            }
        )
        received_text = utc_text(received)
        prepared = []
        for value in entries:
            e = parse_entry(value, today=received.date(), received_at=received)
            leaf = make_leaf(entry_to_json(e), received_at=received_text)
            lookup = None
            if e.student is not None:
                lookup = student_lookup(
                    self.keys.lookup_secret,
                    est,
                    e.student.ine,
                    e.student.birth_date.isoformat(),
                )
            mine = e.student is None or e.student.ine == STUDENT["ine"]
            seal = self._seal(leaf.hash, real and mine, e.occurred_at)
            prepared.append(Prepared(e, leaf, lookup, seal))
        record = JournalRecord(
            at=received_text,
            actor=f"establishment:{est}",
            role="establishment",
            establishment=est,
            action="POST /v1/entries",
            target=None,
            outcome="ok",
            status=201,
        )
        self.pending.append(
            Deposit(
                tuple(prepared),
                f"establishment:{est}",
                f"k{self.deposits}",
                body_hash({"entries": entries}),
                True,
                received_text,
                record,
            )
        )
        self.deposits += 1
        if len(self.pending) >= 40:
            self.flush()

    def flush(self) -> None:
        with self.store.transaction() as w:
            for d in self.pending:
                self.seq.deposit(d, window_of=lambda _: dt.timedelta(minutes=15))(w)
        self.pending.clear()


def build(root: Path, entries: int, tsa: str, filler: SealRow, only_student: bool) -> Path:
    """A vault of about ``entries`` entries (or only the student's half-days)."""
    data = root / ("small" if only_student else f"vault-{entries}")
    marker = data / "bench.json"
    if marker.exists() and json.loads(marker.read_text()).get("format") == BUILD_FORMAT:
        return data
    shutil.rmtree(data, ignore_errors=True)
    keys = load_or_create(data / "keys", "horodate-bench")
    store = Store.open(data)
    b = Builder(store, keys, tsa, filler)
    started = time.monotonic()
    per = PER_SESSION + 1
    mine = half_day_starts(HALF_DAYS, dt.date(2026, 1, 5))
    pool = [
        {"ine": ine(1000 + i), "birth_date": "2003-03-0" + str(1 + i % 9), "name": f"Stagiaire {i}"}
        for i in range(400)
    ]
    for n, start in enumerate(mine):
        others = [pool[(n * 7 + k) % len(pool)] for k in range(PER_SESSION - 1)]
        b.half_day(HOME, n, start, [STUDENT, *others], real=True)
    b.flush()
    if not only_student:
        filler_sessions = max(0, entries // per - HALF_DAYS)
        starts = half_day_starts(600, dt.date(2025, 9, 1))
        for n in range(filler_sessions):
            est = f"CFA-BENCH-{n % 10:02d}"
            students = [pool[(n * 13 + k) % len(pool)] for k in range(PER_SESSION)]
            b.half_day(
                est,
                10_000 + n,
                starts[n % len(starts)],
                students,
                real=False,
                teacher=f"T-{100 + n % 40}",
            )
            if n % 5000 == 0 and n:
                done = (n + HALF_DAYS) * per
                rate = done / (time.monotonic() - started)
                print(f"  building: {done:,} entries ({rate:,.0f}/s)", file=sys.stderr, flush=True)
        b.flush()
    size = store.reader().size()
    store.close()
    shutil.copy(root / "ca.pem", data / "keys" / "tsa-ca.pem")
    marker.write_text(json.dumps({"format": BUILD_FORMAT, "entries": size}))
    print(
        f"  built {data.name}: {size:,} entries in {time.monotonic() - started:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return data


def timed(*args: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "horodate", *args], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def _create_args(data: Path, out: Path, tsa: str) -> list[str]:
    return [
        "audit",
        "create",
        "--data-dir",
        str(data),
        "--establishment",
        HOME,
        "--ine",
        STUDENT["ine"],
        "--birth-date",
        STUDENT["birth_date"],
        "--from",
        "2026-01-01",
        "--to",
        "2026-12-31",
        "--funder",
        "OPCO Atlas",
        "--tsa",
        tsa,
        "-o",
        str(out),
    ]


def trail(data: Path, out: Path, tsa: str) -> float:
    """The command's wall time, interpreter start and imports included."""
    return timed(*_create_args(data, out, tsa))


def trail_in_process(data: Path, out: Path, tsa: str) -> float:
    """The same trail made in this process, its modules already loaded: what a running
    vault spends on ``POST /v1/audits`` (the checkpoint, scope, proofs, report, signed PDF,
    zip and journal; stdout silenced)."""
    import contextlib
    import io

    from horodate.cli import main as horodate_main

    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        assert horodate_main(_create_args(data, out, tsa)) == 0
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="keep the vaults here (default: temporary)")
    args = parser.parse_args()
    keep = args.data_dir is not None
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="horodate-bench-audit-"))
    root.mkdir(parents=True, exist_ok=True)
    appliance, base = start_appliance(root / "appliance", 0)
    tsa = f"{base}/tsa"
    try:
        shutil.copy(root / "appliance" / "keys" / "ca.pem", root / "ca.pem")
        query = build_request(b"\0" * 32, nonce=random_nonce(), cert_req=True)
        der = post_query(tsa, query.der)
        info = parse_reply(der).info
        assert info is not None
        filler = SealRow(-1, der, utc_text(info.gen_time), utc_text(info.gen_time))
        small = build(root, 0, tsa, filler, only_student=True)
        large = build(root, args.entries, tsa, filler, only_student=False)
        ca = str(root / "ca.pem")
        rows = []
        trail_in_process(small, root / "warm.zip", tsa)  # load the modules once
        for i in range(1, args.rounds + 1):
            t_small = trail_in_process(small, root / "small.zip", tsa)
            t_large = trail_in_process(large, root / "large.zip", tsa)
            c_large = trail(large, root / "large-cli.zip", tsa)
            v_large = timed("audit", "verify", str(root / "large.zip"), "--ca", ca)
            rows.append((t_small, t_large, c_large, v_large))
            print(
                f"round {i}: the trail in {t_large:.2f} s from the large vault, "
                f"{t_small:.2f} s from the student's sessions alone (×{t_large / t_small:.2f}); "
                f"the command {c_large:.2f} s; audit verify {v_large:.2f} s",
                flush=True,
            )
        import zipfile

        with zipfile.ZipFile(root / "large.zip") as z:
            n = sum(1 for name in z.namelist() if name.startswith("entries/"))
            pdf = len(z.read("report.pdf"))
        size = json.loads((large / "bench.json").read_text())["entries"]
        med = [statistics.median(c) for c in zip(*rows, strict=True)]
        print(
            f"median: a {n}-entry trail (report.pdf {pdf / 1024:.0f} KiB) from {size:,} "
            f"entries in {med[1]:.2f} s (target < 2 s; ×{med[1] / med[0]:.2f} the same trail "
            f"from {HALF_DAYS * (PER_SESSION + 1):,} entries); 'horodate audit create' "
            f"{med[2]:.2f} s with the interpreter's start; audit verify {med[3]:.2f} s "
            "(target < 2 s)"
        )
    finally:
        stop(appliance)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
