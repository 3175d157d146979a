"""TSA worker processes: the time ticket, the shared genTime floor, and the whole appliance
with ``--workers 2`` as real processes on one socket (ADR 0007)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import appliance.runtime.shared_clock as shared_clock_module
from appliance.clock import ClockState, Ensemble, Policy, Window
from appliance.config import ApplianceConfig, TsaSection
from appliance.http.listening import bind_public
from appliance.issuance.issuer import TsaTally
from appliance.issuance.log import COMMIT_BUCKETS_S, read_log
from appliance.runtime.shared_clock import TICKET_LIFE_NS, SharedClock, TicketPublisher
from appliance.runtime.workers import RestartBackoff, WorkerPool, WorkerSpec
from appliance.tsa import FailInfo
from appliance.tsa.errors import TimeNotAvailable
from drivers.sample import SourceKind, TimeSample
from horodate.cli import main as horodate
from timestamping import Digest, TsaReply, build_request, parse_reply
from timestamping.errors import VerificationFailed
from timestamping.verify import verify_reply

from .worker_support import worker_on_the_tests_clock

NS = 1_000_000_000
MAX_ERROR_NS = NS


# The lock files of the SharedClocks made here (removed when the test process ends).
_LOCKS = tempfile.TemporaryDirectory(prefix="horodate-test-locks-")
LOCK_DIR = Path(_LOCKS.name)


def shared_clock(workers_: int = 1) -> SharedClock:
    return SharedClock(
        crystal_max_ppm=100.0, max_error_ns=MAX_ERROR_NS, workers=workers_, lock_dir=LOCK_DIR
    )


@pytest.fixture
def mono(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The raw-monotonic clock the ticket is read against, set by the test."""
    now = [1_000 * NS]
    monkeypatch.setattr(shared_clock_module, "mono_ns", lambda: now[0])
    yield now


# --- the time ticket --------------------------------------------------------------------


def test_a_fresh_ticket_answers_the_published_window_moved_to_now(mono: list[int]) -> None:
    shared = shared_clock()
    shared.publish(
        Window(
            mono[0], 1_800_000_000 * NS - 1_000, 1_800_000_000 * NS + 1_000, ClockState.SYNCHRONISED
        )
    )
    mono[0] += 10_000_000  # 10 ms later
    utc, bound = shared.token_time()
    assert utc == 1_800_000_000 * NS + 10_000_000
    # the window grew by 10 ms × 100 ppm = 1 µs on each side (rounded up)
    assert 2_000 <= bound <= 2_002
    assert shared.last_state == "synchronised"


def test_a_refusal_is_passed_on_with_its_reason(mono: list[int]) -> None:
    shared = shared_clock()
    shared.refuse("no quorum: GPS and NTP disagree", "alarm")
    with pytest.raises(TimeNotAvailable, match="GPS and NTP disagree"):
        shared.token_time()
    assert shared.last_state == "alarm"


def test_before_the_first_publication_there_is_no_time(mono: list[int]) -> None:
    with pytest.raises(TimeNotAvailable, match="not published"):
        shared_clock().token_time()


def test_a_stale_ticket_is_not_used(mono: list[int]) -> None:
    shared = shared_clock()
    shared.publish(Window(mono[0], 0, 2_000, ClockState.SYNCHRONISED))
    mono[0] += TICKET_LIFE_NS
    shared.token_time()  # still within its life
    mono[0] += 1
    with pytest.raises(TimeNotAvailable, match="main process is not publishing"):
        shared.token_time()


def test_a_window_grown_past_the_maximum_error_is_refused(mono: list[int]) -> None:
    shared = shared_clock()
    shared.publish(Window(mono[0], 0, 2 * MAX_ERROR_NS - 2, ClockState.HOLDOVER))
    shared.token_time()
    mono[0] += 50_000_000  # grows by 5 µs per side: past the 1 s maximum
    with pytest.raises(TimeNotAvailable, match="exceeds the maximum"):
        shared.token_time()


