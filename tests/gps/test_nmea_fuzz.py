"""Hypothesis: no byte sequence crashes the framer, parser or decoder, or makes it trust junk.

Properties:
- arbitrary bytes, cut anywhere: nothing raises, buffers stay bounded, nothing is trusted
  unless a well-formed, checksummed RMC/GGA/ZDA/GNS cycle is in there (random bytes almost
  never carry one; when they do, the sample must still satisfy every rule);
- real sentences with fields replaced by junk and checksums recomputed (so they reach the
  parser): nothing raises, and a trusted sample's label is always a real calendar instant
  inside the date window, carried by a sentence whose time and date fields are all digits;
- chunking does not matter: the same bytes cut differently give the same samples.
"""

from __future__ import annotations

import datetime as dt
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.nmea import GpsConfig, GpsSample, NmeaDecoder, checksum
from tests.gps.support import cycle, gga, gsa, rmc, zda

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG = GpsConfig(date_floor=dt.date(2026, 1, 1))
GOOD_LINES = [rmc(), gga(), gsa(), zda(), cycle("235960.00", "311226")]


def run(chunks: list[bytes]) -> list:
    decoder = NmeaDecoder(CONFIG)
    out = []
    for i, chunk in enumerate(chunks):
        out += decoder.feed(chunk, i * 1000)
        assert len(decoder.framer._buf) <= CONFIG.nmea_line_max_bytes
    return out + decoder.flush()


def assert_plausible(sample: GpsSample) -> None:
    floor, ceiling = CONFIG.date_floor, CONFIG.date_ceiling
    day = dt.datetime.fromtimestamp(
        (sample.label_utc_ns - (10**9 if sample.leap_second else 0)) // 10**9, tz=dt.UTC
    ).date()
    assert floor <= day < ceiling
    assert sample.reason == ""
    assert sample.error_ns == 450_000_000


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_random_bytes_never_crash_nor_are_trusted(chunks: list[bytes]) -> None:
    for r in run(chunks):
        assert not (isinstance(r, GpsSample) and r.trusted)


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from(GOOD_LINES),
            st.sampled_from(GOOD_LINES).map(lambda b: b[: len(b) // 2]),
        ),
        max_size=30,
    )
)
def test_good_sentences_amid_noise(parts: list[bytes]) -> None:
    for r in run(parts):
        if isinstance(r, GpsSample) and r.trusted:
            assert_plausible(r)


junk_field = st.one_of(
    st.text(alphabet="0123456789.-+ AVNEXaz,", max_size=12),
    st.sampled_from(["", "2208-1", "235960", "999999", "000000", "310299", "60", "-1"]),
    st.integers(-(10**6), 10**7).map(str),
)


def rebuild(line: bytes, index: int, value: str) -> bytes:
    body = line.decode().strip()[1:].split("*")[0]
    fields = body.split(",")
    fields[index % len(fields)] = value
    new = ",".join(fields).replace("*", "").replace("$", "")
    return f"${new}*{checksum(new):02X}\r\n".encode()


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(GOOD_LINES[:4]), st.integers(1, 20), junk_field),
        min_size=1,
        max_size=12,
    )
)
def test_mutated_sentences_with_valid_checksums(mutations: list) -> None:
    data = b"".join(rebuild(line, i, v) for line, i, v in mutations)
    for r in run([data]):
        if isinstance(r, GpsSample) and r.trusted:
            assert_plausible(r)
            # the trusted cycle's RMC/ZDA carried an all-digit date, its times all digits
            times = re.findall(rb"\$..(?:RMC|GGA|ZDA),([^,]*)", data)
            assert any(re.fullmatch(rb"\d{6}(\.\d+)?", t) for t in times)


@FUZZ
@given(st.data())
def test_chunking_does_not_change_the_samples(data: st.DataObject) -> None:
    stream = b"".join(data.draw(st.lists(st.sampled_from([*GOOD_LINES, b"\x00\xff"]))))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    def key(reports: list) -> list:
        return [(r.label_utc_ns, r.trusted, r.reason) for r in reports if isinstance(r, GpsSample)]

    assert key(run(chunks)) == key(run([stream]))
