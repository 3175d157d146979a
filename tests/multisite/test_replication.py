"""The PostgreSQL pair the vault stands on, as the deployment script makes it, on real
PostgreSQL: what synchronous replication promises (an acknowledged COMMIT is on both
sites), what it costs when the standby is away (commits wait, they are not lost), what a
cancelled wait means (committed locally: "unknown", never "failed"), and a failover (the
primary killed, the standby promoted: every acknowledged row is there)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.waiting import wait_until

from .conftest import Cluster, Pair, run_script


def make_table(pair: Pair) -> None:
    with pair.primary.connect() as db:
        db.execute("CREATE TABLE acked (n integer PRIMARY KEY, body text NOT NULL)")


def rows(cluster: Cluster) -> set[int]:
    with cluster.connect() as db:
        return {int(n) for (n,) in db.execute("SELECT n FROM acked").fetchall()}  # type: ignore[call-overload]


def waiting_for_sync_rep(primary: Cluster) -> int:
    """How many backends of the primary wait for the standby to confirm their commit."""
    with primary.connect() as db:
        (n,) = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        ).fetchone()  # type: ignore[misc]
    return int(n)


class Committer(threading.Thread):
    """A client committing one row, from a thread of its own: it may wait."""

    def __init__(self, primary: Cluster, n: int, *, setup: str = "") -> None:
        super().__init__(daemon=True)
        self.primary, self.n, self.setup = primary, n, setup
        self.error: Exception | None = None
        self.warnings: list[str] = []

    def run(self) -> None:
        try:
            with self.primary.connect() as db:
                db.add_notice_handler(
                    lambda d: self.warnings.append(f"{d.message_primary} {d.message_detail}")
                )
                if self.setup:
                    db.execute(self.setup)
                db.execute("INSERT INTO acked VALUES (%s, 'x')", (self.n,))
        except Exception as e:
            self.error = e


def test_the_script_refuses_what_it_cannot_do(tmp_path: object) -> None:
    assert "--pgdata DIR is required" in run_script("primary").stderr
    bad = run_script("primary", "--pgdata", "/nonexistent/x", "--standby-name", "Site-B")
    assert bad.returncode == 2 and "lower-case letters" in bad.stderr
    assert "usage" in run_script("witness").stderr
    assert "not a standby" in run_script("promote", "--pgdata", "/nonexistent/x").stderr


def test_the_standby_is_synchronous_and_serves_reads(pg_pair: Pair) -> None:
    def replication() -> list[tuple[object, ...]]:
        with pg_pair.primary.connect() as db:
            return db.execute(
                "SELECT application_name, state, sync_state FROM pg_stat_replication"
            ).fetchall()

    # a standby that caught up streams and counts in the quorum (ANY 1 (site_b))
    wait_until(lambda: replication() == [("site_b", "streaming", "quorum")], 15, "streaming")
    with pg_pair.primary.connect() as db:
        (setting,) = db.execute("SHOW synchronous_standby_names").fetchone()  # type: ignore[misc]
    assert setting == "ANY 1 (site_b)"
    make_table(pg_pair)
    with pg_pair.primary.connect() as db:
        db.execute("INSERT INTO acked SELECT n, 'x' FROM generate_series(1, 100) n")
    # flushed on the standby at COMMIT; applied (readable) an instant later
    wait_until(lambda: len(rows(pg_pair.standby)) == 100, 10, "the rows readable on the standby")
    with pg_pair.standby.connect() as db, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        db.execute("INSERT INTO acked VALUES (0, 'on the standby')")


def test_while_the_standby_is_away_commits_wait_and_none_is_lost(pg_pair: Pair) -> None:
    make_table(pg_pair)
    pg_pair.standby.stop("immediate")  # the other site lost
    committers = [Committer(pg_pair.primary, n) for n in range(5)]
    for c in committers:
        c.start()
    wait_until(lambda: waiting_for_sync_rep(pg_pair.primary) == 5, 15, "5 commits waiting")
    assert all(c.is_alive() for c in committers)  # none acknowledged: they wait, not fail
    pg_pair.standby.start()  # the site is back: the WAL kept by its slot streams
    for c in committers:
        c.join(30)
        assert not c.is_alive() and c.error is None, c.error
    assert rows(pg_pair.primary) == set(range(5))
    wait_until(lambda: rows(pg_pair.standby) == set(range(5)), 10, "every row on the standby")


def test_a_cancelled_wait_is_committed_locally_so_unknown_not_failed(pg_pair: Pair) -> None:
    """statement_timeout does not end the wait; a cancel does — and then the row *is*
    committed on the primary, with only a warning. A vault that bounds the wait itself must
    answer "unknown" (503, retry with the same Idempotency-Key), never "failed"."""
    make_table(pg_pair)
    pg_pair.standby.stop("immediate")
    started = time.monotonic()
    waiting = Committer(pg_pair.primary, 7, setup="SET statement_timeout = '200ms'")
    waiting.start()
    wait_until(lambda: waiting_for_sync_rep(pg_pair.primary) == 1, 15, "the commit waiting")
    seen_until = time.monotonic() + 1.0  # five statement timeouts: it still waits
    while time.monotonic() < seen_until:
        assert waiting.is_alive() and waiting_for_sync_rep(pg_pair.primary) == 1
    with pg_pair.primary.connect() as db:
        db.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        )
    waiting.join(15)
    assert not waiting.is_alive() and waiting.error is None  # the client saw no error…
    assert any("might not have been replicated" in w for w in waiting.warnings)
    assert rows(pg_pair.primary) == {7}  # …and the row is there, on the primary only
    assert time.monotonic() - started < 15
    pg_pair.standby.start()
    wait_until(lambda: rows(pg_pair.standby) == {7}, 15, "the row replicated once back")


def test_the_primary_killed_the_standby_promoted_every_acknowledged_row_is_there(
    pg_pair: Pair,
) -> None:
    make_table(pg_pair)
    acknowledged: list[int] = []
    stop = threading.Event()

    def append() -> None:  # a client appending under load, each COMMIT acknowledged
        with pg_pair.primary.connect() as db:
            n = 0
            while not stop.is_set():
                try:
                    db.execute("INSERT INTO acked VALUES (%s, 'under load')", (n,))
                except psycopg.OperationalError:
                    return  # the primary is gone: this one was not acknowledged
                acknowledged.append(n)
                n += 1

    client = threading.Thread(target=append, daemon=True)
    client.start()
    wait_until(lambda: len(acknowledged) >= 200, 30, "200 rows acknowledged")
    pg_pair.primary.kill9()  # the primary's site lost at once
    stop.set()
    client.join(30)
    promoted = run_script("promote", "--pgdata", str(pg_pair.standby.pgdata))
    assert promoted.returncode == 0, promoted.stderr
    on_promoted = rows(pg_pair.standby)
    assert set(acknowledged) <= on_promoted, "an acknowledged row was lost"
    assert len(on_promoted) - len(acknowledged) <= 1  # at most the one in flight
    # promoted, it still waits for a standby of the other site (none now): RPO 0 kept…
    after = Committer(pg_pair.standby, -1, setup="SET application_name = 'vault'")
    after.start()
    wait_until(lambda: waiting_for_sync_rep(pg_pair.standby) == 1, 15, "the commit waiting")
    # …until the operator chooses to run on one site alone: the waiting commit returns
    alone = run_script("alone", "--pgdata", str(pg_pair.standby.pgdata))
    assert alone.returncode == 0 and "ALONE" in alone.stdout, alone.stderr
    after.join(15)
    assert not after.is_alive() and after.error is None, after.error
    with pg_pair.standby.connect(target_session_attrs="read-write") as db:
        db.execute("INSERT INTO acked VALUES (-2, 'after the failover')")
    assert {-1, -2} <= rows(pg_pair.standby)
