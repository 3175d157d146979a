"""A real PostgreSQL pair on loopback, made by the deployment script itself
(``deploy/postgresql/replication.sh``): a primary whose commits wait for the standby
(``synchronous_standby_names = 'ANY 1 (site_b)'``), and the standby streaming from it. The
clusters run as the ``postgres`` user (PostgreSQL refuses root), in the test's own
directories, on free ports; they are stopped (immediately) at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "postgresql" / "replication.sh"
PASSWORD = "replication secret for the tests"
APP_PASSWORD = "the vault password for the tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        pytest.fail("PostgreSQL is not installed (Debian package postgresql; `make test` does)")
    return found[-1].parent


def as_postgres(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Cluster:
    name: str
    pgdata: Path
    port: int

    def conninfo(self, **extra: str) -> str:
        params = {
            "host": "127.0.0.1",
            "port": str(self.port),
            "user": "vault",
            "password": APP_PASSWORD,
            "dbname": "postgres",
            "connect_timeout": "5",
            **extra,
        }
        return " ".join(f"{k}='{v}'" for k, v in params.items())

    def connect(self, **extra: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.conninfo(**extra), autocommit=True)

    def psql(self, sql: str) -> None:
        """``sql`` as the superuser ``postgres`` over the cluster's Unix socket (peer)."""
        done = as_postgres(
            str(pg_bin() / "psql"), "-h", str(self.pgdata), "-p", str(self.port),
            "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return as_postgres(str(pg_bin() / "pg_ctl"), "-D", str(self.pgdata), *args)

    def stop(self, mode: str = "fast") -> None:
        done = self.pg_ctl("-m", mode, "-w", "stop")
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        log = self.pgdata / "postgresql.log"
        done = self.pg_ctl("-l", str(log), "-w", "-t", "60", "start")
        assert done.returncode == 0, done.stderr + log.read_text()[-2000:]

    def kill9(self) -> None:
        """SIGKILL the postmaster (its children die with it): a site lost at once."""
        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        subprocess.run(["kill", "-9", str(pid)], check=True)

    def promote(self) -> None:
        done = self.pg_ctl("-w", "-t", "60", "promote")
        assert done.returncode == 0, done.stderr


@dataclass
class Pair:
    primary: Cluster
    standby: Cluster


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture
def pg_pair() -> Iterator[Pair]:
    if shutil.which("runuser") is None:
        pytest.fail("runuser (util-linux) is needed to run PostgreSQL as postgres")
    # pytest's tmp_path sits under a directory only root may enter: the clusters live in
    # one the postgres user can reach, removed at the end
    root = Path(tempfile.mkdtemp(prefix="horodate-pg-"))
    root.chmod(0o755)
    shutil.chown(root, "postgres", "postgres")
    secret = root / "replicator.password"
    secret.write_text(PASSWORD + "\n")
    primary = Cluster("site_a", root / "primary", free_port())
    standby = Cluster("site_b", root / "standby", free_port())
    started: list[Cluster] = []
    try:
        done = run_script(
            "primary", "--pgdata", str(primary.pgdata), "--port", str(primary.port),
            "--standby-name", standby.name, "--password-file", str(secret),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        started.append(primary)
        # the vault's login (the store's own roles and grants come with the store), allowed
        # to read the replication statistics
        primary.psql(
            "SET synchronous_commit = local;"
            f"CREATE ROLE vault LOGIN PASSWORD '{APP_PASSWORD}';"
            "GRANT CREATE ON SCHEMA public TO vault; GRANT pg_monitor TO vault;"
        )
        done = run_script(
            "standby", "--pgdata", str(standby.pgdata), "--port", str(standby.port),
            "--name", standby.name, "--primary-host", "127.0.0.1",
            "--primary-port", str(primary.port), "--password-file", str(secret),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        started.append(standby)
        yield Pair(primary, standby)
    finally:
        for cluster in started:
            if (cluster.pgdata / "postmaster.pid").exists():
                cluster.pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
