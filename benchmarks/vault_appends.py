"""Sealed appends per second end to end, beside the appliance's own tokens/s, same run.

    python benchmarks/vault_appends.py [--seconds 10] [--rounds 2] [--connections 16]
                                       [--workers 0] [--batch 100] [--proof-size 1000000]

Starts ``horodate appliance --simulate`` and ``horodate vault`` sealing with it, both on
loopback, as an operator would run them (two processes on the same 2 cores). Each round:

1. the appliance alone: ``wrk`` POSTing RFC 3161 requests to ``/tsa`` (its tokens/s: the
   ceiling, since every entry of the vault costs one token);
2. single entries: ``wrk`` POSTing one entry a request to ``/v1/entries`` over
   ``--connections``, each with an Idempotency-Key of its own; sealed entries/s (201
   receipts: token in hand and durable), the accepted-but-unsealed ones (202), p50/p99;
3. batches of ``--batch`` entries, likewise.

Each vault figure is printed with its ratio to the appliance's tokens/s measured just
before it (these machines drift by a quarter from one minute to the next). Then: the
vault's memory before and after the load, the backlog draining, ``horodate vault verify``
over everything appended (entries/s), and inclusion and consistency proofs at
``--proof-size`` entries read from a vault store's node table (µs each), beside the same
proofs from an in-memory tree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tsa_http import (  # noqa: E402  (the helpers of the appliance's HTTP benchmark)
    free_port,
    metric,
    rss_kib,
    run_wrk,
    start_appliance,
    start_horodate,
    stop,
    wait_until,
)

ESTABLISHMENT = "CFA-BENCH"
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def horodate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "horodate", *args], capture_output=True, text=True, check=True
    )


def start_vault(data_dir: Path, tsa_url: str, ca: Path) -> tuple[subprocess.Popen[bytes], str]:
    args = ["vault", "--data-dir", str(data_dir), "--tsa", tsa_url, "--tsa-ca", str(ca)]
    return start_horodate(args, free_port(), "vault", 60)


def entry(student: int) -> dict[str, object]:
    """A student's signature for a session running now (inside its signing window)."""
    paris = dt.timezone(dt.timedelta(hours=1))
    now = dt.datetime.now(paris).replace(microsecond=0)
    start = now.replace(minute=0, second=0) - dt.timedelta(hours=1)
    return {
        "establishment": ESTABLISHMENT,
        "kind": "student_signed",
        "session": {
            "id": "S-BENCH",
            "version": 1,
            "training_action": "BTS SIO",
            "start": start.isoformat(),
            "end": (start + dt.timedelta(hours=4)).isoformat(),
        },
        "teacher": {"id": "T-01", "name": "Claire Martin"},
        "student": {"ine": "0123456789M", "birth_date": "2004-05-17", "name": f"Élève {student}"},
        "occurred_at": now.isoformat(),
        "capture": {"method": "qr"},
    }


class VaultRun(NamedTuple):
    requests_s: float
    sealed: int
    pending: int
    other: int
    first_other: int
    p50_ms: float
    p99_ms: float


