"""Tokens per second over HTTP with keep-alive, beside an aiohttp echo handler, same run.

Runs ``wrk -t2 -c16`` (Debian package ``wrk``) against (1) ``benchmarks/echo_server.py``
and (2) ``horodate appliance --simulate`` once it issues, each a separate process on
loopback, and prints requests/s, the granted count, the ratio, and the appliance's memory
before and after the run (flat memory under sustained load).

    python benchmarks/tsa_http.py [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, deadline_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"benchmark: {what} not ready within {deadline_s} s")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_wrk(url: str, tsq: Path, seconds: int, connections: int) -> tuple[float, str]:
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(HERE / "tsa_post.lua"), url],
        capture_output=True,
        text=True,
        env={**os.environ, "TSQ_FILE": str(tsq)},
        timeout=seconds + 60,
    )
    if done.returncode != 0:
        raise SystemExit(f"wrk failed: {done.stderr}")
    match = re.search(r"Requests/sec:\s+([0-9.]+)", done.stdout)
    granted = re.search(r"granted=(\d+) other=(\d+)", done.stdout)
    assert match and granted, done.stdout
    return float(match.group(1)), f"granted {granted.group(1)}, other {granted.group(2)}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("benchmark: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="horodate-bench-") as tmp:
        tmp_path = Path(tmp)
        data, tsq = tmp_path / "data.txt", tmp_path / "q.tsq"
        data.write_bytes(b"benchmark record\n")
        subprocess.run(
            ["openssl", "ts", "-query", "-data", data, "-sha256", "-cert", "-out", tsq],
            check=True,
            capture_output=True,
        )
        print(
            f"request: SHA-256, nonce, certReq ({tsq.stat().st_size} bytes); "
            f"wrk -t2 -c{args.connections} -d{args.seconds}s, keep-alive"
        )

        port = free_port()
        # The same event loop the appliance runs on (uvloop when installed), for fairness.
        echo = subprocess.Popen(
            [sys.executable, str(HERE / "echo_server.py"), str(port), "--uvloop"]
        )
        try:
            wait_until(lambda: http_status(f"http://127.0.0.1:{port}/") == 404, 20, "echo")
            echo_rps, _ = run_wrk(
                f"http://127.0.0.1:{port}/tsa", tsq, args.seconds, args.connections
            )
        finally:
            stop(echo)
        print(f"aiohttp echo handler : {echo_rps:10,.0f} requests/s")

        port = free_port()
        appliance = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "horodate",
                "appliance",
                "--simulate",
                "--data-dir",
                str(tmp_path / "appliance"),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            health = f"http://127.0.0.1:{port}/health"
            wait_until(lambda: http_status(health) == 200, 90, "appliance issuing")
            # Warm up, then measure memory around a sustained run.
            run_wrk(f"http://127.0.0.1:{port}/tsa", tsq, 2, args.connections)
            rss_before = rss_kib(appliance.pid)
            tsa_rps, counts = run_wrk(
                f"http://127.0.0.1:{port}/tsa", tsq, args.seconds, args.connections
            )
            rss_mid = rss_kib(appliance.pid)
            run_wrk(f"http://127.0.0.1:{port}/tsa", tsq, args.seconds, args.connections)
            rss_after = rss_kib(appliance.pid)
            with urllib.request.urlopen(health, timeout=5) as r:
                state = json.load(r)["state"]
        finally:
            stop(appliance)
        print(f"appliance POST /tsa  : {tsa_rps:10,.0f} tokens/s  ({counts}; clock {state})")
        print(f"ratio to echo        : {tsa_rps / echo_rps:10.2f}")
        print(
            f"appliance RSS        : {rss_before / 1024:.1f} MiB before, "
            f"{rss_mid / 1024:.1f} MiB after {args.seconds} s, "
            f"{rss_after / 1024:.1f} MiB after {2 * args.seconds} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