@given(
    truth0=st.integers(1_600_000_000 * NS, 2_000_000_000 * NS),
    below=st.integers(0, NS // 2),
    above=st.integers(0, NS // 2),
    ppm=st.floats(-100.0, 100.0),
    age=st.integers(0, TICKET_LIFE_NS),
)
def test_the_ticket_still_holds_the_truth_when_the_crystal_is_off_by_up_to_its_maximum(
    truth0: int, below: int, above: int, ppm: float, age: int
) -> None:
    """Truth moves at (1 + ppm·10⁻⁶) per raw-monotonic ns: the answer's bound covers it."""
    shared = SharedClock(crystal_max_ppm=100.0, max_error_ns=10 * NS, workers=1, lock_dir=LOCK_DIR)
    m0 = 5_000 * NS
    shared.publish(Window(m0, truth0 - below, truth0 + above, ClockState.SYNCHRONISED))
    original = shared_clock_module.mono_ns
    shared_clock_module.mono_ns = lambda: m0 + age  # type: ignore[assignment]
    try:
        utc, bound = shared.token_time()
    finally:
        shared_clock_module.mono_ns = original  # type: ignore[assignment]
    truth = truth0 + age + int(age * ppm / 1e6)
    assert utc - bound <= truth <= utc + bound


def test_the_genTime_floor_is_one_value_for_every_holder() -> None:
    shared = shared_clock()
    a, b = shared.floor, shared.floor
    with a.lock:
        a.value = 42
    with b.lock:
        assert b.value == 42


def test_a_forked_child_takes_the_lock_apart_from_its_parent() -> None:
    """A child forked while its parent holds a lock must wait for it: it opens the lock
    file again (a lock taken through the parent's open file would be the parent's) and
    does not inherit the parent's thread lock held."""
    lock = shared_clock().floor.lock
    r, w = os.pipe()
    with lock:
        pid = os.fork()
        if pid == 0:  # the child
            with lock:
                os.write(w, b"x")
            os._exit(0)
        try:
            # until the child either waits in flock for our lock (the kernel lists it as a
            # blocked waiter) or has taken it (and written to the pipe)
            wait_until(
                lambda: flock_waiter(pid) or select.select([r], [], [], 0)[0],
                10,
                "the child waiting for the lock or taking it",
            )
            assert not select.select([r], [], [], 0)[0], "the child took a lock its parent holds"
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            raise
    try:
        assert select.select([r], [], [], 10)[0], "the child never took the lock once free"
    finally:
        os.kill(pid, signal.SIGKILL)  # gone already, unless it is stuck
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)


def post_tsa(port: int, body: bytes) -> TsaReply:
    """``POST /tsa`` with the standard library's HTTP client, on a connection of its own."""
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/tsa", body, {"Content-Type": "application/timestamp-query"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Server") == "Horodate"  # the lane's
        return parse_reply(resp.read())
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_gen_time_never_goes_back_across_worker_processes_when_the_estimate_steps_back(
    pki: Any, tmp_path: Path
) -> None:
    """Two worker processes, each with its own engine and serials: worker 1 signs; then the
    ensemble's estimate steps 50 ms back, within its ±100 ms bound (a new ticket); worker 2,
    which has signed nothing yet, reads the earlier time. Its genTime must not be earlier
    than worker 1's: they share one floor in shared memory (RFC 3161 §2.4.2: genTime never
    goes back across the TSA's tokens, whichever process signs). A floor per worker passes
    every test whose time only moves forward; this one fails with it."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # as WorkerPool starts them
    mono = ctx.RawValue("q", 1_000 * NS)  # the one raw-monotonic clock of every process
    shared = shared_clock(2)
    config = ApplianceConfig(
        data_dir=tmp_path / "appliance",
        tsa=TsaSection(
            key_file=str(pki.tsa_key), cert_file=str(pki.tsa_cert), chain_file=str(pki.chain)
        ),
    )
    config.data_dir.mkdir()
    publics = [bind_public("127.0.0.1", 0) for _ in range(2)]  # one each: we pick who signs
    specs = [
        WorkerSpec(i, config, publics[i], "unused", shared, logging.WARNING, os.getpid())
        for i in range(2)
    ]
    procs = [ctx.Process(target=worker_on_the_tests_clock, args=(s, mono)) for s in specs]
    for proc in procs:
        proc.start()
    try:
        u = 1_800_000_000 * NS
        ms = 1_000_000

        def sign(worker: int, lo: int, hi: int) -> tuple[int, int, int]:
            """Publish the window [lo, hi] now, have ``worker`` sign: (genTime ns, accuracy
            ns, serial), read from the worker's issuance log (durable before the reply)."""
            shared.publish(Window(int(mono.value), lo, hi, ClockState.SYNCHRONISED))
            imprint = hashlib.sha256(b"worker %d at %d" % (worker, lo)).digest()
            query = build_request(imprint, nonce=worker).der
            reply = post_tsa(publics[worker].getsockname()[1], query)
            assert reply.granted and reply.info is not None, reply.status_text
            log = tmp_path / "appliance" / f"issued-w{worker + 1}.log"
            [record] = [r for r in read_log(log) if r.serial == reply.info.serial]
            return record.gen_time_ns, record.accuracy_us * 1_000, record.serial

        first = sign(0, u - 100 * ms, u + 100 * ms)
        mono.value += 5 * ms
        second = sign(1, u - 150 * ms, u + 50 * ms)  # 5 ms later, the estimate 50 ms back
        assert second[0] >= first[0], (
            f"worker 2's genTime is {(first[0] - second[0]) / ms:g} ms before worker 1's: "
            "each worker has a genTime floor of its own"
        )
        # and its token still states an interval holding the window it was signed in
        assert second[0] - second[1] <= u - 150 * ms and u + 50 * ms <= second[0] + second[1]
        third = sign(0, u - 150 * ms, u + 50 * ms)  # and back to worker 1: no step back
        assert third[0] >= second[0]
        assert len({first[2], second[2], third[2]}) == 3
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        for sock in publics:
            sock.close()


