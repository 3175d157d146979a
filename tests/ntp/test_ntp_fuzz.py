"""Hostile datagrams: the client's reply parser and the simulated server's request parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ntp import (
    MAX_STRATUM,
    Exchange,
    NtpPacket,
    PollResult,
    encode_packet,
    evaluate_reply,
    ns_to_ntp64,
    parse_packet,
)
from drivers.sim.faults import KOD_CODES, NtpFaults
from drivers.sim.ntp_server import build_reply, parse_request

S = 1_000_000_000
ORIGIN = 0x1122334455667788
EXCHANGE = Exchange(
    source="ntp:fuzz:123",
    server="fuzz:123",
    origin_ts=ORIGIN,
    sent_mono_ns=100 * S,
    received_mono_ns=100 * S + 3_000_000,
    sent_realtime_ns=1_780_000_000 * S,
    received_realtime_ns=1_780_000_000 * S + 3_000_000,
)
MAX_DISTANCE_NS = S


def judge(data: bytes) -> PollResult:
    v = evaluate_reply(
        data, EXCHANGE, max_root_distance_ns=MAX_DISTANCE_NS, local_precision_ns=1_000
    )
    assert v.result is not PollResult.OK or (v.sample is not None and v.sample.trusted)
    if v.result is not PollResult.OK:
        assert v.reason
        assert v.sample is None or not v.sample.trusted
    return v.result


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_datagram_never_crashes_and_is_never_trusted(data: bytes) -> None:
    # Without our 64-bit origin nonce a datagram is never believed (odds 2**-64).
    assert judge(data) is not PollResult.OK


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=48, max_size=120))
def test_datagram_echoing_our_origin_is_trusted_only_if_every_check_holds(data: bytes) -> None:
    """Splice the right origin in so the deeper checks are exercised, then check that any
    trusted verdict really satisfies every rule (a property, not a single example)."""
    forged = data[:24] + ORIGIN.to_bytes(8, "big") + data[32:]
    result = judge(forged)
    p = parse_packet(forged)
    if result is PollResult.OK:
        assert p.leap_indicator != 3
        assert p.mode == 4 and p.version == 4
        assert 1 <= p.stratum < MAX_STRATUM
        assert p.receive_ts and p.transmit_ts


@settings(max_examples=300, deadline=None)
@given(
    leap=st.integers(0, 3),
    stratum=st.integers(0, 255),
    precision=st.integers(-128, 127),
    root=st.integers(0, 2**32 - 1),
    hold_ns=st.integers(0, 4_000_000),
    refid=st.binary(min_size=4, max_size=4),
)
def test_well_formed_replies_with_any_header_values(
    leap: int, stratum: int, precision: int, root: int, hold_ns: int, refid: bytes
) -> None:
    t2 = EXCHANGE.sent_realtime_ns + 1_000_000
    packet = encode_packet(
        NtpPacket(
            leap_indicator=leap,
            stratum=stratum,
            precision=precision,
            root_delay=root,
            root_dispersion=root // 3,
            reference_id=int.from_bytes(refid, "big"),
            origin_ts=ORIGIN,
            receive_ts=ns_to_ntp64(t2),
            transmit_ts=ns_to_ntp64(t2 + hold_ns),
        )
    )
    result = judge(packet)
    if result is PollResult.OK:
        assert leap != 3 and 1 <= stratum < MAX_STRATUM
        assert hold_ns <= 3_000_000 + 1_000_000  # never longer than the round trip (+slack)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([None, *KOD_CODES]), st.booleans())
def test_simulated_server_request_parser_never_crashes(
    data: bytes, kod: str | None, unsynchronised: bool
) -> None:
    request = parse_request(data)
    if request is None:
        return
    assert len(data) >= 48 and data[0] & 0x7 == 3
    faults = NtpFaults(kod=kod, unsynchronised=unsynchronised)
    out = build_reply(request, faults, receive_ns=1_780_000_000 * S, transmit_ns=1_780_000_000 * S)
    assert out is not None
    echoed = parse_packet(out)
    assert echoed.origin_ts == int.from_bytes(data[40:48], "big")
    assert echoed.mode == 4 and echoed.version == (data[0] >> 3) & 0x7
