"""The NTP driver against the simulated server (each fault) and hand-made hostile responders.

chronyd 4.3 cannot be made to send a Kiss-o'-Death or a wrong origin, so those cases use the
simulated server and a small UDP responder written here; both speak real UDP on loopback.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from drivers.monotonic import mono_ns, paired_ns, realtime_ns
from drivers.ntp import (
    NtpClient,
    NtpConfig,
    NtpPacket,
    NtpSample,
    NtpServerConfig,
    PollResult,
    encode_packet,
    ns_to_ntp64,
)
from drivers.sim.faults import NtpFaults
from drivers.sim.ntp_server import SimNtpServer
from tests.ntp.conftest import FaultBox, ntp_query

S = 1_000_000_000
TIMEOUT_S = 0.3
PAIRING_SLACK_NS = 100_000  # paired_ns() error mapping the host clock (the sim's truth)


def client_for(address: tuple[str, int], **config: float) -> NtpClient:
    return NtpClient(
        NtpConfig(
            servers=(NtpServerConfig(host=address[0], port=address[1]),),
            poll_interval_s=config.pop("poll_interval_s", 0.05),
            timeout_s=config.pop("timeout_s", TIMEOUT_S),
            **config,
        )
    )


def truth_error_ns(sample: NtpSample) -> int:
    """Sample UTC minus the truth (the host clock) at the sample's instant."""
    m, r = paired_ns()
    return sample.utc_ns - (sample.mono_ns + (r - m))


def poll_once(client: NtpClient) -> list[NtpSample]:
    due = client.next_due_ns()
    assert due is not None
    now = mono_ns()
    return client.poll_due(max(now, due))


def test_healthy_simulated_server(sim_server: SimNtpServer) -> None:
    [sample] = poll_once(client_for(sim_server.address))
    assert sample.trusted and sample.stratum == 1 and sample.reference_id == "GPS"
    assert abs(truth_error_ns(sample)) <= sample.error_ns + PAIRING_SLACK_NS
    assert sample.error_ns < 50_000_000  # loopback: well under the 1 s budget


@pytest.mark.parametrize("offset_s", [5.0, -0.25])
def test_offset_fault_shows_in_the_sample(
    faults: FaultBox, sim_server: SimNtpServer, offset_s: float
) -> None:
    faults.set(NtpFaults(offset_s=offset_s))
    [sample] = poll_once(client_for(sim_server.address))
    assert sample.trusted  # the driver cannot know; the ensemble finds the falseticker
    assert abs(truth_error_ns(sample) - offset_s * S) <= sample.error_ns + PAIRING_SLACK_NS
    assert abs(sample.host_offset_ns - offset_s * S) <= sample.error_ns + PAIRING_SLACK_NS


def test_drift_accumulates_from_when_the_fault_was_set(
    faults: FaultBox, sim_server: SimNtpServer
) -> None:
    faults.set(NtpFaults(drift_ppm=500.0), since_mono_ns=mono_ns() - 200 * S)
    [sample] = poll_once(client_for(sim_server.address))
    expected = 500e-6 * 200 * S  # 0.1 s after 200 s at 500 ppm
    assert abs(truth_error_ns(sample) - expected) <= sample.error_ns + PAIRING_SLACK_NS


def test_unsynchronised_fault_gives_an_untrusted_sample(
    faults: FaultBox, sim_server: SimNtpServer
) -> None:
    faults.set(NtpFaults(unsynchronised=True))
    client = client_for(sim_server.address)
    [sample] = poll_once(client)
    assert not sample.trusted and "LI=3" in sample.reason
    assert client.servers()[0].result is PollResult.UNSYNCHRONISED


def test_kod_rate_backs_off_that_server(faults: FaultBox, sim_server: SimNtpServer) -> None:
    faults.set(NtpFaults(kod="RATE"))
    client = client_for(sim_server.address, poll_interval_s=0.05, max_poll_interval_s=0.15)
    assert poll_once(client) == []
    status = client.servers()[0]
    assert status.result is PollResult.KISS_RATE and status.backed_off
    assert status.poll_interval_s == pytest.approx(0.1)
    assert "RATE" in status.reason and "0.1 s" in status.reason
    poll_once(client)
    assert client.servers()[0].poll_interval_s == pytest.approx(0.15)  # bounded
    faults.set(NtpFaults())
    [sample] = poll_once(client)
    status = client.servers()[0]
    assert sample.trusted and status.result is PollResult.OK
    assert status.backed_off and status.poll_interval_s == pytest.approx(0.15)


