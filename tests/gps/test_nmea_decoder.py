"""Field checks (never trust pynmea2's types), cycles, fix and date rules, leap seconds."""

from __future__ import annotations

import datetime as dt

import pynmea2
import pytest

from drivers.nmea import (
    FieldError,
    Fix,
    Gns,
    GpsConfig,
    GpsRejection,
    GpsSample,
    Leap,
    Malformed,
    NmeaDecoder,
    Rmc,
    label_rfc3339,
    parse_ddmmyy,
    parse_sentence,
    parse_time,
    rfc3339,
)
from tests.gps.support import cycle, gga, gsa, rmc, sentence, zda

NS = 1_000_000_000
FLOOR = dt.date(2026, 11, 1)


def decode(data: bytes, **config: object) -> list:
    decoder = NmeaDecoder(GpsConfig(**config))  # type: ignore[arg-type]
    return decoder.feed(data, 5 * NS) + decoder.flush()


def only_sample(data: bytes, **config: object) -> GpsSample:
    reports = decode(data, **config)
    assert len(reports) == 1 and isinstance(reports[0], GpsSample), reports
    return reports[0]


# -- what pynmea2 gets wrong, and we must not ------------------------------------------


def test_pynmea2_takes_a_garbage_date_we_refuse_it() -> None:
    line = "$GPRMC,000231.099,A,4829.0005,N,00022.0015,E,0.15,212.28,2208-1,,,A*73"
    assert pynmea2.parse(line).data[8] == "2208-1"  # pynmea2 hands it back as is
    parsed = parse_sentence(line)
    assert isinstance(parsed, Malformed)
    assert "date field malformed: '2208-1'" in parsed.reason


def test_pynmea2_crashes_on_a_leap_second_we_do_not() -> None:
    line = rmc("235960.00", "311226").decode().strip()
    with pytest.raises((ValueError, TypeError)):
        _ = pynmea2.parse(line).datetime  # its timestamp field stays a raw string
    parsed = parse_sentence(line)
    assert isinstance(parsed, Rmc) and parsed.time is not None and parsed.time.second == 60


def test_two_digit_year_99_is_1999_and_refused_by_the_floor() -> None:
    sample = only_sample(cycle("000231.00", "220899"))
    assert not sample.trusted
    assert sample.reason == "date 1999-08-22 before floor 2026-11-01 (week roll-over?)"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2208-1", "malformed"),
        ("22089", "malformed"),
        ("300226", "out of range"),  # 30 February
        ("221399", "out of range"),
        ("２２０８９９", "malformed"),  # full-width digits: int() would take them
    ],
)
def test_bad_dates(text: str, why: str) -> None:
    with pytest.raises(FieldError, match=why):
        parse_ddmmyy(text)


@pytest.mark.parametrize(
    "text", ["12345", "1234567", "12:34:56", "246000", "126000", "120060", "12345a", "-12345"]
)
def test_bad_times(text: str) -> None:
    with pytest.raises(FieldError):
        parse_time(text)


def test_time_fraction_to_the_nanosecond() -> None:
    t = parse_time("235959.123456789")
    assert t is not None and (t.hour, t.minute, t.second, t.nanos) == (23, 59, 59, 123456789)
    assert parse_time("") is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (gga(quality="x"), "fix quality malformed: 'x'"),
        (gga(quality="9"), "fix quality malformed: '9'"),
        (gga(sats="1e3"), "satellite count malformed"),
        (gga(hdop="nan"), "HDOP malformed"),
        (rmc(status="X"), "status field malformed: 'X'"),
        (rmc(mode="Q"), "mode indicator malformed: 'Q'"),
        (zda(year="26"), "year field malformed: '26'"),
        (gsa(mode="4"), "fix mode malformed: '4'"),
    ],
)
def test_every_field_is_checked(line: bytes, reason: str) -> None:
    parsed = parse_sentence(line.decode().strip())
    assert isinstance(parsed, Malformed)
    assert reason in parsed.reason


def test_talkers_and_proprietary() -> None:
    for talker in ("GP", "GN", "GL", "GA", "BD", "GB", "GQ", "IN"):
        body = rmc().decode().strip()[3:].split("*")[0]
        assert isinstance(parse_sentence(sentence(talker + body).decode().strip()), Rmc)
    assert parse_sentence(sentence("PGRME,15.0,M,45.0,M,25.0,M").decode().strip()) is None
    assert parse_sentence(sentence("GPGSV,1,1,00").decode().strip()) is None


