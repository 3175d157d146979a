"""The NTP driver against a real chronyd on loopback (see conftest.py for how it is run)."""

from __future__ import annotations

import time
from collections.abc import Callable

from drivers.monotonic import mono_ns, paired_ns
from drivers.ntp import NtpClient, NtpConfig, NtpSample, NtpServerConfig, PollResult, parse_packet
from drivers.sample import Leap, SourceKind
from drivers.sim.faults import NtpFaults
from drivers.sim.ntp_server import SimNtpServer
from tests.ntp.conftest import Chronyd, FaultBox, ntp_query

TIMEOUT_S = 0.5
# paired_ns() maps the host clock onto the raw monotonic timescale to within a few µs;
# chronyd serves the host clock. This is the only slack beyond the sample's own bound.
PAIRING_SLACK_NS = 100_000


def client_for(*servers: tuple[str, int], **config: float) -> NtpClient:
    return NtpClient(
        NtpConfig(
            servers=tuple(NtpServerConfig(host=h, port=p) for h, p in servers),
            poll_interval_s=config.pop("poll_interval_s", 0.05),
            timeout_s=config.pop("timeout_s", TIMEOUT_S),
            **config,
        )
    )


def host_clock_error_ns(sample: NtpSample) -> int:
    """How far the sample's UTC is from the host clock (which chronyd serves) at mono_ns."""
    m, r = paired_ns()
    return sample.utc_ns - (sample.mono_ns + (r - m))


def test_synchronised_chronyd_gives_a_trusted_sample_within_its_bound(
    chronyd: Callable[..., Chronyd],
) -> None:
    server = chronyd(local_stratum=3)
    client = client_for(server.address)
    [sample] = client.poll_due(mono_ns())
    assert sample.trusted, sample.reason
    assert sample.kind is SourceKind.NTP
    assert sample.source == f"ntp:127.0.0.1:{server.port}"
    assert sample.stratum == 3  # as configured with `local stratum 3`
    assert sample.reference_id == "127.127.1.1"  # chrony's local reference
    assert sample.leap is Leap.NONE
    assert 0 < sample.delay_ns < TIMEOUT_S * 1e9
    assert abs(host_clock_error_ns(sample)) <= sample.error_ns + PAIRING_SLACK_NS
    assert abs(sample.host_offset_ns) <= sample.error_ns + PAIRING_SLACK_NS
    [status] = client.servers()
    assert status.result is PollResult.OK and status.reason == ""
    assert status.last_sample == sample and status.replies == 1


def test_chronyd_stratum_1(chronyd: Callable[..., Chronyd]) -> None:
    server = chronyd(local_stratum=1)
    [sample] = client_for(server.address).poll_due(mono_ns())
    assert sample.trusted and sample.stratum == 1
    assert sample.reference_id == "0x7f7f0101"  # not text, shown as hex


def test_chronyd_without_reference_is_unsynchronised_and_untrusted(
    chronyd: Callable[..., Chronyd],
) -> None:
    server = chronyd(local_stratum=None)
    client = client_for(server.address)
    [sample] = client.poll_due(mono_ns())
    assert not sample.trusted
    assert "LI=3" in sample.reason
    assert sample.leap is Leap.UNKNOWN and sample.leap_indicator == 3
    [status] = client.servers()
    assert status.result is PollResult.UNSYNCHRONISED and "LI=3" in status.reason
    assert not status.stopped and status.next_poll_mono_ns is not None


def test_simulated_unsynchronised_server_answers_like_chronyd(
    chronyd: Callable[..., Chronyd], faults: FaultBox, sim_server: SimNtpServer
) -> None:
    real = ntp_query(*chronyd(local_stratum=None).address, 1.0)
    faults.set(NtpFaults(unsynchronised=True))
    sim = ntp_query(*sim_server.address, 1.0)
    assert real is not None and sim is not None
    a, b = parse_packet(real), parse_packet(sim)
    fields = ("leap_indicator", "stratum", "reference_id", "root_delay", "root_dispersion")
    assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
    assert (a.reference_ts, b.reference_ts) == (0, 0)
    assert (a.mode, a.version) == (b.mode, b.version) == (4, 4)
    assert a.origin_ts == b.origin_ts == 0x0123456789ABCDEF


def test_chronyd_stopped_mid_test_gives_no_sample_and_no_hang(
    chronyd: Callable[..., Chronyd],
) -> None:
    server = chronyd(local_stratum=1)
    client = client_for(server.address)
    assert len(client.poll_due(mono_ns())) == 1
    server.stop()
    due = client.next_due_ns()
    assert due is not None
    started = time.monotonic()
    assert client.poll_due(max(due, mono_ns())) == []  # at the instant it is due
    assert time.monotonic() - started < TIMEOUT_S + 0.5
    [status] = client.servers()
    # Loopback answers a closed port with ICMP "port unreachable": reported at once.
    assert status.result in (PollResult.UNREACHABLE, PollResult.TIMEOUT)
    assert f"127.0.0.1:{server.port}" in status.reason
    assert status.polls == 2 and status.replies == 1
    assert status.last_sample is not None  # the last good sample stays visible, aged


def test_one_dead_server_does_not_delay_the_others(
    chronyd: Callable[..., Chronyd], faults: FaultBox, sim_server: SimNtpServer
) -> None:
    """Servers are polled in parallel: a silent one costs one timeout, not one per server."""
    server = chronyd(local_stratum=2)
    faults.set(NtpFaults(silent=True))
    client = client_for(server.address, sim_server.address)
    started = time.monotonic()
    samples = client.poll_due(mono_ns())
    elapsed = time.monotonic() - started
    assert [s.source for s in samples] == [f"ntp:127.0.0.1:{server.port}"]
    assert samples[0].trusted
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 0.5
    results = [s.result for s in client.servers()]
    assert results == [PollResult.OK, PollResult.TIMEOUT]
