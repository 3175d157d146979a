"""NmeaFramer: checksums, line bound, resynchronisation, line ends, arrival instants."""

from __future__ import annotations

from drivers.nmea import NmeaFramer, checksum
from tests.gps.support import gga, rmc, sentence


def texts(frames: list) -> list[str]:
    return [f.text for f in frames]


def test_checksum_is_the_xor_between_dollar_and_star() -> None:
    # NMEA 0183 §5.3.1, the classic example from the standard's GGA.
    body = "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    assert checksum(body) == 0x47


def test_whole_sentences_in_one_chunk() -> None:
    framer = NmeaFramer()
    frames = framer.feed(rmc() + gga(), 1000)
    assert [f.text[:6] for f in frames] == ["$GPRMC", "$GPGGA"]
    assert all(f.mono_ns == 1000 for f in frames)
    assert framer.stats.discarded_bytes == 0


def test_frame_carries_the_arrival_of_the_chunk_holding_its_dollar() -> None:
    framer = NmeaFramer()
    data = rmc()
    assert framer.feed(data[:1], 10) == []  # only the "$"
    assert framer.feed(data[1:20], 20) == []
    frames = framer.feed(data[20:], 30)
    assert [f.mono_ns for f in frames] == [10]


def test_bad_checksum_is_dropped_and_counted() -> None:
    framer = NmeaFramer()
    bad = rmc().replace(b"4807", b"4808")
    assert framer.feed(bad + gga(), 0)[0].text.startswith("$GPGGA")
    assert framer.stats.bad_checksum == 1
    assert framer.stats.discarded_bytes == len(bad) - 2  # the CR LF are not junk


def test_sentence_without_checksum_is_refused() -> None:
    framer = NmeaFramer()
    assert framer.feed(b"$GPZDA,222449,25,10,2010,+00,00\r\n", 0) == []
    assert framer.stats.no_checksum == 1


def test_resynchronises_after_garbage_and_counts_it() -> None:
    framer = NmeaFramer()
    junk = b"\x00\xff\xb5\x62garbage"
    frames = framer.feed(junk + rmc() + b"\x01\x02" + gga(), 0)
    assert texts(frames) == [rmc().decode().strip(), gga().decode().strip()]
    assert framer.stats.discarded_bytes == len(junk) + 2


def test_binary_inside_a_sentence_breaks_it() -> None:
    framer = NmeaFramer()
    broken = rmc()[:30] + b"\xb5" + rmc()[30:]
    frames = framer.feed(broken + gga(), 0)
    assert texts(frames) == [gga().decode().strip()]
    assert framer.stats.broken == 1


def test_a_new_start_abandons_the_unfinished_sentence() -> None:
    framer = NmeaFramer()
    frames = framer.feed(rmc()[:25] + gga(), 0)
    assert texts(frames) == [gga().decode().strip()]
    assert framer.stats.broken == 1 and framer.stats.discarded_bytes == 25


def test_lf_only_and_cr_only_endings() -> None:
    framer = NmeaFramer()
    lf = rmc().replace(b"\r\n", b"\n")
    cr = gga().replace(b"\r\n", b"\r")
    assert len(framer.feed(lf + cr + rmc(), 0)) == 3


def test_line_bound_counts_cr_lf() -> None:
    body = "GPTXT," + "x" * 60
    line = sentence(body)  # "$" + body + "*HH" + CR LF
    assert NmeaFramer(line_max_bytes=len(line)).feed(line, 0) != []
    framer = NmeaFramer(line_max_bytes=len(line) - 1)
    assert framer.feed(line + gga(), 0)[0].text.startswith("$GPGGA")
    assert framer.stats.too_long == 1


def test_buffer_stays_bounded_on_an_endless_sentence() -> None:
    framer = NmeaFramer(line_max_bytes=128)
    for _ in range(1000):
        framer.feed(b"A" * 1000, 0) if framer._in_sentence else framer.feed(b"$" + b"A" * 999, 0)
        assert len(framer._buf) <= 128
    assert framer.feed(b"\r\n" + gga(), 0)[0].text.startswith("$GPGGA")


def test_reset_drops_the_partial_sentence() -> None:
    framer = NmeaFramer()
    framer.feed(rmc()[:30], 0)
    framer.reset()
    assert framer.feed(rmc()[30:], 1) == []  # the tail alone has no "$": junk