def flock_waiter(pid: int) -> bool:
    """Whether process ``pid`` is blocked waiting for an flock (``/proc/locks``)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" not in fields:
            continue
        lock_type, lock_pid = fields[fields.index("->") + 1], fields[fields.index("->") + 4]
        if lock_type == "FLOCK" and int(lock_pid) == pid:
            return True
    return False


def _hold_the_floor_lock(shared: SharedClock, holding: Any) -> None:
    with shared.floor.lock:
        holding.set()
        time.sleep(60)  # killed before it lets go


def _booting_worker(spec: WorkerSpec) -> None:
    """Stands for a worker still starting: SIGHUP's default action would end it."""
    time.sleep(60)


def test_a_worker_still_booting_is_not_sent_the_reload_that_would_end_it() -> None:
    shared = shared_clock(1)
    pool = WorkerPool(ApplianceConfig(data_dir=LOCK_DIR), shared, target=_booting_worker)
    with socket.socket() as public:
        public.bind(("127.0.0.1", 0))
        pool.start(public, "unused")
        try:
            wait_until(lambda: pool.alive() == 1, 10, "the worker started")
            assert not shared.takes_reloads(0)
            assert pool.reload() == 0  # not signalled: it reads the key files when it starts
            # A signal not sent has no event to wait on: 0.3 s is ample for one to arrive
            # and end the stand-in, had it been sent.
            time.sleep(0.3)
            assert pool.alive() == 1
            # Once a worker says it survives a SIGHUP, it is sent one (this stand-in does
            # not, so the signal ends it: the proof it was sent).
            shared.ready_for_reloads(0)
            assert pool.reload() == 1
            wait_until(lambda: pool.alive() == 0, 10, "the stand-in ended by SIGHUP")
            shared.retire(0)  # what the pool does before it starts the next worker
            assert not shared.takes_reloads(0)
        finally:
            pool.stop(timeout_s=2)


