"""What RPO 0 costs: commits on a PostgreSQL primary waiting for its synchronous standby,
beside the same commits not waiting (``synchronous_commit = local``), in the same run.

    python benchmarks/pg_sync_commit.py [--commits 2000] [--clients 1,16]

Makes a primary and a standby on loopback with ``deploy/postgresql/replication.sh`` (as
the ``postgres`` user; run as root, PostgreSQL installed), then, for each client count,
times single-row INSERT commits: per commit latency p50/p99 and commits/s, with the
standby's flush in the path and without. On loopback the difference is the standby's own
fsync and a round trip; between two sites, add the inter-site round trip to every commit.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "postgresql" / "replication.sh"
PASSWORD = "benchmark"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path:
    return sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1].parent


def script(*args: str) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"replication.sh {args[0]}: {done.stderr.strip()}")


def run(conninfo: str, mode: str, commits: int, clients: int) -> tuple[float, float, float]:
    """Commits/s, p50 and p99 (ms) of ``commits`` single-row commits over ``clients``."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with psycopg.connect(conninfo, autocommit=True) as db:
            db.execute(f"SET synchronous_commit = {mode}")
            mine = []
            for i in range(commits // clients):
                t0 = time.perf_counter()
                db.execute("INSERT INTO bench VALUES (%s, %s)", (n, i))
                mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(latencies) / elapsed, statistics.median(latencies) * 1e3, p99 * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--clients", default="1,16", help="client counts, comma-separated")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="horodate-pg-bench-"))
    root.chmod(0o755)
    shutil.chown(root, "postgres", "postgres")
    secret = root / "password"
    secret.write_text(PASSWORD + "\n")
    primary, standby = root / "primary", root / "standby"
    port_a, port_b = free_port(), free_port()
    try:
        script("primary", "--pgdata", str(primary), "--port", str(port_a),
               "--standby-name", "site_b", "--password-file", str(secret))  # fmt: skip
        grant = (
            "SET synchronous_commit = local;"
            f"CREATE ROLE bench LOGIN PASSWORD '{PASSWORD}';"
            "GRANT CREATE ON SCHEMA public TO bench; GRANT pg_monitor TO bench"
        )
        psql = [str(pg_bin() / "psql"), "-h", str(primary), "-p", str(port_a), "-qAt", "-c", grant]
        subprocess.run(["runuser", "-u", "postgres", "--", *psql], check=True, capture_output=True)
        script("standby", "--pgdata", str(standby), "--port", str(port_b), "--name", "site_b",
               "--primary-host", "127.0.0.1", "--primary-port", str(port_a),
               "--password-file", str(secret))  # fmt: skip
        conninfo = f"host=127.0.0.1 port={port_a} user=bench password={PASSWORD} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as db:
            db.execute("CREATE TABLE bench (client int, n int)")
            deadline = time.monotonic() + 30
            while db.execute(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'"
            ).fetchone() != (1,):
                if time.monotonic() > deadline:
                    raise SystemExit("the standby did not start streaming")
                time.sleep(0.1)
        for clients in (int(c) for c in args.clients.split(",")):
            local = run(conninfo, "local", args.commits, clients)
            synced = run(conninfo, "on", args.commits, clients)
            for label, (rate, p50, p99) in (("local (RPO > 0)", local), ("on (RPO 0)", synced)):
                print(
                    f"{clients:>3} clients, synchronous_commit {label:<16}: {rate:8,.0f} "
                    f"commits/s, p50 {p50:6.2f} ms, p99 {p99:6.2f} ms"
                )
            print(
                f"    RPO 0 costs ×{local[0] / synced[0]:.2f} in commits/s, "
                f"+{synced[1] - local[1]:.2f} ms at p50 (loopback: the standby's fsync)",
                flush=True,
            )
    finally:
        for d in (standby, primary):
            if (d / "postmaster.pid").exists():
                subprocess.run(
                    ["runuser", "-u", "postgres", "--", str(pg_bin() / "pg_ctl"), "-D", str(d),
                     "-m", "immediate", "-w", "stop"],
                    capture_output=True,
                )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
