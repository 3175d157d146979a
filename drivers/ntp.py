"""NTP client: polls configured NTPv4 servers and hands the ensemble one sample per reply.

Each reply becomes an :class:`NtpSample`: "at raw-monotonic instant m, UTC was u ± e".

How the instant and the time are derived (RFC 5905 §8, on our own timescale)
-------------------------------------------------------------------------
The classic NTP exchange has four timestamps: T1 (client send), T2 (server receive), T3
(server transmit), T4 (client receive). We never take T1/T4 from ``CLOCK_REALTIME``
(``ntplib.NTPClient.request`` does, with ``time.time()``): they are read on
``CLOCK_MONOTONIC_RAW`` (``m1``, ``m4``) just before the send and just after the receive.
Then, with θ = UTC − mono, RFC 5905's offset ((T2 − m1) + (T3 − m4)) / 2 placed at the
midpoint ``m = (m1 + m4) / 2`` gives ``utc = m + θ = (T2 + T3) / 2``: the server's clock at
the midpoint of its own handling of the request. Nothing here reads the host's real-time
clock, so an operator or daemon stepping it in between cannot corrupt the sample.

Why the bound holds: the server received and transmitted inside ``[m1, m4]`` (causality),
so the instant its clock read (T2 + T3) / 2 lies within ``delay / 2`` of ``m``, where
``delay = (m4 − m1) − (T3 − T2)``. Any latency of our own (Python scheduling between the
socket and the clock read) widens ``delay`` and so the bound; it cannot bias the result
outside it. See :func:`uncertainty_ns` for the full error budget.

The request is sent with a random transmit timestamp (the data-minimisation practice of
draft-ietf-ntp-data-minimization: the server learns nothing of our clock, and a spoofer
cannot predict it). A reply counts only if its origin timestamp echoes those 64 bits
exactly (RFC 5905 §8, "bogus packet" test); ntplib does not perform this check, and its
packet parser stores timestamps as floats (about 1 µs resolution at today's NTP seconds),
so replies are parsed here with exact integers. ntplib still encodes the request header.

Pure decision logic (:func:`parse_packet`, :func:`evaluate_reply`, :func:`uncertainty_ns`,
:func:`kiss_code`, :func:`schedule_next`) is separate from the socket work in
:class:`NtpClient`.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import math
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import ntplib

from drivers.errors import DriverError
from drivers.monotonic import NS_PER_S, mono_ns, realtime_ns
from drivers.sample import Leap, SourceKind, TimeSample

log = logging.getLogger(__name__)

# RFC 5905 §7.3 packet header: LI/VN/Mode, stratum, poll, precision, root delay, root
# dispersion, reference id, then four 64-bit timestamps (reference, origin, receive, transmit).
_HEADER = struct.Struct("!BBbbIII QQQQ")
PACKET_BYTES = _HEADER.size  # 48
MAX_DATAGRAM_BYTES = 1024  # header plus extension fields / MAC we ignore; larger is truncated
NTP_VERSION = 4
MODE_CLIENT = 3
MODE_SERVER = 4
MAX_STRATUM = 16  # RFC 5905 §7.3: 16 means unsynchronised
NTP_UNIX_OFFSET_S = int(ntplib.NTP.NTP_DELTA)  # 1900-01-01 to 1970-01-01, 2 208 988 800 s
PHI = 15e-6  # RFC 5905 §7.2 frequency tolerance, 15 ppm
_ERA_PIVOT_S = 1 << 31  # era disambiguation, see ntp64_to_ns
KOD_CODES = ("RATE", "DENY", "RSTR")  # RFC 5905 §7.4, the three codes a client must act on


class NtpPacketError(DriverError):
    """A datagram that is not an NTP packet (too short)."""


# --- wire format ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpPacket:
    """An NTP header with exact integer fields (RFC 5905 §7.3, figure 8).

    Timestamps are raw 64-bit NTP values (32.32 fixed point since 1900); root delay and
    root dispersion raw 32-bit NTP short format (16.16 seconds).
    """

    leap_indicator: int = 0
    version: int = NTP_VERSION
    mode: int = MODE_SERVER
    stratum: int = 0
    poll: int = 0
    precision: int = 0  # log2 seconds
    root_delay: int = 0
    root_dispersion: int = 0
    reference_id: int = 0
    reference_ts: int = 0
    origin_ts: int = 0
    receive_ts: int = 0
    transmit_ts: int = 0


def parse_packet(data: bytes) -> NtpPacket:
    """Decode the 48-byte header; anything after it (extensions, MAC) is ignored."""
    if len(data) < PACKET_BYTES:
        raise NtpPacketError(f"{len(data)} bytes is too short for an NTP packet ({PACKET_BYTES})")
    first, stratum, poll, precision, rdelay, rdisp, refid, ref, org, rec, xmt = _HEADER.unpack(
        data[:PACKET_BYTES]
    )
    return NtpPacket(
        leap_indicator=first >> 6,
        version=(first >> 3) & 0x7,
        mode=first & 0x7,
        stratum=stratum,
        poll=poll,
        precision=precision,
        root_delay=rdelay,
        root_dispersion=rdisp,
        reference_id=refid,
        reference_ts=ref,
        origin_ts=org,
        receive_ts=rec,
        transmit_ts=xmt,
    )


def encode_packet(p: NtpPacket) -> bytes:
    """Encode a header exactly (used by the simulated server and tests)."""
    try:
        return _HEADER.pack(
            (p.leap_indicator << 6) | (p.version << 3) | p.mode,
            p.stratum,
            p.poll,
            p.precision,
            p.root_delay,
            p.root_dispersion,
            p.reference_id,
            p.reference_ts,
            p.origin_ts,
            p.receive_ts,
            p.transmit_ts,
        )
    except struct.error as e:
        raise NtpPacketError(f"cannot encode NTP packet: {e}") from e


def build_request(transmit_ts: int, *, poll: int = 0) -> bytes:
    """A client-mode NTPv4 request (RFC 5905 §7.3) carrying ``transmit_ts`` verbatim.

    ntplib encodes the header; the transmit timestamp is spliced in as raw bytes because
    ``ntplib.NTPPacket`` keeps timestamps as floats and would round our nonce.
    """
    header = ntplib.NTPPacket(version=NTP_VERSION, mode=MODE_CLIENT)
    header.poll = max(0, min(17, poll))  # ntplib packs poll unsigned
    try:
        data = bytes(header.to_data())
    except ntplib.NTPException as e:
        raise DriverError(f"cannot build NTP request: {e}") from e
    return data[:40] + transmit_ts.to_bytes(8, "big")


def ns_to_ntp64(utc_ns: int) -> int:
    """POSIX nanoseconds to a 64-bit NTP timestamp (era wraps modulo 2**32 s, RFC 5905 §6)."""
    seconds, rem = divmod(utc_ns, NS_PER_S)
    frac = ((rem << 32) + NS_PER_S // 2) // NS_PER_S
    if frac >> 32:  # rounding carried into the next second
        seconds, frac = seconds + 1, 0
    return (((seconds + NTP_UNIX_OFFSET_S) % (1 << 32)) << 32) | frac


def ntp64_to_ns(ts: int) -> int:
    """A 64-bit NTP timestamp to POSIX nanoseconds.

    RFC 5905 §6: the era is ambiguous; it is fixed here without reading any clock by a pivot.
    Seconds below 2**31 (before 1968-01-20 in era 0) are taken to be in era 1 (from
    2036-02-07), so the decodable range is 1968-01-20 .. 2104-02-26.
    """
    seconds, frac = ts >> 32, ts & 0xFFFFFFFF
    if seconds < _ERA_PIVOT_S:
        seconds += 1 << 32
    return (seconds - NTP_UNIX_OFFSET_S) * NS_PER_S + ((frac * NS_PER_S + (1 << 31)) >> 32)


def ntp_short_to_ns(value: int) -> int:
    """A 32-bit NTP short (16.16 seconds; root delay, root dispersion) to nanoseconds."""
    return (value * NS_PER_S + (1 << 15)) >> 16


def ns_to_ntp_short(value_ns: int) -> int:
    return max(0, min(0xFFFFFFFF, ((value_ns << 16) + NS_PER_S // 2) // NS_PER_S))


def precision_to_ns(precision_log2: int) -> int:
    """The server's precision field (log2 seconds, RFC 5905 §7.3) in nanoseconds, rounded up."""
    return math.ceil(2.0**precision_log2 * NS_PER_S)