def test_a_process_killed_while_holding_a_lock_does_not_stop_the_others() -> None:
    """A worker dying inside the genTime floor's lock (OOM killer, kill -9) must not leave
    every other process waiting forever: the kernel releases its lock."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    shared = shared_clock()
    holding = ctx.Event()
    child = ctx.Process(target=_hold_the_floor_lock, args=(shared, holding))
    child.start()
    try:
        assert holding.wait(30), "the child never took the lock"
        taken = threading.Event()

        def take() -> None:
            with shared.floor.lock:
                taken.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        wait_until(  # it is held: we wait (the kernel lists this process as a waiter)
            lambda: flock_waiter(os.getpid()) or taken.is_set(), 10, "waiting for the lock"
        )
        assert not taken.is_set(), "the lock of a live process was taken from it"
        os.kill(child.pid or 0, signal.SIGKILL)
        assert taken.wait(5), "the lock of a dead process was never released"
    finally:
        child.kill()
        child.join(5)


def commit_counts(fast: int, slow_bucket: int | None = None) -> list[int]:
    """Commit counts per bucket: ``fast`` in the 0.5 ms bucket, one in ``slow_bucket``."""
    counts = [0] * (len(COMMIT_BUCKETS_S) + 1)
    counts[COMMIT_BUCKETS_S.index(0.0005)] = fast
    if slow_bucket is not None:
        counts[slow_bucket] += 1
    return counts


def test_worker_counters_add_up_and_survive_a_restart() -> None:
    from collections import Counter

    shared = shared_clock(2)
    shared.record_stats(
        0,
        TsaTally(
            granted=10,
            refused=Counter({"badAlg": 2}),
            log_records=10,
            log_bytes=1500,
            log_failures=1,
            logs_stopped=1,
            log_commit_counts=commit_counts(3, COMMIT_BUCKETS_S.index(0.5)),  # 3 fast, 1 of 0.3 s
            log_commit_seconds=0.3015,
            log_slow_commits=1,
        ),
    )
    shared.record_stats(
        1, TsaTally(granted=5, refused=Counter({"timeNotAvailable": 1}), log_records=5)
    )
    assert shared.stats().logs_stopped == 1
    shared.retire(0)  # worker 1 died: its counts move to the tally, its block restarts
    shared.record_stats(
        0,
        TsaTally(
            granted=3,
            log_records=3,
            log_bytes=450,
            log_commit_counts=commit_counts(1),
            log_commit_seconds=0.0004,
        ),
    )
    total = shared.stats()
    assert total.log_commit_counts == [
        a + b
        for a, b in zip(
            commit_counts(3, COMMIT_BUCKETS_S.index(0.5)), commit_counts(1), strict=True
        )
    ]
    assert total.log_commit_seconds == pytest.approx(0.3019)
    assert total.log_slow_commits == 1
    assert total.granted == 18
    assert total.refused == Counter({"badAlg": 2, "timeNotAvailable": 1})
    assert (total.log_records, total.log_commits, total.log_bytes) == (18, 5, 1950)
    assert total.log_failures == 1  # counted for good
    assert total.logs_stopped == 0  # the restarted worker opened its log afresh


def test_restart_backoff_doubles_while_a_worker_keeps_dying_and_resets_after_a_good_run() -> None:
    backoff = RestartBackoff(first_s=1.0, max_s=30.0, healthy_s=60.0)
    assert [backoff.delay(ran_s=2.0) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(ran_s=3600.0) == 1.0  # it had run an hour: a fresh failure
    assert backoff.delay(ran_s=0.5) == 2.0


def test_the_publisher_hands_on_the_ensembles_verdict() -> None:
    m = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
    ensemble = Ensemble(Policy())
    shared = shared_clock()
    publisher = TicketPublisher(ensemble, shared)
    publisher.publish_now()
    with pytest.raises(TimeNotAvailable):
        shared.token_time()
    utc0 = time.time_ns()
    for source, kind in (("gps0", SourceKind.GPS), ("ntp:a", SourceKind.NTP)):
        ensemble.add(
            TimeSample(
                source=source, kind=kind, mono_ns=m, utc_ns=utc0, error_ns=1_000_000, trusted=True
            )
        )
    publisher.publish_now()
    utc, bound = shared.token_time()
    assert bound < 10_000_000
    assert abs(utc - (utc0 + time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW) - m)) <= bound


# --- the whole appliance with worker processes ------------------------------------------

TSQ = {"Content-Type": "application/timestamp-query"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, data: bytes | None = None, method: str | None = None) -> tuple[int, bytes]:
    headers = TSQ if data is not None and url.endswith("/tsa") else {}
    if data is not None and not url.endswith("/tsa"):
        headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # one connection per request
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def stamp(base: str, i: int) -> TsaReply:
    q = build_request(hashlib.sha256(b"record %d" % i).digest(), digest=Digest.SHA256, nonce=i)
    status, body = http(f"{base}/tsa", q.der)
    assert status == 200
    return parse_reply(body)


def wait_until(predicate: Any, deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} not within {deadline_s} s")


def metric(base: str, name: str) -> float:
    _, text = http(f"{base}/metrics")
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def worker_pids(proc: subprocess.Popen[bytes]) -> set[int]:
    """The TSA worker processes of a running ``horodate appliance``."""
    return {
        pid
        for pid in children(proc.pid)
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    }


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as systemd stops the appliance; SIGKILL if it has not ended in 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def appliance_with_workers(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    data = tmp_path / "appliance"
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "horodate",
            "appliance",
            "--simulate",
            "--workers",
            "2",
            "--data-dir",
            str(data),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(f"{base}/health") == 200, 90, "the clock issuing")
        wait_until(lambda: metric(base, "horodate_tsa_workers_alive") == 2, 30, "two workers")
        yield base, proc, data
    finally:
        terminate(proc)
        assert proc.stderr is not None
        proc.stderr.close()


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the socket listening on ``port`` (for a
    listening socket, ``/proc/net/tcp``'s rx_queue is its accept backlog)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                return int(queues.split(":")[1], 16)
    raise AssertionError(f"nothing listens on port {port}")


def http_status(url: str) -> int:
    try:
        return http(url)[0]
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_keep_alive_clients_are_split_evenly_between_the_processes(
    appliance_with_workers: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    """15 clients connect at once, then each asks for a token over its connection: each of
    the three processes answers about five (left to the kernel, one process often took
    most: 0/4/11)."""
    base, _, data = appliance_with_workers
    port = int(base.rsplit(":", 1)[1])

    def counts() -> dict[str, int]:
        return {p.name: len(list(read_log(p))) for p in data.glob("issued*.log")}

    # Every process serving first (on a loaded machine a worker can still be starting, and
    # a process not yet accepting cannot take its share): tokens on new connections until
    # each process has issued one.
    warm = iter(range(10_000, 20_000))

    def all_serving() -> bool:
        stamp(base, next(warm))
        return len(counts()) == 3 and all(counts().values())

    wait_until(all_serving, 60, "every process issuing")
    before = counts()
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(15)]
    try:
        # until the processes have accepted them all (the listening socket's queue empty):
        # which process holds each connection is decided then
        wait_until(lambda: accept_queue(port) == 0, 10, "the 15 connections accepted")
        for i, c in enumerate(clients):
            q = build_request(hashlib.sha256(b"%d" % i).digest(), digest=Digest.SHA256, nonce=i).der
            c.sendall(
                b"POST /tsa HTTP/1.1\r\nHost: appliance\r\nContent-Type: "
                b"application/timestamp-query\r\nContent-Length: %d\r\n\r\n%s" % (len(q), q)
            )
        for c in clients:
            assert c.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        for c in clients:
            c.close()
    after = counts()
    served = sorted(after[name] - before[name] for name in after)
    # Two processes may read the counts and accept at the same moment: 4/5/6 can happen.
    assert sum(served) == 15 and served[0] >= 4 and served[-1] - served[0] <= 2, served


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_workers_share_one_clock_and_never_repeat_a_serial(
    appliance_with_workers: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, _, data = appliance_with_workers
    logs_expected = {"issued.log", "issued-w1.log", "issued-w2.log"}
    wait_until(  # a loaded machine may still be starting the workers
        lambda: {p.name for p in data.glob("issued*.log")} == logs_expected,
        60,
        "both workers opened their issuance logs",
    )
    # One request after the other, each on a new connection: whichever process answers,
    # genTime never goes back and no serial repeats.
    replies = [stamp(base, i) for i in range(60)]
    assert all(r.granted for r in replies), [r.status_text for r in replies if not r.granted]
    infos = [r.info for r in replies]
    assert all(info is not None for info in infos)
    gen_times = [info.gen_time for info in infos if info]
    assert gen_times == sorted(gen_times)
    serials = [info.serial for info in infos if info]
    assert len(set(serials)) == len(serials)

    logs = {p.name: list(read_log(p)) for p in sorted(data.glob("issued*.log"))}
    assert set(logs) == logs_expected
    served_by = [name for name, records in logs.items() if records]
    assert len(served_by) >= 2, f"only {served_by} answered 60 connections"
    logged = {r.serial: r for records in logs.values() for r in records}
    assert set(serials) <= set(logged)  # every token a client holds is in a log
    for info in infos:
        assert info is not None
        assert logged[info.serial].message_imprint == info.message_imprint
    wait_until(  # every process's tokens are counted (workers report each second)
        lambda: metric(base, "horodate_tsa_tokens_granted_total") == 60, 5, "60 counted"
    )
    assert metric(base, "horodate_tsa_issuance_log_records_total") == sum(
        len(records) for records in logs.values()
    )
    # every process's commits are timed: the histogram counts all of them
    commits = metric(base, "horodate_tsa_issuance_log_commits_total")
    assert commits >= len(served_by)
    assert metric(base, "horodate_tsa_issuance_log_commit_seconds_count") == commits
    assert metric(base, "horodate_tsa_issuance_log_commit_seconds_sum") > 0
    # What an auditor runs on the data directory: every process's log checks, and a token's
    # serial is found whichever process signed it.
    assert horodate(["issued", "--check", "--data-dir", str(data)]) == 0
    assert horodate(["issued", "--data-dir", str(data), "--serial", f"{serials[-1]:#x}"]) == 0

    # The clock says no (GPS and NTP jump together: an alarm): every process refuses,
    # whichever answers; faults cleared, all resume.
    faults = {"gps": {"offset_s": 2.5}, "ntp": {"offset_s": 2.5}}
    status, _ = http(f"{base}/sim/faults", json.dumps(faults).encode())
    assert status == 200

    def all_refuse() -> bool:
        answers = [stamp(base, 1000 + i) for i in range(12)]
        return all(not a.granted and FailInfo.timeNotAvailable in a.fail_info for a in answers)

    wait_until(all_refuse, 60, "every process refusing with timeNotAvailable")
    http(f"{base}/sim/faults", method="DELETE")
    wait_until(
        lambda: all(stamp(base, 2000 + i).granted for i in range(12)),
        90,
        "every process granting again",
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_worker_is_restarted_and_stopping_leaves_no_process_behind(
    appliance_with_workers: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, proc, _ = appliance_with_workers
    before = [stamp(base, i) for i in range(20)]
    workers_ = worker_pids(proc)
    assert len(workers_) == 2
    victim = min(workers_)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: metric(base, "horodate_tsa_worker_restarts_total") == 1, 30, "a restart")
    wait_until(lambda: metric(base, "horodate_tsa_workers_alive") == 2, 30, "two workers again")
    _, health = http(f"{base}/health")
    assert json.loads(health)["tsa_workers"] == {"configured": 2, "alive": 2, "restarts": 1}
    after = [stamp(base, 100 + i) for i in range(40)]
    serials = [r.info.serial for r in before + after if r.info]
    assert len(serials) == 60 and len(set(serials)) == 60

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    survivors = [pid for pid in workers_ | children(proc.pid) if Path(f"/proc/{pid}").exists()]
    assert survivors == []


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_tokens_from_every_process_pass_openssl_and_rfc3161_client(
    appliance_with_workers: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    """Tokens signed by the worker processes, as by the main one, verify with the real
    verifiers (each request on a new connection, so every process gets some)."""
    from cryptography import x509
    from rfc3161_client import TimestampRequestBuilder, VerifierBuilder, decode_timestamp_response

    from timestamping.verify import verify_with_openssl

    base, _, data = appliance_with_workers
    ca_pem = (data / "keys" / "ca.pem").read_bytes()
    ca = x509.load_pem_x509_certificate(ca_pem)

    def served() -> list[str]:
        return [p.name for p in data.glob("issued*.log") if list(read_log(p))]

    # each request on a new connection, until two processes have answered (under load
    # one process can take many in a row): every token is checked, whichever signed it
    for i in range(400):
        if i >= 24 and len(served()) >= 2:
            break
        record = b"attendance record %d" % i
        request = TimestampRequestBuilder().data(record).nonce(nonce=True).build()
        status, body = http(f"{base}/tsa", request.as_bytes())
        assert status == 200
        verifier = VerifierBuilder.from_request(request).add_root_certificate(ca).build()
        assert verifier.verify_message(decode_timestamp_response(body), record)
        assert "OK" in verify_with_openssl(
            body, message_imprint=hashlib.sha512(record).digest(), ca_pem=ca_pem
        )
    assert len(served()) >= 2, f"only {served()} answered, of 400 requests"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_workers_stop_when_the_main_process_is_killed(
    appliance_with_workers: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    """kill -9 of the main process (outside systemd, which would kill the whole group):
    the workers notice and stop, and the port is free for the next start."""
    base, proc, _ = appliance_with_workers
    workers_ = worker_pids(proc)
    assert len(workers_) == 2
    proc.kill()
    proc.wait(10)
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers_), 10, "workers gone"
    )
    port = int(base.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # nobody listens on it any more


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sighup_renews_the_certificate_of_every_process_without_stopping(
    appliance_with_workers: tuple[str, subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    """The operator puts a renewed key and certificate in place and sends SIGHUP (what
    `systemctl reload` does): every process signs with them from then on, the clock never
    stops issuing, serial numbers carry on."""
    base, proc, data = appliance_with_workers
    keys, renewed = data / "keys", tmp_path / "renewed"
    before = [stamp(base, i) for i in range(12)]
    assert horodate(["keys", "init", "--dir", str(renewed), "--key-type", "ec-p384"]) == 0
    for name in ("tsa.key", "tsa.pem", "chain.pem"):
        os.replace(renewed / name, keys / name)
    new_ca = (renewed / "ca.pem").read_bytes()

    proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: metric(base, 'horodate_tsa_credential_reloads_total{result="done"}') == 1,
        10,
        "the main process reloaded",
    )
    assert http_status(f"{base}/health") == 200  # issuing throughout
    status, chain = http(f"{base}/tsa/certs")
    assert status == 200 and chain == (keys / "tsa.pem").read_bytes() + new_ca

    after: dict[int, tuple[bytes, bytes]] = {}  # serial -> (reply, imprint), renewed key
    asked = iter(range(1_000_000))

    def renewed(n: int) -> list[int]:
        """``n`` tokens on new connections (whichever process answers); the serials of
        those signed with the renewed key (a worker gets the SIGHUP from the main process
        and may still be reloading: those signed with the old one are not kept)."""
        serials = []
        for _ in range(n):
            i = next(asked)
            imprint = hashlib.sha256(b"after %d" % i).digest()
            q = build_request(imprint, digest=Digest.SHA256, nonce=i)
            status, body = http(f"{base}/tsa", q.der)
            reply = parse_reply(body)
            assert status == 200 and reply.granted and reply.info is not None
            try:
                verify_reply(body, message_imprint=imprint, ca_pem=new_ca)
            except VerificationFailed:
                continue
            after[reply.info.serial] = body, imprint
            serials.append(reply.info.serial)
        return serials

    def every_process_renewed() -> bool:
        renewed(12)
        # a process opens its log with its first token: on a busy machine the 12 requests
        # before the reload may not all have reached every process, so look again each time
        logs = sorted(data.glob("issued*.log"))
        logged = [{r.serial for r in read_log(p)} for p in logs]
        return len(logs) == 3 and all(set(after) & serials for serials in logged)

    wait_until(every_process_renewed, 60, "a token with the renewed key from every process")
    # and from then on, every token of every process is signed with it
    assert len(renewed(12)) == 12
    serials = [r.info.serial for r in before if r.info] + list(after)
    assert len(set(serials)) == len(serials)
    assert metric(base, 'horodate_tsa_credential_reloads_total{result="refused"}') == 0


# The appliance, its start-up interrupted by a SIGHUP it sends itself as it builds the app.
_RELOAD_WHILE_STARTING = """
import os, signal, sys
import appliance.runtime.assembly as bootstrap

real_build_app = bootstrap.build_app

def build_app(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGHUP)  # `systemctl reload` while the appliance starts
    return real_build_app(*args, **kwargs)

bootstrap.build_app = build_app
from horodate.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_reload_asked_while_starting_does_not_end_the_appliance(tmp_path: Path) -> None:
    """SIGHUP's default action ends a process: `systemctl reload` right after a start must
    not. It is remembered during start-up, then done once serving."""
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", _RELOAD_WHILE_STARTING, "appliance", "--simulate"),
            *("--data-dir", str(tmp_path / "appliance"), "--listen", f"127.0.0.1:{port}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is not None or http_status(f"{base}/health") == 200,
            90,
            "the clock issuing",
        )
        assert proc.poll() is None, f"the appliance ended (status {proc.returncode})"
        assert metric(base, 'horodate_tsa_credential_reloads_total{result="done"}') == 1
        assert stamp(base, 1).granted
    finally:
        terminate(proc)