def test_gns_modes() -> None:
    line = sentence("GNGNS,213712.000,4111.59903,N,11156.54809,W,AANN,13,0.93,1482.5,-16.5,,")
    parsed = parse_sentence(line.decode().strip())
    assert isinstance(parsed, Gns) and parsed.modes == "AANN" and parsed.satellites == 13


# -- cycles ------------------------------------------------------------------------------


def test_one_sample_per_cycle_merging_rmc_gga_gsa_zda() -> None:
    data = gga("123456.00") + gsa() + rmc("123456.00") + zda("123456.00")
    sample = only_sample(data)
    assert sample.trusted and sample.reason == ""
    assert sample.sentences == ("GPGGA", "GPGSA", "GPRMC", "GPZDA")
    assert sample.satellites == 8 and sample.hdop == 0.9
    assert sample.fix is Fix.VALID and sample.fix_detail == "RMC A, GGA 1 (GPS), GSA 3D"
    label = dt.datetime(2026, 11, 14, 12, 34, 56, tzinfo=dt.UTC)
    assert sample.label_utc_ns == int(label.timestamp()) * NS
    assert sample.utc_ns == sample.label_utc_ns + 400_000_000  # default latency 0.4 s
    assert sample.error_ns == 450_000_000
    assert label_rfc3339(sample) == "2026-11-14T12:34:56Z"


def test_sample_mono_is_the_first_timed_sentence_of_the_cycle() -> None:
    decoder = NmeaDecoder(GpsConfig())
    out = decoder.feed(gga("123456.00"), 100) + decoder.feed(rmc("123456.00"), 200)
    out += decoder.feed(cycle("123457.00"), 1_000_000_300)
    assert [r.mono_ns for r in out] == [100]
    assert [r.mono_ns for r in decoder.flush()] == [1_000_000_300]


def test_a_cycle_closes_after_quiet() -> None:
    decoder = NmeaDecoder(GpsConfig(cycle_quiet_s=0.5))
    assert decoder.feed(cycle(), 0) == []
    assert decoder.poll(499_999_999) == []
    assert len(decoder.poll(500_000_000)) == 1
    assert decoder.poll(600_000_000) == []


def test_ten_hertz_receiver_gives_one_sample_per_second() -> None:
    data = b"".join(cycle(f"123456.{d}0") for d in range(10)) + cycle("123457.00")
    reports = decode(data)
    assert [label_rfc3339(r) for r in reports] == ["2026-11-14T12:34:56Z", "2026-11-14T12:34:57Z"]


def test_gga_alone_has_no_date_and_is_not_a_sample() -> None:
    (report,) = decode(gga())
    assert isinstance(report, GpsRejection)
    assert report.reason == "no date for 12:34:56 (no RMC or ZDA in the cycle)"


def test_malformed_time_is_not_a_sample() -> None:
    (report,) = decode(rmc(time="1234-6"))
    assert isinstance(report, GpsRejection)
    assert report.reason == "GPRMC time field malformed: '1234-6'"


def test_cold_start_rmc_without_time() -> None:
    (report,) = decode(sentence("GPRMC,,V,,,,,,,,,,N"))
    assert isinstance(report, GpsRejection) and "status V" in report.reason


def test_zda_date_from_the_same_cycle_serves_gga() -> None:
    sample = only_sample(gga() + zda())
    assert sample.trusted and sample.label.date() == dt.date(2026, 11, 14)


def test_rmc_and_zda_dates_must_agree() -> None:
    sample = only_sample(rmc() + gga() + zda(day="15"))
    assert not sample.trusted and "dates disagree" in sample.reason


# -- fix --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (rmc(status="V") + gga(), "no fix (RMC status V)"),
        (rmc() + gga(quality="0"), "no fix (GGA quality 0)"),
        (rmc() + gsa("1"), "no fix (GSA mode 1)"),
        (rmc(mode="N"), "no fix (RMC mode N)"),
        (rmc(mode="E"), "no usable fix: estimated (dead reckoning) (RMC mode E)"),
        (rmc() + gga(quality="8"), "no usable fix: simulation (GGA quality 8)"),
        (zda(), "no fix information in this cycle"),
    ],
)
def test_fix_any_no_wins(data: bytes, reason: str) -> None:
    sample = only_sample(data)
    assert not sample.trusted
    assert reason in sample.reason.split("; ")