# --- decision logic (pure) -------------------------------------------------------------------


def kiss_code(stratum: int, reference_id: int) -> str | None:
    """The Kiss-o'-Death code of a reply, or None (RFC 5905 §7.4).

    A kiss is a stratum-0 packet whose reference id holds four printable ASCII characters.
    A stratum-0 reply with a zero reference id (what chronyd sends while unsynchronised) is
    not a kiss.
    """
    if stratum != 0:
        return None
    raw = reference_id.to_bytes(4, "big")
    if not all(0x20 < b < 0x7F for b in raw):
        return None
    return raw.decode("ascii")


def reference_id_text(stratum: int, reference_id: int) -> str:
    """RFC 5905 §7.3: ASCII (kiss code or clock type) at stratum 0-1, else an IPv4 address
    (or, for an IPv6 upstream, the first four bytes of its MD5 hash, shown the same way)."""
    raw = reference_id.to_bytes(4, "big")
    if stratum > 1:
        return ".".join(str(b) for b in raw)
    text = raw.rstrip(b"\0")
    if all(0x20 <= b < 0x7F for b in text):
        return text.decode("ascii")
    return f"0x{reference_id:08x}"  # not text (chrony's local clock sends 0x7f7f0101)


def uncertainty_ns(
    *,
    delay_ns: int,
    root_delay_ns: int,
    root_dispersion_ns: int,
    round_trip_ns: int,
    server_precision_ns: int,
    local_precision_ns: int,
) -> int:
    """Half-width of the interval around the sample: the root distance (RFC 5905 §10).

    λ = (δ_root + δ) / 2 + ε_root + ε, where, term by term:

    - ``delay_ns / 2`` (δ/2): where inside the round trip the server read its clock; by
      causality no further than this from our midpoint (the path may be asymmetric).
    - ``root_delay_ns / 2`` (δ_root/2): the same, accumulated from the server up to its
      primary reference.
    - ``root_dispersion_ns`` (ε_root): the server's own error budget to that reference.
    - ε, our peer dispersion at the sample (RFC 5905 §8): the server's precision (its
      clock reading resolution), our own reading precision (config ``precision_s``), and
      PHI (15 ppm) times the round trip for the clocks' rate error during the exchange.

    The jitter term φ of §10 is left out: one sample, no clock filter; the ensemble
    compares sources instead.
    """
    epsilon = server_precision_ns + local_precision_ns + math.ceil(PHI * round_trip_ns)
    return math.ceil(delay_ns / 2) + math.ceil(root_delay_ns / 2) + root_dispersion_ns + epsilon


