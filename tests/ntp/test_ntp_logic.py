"""The NTP driver's pure decision logic: packets in, verdicts out, no sockets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import DriverError
from drivers.ntp import (
    NTP_UNIX_OFFSET_S,
    Exchange,
    NtpConfig,
    NtpPacket,
    NtpServerConfig,
    PollResult,
    ServerStatus,
    Verdict,
    encode_packet,
    evaluate_reply,
    kiss_code,
    ns_to_ntp64,
    ns_to_ntp_short,
    ntp64_to_ns,
    ntp_short_to_ns,
    parse_packet,
    reference_id_text,
    schedule_next,
    uncertainty_ns,
)
from drivers.sample import Leap, SourceKind

MS = 1_000_000
S = 1_000_000_000
ORIGIN = 0xDEADBEEF_01234567
M1 = 5_000 * S  # raw monotonic instant of the send
UTC = 1_780_000_000 * S  # server's time at its receive (2026)
MAX_DISTANCE_NS = 1 * S
LOCAL_PRECISION_NS = 1_000


def exchange(*, round_trip_ns: int = 2 * MS, origin: int = ORIGIN) -> Exchange:
    return Exchange(
        source="ntp:test:123",
        server="test:123",
        origin_ts=origin,
        sent_mono_ns=M1,
        received_mono_ns=M1 + round_trip_ns,
        sent_realtime_ns=UTC - 1 * MS,
        received_realtime_ns=UTC - 1 * MS + round_trip_ns,
    )


def reply(**overrides: int) -> bytes:
    """A healthy stratum-2 reply: the server held the request 0.5 ms."""
    fields: dict[str, int] = {
        "leap_indicator": 0,
        "version": 4,
        "mode": 4,
        "stratum": 2,
        "precision": -20,
        "root_delay": 1 << 10,  # 1/64 s = 15.625 ms, exact in 16.16 fixed point
        "root_dispersion": 1 << 9,  # 7.8125 ms
        "reference_id": 0xC0A80001,
        "reference_ts": ns_to_ntp64(UTC - 8 * S),
        "origin_ts": ORIGIN,
        "receive_ts": ns_to_ntp64(UTC),
        "transmit_ts": ns_to_ntp64(UTC + MS // 2),
    }
    fields.update(overrides)
    return encode_packet(NtpPacket(**fields))


def judge(data: bytes, **kwargs: int) -> Verdict:
    return evaluate_reply(
        data,
        exchange(**kwargs),
        max_root_distance_ns=MAX_DISTANCE_NS,
        local_precision_ns=LOCAL_PRECISION_NS,
    )


def test_healthy_reply_gives_the_server_midpoint_at_our_midpoint() -> None:
    v = judge(reply())
    assert v.result is PollResult.OK and v.final and v.reason == ""
    s = v.sample
    assert s is not None and s.trusted
    assert s.kind is SourceKind.NTP and s.source == "ntp:test:123"
    assert s.mono_ns == M1 + 1 * MS  # midpoint of m1 = M1, m4 = M1 + 2 ms
    assert s.utc_ns == UTC + MS // 4  # (T2 + T3) / 2
    assert s.delay_ns == 2 * MS - MS // 2  # round trip minus the server's hold time
    assert s.stratum == 2 and s.reference_id == "192.168.0.1"
    assert s.root_delay_ns == 15_625_000 and s.root_dispersion_ns == 7_812_500
    assert s.leap is Leap.NONE and s.leap_indicator == 0
    # delay/2 + root delay/2 + root dispersion + server precision + ours + PHI * round trip
    expected = 750_000 + 7_812_500 + 7_812_500 + 954 + LOCAL_PRECISION_NS + 30
    assert s.error_ns == expected
    # host clock read 1 ms behind the server at send and at receive
    assert s.host_offset_ns == ((UTC - (UTC - MS)) + (UTC + MS // 2 - (UTC - MS + 2 * MS))) // 2


@dataclass(frozen=True)
class Case:
    name: str
    packet: bytes
    result: PollResult
    trusted: bool = False
    has_sample: bool = False
    final: bool = True
    reason_has: str = ""
    leap: Leap | None = None


def kod(code: bytes) -> bytes:
    return reply(leap_indicator=3, stratum=0, reference_id=int.from_bytes(code, "big"))


CASES = [
    Case("healthy", reply(), PollResult.OK, trusted=True, has_sample=True, leap=Leap.NONE),
    Case("leap insert", reply(leap_indicator=1), PollResult.OK, True, True, leap=Leap.INSERT),
    Case("leap delete", reply(leap_indicator=2), PollResult.OK, True, True, leap=Leap.DELETE),
    Case(
        "LI=3 unsynchronised",
        reply(leap_indicator=3),
        PollResult.UNSYNCHRONISED,
        has_sample=True,
        reason_has="LI=3",
        leap=Leap.UNKNOWN,
    ),
    Case(
        "chronyd without reference: LI=3 stratum 0 refid 0",
        reply(leap_indicator=3, stratum=0, reference_id=0),
        PollResult.UNSYNCHRONISED,
        has_sample=True,
        reason_has="unsynchronised",
    ),
    Case("stratum 16", reply(stratum=16), PollResult.BAD_STRATUM, has_sample=True),
    Case("stratum 200", reply(stratum=200), PollResult.BAD_STRATUM, has_sample=True),
    Case(
        "stratum 0 without kiss",
        reply(stratum=0, reference_id=0),
        PollResult.BAD_STRATUM,
        has_sample=True,
        reason_has="stratum 0",
    ),
    Case("kiss RATE", kod(b"RATE"), PollResult.KISS_RATE, reason_has="RATE"),
    Case("kiss DENY", kod(b"DENY"), PollResult.KISS_DENY, reason_has="DENY"),
    Case("kiss RSTR", kod(b"RSTR"), PollResult.KISS_RSTR, reason_has="RSTR"),
    Case("kiss other", kod(b"ACST"), PollResult.KISS_OTHER, reason_has="ACST"),
    Case(
        "origin mismatch",
        reply(origin_ts=ORIGIN ^ 1),
        PollResult.ORIGIN_MISMATCH,
        final=False,
        reason_has="origin",
    ),
    Case(
        "forged kiss with wrong origin is ignored, not obeyed",
        encode_packet(dataclasses.replace(parse_packet(kod(b"DENY")), origin_ts=ORIGIN + 1)),
        PollResult.ORIGIN_MISMATCH,
        final=False,
    ),
    Case("short datagram", reply()[:47], PollResult.MALFORMED, final=False),
    Case("broadcast mode", reply(mode=5), PollResult.MALFORMED, reason_has="mode 5"),
    Case("client mode echo", reply(mode=3), PollResult.MALFORMED, reason_has="mode 3"),
    Case("version 3", reply(version=3), PollResult.MALFORMED, reason_has="version 3"),
    Case("zero receive time", reply(receive_ts=0), PollResult.BAD_TIMESTAMPS),
    Case("zero transmit time", reply(transmit_ts=0), PollResult.BAD_TIMESTAMPS),
    Case(
        "transmit before receive",
        reply(transmit_ts=ns_to_ntp64(UTC - MS)),
        PollResult.BAD_TIMESTAMPS,
        reason_has="before",
    ),
    Case(
        "held longer than the round trip",
        reply(transmit_ts=ns_to_ntp64(UTC + 3 * MS)),
        PollResult.BAD_TIMESTAMPS,
        reason_has="longer",
    ),
    Case(
        "root dispersion beyond the limit",
        reply(root_dispersion=ns_to_ntp_short(2 * S)),
        PollResult.TOO_FAR,
        has_sample=True,
        reason_has="root distance",
    ),
    Case(
        "root delay beyond the limit",
        reply(root_delay=ns_to_ntp_short(2 * S)),
        PollResult.TOO_FAR,
        has_sample=True,
    ),
    Case(
        "absurd server precision (2**100 s)",
        reply(precision=100),
        PollResult.TOO_FAR,
        has_sample=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reply_verdicts(case: Case) -> None:
    v = judge(case.packet)
    assert v.result is case.result
    assert v.final is case.final
    assert case.reason_has in v.reason
    if case.result is not PollResult.OK:
        assert v.reason, "a refusal must say why"
    assert (v.sample is not None) is case.has_sample
    if v.sample is not None:
        assert v.sample.trusted is case.trusted
        assert v.sample.reason == v.reason
        if case.leap is not None:
            assert v.sample.leap is case.leap


def test_root_distance_limit_is_inclusive_at_the_boundary() -> None:
    v = judge(reply())
    assert v.sample is not None
    at_limit = evaluate_reply(
        reply(),
        exchange(),
        max_root_distance_ns=v.sample.error_ns,
        local_precision_ns=LOCAL_PRECISION_NS,
    )
    below = evaluate_reply(
        reply(),
        exchange(),
        max_root_distance_ns=v.sample.error_ns - 1,
        local_precision_ns=LOCAL_PRECISION_NS,
    )
    assert at_limit.result is PollResult.OK
    assert below.result is PollResult.TOO_FAR


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        # delay, root delay, root dispersion, round trip, server prec., local prec. -> error
        ((0, 0, 0, 0, 0, 0), 0),
        ((2 * MS, 0, 0, 0, 0, 0), 1 * MS),
        ((0, 10 * MS, 0, 0, 0, 0), 5 * MS),
        ((0, 0, 7 * MS, 0, 0, 0), 7 * MS),
        ((0, 0, 0, 1 * S, 0, 0), 15_000),  # PHI = 15 ppm of the round trip
        ((0, 0, 0, 0, 954, 1_000), 1_954),
        ((3, 3, 0, 0, 0, 0), 4),  # halves round up: the bound never shrinks
        ((2 * MS, 10 * MS, 7 * MS, 2 * MS, 954, 1_000), 1 * MS + 5 * MS + 7 * MS + 1_984),
    ],
)
def test_uncertainty_formula(terms: tuple[int, ...], expected: int) -> None:
    delay, root_delay, root_disp, round_trip, server_prec, local_prec = terms
    assert (
        uncertainty_ns(
            delay_ns=delay,
            root_delay_ns=root_delay,
            root_dispersion_ns=root_disp,
            round_trip_ns=round_trip,
            server_precision_ns=server_prec,
            local_precision_ns=local_prec,
        )
        == expected
    )


@pytest.mark.parametrize(
    ("stratum", "refid", "code"),
    [
        (0, b"RATE", "RATE"),
        (0, b"DENY", "DENY"),
        (0, b"RSTR", "RSTR"),
        (0, b"INIT", "INIT"),
        (0, b"\0\0\0\0", None),  # chronyd unsynchronised: not a kiss
        (0, b"RA\0E", None),
        (0, b"\x7f\x7f\x01\x01", None),
        (1, b"RATE", None),  # only stratum 0 carries kisses
        (2, b"DENY", None),
    ],
)
def test_kiss_codes(stratum: int, refid: bytes, code: str | None) -> None:
    assert kiss_code(stratum, int.from_bytes(refid, "big")) == code


@pytest.mark.parametrize(
    ("stratum", "refid", "text"),
    [
        (1, b"GPS\0", "GPS"),
        (1, b"PPS\0", "PPS"),
        (1, b"\x7f\x7f\x01\x01", "0x7f7f0101"),  # chronyd's local reference at stratum 1
        (3, b"\x7f\x7f\x01\x01", "127.127.1.1"),
        (2, b"\xc0\xa8\x00\x01", "192.168.0.1"),
    ],
)
def test_reference_id_text(stratum: int, refid: bytes, text: str) -> None:
    assert reference_id_text(stratum, int.from_bytes(refid, "big")) == text


# --- scheduling ---------------------------------------------------------------------------

CONFIG = NtpConfig(
    servers=(NtpServerConfig(host="192.0.2.1"),), poll_interval_s=64, max_poll_interval_s=1024
)


def fresh() -> ServerStatus:
    return ServerStatus(name="ntp:192.0.2.1:123", address="192.0.2.1:123", poll_interval_s=64.0)


@pytest.mark.parametrize(
    ("results", "interval_s", "backed_off", "stopped"),
    [
        ([PollResult.OK], 64, False, False),
        ([PollResult.TIMEOUT, PollResult.TIMEOUT], 64, False, False),
        ([PollResult.UNSYNCHRONISED], 64, False, False),
        ([PollResult.KISS_RATE], 128, True, False),
        ([PollResult.KISS_RATE, PollResult.OK], 128, True, False),  # never sped up again
        ([PollResult.KISS_RATE] * 3, 512, True, False),
        ([PollResult.KISS_RATE] * 10, 1024, True, False),  # bounded by max_poll_interval_s
        ([PollResult.KISS_DENY], 64, False, True),
        ([PollResult.KISS_RSTR], 64, False, True),
        ([PollResult.KISS_OTHER], 64, False, False),
        ([PollResult.ORIGIN_MISMATCH], 64, False, False),
    ],
)
def test_schedule_after_results(
    results: list[PollResult], interval_s: float, backed_off: bool, stopped: bool
) -> None:
    status = fresh()
    now = 0
    for r in results:
        status = schedule_next(
            status, Verdict(result=r, reason=r.value), now_mono_ns=now, config=CONFIG
        )
    assert status.poll_interval_s == interval_s
    assert status.backed_off is backed_off
    assert status.stopped is stopped
    assert status.polls == len(results)
    if stopped:
        assert status.next_poll_mono_ns is None
        assert "no longer polled" in status.reason
    else:
        assert status.next_poll_mono_ns == now + interval_s * S


def test_config_validation() -> None:
    with pytest.raises(DriverError, match="start with 'ntp'"):
        NtpServerConfig(host="h", name="gps-not-ntp")
    with pytest.raises(DriverError, match="port"):
        NtpServerConfig(host="h", port=0)
    with pytest.raises(DriverError, match="unique"):
        NtpConfig(servers=(NtpServerConfig(host="h"), NtpServerConfig(host="h")))
    with pytest.raises(DriverError, match="timeout_s"):
        NtpConfig(servers=(), timeout_s=0)
    with pytest.raises(DriverError, match="poll_interval_s"):
        NtpConfig(servers=(), poll_interval_s=2048)
    with pytest.raises(DriverError, match="poll_interval_s"):
        NtpConfig(servers=(NtpServerConfig(host="h", poll_interval_s=-1),))
    assert NtpServerConfig(host="::1", port=1123).source == "ntp:[::1]:1123"
    assert NtpServerConfig(host="h", name="ntp-lan").source == "ntp-lan"


# --- timestamps ---------------------------------------------------------------------------


def test_ntp_timestamp_vectors() -> None:
    assert ns_to_ntp64(0) == NTP_UNIX_OFFSET_S << 32  # 1970-01-01 in NTP era 0
    assert ntp64_to_ns(NTP_UNIX_OFFSET_S << 32) == 0
    assert ntp64_to_ns((NTP_UNIX_OFFSET_S << 32) | (1 << 31)) == S // 2
    # RFC 5905 §6: era 1 starts 2036-02-07T06:28:16Z (POSIX 2085978496); its timestamp is 0.
    assert ns_to_ntp64(2_085_978_496 * S) == 0
    assert ntp64_to_ns(1 << 32) == 2_085_978_497 * S
    assert ntp_short_to_ns(1 << 16) == S and ntp_short_to_ns(1) == 15_259


@settings(max_examples=300, deadline=None)
@given(
    st.integers(
        min_value=(2**31 - NTP_UNIX_OFFSET_S) * S,
        max_value=(2**31 + 2**32 - NTP_UNIX_OFFSET_S) * S - 1,
    )
)
def test_ntp_timestamp_round_trip(utc_ns: int) -> None:
    """1968-01-20T03:14:08Z .. 2104-02-26: every nanosecond survives (resolution 0.23 ns)."""
    assert ntp64_to_ns(ns_to_ntp64(utc_ns)) == utc_ns


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        NtpPacket,
        leap_indicator=st.integers(0, 3),
        version=st.integers(0, 7),
        mode=st.integers(0, 7),
        stratum=st.integers(0, 255),
        poll=st.integers(-128, 127),
        precision=st.integers(-128, 127),
        root_delay=st.integers(0, 2**32 - 1),
        root_dispersion=st.integers(0, 2**32 - 1),
        reference_id=st.integers(0, 2**32 - 1),
        reference_ts=st.integers(0, 2**64 - 1),
        origin_ts=st.integers(0, 2**64 - 1),
        receive_ts=st.integers(0, 2**64 - 1),
        transmit_ts=st.integers(0, 2**64 - 1),
    )
)
def test_packet_encode_parse_round_trip(packet: NtpPacket) -> None:
    assert parse_packet(encode_packet(packet)) == packet