@pytest.mark.parametrize("code", ["DENY", "RSTR"])
def test_kod_deny_or_rstr_stops_asking_that_server(
    faults: FaultBox, sim_server: SimNtpServer, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    faults.set(NtpFaults(kod=code))
    client = client_for(sim_server.address)
    with caplog.at_level("ERROR", logger="drivers.ntp"):
        assert poll_once(client) == []
    status = client.servers()[0]
    assert status.stopped and status.next_poll_mono_ns is None
    assert code in status.reason and "no longer polled" in status.reason
    assert any(code in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert client.next_due_ns() is None
    asked = sim_server.requests
    faults.set(NtpFaults())
    assert client.poll_due(mono_ns() + 3600 * S) == []
    assert sim_server.requests == asked  # not a single request more


def test_silent_server_times_out_within_the_deadline(
    faults: FaultBox, sim_server: SimNtpServer
) -> None:
    faults.set(NtpFaults(silent=True))
    client = client_for(sim_server.address)
    started = time.monotonic()
    assert poll_once(client) == []
    elapsed = time.monotonic() - started
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 0.5
    status = client.servers()[0]
    assert status.result is PollResult.TIMEOUT and "within 0.3 s" in status.reason


def test_simulated_server_ignores_garbage_and_keeps_serving(sim_server: SimNtpServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"", b"\x00", b"\xff" * 47, b"\x1c" + bytes(47), b"\x23" * 2000):
            s.sendto(junk, sim_server.address)
    # \x1c is version 3 mode 4 (a server packet), \x23 * 2000 a v4 client request, truncated
    reply = ntp_query(*sim_server.address, 1.0)
    assert reply is not None
    # The counters are updated by the server thread right after it sends: wait for them.
    deadline = time.monotonic() + 1.0
    while (sim_server.ignored, sim_server.replies) < (4, 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim_server.ignored == 4
    assert sim_server.requests == 2 and sim_server.replies == 2


def test_the_host_clock_being_stepped_does_not_move_the_sample(sim_server: SimNtpServer) -> None:
    """utc_ns and mono_ns never depend on CLOCK_REALTIME; only host_offset_ns does."""
    stepped = NtpClient(
        NtpConfig(
            servers=(NtpServerConfig(host=sim_server.address[0], port=sim_server.address[1]),),
            timeout_s=TIMEOUT_S,
        ),
        realtime=lambda: realtime_ns() + 3600 * S,  # the host clock an hour ahead
    )
    [sample] = poll_once(stepped)
    assert sample.trusted
    assert abs(truth_error_ns(sample)) <= sample.error_ns + PAIRING_SLACK_NS
    assert abs(sample.host_offset_ns + 3600 * S) <= sample.error_ns + PAIRING_SLACK_NS


# --- hand-made hostile responder -----------------------------------------------------------

Responder = Callable[[bytes], list[bytes]]


@pytest.fixture
def responder() -> Iterator[Callable[[Responder], tuple[str, int]]]:
    """A UDP server answering each request with whatever datagrams ``answer`` returns."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    socks: list[socket.socket] = []

    def start(answer: Responder) -> tuple[str, int]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.05)
        socks.append(sock)

        def serve() -> None:
            while not stop.is_set():
                try:
                    data, peer = sock.recvfrom(1024)
                except OSError:
                    continue
                for out in answer(data):
                    sock.sendto(out, peer)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return ("127.0.0.1", int(sock.getsockname()[1]))

    yield start
    stop.set()
    for t in threads:
        t.join(2)
    for s in socks:
        s.close()


def server_reply(request: bytes, **overrides: int) -> bytes:
    now = realtime_ns()
    fields = {
        "stratum": 1,
        "reference_id": int.from_bytes(b"GPS\0", "big"),
        "precision": -20,
        "origin_ts": int.from_bytes(request[40:48], "big"),
        "receive_ts": ns_to_ntp64(now),
        "transmit_ts": ns_to_ntp64(now),
    }
    fields.update(overrides)
    return encode_packet(NtpPacket(**fields))


def test_reply_with_wrong_origin_is_refused(
    responder: Callable[[Responder], tuple[str, int]],
) -> None:
    def wrong_origin(request: bytes) -> list[bytes]:
        origin = int.from_bytes(request[40:48], "big")
        return [server_reply(request, origin_ts=origin ^ 0xFFFF)]

    client = client_for(responder(wrong_origin))
    started = time.monotonic()
    assert poll_once(client) == []
    assert time.monotonic() - started < TIMEOUT_S + 0.5
    status = client.servers()[0]
    assert status.result is PollResult.ORIGIN_MISMATCH
    assert "origin timestamp does not echo our request" in status.reason


def test_forged_kiss_with_wrong_origin_cannot_stop_polling(
    responder: Callable[[Responder], tuple[str, int]],
) -> None:
    """An off-path attacker racing a DENY without our nonce must not silence a server."""

    def forged_then_genuine(request: bytes) -> list[bytes]:
        origin = int.from_bytes(request[40:48], "big")
        forged = server_reply(
            request,
            leap_indicator=3,
            stratum=0,
            reference_id=int.from_bytes(b"DENY", "big"),
            origin_ts=(origin + 1) % 2**64,
        )
        return [forged, server_reply(request)]

    client = client_for(responder(forged_then_genuine))
    [sample] = poll_once(client)
    status = client.servers()[0]
    assert sample.trusted and status.result is PollResult.OK and not status.stopped


def test_random_transmit_timestamps_differ_between_polls(
    responder: Callable[[Responder], tuple[str, int]],
) -> None:
    seen: list[bytes] = []

    def record(request: bytes) -> list[bytes]:
        seen.append(request[40:48])
        return [server_reply(request)]

    client = client_for(responder(record))
    poll_once(client)
    poll_once(client)
    assert len(seen) == 2 and seen[0] != seen[1]
    assert all(len(r) == 8 and r != bytes(8) for r in seen)


@pytest.mark.parametrize(
    ("overrides", "words"), [({"mode": 5}, "mode 5"), ({"version": 3}, "version 3")]
)
def test_wrong_mode_or_version_is_refused(
    responder: Callable[[Responder], tuple[str, int]], overrides: dict[str, int], words: str
) -> None:
    client = client_for(responder(lambda request: [server_reply(request, **overrides)]))
    assert poll_once(client) == []
    status = client.servers()[0]
    assert status.result is PollResult.MALFORMED and words in status.reason


def test_unresolvable_name_is_reported_not_raised() -> None:
    client = client_for(("no-such-host.invalid", 123))
    assert poll_once(client) == []
    status = client.servers()[0]
    assert status.result is PollResult.UNREACHABLE and "no-such-host.invalid" in status.reason


def test_each_server_is_polled_on_its_own_schedule(
    faults: FaultBox, sim_server: SimNtpServer
) -> None:
    with SimNtpServer(faults) as slow_server:
        fast, slow = sim_server.address, slow_server.address
        client = NtpClient(
            NtpConfig(
                servers=(
                    NtpServerConfig(host=fast[0], port=fast[1], name="ntp-fast"),
                    NtpServerConfig(
                        host=slow[0], port=slow[1], name="ntp-slow", poll_interval_s=10
                    ),
                ),
                poll_interval_s=1,
                timeout_s=TIMEOUT_S,
            )
        )
        now = mono_ns()
        first = client.poll_due(now)
        assert sorted(s.source for s in first) == ["ntp-fast", "ntp-slow"]
        assert client.next_due_ns() == now + 1 * S
        assert client.poll_due(now + S // 2) == []  # nobody due yet: nothing sent
        assert [s.source for s in client.poll_due(now + 1 * S)] == ["ntp-fast"]
        assert [s.source for s in client.poll_due(now + 10 * S)] == ["ntp-fast", "ntp-slow"]
        assert (sim_server.requests, slow_server.requests) == (3, 2)
        fast_status, slow_status = client.servers()
        assert fast_status.next_poll_mono_ns == now + 11 * S
        assert slow_status.next_poll_mono_ns == now + 20 * S