class PollResult(enum.Enum):
    """The outcome of the latest poll of one server, in words a technician can read."""

    WAITING = "not polled yet"
    OK = "ok"
    UNSYNCHRONISED = "server unsynchronised"
    BAD_STRATUM = "bad stratum"
    TOO_FAR = "root distance too large"
    BAD_TIMESTAMPS = "bad timestamps"
    KISS_RATE = "asked to slow down"
    KISS_DENY = "access denied"
    KISS_RSTR = "access restricted"
    KISS_OTHER = "kiss-o'-death"
    ORIGIN_MISMATCH = "reply does not match request"
    MALFORMED = "malformed reply"
    TIMEOUT = "no reply"
    UNREACHABLE = "unreachable"


_KISS_RESULTS = {
    "RATE": PollResult.KISS_RATE,
    "DENY": PollResult.KISS_DENY,
    "RSTR": PollResult.KISS_RSTR,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpSample(TimeSample):
    """One NTP reply. ``offset_ns`` (inherited) is UTC minus ``CLOCK_MONOTONIC_RAW``.

    ``host_offset_ns`` is the server's time minus the host's ``CLOCK_REALTIME`` (what
    ``chronyc sources`` would call the offset); informational only, for a technician:
    it is the one figure here that a step of the host clock during the exchange can skew.
    """

    server: str  # "HOST:PORT" actually polled
    delay_ns: int  # round-trip delay δ, our side minus the server's hold time
    host_offset_ns: int
    stratum: int
    leap_indicator: int  # raw LI, 0-3 (``leap`` carries its meaning)
    reference_id: str
    root_delay_ns: int
    root_dispersion_ns: int
    server_precision_log2: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """Our side of one request: what we sent, and when (both clocks)."""

    source: str
    server: str
    origin_ts: int  # the transmit timestamp we sent, raw; the reply must echo it
    sent_mono_ns: int  # m1
    received_mono_ns: int  # m4
    sent_realtime_ns: int  # host clock at send (host_offset_ns only)
    received_realtime_ns: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What one received datagram means. ``final`` False: ignore it and keep listening."""

    result: PollResult
    reason: str = ""
    sample: NtpSample | None = None
    final: bool = True


_LEAP = {0: Leap.NONE, 1: Leap.INSERT, 2: Leap.DELETE, 3: Leap.UNKNOWN}


def evaluate_reply(
    data: bytes, exchange: Exchange, *, max_root_distance_ns: int, local_precision_ns: int
) -> Verdict:
    """Judge one datagram received in answer to ``exchange``. Never raises on bad input.

    Order matters: a datagram is first authenticated as the answer to our request (length,
    origin echo), and only then believed about anything, so a forged Kiss-o'-Death with the
    wrong origin cannot make us stop polling a server.
    """
    try:
        p = parse_packet(data)
    except NtpPacketError as e:
        return Verdict(result=PollResult.MALFORMED, reason=str(e), final=False)
    # RFC 5905 §8: a reply whose origin is not our transmit timestamp is bogus (a spoofed,
    # duplicated or stale reply). Ignore it; the genuine answer may still come.
    if p.origin_ts != exchange.origin_ts:
        return Verdict(
            result=PollResult.ORIGIN_MISMATCH,
            reason=(
                "reply's origin timestamp does not echo our request "
                "(spoofed, stale or duplicated reply); ignored"
            ),
            final=False,
        )
    if p.mode != MODE_SERVER:
        return Verdict(
            result=PollResult.MALFORMED, reason=f"reply in mode {p.mode}, expected 4 (server)"
        )
    if p.version != NTP_VERSION:
        return Verdict(
            result=PollResult.MALFORMED,
            reason=f"reply in NTP version {p.version}, we asked in version {NTP_VERSION}",
        )
    # RFC 5905 §7.4: kiss codes. RATE, DENY and RSTR change how we poll (see schedule_next).
    code = kiss_code(p.stratum, p.reference_id)
    if code is not None:
        result = _KISS_RESULTS.get(code, PollResult.KISS_OTHER)
        words = {
            PollResult.KISS_RATE: "server asked us to poll less often (Kiss-o'-Death RATE)",
            PollResult.KISS_DENY: "server denies us access (Kiss-o'-Death DENY)",
            PollResult.KISS_RSTR: "server restricts our access (Kiss-o'-Death RSTR)",
        }
        return Verdict(
            result=result,
            reason=words.get(result, f"server sent Kiss-o'-Death {code!r}; reply not used"),
        )
    if p.receive_ts == 0 or p.transmit_ts == 0:
        return Verdict(result=PollResult.BAD_TIMESTAMPS, reason="server sent no time (zero)")
    t2, t3 = ntp64_to_ns(p.receive_ts), ntp64_to_ns(p.transmit_ts)
    m1, m4 = exchange.sent_mono_ns, exchange.received_mono_ns
    round_trip = m4 - m1
    hold = t3 - t2
    server_precision = precision_to_ns(min(p.precision, 6))  # beyond 64 s is absurd anyway
    slack = server_precision + local_precision_ns + math.ceil(PHI * max(round_trip, 0))
    if hold < 0:
        return Verdict(
            result=PollResult.BAD_TIMESTAMPS,
            reason="server's transmit time is before its receive time",
        )
    if round_trip < 0 or hold > round_trip + slack:
        return Verdict(
            result=PollResult.BAD_TIMESTAMPS,
            reason=(
                f"server claims it held the request {hold / 1e6:.3f} ms, "
                f"longer than the whole round trip ({round_trip / 1e6:.3f} ms)"
            ),
        )
    delay = max(0, round_trip - hold)  # RFC 5905 §8 clamps δ at the precision floor
    root_delay = ntp_short_to_ns(p.root_delay)
    root_dispersion = ntp_short_to_ns(p.root_dispersion)
    error = uncertainty_ns(
        delay_ns=delay,
        root_delay_ns=root_delay,
        root_dispersion_ns=root_dispersion,
        round_trip_ns=round_trip,
        server_precision_ns=server_precision,
        local_precision_ns=local_precision_ns,
    )
    result, reason = PollResult.OK, ""
    if p.leap_indicator == 3:  # RFC 5905 §7.3: LI=3 alarm, clock not synchronised
        result, reason = PollResult.UNSYNCHRONISED, "server says it is unsynchronised (LI=3)"
    elif p.stratum == 0 or p.stratum >= MAX_STRATUM:
        what = "unspecified" if p.stratum == 0 else "unsynchronised"
        result = PollResult.BAD_STRATUM
        reason = f"server reports stratum {p.stratum} ({what})"
    elif error > max_root_distance_ns:
        result = PollResult.TOO_FAR
        reason = (
            f"root distance {error / 1e9:.3f} s exceeds the limit "
            f"{max_root_distance_ns / 1e9:.3f} s"
        )
    sample = NtpSample(
        source=exchange.source,
        kind=SourceKind.NTP,
        mono_ns=(m1 + m4) // 2,
        utc_ns=(t2 + t3) // 2,
        error_ns=error,
        trusted=result is PollResult.OK,
        reason=reason,
        leap=_LEAP[p.leap_indicator],
        server=exchange.server,
        delay_ns=delay,
        host_offset_ns=((t2 - exchange.sent_realtime_ns) + (t3 - exchange.received_realtime_ns))
        // 2,
        stratum=p.stratum,
        leap_indicator=p.leap_indicator,
        reference_id=reference_id_text(p.stratum, p.reference_id),
        root_delay_ns=root_delay,
        root_dispersion_ns=root_dispersion,
        server_precision_log2=p.precision,
    )
    return Verdict(result=result, reason=reason, sample=sample)


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpServerConfig:
    """One server. ``name`` defaults to ``ntp:HOST:PORT`` and must start with ``ntp``."""

    host: str
    port: int = 123
    name: str = ""
    poll_interval_s: float | None = None  # None: NtpConfig.poll_interval_s

    def __post_init__(self) -> None:
        if not self.host or len(self.host) > 253:
            raise DriverError(f"NTP server host {self.host!r} is empty or too long")
        if not 1 <= self.port <= 65535:
            raise DriverError(f"NTP server {self.host}: port {self.port} is not 1-65535")
        if self.name and not self.name.startswith(SourceKind.NTP.value):
            raise DriverError(f"NTP source name {self.name!r} must start with 'ntp'")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def source(self) -> str:
        return self.name or f"ntp:{self.address}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpConfig:
    """The NTP client's configuration. Units are in the names.

    - ``poll_interval_s`` 64: chrony's default minpoll (2**6 s), the politest rate public
      servers expect; the ensemble's holdover model bridges the gaps. A server may set its
      own (``NtpServerConfig.poll_interval_s``, e.g. a LAN server); the simulator and
      tests use less.
    - ``max_poll_interval_s`` 1024: chrony's default maxpoll (2**10 s), the ceiling for
      the backoff that a RATE kiss causes.
    - ``timeout_s`` 1: a reply later than that would carry at least 0.5 s of delay
      uncertainty, useless against the 1 s error budget of the time-stamping policy.
    - ``max_root_distance_s`` 1: RFC 5905's MAXDIST (appendix A.1.1; ntpd uses 1.5 s,
      chrony 3 s); a source whose interval is wider than the policy's 1 s maximum error
      (ETSI EN 319 421) cannot help prove the time, so it is reported but not trusted.
    - ``precision_s`` 1e-6: our reading precision of ``CLOCK_MONOTONIC_RAW`` around the
      socket calls (the clock ticks in ns; scheduling latency is already inside the
      measured delay). Added to every sample's uncertainty.
    """

    servers: tuple[NtpServerConfig, ...]
    poll_interval_s: float = 64.0
    max_poll_interval_s: float = 1024.0
    timeout_s: float = 1.0
    max_root_distance_s: float = 1.0
    precision_s: float = 1e-6

    def __post_init__(self) -> None:
        names = [s.source for s in self.servers]
        if len(set(names)) != len(names):
            raise DriverError(f"NTP server names must be unique, got {names}")
        if not 0 < self.poll_interval_s <= self.max_poll_interval_s <= 86400 * 2:
            raise DriverError("need 0 < poll_interval_s <= max_poll_interval_s <= 2 days")
        for s in self.servers:
            if s.poll_interval_s is not None and not (
                0 < s.poll_interval_s <= self.max_poll_interval_s
            ):
                raise DriverError(
                    f"{s.source}: poll_interval_s must be in (0, max_poll_interval_s]"
                )
        if not 0 < self.timeout_s <= 10:
            raise DriverError(f"timeout_s must be in (0, 10], got {self.timeout_s}")
        if not 0 < self.max_root_distance_s <= 16:
            raise DriverError("max_root_distance_s must be in (0, 16]")
        if not 0 <= self.precision_s < 1:
            raise DriverError("precision_s must be in [0, 1)")


# --- scheduling (pure) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStatus:
    """What a technician (or ``/health``) can read about one server."""

    name: str
    address: str  # "HOST:PORT"
    result: PollResult = PollResult.WAITING
    reason: str = ""  # plain words; empty while all is well
    next_poll_mono_ns: int | None = None  # None once stopped
    poll_interval_s: float  # current interval, after any backoff
    backed_off: bool = False  # a RATE kiss doubled the interval
    stopped: bool = False  # DENY/RSTR: we no longer ask this server
    last_sample: NtpSample | None = None  # the latest reply that carried time
    last_reply_mono_ns: int | None = None
    polls: int = 0
    replies: int = 0  # replies that carried time (trusted or not)


def schedule_next(
    status: ServerStatus, verdict: Verdict, *, now_mono_ns: int, config: NtpConfig
) -> ServerStatus:
    """The server's status after a poll that ended in ``verdict`` (pure).

    RFC 5905 §7.4: on RATE the interval doubles (up to ``max_poll_interval_s``) and stays
    there: a server that asked us to slow down is never sped up again on our own
    initiative (restart to reset). On DENY or RSTR we stop asking that server for good.
    """
    interval = status.poll_interval_s
    backed_off = status.backed_off
    stopped = status.stopped
    if verdict.result is PollResult.KISS_RATE:
        interval = min(interval * 2, config.max_poll_interval_s)
        backed_off = True
    elif verdict.result in (PollResult.KISS_DENY, PollResult.KISS_RSTR):
        stopped = True
    reason = verdict.reason
    if stopped:
        reason = reason or status.reason
        reason = f"{reason}; no longer polled (restart the appliance to try again)"
    elif verdict.result is PollResult.KISS_RATE:
        reason = f"{reason}; now polling every {interval:g} s"
    sample = verdict.sample
    return replace(
        status,
        result=verdict.result,
        reason=reason,
        poll_interval_s=interval,
        backed_off=backed_off,
        stopped=stopped,
        next_poll_mono_ns=None if stopped else now_mono_ns + round(interval * NS_PER_S),
        last_sample=sample if sample is not None else status.last_sample,
        last_reply_mono_ns=sample.mono_ns if sample is not None else status.last_reply_mono_ns,
        polls=status.polls + 1,
        replies=status.replies + (sample is not None),
    )


# --- I/O -------------------------------------------------------------------------------------


def _resolve(host: str, port: int, timeout_s: float) -> tuple[int, tuple[str, int]]:
    """(family, sockaddr) for ``host``, within ``timeout_s`` (raises DriverError)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (host, port)
    # getaddrinfo has no timeout of its own: run it in a daemon thread and stop waiting at
    # the deadline (a hung resolver then costs a thread, never the poll loop).
    box: list[object] = []

    def work() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM))
        except OSError as e:
            box.append(e)

    worker = threading.Thread(target=work, name=f"ntp-dns-{host}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not box:
        raise DriverError(f"could not resolve {host} within {timeout_s:g} s")
    found = box[0]
    if isinstance(found, OSError):
        raise DriverError(f"could not resolve {host}: {found}") from found
    assert isinstance(found, list)
    for family, _type, _proto, _name, sockaddr in found:
        if family in (socket.AF_INET, socket.AF_INET6):
            return family, (str(sockaddr[0]), int(sockaddr[1]))
    raise DriverError(f"{host} has no IPv4 or IPv6 address")


@dataclass(slots=True)
class _InFlight:
    index: int
    sock: socket.socket
    source: str
    server: str
    origin_ts: int
    sent_mono_ns: int
    sent_realtime_ns: int
    deadline_ns: int
    ignored: int = 0  # datagrams that were not the answer (counted, not kept)
    last_ignored: Verdict | None = None


class NtpClient:
    """Polls each configured server on its own schedule.

    Run :meth:`poll_due` from one thread (the appliance's NTP thread); :meth:`servers` and
    :meth:`next_due_ns` may be called from any thread. ``clock`` is the raw monotonic clock
    (nanoseconds) used for the exchange timestamps and deadlines; ``realtime`` the host
    clock used only for the informational ``host_offset_ns``.

    A polling thread looks like this (every wait bounded, stoppable)::

        while not stop.is_set():
            for sample in client.poll_due(mono_ns()):
                ensemble.add(sample)
            due = client.next_due_ns()
            wait_ns = 1_000_000_000 if due is None else max(0, due - mono_ns())
            stop.wait(min(wait_ns / 1e9, 1.0))
    """

    def __init__(
        self,
        config: NtpConfig,
        *,
        clock: Callable[[], int] = mono_ns,
        realtime: Callable[[], int] = realtime_ns,
    ) -> None:
        self._config = config
        self._clock = clock
        self._realtime = realtime
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        start = clock()
        self._status = [
            ServerStatus(
                name=s.source,
                address=s.address,
                next_poll_mono_ns=start,
                poll_interval_s=s.poll_interval_s or config.poll_interval_s,
            )
            for s in config.servers
        ]

    @property
    def config(self) -> NtpConfig:
        return self._config

    def servers(self) -> tuple[ServerStatus, ...]:
        """Every server's status, in configuration order."""
        with self._lock:
            return tuple(self._status)

    def next_due_ns(self) -> int | None:
        """The earliest raw-monotonic instant a server is due; None if all are stopped."""
        with self._lock:
            due = [s.next_poll_mono_ns for s in self._status if s.next_poll_mono_ns is not None]
        return min(due) if due else None

    def poll_due(self, now_mono_ns: int) -> list[NtpSample]:
        """Poll every server due at ``now_mono_ns``, all at once; return the samples.

        Blocks at most about ``timeout_s`` (plus name resolution, itself bounded by
        ``timeout_s``). Servers that gave no usable time yield no sample; their status
        (:meth:`servers`) says why. Untrusted samples (LI=3, bad stratum, root distance
        too large) are returned so the ensemble and a technician can see them.
        """
        with self._poll_lock:
            with self._lock:
                due = [
                    i
                    for i, s in enumerate(self._status)
                    if s.next_poll_mono_ns is not None and s.next_poll_mono_ns <= now_mono_ns
                ]
            verdicts: dict[int, Verdict] = {}
            flights: list[_InFlight] = []
            try:
                # Resolve every name first, then send back to back: a slow resolver must not
                # sit between another server's request and our reading of its reply.
                resolved: list[tuple[int, int, tuple[str, int]]] = []
                for i in due:
                    server = self._config.servers[i]
                    try:
                        family, sockaddr = _resolve(
                            server.host, server.port, self._config.timeout_s
                        )
                    except DriverError as e:
                        verdicts[i] = Verdict(result=PollResult.UNREACHABLE, reason=str(e))
                    else:
                        resolved.append((i, family, sockaddr))
                for i, family, sockaddr in resolved:
                    try:
                        flights.append(self._send(i, family, sockaddr))
                    except DriverError as e:
                        verdicts[i] = Verdict(result=PollResult.UNREACHABLE, reason=str(e))
                self._collect(flights, verdicts)
            finally:
                for f in flights:
                    f.sock.close()
            samples: list[NtpSample] = []
            with self._lock:
                for i in due:
                    before = self._status[i]
                    after = schedule_next(
                        before, verdicts[i], now_mono_ns=now_mono_ns, config=self._config
                    )
                    self._status[i] = after
                    _log_transition(before, after)
                    sample = verdicts[i].sample
                    if sample is not None:
                        samples.append(sample)
            return samples

    def _send(self, index: int, family: int, sockaddr: tuple[str, int]) -> _InFlight:
        server = self._config.servers[index]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # connect(): the kernel drops datagrams from any other address, and an ICMP
            # "port unreachable" surfaces as an error instead of a silent timeout.
            sock.connect(sockaddr)
            origin = secrets.randbits(64) or 1  # RFC 5905: a zero timestamp means "unknown"
            poll_log2 = round(math.log2(max(self._status[index].poll_interval_s, 1.0)))
            request = build_request(origin, poll=poll_log2)
            sent_mono = self._clock()
            sent_real = self._realtime()
            sock.send(request)
        except OSError as e:
            sock.close()
            raise DriverError(f"cannot send to {server.address}: {e}") from e
        except BaseException:
            sock.close()
            raise
        return _InFlight(
            index=index,
            sock=sock,
            source=server.source,
            server=server.address,
            origin_ts=origin,
            sent_mono_ns=sent_mono,
            sent_realtime_ns=sent_real,
            deadline_ns=sent_mono + round(self._config.timeout_s * NS_PER_S),
        )

    def _collect(self, flights: list[_InFlight], verdicts: dict[int, Verdict]) -> None:
        cfg = self._config
        max_distance_ns = round(cfg.max_root_distance_s * NS_PER_S)
        precision_ns = math.ceil(cfg.precision_s * NS_PER_S)
        waiting = {f.sock.fileno(): f for f in flights}
        # A guard on the interpreter's own monotonic clock, in case an injected clock stalls.
        guard = time.monotonic() + cfg.timeout_s + 1.0
        with selectors.DefaultSelector() as sel:
            for f in flights:
                sel.register(f.sock, selectors.EVENT_READ)
            while waiting:
                now = self._clock()
                for fd, f in list(waiting.items()):
                    if now >= f.deadline_ns or time.monotonic() >= guard:
                        verdicts[f.index] = _timeout_verdict(f, cfg.timeout_s)
                        sel.unregister(f.sock)
                        del waiting[fd]
                if not waiting:
                    break
                wait_ns = min(f.deadline_ns for f in waiting.values()) - now
                for key, _events in sel.select(max(wait_ns, 0) / NS_PER_S):
                    f = waiting[key.fd]
                    try:
                        data = f.sock.recv(MAX_DATAGRAM_BYTES)
                        received_mono = self._clock()
                        received_real = self._realtime()
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        verdicts[f.index] = Verdict(
                            result=PollResult.UNREACHABLE,
                            reason=f"{f.server} unreachable: {e.strerror or e}",
                        )
                        sel.unregister(f.sock)
                        del waiting[key.fd]
                        continue
                    verdict = evaluate_reply(
                        data,
                        Exchange(
                            source=f.source,
                            server=f.server,
                            origin_ts=f.origin_ts,
                            sent_mono_ns=f.sent_mono_ns,
                            received_mono_ns=received_mono,
                            sent_realtime_ns=f.sent_realtime_ns,
                            received_realtime_ns=received_real,
                        ),
                        max_root_distance_ns=max_distance_ns,
                        local_precision_ns=precision_ns,
                    )
                    if not verdict.final:
                        f.ignored += 1
                        if f.last_ignored is None or verdict.result is PollResult.ORIGIN_MISMATCH:
                            f.last_ignored = verdict
                        if f.ignored == 1:  # once per poll: a flood must not flood the log
                            log.warning("NTP %s (%s): %s", f.source, f.server, verdict.reason)
                        continue
                    verdicts[f.index] = verdict
                    sel.unregister(f.sock)
                    del waiting[key.fd]


def _timeout_verdict(f: _InFlight, timeout_s: float) -> Verdict:
    if f.last_ignored is not None:
        return Verdict(
            result=f.last_ignored.result,
            reason=(
                f"no valid reply from {f.server} within {timeout_s:g} s; "
                f"ignored {f.ignored} datagram(s): {f.last_ignored.reason}"
            ),
        )
    return Verdict(
        result=PollResult.TIMEOUT, reason=f"no reply from {f.server} within {timeout_s:g} s"
    )


def _log_transition(before: ServerStatus, after: ServerStatus) -> None:
    """Log when a server's outcome changes, not on every poll."""
    if after.result is before.result:
        return
    name = f"NTP server {after.name} ({after.address})"
    if after.stopped:
        log.error("%s: %s", name, after.reason)
    elif after.result is PollResult.OK:
        log.info("%s answers with usable time", name)
    else:
        log.warning("%s: %s", name, after.reason)