def run_vault_wrk(
    url: str, body: Path, token: str, entries: int, seconds: int, connections: int, run: str
) -> VaultRun:
    done = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "vault_post.lua"),
            f"{url}/v1/entries",
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "BODY_FILE": str(body),
            "VAULT_TOKEN": token,
            "ENTRIES": str(entries),
            "RUN_ID": run,
        },
        timeout=seconds + 60,
    )
    if done.returncode != 0:
        raise SystemExit(f"wrk failed: {done.stderr}")
    counts = re.search(r"sealed=(\d+) pending=(\d+) other=(\d+) first_other=(\d+)", done.stdout)
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", done.stdout)
    assert counts and rps, done.stdout

    def percentile(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([0-9.]+)(us|ms|s)\s*$", done.stdout, re.M)
        return float(m.group(1)) * _UNIT[m.group(2)] if m else float("nan")

    return VaultRun(
        float(rps.group(1)),
        *(int(g) for g in counts.groups()),  # type: ignore[arg-type]
        percentile("50"),
        percentile("99"),
    )


def report(label: str, run: VaultRun, seconds: int, tokens_s: float) -> float:
    sealed_s = run.sealed / seconds
    if run.sealed + run.pending + run.other == 0:
        print(f"  {label:<17}: no answer within the {seconds} s run (give --seconds more)")
        return 0.0
    refused = f", {run.other} refused (first {run.first_other})" if run.other else ""
    print(
        f"  {label:<17}: {sealed_s:8,.0f} sealed entries/s ({run.pending} accepted unsealed"
        f"{refused}), {run.requests_s:7,.0f} requests/s, p50 {run.p50_ms:.1f} ms, "
        f"p99 {run.p99_ms:.1f} ms; ratio to the appliance {sealed_s / tokens_s:.2f}",
        flush=True,
    )
    return sealed_s


def proofs_at(size: int, tmp: Path) -> None:
    """Inclusion and consistency proofs at ``size`` entries, from a vault store's node table
    (as ``/v1/proofs/…`` reads them) and from an in-memory tree (the algorithm alone)."""
    from daemon import merkle
    from daemon.store import DB_NAME, Store

    started = time.perf_counter()
    tree = merkle.InMemoryTree()
    rows: list[tuple[int, int, bytes]] = []
    for i in range(size):
        rows += tree.append(merkle.leaf_hash(i.to_bytes(8, "big")))
    Store.open(tmp / "proofs").close()  # the vault's schema, its indexes and pragmas
    with sqlite3.connect(tmp / "proofs" / DB_NAME) as db:
        db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", rows)
    print(
        f"proofs: a tree of {size:,} leaves ({len(rows):,} stored nodes) built in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    store = Store.open(tmp / "proofs")
    reader = store.reader()

    def node(level: int, idx: int) -> bytes:
        h = reader.node(level, idx)
        assert h is not None
        return h

    rng = random.Random(1)
    root = tree.root(size)
    samples = [(rng.randrange(size), rng.randrange(1, size)) for _ in range(2000)]
    for name, lookup in (("store", node), ("memory", tree.node)):
        t0 = time.perf_counter()
        for index, _ in samples:
            proof = merkle.inclusion_proof(index, size, lookup)
        inclusion_us = (time.perf_counter() - t0) / len(samples) * 1e6
        t0 = time.perf_counter()
        for _, first in samples:
            merkle.consistency_proof(first, size, lookup)
        consistency_us = (time.perf_counter() - t0) / len(samples) * 1e6
        print(
            f"  from the {name:<6}: inclusion {inclusion_us:6.1f} µs, consistency "
            f"{consistency_us:6.1f} µs each (target < 1,000 µs)"
        )
    index = samples[-1][0]
    proof = merkle.inclusion_proof(index, size, node)
    merkle.verify_inclusion(index, size, merkle.leaf_hash(index.to_bytes(8, "big")), proof, root)
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="the appliance's --workers")
    parser.add_argument("--batch", type=int, default=100, help="entries a batch (default 100)")
    parser.add_argument("--proof-size", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, help="where the data goes (default: temporary)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("benchmark: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="horodate-bench-", dir=args.data_dir) as tmp:
        root = Path(tmp)
        tsq, data = root / "q.tsq", root / "data.txt"
        data.write_bytes(b"benchmark record\n")
        subprocess.run(
            ["openssl", "ts", "-query", "-data", data, "-sha256", "-cert", "-out", tsq],
            check=True,
            capture_output=True,
        )
        single, batch = root / "entry.json", root / "batch.json"
        single.write_text(json.dumps(entry(0)))
        batch.write_text(json.dumps({"entries": [entry(i) for i in range(args.batch)]}))
        appliance, tsa = start_appliance(root / "appliance", args.workers)
        vault_dir = root / "vault"
        try:
            token = horodate(
                "vault", "keys", "create", "--data-dir", str(vault_dir),
                "--role", "establishment", "--establishment", ESTABLISHMENT,
            ).stdout.strip().splitlines()[-1]  # fmt: skip
            ca = root / "appliance" / "keys" / "ca.pem"
            vault, base = start_vault(vault_dir, f"{tsa}/tsa", ca)
            try:
                run_vault_wrk(base, single, token, 1, 2, args.connections, "warm")
                rss_before = rss_kib(vault.pid)
                singles, batches, p99s = [], [], []
                for i in range(1, args.rounds + 1):
                    tokens = run_wrk(f"{tsa}/tsa", tsq, args.seconds, args.connections)
                    print(
                        f"round {i}: the appliance alone {tokens.rps:8,.0f} tokens/s "
                        f"(granted {tokens.granted}, other {tokens.other})",
                        flush=True,
                    )
                    run = run_vault_wrk(
                        base, single, token, 1, args.seconds, args.connections, f"s{i}"
                    )
                    singles.append(report("single entries", run, args.seconds, tokens.rps))
                    p99s.append(run.p99_ms)
                    run = run_vault_wrk(
                        base, batch, token, args.batch, args.seconds, args.connections, f"b{i}"
                    )
                    batches.append(
                        report(f"batches of {args.batch}", run, args.seconds, tokens.rps)
                    )
                rss_after = rss_kib(vault.pid)
                print(
                    f"vault: {statistics.median(singles):,.0f} sealed entries/s single "
                    f"(median; p99 {max(p99s):.1f} ms worst), "
                    f"{statistics.median(batches):,.0f} in batches of {args.batch}; target "
                    f"2,000/s single with p99 < 50 ms: "
                    f"{'met' if min(singles) >= 2000 and max(p99s) < 50 else 'NOT met'}"
                )
                print(
                    f"  RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB "
                    f"after {args.rounds * 2 * args.seconds} s of load"
                )
                started = time.monotonic()
                wait_until(
                    lambda: metric(f"{base}/metrics", "horodate_vault_seals_pending") == 0,
                    300,
                    "the backlog sealed",
                )
                print(f"  backlog sealed {time.monotonic() - started:.1f} s after the load")
            finally:
                stop(vault)
        finally:
            stop(appliance)
        verify = subprocess.run(
            [
                sys.executable,
                "-m",
                "horodate",
                "vault",
                "verify",
                "--data-dir",
                str(vault_dir),
                "--tsa-ca",
                str(root / "appliance" / "keys" / "ca.pem"),
            ],
            capture_output=True,
            text=True,
        )
        print(verify.stdout.strip().splitlines()[-1] if verify.stdout.strip() else "")
        if verify.returncode != 0:
            print(verify.stderr, file=sys.stderr)
            return 1
        proofs_at(args.proof_size, root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