def test_fix_valid_from_gga_alone_with_zda_date() -> None:
    assert only_sample(zda() + gga(quality="2")).trusted


# -- dates ------------------------------------------------------------------------------


def test_window_is_1024_weeks_from_the_floor() -> None:
    floor = dt.date(2026, 11, 1)
    last_ok = floor + dt.timedelta(weeks=1024, days=-1)
    assert only_sample(cycle(date=last_ok.strftime("%d%m%y"))).trusted
    first_bad = last_ok + dt.timedelta(days=1)
    sample = only_sample(cycle(date=first_bad.strftime("%d%m%y")))
    assert not sample.trusted and "1024 weeks after floor 2026-11-01" in sample.reason
    assert not only_sample(cycle(date="311026")).trusted  # the day before the floor


def test_floor_is_configurable() -> None:
    assert only_sample(cycle(date="060419"), date_floor=dt.date(2019, 1, 1)).trusted


def test_labels_must_move_forward_then_follow_the_new_timeline() -> None:
    data = cycle("120000.00") + cycle("120001.00") + cycle("115959.00") + cycle("120000.00")
    data += cycle("120002.00")  # a gap forward is fine
    verdicts = [(label_rfc3339(r)[11:19], r.trusted) for r in decode(data)]
    assert verdicts == [
        ("12:00:00", True),
        ("12:00:01", True),
        ("11:59:59", False),  # backwards: refused once
        ("12:00:00", True),  # forward from 11:59:59: the new timeline is followed
        ("12:00:02", True),
    ]


def test_a_second_repeated_in_a_later_cycle_is_not_trusted() -> None:
    """A receiver that sends the previous second's time again in its next cycle (a stuck
    clock, a replayed buffer): the cycles are a second apart, each closed by the quiet
    after it, so the repeat is a cycle of its own, not part of the first. It must not be
    a second trusted sample for the same instant (that would say the time stood still)."""
    decoder = NmeaDecoder(GpsConfig(cycle_quiet_s=0.5))
    reports: list = []
    for at_s, label in ((0, "120000.00"), (1, "120000.00"), (2, "120001.00")):
        reports += decoder.feed(cycle(label), at_s * NS)
        reports += decoder.poll(at_s * NS + 600_000_000)  # the quiet closes the cycle
    assert [type(r) for r in reports] == [GpsSample] * 3, reports
    verdicts = [(label_rfc3339(r)[11:19], r.trusted) for r in reports]
    assert verdicts == [("12:00:00", True), ("12:00:00", False), ("12:00:01", True)]
    assert "does not move forward" in reports[1].reason
    assert "repeated or backwards" in reports[1].reason
    assert reports[1].mono_ns == NS  # the later cycle's, not merged into the first


# -- leap second ------------------------------------------------------------------------


def test_leap_second_is_represented_and_trusted_at_the_end_of_a_month() -> None:
    reports = decode(cycle("235959.00", "311226") + cycle("235960.00", "311226"))
    reports += decode(cycle("000000.00", "010127"))
    before, leap, after = reports
    assert leap.trusted and leap.leap_second and leap.leap is Leap.INSERT
    assert leap.label_utc_ns == before.label_utc_ns + NS  # 23:59:59 + 1 s
    assert leap.label_utc_ns == after.label_utc_ns  # POSIX cannot tell them apart
    assert label_rfc3339(leap) == "2026-12-31T23:59:60Z"
    assert rfc3339(leap.label_utc_ns) == "2027-01-01T00:00:00Z"


def test_leap_second_in_mid_month_is_refused() -> None:
    sample = only_sample(cycle("235960.00", "141126"))
    assert not sample.trusted
    assert "second 60 on 2026-11-14, not the last day of a month" in sample.reason


def test_second_60_outside_2359_is_malformed() -> None:
    (report,) = decode(rmc("120060.00"))
    assert isinstance(report, GpsRejection) and "second 60 outside 23:59" in report.reason


def test_config_bounds() -> None:
    with pytest.raises(ValueError):
        GpsConfig(name="ntp0")
    with pytest.raises(ValueError):
        GpsConfig(nmea_line_max_bytes=40)
    with pytest.raises(ValueError):
        GpsConfig(latency_s=1.5)
